"""A named stream's models with ``schema=None`` are compared through a copy placed in the
stream's schema: every copied index and constraint keeps exactly its own name, whatever the
naming convention (fixture: tests/fixtures/copied_names)."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import sqlalchemy as sa

import alembic_schemas
from alembic_schemas.streams import Stream

from helpers import ProjectDir

FIXTURE = Path(__file__).parent / "fixtures" / "copied_names"


def _project(project_dir: ProjectDir) -> Path:
    shutil.copytree(FIXTURE, project_dir.root, dirs_exist_ok=True)
    alembic_schemas.init(project_dir.root)
    return project_dir.root


def _names(metadata: sa.MetaData) -> Counter[tuple[str, str, str]]:
    return Counter(
        (table.name, type(item).__name__, str(item.name))
        for table in metadata.tables.values()
        for item in [*table.indexes, *table.constraints]
    )


def test_the_copy_in_the_schema_has_exactly_the_models_names(project_dir: ProjectDir) -> None:
    project = alembic_schemas.load(_project(project_dir))
    stream = Stream(project, project.stream("app"))
    models = stream.require_metadata()
    for _ in range(5):  # set order varies between runs: no name may depend on it
        copy = stream.target_metadata("app")
        assert {t.schema for t in copy.tables.values()} == {"app"}
        assert _names(copy) == _names(models)
    assert ("item", "Index", "ix_item_a") in _names(models)
    assert ("parent", "UniqueConstraint", "uq_parent_code") in _names(models)


def _upgrade_body(path: Path) -> str:
    return path.read_text().split("def upgrade()")[1].split("def downgrade()")[0]


def test_autogenerate_keeps_every_name_and_then_has_nothing_to_do(
    project_dir: ProjectDir,
) -> None:
    _project(project_dir)
    project_dir.cli("revision", "-s", "app", "-m", "first", "--autogenerate", check=True)
    (first,) = project_dir.versions("app")
    body = _upgrade_body(first)
    for name in (
        "ix_item_a",
        "ix_item_a_positive",
        "ix_item_a_item_b",
        "ix_item_b_item_a",
        "ix_item_lower_name",
        "ix_item_upper_name",
        "ix_item_b_unique",
        "uq_item_a_b",
        "uq_parent_code",
        "uq_thing_b",
        "ck_item_a_floor",
        "ck_item_b_floor",
        "ck_item_a_not_b",
        "ck_thing_a_positive",
        "ck_thing_b_positive",
    ):
        assert body.count(f"'{name}'") == 1, (name, body)
    assert "app_" not in body.replace("schema='app'", ""), body

    project_dir.cli("upgrade", check=True)
    proc = project_dir.cli("check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "app: models match the database"

    project_dir.cli("revision", "-s", "app", "-m", "again", "--autogenerate", check=True)
    (second,) = [p for p in project_dir.versions("app") if p != first]
    code = [line.strip() for line in second.read_text().splitlines()]
    assert "op." not in second.read_text()
    assert code.count("pass") == 2  # upgrade() and downgrade() do nothing
