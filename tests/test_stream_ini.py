"""A stream's ``alembic.ini`` is the stream's: ``alembic-schemas revision`` writes the files
plain ``alembic`` writes (``file_template``, ``truncate_slug_length``, ``post_write_hooks``),
and ``-x key=value`` reaches env.py as with Alembic."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

import alembic_schemas

from helpers import ProjectDir

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "stream_ini"


def _copy(project_dir: ProjectDir) -> Path:
    shutil.copytree(
        FIXTURE, project_dir.root, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__")
    )
    ini = project_dir.root / "migrations" / "core" / "alembic.ini"
    # the hook runs ruff with this interpreter, wherever the test runs
    ini.write_text(ini.read_text().replace("executable = python", f"executable = {sys.executable}"))
    return project_dir.root / "migrations" / "core" / "versions"


def _plain_alembic(project_dir: ProjectDir, *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "alembic", "-c", "migrations/core/alembic.ini", *args],
        cwd=project_dir.root,
        check=True,
        capture_output=True,
        env={**os.environ, "ALEMBIC_SCHEMAS_URL": project_dir.url},
    )


def test_revision_honours_the_streams_file_template_slug_length_and_post_write_hooks(
    project_dir: ProjectDir,
) -> None:
    versions = _copy(project_dir)
    project_dir.cli("revision", "-s", "core", "-m", "A long message about notes", check=True)
    _plain_alembic(project_dir, "revision", "-m", "A long message about notes")
    made = sorted(p for p in versions.glob("*.py") if p.name != "0001_core_init.py")
    assert len(made) == 2
    for path in made:
        # file_template and truncate_slug_length (10: cut at a word boundary)
        assert path.name.endswith("_custom_a_long_.py"), path.name
        # the post-write hook (ruff format) ran: the template's single quotes became double
        text = path.read_text()
        assert 'revision: str = "' in text and "revision: str = '" not in text, text


def test_x_arguments_reach_env_py_before_or_after_the_command(
    project_dir: ProjectDir, db: sa.Engine, tmp_path: Path
) -> None:
    _copy(project_dir)
    marker = tmp_path / "x.jsonl"
    project_dir.cli("-x", f"marker={marker}", "upgrade", "-x", "who=deploy", check=True)
    project_dir.cli("downgrade", "-s", "core", "base", "-x", f"marker={marker}", check=True)
    seen = [json.loads(line) for line in marker.read_text().splitlines()]
    assert seen == [
        {"marker": str(marker), "who": "deploy"},
        {"marker": str(marker)},
    ]
    refused = project_dir.cli("upgrade", "-x", "novalue")
    assert refused.returncode == 2
    assert "'novalue' must look like key=value" in refused.stderr

    # The API: x_arguments on the loaded project.
    project = alembic_schemas.load(project_dir.root, x_arguments=[f"marker={marker}", "api=1"])
    alembic_schemas.upgrade(config=project)
    assert json.loads(marker.read_text().splitlines()[-1]) == {"api": "1", "marker": str(marker)}
    with db.connect() as conn:
        assert conn.scalar(sa.text("SELECT version_num FROM core.alembic_version")) == (
            "0001_core_init"
        )
