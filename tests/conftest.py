"""Real PostgreSQL for every test: an embedded server started once per session, or the server
named by $ALEMBIC_SCHEMAS_TEST_URL. Each test that asks for ``db_url`` gets a fresh database."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from alembic_schemas import database, embedded

TEST_URL_ENV = "ALEMBIC_SCHEMAS_TEST_URL"
_INSTALLED = tuple(
    {sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")}
)


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    given = os.environ.get(TEST_URL_ENV)
    if given:
        yield given
        return
    folder = Path(tempfile.mkdtemp(prefix="alembic-schemas-test-"))
    server, url = embedded.start_temporary(folder / "pgdata")
    try:
        yield url
    finally:
        server.cleanup()  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def admin_engine(server_url: str) -> Iterator[sa.Engine]:
    engine = database.create_engine(server_url, isolation_level="AUTOCOMMIT")
    yield engine
    engine.dispose()


@pytest.fixture
def db_url(admin_engine: sa.Engine, server_url: str) -> Iterator[str]:
    """A URL to a new, empty database, dropped after the test."""
    name = "t_" + uuid.uuid4().hex[:12]
    with admin_engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE template0')
    url = make_url(server_url).set(database=name)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    yield url.render_as_string(hide_password=False)
    with admin_engine.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db(db_url: str) -> Iterator[sa.Engine]:
    """An engine on the test's database (autocommit, search_path pinned like the tool's)."""
    engine = database.create_engine(db_url, isolation_level="AUTOCOMMIT")
    yield engine
    engine.dispose()


@pytest.fixture(autouse=True)
def _isolate_imports() -> Iterator[None]:
    """Tests import throw-away model modules; forget them afterwards."""
    modules, path = set(sys.modules), list(sys.path)
    yield
    for name in set(sys.modules) - modules:
        # Only the test's own modules: an installed library first imported during a test
        # (sqlalchemy.orm, say) must not run its module code twice in one process.
        file = getattr(sys.modules[name], "__file__", None) or ""
        if not file.startswith(_INSTALLED):
            del sys.modules[name]
    sys.path[:] = path


@dataclass
class ProjectDir:
    """A throw-away user project: pyproject.toml, model modules, and a way to run the CLI."""

    root: Path
    url: str

    def write(self, relpath: str, text: str) -> Path:
        path = self.root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
        return path

    def cli(self, *args: str, check: bool | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``python -m alembic_schemas ARGS`` in the project folder, as a user would."""
        env = {**os.environ, "ALEMBIC_SCHEMAS_URL": self.url}
        proc = subprocess.run(
            [sys.executable, "-m", "alembic_schemas", *args],
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if check is True and proc.returncode != 0:
            raise AssertionError(
                f"alembic-schemas {' '.join(args)} exited {proc.returncode}\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc

    def versions(self, stream: str) -> list[Path]:
        return sorted((self.root / "migrations" / stream / "versions").glob("*.py"))


@pytest.fixture
def project_dir(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> ProjectDir:
    """An empty project folder wired to the test database (via $ALEMBIC_SCHEMAS_URL)."""
    monkeypatch.setenv("ALEMBIC_SCHEMAS_URL", db_url)
    monkeypatch.chdir(tmp_path)
    return ProjectDir(tmp_path, db_url)
