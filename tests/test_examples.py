"""The bundled SaaS example works as its README walks through it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import sqlalchemy as sa

from helpers import ProjectDir

SAAS = Path(__file__).resolve().parent.parent / "examples" / "saas"


def test_saas_example_walkthrough(project_dir: ProjectDir, db: sa.Engine) -> None:
    shutil.copytree(
        SAAS,
        project_dir.root,
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns("__pycache__", ".alembic-schemas"),
    )
    project_dir.cli("upgrade", check=True)
    assert project_dir.cli("tenants", "list", check=True).stdout.strip() == "no tenants"

    with db.connect() as conn:
        conn.exec_driver_sql("INSERT INTO shared.plan VALUES (1, 'free')")
        conn.exec_driver_sql("INSERT INTO shared.tenant VALUES ('acme', 1), ('Globex Corp', 1)")
    out = project_dir.cli("upgrade", check=True).stdout
    assert "tenant/acme: <base> -> 0001_tenant_init" in out
    assert "tenant/Globex Corp: <base> -> 0001_tenant_init" in out
    project_dir.cli("check", check=True)

    status = json.loads(project_dir.cli("status", "--json", check=True).stdout)
    assert {(s["schema"], s["pending"], tuple(s["drift"])) for s in status["schemas"]} == {
        ("shared", 0, ()),
        ("acme", 0, ()),
        ("Globex Corp", 0, ()),
    }

    created = project_dir.cli("tenants", "create", "newco", check=True).stdout
    assert "created tenant newco at 0001_tenant_init" in created
    project_dir.cli("check", "--tenant", "newco", check=True)
    project_dir.cli("downgrade", "-s", "tenant", "--tenant", "acme", "base", check=True)
    with db.connect() as conn:
        types = (
            conn.exec_driver_sql(
                "SELECT n.nspname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
                "WHERE t.typname = 'account_role' ORDER BY 1"
            )
            .scalars()
            .all()
        )
    assert types == ["Globex Corp", "newco"]  # acme's enum went with its tables
    project_dir.cli("upgrade", check=True)
    project_dir.cli("check", check=True)
