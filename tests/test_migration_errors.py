"""A failed migration names what a team needs to find the failing statement: the stream and
schema, the revision and its file (and line, where a frame of it ran), PostgreSQL's DETAIL and
HINT, and with --verbose the statement; the run record keeps the same. Named, replayed,
online, --sql and provisioning alike (fixture: tests/fixtures/failing_revisions)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa

import alembic_schemas

from helpers import ProjectDir

FIXTURE = Path(__file__).parent / "fixtures" / "failing_revisions"
PREFIX = "alembic-schemas: error: "
DUPLICATE = (
    'could not create unique index "project_title_key"; DETAIL: Key (title)=(dup) is duplicated'
)


def _project(pd: ProjectDir, r2: str) -> dict[str, Path]:
    """Both streams with r1 and the r2 named; returns each stream's r2 file."""
    for name in ("pyproject.toml", "failing_models.py", "failing_helpers.py"):
        shutil.copy(FIXTURE / name, pd.root)
    alembic_schemas.init(pd.root)
    found = {}
    for stream in ("core", "tenant"):
        versions = pd.root / "migrations" / stream / "versions"
        shutil.copy(FIXTURE / "versions" / "r1_project.py", versions)
        found[stream] = Path(shutil.copy(FIXTURE / "versions" / f"{r2}.py", versions))
    return found


def _line(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def _one_line(proc: object) -> str:
    err = proc.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith(PREFIX)]
    assert proc.returncode == 1 and len(lines) == 1, err  # type: ignore[attr-defined]
    return lines[0].removeprefix(PREFIX)


def test_a_named_stream_error_names_revision_file_line_and_detail(
    project_dir: ProjectDir, db: sa.Engine
) -> None:
    r2 = _project(project_dir, "r2_unique_title")["core"]
    message = _one_line(project_dir.cli("upgrade", "-s", "core"))
    line = _line(r2, "create_unique_constraint")
    assert message == f"core: revision r2 ({r2}:{line}): {DUPLICATE}"

    proc = project_dir.cli("--verbose", "upgrade", "-s", "core")
    assert proc.stderr.rstrip().endswith(
        "alembic-schemas: failing statement:\n"
        "ALTER TABLE project ADD CONSTRAINT project_title_key UNIQUE (title)"
    ), proc.stderr

    with db.connect() as conn:  # the run record keeps the same
        error, statement = conn.execute(
            sa.text("SELECT error, statement FROM alembic_schemas.attempt ORDER BY id DESC LIMIT 1")
        ).one()
    assert error == f"revision r2 ({r2}:{line}): {DUPLICATE}"
    assert statement == "ALTER TABLE project ADD CONSTRAINT project_title_key UNIQUE (title)"
    (failure,) = json.loads(project_dir.cli("status", "--json").stdout)["last_failures"]
    assert (failure["error"], failure["statement"]) == (error, statement)


def test_a_hint_from_postgresql_is_kept(project_dir: ProjectDir) -> None:
    r2 = _project(project_dir, "r2_missing_function")["core"]
    message = _one_line(project_dir.cli("upgrade", "-s", "core"))
    assert message == (
        f"core: revision r2 ({r2}:{_line(r2, 'no_such_function')}): function"
        " no_such_function(character varying) does not exist; HINT: No function matches the"
        " given name and argument types. You might need to add explicit type casts"
    )


@pytest.mark.parametrize("r2", ["r2_unique_title", "r2_online_unique"], ids=["replayed", "online"])
def test_a_tenant_error_names_the_revision_replayed_or_online(
    project_dir: ProjectDir, db: sa.Engine, r2: str
) -> None:
    path = _project(project_dir, r2)["tenant"]
    with db.connect() as conn:
        conn.exec_driver_sql("CREATE SCHEMA t_a")
    proc = project_dir.cli("--verbose", "upgrade", "-s", "tenant", "--json")
    assert proc.returncode == 1
    (result,) = json.loads(proc.stdout)["results"]
    # a replayed revision has no frame to give a line; an online one has
    where = f"{path}" if r2 == "r2_unique_title" else f"{path}:{_line(path, 'ADD CONSTRAINT')}"
    assert result["error"] == f"revision r2 ({where}): {DUPLICATE}"
    assert "ADD CONSTRAINT project_title_key UNIQUE (title)" in result["statement"]
    assert result["to"] == []  # nothing stays

    text = project_dir.cli("--verbose", "upgrade", "-s", "tenant").stdout
    assert (
        f"tenant/t_a: FAILED: revision r2 ({where}): {DUPLICATE}\n    failing statement:\n" in text
    )


def test_a_python_error_in_a_helper_names_the_revision_and_the_helper(
    project_dir: ProjectDir,
) -> None:
    r2 = _project(project_dir, "r2_helper_error")["core"]
    message = _one_line(project_dir.cli("upgrade", "-s", "core"))
    helper = project_dir.root / "failing_helpers.py"
    assert message == (
        f"core: revision r2 ({r2}:{_line(r2, 'check_titles(list')}): ValueError: duplicate"
        f" titles: ['dup', 'dup'] (at {helper}:{_line(helper, 'raise')}; --verbose shows the"
        " traceback)"
    )


def test_sql_output_names_the_revision_a_python_error_came_from(project_dir: ProjectDir) -> None:
    r2 = _project(project_dir, "r2_helper_error")["core"]
    message = _one_line(project_dir.cli("upgrade", "-s", "core", "--sql"))
    # offline, op.get_bind() executes nothing and returns nothing
    assert re.fullmatch(
        rf"core: revision r2 \({re.escape(str(r2))}:{_line(r2, 'get_bind')}\): AttributeError: .*"
        r" \(--verbose shows the traceback\)",
        message,
    ), message


def test_a_provisioning_error_names_the_stream_and_the_revision(project_dir: ProjectDir) -> None:
    r2 = _project(project_dir, "r2_unique_title")["tenant"]
    for how in ([], ["--replay"]):
        message = _one_line(project_dir.cli("tenants", "create", *how, "t_new"))
        print(f"\ntenants create {' '.join(how)}: {message}")
        if how:
            assert message == f"tenant/t_new: revision r2 ({r2}): {DUPLICATE}"
        else:
            assert message == (
                "tenant/t_new: building the provisioning snapshot failed in stream 'tenant':"
                f" revision r2 ({r2}): {DUPLICATE}"
            )


def test_drift_descriptions_are_sql_not_python_reprs(
    project_dir: ProjectDir, db: sa.Engine
) -> None:
    _project(project_dir, "r2_unique_title")
    project_dir.cli("upgrade", "-s", "core", "r1", check=True)
    with db.connect() as conn:
        conn.exec_driver_sql("ALTER TABLE core.project ALTER COLUMN state SET DEFAULT now()::text")
        conn.exec_driver_sql("ALTER TABLE core.project ALTER COLUMN title TYPE text")
    (state,) = json.loads(project_dir.cli("status", "-s", "core", "--json").stdout)["schemas"]
    assert sorted(state["drift"]) == [
        "modify default of core.project.state: (now())::text -> 'new'",
        "modify type of core.project.title: TEXT -> VARCHAR(100)",
    ]
