"""Fleet upgrade of a tenant stream (issue 4): plan, one transaction per tenant, failures, the
run record, locking between concurrent runs, shards, output and offline SQL.

The tenant stream has a small hand-written history (tests/fixtures/fleet):

* ``r1`` creates ``item`` (replayable SQL);
* ``r2`` creates ``audit``, then a data migration that divides by zero when ``item`` holds a
  row named ``poison`` (replayable SQL);
* ``r3`` reads the tenant through ``op.get_bind()``, so it runs through Alembic online.

Every revision also inserts (tenant, revision) into the shared table ``fleet_log.applied``,
which has no key, so a revision applied twice shows up as a duplicate row. Upgrading to
``r2`` exercises the SQL replay path; upgrading to ``head`` (``r3``) the Alembic path.
Tenant schemas are created in bulk with SQL, already at ``r1`` where a test needs it.
"""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import alembic_schemas
from alembic_schemas import command, database, identifiers, locks
from alembic_schemas.config import URL_ENV
from alembic_schemas.errors import ConfigError, MigrationFailed
from alembic_schemas.executor import Action, Executor
from alembic_schemas.streams import streams_of

from helpers import (
    HANG,
    TENANT_STREAM,
    Catalog,
    ProjectDir,
    closed_port,
    config_toml,
    create_schemas,
    finish,
    tenant_names,
    wait_for,
    with_app_name,
)

STREAM = "tenant"

REVISIONS = ("r1", "r2", "r3")
TABLES_AT = {"r1": {"item"}, "r2": {"item", "audit"}, "r3": {"item", "audit"}}


def _names(n: int) -> list[str]:
    return tenant_names(n)


@dataclass
class Fleet:
    """A project with the tenant stream of tests/fixtures/fleet, on the test's database."""

    project: ProjectDir
    catalog: Catalog

    @property
    def root(self) -> Path:
        return self.project.root

    @property
    def db(self) -> sa.Engine:
        return self.catalog.db

    def configure(self, *, lock_timeout: str = "5s", lock_retries: int = 3) -> None:
        self.project.write(
            "pyproject.toml",
            config_toml(TENANT_STREAM, lock_timeout=lock_timeout, lock_retries=lock_retries),
        )

    def make_tenants(
        self, names: Iterable[str], *, at: str | None = None, poison: Iterable[str] = ()
    ) -> None:
        """Create tenant schemas in one batch: bare (no version table), or as if at ``at``."""
        poisoned = set(poison)
        sql: list[str] = []
        for name in names if at is not None else ():
            table = identifiers.qualified
            sql.append(
                f"CREATE TABLE {table(name, 'item')} (id serial PRIMARY KEY, name text NOT NULL)"
            )
            if "audit" in TABLES_AT[at]:
                sql.append(
                    f"CREATE TABLE {table(name, 'audit')} (id serial PRIMARY KEY, note text)"
                )
            sql.append(
                f"CREATE TABLE {table(name, 'alembic_version')} (version_num varchar(32) NOT NULL,"
                " CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
            )
            sql.append(f"INSERT INTO {table(name, 'alembic_version')} VALUES ('{at}')")
            sql.append(f"INSERT INTO {table(name, 'item')} (name) VALUES ('a'), ('b')")
            if name in poisoned:
                sql.append(f"INSERT INTO {table(name, 'item')} (name) VALUES ('poison')")
        create_schemas(self.db, names, *sql)

    def cure(self, tenant: str) -> None:
        with self.db.connect() as conn:
            conn.exec_driver_sql(
                f"DELETE FROM {identifiers.qualified(tenant, 'item')} WHERE name = 'poison'"
            )

    def versions(self) -> dict[str, str | None]:
        """Each tenant's version (None: no version table)."""
        return {t: (rows[0] if rows else None) for t, rows in self.catalog.version_rows().items()}

    def tables(self) -> dict[str, set[str]]:
        return self.catalog.tables_like()

    def log(self) -> list[tuple[str, str]]:
        """Every (tenant, revision) row of the shared log, duplicates included."""
        with self.db.connect() as conn:
            rows = conn.execute(sa.text("SELECT tenant, revision FROM fleet_log.applied"))
            return sorted((r.tenant, r.revision) for r in rows)

    def attempts(self, run_id: str | None = None) -> list[dict[str, Any]]:
        query = "SELECT * FROM alembic_schemas.attempt"
        params: dict[str, str] = {}
        if run_id is not None:
            query += " WHERE run_id = :run_id"
            params["run_id"] = run_id
        with self.db.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.text(query + " ORDER BY id"), params)]

    def cli(self, *args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
        return self.project.cli(*args, url=url)


def _fleet_log(db: sa.Engine) -> None:
    with db.connect() as conn:
        conn.exec_driver_sql(
            "CREATE SCHEMA fleet_log; CREATE TABLE fleet_log.applied (tenant text, revision text)"
        )


@pytest.fixture
def fleet(project_dir: ProjectDir, catalog: Catalog) -> Fleet:
    f = Fleet(project_dir, catalog)
    f.configure()
    alembic_schemas.init(project_dir.root)
    project_dir.install("fleet", "r1_item", "r2_audit", "r3_online")
    _fleet_log(catalog.db)
    return f


def _failed_report(exc: pytest.ExceptionInfo[MigrationFailed]) -> command.UpgradeReport:
    report = getattr(exc.value, "report", None)
    assert report is not None, "MigrationFailed carries the report"
    return report  # type: ignore[no-any-return]


# --- plan -------------------------------------------------------------------------------


def test_plan_reads_all_versions_in_a_few_statements_whatever_the_tenant_count(
    fleet: Fleet,
) -> None:
    names = _names(60)
    fleet.make_tenants(names[:40], at="r1")
    fleet.make_tenants(names[40:], at="r3")
    (stream,) = streams_of(alembic_schemas.load(fleet.root), [STREAM])
    statements: list[str] = []
    engine = database.create_engine(fleet.project.url)
    with engine.connect():
        pass  # SQLAlchemy's first-connect queries are not the plan's

    @sa.event.listens_for(engine, "before_cursor_execute")
    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    try:
        plan = Executor(stream, engine, Action("upgrade", "head")).plan(names)
    finally:
        engine.dispose()
    assert plan.target == ("r3",)
    assert plan.todo == names[:40]
    assert {t: plan.current[t] for t in names} == {
        **{t: ("r1",) for t in names[:40]},
        **{t: ("r3",) for t in names[40:]},
    }
    assert 1 <= len(statements) <= 2, "versions are read in bulk, not once per tenant"


def test_tenants_at_target_are_skipped_and_a_tenant_without_version_table_is_at_base(
    fleet: Fleet,
) -> None:
    names = _names(30)
    behind, at_head, bare = names[:20], names[20:27], names[27:]
    fleet.make_tenants(behind, at="r1")
    fleet.make_tenants(at_head, at="r3")
    fleet.make_tenants(bare)

    report = alembic_schemas.upgrade(config=fleet.root)

    assert sorted(r.schema for r in report) == behind + bare
    assert report.at_target == {STREAM: len(at_head)}
    assert report.as_dict()["unchanged"] == len(at_head)
    by_schema = {r.schema: r for r in report}
    for t in behind:
        assert (by_schema[t].before, by_schema[t].after, by_schema[t].status) == (
            ("r1",),
            ("r3",),
            "applied",
        )
    for t in bare:
        assert (by_schema[t].before, by_schema[t].after) == ((), ("r3",))
    assert set(fleet.versions().values()) == {"r3"}
    attempted = {a["schema_name"] for a in fleet.attempts(report.run_id)}
    assert attempted == set(behind + bare), "tenants at target are not attempted"
    logged = {t for t, _ in fleet.log()}
    assert logged.isdisjoint(at_head)
    assert fleet.log() == sorted(
        [(t, r) for t in behind for r in ("r2", "r3")] + [(t, r) for t in bare for r in REVISIONS]
    )


# --- one transaction per tenant, failures ------------------------------------------------


@pytest.mark.parametrize("target", ["r2", "head"])
def test_a_failing_tenant_rolls_back_alone_and_is_named_in_the_summary(
    fleet: Fleet, target: str
) -> None:
    names = _names(30)
    fleet.make_tenants(names, at="r1", poison=["t_007"])

    proc = fleet.cli("upgrade", target, "--max-failures", "5")

    assert proc.returncode == 1, proc.stderr
    # the revision and its file come first (replayed: no line), then PostgreSQL's words
    failed = r"tenant/t_007: revision r2 \(\S+/r2_audit\.py\): division by zero"
    assert re.search(failed.replace(": revision", ": FAILED: revision"), proc.stdout)
    assert "tenant: 29 applied, 1 failed" in proc.stdout
    assert re.search("error: " + failed, proc.stderr), proc.stderr
    final = "r2" if target == "r2" else "r3"
    versions, tables = fleet.versions(), fleet.tables()
    assert versions == {t: ("r1" if t == "t_007" else final) for t in names}
    assert tables["t_007"] == {"item", "alembic_version"}, "the failed tenant's DDL rolled back"
    assert all(tables[t] == {"item", "audit", "alembic_version"} for t in names if t != "t_007")
    logged = fleet.log()
    assert not [row for row in logged if row[0] == "t_007"], "its data migration rolled back"
    assert len(logged) == len(set(logged)) == 29 * (1 if target == "r2" else 2)
    # More than 20 tenants and stderr is not a terminal: plain progress lines, no bar.
    assert "tenant: 30/30 done, 1 failed, 0 remaining" in proc.stderr
    assert "━" not in proc.stderr


def test_after_the_first_failure_no_new_tenant_starts_unless_max_failures_allows(
    fleet: Fleet,
) -> None:
    names = _names(12)
    fleet.make_tenants(names, at="r1", poison=["t_004"])

    with pytest.raises(
        MigrationFailed, match=r"t_004: revision r2 \(.*\): division by zero"
    ) as exc:
        alembic_schemas.upgrade(jobs=1, config=fleet.root)
    report = _failed_report(exc)
    assert [r.schema for r in report] == names[:5], "with one worker, t_005.. never start"
    assert [r.schema for r in report.failed] == ["t_004"]
    assert "division by zero" in (report.failed[0].error or "")
    assert fleet.versions() == {t: ("r3" if t < "t_004" else "r1") for t in names}
    assert {a["schema_name"] for a in fleet.attempts(report.run_id)} == set(names[:5])

    with pytest.raises(MigrationFailed) as exc:
        alembic_schemas.upgrade(jobs=1, max_failures=5, config=fleet.root)
    report = _failed_report(exc)
    assert [r.schema for r in report] == names[4:], "t_000..t_003 are already at head"
    assert fleet.versions() == {t: ("r1" if t == "t_004" else "r3") for t in names}


# --- run record ---------------------------------------------------------------------------


def test_run_record_status_and_retry_failed_until_the_failures_succeed(fleet: Fleet) -> None:
    names = _names(25)
    fleet.make_tenants(names, at="r1", poison=["t_003", "t_017"])

    proc = fleet.cli("upgrade", "--max-failures", "5", "--json")
    assert proc.returncode == 1, proc.stderr
    summary = json.loads(proc.stdout)
    assert (summary["applied"], summary["unchanged"], summary["failed"]) == (23, 0, 2)
    results = {r["schema"]: r for r in summary["results"]}
    assert set(results) == set(names)
    assert {t for t, r in results.items() if r["status"] == "failed"} == {"t_003", "t_017"}
    assert "division by zero" in results["t_017"]["error"]
    assert results["t_000"]["status"] == "applied" and results["t_000"]["error"] is None

    rows = {a["schema_name"]: a for a in fleet.attempts(summary["run_id"])}
    assert set(rows) == set(names)
    assert {a["stream"] for a in rows.values()} == {STREAM}
    assert (rows["t_000"]["from_rev"], rows["t_000"]["to_rev"], rows["t_000"]["status"]) == (
        "r1",
        "r3",
        "applied",
    )
    assert (rows["t_003"]["from_rev"], rows["t_003"]["to_rev"], rows["t_003"]["status"]) == (
        "r1",
        "r1",
        "failed",
    )
    assert "division by zero" in rows["t_003"]["error"]
    assert rows["t_000"]["error"] is None
    assert all(a["seconds"] > 0 for a in rows.values())

    status = fleet.cli("status", "--no-drift")
    assert status.returncode == 0, status.stderr
    failures_text = status.stdout.split("last failures")[1]
    assert "tenant/t_003" in failures_text and "tenant/t_017" in failures_text
    assert "division by zero" in failures_text

    fleet.cure("t_003")
    proc = fleet.cli("upgrade", "--retry-failed", "--json")
    assert proc.returncode == 1, proc.stderr
    retry = json.loads(proc.stdout)
    assert {r["schema"]: r["status"] for r in retry["results"]} == {
        "t_003": "applied",
        "t_017": "failed",
    }, "only the tenants that failed in the last run"
    status_json = json.loads(fleet.cli("status", "--no-drift", "--json").stdout)
    assert [(f["stream"], f["schema"]) for f in status_json["last_failures"]] == [(STREAM, "t_017")]
    assert status_json["last_failures"][0]["run_id"] == retry["run_id"]

    fleet.cure("t_017")
    report = alembic_schemas.upgrade(retry_failed=True, config=fleet.root)
    assert [(r.schema, r.status) for r in report] == [("t_017", "applied")]
    assert command.last_failures(config=fleet.root) == []
    status = fleet.cli("status", "--no-drift")
    assert status.returncode == 0, status.stderr
    assert "last failures" not in status.stdout
    assert set(fleet.versions().values()) == {"r3"}


# --- locking ------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["r2", "head"])
def test_two_concurrent_upgrades_both_succeed_and_apply_every_revision_once(
    fleet: Fleet, target: str
) -> None:
    names = _names(100)
    fleet.make_tenants(names)

    apps = ["as_first", "as_second"]
    procs = [fleet.project.spawn("upgrade", target, "--json", app=app) for app in apps]
    outputs = [finish(p) for p in procs]

    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
    revisions = REVISIONS[:2] if target == "r2" else REVISIONS
    assert fleet.log() == sorted((t, r) for t in names for r in revisions)
    assert set(fleet.versions().values()) == {revisions[-1]}
    applied_by: dict[str, list[str]] = {}
    for out, _ in outputs:
        summary = json.loads(out)
        assert summary["failed"] == 0
        for r in summary["results"]:
            if r["status"] == "applied":
                applied_by.setdefault(r["schema"], []).append(summary["run_id"])
    assert {t: len(runs) for t, runs in applied_by.items()} == {t: 1 for t in names}, (
        "each tenant is reported applied by exactly one of the two runs"
    )


def test_a_tenant_held_by_another_run_is_deferred_then_waited_for_past_lock_timeout(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = _names(8)
    fleet.make_tenants(names, at="r1")
    others_done = threading.Event()
    seen: list[str] = []

    def on_result(r: alembic_schemas.SchemaResult) -> None:
        seen.append(r.schema)
        if len(seen) == len(names) - 1:
            others_done.set()

    fleet.configure(lock_timeout="200ms", lock_retries=2)
    monkeypatch.setenv(URL_ENV, with_app_name(fleet.project.url, "as_waiting"))
    holder = fleet.db.connect().execution_options(isolation_level="READ COMMITTED")
    holder_tx = holder.begin()
    locks.lock(holder, STREAM, "t_000")  # as another run migrating t_000 would

    def release_once_waited_long() -> None:
        # The other run is slow: the waiting one has waited longer than lock_timeout x
        # lock_retries (0.4 s) when it lets go.
        try:
            others_done.wait(HANG)
            wait_for("the run to wait for t_000", fleet.catalog.waiting_for_lock("as_waiting"))
            time.sleep(1.0)
        finally:
            holder_tx.rollback()

    releaser = threading.Thread(target=release_once_waited_long)
    releaser.start()
    try:
        report = alembic_schemas.upgrade("r2", jobs=2, on_result=on_result, config=fleet.root)
    finally:
        others_done.set()
        releaser.join()
        holder.close()
    assert seen[-1] == "t_000", "the held tenant is taken last, after the others"
    assert [r.status for r in report] == ["applied"] * len(names)
    assert set(fleet.versions().values()) == {"r2"}


@pytest.mark.parametrize("target", ["r2", "head"])
def test_a_locked_table_fails_its_tenant_with_a_lock_timeout_after_the_retries(
    fleet: Fleet, target: str
) -> None:
    fleet.configure(lock_timeout="200ms", lock_retries=2)
    names = _names(10)
    fleet.make_tenants(names, at="r1")
    with fleet.db.connect() as holder:
        holder.exec_driver_sql("BEGIN")
        holder.exec_driver_sql(
            f"LOCK TABLE {identifiers.qualified('t_003', 'item')} IN ACCESS EXCLUSIVE MODE"
        )
        # Returning at all while the lock is still held shows the wait is bounded.
        proc = fleet.cli("upgrade", target, "--max-failures", "5")
        holder.exec_driver_sql("ROLLBACK")

    assert proc.returncode == 1, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("tenant/t_003: FAILED"))
    assert "lock timeout (200ms) after 2 attempts" in line
    assert "lock timeout" in proc.stderr and "t_003" in proc.stderr
    final = "r2" if target == "r2" else "r3"
    assert fleet.versions() == {t: ("r1" if t == "t_003" else final) for t in names}
    assert fleet.tables()["t_003"] == {"item", "alembic_version"}


def test_named_stream_concurrent_upgrades_both_succeed_and_apply_once(
    project_dir: ProjectDir, catalog: Catalog
) -> None:
    project_dir.write(
        "pyproject.toml",
        """
        [tool.alembic-schemas]
        lock_timeout = "200ms"
        lock_retries = 2
        [tool.alembic-schemas.streams.shared]
        schema = "shared"
        """,
    )
    alembic_schemas.init(project_dir.root)
    project_dir.install("gated_named")
    _fleet_log(catalog.db)

    with catalog.db.connect() as gate:
        gate.exec_driver_sql("SELECT pg_advisory_lock(4242)")
        first = project_dir.spawn("upgrade", app="as_first")
        wait_for("the first run at the gate", catalog.waiting_for_lock("as_first"))
        second = project_dir.spawn("upgrade", app="as_second")
        wait_for("the second run to wait for the first", catalog.waiting_for_lock("as_second"))
        gate.exec_driver_sql("SELECT pg_advisory_unlock(4242)")
        outputs = [finish(p) for p in (first, second)]

    for p, (_, err) in zip((first, second), outputs, strict=True):
        assert p.returncode == 0, err
    assert Fleet(project_dir, catalog).log() == [("shared", "s1")]
    assert catalog.version_rows("shared") == {"shared": ["s1"]}
    catalog.assert_no_advisory_lock("as_first", "as_second")


# --- shards -------------------------------------------------------------------------------


def test_shards_partition_the_tenants_the_same_way_on_every_run(fleet: Fleet) -> None:
    names = _names(30)
    fleet.make_tenants(names)

    first: list[set[str]] = []
    for k in (1, 2, 3):
        proc = fleet.cli("upgrade", "r1", "--shard", f"{k}/3", "--json")
        assert proc.returncode == 0, proc.stderr
        first.append({r["schema"] for r in json.loads(proc.stdout)["results"]})
    assert all(first), "every shard gets some of the 30 tenants"
    assert sum(len(s) for s in first) == len(names), "disjoint"
    assert set().union(*first) == set(names), "together they are every tenant"

    second = [
        {r.schema for r in alembic_schemas.upgrade("r2", shard=f"{k}/3", config=fleet.root)}
        for k in (1, 2, 3)
    ]
    assert second == first, "a tenant stays in its shard from run to run"
    assert set(fleet.versions().values()) == {"r2"}

    for bad in ("0/3", "4/3", "1/0", "half"):
        with pytest.raises(ConfigError):
            alembic_schemas.upgrade(shard=bad, config=fleet.root)
    proc = fleet.cli("upgrade", "--shard", "4/3")
    assert proc.returncode == 2 and "--shard" in proc.stderr


# --- output -------------------------------------------------------------------------------


def test_progress_is_a_rich_bar_on_a_terminal(fleet: Fleet) -> None:
    names = _names(25)
    fleet.make_tenants(names)
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "alembic_schemas", "upgrade", "r1"],
        cwd=fleet.root,
        env={
            **os.environ,
            "ALEMBIC_SCHEMAS_URL": fleet.project.url,
            "TERM": "xterm-256color",
            "COLUMNS": "120",
        },
        stdout=subprocess.PIPE,
        stderr=slave,
        text=True,
    )
    os.close(slave)
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: every writer of the terminal has closed it
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read)
    reader.start()
    out, _ = finish(proc)
    reader.join(10)
    os.close(master)
    terminal = b"".join(chunks).decode("utf-8", "replace")

    assert proc.returncode == 0, terminal
    assert "━" in terminal, "a rich bar"
    assert "25/25" in terminal and "failed 0" in terminal and "0 remaining" in terminal
    assert "done, 0 failed" not in terminal, "no plain lines on a terminal"
    assert "tenant: 25 applied, 0 failed" in out


# --- offline SQL --------------------------------------------------------------------------


def _sections(text: str) -> dict[str, str]:
    """The ``--sql`` output split at its ``-- stream S, schema T`` headers."""
    out: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("-- stream "):
            current = line.split("schema ", 1)[1]
            out[current] = ""
        elif current is not None:
            out[current] += line + "\n"
    return out


def test_sql_writes_each_tenant_without_touching_the_database(fleet: Fleet) -> None:
    nowhere = f"postgresql+psycopg://nobody@127.0.0.1:{closed_port()}/nothing"
    tenants: Sequence[str] = ("t_a", "t_B b")  # the second needs quoting

    proc = fleet.cli(
        "upgrade", "--sql", "--tenant", tenants[0], "--tenant", tenants[1], url=nowhere
    )

    assert proc.returncode == 0, proc.stderr
    sections = _sections(proc.stdout)
    assert list(sections) == list(tenants)
    for tenant, other in (tenants, tenants[::-1]):
        sql = sections[tenant]
        quoted = identifiers.quote(tenant)
        assert f"CREATE SCHEMA IF NOT EXISTS {quoted}" in sql
        assert f"SET LOCAL search_path TO {quoted}" in sql
        assert "CREATE TABLE item" in sql and "CREATE TABLE audit" in sql
        assert sql.count("INSERT INTO fleet_log.applied") == 3
        assert "r3" in sql and "COMMIT" in sql
        assert identifiers.quote(other) not in sql

    # The script is complete: run as written, it creates both tenants at head.
    with fleet.db.connect() as conn:
        conn.exec_driver_sql(sections[tenants[0]] + sections[tenants[1]])
    assert fleet.versions() == {t: "r3" for t in tenants}
    assert fleet.log() == sorted((t, r) for t in tenants for r in REVISIONS)

    proc = fleet.cli("upgrade", "--sql", url=nowhere)
    assert proc.returncode == 2 and "--tenant" in proc.stderr


def test_a_tab_in_a_revision_reaches_every_tenant_unchanged(fleet: Fleet) -> None:
    fleet.project.install("fleet", "r4_tab")
    names = _names(3)
    fleet.make_tenants(names, at="r3")
    command.upgrade(streams=[STREAM], config=fleet.root)
    with fleet.db.connect() as conn:
        for t in names:
            rows = conn.exec_driver_sql(
                f"SELECT name FROM {identifiers.qualified(t, 'item')} WHERE id > 2 ORDER BY id"
            ).scalars()
            assert list(rows) == ["a\tb", "plain"], t
    assert fleet.versions() == dict.fromkeys(names, "r4")
