"""Tenant-stream autogenerate and check handle enum types and sequences like a schema stream's,
naming no schema at all: the revision applies to any tenant through its pinned search_path.

Without this, a tenant revision creating a table with an enum left the type behind on
downgrade (``downgrade base`` then ``upgrade`` failed with "type already exists") and
sequences were never rendered.
"""

from __future__ import annotations

import json
import re
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

import alembic_schemas
from alembic_schemas import identifiers
from alembic_schemas.executor import replay
from alembic_schemas.streams import Stream

from helpers import Catalog, ProjectDir

SCRATCH_PREFIX = "alembic_schemas_scratch"
TENANT_A = "tenant_acme"
TENANT_B = 'tenant_Béta "co"'  # needs quoting: upper case, non-ASCII, a double quote
SOURCE = "like:tenant\\_%"

MODELS_V1 = """
import enum

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class TenantBase(DeclarativeBase):
    metadata = sa.MetaData()


class Role(enum.Enum):
    owner = "owner"
    member = "member"


# free-standing, called by a server default
invoice_number = sa.Sequence("invoice_number", start=1000, metadata=TenantBase.metadata)


class Account(TenantBase):
    __tablename__ = "account"
    id: Mapped[int] = mapped_column(primary_key=True)
    role: Mapped[Role] = mapped_column(sa.Enum(Role, name="account_role"))
"""

INVOICE = """

class Invoice(TenantBase):
    __tablename__ = "invoice"
    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[int] = mapped_column(server_default=invoice_number.next_value())
    # a column's own sequence (the application calls nextval; the table has no default)
    line: Mapped[int] = mapped_column(sa.Sequence("invoice_line", increment=10))
    # the same enum type as account.role: dropped after the last table using it
    issued_by: Mapped[Role] = mapped_column(sa.Enum(Role, name="account_role"))
"""

# v2: a column with a new enum type, and a new free-standing sequence.
V2_ADDITIONS = """

class Status(enum.Enum):
    active = "active"
    closed = "closed"


ticket_no = sa.Sequence("ticket_no", metadata=TenantBase.metadata)
"""

MODELS_V2 = (
    MODELS_V1
    + "    status: Mapped[Status | None] = mapped_column(sa.Enum(Status, name='account_status'))\n"
).replace("\n\nclass Account(TenantBase):", V2_ADDITIONS + "\n\nclass Account(TenantBase):")


# --- helpers (small copies of tests/test_tenants.py's) -------------------------------------


@pytest.fixture
def pd(project_dir: ProjectDir, monkeypatch: pytest.MonkeyPatch) -> ProjectDir:
    """The project folder; models are rewritten in place, so no stale bytecode."""
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    return project_dir


def write_project(pd: ProjectDir, models: str) -> str:
    module = "tagmodels_" + uuid.uuid4().hex[:8]
    pd.write(f"{module}.py", models)
    pd.write(
        "pyproject.toml",
        "\n".join(
            [
                "[tool.alembic-schemas]",
                'script_location = "migrations"',
                "",
                "[tool.alembic-schemas.streams.tenant]",
                f"tenants = {json.dumps(SOURCE)}",
                f'metadata = "{module}:TenantBase.metadata"',
                "",
            ]
        ),
    )
    alembic_schemas.init(pd.root)
    return module


def body_of(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def upgrade_ops(path: Path) -> str:
    return body_of(path).split("def upgrade()")[1].split("def downgrade()")[0]


def downgrade_ops(path: Path) -> str:
    return body_of(path).split("def downgrade()")[1]


def autogenerate_cli(pd: ProjectDir, message: str) -> Path:
    before: Sequence[Path] = pd.versions("tenant")
    pd.cli("revision", "-s", "tenant", "-m", message, "--autogenerate", check=True)
    (path,) = [p for p in pd.versions("tenant") if p not in before]
    return path


def revision_id(path: Path) -> str:
    found = re.search(r"^revision: str = '(\w+)'", body_of(path), re.M)
    assert found is not None, path
    return found.group(1)


def assert_names_no_schema(path: Path) -> None:
    text = body_of(path)
    assert "schema=" not in text
    assert SCRATCH_PREFIX not in text
    assert "tenant_" not in text and "public" not in text
    assert not re.search(r'"\s*\.\s*"', text), text  # no "schema"."name" anywhere


def line_of(text: str, needle: str) -> int:
    lines = text.splitlines()
    (at,) = [i for i, line in enumerate(lines) if needle in line]
    return at


def user_schemas(engine: sa.Engine) -> set[str]:
    return Catalog(engine).user_schemas()


def objects_in(engine: sa.Engine, schema: str) -> set[str]:
    """Relations (tables, sequences, indexes) and types living in ``schema``."""
    with engine.connect() as conn:
        return set(
            conn.execute(
                sa.text(
                    "SELECT 'rel ' || c.relname FROM pg_catalog.pg_class c "
                    "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = :s "
                    "UNION ALL SELECT 'type ' || t.typname FROM pg_catalog.pg_type t "
                    "JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace "
                    "WHERE n.nspname = :s AND t.typtype = 'e'"
                ),
                {"s": schema},
            ).scalars()
        )


def catalog(engine: sa.Engine, schema: str) -> dict[str, Any]:
    """Columns (with defaults as seen from the schema), enum labels, sequence options and the
    version row of one schema, free of the schema's name so two tenants compare equal."""
    ns = "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = :s"
    with engine.connect() as conn:
        # Deparsed defaults omit the schema of objects on the search_path (the engine is in
        # autocommit mode: a session setting, put back below).
        conn.execute(sa.select(sa.func.set_config("search_path", identifiers.quote(schema), False)))

        def q(sql: str) -> list[tuple[Any, ...]]:
            return [tuple(r) for r in conn.execute(sa.text(sql), {"s": schema})]

        try:
            return {
                "objects": sorted(objects_in(engine, schema)),
                "columns": q(
                    "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), "
                    "pg_get_expr(d.adbin, d.adrelid) FROM pg_catalog.pg_attribute a "
                    "JOIN pg_catalog.pg_class c ON c.oid = a.attrelid "
                    "LEFT JOIN pg_catalog.pg_attrdef d "
                    f"ON d.adrelid = a.attrelid AND d.adnum = a.attnum {ns} AND c.relkind = 'r' "
                    "AND a.attnum > 0 AND NOT a.attisdropped ORDER BY 1, 2"
                ),
                "enums": q(
                    "SELECT t.typname, array_agg(e.enumlabel ORDER BY e.enumsortorder) "
                    "FROM pg_catalog.pg_type t "
                    "JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace "
                    "JOIN pg_catalog.pg_enum e ON e.enumtypid = t.oid WHERE n.nspname = :s "
                    "GROUP BY 1 ORDER BY 1"
                ),
                "sequences": q(
                    "SELECT c.relname, s.seqstart, s.seqincrement FROM pg_catalog.pg_sequence s "
                    f"JOIN pg_catalog.pg_class c ON c.oid = s.seqrelid {ns} ORDER BY 1"
                ),
                "versions": [r[0] for r in q("SELECT version_num FROM alembic_version")],
            }
        finally:
            conn.execute(sa.select(sa.func.set_config("search_path", "pg_catalog", False)))


def create_schemas(db: sa.Engine, *names: str) -> None:
    with db.connect() as conn:
        for name in names:
            conn.execute(sa.schema.CreateSchema(name))


def check_cli(pd: ProjectDir) -> Any:
    return pd.cli("check", "--tenant", TENANT_A, "--tenant", TENANT_B)


# --- the test ------------------------------------------------------------------------------


def test_tenant_revisions_create_and_drop_enum_types_and_sequences_without_schema_names(
    pd: ProjectDir, db: sa.Engine
) -> None:
    module = write_project(pd, MODELS_V1 + INVOICE)

    # Zero tenants: autogenerated against the scratch schema, which is gone afterwards.
    init = autogenerate_cli(pd, "init")
    assert user_schemas(db) == {"public"}
    assert_names_no_schema(init)
    up, down = upgrade_ops(init), downgrade_ops(init)
    # sequences before the tables whose defaults call them
    assert line_of(up, 'CREATE SEQUENCE "invoice_number" START WITH 1000\'') < line_of(
        up, "op.create_table('invoice'"
    )
    assert 'CREATE SEQUENCE "invoice_line" INCREMENT BY 10\'' in up
    assert "sa.Enum('owner', 'member', name='account_role')" in up
    # the type is dropped once, after both tables using it; sequences after their table
    assert down.count("DROP TYPE") == 1
    drop_type = line_of(down, "op.execute('DROP TYPE IF EXISTS \"account_role\"')")
    assert drop_type > line_of(down, "op.drop_table('account')")
    assert drop_type > line_of(down, "op.drop_table('invoice')")
    for seq in ("invoice_number", "invoice_line"):
        assert line_of(down, f'DROP SEQUENCE "{seq}"\'') > line_of(down, "op.drop_table('invoice')")

    # The executor replays this revision as SQL naming no schema.
    project = alembic_schemas.load(pd.root)
    stream = Stream(project, project.stream("tenant"))
    script = stream.script.get_revision(revision_id(init))
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    assert script is not None and replay.is_replayable(stream, script, dialect)
    statements = replay.render_upgrade(stream, script, dialect)
    assert statements is not None
    replayed = "\n".join(statements)
    assert 'CREATE SEQUENCE "invoice_number" START WITH 1000;' in replayed
    assert "CREATE TYPE account_role AS ENUM ('owner', 'member');" in replayed
    assert "nextval('invoice_number')" in replayed
    assert not re.search(r'"\s*\.\s*"|\w\.\w+ \(', replayed), replayed  # nothing qualified

    # Two tenants: each gets its own types and sequences, nothing lands in public.
    create_schemas(db, TENANT_A, TENANT_B)
    pd.cli("upgrade", check=True)
    for tenant in (TENANT_A, TENANT_B):
        assert {
            "type account_role",
            "rel invoice_number",
            "rel invoice_line",
            "rel invoice",
            "rel account",
        } <= objects_in(db, tenant)
    assert objects_in(db, "public") == set()
    assert catalog(db, TENANT_A) == catalog(db, TENANT_B)
    columns = {(t, c): (typ, d) for t, c, typ, d in catalog(db, TENANT_A)["columns"]}
    assert columns["invoice", "number"] == ("integer", "nextval('invoice_number'::regclass)")
    assert columns["invoice", "issued_by"] == ("account_role", None)
    proc = check_cli(pd)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for tenant in (TENANT_A, TENANT_B):
        assert f"tenant/{tenant}: models match the database" in proc.stdout

    # downgrade base removes the tables, the type and the sequences, in A only.
    b_before = catalog(db, TENANT_B)
    pd.cli("downgrade", "-s", "tenant", "--tenant", TENANT_A, "base", check=True)
    left = objects_in(db, TENANT_A)
    assert {o for o in left if "alembic_version" not in o} == set(), left
    assert catalog(db, TENANT_B) == b_before

    # ... so A upgrades again (before: "type account_role already exists").
    pd.cli("upgrade", "-s", "tenant", "--tenant", TENANT_A, check=True)
    assert catalog(db, TENANT_A) == catalog(db, TENANT_B)

    # Nothing left to generate: no phantom enum, sequence or nextval default diffs.
    empty = autogenerate_cli(pd, "nothing")
    assert "op." not in upgrade_ops(empty) and "op." not in downgrade_ops(empty), body_of(empty)
    empty.unlink()

    # A column with a new enum type and a new sequence: check names both, in each tenant.
    (pd.root / f"{module}.py").write_text(MODELS_V2 + INVOICE, encoding="utf-8")
    proc = check_cli(pd)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    for tenant in (TENANT_A, TENANT_B):
        assert f"tenant/{tenant}: add column account.status" in proc.stdout, proc.stdout
        assert f"tenant/{tenant}: add sequence {tenant}.ticket_no" in proc.stdout, proc.stdout

    status = autogenerate_cli(pd, "status")
    assert_names_no_schema(status)
    up, down = upgrade_ops(status), downgrade_ops(status)
    assert line_of(
        up, "CREATE TYPE \"account_status\" AS ENUM (\\'active\\', \\'closed\\')"
    ) < line_of(up, "op.add_column('account'")
    assert 'CREATE SEQUENCE "ticket_no"\'' in up
    assert "account_role" not in body_of(status)
    assert line_of(down, 'DROP TYPE IF EXISTS "account_status"\'') > line_of(
        down, "op.drop_column('account', 'status')"
    )
    assert 'DROP SEQUENCE "ticket_no"\'' in down

    pd.cli("upgrade", check=True)
    for tenant in (TENANT_A, TENANT_B):
        assert {"type account_status", "rel ticket_no"} <= objects_in(db, tenant)
    assert catalog(db, TENANT_A) == catalog(db, TENANT_B)
    proc = check_cli(pd)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    # downgrade -1 drops the new type and sequence from A, keeps the older ones and B's.
    pd.cli("downgrade", "-s", "tenant", "--tenant", TENANT_A, "-1", check=True)
    a_objects = objects_in(db, TENANT_A)
    assert "type account_status" not in a_objects and "rel ticket_no" not in a_objects
    assert {"type account_role", "rel invoice_number", "rel invoice_line"} <= a_objects
    assert catalog(db, TENANT_A)["versions"] == [revision_id(init)]
    assert {"type account_status", "rel ticket_no"} <= objects_in(db, TENANT_B)
    assert catalog(db, TENANT_B)["versions"] == [revision_id(status)]
