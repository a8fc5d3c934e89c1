"""Every schema-stream verb of DESIGN.md, driven through the CLI on a two-stream project.

``billing`` depends on ``core`` (its invoice table has a foreign key to core.account) and is
listed first in the config, so only ``depends_on`` can put core first.
"""

from __future__ import annotations

import json
import socket
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

import alembic_schemas
from alembic_schemas import identifiers, load_project

from conftest import ProjectDir

PYPROJECT = """
[tool.alembic-schemas]
script_location = "migrations"

[tool.alembic-schemas.streams.billing]
schema = "billing"
metadata = "verbs_models:Base.metadata"
depends_on = ["core"]

[tool.alembic-schemas.streams.core]
schema = "core"
metadata = "verbs_models:Base.metadata"
"""

# One MetaData for both streams: the FK billing.invoice -> core.account resolves, and each
# stream still sees only the tables of its own schema.
MODELS = """
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "account"
    __table_args__ = {"schema": "core"}
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(100))


class Invoice(Base):
    __tablename__ = "invoice"
    __table_args__ = {"schema": "billing"}
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(sa.ForeignKey("core.account.id"))
"""

DOCUMENTED_STATUS_KEYS = {
    "stream": str,
    "schema": str,
    "kind": str,
    "current": list,
    "heads": list,
    "pending": int,
    "drift": list,
}


def _write_project(project_dir: ProjectDir) -> None:
    project_dir.write("pyproject.toml", PYPROJECT)
    project_dir.write("verbs_models.py", MODELS)


@pytest.fixture
def project(project_dir: ProjectDir) -> ProjectDir:
    """The two streams with revisions core1 -> core2 (empty) and bill1; nothing applied."""
    _write_project(project_dir)
    alembic_schemas.init(project_dir.root)
    root = project_dir.root
    alembic_schemas.revision("core", "core", autogenerate=True, rev_id="core1", config=root)
    alembic_schemas.revision("core", "second", rev_id="core2", config=root)
    alembic_schemas.revision("billing", "billing", autogenerate=True, rev_id="bill1", config=root)
    return project_dir


def _versions(db: sa.Engine, schema: str) -> list[str] | None:
    """The rows of ``schema``.alembic_version, or None when the table does not exist."""
    if not sa.inspect(db).has_table("alembic_version", schema=schema):
        return None
    with db.connect() as conn:
        table = sa.table("alembic_version", sa.column("version_num"), schema=schema)
        return sorted(conn.scalars(sa.select(table.c.version_num)))


def _tables(db: sa.Engine, schema: str) -> set[str]:
    return set(sa.inspect(db).get_table_names(schema=schema))


def _schemas(db: sa.Engine) -> set[str]:
    return set(sa.inspect(db).get_schema_names())


def _lines(text: str) -> list[str]:
    """The per-stream lines of the output (not the run summary)."""
    return [line for line in text.splitlines() if line.split(":")[0] in {"core", "billing"}]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_add_stream_appends_to_the_config_and_creates_its_folder(project_dir: ProjectDir) -> None:
    project_dir.write("pyproject.toml", "[tool.alembic-schemas]\nlock_timeout = '5s'\n")
    project_dir.write("verbs_models.py", MODELS)
    metadata = "verbs_models:Base.metadata"

    out = project_dir.cli("add-stream", "core", "--schema", "core", "--metadata", metadata)
    assert out.returncode == 0, out.stderr
    assert "added stream core" in out.stdout
    project_dir.cli(
        "add-stream",
        "billing",
        "--schema",
        "billing",
        "--metadata",
        metadata,
        "--depends-on",
        "core",
        check=True,
    )

    project = load_project(project_dir.root / "pyproject.toml")
    assert list(project.streams) == ["core", "billing"]
    assert project.streams["core"].schema == "core"
    assert project.streams["core"].metadata == metadata
    assert project.streams["billing"].depends_on == ("core",)
    assert project.lock_timeout == "5s", "the existing settings are kept"
    for stream in ("core", "billing"):
        folder = project_dir.root / "migrations" / stream
        assert (folder / "versions").is_dir()
        for name in ("env.py", "script.py.mako", "alembic.ini"):
            assert (folder / name).is_file(), name

    before = (project_dir.root / "pyproject.toml").read_text()
    dup = project_dir.cli("add-stream", "core", "--schema", "other", "--metadata", metadata)
    assert dup.returncode == 2
    assert "stream 'core' already exists" in dup.stderr
    taken = project_dir.cli("add-stream", "again", "--schema", "core", "--metadata", metadata)
    assert taken.returncode == 2
    assert "both target schema 'core'" in taken.stderr
    assert (project_dir.root / "pyproject.toml").read_text() == before
    assert not (project_dir.root / "migrations" / "again").exists()


def test_revision_plain_and_autogenerated(project_dir: ProjectDir) -> None:
    _write_project(project_dir)
    project_dir.cli("init", check=True)

    plain = project_dir.cli("revision", "-s", "core", "-m", "empty", check=True).stdout
    assert "core: created revision" in plain
    (empty,) = project_dir.versions("core")
    body = empty.read_text()
    assert "def upgrade() -> None:\n    pass" in body
    assert "down_revision: Union[str, Sequence[str], None] = None" in body

    behind = project_dir.cli("revision", "-s", "core", "-m", "tables", "--autogenerate")
    assert behind.returncode == 1
    assert "the database is not at head" in behind.stderr
    project_dir.cli("upgrade", "-s", "core", check=True)
    auto = project_dir.cli("revision", "-s", "core", "-m", "tables", "--autogenerate", check=True)
    (generated,) = [p for p in project_dir.versions("core") if p != empty]
    assert str(generated) in auto.stdout
    text = generated.read_text()
    assert "op.create_table('account'" in text
    assert "schema='core'" in text
    assert "invoice" not in text and "billing" not in text
    empty_id = empty.name.split("_")[0]
    assert f"down_revision: Union[str, Sequence[str], None] = '{empty_id}'" in text
    assert project_dir.versions("billing") == []


def test_upgrade_runs_every_stream_in_dependency_order(project: ProjectDir, db: sa.Engine) -> None:
    out = project.cli("upgrade", check=True).stdout
    lines = _lines(out)
    assert [line.split(":")[0] for line in lines] == ["core", "billing"], out
    assert "<base> -> core2" in lines[0]
    assert "<base> -> bill1" in lines[1]

    assert _tables(db, "core") == {"account", "alembic_version"}
    assert _tables(db, "billing") == {"invoice", "alembic_version"}
    assert _versions(db, "core") == ["core2"]
    assert _versions(db, "billing") == ["bill1"]
    assert _tables(db, "public") == set(), "public gets nothing"
    with db.connect() as conn:
        version_tables = conn.execute(
            sa.text(
                "SELECT table_schema FROM information_schema.tables "
                "WHERE table_name = 'alembic_version'"
            )
        ).scalars()
        assert sorted(version_tables) == ["billing", "core"]

    again = project.cli("upgrade", check=True).stdout
    assert "core: unchanged at core2" in again
    assert "billing: unchanged at bill1" in again


def test_upgrade_selected_streams_to_a_target_revision(project: ProjectDir, db: sa.Engine) -> None:
    out = project.cli("upgrade", "-s", "core", "core1", check=True).stdout
    assert [line.split(":")[0] for line in _lines(out)] == ["core"], out
    assert "core: <base> -> core1" in out
    assert _versions(db, "core") == ["core1"]
    assert "billing" not in _schemas(db), "a stream not selected is not touched"

    project.cli("upgrade", "-s", "billing", "-s", "core", check=True)
    assert _versions(db, "core") == ["core2"]
    assert _versions(db, "billing") == ["bill1"]


def test_downgrade_relative_and_to_base_dependents_first(
    project: ProjectDir, db: sa.Engine
) -> None:
    project.cli("upgrade", check=True)

    out = project.cli("downgrade", "-s", "core", "-1", check=True).stdout
    assert "core: core2 -> core1" in out
    assert _versions(db, "core") == ["core1"]
    assert _versions(db, "billing") == ["bill1"]

    # billing's FK points at core.account: billing must go first, whatever the -s order.
    out = project.cli("downgrade", "-s", "core", "-s", "billing", "base", check=True).stdout
    assert [line.split(":")[0] for line in _lines(out)] == ["billing", "core"], out
    assert _versions(db, "core") == []
    assert _versions(db, "billing") == []
    assert _tables(db, "core") == {"alembic_version"}
    assert _tables(db, "billing") == {"alembic_version"}


def test_current_plain_and_json(project: ProjectDir) -> None:
    out = project.cli("current", check=True).stdout
    assert _lines(out) == ["core: <base> (2 pending)", "billing: <base> (1 pending)"]

    project.cli("upgrade", "-s", "core", check=True)
    out = project.cli("current", check=True).stdout
    assert _lines(out) == ["core: core2 (head)", "billing: <base> (1 pending)"]

    data = json.loads(project.cli("current", "--json", "-s", "core", check=True).stdout)
    assert data == [
        {
            "stream": "core",
            "schema": "core",
            "kind": "schema",
            "current": ["core2"],
            "heads": ["core2"],
            "pending": 0,
            "drift": None,
            "error": None,  # added by issue 12: why a schema could not be read
            "drift_group": None,  # added by issue 12: tenants only
        }
    ]


def test_history_plain_json_and_range(project: ProjectDir) -> None:
    out = project.cli("history", "-s", "core", check=True).stdout
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines[0] == "# core"
    assert "core1 -> core2 (head), second" in lines[1]
    assert "<base> -> core1, core" in lines[2]
    assert len(lines) == 3

    everything = json.loads(project.cli("history", "--json", check=True).stdout)
    assert list(everything) == ["core", "billing"]
    assert [r["revision"] for r in everything["core"]] == ["core2", "core1"]
    assert everything["core"][0]["down_revision"] == ["core1"]
    assert everything["core"][0]["is_head"] is True
    assert everything["core"][1]["message"] == "core"
    assert Path(everything["billing"][0]["path"]).is_file()

    newest = json.loads(project.cli("history", "-s", "core", "-r", "core2:", "--json").stdout)
    assert [r["revision"] for r in newest["core"]] == ["core2"]
    oldest = json.loads(project.cli("history", "-s", "core", "-r", ":core1", "--json").stdout)
    assert [r["revision"] for r in oldest["core"]] == ["core1"]


def test_heads_plain_and_json(project: ProjectDir) -> None:
    out = project.cli("heads", check=True).stdout
    assert _lines(out) == [
        "core: core1 -> core2 (head), second",
        "billing: <base> -> bill1 (head), billing",
    ]
    data = json.loads(project.cli("heads", "-s", "billing", "--json", check=True).stdout)
    assert list(data) == ["billing"]
    assert [(h["revision"], h["is_head"]) for h in data["billing"]] == [("bill1", True)]


def test_show_prints_one_revision(project: ProjectDir) -> None:
    out = project.cli("show", "-s", "core", "core1", check=True).stdout
    assert "Rev: core1" in out
    assert "Path: " in out and "core1_core.py" in out
    (entry,) = json.loads(project.cli("show", "-s", "core", "head", "--json", check=True).stdout)
    assert entry["revision"] == "core2"
    assert entry["down_revision"] == ["core1"]


def test_stamp_records_without_running_and_purge_replaces_unknown_rows(
    project: ProjectDir, db: sa.Engine
) -> None:
    out = project.cli("stamp", "-s", "core", "core1", check=True).stdout
    assert "core: <base> -> core1" in out
    assert _versions(db, "core") == ["core1"]
    assert "account" not in _tables(db, "core"), "stamp runs no migration"
    assert "billing" not in _schemas(db)

    with db.connect() as conn:
        conn.execute(sa.text("INSERT INTO core.alembic_version VALUES ('feedface')"))
    refused = project.cli("stamp", "-s", "core", "head")
    assert refused.returncode == 2
    assert "feedface" in refused.stderr
    assert _versions(db, "core") == ["core1", "feedface"]

    project.cli("stamp", "-s", "core", "--purge", "head", check=True)
    assert _versions(db, "core") == ["core2"]


def test_merge_joins_two_heads_into_one(project: ProjectDir, db: sa.Engine) -> None:
    project.cli(
        "revision", "-s", "core", "-m", "side", "--head", "base", "--rev-id", "side1", check=True
    )
    heads = json.loads(project.cli("heads", "-s", "core", "--json", check=True).stdout)["core"]
    assert sorted(h["revision"] for h in heads) == ["core2", "side1"]
    refused = project.cli("upgrade", "-s", "core")
    assert refused.returncode == 2
    assert "core: Multiple head revisions" in refused.stderr

    out = project.cli("merge", "-s", "core", "-m", "joined", check=True).stdout
    assert "core: created merge revision" in out
    (head,) = json.loads(project.cli("heads", "-s", "core", "--json", check=True).stdout)["core"]
    assert sorted(head["down_revision"]) == ["core2", "side1"]
    assert head["message"] == "joined"

    project.cli("upgrade", check=True)
    assert _versions(db, "core") == [head["revision"]]
    files = project.versions("core")
    again = project.cli("merge", "-s", "core", check=True).stdout
    assert "one head, nothing to merge" in again
    assert project.versions("core") == files


def test_check_exits_0_when_clean_and_1_naming_each_difference(project: ProjectDir) -> None:
    pending = project.cli("check")
    assert pending.returncode == 1
    assert "core: 2 revision(s) not applied" in pending.stdout

    project.cli("upgrade", check=True)
    clean = project.cli("check")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert _lines(clean.stdout) == [
        "core: models match the database",
        "billing: models match the database",
    ]

    models = project.root / "verbs_models.py"
    models.write_text(
        models.read_text().replace(
            "name: Mapped[str] = mapped_column(sa.String(100))",
            "name: Mapped[str] = mapped_column(sa.String(100))\n    email: Mapped[str]",
        )
    )
    dirty = project.cli("check")
    assert dirty.returncode == 1
    assert "core: add column core.account.email" in dirty.stdout
    assert "billing: models match the database" in dirty.stdout
    assert "1 schema(s) differ" in dirty.stderr


def test_status_json_has_the_documented_keys(project: ProjectDir) -> None:
    project.cli("upgrade", "-s", "core", check=True)
    data = json.loads(project.cli("status", "--json", check=True).stdout)["schemas"]
    assert [d["stream"] for d in data] == ["core", "billing"]
    for entry in data:
        for key, kind in DOCUMENTED_STATUS_KEYS.items():
            assert isinstance(entry[key], kind), (key, entry)
    core, billing = data
    assert (core["schema"], core["kind"], core["current"], core["heads"], core["pending"]) == (
        "core",
        "schema",
        ["core2"],
        ["core2"],
        0,
    )
    assert core["drift"] == []
    assert (billing["current"], billing["heads"], billing["pending"]) == ([], ["bill1"], 1)
    # billing's table does not exist yet: drift names it.
    assert any("invoice" in d for d in billing["drift"]), billing["drift"]


def test_upgrade_sql_prints_the_sql_and_touches_no_database(
    project: ProjectDir, db: sa.Engine
) -> None:
    unreachable = ProjectDir(
        project.root, f"postgresql+psycopg://nobody@127.0.0.1:{_closed_port()}/x"
    )
    proc = unreachable.cli("upgrade", "--sql")
    assert proc.returncode == 0, proc.stderr
    sql = proc.stdout
    assert 'CREATE SCHEMA IF NOT EXISTS "core";' in sql
    assert 'CREATE SCHEMA IF NOT EXISTS "billing";' in sql
    assert sql.index('SCHEMA IF NOT EXISTS "core"') < sql.index('SCHEMA IF NOT EXISTS "billing"')
    assert "CREATE TABLE core.alembic_version" in sql
    assert "CREATE TABLE billing.alembic_version" in sql
    assert "CREATE TABLE core.account" in sql
    assert "INSERT INTO core.alembic_version (version_num) VALUES ('core1')" in sql
    assert "public" not in sql

    project.cli("upgrade", "--sql", check=True)
    assert not {"core", "billing"} & _schemas(db), "--sql must not run anything"


def test_owner_gives_the_schema_authorization(project_dir: ProjectDir, db: sa.Engine) -> None:
    role = "owner_" + uuid.uuid4().hex[:8]
    _write_project(project_dir)
    config = project_dir.root / "pyproject.toml"
    config.write_text(config.read_text() + f'owner = "{role}"\n')  # the core stream is last
    alembic_schemas.init(project_dir.root)
    with db.connect() as conn:
        conn.exec_driver_sql(f"CREATE ROLE {identifiers.quote(role, 'role name')}")
    try:
        sql = project_dir.cli("upgrade", "--sql", "-s", "core", check=True).stdout
        assert f'CREATE SCHEMA IF NOT EXISTS "core" AUTHORIZATION "{role}"' in sql

        project_dir.cli("upgrade", check=True)
        with db.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT nspname, nspowner::regrole::text FROM pg_namespace "
                    "WHERE nspname IN ('core', 'billing')"
                )
            )
            owners = {str(name): str(owner) for name, owner in rows}
        assert owners["core"] == role
        assert owners["billing"] != role
    finally:
        with db.connect() as conn:
            quoted = identifiers.quote(role, "role name")
            conn.exec_driver_sql("DROP SCHEMA IF EXISTS core CASCADE")
            conn.exec_driver_sql(f"DROP ROLE {quoted}")
