"""Adopting databases that plain Alembic migrated (``alembic-schemas adopt``), end to end with
data kept: one environment over two schemas becomes one stream per schema continuing from a
baseline; a cookbook schema-per-tenant app becomes a tenant stream over the same schemas."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

from helpers import ProjectDir

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SEED = Path(__file__).resolve().parent.parent / "examples" / "seed"


def _old_alembic(project_dir: ProjectDir, *args: str) -> None:
    """The application's own Alembic, as it ran before adoption."""
    subprocess.run(
        [sys.executable, "-m", "alembic", *args],
        cwd=project_dir.root,
        env={**os.environ, "OLD_DATABASE_URL": project_dir.url},
        check=True,
        capture_output=True,
        text=True,
    )


def _oids(db: sa.Engine, schemas: tuple[str, ...]) -> dict[str, int]:
    query = sa.text(
        "SELECT n.nspname || '.' || c.relname, c.oid FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind = 'r' AND n.nspname = ANY(:s) AND c.relname NOT LIKE '%version%'"
    )
    with db.connect() as conn:
        return {str(k): int(v) for k, v in conn.execute(query, {"s": list(schemas)})}


def test_one_environment_over_two_schemas_becomes_a_stream_per_schema_from_a_baseline(
    project_dir: ProjectDir, db: sa.Engine
) -> None:
    shutil.copytree(FIXTURES / "adopt_single_env", project_dir.root, dirs_exist_ok=True)
    shutil.copytree(SEED / "app", project_dir.root / "app", ignore=shutil.ignore_patterns("__*"))
    _old_alembic(project_dir, "upgrade", "head")
    with db.connect() as conn:
        conn.exec_driver_sql("INSERT INTO myschema.user VALUES (1, 'ada')")
        conn.exec_driver_sql("INSERT INTO myschema.marks VALUES (1, 1, 10)")
        conn.exec_driver_sql("INSERT INTO schema1.contact VALUES (1, 'a@b.c')")
    tables = _oids(db, ("myschema", "schema1"))
    project_dir.cli("init", check=True)

    report = json.loads(project_dir.cli("adopt", "--json", check=True).stdout)
    assert report["version_tables"] == [
        {
            "schema": "public",
            "table": "alembic_version",
            "revisions": ["a1f0c0de0001"],
            "stream": None,
            "role": "old environment",
            "listed": None,
        }
    ]
    assert [(s["action"], s["stream"]) for s in report["steps"]] == [
        ("baseline", "myschema"),
        ("baseline", "schema1"),
    ]
    assert project_dir.versions("myschema") == []  # the survey changed nothing

    out = project_dir.cli("adopt", "--apply", check=True).stdout
    assert "myschema: baseline:" in out and "[done]" in out
    (baseline,) = project_dir.versions("myschema")
    assert "op.create_table('marks'" in baseline.read_text()  # a new database gets the tables
    assert _oids(db, ("myschema", "schema1")) == tables, "no table was recreated"
    with db.connect() as conn:
        assert conn.scalar(sa.text("SELECT name FROM myschema.user")) == "ada"
        assert conn.scalar(sa.text("SELECT count(*) FROM public.alembic_version")) == 1
    assert project_dir.cli("check").returncode == 0, project_dir.cli("check").stdout
    assert "nothing to do" in project_dir.cli("adopt", check=True).stdout

    # The history goes on from the baseline, in one stream only.
    models = project_dir.root / "app" / "models.py"
    models.write_text(
        models.read_text().replace(
            "score: Mapped[int]", "score: Mapped[int]\n    note: Mapped[str | None]"
        )
    )
    project_dir.cli("revision", "-s", "myschema", "-m", "note", "--autogenerate", check=True)
    assert len(project_dir.versions("schema1")) == 1
    project_dir.cli("upgrade", check=True)
    assert project_dir.cli("check").returncode == 0
    with db.connect() as conn:
        assert conn.scalar(sa.text("SELECT score FROM myschema.marks")) == 10


def test_a_cookbook_schema_per_tenant_app_becomes_a_tenant_stream(
    project_dir: ProjectDir, db: sa.Engine
) -> None:
    shutil.copytree(FIXTURES / "adopt_cookbook", project_dir.root, dirs_exist_ok=True)
    for tenant in ("t_a", "t_b", "legacy_x"):
        _old_alembic(project_dir, "-x", f"tenant={tenant}", "upgrade", "head")
    with db.connect() as conn:
        conn.exec_driver_sql("INSERT INTO t_a.item VALUES (1, 'a1', 'kept')")
    project_dir.cli("init", check=True)
    # The documented move: the cookbook's history becomes the tenant stream's.
    for path in (project_dir.root / "alembic" / "versions").glob("*.py"):
        shutil.copy(path, project_dir.root / "migrations" / "tenant" / "versions")

    report = json.loads(project_dir.cli("adopt", "--json", check=True).stdout)
    found = {(v["schema"], v["table"], v["role"], v["listed"]) for v in report["version_tables"]}
    assert found == {
        ("t_a", "tenant_version", "tenant", True),
        ("t_b", "tenant_version", "tenant", True),
        ("legacy_x", "tenant_version", "tenant", False),
    }
    assert report["unlisted_tenants"] == [{"stream": "tenant", "schema": "legacy_x"}]
    assert [(s["action"], s["schema"]) for s in report["steps"]] == [
        ("rename", "t_a"),
        ("rename", "t_b"),
    ]
    text = project_dir.cli("adopt", check=True).stdout
    assert "legacy_x.tenant_version: c0ffee000002 (stream tenant, NOT listed by its source)" in text

    project_dir.cli("adopt", "--apply", check=True)
    current = project_dir.cli("current", check=True).stdout
    assert "tenant/t_a: c0ffee000002 (head)" in current
    assert "tenant/t_b: c0ffee000002 (head)" in current
    assert project_dir.cli("check").returncode == 0
    assert project_dir.cli("verify").returncode == 0  # the adopted revisions are recorded

    project_dir.cli(
        "revision", "-s", "tenant", "-m", "next", "--rev-id", "c0ffee000003", check=True
    )
    out = project_dir.cli("upgrade", check=True).stdout
    assert "tenant/t_a: c0ffee000002 -> c0ffee000003" in out
    with db.connect() as conn:
        assert conn.scalar(sa.text("SELECT note FROM t_a.item")) == "kept"
        legacy = conn.scalar(sa.text("SELECT version_num FROM legacy_x.tenant_version"))
    assert legacy == "c0ffee000002", "an unlisted tenant is reported, never touched"
