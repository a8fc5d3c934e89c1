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
