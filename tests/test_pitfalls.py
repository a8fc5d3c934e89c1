"""Known Alembic autogenerate pitfalls on PostgreSQL: each one autogenerates once, upgrades, and
then ``check`` is clean; where it matters, downgrade to base and upgrade again work too."""

from __future__ import annotations

import secrets
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.script import Script
from sqlalchemy.engine import make_url

import alembic_schemas
from alembic_schemas import database, identifiers

from helpers import ProjectDir


def _project(project_dir: ProjectDir, models: str, streams: dict[str, dict[str, Any]]) -> str:
    """Write ``models`` as a uniquely named module and a pyproject with ``streams``; returns the
    module name. Each stream dict gives ``schema``, ``metadata`` (attribute) and ``depends_on``."""
    module = "models_" + uuid.uuid4().hex[:8]
    project_dir.write(f"{module}.py", models)
    lines = ["[tool.alembic-schemas]", 'script_location = "migrations"', ""]
    for name, spec in streams.items():
        lines += [
            f"[tool.alembic-schemas.streams.{name}]",
            f'schema = "{spec["schema"]}"',
            f'metadata = "{module}:{spec["metadata"]}"',
        ]
        if spec.get("depends_on"):
            deps = ", ".join(f'"{d}"' for d in spec["depends_on"])
            lines.append(f"depends_on = [{deps}]")
        lines.append("")
    project_dir.write("pyproject.toml", "\n".join(lines))
    alembic_schemas.init(project_dir.root)
    return module


def _autogenerate(project_dir: ProjectDir, stream: str, message: str) -> Script:
    (script,) = alembic_schemas.revision(
        stream, message, autogenerate=True, config=project_dir.root
    )
    return script


def _code(body: str) -> str:
    """A function body without its signature line, comments, ``pass`` and blank lines."""
    lines = body.splitlines()[1:]
    kept = [ln for ln in lines if ln.strip() and ln.strip() != "pass"]
    return "\n".join(ln for ln in kept if not ln.strip().startswith("#"))


def _bodies(script: Script) -> tuple[str, str]:
    """The code of upgrade() and downgrade() in a generated revision file."""
    text = Path(script.path).read_text()
    upgrade = text.split("def upgrade()")[1].split("def downgrade()")[0]
    downgrade = text.split("def downgrade()")[1]
    return _code(upgrade), _code(downgrade)


def _assert_clean(project_dir: ProjectDir) -> None:
    """``check`` exits 0 from the CLI, and plain Alembic's ``check`` agrees on every stream."""
    proc = project_dir.cli("check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    project = alembic_schemas.load(project_dir.root)
    for name in project.streams:
        command.check(alembic_schemas.alembic_config(name, config=project))


def _assert_second_autogenerate_is_empty(project_dir: ProjectDir, stream: str) -> None:
    script = _autogenerate(project_dir, stream, "nothing")
    upgrade, downgrade = _bodies(script)
    assert upgrade == "", upgrade
    assert downgrade == "", downgrade
    Path(script.path).unlink()


def _assert_stable(project_dir: ProjectDir, *streams: str) -> None:
    """Clean, and a second autogenerate of each stream finds nothing: no phantom diffs."""
    _assert_clean(project_dir)
    for stream in streams:
        _assert_second_autogenerate_is_empty(project_dir, stream)


def _round_trip(project_dir: ProjectDir, streams: list[str]) -> None:
    """Downgrade each stream to base (dependents first), then upgrade everything again."""
    for stream in reversed(streams):
        alembic_schemas.downgrade("base", streams=[stream], config=project_dir.root)
    alembic_schemas.upgrade(config=project_dir.root)


def _line_of(lines: list[str], text: str) -> int:
    (found,) = [i for i, line in enumerate(lines) if text in line]
    return found


def _tables(db: sa.Engine, schema: str) -> set[str]:
    return set(sa.inspect(db).get_table_names(schema=schema))


def _types(db: sa.Engine, schema: str) -> set[str]:
    with db.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
                "WHERE n.nspname = :s AND t.typtype = 'e'"
            ),
            {"s": schema},
        )
        return {r[0] for r in rows}


def _sequences(db: sa.Engine, schema: str) -> set[str]:
    return set(sa.inspect(db).get_sequence_names(schema=schema))


# SQLAlchemy resolves a ForeignKey only within one MetaData, so a cross-schema FK needs the
# referenced table in the referencing stream's MetaData: either both streams share one MetaData
# (each stream compares only its own schema's tables), or the stream holds a reference copy.
SHARED_METADATA = """
import sqlalchemy as sa

metadata = sa.MetaData()

sa.Table("user", metadata, sa.Column("id", sa.Integer, primary_key=True), schema="myschema")
sa.Table(
    "address",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("myschema.user.id"), nullable=False),
    schema="schema1",
)
"""

REFERENCE_COPY = """
import sqlalchemy as sa

my = sa.MetaData(schema="myschema")
s1 = sa.MetaData(schema="schema1")

sa.Table("user", my, sa.Column("id", sa.Integer, primary_key=True))
# schema1's view of myschema.user: only what the foreign key needs.
sa.Table("user", s1, sa.Column("id", sa.Integer, primary_key=True), schema="myschema")
sa.Table(
    "address",
    s1,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("myschema.user.id"), nullable=False),
)
"""


@pytest.mark.parametrize(
    ("models", "my_md", "s1_md"),
    [(SHARED_METADATA, "metadata", "metadata"), (REFERENCE_COPY, "my", "s1")],
    ids=["shared-metadata", "reference-copy"],
)
def test_cross_schema_foreign_key_is_created_once_and_stays_quiet(
    project_dir: ProjectDir, db: sa.Engine, models: str, my_md: str, s1_md: str
) -> None:
    _project(
        project_dir,
        models,
        {
            "myschema": {"schema": "myschema", "metadata": my_md},
            "schema1": {"schema": "schema1", "metadata": s1_md, "depends_on": ["myschema"]},
        },
    )
    _autogenerate(project_dir, "myschema", "init")
    address = _autogenerate(project_dir, "schema1", "init")
    upgrade, _ = _bodies(address)
    assert "sa.ForeignKeyConstraint(['user_id'], ['myschema.user.id']" in upgrade
    assert "create_table('user'" not in upgrade

    alembic_schemas.upgrade(config=project_dir.root)
    _assert_stable(project_dir, "schema1", "myschema")

    _round_trip(project_dir, ["myschema", "schema1"])
    assert _tables(db, "schema1") == {"address", "alembic_version"}
    _assert_clean(project_dir)


ENUM_EXPLICIT = """
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

metadata = sa.MetaData(schema="myschema")

sa.Table(
    "person",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("mood", sa.Enum("happy", "sad", name="mood"), nullable=False),
    sa.Column("tags", postgresql.ARRAY(sa.Enum("red", "blue", name="colour"))),
)
sa.Table(
    "pet",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("mood", sa.Enum("happy", "sad", name="mood")),
    sa.Column("kind", postgresql.ENUM("cat", "dog", name="kind")),
)
"""

# Tables and types without a schema: the stream places the tables in its schema, and the types
# are created (and must be dropped) where the pinned search_path puts them.
ENUM_IMPLICIT = ENUM_EXPLICIT.replace('sa.MetaData(schema="myschema")', "sa.MetaData()")


@pytest.mark.parametrize("models", [ENUM_EXPLICIT, ENUM_IMPLICIT], ids=["explicit", "implicit"])
def test_enum_types_are_created_and_dropped_with_their_tables(
    project_dir: ProjectDir, db: sa.Engine, models: str
) -> None:
    _project(project_dir, models, {"myschema": {"schema": "myschema", "metadata": "metadata"}})
    script = _autogenerate(project_dir, "myschema", "init")
    _, downgrade = _bodies(script)
    # each type goes right after the last table that uses it, and only once
    lines = downgrade.splitlines()
    drops = {t: _line_of(lines, f'"{t}"') for t in ("mood", "colour", "kind")}
    person, pet = _line_of(lines, "drop_table('person'"), _line_of(lines, "drop_table('pet'")
    assert drops["mood"] > max(person, pet)
    assert drops["colour"] > person
    assert drops["kind"] > pet
    assert downgrade.count("DROP TYPE") == 3

    alembic_schemas.upgrade(config=project_dir.root)
    assert _types(db, "myschema") == {"mood", "colour", "kind"}
    assert _types(db, "public") == set()
    _assert_stable(project_dir, "myschema")

    alembic_schemas.downgrade("base", streams=["myschema"], config=project_dir.root)
    assert _tables(db, "myschema") == {"alembic_version"}
    assert _types(db, "myschema") == set()
    alembic_schemas.upgrade(config=project_dir.root)
    assert _types(db, "myschema") == {"mood", "colour", "kind"}
    _assert_clean(project_dir)


SEQUENCES = """
import sqlalchemy as sa

metadata = sa.MetaData(schema="myschema")

invoice_no = sa.Sequence("invoice_no", metadata=metadata, start=1000)
order_no = sa.Sequence("order_no", metadata=metadata, data_type=sa.SmallInteger)
sa.Table(
    "ticket",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("number", sa.Integer, sa.Sequence("ticket_number", start=10, increment=5)),
    sa.Column("order", sa.Integer, server_default=order_no.next_value()),
)
sa.Table("serial", metadata, sa.Column("id", sa.BigInteger, primary_key=True))
sa.Table("ident", metadata, sa.Column("id", sa.Integer, sa.Identity(), primary_key=True))
"""


# Without a schema in the models: the stream places the tables, and the sequences follow its
# pinned search_path.
SEQUENCES_IMPLICIT = SEQUENCES.replace('sa.MetaData(schema="myschema")', "sa.MetaData()")


@pytest.mark.parametrize("models", [SEQUENCES, SEQUENCES_IMPLICIT], ids=["explicit", "implicit"])
def test_sequences_are_created_compared_and_dropped(
    project_dir: ProjectDir, db: sa.Engine, models: str
) -> None:
    module = _project(
        project_dir, models, {"myschema": {"schema": "myschema", "metadata": "metadata"}}
    )
    first = _autogenerate(project_dir, "myschema", "init")
    upgrade, _ = _bodies(first)
    lines = upgrade.splitlines()
    # "ticket"'s server default calls nextval('order_no'): the sequence must come first
    assert _line_of(lines, '"order_no"') < _line_of(lines, "create_table('ticket'")
    alembic_schemas.upgrade(config=project_dir.root)
    assert _sequences(db, "myschema") == {
        "invoice_no",
        "order_no",
        "ticket_number",
        "ticket_id_seq",  # SERIAL and IDENTITY sequences belong to their columns
        "serial_id_seq",
        "ident_id_seq",
    }
    assert _sequences(db, "public") == set()
    with db.connect() as conn:
        assert conn.scalar(sa.text("SELECT nextval('myschema.ticket_number')")) == 10
        assert conn.scalar(sa.text("SELECT nextval('myschema.ticket_number')")) == 15
        assert conn.scalar(sa.text("SELECT nextval('myschema.invoice_no')")) == 1000
    _assert_stable(project_dir, "myschema")

    # A sequence removed from the models is dropped, and comes back on downgrade.
    source = project_dir.root / f"{module}.py"
    source.write_text(source.read_text().replace("invoice_no = ", "# invoice_no = "))
    del sys.modules[module]
    proc = project_dir.cli("check")
    assert proc.returncode == 1
    assert "remove sequence myschema.invoice_no" in proc.stdout
    second = _autogenerate(project_dir, "myschema", "drop invoice_no")
    upgrade, downgrade = _bodies(second)
    assert upgrade.strip() in (
        """op.execute('DROP SEQUENCE "myschema"."invoice_no"')""",
        """op.execute('DROP SEQUENCE "invoice_no"')""",
    )
    assert '"invoice_no" START WITH 1000' in downgrade
    alembic_schemas.upgrade(config=project_dir.root)
    assert "invoice_no" not in _sequences(db, "myschema")
    _assert_clean(project_dir)
    alembic_schemas.downgrade(first.revision, streams=["myschema"], config=project_dir.root)
    assert "invoice_no" in _sequences(db, "myschema")

    _round_trip(project_dir, ["myschema"])
    assert {"order_no", "ticket_number"} <= _sequences(db, "myschema")
    _assert_clean(project_dir)


CONSTRAINTS_AND_DEFAULTS = """
import sqlalchemy as sa

metadata = sa.MetaData(schema="myschema")

sa.Table(
    "item",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("sku", sa.String(20), nullable=False, unique=True),
    sa.Column("name", sa.String(100), nullable=False, index=True),
    sa.Column("shelf", sa.String(10)),
    sa.Column("row", sa.Integer),
    sa.Column("price", sa.Numeric(10, 2), server_default="0"),
    sa.Column("qty", sa.Integer, nullable=False, server_default=sa.text("1")),
    sa.Column("state", sa.String(10), server_default="new"),
    sa.Column("active", sa.Boolean, server_default=sa.true()),
    sa.Column("created", sa.DateTime(timezone=True), server_default=sa.text("now()")),
    sa.Column("day", sa.Date, server_default=sa.func.current_date()),
    sa.Column("note", sa.Text, server_default=""),
    sa.UniqueConstraint("shelf", "row", name="uq_item_place"),
    sa.CheckConstraint("qty >= 0", name="ck_item_qty"),
    sa.Index("ix_item_place", "shelf", "row"),
    sa.Index("ux_item_lower_name", sa.text("lower(name)"), unique=True),
    sa.Index("ix_item_active", "id", postgresql_where=sa.text("active")),
)
"""


def test_indexes_constraints_and_server_defaults_leave_no_phantom_diffs(
    project_dir: ProjectDir, db: sa.Engine
) -> None:
    module = _project(
        project_dir,
        CONSTRAINTS_AND_DEFAULTS,
        {"myschema": {"schema": "myschema", "metadata": "metadata"}},
    )
    _autogenerate(project_dir, "myschema", "init")
    alembic_schemas.upgrade(config=project_dir.root)
    _assert_stable(project_dir, "myschema")
    _round_trip(project_dir, ["myschema"])
    _assert_clean(project_dir)

    # and check is not blind to these: a changed default and a dropped index are reported
    source = project_dir.root / f"{module}.py"
    source.write_text(
        source.read_text()
        .replace('server_default="new"', 'server_default="fresh"')
        .replace('    sa.Index("ix_item_place", "shelf", "row"),\n', "")
    )
    proc = project_dir.cli("check")
    assert proc.returncode == 1
    assert "modify default of myschema.item.state" in proc.stdout
    assert "remove index myschema.item.ix_item_place" in proc.stdout


PUBLIC = """
import sqlalchemy as sa

metadata = sa.MetaData(schema="public")

sa.Table("account", metadata, sa.Column("id", sa.Integer, primary_key=True))
sa.Table(
    "login",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("account_id", sa.ForeignKey("public.account.id"), index=True),
    sa.Column("kind", sa.Enum("web", "api", name="login_kind")),
)
other = sa.MetaData(schema="other")
sa.Table("thing", other, sa.Column("id", sa.Integer, primary_key=True))
"""


def test_stream_on_public_schema(project_dir: ProjectDir, db: sa.Engine) -> None:
    _project(
        project_dir,
        PUBLIC,
        {
            "main": {"schema": "public", "metadata": "metadata"},
            "other": {"schema": "other", "metadata": "other"},
        },
    )
    script = _autogenerate(project_dir, "main", "init")
    upgrade, _ = _bodies(script)
    assert "thing" not in upgrade
    _autogenerate(project_dir, "other", "init")
    alembic_schemas.upgrade(config=project_dir.root)
    assert _tables(db, "public") == {"account", "login", "alembic_version"}
    assert _tables(db, "other") == {"thing", "alembic_version"}
    _assert_stable(project_dir, "main", "other")
    _round_trip(project_dir, ["main", "other"])
    _assert_clean(project_dir)


ENUM_V1 = """
import sqlalchemy as sa

metadata = sa.MetaData(schema="myschema")

sa.Table(
    "person",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("mood", sa.Enum("happy", "sad", name="mood")),
)
sa.Table(
    "pet",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("kind", sa.Enum("cat", "dog", name="kind")),
)
"""

# v2: a new table reuses "mood", a new column needs a new type "size", and "pet" goes away
# with the only user of "kind".
ENUM_V2 = """
import sqlalchemy as sa

metadata = sa.MetaData(schema="myschema")

sa.Table(
    "person",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("mood", sa.Enum("happy", "sad", name="mood")),
    sa.Column("size", sa.Enum("s", "m", "l", name="size")),
)
sa.Table(
    "visit",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("mood", sa.Enum("happy", "sad", name="mood")),
)
"""


def test_enum_types_follow_later_revisions(project_dir: ProjectDir, db: sa.Engine) -> None:
    module = _project(
        project_dir, ENUM_V1, {"myschema": {"schema": "myschema", "metadata": "metadata"}}
    )
    alembic_schemas.upgrade(config=project_dir.root)  # creates the schema for the revision
    first = _autogenerate(project_dir, "myschema", "v1")
    alembic_schemas.upgrade(config=project_dir.root)
    assert _types(db, "myschema") == {"mood", "kind"}

    project_dir.write(f"{module}.py", ENUM_V2)
    del sys.modules[module]  # the in-process API imported v1
    second = _autogenerate(project_dir, "myschema", "v2")
    upgrade, downgrade = _bodies(second)
    assert "create_type=False" in upgrade  # "visit" must not create "mood" again
    lines = upgrade.splitlines()
    assert _line_of(lines, "CREATE TYPE") < _line_of(lines, "add_column('person'")
    assert _line_of(lines, "drop_table('pet'") < _line_of(lines, 'DROP TYPE IF EXISTS "myschema"')
    lines = downgrade.splitlines()
    assert _line_of(lines, "drop_column('person', 'size'") < _line_of(lines, "DROP TYPE")

    alembic_schemas.upgrade(config=project_dir.root)
    assert _types(db, "myschema") == {"mood", "size"}
    assert _tables(db, "myschema") == {"person", "visit", "alembic_version"}
    _assert_stable(project_dir, "myschema")

    alembic_schemas.downgrade(first.revision, streams=["myschema"], config=project_dir.root)
    assert _types(db, "myschema") == {"mood", "kind"}
    assert _tables(db, "myschema") == {"person", "pet", "alembic_version"}
    alembic_schemas.downgrade("base", streams=["myschema"], config=project_dir.root)
    assert _types(db, "myschema") == set()
    alembic_schemas.upgrade(config=project_dir.root)
    assert _types(db, "myschema") == {"mood", "size"}
    _assert_clean(project_dir)


@pytest.fixture
def schema_named_role(admin_engine: sa.Engine, db_url: str) -> Iterator[tuple[str, str]]:
    """A login role owning the test database, and a URL connecting as it. Its name is also the
    stream's schema: the default search_path ``"$user", public`` then resolves to that schema."""
    role = "as_" + secrets.token_hex(4)
    password = secrets.token_hex(12)  # hex: nothing to escape
    database_name = make_url(db_url).database
    assert database_name is not None
    quoted_role = identifiers.quote(role, "role name")
    with admin_engine.connect() as conn:
        conn.exec_driver_sql(f"CREATE ROLE {quoted_role} LOGIN PASSWORD '{password}'")
        conn.exec_driver_sql(
            f"ALTER DATABASE {identifiers.quote(database_name, 'database name')} "
            f"OWNER TO {quoted_role}"
        )
    url = make_url(db_url).set(username=role, password=password)
    yield role, url.render_as_string(hide_password=False)
    owner = database.create_engine(db_url, isolation_level="AUTOCOMMIT")
    try:
        with owner.connect() as conn:
            conn.exec_driver_sql(f"REASSIGN OWNED BY {quoted_role} TO CURRENT_USER")
            conn.exec_driver_sql(f"DROP OWNED BY {quoted_role}")
    finally:
        owner.dispose()
    with admin_engine.connect() as conn:
        conn.exec_driver_sql(f"DROP ROLE {quoted_role}")


ROLE_MODELS = """
import sqlalchemy as sa

metadata = sa.MetaData(schema=SCHEMA)

sa.Table(
    "person",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(50), nullable=False, server_default="anon"),
    sa.Column("mood", sa.Enum("happy", "sad", name="mood")),
    sa.Column("number", sa.Integer, sa.Sequence("person_number")),
    sa.UniqueConstraint("name"),
)
sa.Table(
    "visit",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("person_id", sa.ForeignKey("person.id"), index=True),
)
"""


@pytest.mark.parametrize("explicit", [True, False], ids=["explicit", "implicit"])
def test_login_role_named_like_the_schema(
    project_dir: ProjectDir,
    db: sa.Engine,
    schema_named_role: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
    explicit: bool,
) -> None:
    role, url = schema_named_role
    monkeypatch.setenv("ALEMBIC_SCHEMAS_URL", url)
    as_role = ProjectDir(project_dir.root, url)
    models = ROLE_MODELS.replace("SCHEMA", repr(role) if explicit else "None")
    if explicit:
        models = models.replace('"person.id"', f'"{role}.person.id"')
    _project(as_role, models, {"app": {"schema": role, "metadata": "metadata"}})

    _autogenerate(as_role, "app", "init")
    alembic_schemas.upgrade(config=as_role.root)
    plain = sa.create_engine(url)  # no pinned search_path: what the role gets by default
    try:
        with plain.connect() as conn:
            assert conn.scalar(sa.text("SELECT current_schema()")) == role  # the trap is set
    finally:
        plain.dispose()
    assert _tables(db, role) == {"person", "visit", "alembic_version"}
    assert _tables(db, "public") == set()
    assert _types(db, role) == {"mood"}
    assert "person_number" in _sequences(db, role)

    _assert_stable(as_role, "app")
    _round_trip(as_role, ["app"])
    _assert_clean(as_role)
    assert _tables(db, "public") == set()
