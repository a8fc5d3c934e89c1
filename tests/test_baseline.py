"""``baseline``: histories that start from ``create_all`` build new schemas from the models at
that revision, then migrate as usual (fixture: tests/fixtures/real_history, whose streams
cannot replay from base)."""

from __future__ import annotations

import importlib
import re
import shutil
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

import alembic_schemas

from alembic_reference import assert_same_schema, plain_alembic
from helpers import ProjectDir

FIXTURE = Path(__file__).parent / "fixtures" / "real_history"


@pytest.fixture
def app(project_dir: ProjectDir) -> ProjectDir:
    shutil.copytree(FIXTURE, project_dir.root, dirs_exist_ok=True)
    alembic_schemas.init(project_dir.root)
    return project_dir


def _configure(app: ProjectDir, stream: str, **keys: str | None) -> None:
    """Set (or, with None, remove) keys of one stream's section of pyproject.toml."""
    path = app.root / "pyproject.toml"
    head, section, tail = path.read_text().partition(f"[tool.alembic-schemas.streams.{stream}]\n")
    body, sep, rest = tail.partition("\n[")
    lines = [line for line in body.splitlines() if line.split(" =")[0] not in keys]
    lines += [f'{key} = "{value}"' for key, value in keys.items() if value is not None]
    path.write_text(head + section + "\n".join(lines) + "\n" + sep + rest)


def test_a_history_that_does_not_replay_from_base_builds_from_its_baseline(
    app: ProjectDir, db: sa.Engine
) -> None:
    _configure(app, "core", baseline=None, baseline_metadata=None)
    proc = app.cli("upgrade", "-s", "core")
    assert proc.returncode == 1
    path = app.root / "migrations" / "core" / "versions" / "c0003_plan_price.py"
    message = proc.stderr.strip()
    assert re.fullmatch(
        rf"alembic-schemas: error: core: revision c0003 \({re.escape(str(path))}:\d+\):"
        r' relation "core.plan" does not exist',
        message,
    ), message

    _configure(app, "core", baseline="c0001", baseline_metadata="app.initial_models:core_metadata")
    app.cli("upgrade", "-s", "core", check=True)
    with db.connect() as conn:
        assert conn.scalar(sa.text("SELECT version_num FROM core.alembic_version")) == "c0005"
        plans = conn.execute(sa.text("SELECT code, price FROM core.plan ORDER BY 1")).all()
    assert [(c, float(p)) for c, p in plans] == [("free", 0.0), ("pro", 12.5)]
    app.cli("verify", check=True)


def test_baseline_head_builds_new_schemas_from_the_models_as_they_are(
    app: ProjectDir, db: sa.Engine
) -> None:
    """Alembic's cookbook: create_all + stamp head; no revision runs."""
    _configure(app, "tenant", baseline="head", baseline_metadata=None)
    app.cli("upgrade", "-s", "core", check=True)
    app.cli("upgrade", "-s", "tenant", "--tenant", "tenant_new", check=True)
    app.cli("tenants", "create", "tenant_snap", check=True)

    sys.path.insert(0, str(app.root))  # put back after the test (conftest)
    models = importlib.import_module("app.models")
    plain_alembic(
        db,
        app.root / "migrations" / "tenant" / "versions",
        "reference",
        tenant=True,
        metadata=models.tenant_metadata,
        baseline="heads",
    )
    for schema in ("tenant_new", "tenant_snap"):
        assert_same_schema(db, schema, "reference")
    proc = app.cli("check", "-s", "tenant")
    assert proc.returncode == 0, proc.stdout + proc.stderr

    # a new schema cannot stop before its baseline
    proc = app.cli("upgrade", "-s", "tenant", "--tenant", "tenant_early", "t0013")
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        "alembic-schemas: error: tenant/tenant_early: a new schema starts at the baseline t0014"
        " (stream 'tenant' builds new schemas from its models there): it cannot be upgraded to"
        " t0013, before it"
    )


def test_a_snapshot_is_built_when_the_dependency_is_not_in_the_target_database_yet(
    app: ProjectDir, db: sa.Engine
) -> None:
    proc = app.cli("tenants", "create", "tenant_early")
    assert proc.returncode == 1
    # built (the dependency from its own baseline, in the scratch database) and stored...
    with db.connect() as conn:
        assert conn.scalar(sa.text("SELECT count(*) FROM alembic_schemas.snapshot")) == 1
    # ...but the tenant needs the dependency in the target database
    assert proc.stderr.strip().endswith(
        "(are the streams it depends on at head? run 'alembic-schemas upgrade')"
    ), proc.stderr
    app.cli("upgrade", "-s", "core", check=True)
    app.cli("tenants", "create", "tenant_early", check=True)
