"""Tenant streams (issue 3) and the executor's isolation (issue 4), against real PostgreSQL.

One schema-agnostic history is applied to tenant schemas: through the replayed SQL path and the
online Alembic path, from every tenant source, with names that need quoting, and in parallel.
Each tenant must end up with exactly its own objects and rows, nothing in ``public``.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

import alembic_schemas
from alembic_schemas import database, identifiers
from alembic_schemas.errors import ConfigError
from alembic_schemas.executor import replay
from alembic_schemas.streams import Stream

from helpers import Catalog, ProjectDir

SCRATCH_PREFIX = "alembic_schemas_scratch"
# Schemas the tool itself may create besides the streams' own: the run record.
TOOL_SCHEMAS = {"alembic_schemas"}

# --- models ------------------------------------------------------------------------------

HEADER = """
import enum

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class SharedBase(DeclarativeBase):
    metadata = sa.MetaData(schema="shared", naming_convention=NAMING)


class TenantBase(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING)


class Plan(SharedBase):
    __tablename__ = "plan"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(50), unique=True)


class TenantRow(SharedBase):
    __tablename__ = "tenant"
    schema_name: Mapped[str] = mapped_column(sa.Text, primary_key=True)


# Lets the tenant FK to shared.plan resolve; tables with a schema are never emitted by it.
Plan.__table__.to_metadata(TenantBase.metadata)


class Role(enum.Enum):
    owner = "owner"
    member = "member"
"""

# v1: tables with PK, unique, check, FK to shared.plan and within the tenant, an index, a
# tenant-local enum type, and two things v2 drops (a table, a column).
MODELS_V1 = (
    HEADER
    + """

class Account(TenantBase):
    __tablename__ = "account"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(200), unique=True)
    role: Mapped[Role] = mapped_column(sa.Enum(Role, name="account_role"))
    plan_id: Mapped[int] = mapped_column(sa.ForeignKey("shared.plan.id"))
    score: Mapped[int]
    __table_args__ = (sa.CheckConstraint("score >= 0", name="score_positive"),)


class Project(TenantBase):
    __tablename__ = "project"
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(sa.ForeignKey("account.id"), index=True)
    title: Mapped[str] = mapped_column(sa.String(200))
    obsolete: Mapped[str | None]


class Legacy(TenantBase):
    __tablename__ = "legacy"
    id: Mapped[int] = mapped_column(primary_key=True)
"""
)

# v2: drop table, add/drop/alter column, new index, unique constraint and FK.
V2_TABLES = """

class Account(TenantBase):
    __tablename__ = "account"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(200), unique=True)
    role: Mapped[Role] = mapped_column(sa.Enum(Role, name="account_role"))
    plan_id: Mapped[int] = mapped_column(sa.ForeignKey("shared.plan.id"))
    score: Mapped[int]
    nickname: Mapped[str | None] = mapped_column(sa.String(50), index=True)
    __table_args__ = (sa.CheckConstraint("score >= 0", name="score_positive"),)


class Project(TenantBase):
    __tablename__ = "project"
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(sa.ForeignKey("account.id"), index=True)
    title: Mapped[str | None] = mapped_column(sa.String(300))
    code: Mapped[str | None] = mapped_column(sa.String(20), unique=True)
    reviewer_id: Mapped[int | None] = mapped_column(sa.ForeignKey("account.id"))
"""
MODELS_V2 = HEADER + V2_TABLES

# v3 = what the hand-written revisions add: a sequence used by a default, a check constraint,
# and a table filled by op.bulk_insert.
MODELS_V3 = (
    HEADER
    + V2_TABLES.replace(
        '    reviewer_id: Mapped[int | None] = mapped_column(sa.ForeignKey("account.id"))\n',
        '    reviewer_id: Mapped[int | None] = mapped_column(sa.ForeignKey("account.id"))\n'
        "    ticket_no: Mapped[int | None] = mapped_column(server_default=ticket_seq.next_value())\n"
        '    __table_args__ = (sa.CheckConstraint("length(title) > 0", name="title_not_empty"),)\n',
    ).replace(
        "\n\nclass Project(TenantBase):",
        '\n\nticket_seq = sa.Sequence("ticket_seq", start=1000, metadata=TenantBase.metadata)'
        "\n\n\nclass Project(TenantBase):",
    )
    + """

class Audit(TenantBase):
    __tablename__ = "audit"
    id: Mapped[int] = mapped_column(primary_key=True)
    event: Mapped[str] = mapped_column(sa.Text)
    at: Mapped[sa.DateTime] = mapped_column(
        sa.DateTime(timezone=True), server_default=sa.text("now()")
    )
"""
)

# --- project helpers -----------------------------------------------------------------------


def toml_str(text: str) -> str:
    """A TOML basic string (JSON's escapes are valid TOML)."""
    return json.dumps(text)


def write_project(
    pd: ProjectDir,
    models: str,
    *,
    tenants: str,
    module: str | None = None,
    shared: bool = True,
    tenant_first: bool = True,
) -> str:
    """A project with a ``tenant`` stream (and a ``shared`` one it depends on); returns the
    models module name. The tenant stream is listed first so only depends_on orders them."""
    module = module or "tmodels_" + uuid.uuid4().hex[:8]
    pd.write(f"{module}.py", models)
    tenant_section = [
        "[tool.alembic-schemas.streams.tenant]",
        f"tenants = {toml_str(tenants)}",
        f'metadata = "{module}:TenantBase.metadata"',
    ]
    if shared:
        tenant_section.append('depends_on = ["shared"]')
    shared_section = [
        "[tool.alembic-schemas.streams.shared]",
        'schema = "shared"',
        f'metadata = "{module}:SharedBase.metadata"',
    ]
    sections = [tenant_section] + ([shared_section] if shared else [])
    if not tenant_first:
        sections.reverse()
    lines = ["[tool.alembic-schemas]", 'script_location = "migrations"', ""]
    for section in sections:
        lines += [*section, ""]
    pd.write("pyproject.toml", "\n".join(lines))
    alembic_schemas.init(pd.root)
    return module


def forget(module: str) -> None:
    """Drop an imported models module so the next in-process import sees the file as it is now."""
    sys.modules.pop(module, None)


def body_of(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def new_revision(pd: ProjectDir, stream: str, before: Sequence[Path]) -> Path:
    (path,) = [p for p in pd.versions(stream) if p not in before]
    return path


def autogenerate_cli(pd: ProjectDir, stream: str, message: str, *options: str) -> Path:
    before = pd.versions(stream)
    pd.cli("revision", "-s", stream, "-m", message, "--autogenerate", *options, check=True)
    return new_revision(pd, stream, before)


def register(db: sa.Engine, *names: str) -> None:
    with db.connect() as conn:
        conn.execute(
            sa.text("INSERT INTO shared.tenant (schema_name) VALUES (:n)"),
            [{"n": n} for n in names],
        )


def seed_plans(db: sa.Engine) -> None:
    with db.connect() as conn:
        conn.exec_driver_sql("INSERT INTO shared.plan (name) VALUES ('free'), ('pro')")


@pytest.fixture
def pd(project_dir: ProjectDir, monkeypatch: pytest.MonkeyPatch) -> ProjectDir:
    """The project folder; models are rewritten in place, so no stale bytecode."""
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    return project_dir


# --- catalog helpers -----------------------------------------------------------------------


def _strip_schema(text: str | None, quoted: str) -> str | None:
    """Remove ``<schema>.`` qualifications (pg_get_indexdef always qualifies)."""
    if text is None:
        return None
    return re.sub(r'(?<![\w"])' + re.escape(quoted) + r"\.", "", text)


def catalog(engine: sa.Engine, schema: str) -> dict[str, Any]:
    """Everything PostgreSQL knows about one schema, with the schema's own name removed, so
    two tenants (or a tenant and a reference) can be compared."""
    p = {"s": schema}
    with engine.connect() as conn:
        # Deparsed SQL omits the schema for objects on the search_path.
        conn.execute(sa.select(sa.func.set_config("search_path", identifiers.quote(schema), False)))
        try:
            quoted = str(conn.scalar(sa.select(sa.func.quote_ident(schema))))

            def q(sql: str) -> list[tuple[Any, ...]]:
                return [tuple(r) for r in conn.execute(sa.text(sql), p)]

            ns = "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = :s"
            out: dict[str, Any] = {
                "relations": q(
                    f"SELECT c.relname, c.relkind FROM pg_catalog.pg_class c {ns} ORDER BY 1"
                ),
                "columns": q(
                    "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), "
                    "a.attnotnull, pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated "
                    "FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid "
                    "LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
                    f"{ns} AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND a.attnum > 0 "
                    "AND NOT a.attisdropped ORDER BY c.relname, a.attnum"
                ),
                "constraints": q(
                    "SELECT c.relname, k.conname, k.contype, pg_get_constraintdef(k.oid) "
                    "FROM pg_catalog.pg_constraint k JOIN pg_catalog.pg_class c ON c.oid = k.conrelid "
                    f"{ns} ORDER BY 1, 2"
                ),
                "indexes": q(
                    "SELECT c.relname, pg_get_indexdef(c.oid) FROM pg_catalog.pg_index x "
                    f"JOIN pg_catalog.pg_class c ON c.oid = x.indexrelid {ns} ORDER BY 1"
                ),
                "sequences": q(
                    "SELECT c.relname, format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement, "
                    "s.seqmin, s.seqmax, s.seqcache, s.seqcycle FROM pg_catalog.pg_sequence s "
                    f"JOIN pg_catalog.pg_class c ON c.oid = s.seqrelid {ns} ORDER BY 1"
                ),
                "types": q(
                    "SELECT t.typname, t.typtype, array_agg(e.enumlabel ORDER BY e.enumsortorder) "
                    "FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n "
                    "ON n.oid = t.typnamespace LEFT JOIN pg_catalog.pg_enum e ON e.enumtypid = t.oid "
                    "WHERE n.nspname = :s GROUP BY 1, 2 ORDER BY 1"
                ),
                "functions": q(
                    "SELECT p.proname FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n "
                    "ON n.oid = p.pronamespace WHERE n.nspname = :s ORDER BY 1"
                ),
            }
            versions: list[str] = []
            if ("alembic_version", "r") in out["relations"]:
                table = identifiers.qualified(schema, "alembic_version")
                versions = sorted(
                    database.run_sql(conn, f"SELECT version_num FROM {table}").scalars()
                )
        finally:
            conn.execute(sa.select(sa.func.set_config("search_path", "pg_catalog", False)))
    snapshot: dict[str, Any] = {
        key: [tuple(_strip_schema(v, quoted) if isinstance(v, str) else v for v in r) for r in rows]
        for key, rows in out.items()
    }
    snapshot["versions"] = versions
    return snapshot


def objects_in(engine: sa.Engine, schema: str) -> list[str]:
    """Relations, types and functions living in ``schema``."""
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.text(
                    "SELECT 'rel ' || c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
                    "ON n.oid = c.relnamespace WHERE n.nspname = :s "
                    "UNION ALL SELECT 'type ' || t.typname FROM pg_catalog.pg_type t "
                    "JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = :s "
                    "UNION ALL SELECT 'func ' || p.proname FROM pg_catalog.pg_proc p "
                    "JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = :s "
                    "ORDER BY 1"
                ),
                {"s": schema},
            ).scalars()
        )


def user_schemas(engine: sa.Engine) -> set[str]:
    return Catalog(engine).user_schemas()


def scratch_schemas(engine: sa.Engine) -> set[str]:
    return {s for s in user_schemas(engine) if s.startswith(SCRATCH_PREFIX)}


def rows(engine: sa.Engine, schema: str, sql_from: str, columns: str) -> list[tuple[Any, ...]]:
    """``SELECT columns FROM schema.sql_from ORDER BY 1``."""
    with engine.connect() as conn:
        table = identifiers.qualified(schema, sql_from)
        return [
            tuple(r) for r in database.run_sql(conn, f"SELECT {columns} FROM {table} ORDER BY 1")
        ]


def version_of(engine: sa.Engine, schema: str) -> list[str]:
    return [r[0] for r in rows(engine, schema, "alembic_version", "version_num")]


# --- a history covering every kind of change -----------------------------------------------

REGISTRY = "query:SELECT schema_name FROM shared.tenant ORDER BY 1"
TENANT_A = "Acme"
TENANT_B = 'béta "co"; x, y'


def build_history(
    pd: ProjectDir,
    db: sa.Engine,
    *,
    register_tenants: Sequence[str] = (),
    upgrade_to_v1: bool = False,
    online: bool = True,
) -> tuple[str, dict[str, Path]]:
    """shared (plan, tenant registry) plus the tenant history v1 and v2 (autogenerated with
    the CLI), r3_data (hand-written, replayable) and, with ``online``, r4_online; models at v3.
    ``register_tenants`` are added to shared.tenant after v1 (and upgraded to it with
    ``upgrade_to_v1``), so they exist while v2 is autogenerated."""
    module = write_project(pd, MODELS_V1, tenants=REGISTRY)
    autogenerate_cli(pd, "shared", "plans and tenants")
    files = {"v1": autogenerate_cli(pd, "tenant", "v1")}  # zero tenants: not even shared exists
    pd.cli("upgrade", check=True)
    seed_plans(db)
    if register_tenants:
        register(db, *register_tenants)
        if upgrade_to_v1:
            pd.cli("upgrade", check=True)
    (pd.root / f"{module}.py").write_text(MODELS_V2, encoding="utf-8")
    files["v2"] = autogenerate_cli(pd, "tenant", "v2", "--rev-id", "v2")
    # Hand-written: r3_data (replayable) on top of v2, and r4_online (tests/fixtures).
    for path in pd.install("tenant_history", "r3_data", *(["r4_online"] if online else [])):
        files[path.stem.split("_")[0]] = path
    (pd.root / f"{module}.py").write_text(MODELS_V3, encoding="utf-8")
    return module, files


def upgrade_ops(path: Path) -> str:
    return body_of(path).split("def upgrade()")[1].split("def downgrade()")[0]


def test_tenant_history_applies_to_each_tenant_and_nowhere_else(
    pd: ProjectDir, db: sa.Engine
) -> None:
    module, files = build_history(pd, db, register_tenants=[TENANT_A, TENANT_B], upgrade_to_v1=True)

    # Autogenerated against a scratch schema: no schema anywhere in the files.
    v1, v2 = upgrade_ops(files["v1"]), upgrade_ops(files["v2"])
    for op_text in ("op.create_table('account'", "op.create_table('project'", "op.create_index("):
        assert op_text in v1
    assert "sa.Enum('owner', 'member', name='account_role')" in v1
    assert "['shared.plan.id']" in v1
    assert "sa.CheckConstraint('score >= 0'" in v1
    assert "op.drop_table('legacy')" in v2
    assert "op.add_column('account', sa.Column('nickname'" in v2
    assert "op.drop_column('project', 'obsolete')" in v2
    assert "op.alter_column('project', 'title'" in v2
    assert "op.create_unique_constraint(op.f('uq_project_code'), 'project', ['code'])" in v2
    assert (
        "op.create_foreign_key(op.f('fk_project_reviewer_id_account'), 'project', 'account'" in v2
    )
    assert "op.create_index(op.f('ix_account_nickname'), 'account', ['nickname']" in v2
    for path in (files["v1"], files["v2"]):
        text = body_of(path)
        assert "schema=" not in text
        assert SCRATCH_PREFIX not in text
        assert TENANT_A not in text and "béta" not in text
    assert scratch_schemas(db) == set()

    # v2 and r3 are replayed as SQL; r4 reads the database, so Alembic runs it online.
    stream = Stream(alembic_schemas.load(pd.root), alembic_schemas.load(pd.root).stream("tenant"))
    script = {name: stream.script.get_revision(r) for name, r in _revision_ids(files).items()}
    dialect = sa.create_mock_engine("postgresql://", None).dialect
    assert replay.is_replayable(stream, script["v2"], dialect)
    assert replay.is_replayable(stream, script["r3"], dialect)
    assert not replay.is_replayable(stream, script["r4"], dialect)

    # One tenant first: the other is untouched.
    v1_id, head = script["v1"].revision, "r4_online"
    untouched = catalog(db, TENANT_B)
    report = alembic_schemas.upgrade(
        "r3_data", streams=["tenant"], tenants=[TENANT_A], config=pd.root
    )
    assert [(r.schema, r.before, r.after, r.error) for r in report] == [
        (TENANT_A, (v1_id,), ("r3_data",), None)
    ]
    assert catalog(db, TENANT_B) == untouched
    assert rows(db, TENANT_B, "account", "email") == []

    report = alembic_schemas.upgrade("r3_data", streams=["tenant"], jobs=2, config=pd.root)
    assert [(r.schema, r.after) for r in report] == [(TENANT_B, ("r3_data",))]
    report = alembic_schemas.upgrade(jobs=2, config=pd.root)  # r4 through Alembic, both
    assert sorted((r.schema, r.before, r.after, r.error) for r in report if r.tenant) == sorted(
        [(TENANT_A, ("r3_data",), (head,), None), (TENANT_B, ("r3_data",), (head,), None)]
    )

    # Models and each tenant agree, through the CLI and the API.
    proc = pd.cli("check", "--tenant", TENANT_A, "--tenant", TENANT_B)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"tenant/{TENANT_A}: models match the database" in proc.stdout
    assert f"tenant/{TENANT_B}: models match the database" in proc.stdout
    forget(module)
    checked = alembic_schemas.check(streams=["tenant"], config=pd.root)
    assert sorted(r.schema for r in checked) == sorted([TENANT_A, TENANT_B])
    assert all(r.clean for r in checked), [(r.schema, r.differences) for r in checked]
    status = json.loads(pd.cli("status", "--json", check=True).stdout)
    tenants_status = {s["schema"]: s for s in status["schemas"] if s["kind"] == "tenant"}
    assert {k: (v["current"], v["pending"], v["drift"]) for k, v in tenants_status.items()} == {
        TENANT_A: ([head], 0, []),
        TENANT_B: ([head], 0, []),
    }

    # Both tenants hold the same objects, all of them their own.
    cat_a, cat_b = catalog(db, TENANT_A), catalog(db, TENANT_B)
    assert cat_a == cat_b
    relations = {name for name, kind in cat_a["relations"] if kind in ("r", "S")}
    assert relations == {
        "account", "project", "audit", "alembic_version",
        "account_id_seq", "project_id_seq", "audit_id_seq", "ticket_seq",
    }  # fmt: skip
    assert ("account_role", "e", ["owner", "member"]) in cat_a["types"]
    columns = {
        (t, c): (typ, notnull, default) for t, c, typ, notnull, default, *_ in cat_a["columns"]
    }
    assert columns["account", "role"] == ("account_role", True, None)
    assert columns["project", "title"] == ("character varying(300)", False, None)
    assert columns["project", "ticket_no"] == ("integer", False, "nextval('ticket_seq'::regclass)")
    assert ("project", "obsolete") not in columns
    constraints = {name: definition for _t, name, _k, definition in cat_a["constraints"]}
    assert (
        constraints["fk_account_plan_id_plan"] == "FOREIGN KEY (plan_id) REFERENCES shared.plan(id)"
    )
    assert (
        constraints["fk_project_reviewer_id_account"]
        == "FOREIGN KEY (reviewer_id) REFERENCES account(id)"
    )
    assert constraints["uq_project_code"] == "UNIQUE (code)"
    assert constraints["ck_account_score_positive"] == "CHECK ((score >= 0))"
    assert constraints["ck_project_title_not_empty"] == "CHECK ((length((title)::text) > 0))"
    assert constraints["pk_audit"] == "PRIMARY KEY (id)"  # named by the convention, unnamed in r3
    indexes = dict(cat_a["indexes"])
    assert indexes["ix_account_nickname"] == (
        "CREATE INDEX ix_account_nickname ON account USING btree (nickname)"
    )
    assert cat_a["versions"] == [head]
    assert objects_in(db, "public") == []
    assert user_schemas(db) - TOOL_SCHEMAS == {"public", "shared", TENANT_A, TENANT_B}
    tenant_names = {"account", "project", "audit", "account_role", "ticket_seq"}
    assert not [o for o in objects_in(db, "shared") if o.split(" ", 1)[1] in tenant_names]

    # Each tenant has exactly its own rows: bulk_insert, op.execute, and the online migration.
    for tenant in (TENANT_A, TENANT_B):
        assert [r[1] for r in rows(db, tenant, "audit", "id, event")] == [
            "created",
            "seeded",
            "50% of 100%s done",
            "nicknames for 1",
            f"migrated {tenant}",
        ]
        assert rows(db, tenant, "account", "email, nickname, role::text") == [
            ("admin@example.com", "admin", "owner")
        ]
        assert rows(db, tenant, "project", "title, ticket_no") == [("welcome", 1000)]

    # Downgrading one tenant leaves the other alone; upgrading it again restores it.
    pd.cli("downgrade", "-s", "tenant", "--tenant", TENANT_A, "r3_data", check=True)
    assert version_of(db, TENANT_A) == ["r3_data"] and version_of(db, TENANT_B) == [head]
    assert (
        len(rows(db, TENANT_A, "audit", "id")) == 3 and len(rows(db, TENANT_B, "audit", "id")) == 5
    )
    pd.cli("upgrade", "-s", "tenant", "--tenant", TENANT_A, check=True)
    assert version_of(db, TENANT_A) == [head]

    # Offline SQL for a tenant: the name quoted once, literals exactly as in the revision.
    proc = pd.cli("upgrade", "--sql", "-s", "tenant", "--tenant", TENANT_B, f"{v1_id}:r3_data")
    assert proc.returncode == 0, proc.stderr
    assert 'CREATE SCHEMA IF NOT EXISTS "béta ""co""; x, y";' in proc.stdout
    assert "VALUES ('50% of 100%s done')" in proc.stdout

    # check is not blind: a model change shows up as drift in each tenant.
    (pd.root / f"{module}.py").write_text(
        MODELS_V3.replace(
            "    event: Mapped[str]", "    source: Mapped[str | None]\n    event: Mapped[str]"
        ),
        encoding="utf-8",
    )
    proc = pd.cli("check", "--tenant", TENANT_A)
    assert proc.returncode == 1
    assert f"tenant/{TENANT_A}: add column audit.source" in proc.stdout, proc.stdout


def _revision_ids(files: dict[str, Path]) -> dict[str, str]:
    ids = {}
    for name, path in files.items():
        found = re.search(r"^revision(?:: str)? = ['\"](\w+)['\"]", body_of(path), re.M)
        assert found is not None, path
        ids[name] = found.group(1)
    return ids


# --- schema-agnostic autogenerate ----------------------------------------------------------

NOTE_MODELS = (
    HEADER
    + """

class Note(TenantBase):
    __tablename__ = "note"
    id: Mapped[int] = mapped_column(primary_key=True)
    body: Mapped[str]
"""
)

EXTRA_MODEL = """

class Tag(TenantBase):
    __tablename__ = "tag"
    id: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str] = mapped_column(sa.String(40), unique=True)
"""


def run_alembic(pd: ProjectDir, *args: str) -> None:
    """Plain ``alembic`` on the tenant stream's folder, as a user of the cookbook would."""
    ini = str(pd.root / "migrations" / "tenant" / "alembic.ini")
    proc = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", ini, *args],
        cwd=pd.root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_tenant_autogenerate_needs_no_tenant_and_never_leaves_a_scratch_schema(
    pd: ProjectDir, db: sa.Engine
) -> None:
    module = write_project(pd, NOTE_MODELS, tenants="like:acme\\_%", shared=False)
    (note,) = pd.install("notes")
    note_text = note.read_text(encoding="utf-8")
    failing = note_text.replace(
        "\n\n\ndef downgrade",
        '\n    raise RuntimeError("boom while upgrading the scratch schema")\n\n\ndef downgrade',
    )
    note.write_text(failing, encoding="utf-8")

    # The scratch upgrade fails: one line naming the error, no file, no schema left.
    before = pd.versions("tenant")
    proc = pd.cli("revision", "-s", "tenant", "-m", "tags", "--autogenerate")
    assert proc.returncode == 1
    assert "boom while upgrading the scratch schema" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert pd.versions("tenant") == before
    assert user_schemas(db) == {"public"}

    # Rendering the file fails after the scratch schema reached head: nothing left either.
    note.write_text(note_text, encoding="utf-8")
    mako = pd.root / "migrations" / "tenant" / "script.py.mako"
    template = mako.read_text(encoding="utf-8")
    mako.write_text(template + "\n${no_such_template_variable}\n", encoding="utf-8")
    proc = pd.cli("revision", "-s", "tenant", "-m", "tags", "--autogenerate")
    assert proc.returncode != 0
    assert "Template rendering failed" in proc.stderr, proc.stderr
    assert pd.versions("tenant") == before
    assert user_schemas(db) == {"public"}
    mako.write_text(template, encoding="utf-8")

    # Zero tenants: the diff is against the history's head, rendered without any schema.
    (pd.root / f"{module}.py").write_text(NOTE_MODELS + EXTRA_MODEL, encoding="utf-8")
    tags = autogenerate_cli(pd, "tenant", "tags")
    ops_text = upgrade_ops(tags)
    assert "op.create_table('tag'" in ops_text
    assert "note" not in ops_text  # already at the scratch head: no diff for it
    assert "schema=" not in body_of(tags) and SCRATCH_PREFIX not in body_of(tags)
    assert user_schemas(db) == {"public"}

    # Against a real tenant with plain Alembic: still no tenant name in the file.
    alembic_schemas.upgrade(tenants=["acme_1"], config=pd.root)
    (pd.root / f"{module}.py").write_text(
        NOTE_MODELS + EXTRA_MODEL + EXTRA_MODEL.replace("Tag", "Label").replace('"tag"', '"label"'),
        encoding="utf-8",
    )
    before = pd.versions("tenant")
    run_alembic(pd, "-x", "tenant=acme_1", "revision", "--autogenerate", "-m", "labels")
    labels = new_revision(pd, "tenant", before)
    assert "op.create_table('label'" in upgrade_ops(labels)
    assert "acme_1" not in body_of(labels) and "schema=" not in body_of(labels)
    assert user_schemas(db) - TOOL_SCHEMAS == {"public", "acme_1"}


# --- tenant sources ------------------------------------------------------------------------

LONG = "t" * 64  # one byte over PostgreSQL's limit: the server would truncate it


def note_project(pd: ProjectDir, tenants: str, *, shared: bool = False) -> str:
    module = write_project(pd, NOTE_MODELS, tenants=tenants, shared=shared)
    pd.install("notes")
    return module


def create_schemas(db: sa.Engine, *names: str) -> None:
    with db.connect() as conn:
        for name in names:  # SQLAlchemy's quoting: some of these our identifiers refuse
            conn.execute(sa.schema.CreateSchema(name))


SOURCES: dict[str, tuple[str, list[str], list[str]]] = {
    # kind: (source, tenants it must yield, bad names it must report and skip)
    "query": (
        "query:SELECT n FROM (VALUES ('acme_1'), ('pg_bad'), (''), ('" + LONG + "'), (NULL), "
        "('acme_2'), ('acme_1')) AS v(n)",
        ["acme_1", "acme_2"],
        ["'pg_bad'", "empty", repr(LONG), "None"],
    ),
    "like": ("like:%acme%", ["acme_1", "acme_2"], ["'PG_acme'"]),
    "callable": (
        "callable:{module}:names",
        ["acme_1", "acme_2", "acme_3"],
        ["42", "'pg_bad'", "empty", repr(LONG)],
    ),
}

CALLABLE_SOURCE = f'''
import sqlalchemy as sa


def names(conn):
    # gets a live connection, like a real registry lookup
    from_db = conn.scalar(sa.text("SELECT 'acme_3'"))
    return ["acme_1", 42, "pg_bad", "{LONG}", "", "acme_2", from_db]
'''


@pytest.mark.parametrize("kind", sorted(SOURCES))
def test_tenant_source_lists_tenants_and_skips_bad_names(
    pd: ProjectDir,
    db: sa.Engine,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
) -> None:
    # An in-process CLI run (another test) stops this logger propagating to caplog's handler.
    monkeypatch.setattr(logging.getLogger("alembic_schemas"), "propagate", True)
    source, good, bad = SOURCES[kind]
    if kind == "callable":
        module = "tsource_" + uuid.uuid4().hex[:8]
        pd.write(f"{module}.py", CALLABLE_SOURCE)
        source = source.format(module=module)
    if kind == "like":
        create_schemas(db, "acme_1", "acme_2", "PG_acme", "other")
    note_project(pd, source)

    # --tenant narrows the run to the named tenant.
    report = alembic_schemas.upgrade(tenants=["acme_2"], config=pd.root)
    assert [(r.schema, r.after) for r in report] == [("acme_2", ("r1_note",))]

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="alembic_schemas"):
        report = alembic_schemas.upgrade(config=pd.root)
    assert sorted(r.schema for r in report) == sorted(set(good) - {"acme_2"})
    assert report.at_target == {"tenant": 1}
    warnings = [r.getMessage() for r in caplog.records if "skipping tenant" in r.getMessage()]
    assert len(warnings) == len(bad), warnings
    for text in bad:
        assert [w for w in warnings if text in w], (text, warnings)

    assert {s.schema: s.current for s in alembic_schemas.current(config=pd.root)} == {
        name: ("r1_note",) for name in good
    }
    extra = {"PG_acme", "other"} if kind == "like" else set()
    assert user_schemas(db) - TOOL_SCHEMAS == {"public", *good, *extra}
    assert objects_in(db, "PG_acme" if kind == "like" else "pg_bad") == []


def test_depends_on_runs_the_named_stream_before_its_tenants(pd: ProjectDir, db: sa.Engine) -> None:
    # The tenant stream is listed first; its tenants are rows the shared stream inserts, and its
    # tables reference shared.plan: only the dependency order makes this one upgrade work.
    write_project(pd, NOTE_MODELS, tenants=REGISTRY, tenant_first=True)
    pd.install("depends_on")
    assert list(alembic_schemas.load(pd.root).streams) == ["shared", "tenant"]

    proc = pd.cli("upgrade", check=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(("shared", "tenant/"))]
    assert lines[0].startswith("shared: <base> -> s1"), proc.stdout
    assert sorted(ln.split(":")[0] for ln in lines[1:]) == ["tenant/acme_1", "tenant/acme_2"]
    for tenant in ("acme_1", "acme_2"):
        assert rows(db, tenant, "subscription", "plan_id") == [(1,)]

    # Commands narrowed by --tenant touch only that tenant.
    pd.cli("stamp", "-s", "tenant", "--tenant", "acme_1", "base", check=True)
    current = json.loads(pd.cli("current", "--json", check=True).stdout)
    assert {(c["schema"], tuple(c["current"])) for c in current} == {
        ("shared", ("s1",)),
        ("acme_1", ()),
        ("acme_2", ("t1",)),
    }
    proc = pd.cli("current", "--tenant", "acme_2", check=True)
    assert "acme_1" not in proc.stdout and "tenant/acme_2: t1" in proc.stdout


# --- replay path and online path -----------------------------------------------------------


def test_replayed_tenant_matches_a_tenant_migrated_by_plain_alembic(
    pd: ProjectDir, db: sa.Engine
) -> None:
    _module, files = build_history(pd, db, online=False)
    project = alembic_schemas.load(pd.root)
    stream = Stream(project, project.stream("tenant"))
    replayer = replay.Replayer(stream, sa.create_mock_engine("postgresql://", None).dialect)
    way = replayer.segments((), "heads")
    # the executor replays the whole history, in one run of statements
    assert len(way) == 1 and isinstance(way[0], replay.Replay)
    applied = [rev for rev, _ in way[0].revisions]
    assert len(applied) == 3 and applied[-1] == "r3_data"
    replayed, online = "Replayed A", "online b"

    report = alembic_schemas.upgrade(streams=["tenant"], tenants=[replayed], config=pd.root)
    assert [(r.schema, r.after, r.error) for r in report] == [(replayed, ("r3_data",), None)]
    cfg = alembic_schemas.alembic_config("tenant", schema=online, config=pd.root)
    command.upgrade(cfg, "head")

    cat_replayed, cat_online = catalog(db, replayed), catalog(db, online)
    assert cat_replayed["versions"] == ["r3_data"]
    assert cat_replayed == cat_online
    for table, columns in (
        ("audit", "event"),
        ("account", "email, role::text"),
        ("project", "title, ticket_no"),
    ):
        assert rows(db, replayed, table, columns) == rows(db, online, table, columns)
    assert objects_in(db, "public") == []


# --- parallel safety (issue 4) -------------------------------------------------------------

MARKER_MODELS = (
    HEADER
    + """

class Marker(TenantBase):
    __tablename__ = "marker"
    id: Mapped[int] = mapped_column(primary_key=True)
    who: Mapped[str]
    via: Mapped[str]
    claimed: Mapped[str | None]
"""
)


def markers(db: sa.Engine, tenants: Sequence[str]) -> dict[str, list[tuple[Any, ...]]]:
    with db.connect() as conn:
        return {
            t: [
                tuple(r)
                for r in database.run_sql(
                    conn,
                    f"SELECT who, via, claimed FROM {identifiers.qualified(t, 'marker')} ORDER BY id",
                )
            ]
            for t in tenants
        }


def test_parallel_upgrade_gives_every_tenant_exactly_its_own_rows(
    pd: ProjectDir, db: sa.Engine
) -> None:
    source = (
        "query:SELECT format('par_%s', lpad(i::text, 3, '0')) FROM generate_series(1, 200) AS i"
    )
    write_project(pd, MARKER_MODELS, tenants=source, shared=False)
    pd.install("markers")
    tenants = [f"par_{i:03d}" for i in range(1, 201)]

    # Replayed SQL, four workers.
    report = alembic_schemas.upgrade("m1_replayed", jobs=4, config=pd.root)
    assert sorted(r.schema for r in report if r.after == ("m1_replayed",)) == tenants
    assert markers(db, tenants) == {t: [(t, "replay", None)] for t in tenants}

    # Alembic online (op.get_bind(), Alembic's module-global context), four workers.
    report = alembic_schemas.upgrade(jobs=4, config=pd.root)
    assert sorted(r.schema for r in report if r.after == ("m2_online",)) == tenants
    assert not report.failed
    assert markers(db, tenants) == {
        t: [(t, "replay", None), (t, "online", t), (t, "op", t)] for t in tenants
    }
    with db.connect() as conn:
        marker_tables = (
            conn.execute(
                sa.text(
                    "SELECT n.nspname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
                    "ON n.oid = c.relnamespace WHERE c.relname = 'marker' ORDER BY 1"
                )
            )
            .scalars()
            .all()
        )
    assert marker_tables == tenants
    assert objects_in(db, "public") == []


# --- bad input -------------------------------------------------------------------------------

# Valid PostgreSQL identifiers that need quoting: each must become exactly that schema.
QUOTED_NAMES = [
    "Acme",
    'quo"te',
    "semi;colon",
    "com,ma",
    "with space",
    "ünïcödé",
    "日本語テナント",
    "x'); DROP SCHEMA shared CASCADE; --",
    '"; DROP SCHEMA shared CASCADE; --',
    "$users",
    "100%s",
    "a" * 63,
    "é" * 31 + "x",  # 63 bytes in UTF-8
]
# Refused before any SQL: (name, what the message must say).
REFUSED_NAMES = [
    ("", "empty"),
    ("pg_bad", "pg_ prefix"),
    ("b" * 64, "64 bytes"),
    ("é" * 32, "64 bytes"),
    ("$user", "current role"),  # search_path would read it as the role's own schema
]


def test_tenant_names_needing_quotes_become_exactly_those_schemas(
    pd: ProjectDir, db: sa.Engine
) -> None:
    with db.connect() as conn:
        conn.exec_driver_sql("CREATE SCHEMA registry")
        conn.exec_driver_sql("CREATE TABLE registry.tenant (name text)")
        conn.execute(
            sa.text("INSERT INTO registry.tenant (name) VALUES (:n)"),
            [{"n": n} for n in ["plain", *QUOTED_NAMES]],
        )
    note_project(pd, "query:SELECT name FROM registry.tenant")

    # Named on the command line...
    proc = pd.cli("upgrade", "--tenant", QUOTED_NAMES[1], "--tenant", QUOTED_NAMES[7], check=True)
    assert proc.stdout.count("<base> -> r1_note") == 2
    # ...and listed by the source.
    alembic_schemas.upgrade(jobs=2, config=pd.root)
    # Offline SQL names it exactly too (no %-doubling for psql).
    proc = pd.cli("upgrade", "--sql", "--tenant", "100%s", check=True)
    assert 'CREATE SCHEMA IF NOT EXISTS "100%s";' in proc.stdout

    assert user_schemas(db) - TOOL_SCHEMAS == {"public", "registry", "plain", *QUOTED_NAMES}
    reference = catalog(db, "plain")
    for name in QUOTED_NAMES:
        assert catalog(db, name) == reference, name
        assert version_of(db, name) == ["r1_note"]
    # Provisioned rather than migrated: the same, under exactly that name.
    pd.cli("tenants", "create", 'new "one"; 100%', check=True)
    assert catalog(db, 'new "one"; 100%') == reference
    pd.cli("tenants", "drop", 'new "one"; 100%', "--yes", "--force", check=True)
    assert user_schemas(db) - TOOL_SCHEMAS == {"public", "registry", "plain", *QUOTED_NAMES}
    proc = pd.cli("check", *[arg for name in QUOTED_NAMES for arg in ("--tenant", name)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in QUOTED_NAMES:
        assert f"tenant/{name}: models match the database" in proc.stdout


def refusing_project(pd: ProjectDir) -> None:
    """A named stream that runs before the tenants: a name refused only when the tenant
    stream's turn comes would be refused too late."""
    write_project(pd, NOTE_MODELS, tenants="like:acme\\_%", shared=True)
    pd.install("depends_on", "s1")
    pd.install("notes")


def assert_refused(pd: ProjectDir, db: sa.Engine, args: Sequence[str], reason: str) -> None:
    proc = pd.cli(*args)
    assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, (args, proc.stderr)
    assert "invalid tenant name" in lines[0] and reason in lines[0], (args, proc.stderr)
    assert user_schemas(db) == {"public"}, args  # not even the named stream ran


@pytest.mark.parametrize(
    ("name", "reason"), REFUSED_NAMES, ids=["empty", "pg_", "64-ascii", "64-utf8", "$user"]
)
def test_invalid_tenant_names_are_refused_before_any_sql(
    pd: ProjectDir, db: sa.Engine, name: str, reason: str
) -> None:
    refusing_project(pd)
    assert_refused(pd, db, ["upgrade", "--tenant", "acme_1", "--tenant", name], reason)
    with pytest.raises(ConfigError, match="invalid tenant name"):
        alembic_schemas.upgrade(tenants=["acme_1", name], config=pd.root)
    assert user_schemas(db) == {"public"}


def test_every_command_taking_tenant_refuses_invalid_names_before_any_sql(
    pd: ProjectDir, db: sa.Engine
) -> None:
    refusing_project(pd)
    for args in (
        ["stamp", "--tenant", "pg_bad", "head"],
        ["downgrade", "-s", "tenant", "--tenant", "", "base"],
        ["current", "--tenant", "b" * 64],
        ["check", "--tenant", "$user"],
        ["status", "--tenant", "pg_bad"],
        ["tenants", "create", "é" * 32],
        ["tenants", "drop", "pg_catalog", "--yes", "--force"],
    ):
        assert_refused(pd, db, args, "")
    with pytest.raises(ConfigError, match="NUL"):  # cannot come from a command line
        alembic_schemas.upgrade(tenants=["acme\x00x"], config=pd.root)
    assert user_schemas(db) == {"public"}
