"""An extension a tenant revision installs lands in the first tenant migrated; every other
tenant then misses what it defines, and the error says where the extension is and where
extensions belong (fixture: tests/fixtures/extension_in_tenant)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import sqlalchemy as sa

import alembic_schemas

from helpers import ProjectDir

FIXTURE = Path(__file__).parent / "fixtures" / "extension_in_tenant"


def test_an_extension_installed_by_a_tenant_revision_is_named_in_the_other_tenants_errors(
    project_dir: ProjectDir, db: sa.Engine
) -> None:
    shutil.copy(FIXTURE / "pyproject.toml", project_dir.root)
    alembic_schemas.init(project_dir.root)
    for path in (FIXTURE / "versions").glob("*.py"):
        shutil.copy(path, project_dir.root / "migrations" / "tenant" / "versions")
    with db.connect() as conn:
        conn.exec_driver_sql("CREATE SCHEMA t_1; CREATE SCHEMA t_2")

    proc = project_dir.cli("upgrade", "--json", "--max-failures", "5")
    assert proc.returncode == 1
    results = {r["schema"]: r for r in json.loads(proc.stdout)["results"]}
    assert results["t_1"]["status"] == "applied"  # it took the extension
    error = results["t_2"]["error"]
    print(f"\nextension in the first tenant: {error}")
    assert 'operator class "gin_trgm_ops" does not exist for access method "gin"' in error
    assert error.startswith("revision r2 (")
    assert error.endswith(
        "(a tenant's search_path holds only the tenant, and pg_trgm is in schema t_1 (another"
        " tenant?): install extensions from a named stream (CREATE EXTENSION ... SCHEMA shared)"
        " and qualify what they define (shared.gin_trgm_ops), or into pg_catalog; see the"
        " README, Extensions)"
    ), error
    with db.connect() as conn:
        where = conn.scalar(
            sa.text(
                "SELECT n.nspname FROM pg_extension e"
                " JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pg_trgm'"
            )
        )
    assert where == "t_1"
