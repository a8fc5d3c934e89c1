"""Real PostgreSQL for every test: an embedded server started once per session (per xdist
worker), or the server named by $ALEMBIC_SCHEMAS_TEST_URL. Each test that asks for ``db_url``
gets a fresh database. Tests under ``tests/unit`` use none of this.

``ALEMBIC_SCHEMAS_HYPOTHESIS_EXAMPLES=N`` runs N examples per property test instead of the
quick default."""

from __future__ import annotations

import os
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings

from alembic_schemas import database

from helpers import TEST_URL_ENV, Catalog, ProjectDir, embedded_server, scratch_database

_INSTALLED = tuple(
    {sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")}
)

settings.register_profile(
    "alembic-schemas",
    max_examples=int(os.environ.get("ALEMBIC_SCHEMAS_HYPOTHESIS_EXAMPLES") or 200),
    deadline=None,  # examples wait on PostgreSQL and subprocesses: their time says nothing
    database=None,  # no .hypothesis folder in the (temporary) working directories
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile("alembic-schemas")


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    given = os.environ.get(TEST_URL_ENV)
    if given:
        yield given
        return
    with embedded_server() as url:
        yield url


@pytest.fixture(scope="session")
def admin_engine(server_url: str) -> Iterator[sa.Engine]:
    engine = database.create_engine(server_url, isolation_level="AUTOCOMMIT")
    yield engine
    engine.dispose()


@pytest.fixture
def db_url(admin_engine: sa.Engine, server_url: str) -> Iterator[str]:
    """A URL to a new, empty database, dropped after the test."""
    with scratch_database(admin_engine, server_url) as url:
        yield url


@pytest.fixture
def db(db_url: str) -> Iterator[sa.Engine]:
    """An engine on the test's database (autocommit, search_path pinned like the tool's)."""
    engine = database.create_engine(db_url, isolation_level="AUTOCOMMIT")
    yield engine
    engine.dispose()


@pytest.fixture
def catalog(db: sa.Engine) -> Catalog:
    return Catalog(db)


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


@pytest.fixture
def project_dir(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> ProjectDir:
    """An empty project folder wired to the test database (via $ALEMBIC_SCHEMAS_URL)."""
    monkeypatch.setenv("ALEMBIC_SCHEMAS_URL", db_url)
    monkeypatch.chdir(tmp_path)
    return ProjectDir(tmp_path, db_url)
