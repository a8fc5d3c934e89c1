"""Reliability of real processes (issue 5, promises 1-3): concurrent deploys, a run killed
with SIGKILL, and a worker's connection terminated by the server.

Tenant schemas are created in bulk with SQL; every CLI run is a real ``python -m
alembic_schemas`` process with its own ``application_name`` (set in the URL query), so its
server backends can be found in ``pg_stat_activity``. Every subprocess and wait is bounded.
Run with ``-s`` to see the figures each test prints.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time

import sqlalchemy as sa

import alembic_schemas
from alembic_schemas import identifiers

from helpers import (
    OF_APP,
    TENANT_STREAM,
    Catalog,
    ProjectDir,
    config_toml,
    create_schemas,
    finish,
    kill,
    tenant_names,
    wait_for,
)

TENANTS = 200

# r1 creates ``item``; r2 creates ``audit`` after a short sleep, so a run spends most of its
# time inside tenant transactions (where a kill or a terminated backend hurts most).
R1 = 'op.create_table("item", sa.Column("id", sa.Integer, primary_key=True))'
R2_SLOW = """
op.execute("SELECT pg_sleep({sleep})")
op.create_table("audit", sa.Column("id", sa.Integer, primary_key=True))
"""

TABLES_AT = {"r1": {"item", "alembic_version"}, "r2": {"item", "audit", "alembic_version"}}


def _slow_tenants(project: ProjectDir, catalog: Catalog, names: list[str], sleep: float) -> None:
    """The tenant stream, r1 and a slow r2, and ``names`` created at r1."""
    project.write("pyproject.toml", config_toml(TENANT_STREAM))
    alembic_schemas.init(project.root)
    project.revision("tenant", "r1", None, R1, downgrade='op.drop_table("item")')
    project.revision("tenant", "r2", "r1", R2_SLOW.format(sleep=sleep))
    table = identifiers.qualified
    create_schemas(
        catalog.db,
        names,
        *(f"CREATE TABLE {table(n, 'item')} (id serial PRIMARY KEY)" for n in names),
        *(
            f"CREATE TABLE {table(n, 'alembic_version')} (version_num varchar(32) NOT NULL,"
            " CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
            for n in names
        ),
        *(f"INSERT INTO {table(n, 'alembic_version')} VALUES ('r1')" for n in names),
    )


def _sleeping_backend(catalog: Catalog, app: str) -> int | None:
    """The pid of a backend of ``app`` inside r2's ``pg_sleep`` (a tenant transaction under
    way), if any."""
    pid = catalog.scalar(
        f"SELECT pid FROM pg_stat_activity WHERE {OF_APP}"
        " AND state = 'active' AND query LIKE '%pg_sleep%' LIMIT 1",
        app=app,
    )
    return pid if isinstance(pid, int) else None


# --- 1. concurrent deploys ---------------------------------------------------------------


def test_ten_concurrent_upgrades_apply_every_revision_exactly_once_per_schema(
    project: ProjectDir, catalog: Catalog
) -> None:
    project.write(
        "pyproject.toml",
        config_toml(
            {
                "ledger": {"schema": "ledger"},
                "billing": {"schema": "billing"},
                "tenant": {"tenants": "like:t_%", "depends_on": ["ledger"]},
            },
            lock_timeout="5s",
            lock_retries=5,
        ),
    )
    alembic_schemas.init(project.root)
    project.install("concurrent_deploys")
    names = tenant_names(TENANTS)
    create_schemas(catalog.db, names)

    started = time.monotonic()
    apps = [f"as_deploy_{i}" for i in range(10)]
    procs = [project.spawn("upgrade", "--json", app=app) for app in apps]
    try:
        outputs = [finish(p) for p in procs]
    finally:
        for p in procs:
            kill(p)
    wall = time.monotonic() - started  # printed, never asserted

    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
    tenant_versions = catalog.version_rows()
    assert tenant_versions == {t: ["t1"] for t in names}, "one version row per tenant, at head"
    named = {s: catalog.version_rows(s)[s] for s in ("ledger", "billing")}
    assert named == {"ledger": ["l1"], "billing": ["b1"]}
    with catalog.db.connect() as conn:
        rows = conn.execute(sa.text("SELECT tenant, revision FROM ledger.applied")).all()
    billing_runs = catalog.strings("SELECT revision FROM billing.runs")
    tenant_rows = sorted(r.tenant for r in rows if r.revision == "t1")
    assert tenant_rows == names, "exactly one shared-table row per tenant"
    assert len(tenant_rows) == TENANTS
    assert [tuple(r) for r in rows if r.revision != "t1"] == [("ledger", "l1")]
    assert billing_runs == ["b1"]
    applied: dict[str, int] = {}
    for out, _ in outputs:
        for r in json.loads(out)["results"]:
            if r["status"] == "applied":
                applied[r["schema"]] = applied.get(r["schema"], 0) + 1
    assert applied == {s: 1 for s in [*names, "ledger", "billing"]}, (
        "each schema is reported applied by exactly one of the ten runs"
    )
    catalog.assert_no_advisory_lock(*apps)
    print(
        f"\n[promise 1] 10 concurrent upgrades, {TENANTS} tenants + 2 named streams: "
        f"wall {wall:.2f} s, all exit 0, {len(tenant_rows)} shared rows, "
        f"applied-by-one-run for {len(applied)} schemas"
    )


# --- 2. SIGKILL mid-run ------------------------------------------------------------------


def _assert_each_tenant_at_old_or_new(catalog: Catalog, names: list[str]) -> dict[str, int]:
    """Every tenant has one version row, r1 or r2, and exactly the tables that version has."""
    versions, tables = catalog.version_rows(), catalog.tables_like()
    assert set(versions) == set(names)
    counts = {"r1": 0, "r2": 0}
    for t in names:
        assert versions[t] in (["r1"], ["r2"]), f"{t}: version rows {versions[t]}"
        (v,) = versions[t]
        assert tables.get(t, set()) == TABLES_AT[v], f"{t} at {v} has tables {tables.get(t)}"
        counts[v] += 1
    return counts


def _migrated(catalog: Catalog) -> int:
    """How many tenants have committed r2 (its ``audit`` table)."""
    found = catalog.scalar(
        "SELECT count(*) FROM pg_tables WHERE tablename = 'audit' AND schemaname LIKE 't\\_%'"
    )
    assert isinstance(found, int)
    return found


def test_a_run_killed_with_sigkill_leaves_every_tenant_whole_and_no_lock(
    project: ProjectDir, catalog: Catalog
) -> None:
    names = tenant_names(TENANTS)
    _slow_tenants(project, catalog, names, sleep=0.04)
    rng = random.Random(5)

    figures: list[str] = []
    for round_ in range(3):
        app = f"as_kill_{round_}"
        before = _migrated(catalog)
        # Killed at a random moment: once a random number of tenants have committed r2.
        moment = before + rng.randint(1, (TENANTS - before) // 2)
        proc = project.spawn("upgrade", "--jobs", "2", app=app)
        try:
            wait_for(f"{moment} tenants at r2", lambda m=moment: _migrated(catalog) >= m)
            assert proc.poll() is None, "the run finished before it could be killed"
            os.kill(proc.pid, signal.SIGKILL)
            finish(proc)
        finally:
            kill(proc)
        assert proc.returncode == -signal.SIGKILL
        catalog.assert_no_advisory_lock(app)  # the killed run's backends end, and its locks
        counts = _assert_each_tenant_at_old_or_new(catalog, names)
        figures.append(
            f"kill {round_ + 1} after {moment} at r2: {counts['r2']} at r2, {counts['r1']} at r1,"
            " 0 advisory locks"
        )
    assert _assert_each_tenant_at_old_or_new(catalog, names)["r1"] > 0, "the kills were mid-run"

    proc_done = project.cli("upgrade", "--jobs", "2", app="as_after_kill")
    assert proc_done.returncode == 0, proc_done.stderr
    assert catalog.version_rows() == {t: ["r2"] for t in names}
    assert all(catalog.tables_like()[t] == TABLES_AT["r2"] for t in names)
    catalog.assert_no_advisory_lock("as_after_kill")
    print("\n[promise 2] SIGKILL mid-run, 200 tenants, seed 5:\n  " + "\n  ".join(figures))
    print("  next run: exit 0, all 200 tenants at r2 with matching tables")


# --- 3. a worker's connection terminated -------------------------------------------------


def test_a_terminated_worker_connection_fails_only_its_tenant_and_retry_failed_completes_it(
    project: ProjectDir, catalog: Catalog
) -> None:
    names = tenant_names(30)
    _slow_tenants(project, catalog, names, sleep=0.1)
    app = "as_terminate"

    # One worker: the tenants after the victim are only attempted if that worker survives
    # its dead connection and gets a live one from the pool.
    proc = project.spawn("upgrade", "--jobs", "1", "--max-failures", "3", "--json", app=app)
    try:
        victim: list[int] = []

        def find_victim() -> bool:
            pid = _sleeping_backend(catalog, app)
            if pid is not None:
                victim.append(pid)
            return pid is not None

        wait_for("a worker in a tenant transaction", find_victim)
        assert catalog.scalar("SELECT pg_terminate_backend(:pid)", pid=victim[0]) is True
        out, err = finish(proc)
    finally:
        kill(proc)

    assert proc.returncode == 1, err
    summary = json.loads(out)
    failed = [r for r in summary["results"] if r["status"] == "failed"]
    assert len(failed) == 1, summary["results"]
    bad = failed[0]["schema"]
    message = failed[0]["error"]
    assert "\n" not in message and "terminat" in message, message
    assert summary["applied"] == len(names) - 1, "every other tenant finishes"
    assert bad != names[-1], "tenants after the victim were attempted (and applied)"
    assert f"alembic-schemas: error: tenant/{bad}: {message}" in err.splitlines(), err
    versions = catalog.version_rows()
    assert versions == {t: ["r1" if t == bad else "r2"] for t in names}
    assert catalog.tables_like()[bad] == TABLES_AT["r1"], "its transaction rolled back"

    retry = project.cli("upgrade", "--retry-failed", "--json", app="as_retry")
    assert retry.returncode == 0, retry.stderr
    assert [(r["schema"], r["status"]) for r in json.loads(retry.stdout)["results"]] == [
        (bad, "applied")
    ]
    assert catalog.version_rows() == {t: ["r2"] for t in names}
    catalog.assert_no_advisory_lock(app, "as_retry")
    print(
        f"\n[promise 3] pg_terminate_backend on a worker: {bad} failed with "
        f"{message!r}; {summary['applied']} others applied (exit 1); "
        "--retry-failed: exit 0, all 30 at r2"
    )
