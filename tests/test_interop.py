"""Every stream folder stays a plain Alembic script directory: the ``alembic`` command,
``alembic.command.*`` with :func:`alembic_schemas.alembic_config`, and pytest-alembic's
built-in tests all work on it."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

import alembic_schemas
from alembic_schemas import database, pytest_plugin

from helpers import Catalog, ProjectDir

SEED = Path(__file__).resolve().parent.parent / "examples" / "seed"


@pytest.fixture
def seed(project_dir: ProjectDir) -> ProjectDir:
    """The seed example with its two first revisions (``ms1``, ``s11``); nothing applied.

    The models module is renamed so that this process never confuses it with another test's."""
    shutil.copy(SEED / "pyproject.toml", project_dir.root / "pyproject.toml")
    shutil.copytree(
        SEED / "app", project_dir.root / "interop_app", ignore=shutil.ignore_patterns("__pycache__")
    )
    config = project_dir.root / "pyproject.toml"
    config.write_text(config.read_text().replace('"app.models:', '"interop_app.models:'))
    alembic_schemas.init(project_dir.root)
    root = project_dir.root
    alembic_schemas.revision("myschema", "init", autogenerate=True, rev_id="ms1", config=root)
    alembic_schemas.revision("schema1", "init", autogenerate=True, rev_id="s11", config=root)
    return project_dir


def _alembic(
    project: ProjectDir, *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the plain ``alembic`` command line, as a user of Alembic would."""
    env = {**os.environ, "ALEMBIC_SCHEMAS_URL": project.url}
    proc = subprocess.run(
        [sys.executable, "-m", "alembic", *args],
        cwd=cwd or project.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"alembic {' '.join(args)}\n{proc.stdout}\n{proc.stderr}"
    return proc


def _versions(db: sa.Engine, schema: str) -> list[str] | None:
    return Catalog(db).versions(schema)


def _tables(db: sa.Engine, schema: str) -> set[str]:
    return Catalog(db).tables(schema)


def test_plain_alembic_command_line_on_a_stream_folder(seed: ProjectDir, db: sa.Engine) -> None:
    ini = "migrations/myschema/alembic.ini"
    _alembic(seed, "-c", ini, "upgrade", "head")
    assert _versions(db, "myschema") == ["ms1"]
    assert {"user", "alembic_version"} <= _tables(db, "myschema")
    assert _tables(db, "public") == set(), "the version table is in the stream's schema"
    assert "schema1" not in sa.inspect(db).get_schema_names(), "other streams are untouched"

    # Same answer from plain alembic (run from elsewhere) and from alembic-schemas.
    current = _alembic(seed, "-c", str(seed.root / ini), "current", cwd=seed.root.parent)
    assert "ms1 (head)" in current.stdout
    assert "myschema: ms1 (head)" in seed.cli("current", "-s", "myschema", check=True).stdout

    history = _alembic(seed, "-c", ini, "history").stdout
    assert "<base> -> ms1 (head), init" in history

    _alembic(seed, "-c", ini, "downgrade", "-1")
    assert _versions(db, "myschema") == []
    assert _tables(db, "myschema") == {"alembic_version"}

    sql = _alembic(seed, "-c", "migrations/schema1/alembic.ini", "upgrade", "head", "--sql").stdout
    assert "CREATE TABLE schema1.alembic_version" in sql
    assert "schema1" not in sa.inspect(db).get_schema_names(), "--sql runs nothing"


def test_alembic_config_works_with_alembic_command(seed: ProjectDir, db: sa.Engine) -> None:
    # Without a connection: the project's database ($ALEMBIC_SCHEMAS_URL here).
    cfg = alembic_schemas.alembic_config("myschema", config=seed.root)
    command.upgrade(cfg, "head")
    assert _versions(db, "myschema") == ["ms1"]
    assert "user" in _tables(db, "myschema")

    out = io.StringIO()
    cfg = alembic_schemas.alembic_config("myschema", config=seed.root)
    cfg.stdout = out
    command.current(cfg)
    assert "ms1 (head)" in out.getvalue()

    command.downgrade(alembic_schemas.alembic_config("myschema", config=seed.root), "base")
    assert _versions(db, "myschema") == []
    assert _tables(db, "public") == set()


def test_alembic_config_runs_on_a_given_connection(seed: ProjectDir, db: sa.Engine) -> None:
    engine = database.create_engine(seed.url)
    try:
        # A connection outside a transaction: the run commits its own.
        with engine.connect() as conn:
            cfg = alembic_schemas.alembic_config("schema1", config=seed.root)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            out = io.StringIO()
            cfg.stdout = out
            command.current(cfg)
            assert "s11 (head)" in out.getvalue()
        assert _versions(db, "schema1") == ["s11"]
        assert {"contact", "address", "alembic_version"} <= _tables(db, "schema1")

        # Alembic's cookbook: engine.begin() owns the transaction; nothing is committed
        # until it ends, and a failure would roll the whole block back.
        with engine.begin() as conn:
            cfg = alembic_schemas.alembic_config("schema1", config=seed.root)
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "base")
            assert _versions(db, "schema1") == ["s11"], "not committed yet"
        assert _versions(db, "schema1") == []
    finally:
        engine.dispose()

    # A plain SQLAlchemy Engine in attributes["connection"] (what pytest-alembic passes).
    plain = sa.create_engine(seed.url)
    try:
        cfg = alembic_schemas.alembic_config("myschema", config=seed.root)
        cfg.attributes["connection"] = plain
        command.upgrade(cfg, "head")
    finally:
        plain.dispose()
    assert _versions(db, "myschema") == ["ms1"]


def _documented_conftest() -> str:
    """The conftest.py the plugin's docstring shows for one stream, as written there: the test
    runs what the documentation says."""
    doc = pytest_plugin.__doc__ or ""
    block = doc.split("in ``tests/conftest.py``::\n", 1)[1].split("\nthen run ", 1)[0]
    return textwrap.dedent(block)


# A second stream in the same session, through pytest-alembic's create_alembic_fixture.
PLUGIN_SECOND_STREAM = """
from pytest_alembic import create_alembic_fixture, tests

from alembic_schemas.pytest_plugin import stream_config

alembic_schema1 = create_alembic_fixture(stream_config("schema1"))


def test_schema1_upgrade(alembic_schema1):
    tests.test_upgrade(alembic_schema1)


def test_schema1_model_definitions_match_ddl(alembic_schema1):
    tests.test_model_definitions_match_ddl(alembic_schema1)


def test_schema1_up_down_consistency(alembic_schema1):
    tests.test_up_down_consistency(alembic_schema1)
"""

# Without the plugin: pytest-alembic's own Config around alembic_schemas.alembic_config, and
# a plain engine on a database the test creates.
RAW_CONFTEST = """
import os
import uuid

import pytest
import sqlalchemy as sa
from pytest_alembic.config import Config
from sqlalchemy.engine import make_url

import alembic_schemas

URL = os.environ["ALEMBIC_SCHEMAS_URL"]


@pytest.fixture
def alembic_config():
    return Config.from_raw_config(alembic_schemas.alembic_config("schema1"))


@pytest.fixture
def alembic_engine():
    name = "raw_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    engine = sa.create_engine(make_url(URL).set(database=name))
    yield engine
    engine.dispose()
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
    admin.dispose()
"""

BUILT_IN_TESTS = (
    "test_model_definitions_match_ddl",
    "test_single_head_revision",
    "test_up_down_consistency",
    "test_upgrade",
)


def _pytest_alembic(project: ProjectDir, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["ALEMBIC_SCHEMAS_URL"] = project.url
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "tests",
            "--test-alembic",
            "-v",
            "-p",
            "no:cacheprovider",
            f"--rootdir={project.root}",
            *extra,
        ],
        cwd=project.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.parametrize("conftest", ["plugin", "raw"])
def test_pytest_alembic_built_in_tests_pass_on_the_seed_example(
    project_dir: ProjectDir, conftest: str
) -> None:
    """The example as shipped (models and migrations); "plugin" tests the myschema stream
    through alembic_schemas.pytest_plugin, "raw" the schema1 stream without it."""
    seed = project_dir
    shutil.copytree(
        SEED,
        seed.root,
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns("__pycache__", ".alembic-schemas"),
    )
    seed.write(
        "tests/conftest.py", _documented_conftest() if conftest == "plugin" else RAW_CONFTEST
    )
    if conftest == "plugin":
        seed.write("tests/test_schema1_migrations.py", PLUGIN_SECOND_STREAM)
    proc = _pytest_alembic(seed)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    for name in BUILT_IN_TESTS:
        assert f"tests/conftest.py::pytest-alembic::{name} PASSED" in output, output
    assert ("7 passed" if conftest == "plugin" else "4 passed") in output, output

    # The model-vs-DDL test can fail: a column in the models but in no revision.
    models = seed.root / "app" / "models.py"
    models.write_text(
        models.read_text().replace(
            "    street: Mapped[str] = mapped_column(sa.String(200))",
            "    street: Mapped[str] = mapped_column(sa.String(200))\n    zip: Mapped[str]",
        )
        + textwrap.dedent(
            """
            class Note(MySchemaBase):
                __tablename__ = "note"
                id: Mapped[int] = mapped_column(primary_key=True)
            """
        )
    )
    proc = _pytest_alembic(seed, "-k", "model_definitions")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert "test_model_definitions_match_ddl FAILED" in output
    missing = "op.add_column('address'" if conftest == "raw" else "op.create_table('note'"
    assert missing in output, output
