"""Through a real PgBouncer in transaction pooling mode: with ``direct_url`` the fleet, a
named stream and ``tenants create`` run through the pooler and an ``autocommit_block``
revision through the direct connection; without it the tool refuses in one line, and never
leaves a session setting on the pooler's server connections."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

import pgbouncer
from helpers import ProjectDir
from helpers import run_cli_own_url as run_cli

SAAS = Path(__file__).resolve().parent.parent / "examples" / "saas"
INDEX_REVISION = (
    Path(__file__).resolve().parent / "fixtures" / "pgbouncer" / "0002_tenant_title_index.py"
)
TENANTS = 40

pytestmark = pytest.mark.skipif(
    pgbouncer.binary() is None and not os.environ.get(pgbouncer.PGBOUNCER_ENV),
    reason="no pgbouncer binary (apt-get install pgbouncer)",
)


@pytest.fixture(scope="module")
def bouncer(server_url: str) -> Iterator[pgbouncer.Bouncer]:
    given = os.environ.get(pgbouncer.PGBOUNCER_ENV)
    if given:  # .ci/run's, in front of its PostgreSQL 15
        host, _, port = given.rpartition(":")
        yield pgbouncer.Bouncer(host, int(port))
        return
    with pgbouncer.start(server_url) as started:
        yield started


def _saas(project_dir: ProjectDir, url: str, direct_url: str | None) -> Path:
    shutil.copytree(
        SAAS,
        project_dir.root,
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns("__pycache__", ".alembic-schemas"),
    )
    pyproject = project_dir.root / "pyproject.toml"
    keys = f"url = {url!r}\n" + (f"direct_url = {direct_url!r}\n" if direct_url else "")
    pyproject.write_text(pyproject.read_text().replace('url = "embedded"\n', keys))
    return project_dir.root


def _cli(project_dir: ProjectDir, *args: str) -> tuple[int, str, str]:
    """The CLI on the config's url and direct_url, as written."""
    proc = run_cli(project_dir.root, *args)
    return proc.returncode, proc.stdout, proc.stderr


def _search_path_through(bouncer: pgbouncer.Bouncer, db_url: str) -> set[str]:
    """search_path of every server connection the pooler hands out (all in use at once)."""
    engine = sa.create_engine(bouncer.pooled(db_url), poolclass=sa.pool.NullPool)
    conns = [engine.connect() for _ in range(8)]
    try:
        for conn in conns:
            conn.exec_driver_sql("SELECT 1")  # each holds a server connection in a transaction
        return {str(conn.scalar(sa.text("SHOW search_path"))) for conn in conns}
    finally:
        for conn in conns:
            conn.close()
        engine.dispose()


def test_fleet_named_stream_and_tenants_create_run_through_pgbouncer(
    project_dir: ProjectDir, db: sa.Engine, db_url: str, bouncer: pgbouncer.Bouncer
) -> None:
    _saas(project_dir, bouncer.pooled(db_url), db_url)
    database = sa.engine.make_url(db_url).database
    before = bouncer.admin_scalar(db_url, "SHOW STATS", "total_xact_count", str(database))

    code, out, err = _cli(project_dir, "upgrade")  # the named stream
    assert code == 0, err
    with db.connect() as conn:
        conn.exec_driver_sql("INSERT INTO shared.plan VALUES (1, 'free')")
        conn.exec_driver_sql(
            f"INSERT INTO shared.tenant SELECT 't_' || i, 1 FROM generate_series(1, {TENANTS}) i"
        )
    code, out, err = _cli(project_dir, "upgrade", "--jobs", "4")  # the fleet
    assert code == 0, err
    assert f"tenant: {TENANTS} applied, 0 failed" in out
    code, out, err = _cli(project_dir, "tenants", "create", "newco")
    assert code == 0 and "created tenant newco at 0001_tenant_init" in out, err

    after = bouncer.admin_scalar(db_url, "SHOW STATS", "total_xact_count", str(database))
    assert after - before >= TENANTS + 1, "the migrations went through PgBouncer"
    code, out, err = _cli(project_dir, "check")
    assert code == 0, out + err
    # Nothing of the tool's sessions stayed on the server connections the app shares.
    assert _search_path_through(bouncer, db_url) == {'"$user", public'}


def test_an_autocommit_block_revision_runs_through_direct_url(
    project_dir: ProjectDir, db: sa.Engine, db_url: str, bouncer: pgbouncer.Bouncer
) -> None:
    root = _saas(project_dir, bouncer.pooled(db_url), db_url)
    shutil.copy(INDEX_REVISION, root / "migrations" / "tenant" / "versions")
    assert _cli(project_dir, "upgrade")[0] == 0
    with db.connect() as conn:
        conn.exec_driver_sql("INSERT INTO shared.plan VALUES (1, 'free')")
        conn.exec_driver_sql("INSERT INTO shared.tenant VALUES ('t_1', 1), ('t_2', 1)")
    code, out, err = _cli(project_dir, "upgrade")
    assert code == 0, err
    with db.connect() as conn:
        valid = conn.exec_driver_sql(
            "SELECT n.nspname, i.indisvalid FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relname = 'project_title' ORDER BY 1"
        ).all()
    assert [tuple(r) for r in valid] == [("t_1", True), ("t_2", True)]
    assert _search_path_through(bouncer, db_url) == {'"$user", public'}


def test_without_direct_url_a_pooler_is_refused_in_one_line(
    project_dir: ProjectDir, db_url: str, bouncer: pgbouncer.Bouncer
) -> None:
    _saas(project_dir, bouncer.pooled(db_url), None)
    code, out, err = _cli(project_dir, "upgrade")
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1, err
    assert "unsupported startup parameter: options" in lines[0]
    assert lines[0].endswith(
        "(a connection pooler (PgBouncer?) is between alembic-schemas and PostgreSQL: set "
        "direct_url to a direct connection, see 'Connection poolers' in the README)"
    )


@pytest.mark.skipif(pgbouncer.binary() is None, reason="no pgbouncer binary")
def test_an_autocommit_block_behind_a_pooler_that_ignores_options_is_refused(
    project_dir: ProjectDir, db: sa.Engine, db_url: str, server_url: str
) -> None:
    # A pooler configured to drop the search_path the tool asks for: the tool notices the
    # pooling itself before a step that needs one session.
    with pgbouncer.start(server_url, ignore_startup_parameters="options") as lenient:
        root = _saas(project_dir, lenient.pooled(db_url), None)
        shutil.copy(INDEX_REVISION, root / "migrations" / "tenant" / "versions")
        code, out, err = _cli(project_dir, "upgrade")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0] == (
        "alembic-schemas: error: stream 'tenant': revision 0002_tenant_title_index's "
        "autocommit_block needs one database session across transactions, and PostgreSQL is "
        "reached through a connection pooler in transaction mode, where session-level locks "
        "and settings do not last: set direct_url to a direct connection (see 'Connection "
        "poolers' in the README)"
    )
    with db.connect() as conn:  # refused before anything ran
        assert conn.scalar(sa.text("SELECT to_regnamespace('shared')")) is None
