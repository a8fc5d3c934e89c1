"""The FastAPI + SQLModel example, through its HTTP client against real PostgreSQL: the app
migrates at start-up on its async engine, sign-up registers and provisions a tenant in one
transaction, requests are routed to their tenant's schema, hostile names are refused."""

from __future__ import annotations

import importlib
import shutil
import sys
from pathlib import Path

# Imported when the module is collected: the per-test cleanup of sys.modules (conftest) must
# not make a test import a C extension (asyncpg, greenlet) a second time.
import asyncpg  # noqa: F401
import greenlet  # noqa: F401
import pytest
import sqlalchemy as sa
import sqlalchemy.dialects.postgresql.asyncpg  # noqa: F401
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

import alembic_schemas

from helpers import ProjectDir

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "fastapi"
HOSTILE = 'acme"; DROP SCHEMA shared CASCADE; --'


def _schemas(db: sa.Engine) -> set[str]:
    return set(sa.inspect(db).get_schema_names())


def test_fastapi_example_signs_up_and_routes_tenants(
    project_dir: ProjectDir, db: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(
        EXAMPLE, project_dir.root, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__")
    )
    # One URL for the app and the tool, as in a deployment: the app's asyncpg URL.
    url = make_url(project_dir.url).set(drivername="postgresql+asyncpg")
    monkeypatch.setenv("DATABASE_URL", url.render_as_string(hide_password=False))
    monkeypatch.delenv("ALEMBIC_SCHEMAS_URL")
    monkeypatch.syspath_prepend(str(project_dir.root))
    main = importlib.import_module("service.main")

    with TestClient(main.app) as client:  # the lifespan upgrades every stream
        assert "shared" in _schemas(db)
        for slug in ("acme", "globex"):
            assert client.post("/signup", json={"slug": slug, "name": slug}).status_code == 201
        assert client.post("/signup", json={"slug": "acme", "name": "again"}).status_code == 409

        acme, globex = {"X-Tenant": "acme"}, {"X-Tenant": "globex"}
        made = client.post(
            "/heroes", json={"name": "Deadpond", "secret_name": "Dive"}, headers=acme
        )
        assert made.status_code == 201, made.text
        client.post("/heroes", json={"name": "Rusty", "secret_name": "Tommy"}, headers=globex)
        assert [h["name"] for h in client.get("/heroes", headers=acme).json()] == ["Deadpond"]
        assert [h["name"] for h in client.get("/heroes", headers=globex).json()] == ["Rusty"]

        # Hostile names: refused by the sign-up's rules, unknown to the routing.
        assert client.post("/signup", json={"slug": HOSTILE, "name": "x"}).status_code == 422
        assert client.get("/heroes", headers={"X-Tenant": HOSTILE}).status_code == 404
        # A slug the app allows but that is never a tenant: nothing registered either.
        refused = client.post("/signup", json={"slug": "public", "name": "x"})
        assert refused.status_code == 400 and "invalid tenant name 'public'" in refused.text

    with db.connect() as conn:
        assert conn.scalar(sa.text("SELECT count(*) FROM acme.hero")) == 1
        assert conn.scalar(sa.text("SELECT count(*) FROM globex.hero")) == 1
        registered = conn.execute(sa.text("SELECT slug FROM shared.tenant ORDER BY 1")).scalars()
        assert list(registered) == ["acme", "globex"]
    checked = alembic_schemas.check(database=project_dir.url, config=project_dir.root)
    assert {(c.schema, c.clean) for c in checked} == {
        ("shared", True),
        ("acme", True),
        ("globex", True),
    }
    sys.modules.pop("service.main", None)
