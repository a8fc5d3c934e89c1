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
from functools import partial

import pytest
import sqlalchemy as sa

import alembic_schemas

from conftest import ProjectDir
from processes import Fleet, kill, tenant_names, wait_for

TENANTS = 200

TENANT_ONLY_CONFIG = """
[tool.alembic-schemas]
script_location = "migrations"

[tool.alembic-schemas.streams.tenant]
tenants = "like:t_%"
"""

# r1 creates ``item``; r2 creates ``audit`` after a short sleep, so a run spends most of its
# time inside tenant transactions (where a kill or a terminated backend hurts most).
R1 = '''
"""item"""
import sqlalchemy as sa
from alembic import op

revision = "r1"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("item", sa.Column("id", sa.Integer, primary_key=True))


def downgrade() -> None:
    op.drop_table("item")
'''

R2_SLOW = '''
"""audit, slowly"""
import sqlalchemy as sa
from alembic import op

revision = "r2"
down_revision = "r1"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("SELECT pg_sleep({sleep})")
    op.create_table("audit", sa.Column("id", sa.Integer, primary_key=True))


def downgrade() -> None:
    op.drop_table("audit")
'''

TABLES_AT = {"r1": {"item", "alembic_version"}, "r2": {"item", "audit", "alembic_version"}}


@pytest.fixture
def fleet(project_dir: ProjectDir, db: sa.Engine) -> Fleet:
    return Fleet(project_dir, db)


# --- 1. concurrent deploys ---------------------------------------------------------------

CONCURRENT_CONFIG = """
[tool.alembic-schemas]
script_location = "migrations"
lock_timeout = "5s"
lock_retries = 5

[tool.alembic-schemas.streams.ledger]
schema = "ledger"

[tool.alembic-schemas.streams.billing]
schema = "billing"

[tool.alembic-schemas.streams.tenant]
tenants = "like:t_%"
depends_on = ["ledger"]
"""

# The shared table has no key: a tenant revision applied twice shows up as a second row.
LEDGER_L1 = '''
"""the shared table every tenant's data migration writes to"""
import sqlalchemy as sa
from alembic import op

revision = "l1"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("applied", sa.Column("tenant", sa.Text), sa.Column("revision", sa.Text))
    op.execute("INSERT INTO ledger.applied VALUES ('ledger', 'l1')")


def downgrade() -> None:
    op.drop_table("applied")
'''

BILLING_B1 = '''
"""a second named stream, logging itself to the shared table"""
import sqlalchemy as sa
from alembic import op

revision = "b1"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("invoice", sa.Column("id", sa.Integer, primary_key=True))
    op.execute("SELECT pg_sleep(0.2)")
    op.execute("CREATE TABLE IF NOT EXISTS billing.runs (revision text)")
    op.execute("INSERT INTO billing.runs VALUES ('b1')")


def downgrade() -> None:
    op.drop_table("invoice")
'''

TENANT_T1 = '''
"""per-tenant table plus a data migration into the shared ledger table"""
import sqlalchemy as sa
from alembic import op

revision = "t1"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("item", sa.Column("id", sa.Integer, primary_key=True))
    op.execute("INSERT INTO ledger.applied VALUES (current_schema(), 't1')")


def downgrade() -> None:
    op.drop_table("item")
'''


def test_ten_concurrent_upgrades_apply_every_revision_exactly_once_per_schema(
    fleet: Fleet,
) -> None:
    fleet.project.write("pyproject.toml", CONCURRENT_CONFIG)
    alembic_schemas.init(fleet.root)
    fleet.write_revision("ledger", "l1_applied.py", LEDGER_L1)
    fleet.write_revision("billing", "b1_invoice.py", BILLING_B1)
    fleet.write_revision("tenant", "t1_item.py", TENANT_T1)
    names = tenant_names(TENANTS)
    fleet.make_tenants(names)

    started = time.monotonic()
    procs = [fleet.spawn("upgrade", "--json", app=f"as_deploy_{i}") for i in range(10)]
    try:
        outputs = [p.communicate(timeout=50) for p in procs]
    finally:
        for p in procs:
            kill(p)
    wall = time.monotonic() - started

    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
    tenant_versions = fleet.version_rows()
    assert tenant_versions == {t: ["t1"] for t in names}, "one version row per tenant, at head"
    named = {s: fleet.version_rows(s)[s] for s in ("ledger", "billing")}
    assert named == {"ledger": ["l1"], "billing": ["b1"]}
    with fleet.db.connect() as conn:
        rows = conn.execute(sa.text("SELECT tenant, revision FROM ledger.applied")).all()
        billing_runs = conn.scalars(sa.text("SELECT revision FROM billing.runs")).all()
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
    print(
        f"\n[promise 1] 10 concurrent upgrades, {TENANTS} tenants + 2 named streams: "
        f"wall {wall:.2f} s, all exit 0, {len(tenant_rows)} shared rows, "
        f"applied-by-one-run for {len(applied)} schemas"
    )


# --- 2. SIGKILL mid-run ------------------------------------------------------------------


def _assert_each_tenant_at_old_or_new(fleet: Fleet, names: list[str]) -> dict[str, int]:
    """Every tenant has one version row, r1 or r2, and exactly the tables that version has."""
    versions, tables = fleet.version_rows(), fleet.tables()
    assert set(versions) == set(names)
    counts = {"r1": 0, "r2": 0}
    for t in names:
        assert versions[t] in (["r1"], ["r2"]), f"{t}: version rows {versions[t]}"
        (v,) = versions[t]
        assert tables.get(t, set()) == TABLES_AT[v], f"{t} at {v} has tables {tables.get(t)}"
        counts[v] += 1
    return counts


def test_a_run_killed_with_sigkill_leaves_every_tenant_whole_and_no_lock(fleet: Fleet) -> None:
    fleet.project.write("pyproject.toml", TENANT_ONLY_CONFIG)
    alembic_schemas.init(fleet.root)
    fleet.write_revision("tenant", "r1_item.py", R1)
    fleet.write_revision("tenant", "r2_audit.py", R2_SLOW.format(sleep=0.04))
    names = tenant_names(TENANTS)
    fleet.make_tenants(names, at="r1")
    rng = random.Random(5)

    figures: list[str] = []
    for round_ in range(3):
        app = f"as_kill_{round_}"
        proc = fleet.spawn("upgrade", "--jobs", "2", app=app)
        try:
            # Kill only once tenant transactions are under way (a backend is in pg_sleep).
            wait_for("the run to start migrating", partial(fleet.migrating, app))
            delay = rng.uniform(0.05, 0.6)
            time.sleep(delay)
            assert proc.poll() is None, "the run finished before it could be killed"
            os.kill(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=10)
        finally:
            kill(proc)
        assert proc.returncode == -signal.SIGKILL
        gone = wait_for("the killed run's backends to end", partial(fleet.no_backends, app))
        assert fleet.advisory_locks() == 0, "no advisory lock outlives the killed run"
        counts = _assert_each_tenant_at_old_or_new(fleet, names)
        figures.append(
            f"kill {round_ + 1} at +{delay:.2f}s: {counts['r2']} at r2, {counts['r1']} at r1, "
            f"backends gone after {gone:.2f}s, 0 advisory locks"
        )
    assert _assert_each_tenant_at_old_or_new(fleet, names)["r1"] > 0, "the kills were mid-run"

    proc_done = fleet.cli("upgrade", "--jobs", "2", app="as_after_kill")
    assert proc_done.returncode == 0, proc_done.stderr
    assert fleet.version_rows() == {t: ["r2"] for t in names}
    assert all(fleet.tables()[t] == TABLES_AT["r2"] for t in names)
    assert fleet.advisory_locks() == 0
    print("\n[promise 2] SIGKILL mid-run, 200 tenants, seed 5:\n  " + "\n  ".join(figures))
    print("  next run: exit 0, all 200 tenants at r2 with matching tables")


# --- 3. a worker's connection terminated -------------------------------------------------


def test_a_terminated_worker_connection_fails_only_its_tenant_and_retry_failed_completes_it(
    fleet: Fleet,
) -> None:
    fleet.project.write("pyproject.toml", TENANT_ONLY_CONFIG)
    alembic_schemas.init(fleet.root)
    fleet.write_revision("tenant", "r1_item.py", R1)
    fleet.write_revision("tenant", "r2_audit.py", R2_SLOW.format(sleep=0.1))
    names = tenant_names(30)
    fleet.make_tenants(names, at="r1")
    app = "as_terminate"

    # One worker: the tenants after the victim are only attempted if that worker survives
    # its dead connection and gets a live one from the pool.
    proc = fleet.spawn("upgrade", "--jobs", "1", "--max-failures", "3", "--json", app=app)
    try:
        victim: list[int] = []

        def find_victim() -> bool:
            pid = fleet.sleeping_backend(app)
            if pid is not None:
                victim.append(pid)
            return pid is not None

        wait_for("a worker in a tenant transaction", find_victim)
        assert fleet.scalar("SELECT pg_terminate_backend(:pid)", pid=victim[0]) is True
        out, err = proc.communicate(timeout=50)
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
    versions = fleet.version_rows()
    assert versions == {t: ["r1" if t == bad else "r2"] for t in names}
    assert fleet.tables()[bad] == TABLES_AT["r1"], "its transaction rolled back"

    retry = fleet.cli("upgrade", "--retry-failed", "--json", app="as_retry")
    assert retry.returncode == 0, retry.stderr
    assert [(r["schema"], r["status"]) for r in json.loads(retry.stdout)["results"]] == [
        (bad, "applied")
    ]
    assert fleet.version_rows() == {t: ["r2"] for t in names}
    assert fleet.advisory_locks() == 0
    print(
        f"\n[promise 3] pg_terminate_backend on a worker: {bad} failed with "
        f"{message!r}; {summary['applied']} others applied (exit 1); "
        "--retry-failed: exit 0, all 30 at r2"
    )
