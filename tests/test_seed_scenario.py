"""The seed scenario of issue 2, driven through the CLI exactly as a new user would."""

from __future__ import annotations

import shutil
from pathlib import Path

import sqlalchemy as sa

from helpers import ProjectDir

SEED = Path(__file__).resolve().parent.parent / "examples" / "seed"

MODELS = (SEED / "app" / "models.py").read_text()
# The example's models are the scenario's end state; the scenario starts without `marks`.
BEFORE_MARKS, MARKS = (
    MODELS[: MODELS.index("\n\nclass Mark(")],
    MODELS[MODELS.index("\n\nclass Mark(") :],
)


def _copy_seed(project_dir: ProjectDir) -> None:
    shutil.copy(SEED / "pyproject.toml", project_dir.root / "pyproject.toml")
    shutil.copytree(
        SEED / "app", project_dir.root / "app", ignore=shutil.ignore_patterns("__pycache__")
    )
    (project_dir.root / "app" / "models.py").write_text(BEFORE_MARKS + "\n")


def _tables(db: sa.Engine, schema: str) -> set[str]:
    return set(sa.inspect(db).get_table_names(schema=schema))


def test_seed_scenario_end_to_end(project_dir: ProjectDir, db: sa.Engine) -> None:
    _copy_seed(project_dir)

    out = project_dir.cli("init", check=True).stdout
    for stream in ("myschema", "schema1"):
        for part in ("versions", "env.py", "script.py.mako"):
            assert (project_dir.root / "migrations" / stream / part).exists()
    assert "env.py" in out

    project_dir.cli("revision", "-s", "myschema", "-m", "init", "--autogenerate", check=True)
    project_dir.cli("revision", "-s", "schema1", "-m", "init", "--autogenerate", check=True)
    (first_myschema,) = project_dir.versions("myschema")
    (first_schema1,) = project_dir.versions("schema1")
    assert "schema1" not in first_myschema.read_text()
    assert "myschema" not in first_schema1.read_text()

    project_dir.cli("upgrade", check=True)
    assert _tables(db, "myschema") == {"user", "alembic_version"}
    assert _tables(db, "schema1") == {"contact", "address", "alembic_version"}
    assert _tables(db, "public") == set()

    with (project_dir.root / "app" / "models.py").open("a") as f:
        f.write(MARKS)
    project_dir.cli("revision", "-s", "myschema", "-m", "marks", "--autogenerate", check=True)
    assert len(project_dir.versions("schema1")) == 1, "no second revision in schema1"
    (marks,) = [p for p in project_dir.versions("myschema") if p != first_myschema]
    body = marks.read_text()
    upgrade_ops = body.split("def upgrade()")[1].split("def downgrade()")[0]
    assert "op.create_table('marks'" in upgrade_ops
    assert "drop" not in upgrade_ops
    assert "schema1" not in body
    assert upgrade_ops.count("op.") == 1, upgrade_ops

    project_dir.cli("upgrade", check=True)
    assert "marks" in _tables(db, "myschema")
    assert project_dir.cli("check").returncode == 0

    models = project_dir.root / "app" / "models.py"
    models.write_text(
        models.read_text().replace(
            "score: Mapped[int]", "score: Mapped[int]\n    note: Mapped[str]"
        )
    )
    proc = project_dir.cli("check")
    assert proc.returncode == 1
    assert "add column myschema.marks.note" in proc.stdout


def test_init_never_overwrites(project_dir: ProjectDir) -> None:
    _copy_seed(project_dir)
    project_dir.cli("init", check=True)
    env_py = project_dir.root / "migrations" / "myschema" / "env.py"
    env_py.write_text("# mine\n" + env_py.read_text())
    (project_dir.root / "migrations" / "schema1" / "script.py.mako").unlink()
    out = project_dir.cli("init", check=True).stdout
    assert env_py.read_text().startswith("# mine\n")
    assert "schema1/script.py.mako" in out
    assert "myschema/env.py" not in out


def test_init_without_config_writes_a_commented_starter(project_dir: ProjectDir) -> None:
    (project_dir.root / "pyproject.toml").write_text('[project]\nname = "x"\n')
    out = project_dir.cli("init", check=True).stdout
    text = (project_dir.root / "pyproject.toml").read_text()
    assert "[tool.alembic-schemas]" in text
    assert "# [tool.alembic-schemas.streams.myschema]" in text
    assert "wrote starter configuration" in out
    assert project_dir.cli("init", check=True).stdout.strip() == "nothing to create"
