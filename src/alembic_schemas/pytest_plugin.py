"""Test your own streams with pytest-alembic (its built-in tests: single head, upgrade,
model definitions match the DDL, up/down consistency).

pytest-alembic drives one Alembic history through two fixtures you define, ``alembic_config``
and ``alembic_engine``. For one stream, in ``tests/conftest.py``::

    import pytest
    from alembic_schemas.pytest_plugin import stream_config

    pytest_plugins = ["alembic_schemas.pytest_plugin"]

    @pytest.fixture
    def alembic_config():
        return stream_config("myschema")

    @pytest.fixture
    def alembic_engine(alembic_schemas_engine):
        return alembic_schemas_engine

then run ``pytest --test-alembic``. ``alembic_schemas_engine`` is a fresh, empty database on
the project's server ($ALEMBIC_SCHEMAS_URL, else ``url`` from the config, else the embedded
PostgreSQL), dropped after each test; the role needs CREATEDB.

More streams: pytest-alembic's ``create_alembic_fixture(stream_config("schema1"))`` gives
another runner fixture; call ``pytest_alembic.tests.test_upgrade(runner)`` and friends with it.
A stream whose revisions reference another stream's tables (``depends_on``) needs that stream
at head in the scratch database first, e.g. in ``alembic_engine``::

    cfg = alembic_schemas.alembic_config("shared")
    cfg.attributes["connection"] = alembic_schemas_engine
    alembic.command.upgrade(cfg, "head")

PYTEST_DONT_REWRITE (conftest imports this module before registering it as a plugin; it has
no asserts to rewrite, and this marker keeps pytest from warning about that.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa

from . import command, database
from .config import ConfigArg, Project, load
from .database import scratch_database

if TYPE_CHECKING:
    from pytest_alembic.config import Config as PytestAlembicConfig

CONFIG_INI = "alembic_schemas_config"


def stream_config(
    stream: str,
    *,
    schema: str | None = None,
    config: ConfigArg = None,
    **options: Any,
) -> PytestAlembicConfig:
    """A ``pytest_alembic.config.Config`` for ``stream``, to return from ``alembic_config``.

    ``options`` are pytest-alembic's own (``minimum_downgrade_revision``, ``skip_revisions``,
    ``before_revision_data``, ``at_revision_data``). Tenant streams need ``schema``.
    """
    from pytest_alembic.config import Config

    return Config(
        alembic_config=command.alembic_config(stream, schema=schema, config=config), **options
    )


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        CONFIG_INI,
        "alembic-schemas config file (or its folder) for the alembic_schemas_* fixtures; "
        "default: found by walking up from pytest's rootdir.",
        default=None,
    )


@pytest.fixture
def alembic_schemas_project(request: pytest.FixtureRequest) -> Project:
    """The project's loaded configuration."""
    given = request.config.getini(CONFIG_INI)
    root = request.config.rootpath
    return load(root / given if given else root)


@pytest.fixture
def alembic_schemas_engine(alembic_schemas_project: Project) -> Iterator[sa.Engine]:
    """An engine on a new, empty database (dropped afterwards) on the project's server.

    Its connections start with ``search_path = pg_catalog``, as the CLI's do, so autogenerate
    sees the same schemas as ``alembic-schemas check``.
    """
    with scratch_database(database.session_url(alembic_schemas_project)) as url:
        engine = database.create_engine(url)
        try:
            yield engine
        finally:
            engine.dispose()


__all__ = [
    "alembic_schemas_engine",
    "alembic_schemas_project",
    "stream_config",
    "scratch_database",
]
