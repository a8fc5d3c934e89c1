"""``check`` on a stream without models says that nothing was compared, instead of claiming
that models match; pending revisions still fail it (fixture: tests/fixtures/no_models)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import sqlalchemy as sa

import alembic_schemas

from helpers import ProjectDir

FIXTURE = Path(__file__).parent / "fixtures" / "no_models"


def test_check_without_metadata_says_nothing_was_compared(
    project_dir: ProjectDir, db: sa.Engine
) -> None:
    shutil.copytree(FIXTURE, project_dir.root, dirs_exist_ok=True)
    alembic_schemas.init(project_dir.root)
    project_dir.cli("upgrade", "r1", check=True)

    proc = project_dir.cli("check")
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [
        "core: nothing compared: stream 'core' has no 'metadata'",
        "core: 1 revision(s) not applied (run upgrade)",
    ]
    project_dir.cli("upgrade", check=True)
    with db.connect() as conn:  # a table added by hand: no models to notice it
        conn.exec_driver_sql("CREATE TABLE core.by_hand (id int)")
    proc = project_dir.cli("check")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "core: nothing compared: stream 'core' has no 'metadata'"
    assert "match" not in proc.stdout

    proc = project_dir.cli("check", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [
        {
            "stream": "core",
            "schema": "core",
            "pending": 0,
            "differences": [],
            "kind": "schema",
            "current": ["r2"],
            "heads": ["r2"],
            "error": None,
            "drift_group": None,
            "compared": False,
        }
    ]
    (result,) = alembic_schemas.check(config=project_dir.root)
    assert result.clean and not result.compared


TENANT_FIXTURE = Path(__file__).parent / "fixtures" / "no_models_tenant"


def test_a_tenant_stream_without_metadata_is_reported_as_not_compared(
    project_dir: ProjectDir, db: sa.Engine
) -> None:
    shutil.copytree(TENANT_FIXTURE, project_dir.root, dirs_exist_ok=True)
    alembic_schemas.init(project_dir.root)
    with db.begin() as conn:
        conn.exec_driver_sql("CREATE SCHEMA t_a; CREATE SCHEMA t_b")
    project_dir.cli("upgrade", check=True)
    with db.begin() as conn:  # a table added by hand: no models to notice it
        conn.exec_driver_sql("CREATE TABLE t_a.by_hand (id int)")

    proc = project_dir.cli("check")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert (
        lines[0]
        == "tenant: 2 tenants: 2 at t1 (head); 0 pending, drift not compared, 0 errors, 0 failed, 0 orphans"
    )
    assert "tenant: nothing compared: stream 'tenant' has no 'metadata'" in lines
    assert "match" not in proc.stdout and "drift group" not in proc.stdout

    proc = project_dir.cli("status", "--json")
    assert proc.returncode == 0, proc.stderr
    (summary,) = json.loads(proc.stdout)["summary"]
    assert summary["drift_groups"] is None and summary["drifted"] is None
    report = alembic_schemas.check(config=project_dir.root)
    assert [(r.schema, r.clean, r.compared) for r in report] == [
        ("t_a", True, False),
        ("t_b", True, False),
    ]
