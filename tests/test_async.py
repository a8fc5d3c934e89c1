"""Async applications: one ``postgresql+asyncpg`` URL or AsyncEngine for the app and the tool,
awaitable entry points that leave the event loop free, a tenant provisioned inside the
request's AsyncConnection transaction, and ``op.run_async`` refused in one line."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

# Imported when the module is collected: the per-test cleanup of sys.modules (conftest) must
# not make a test import a C extension (asyncpg, greenlet) a second time.
import asyncpg  # noqa: F401
import greenlet  # noqa: F401
import pytest
import sqlalchemy as sa
import sqlalchemy.dialects.postgresql.asyncpg  # noqa: F401
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import alembic_schemas
from alembic_schemas import aio, tenants

from helpers import ProjectDir

ROOT = Path(__file__).resolve().parent.parent
SAAS = ROOT / "examples" / "saas"
SEED = ROOT / "examples" / "seed"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
HEAD = "0001_tenant_init"


def _asyncpg(url: str) -> str:
    return make_url(url).set(drivername="postgresql+asyncpg").render_as_string(False)


def _saas(project_dir: ProjectDir) -> Path:
    shutil.copytree(
        SAAS,
        project_dir.root,
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns("__pycache__", ".alembic-schemas"),
    )
    return project_dir.root


def _schemas(db: sa.Engine) -> set[str]:
    return set(sa.inspect(db).get_schema_names())


def test_an_asyncpg_url_in_the_environment_migrates_through_psycopg(
    project_dir: ProjectDir, db: sa.Engine
) -> None:
    _saas(project_dir)
    proc = subprocess.run(
        [sys.executable, "-m", "alembic_schemas", "upgrade"],
        cwd=project_dir.root,
        env={"PATH": "/usr/bin:/bin", "ALEMBIC_SCHEMAS_URL": _asyncpg(project_dir.url)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "shared" in _schemas(db)


def test_aio_upgrade_runs_off_the_event_loop_on_an_async_engine(
    project_dir: ProjectDir, db: sa.Engine
) -> None:
    root = _saas(project_dir)
    shutil.copy(FIXTURES / "async_gate" / "gate.py", root / "gate.py")
    pyproject = root / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace(
            'tenants = "query:SELECT schema_name FROM shared.tenant ORDER BY schema_name"',
            'tenants = "callable:gate:names"',
        )
    )
    alembic_schemas.upgrade(streams=["shared"], config=root)
    with db.connect() as conn:
        conn.exec_driver_sql("INSERT INTO shared.plan VALUES (1, 'free')")
        conn.exec_driver_sql("INSERT INTO shared.tenant VALUES ('t_a', 1), ('t_b', 1)")
    sys.path.insert(0, str(root))
    import gate  # the module the tenant source resolves to

    async def main(engine: AsyncEngine) -> alembic_schemas.UpgradeReport:
        running = asyncio.create_task(aio.upgrade(database=engine, config=root))
        await asyncio.sleep(0)  # the upgrade starts, and waits at the gate for this loop
        gate.OPEN.set()
        return await running

    engine = create_async_engine(_asyncpg(project_dir.url))
    try:
        report = asyncio.run(main(engine))
    finally:
        asyncio.run(engine.dispose())
    assert {(r.schema, r.after) for r in report if r.tenant} == {("t_a", (HEAD,)), ("t_b", (HEAD,))}


def test_create_tenant_inside_an_async_connection_commits_and_rolls_back_with_it(
    project_dir: ProjectDir, db: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _saas(project_dir)
    alembic_schemas.upgrade(config=root)
    with db.connect() as conn:
        conn.exec_driver_sql("INSERT INTO shared.plan VALUES (1, 'free')")
    monkeypatch.delenv("ALEMBIC_SCHEMAS_URL")  # the app's connection is all there is
    register = sa.text("INSERT INTO shared.tenant VALUES (:name, 1)")
    count = sa.text("SELECT count(*) FROM shared.tenant")

    async def main(engine: AsyncEngine) -> None:
        async with engine.connect() as conn:
            await conn.begin()
            await conn.execute(register, {"name": "t_rolled_back"})
            made = await aio.create_tenant("t_rolled_back", connection=conn, config=root)
            assert made.after == (HEAD,)
            assert await conn.scalar(sa.text("SELECT count(*) FROM t_rolled_back.account")) == 0
            assert "t_rolled_back" not in _schemas(db)  # not committed: invisible to others
            await conn.rollback()
        async with engine.begin() as conn:  # a sign-up request
            await conn.execute(register, {"name": "t_kept"})
            await aio.create_tenant("t_kept", connection=conn, config=root)
            # a sync Connection's API works on the AsyncConnection's sync face too
            await conn.execute(register, {"name": "t_sync_face"})
            await conn.run_sync(
                lambda sync: tenants.create("t_sync_face", connection=sync, config=root)
            )
        async with engine.connect() as conn:
            assert await conn.scalar(count) == 2
            with pytest.raises(alembic_schemas.AlembicSchemasError, match="already exists"):
                await aio.create_tenant("t_kept", connection=conn, config=root)

    engine = create_async_engine(_asyncpg(project_dir.url))
    try:
        asyncio.run(main(engine))
    finally:
        asyncio.run(engine.dispose())
    assert {"t_kept", "t_sync_face"} <= _schemas(db) and "t_rolled_back" not in _schemas(db)
    checked = alembic_schemas.check(
        tenants=["t_kept", "t_sync_face"], database=project_dir.url, config=root
    )
    assert [c.clean for c in checked if c.tenant] == [True, True]


def test_a_revision_using_op_run_async_is_refused_in_one_line(
    project_dir: ProjectDir, db: sa.Engine
) -> None:
    shutil.copytree(SEED, project_dir.root, dirs_exist_ok=True)
    project_dir.cli("upgrade", check=True)
    versions = project_dir.root / "migrations" / "myschema" / "versions"
    shutil.copy(FIXTURES / "run_async" / "0003_myschema_run_async.py", versions)
    proc = project_dir.cli("upgrade")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(
        "alembic-schemas: error: myschema: revision 0003_myschema_run_async ("
    ), lines[0]
    assert (
        "op.run_async is not supported: alembic-schemas runs every migration on psycopg 3 "
        "(sync), also for postgresql+asyncpg URLs; write the step with op.get_bind() or "
        "op.execute()" in lines[0]
    )
    assert "0003_myschema_run_async.py:" in lines[0]
    with db.connect() as conn:  # nothing of the failed revision, and the one before it stays
        assert conn.scalar(sa.text("SELECT version_num FROM myschema.alembic_version")) == (
            "0002_myschema_marks"
        )
        assert conn.scalar(sa.text('SELECT count(*) FROM myschema."user"')) == 0
