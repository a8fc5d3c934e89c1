"""Non-transactional steps (issue 5, promise 5): revisions whose ``autocommit_block`` runs
``CREATE INDEX CONCURRENTLY``.

A failed block leaves no INVALID index (it is dropped, or named with the statement that drops
it) and never a version row claiming the revision; revisions before it stay committed with
their version rows; a run killed inside the block is finished by the next run; a concurrent
run waits instead of running the block twice. Every CLI run is a real process; every wait is
bounded. Run with ``-s`` to see the figures.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import sqlalchemy as sa

import alembic_schemas
from alembic_schemas import embedded, identifiers

from helpers import (
    HANG,
    OF_APP,
    Catalog,
    ProjectDir,
    config_toml,
    create_schemas,
    finish,
    kill,
    wait_for,
)

STREAMS = {"core": {"schema": "core"}, "tenant": {"tenants": "like:t_%"}}


def _config(*streams: str) -> str:
    return config_toml({s: STREAMS[s] for s in streams}, lock_timeout="2s")


R1 = """
    op.create_table(
        "item", sa.Column("id", sa.Integer, primary_key=True), sa.Column("code", sa.Integer)
    )
    op.execute("INSERT INTO item (code) SELECT g FROM generate_series(1, 50) g")
"""

# The unique index fails part-way on a schema whose codes repeat: PostgreSQL has already
# committed the index's catalog entry, so it is left INVALID.
BLOCK = """
    with op.get_context().autocommit_block():
        op.create_index(
            "item_code", "item", ["code"], unique=True, postgresql_concurrently=True,
            if_not_exists=True,
        )
"""
R2 = BLOCK + '    op.add_column("item", sa.Column("note", sa.Text))\n'


def _project(project: ProjectDir, streams: tuple[str, ...] = ("core", "tenant")) -> None:
    project.write("pyproject.toml", _config(*streams))
    alembic_schemas.init(project.root)
    for stream in streams:
        project.revision(stream, "r1", None, R1)
        project.revision(stream, "r2", "r1", R2)


def _indexes(catalog: Catalog, name: str = "item_code") -> dict[str, bool]:
    """schema -> indisvalid of each index called ``name``."""
    found = catalog.rows(
        "SELECT n.nspname, i.indisvalid FROM pg_index i"
        " JOIN pg_class c ON c.oid = i.indexrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relname = :name",
        name=name,
    )
    return {r[0]: r[1] for r in found}


def _invalid_indexes(catalog: Catalog) -> list[str]:
    return catalog.strings(
        "SELECT n.nspname || '.' || c.relname FROM pg_index i"
        " JOIN pg_class c ON c.oid = i.indexrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE NOT i.indisvalid"
    )


def _version(catalog: Catalog, schema: str) -> list[str]:
    return catalog.version_rows(schema)[schema]


def _set_codes(catalog: Catalog, value: str, *schemas: str) -> None:
    """``code = 1`` makes the unique index fail; ``code = id`` lets it build."""
    with catalog.db.connect() as conn:
        for s in schemas:
            conn.exec_driver_sql(f"UPDATE {identifiers.qualified(s, 'item')} SET code = {value}")


def test_a_failing_create_index_concurrently_leaves_no_invalid_index_and_no_version_row(
    project: ProjectDir, catalog: Catalog
) -> None:
    _project(project)
    tenants = [f"t_{i}" for i in range(6)]
    broken = ["t_1", "t_4"]
    create_schemas(catalog.db, tenants)
    proc = project.cli("upgrade", "r1")
    assert proc.returncode == 0, proc.stderr
    _set_codes(catalog, "1", "core", *broken)

    # A failed named stream stops the run before later streams: one run per stream.
    results = {}
    for stream in ("tenant", "core"):
        proc = project.cli("upgrade", "-s", stream, "--json", "--max-failures", "5")
        assert proc.returncode == 1, proc.stderr
        assert "Traceback" not in proc.stderr
        results.update({r["schema"]: r for r in json.loads(proc.stdout)["results"]})
    failed = sorted(s for s, r in results.items() if r["status"] == "failed")
    print(f"\nfailed CREATE INDEX CONCURRENTLY: {failed}; e.g. {results['t_1']['error']!r}")
    assert failed == ["core", *broken]
    for schema in failed:
        error = results[schema]["error"]
        # the revision, its file and line, PostgreSQL's message and DETAIL, what was done
        stream = "core" if schema == "core" else "tenant"
        assert error.startswith(f"revision r2 ({project.root}/migrations/{stream}/versions/r2.py:")
        assert '): could not create unique index "item_code"; DETAIL: Key (code)=(1) is' in error
        assert results[schema]["statement"].startswith("CREATE UNIQUE INDEX CONCURRENTLY")
        assert f'dropped the INVALID index "{schema}"."item_code" it left' in error
        assert results[schema]["to"] == ["r1"]
        assert _version(catalog, schema) == ["r1"]
        assert "note" not in catalog.columns(schema, "item"), (
            "the statement after the block never ran"
        )
        assert set(catalog.applied(schema)) == {"r1"}
    assert _invalid_indexes(catalog) == []
    assert catalog.unfinished() == [], "a failed block that left nothing leaves no marker"
    good = [t for t in tenants if t not in broken]
    assert _indexes(catalog) == dict.fromkeys(good, True)
    for tenant in good:
        assert _version(catalog, tenant) == ["r2"]
        assert "note" in catalog.columns(tenant, "item")
    catalog.assert_no_advisory_lock()

    _set_codes(catalog, "id", "core", *broken)
    proc = project.cli("upgrade")
    assert proc.returncode == 0, proc.stderr
    assert _indexes(catalog) == dict.fromkeys(["core", *tenants], True)
    assert all(_version(catalog, s) == ["r2"] for s in ["core", *tenants])
    assert catalog.unfinished() == []


def test_statements_before_an_autocommit_block_are_refused_and_nothing_commits(
    project: ProjectDir, catalog: Catalog
) -> None:
    project.write("pyproject.toml", _config("core"))
    alembic_schemas.init(project.root)
    project.revision("core", "r1", None, R1)
    before = '    op.add_column("item", sa.Column("early", sa.Text))\n'
    project.revision("core", "r2", "r1", before + BLOCK)

    proc = project.cli("upgrade", "-s", "core")
    assert proc.returncode == 1
    message = proc.stderr.strip()
    print(f"\nstatement before the block: {message}")
    assert message.startswith("alembic-schemas: error: core: revision r2 (/") and message.endswith(
        "r2.py) writes 1 statement(s) before its autocommit_block; committing them without"
        " the revision's version row would leave it half-applied: move them to a revision of"
        " their own or after the block, or set commit_before_autocommit_block = true on stream"
        " 'core' to commit them first as Alembic does"
    ), message
    # r1, and creating the schema, ran in the same transaction: nothing was committed.
    assert catalog.version_rows("core") == {}, "no schema core"
    catalog.assert_no_advisory_lock()


def test_a_failure_after_the_block_keeps_earlier_revisions_and_says_what_stays(
    project: ProjectDir, catalog: Catalog
) -> None:
    _project(project, ("tenant",))
    project.revision("tenant", "r3", "r2", '    op.execute("SELECT 1 / 0")\n')
    create_schemas(catalog.db, ["t_a"])

    proc = project.cli("upgrade", "--json")
    assert proc.returncode == 1
    (result,) = json.loads(proc.stdout)["results"]
    print(f"\nfailure after the block: {result['error']}")
    r3 = project.root / "migrations" / "tenant" / "versions" / "r3.py"
    assert result["error"] == f"revision r3 ({r3}): division by zero"  # replayed: no line
    assert result["from"] == [] and result["to"] == ["r2"]
    # r2 (block, then the rest and its version row) committed before r3 started.
    assert _version(catalog, "t_a") == ["r2"]
    assert set(catalog.applied("t_a")) == {"r1", "r2"}
    assert _indexes(catalog) == {"t_a": True}
    assert "note" in catalog.columns("t_a", "item")

    # The statement after the block fails: the block stays, and the error says so.
    block3 = BLOCK.replace("item_code", "item_code3")
    project.revision("tenant", "r3", "r2", block3 + '    op.execute("SELECT 1 / 0")\n')
    proc = project.cli("upgrade", "--json")
    (result,) = json.loads(proc.stdout)["results"]
    assert result["error"] == (
        f"revision r3 ({r3}:{_line_of(r3, '1 / 0')}): division by zero; revision r3's"
        " autocommit_block had completed and stays; its version"
        " row was not written, so the next run runs the block again (write it to be"
        " repeatable, e.g. create_index(..., if_not_exists=True))"
    )
    assert _version(catalog, "t_a") == ["r2"]
    assert _indexes(catalog, "item_code3") == {"t_a": True}

    project.revision("tenant", "r3", "r2", BLOCK.replace("item_code", "item_code3"))
    proc = project.cli("upgrade")
    assert proc.returncode == 0, proc.stderr
    assert _version(catalog, "t_a") == ["r3"]
    assert catalog.unfinished() == []
    catalog.assert_no_advisory_lock()


def _line_of(path: Path, text: str) -> int:
    """The number of the first line of ``path`` holding ``text``."""
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def _cic_waiting(catalog: Catalog, app: str) -> bool:
    found = catalog.scalar(
        f"SELECT count(*) FROM pg_stat_activity WHERE {OF_APP}"
        " AND query LIKE 'CREATE UNIQUE INDEX CONCURRENTLY%' AND wait_event_type = 'Lock'",
        app=app,
    )
    return found == 1


def _cic_backend(catalog: Catalog, app: str) -> int:
    pid = catalog.scalar(
        f"SELECT pid FROM pg_stat_activity WHERE {OF_APP}"
        " AND query LIKE 'CREATE UNIQUE INDEX CONCURRENTLY%'",
        app=app,
    )
    assert isinstance(pid, int)
    return pid


@contextlib.contextmanager
def _block_waiting(
    project: ProjectDir, catalog: Catalog, app: str
) -> Iterator[tuple[sa.Connection, subprocess.Popen[str]]]:
    """Tenant t_a at r1, and a run (``app``) whose block waits inside CREATE INDEX
    CONCURRENTLY: the yielded connection holds a write transaction on the table."""
    _project(project, ("tenant",))
    create_schemas(catalog.db, ["t_a"])
    assert project.cli("upgrade", "r1").returncode == 0
    with catalog.db.connect() as writer:
        writer.exec_driver_sql("BEGIN")
        writer.exec_driver_sql('UPDATE "t_a".item SET code = code WHERE id = 1')
        proc = project.spawn("upgrade", "--json", app=app)
        try:
            wait_for("the block to wait", partial(_cic_waiting, catalog, app))
            yield writer, proc
        finally:
            kill(proc)


def test_a_concurrent_run_waits_for_the_block_instead_of_running_it_twice(
    project: ProjectDir, catalog: Catalog
) -> None:
    with _block_waiting(project, catalog, "as_first") as (writer, first):
        second = project.spawn("upgrade", "--json", app="as_second")
        try:
            # The second run reaches the tenant and queues behind the first one's lock.
            waiting = catalog.waiting_for_lock("as_second")
            wait_for("the second run to wait for the tenant's lock", waiting)
            assert second.poll() is None and first.poll() is None
            writer.exec_driver_sql("ROLLBACK")
            out1, err1 = finish(first)
            out2, err2 = finish(second)
        finally:
            kill(second)
    assert first.returncode == 0, err1
    assert second.returncode == 0, err2
    statuses = [json.loads(out)["results"][0]["status"] for out in (out1, out2)]
    print(f"\nconcurrent runs over a block: {statuses}")
    assert sorted(statuses) == ["applied", "unchanged"]
    assert _version(catalog, "t_a") == ["r2"]
    assert _indexes(catalog) == {"t_a": True}
    catalog.assert_no_advisory_lock("as_first", "as_second")


def test_a_run_killed_inside_the_block_is_finished_by_the_next_run(
    project: ProjectDir, catalog: Catalog
) -> None:
    with _block_waiting(project, catalog, "as_killed") as (writer, proc):
        # The host dies: the process and its server backend both go.
        os.kill(proc.pid, signal.SIGKILL)
        finish(proc)
        with catalog.db.connect() as admin:
            admin.execute(
                sa.text("SELECT pg_terminate_backend(:pid)"),
                {"pid": _cic_backend(catalog, "as_killed")},
            )
        writer.exec_driver_sql("ROLLBACK")
    catalog.assert_no_advisory_lock("as_killed")
    assert _indexes(catalog) == {"t_a": False}, "the killed CREATE INDEX CONCURRENTLY left it"
    assert _version(catalog, "t_a") == ["r1"]
    assert catalog.unfinished() == [("tenant", "t_a", "r2")]

    proc2 = project.cli("upgrade")
    assert proc2.returncode == 0, proc2.stderr
    assert _indexes(catalog) == {"t_a": True}
    assert _version(catalog, "t_a") == ["r2"]
    assert catalog.unfinished() == []


def test_an_invalid_index_the_tool_did_not_leave_is_named_with_its_fix(
    project: ProjectDir, catalog: Catalog
) -> None:
    _project(project, ("tenant",))
    create_schemas(catalog.db, ["t_a"])
    assert project.cli("upgrade", "r1").returncode == 0
    with catalog.db.connect() as conn:
        conn.exec_driver_sql('UPDATE "t_a".item SET code = 1')
        with pytest.raises(sa.exc.IntegrityError):
            conn.exec_driver_sql('CREATE UNIQUE INDEX CONCURRENTLY "by hand" ON "t_a".item (code)')
        conn.exec_driver_sql('UPDATE "t_a".item SET code = id')
    assert _indexes(catalog, "by hand") == {"t_a": False}

    proc = project.cli("upgrade")
    assert proc.returncode == 1
    fix = 'DROP INDEX CONCURRENTLY "t_a"."by hand"'
    print(f"\nforeign INVALID index: {proc.stderr.strip()}")
    assert proc.stderr.strip() == (
        'alembic-schemas: error: tenant/t_a: INVALID index(es) "t_a"."by hand" (left by an'
        " interrupted CREATE INDEX CONCURRENTLY?) would break revision r2's autocommit_block;"
        f" drop them and run again: {fix}"
    )
    assert _version(catalog, "t_a") == ["r1"]
    assert _indexes(catalog, "by hand") == {"t_a": False}, "not ours to drop"

    with catalog.db.connect() as conn:
        conn.exec_driver_sql(fix)
    proc = project.cli("upgrade")
    assert proc.returncode == 0, proc.stderr
    assert _version(catalog, "t_a") == ["r2"]


def test_upgrade_sql_runs_the_block_outside_the_transaction_in_the_tenant(
    project: ProjectDir, catalog: Catalog
) -> None:
    _project(project, ("tenant",))
    proc = project.cli("upgrade", "-s", "tenant", "--tenant", "t_sql", "--sql")
    assert proc.returncode == 0, proc.stderr
    script = proc.stdout
    order = [
        "COMMIT;",
        'SET search_path TO "t_sql";',
        "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS item_code ON item (code);",
        "RESET search_path;",
        "BEGIN;",
        'SET LOCAL search_path TO "t_sql";',
        "ALTER TABLE item ADD COLUMN note TEXT;",
    ]
    at = script.index("-- Running upgrade r1 -> r2")
    for line in order:  # each after the one before
        at = script.index(line, at) + len(line)
    # psql runs it as written (CREATE INDEX CONCURRENTLY refuses to run in a transaction).
    psql = embedded.bin_path() / "psql"
    url = sa.engine.make_url(project.url)
    run = subprocess.run(
        [str(psql), "-X", "-v", "ON_ERROR_STOP=1", "-q", "-f", "-"],
        input=script,
        capture_output=True,
        text=True,
        timeout=HANG,
        env={
            **os.environ,
            "PGHOST": str(url.query.get("host") or url.host or ""),
            "PGPORT": str(url.port or url.query.get("port") or 5432),
            "PGUSER": url.username or "",
            "PGPASSWORD": url.password or "",
            "PGDATABASE": url.database or "",
        },
    )
    assert run.returncode == 0, run.stderr
    assert _indexes(catalog) == {"t_sql": True}
    assert _version(catalog, "t_sql") == ["r2"]


MODELS = """
import sqlalchemy as sa

metadata = sa.MetaData()
item = sa.Table(
    "item",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("code", sa.Integer),
    sa.Column("note", sa.Text),
    sa.Column("added", sa.Text),
    sa.Index("item_code", "code", unique=True),
)
"""


def test_tenant_autogenerate_runs_a_history_with_a_block_in_its_rolled_back_scratch_schema(
    project: ProjectDir, catalog: Catalog
) -> None:
    _project(project, ("tenant",))
    project.write("nt_models.py", MODELS)
    config = (project.root / "pyproject.toml").read_text()
    project.write("pyproject.toml", config + 'metadata = "nt_models:metadata"\n')

    proc = project.cli("revision", "-s", "tenant", "-m", "added", "--autogenerate")
    assert proc.returncode == 0, proc.stderr
    (new,) = [p for p in project.versions("tenant") if p.name not in {"r1.py", "r2.py"}]
    upgrade = new.read_text().split("def downgrade")[0]
    assert "op.add_column('item', sa.Column('added'" in upgrade, upgrade
    assert "drop_" not in upgrade and "create_index" not in upgrade, upgrade
    with catalog.db.connect() as conn:
        left = conn.scalars(
            sa.text("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'alembic_schemas_scr%'")
        ).all()
    assert left == [], "the scratch schema never outlives the call"
    assert catalog.unfinished() == []


def test_a_failed_tenant_create_leaves_no_partly_created_tenant(
    project: ProjectDir, catalog: Catalog
) -> None:
    project.write("pyproject.toml", _config("tenant"))
    alembic_schemas.init(project.root)
    repeated = R1.replace("SELECT g FROM", "SELECT 1 FROM")  # the block's unique index fails
    project.revision("tenant", "r1", None, repeated)
    project.revision("tenant", "r2", "r1", R2)

    for how in (["--replay"], []):
        proc = project.cli("tenants", "create", *how, "t_new")
        assert proc.returncode == 1, proc.stderr
        message = proc.stderr.strip().splitlines()[-1]
        print(f"\ntenants create {' '.join(how)}: {message}")
        assert 'could not create unique index "item_code"' in message
        if how:
            assert message.endswith("(the partly created schema was dropped)"), message
        assert catalog.version_rows("t_new") == {}, "no tenant t_new"
        assert _invalid_indexes(catalog) == []
    catalog.assert_no_advisory_lock()
