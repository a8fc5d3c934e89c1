"""A long-lived application's histories (tests/fixtures/real_history, 66 tenant revisions and
a named dependency, both starting from ``create_all`` + stamp) run exactly as plain Alembic
runs them: every tenant, however it was made (an existing one upgraded, part of the way and
then to head, in parallel; a new one built from the baseline; one provisioned from the
snapshot; one replayed), holds the same catalog and rows as a schema migrated by plain
Alembic over the same versions folder."""

from __future__ import annotations

import importlib
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

import alembic_schemas
from alembic_schemas import database, identifiers

from alembic_reference import assert_same_schema, catalog, plain_alembic
from helpers import ProjectDir

FIXTURE = Path(__file__).parent / "fixtures" / "real_history"
OLD = ["tenant_old_1", "tenant_old_2", "tenant_old_3"]
# Existing tenants' rows, written when they were at t0001 (before adopting alembic-schemas).
ROWS = """
INSERT INTO account (id, email, name) VALUES (1, 'ada@example.com', 'Ada'), (2, 'bo@x.org', NULL);
INSERT INTO project (id, account_id, title) VALUES (1, 1, 'Launch'), (2, 2, 'Plan');
INSERT INTO task (id, project_id, title, done) VALUES
    (1, 1, 'write', true), (2, 1, 'read', false), (3, 2, 'it''s 100%', true);
"""
VOLATILE = ["created_at"]  # now() when the column was added


@pytest.fixture
def app(project_dir: ProjectDir) -> ProjectDir:
    shutil.copytree(FIXTURE, project_dir.root, dirs_exist_ok=True)
    alembic_schemas.init(project_dir.root)
    return project_dir


@pytest.fixture
def reference_db(admin_engine: sa.Engine, server_url: str) -> Iterator[sa.Engine]:
    """A second database, for plain Alembic (an extension exists once per database)."""
    name = "ref_" + uuid.uuid4().hex[:12]
    with admin_engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE template0')
    url = make_url(server_url).set(database=name)
    engine = database.create_engine(url.render_as_string(hide_password=False))
    yield engine
    engine.dispose()
    with admin_engine.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _models(root: Path) -> tuple[Any, Any]:
    """The fixture application's model modules (initial, now)."""
    sys.path.insert(0, str(root))  # put back after the test (conftest)
    return importlib.import_module("app.initial_models"), importlib.import_module("app.models")


def _existing_tenant(engine: sa.Engine, versions: Path, schema: str, initial: Any) -> None:
    """A tenant as the application made them before: create_all + stamp t0001, then rows."""
    plain_alembic(
        engine,
        versions,
        schema,
        tenant=True,
        target="t0001",
        baseline="t0001",
        baseline_metadata=initial.tenant_metadata,
    )
    with engine.connect() as conn, conn.begin():
        conn.exec_driver_sql(f"SET LOCAL search_path TO {identifiers.quote(schema)}")
        database.run_sql(conn, ROWS)


def test_every_schema_of_a_real_history_matches_plain_alembic(
    app: ProjectDir, db: sa.Engine, reference_db: sa.Engine
) -> None:
    root = app.root
    initial, models = _models(root)
    core_versions = root / "migrations" / "core" / "versions"
    tenant_versions = root / "migrations" / "tenant" / "versions"

    # alembic-schemas: core built from its baseline; existing tenants upgraded (one part of
    # the way first, so the rest of its path replays); new tenants three ways.
    app.cli("upgrade", "-s", "core", check=True)
    for schema in OLD:
        _existing_tenant(db, tenant_versions, schema, initial)
    app.cli("upgrade", "-s", "tenant", "--tenant", OLD[0], "t0013", check=True)
    app.cli("upgrade", "--jobs", "2", check=True)
    app.cli("upgrade", "-s", "tenant", "--tenant", "tenant_new", check=True)
    app.cli("tenants", "create", "tenant_snap", check=True)
    app.cli("tenants", "create", "--replay", "tenant_replay", check=True)

    # plain Alembic, in a database of its own
    plain_alembic(
        reference_db,
        core_versions,
        "core",
        tenant=False,
        metadata=models.core_metadata,
        baseline="c0001",
        baseline_metadata=initial.core_metadata,
    )
    _existing_tenant(reference_db, tenant_versions, "ref_old", initial)
    for schema in ("ref_old", "ref_new"):
        plain_alembic(
            reference_db,
            tenant_versions,
            schema,
            tenant=True,
            metadata=models.tenant_metadata,
            baseline="t0001",
            baseline_metadata=initial.tenant_metadata,
        )

    reference = catalog(reference_db, "ref_old", VOLATILE)
    assert reference["rows"]["alembic_version"] == ['{"version_num": "t0014"}']
    assert len(reference["rows"]) == 18  # tables, with the version table
    assert len(reference["rows"]["task"]) == 3 and len(reference["rows"]["gen_10"]) == 2
    assert '{"key": "tasks_at_t0014", "value": "3"}' in reference["rows"]["setting"]
    assert_same_schema(db, "core", "core", reference_engine=reference_db)
    for schema in OLD:
        assert_same_schema(db, schema, "ref_old", reference_engine=reference_db, volatile=VOLATILE)
    for schema in ("tenant_new", "tenant_snap", "tenant_replay"):
        assert_same_schema(db, schema, "ref_new", reference_engine=reference_db, volatile=VOLATILE)

    proc = app.cli("check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    app.cli("verify", check=True)
