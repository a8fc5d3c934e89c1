"""Fleet runs of a history that needs Alembic on some revisions (tests/fixtures/online_history):
data migrations through op.get_bind() and through a helper imported from the app, replayable
revisions around them, two branches and a merge point.

* which revisions are replayed is decided by what they do when rendered, not by their source;
* replayed and Alembic-run revisions interleave on one tenant's way, in one transaction;
* Alembic-run revisions run in parallel worker processes, each tenant getting exactly its
  own data changes, with no tenant transaction left idle while its worker waits (for another
  worker, or for another run's lock on the tenant);
* downgrade runs on the same workers, with the run record and the same report;
* every tenant ends up exactly as one schema migrated by plain Alembic.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

import alembic_schemas
from alembic_schemas import database, identifiers, locks
from alembic_schemas.executor import replay
from alembic_schemas.streams import Stream

from alembic_reference import catalog as reference_catalog
from helpers import ProjectDir, create_schemas

TENANTS = [f"t_{i:02d}" for i in range(12)]
HEAD = "r8_after"


@pytest.fixture
def pd(project_dir: ProjectDir, db: sa.Engine) -> ProjectDir:
    project_dir.copy_project("online_history")
    create_schemas(db, TENANTS)
    return project_dir


def _stream(pd: ProjectDir) -> Stream:
    project = alembic_schemas.load(pd.root)
    return Stream(project, project.stream("tenant"))


def test_replay_is_decided_by_what_a_revision_does_not_by_its_source(pd: ProjectDir) -> None:
    stream = _stream(pd)
    dialect = sa.create_mock_engine("postgresql://", None).dialect
    script = stream.script
    online = {"r2_owner", "r4_helper"}  # r4's source names no connection: its helper does
    for sc in script.walk_revisions():
        assert replay.is_replayable(stream, sc, dialect) is (sc.revision not in online), sc
    assert "get_bind" not in Path(script.get_revision("r4_helper").path).read_text()


def test_replayed_and_online_revisions_interleave_and_a_merge_point_is_replayed(
    pd: ProjectDir,
) -> None:
    stream = _stream(pd)
    replayer = replay.Replayer(stream, sa.create_mock_engine("postgresql://", None).dialect)
    way = replayer.segments((), "heads")
    shape = [
        [rev for rev, _ in s.revisions] if isinstance(s, replay.Replay) else s.revision for s in way
    ]
    assert shape[:4] == [["r1_item"], "r2_owner", ["r3_note"], "r4_helper"]
    # after the last online revision, the branches, the merge and what follows are replayed
    assert len(shape) == 5 and isinstance(shape[4], list)
    assert sorted(shape[4]) == sorted(["r5_index", "r6a_left", "r6b_right", "r7_merge", HEAD])
    assert shape[4][-2:] == ["r7_merge", HEAD]


def test_online_revisions_run_in_parallel_processes_each_tenant_getting_its_own_rows(
    pd: ProjectDir, db: sa.Engine
) -> None:
    report = alembic_schemas.upgrade(streams=["tenant"], jobs=3, config=pd.root)
    assert sorted((r.schema, r.after, r.error) for r in report) == [
        (t, (HEAD,), None) for t in TENANTS
    ]
    writers: set[int] = set()
    with db.connect() as conn:
        for tenant in TENANTS:
            rows = database.run_sql(
                conn,
                f"SELECT tenant, pid FROM {identifiers.qualified(tenant, 'item')} ORDER BY id",
            ).all()
            # r2's row (pid 0) and r4's row, both naming this tenant and no other
            assert [r.tenant for r in rows] == [tenant, tenant]
            assert rows[0].pid == 0
            writers.add(rows[1].pid)
    assert len(writers) >= 2  # the app helper ran in more than one worker process


def _idle_in_transaction_timeout(db: sa.Engine, value: str) -> None:
    """``idle_in_transaction_session_timeout`` for every new session of the test's database."""
    with db.connect() as conn:
        name = conn.scalar(sa.text("SELECT current_database()"))
        database.run_sql(
            conn,
            f"ALTER DATABASE {identifiers.quote_object(str(name), 'database name')}"
            f" SET idle_in_transaction_session_timeout = '{value}'",
        )


def test_no_tenant_transaction_is_left_idle_while_its_worker_waits(
    pd: ProjectDir, db: sa.Engine
) -> None:
    _idle_in_transaction_timeout(db, "1s")
    report = alembic_schemas.upgrade(streams=["tenant"], jobs=3, config=pd.root)
    assert [r for r in report if r.error] == []
    assert len(report) == len(TENANTS)


def test_a_worker_waiting_for_another_runs_lock_waits_with_no_transaction_open(
    pd: ProjectDir, db: sa.Engine, db_url: str
) -> None:
    _idle_in_transaction_timeout(db, "100ms")  # under the longest pause between tries
    holder = database.create_engine(db_url, poolclass=sa.pool.NullPool)
    held, released = threading.Event(), threading.Event()

    def hold() -> None:  # another run holding t_00 for a while
        with holder.connect() as conn:
            conn.exec_driver_sql("SET idle_in_transaction_session_timeout = 0")
            conn.commit()
            with conn.begin():
                conn.execute(
                    sa.select(sa.func.pg_advisory_xact_lock(*locks.args("tenant", "t_00")))
                )
                held.set()
                time.sleep(1.5)
                released.set()

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert held.wait(10)
        report = alembic_schemas.upgrade(
            streams=["tenant"], tenants=["t_00"], jobs=1, config=pd.root
        )
        assert released.is_set(), "the run waited for the other run's lock"
    finally:
        thread.join()
        holder.dispose()
    assert [(r.schema, r.after, r.error) for r in report] == [("t_00", (HEAD,), None)]


def test_every_tenant_matches_one_schema_migrated_by_plain_alembic(
    pd: ProjectDir, db: sa.Engine
) -> None:
    alembic_schemas.upgrade(streams=["tenant"], jobs=2, config=pd.root)
    plain = "t_plain"
    with db.connect() as conn:
        database.run_sql(conn, f"CREATE SCHEMA {identifiers.quote(plain)}")
    command.upgrade(alembic_schemas.alembic_config("tenant", schema=plain, config=pd.root), "head")
    per_tenant = ("pid", "tenant")  # row values that name the tenant or its backend
    expected = reference_catalog(db, plain, per_tenant)
    assert expected["rows"]["alembic_version"] == [f'{{"version_num": "{HEAD}"}}']
    for tenant in TENANTS:
        assert reference_catalog(db, tenant, per_tenant) == expected, tenant


def test_fleet_downgrade_runs_on_parallel_workers_with_the_run_record(
    pd: ProjectDir, db: sa.Engine
) -> None:
    alembic_schemas.upgrade(streams=["tenant"], jobs=2, config=pd.root)
    proc = pd.cli("downgrade", "-s", "tenant", "r3_note", "--jobs", "3", "--json", check=True)
    summary = json.loads(proc.stdout)
    assert summary["applied"] == len(TENANTS) and summary["failed"] == 0
    assert {tuple(r["to"]) for r in summary["results"]} == {("r3_note",)}
    with db.connect() as conn:
        recorded = conn.execute(
            sa.text(
                "SELECT count(*), count(DISTINCT schema_name) FROM alembic_schemas.attempt"
                " WHERE run_id = :run AND status = 'applied'"
            ),
            {"run": summary["run_id"]},
        ).one()
        assert tuple(recorded) == (len(TENANTS), len(TENANTS))
        for tenant in TENANTS:
            tables = set(
                conn.scalars(
                    sa.text("SELECT tablename FROM pg_tables WHERE schemaname = :s"), {"s": tenant}
                )
            )
            assert tables == {"alembic_version", "item"}
    # and up again, replayed around the online revision
    report = alembic_schemas.upgrade(streams=["tenant"], jobs=3, config=pd.root)
    assert {r.after for r in report} == {(HEAD,)}
