"""Scoped comparison of a stream's models with one schema, readable descriptions of diffs, and
what Alembic's autogenerate leaves out on PostgreSQL.

Alembic compares tables, columns, indexes and constraints, but not the schema objects around
them. Two of those break real projects, so a stream's autogenerate also handles:

* **named enum types** (``sa.Enum`` / ``postgresql.ENUM``): ``op.create_table`` creates them,
  but nothing drops them, so downgrade-then-upgrade fails with "type already exists"; a new
  table reusing an existing type fails the same way; ``op.add_column`` never creates one.
  :func:`process_revision_directives` rewrites the generated operations: a ``CREATE TYPE``
  before a column that needs a type not yet there, ``create_type=False`` on a new table whose
  type exists, and a ``DROP TYPE`` after the last table or column that used a type the
  revision created (downgrade) or orphaned (upgrade).
* **sequences** (``sa.Sequence`` on a column or in the MetaData): Alembic neither creates nor
  compares them. A comparator plugin adds ``CREATE SEQUENCE`` for missing ones (before the
  tables, whose defaults may call them) and ``DROP SEQUENCE`` for ones no longer modelled
  (after the tables); sequences owned by a SERIAL or IDENTITY column are the column's business.
  ``nextval('seq')`` server defaults are compared by qualified name, not by running them.
* **enums in arrays**: ``ARRAY(Enum)`` without a schema is compared as the type the stream
  created, not as a different type (SQLAlchemy 2.1 enums do not inherit the table's schema).

Everything is rendered as ``op.execute("...")`` with names quoted by :mod:`identifiers`, so
revision files stay plain Alembic that needs nothing from this package to run. A tenant
stream's objects are named without a schema (``DROP TYPE IF EXISTS "account_role"``): they
resolve through the search_path pinned to whichever tenant the revision is applied to.
"""

from __future__ import annotations

import copy
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, cast

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.autogenerate.api import AutogenContext
from alembic.operations import ops
from alembic.runtime.migration import MigrationContext
from alembic.runtime.plugins import Plugin
from alembic.util import DispatchPriority, PriorityDispatchResult
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

from . import database, environment, identifiers
from .streams import Stream

SCHEMA_OPTION = "alembic_schemas_schema"
"""Key in the migration context's options naming the stream's schema (read by the hooks)."""

MODELS_OPTION = "alembic_schemas_models"
"""The stream's own MetaData: ``target_metadata`` may be a per-schema copy of its tables, and a
copy of tables leaves free-standing sequences behind."""

SCHEMALESS_OPTION = "alembic_schemas_schemaless"
"""True in a tenant stream's schema-less run (see :func:`environment.schemaless_options`): the
schema compared is the connection's default schema, which Alembic reflects and renders with no
name, so the SQL added here names no schema either and applies to any tenant."""

PLUGIN_NAME = "alembic_schemas.autogenerate"
PLUGINS = ["alembic.autogenerate.*", PLUGIN_NAME]

Key = tuple[str, str]  # (schema the object lives in, its name)
Place = tuple[str, str, str]  # (schema, table, column); column "*" means the whole table


def options(
    schema: str | None, models: sa.MetaData | None = None, *, schemaless: bool = False
) -> dict[str, Any]:
    """The ``context.configure`` options that switch on this module for ``schema``, or with
    ``schemaless`` for the connection's default schema, leaving its name out of all SQL."""
    return {
        SCHEMA_OPTION: schema,
        SCHEMALESS_OPTION: schemaless,
        MODELS_OPTION: models,
        "autogenerate_plugins": PLUGINS,
        "process_revision_directives": process_revision_directives,
        "compare_type": compare_type,
    }


def _stream_schema(opts: Mapping[str, Any], dialect: sa.engine.Dialect) -> str | None:
    """The schema this run compares; ``None`` when the run is not a stream's."""
    if opts.get(SCHEMALESS_OPTION):
        # environment.as_default_schema made the compared schema the dialect's default
        return dialect.default_schema_name
    return cast("str | None", opts.get(SCHEMA_OPTION))


_NEXTVAL = re.compile(r"^nextval\('(.+)'(?:::regclass)?\)$")


def _compare_nextval_default(
    autogen_context: AutogenContext,
    alter_column_op: ops.AlterColumnOp,
    schema: str | None,
    tname: str,
    cname: str,
    conn_col: sa.Column[Any],
    metadata_col: sa.Column[Any],
) -> PriorityDispatchResult:
    """``nextval('seq')`` server defaults: the database reports the sequence qualified, a model
    may leave it to the search_path. Alembic would settle that by running
    ``SELECT nextval(a) = nextval(b)``, which consumes two values and, with search_path pinned
    to pg_catalog, fails on the unqualified name. Compare the qualified names instead."""
    stream_schema = _stream_schema(autogen_context.opts, autogen_context.dialect)
    conn_default, model_default = conn_col.server_default, metadata_col.server_default
    if stream_schema is None or not (
        isinstance(conn_default, sa.DefaultClause) and isinstance(model_default, sa.DefaultClause)
    ):
        return PriorityDispatchResult.CONTINUE
    rendered = str(
        model_default.arg
        if isinstance(model_default.arg, str)
        else model_default.arg.compile(dialect=autogen_context.dialect)
    )
    db = _NEXTVAL.match(str(getattr(conn_default.arg, "text", conn_default.arg)).strip())
    model = _NEXTVAL.match(rendered.strip())
    if db is None or model is None:
        return PriorityDispatchResult.CONTINUE
    where = metadata_col.table.schema or schema or stream_schema

    def qualified(name: str) -> str:
        return name if "." in name else f"{where}.{name}"

    alter_column_op.existing_server_default = conn_default
    if qualified(db.group(1)) != qualified(model.group(1)):
        alter_column_op.modify_server_default = model_default
    return PriorityDispatchResult.STOP


def compare_type(
    context: MigrationContext,
    inspected_column: sa.Column[Any],
    metadata_column: sa.Column[Any],
    inspected_type: Any,
    metadata_type: Any,
) -> bool | None:
    """Alembic ``compare_type`` hook: an enum (or ARRAY of one) is the same type when it has
    the same name, schema and labels, where a model enum without a schema lives where the
    stream created it. SQLAlchemy 2.1 enums no longer take their table's schema, and Alembic
    compares ``ARRAY(ENUM(schema='s'))`` with ``ARRAY(Enum())`` as different: a phantom diff.
    Anything else: ``None``, Alembic's own comparison."""
    schema = _stream_schema(context.opts, context.dialect)
    depth = 0
    while isinstance(inspected_type, sa.ARRAY) and isinstance(metadata_type, sa.ARRAY):
        inspected_type, metadata_type = inspected_type.item_type, metadata_type.item_type
        depth += 1
    if schema is None or depth == 0 or isinstance(inspected_type, sa.ARRAY):
        return None
    if isinstance(metadata_type, sa.types.TypeDecorator):
        metadata_type = metadata_type.impl_instance
    if not (isinstance(inspected_type, sa.Enum) and isinstance(metadata_type, sa.Enum)):
        return None
    db_key = _enum_key(inspected_type, inspected_column.table.schema, schema)[0]
    model_key = _enum_key(metadata_type, metadata_column.table.schema, schema)[0]
    if db_key == model_key and list(inspected_type.enums) == list(metadata_type.enums):
        return False
    return None


def compare(stream: Stream, schema: str, conn: Connection) -> list[Any]:
    """Alembic's diff list between the stream's models and ``schema`` (only that schema)."""
    environment.prepare_read_only(conn, stream.project)
    if stream.is_tenant:
        # The same comparison as a tenant autogenerate (against the scratch schema): the tenant
        # as default schema, the schema-less models as they are. Copying the models into the
        # tenant schema instead makes defaults such as nextval('seq') and enum types differ
        # from what the schema-less revisions created (phantom diffs, or an error when
        # Alembic's server-side default comparison cannot resolve 'seq').
        with environment.as_default_schema(conn, schema):
            opts = environment.schemaless_options(stream)
            metadata = opts.pop("target_metadata")
            mc = MigrationContext.configure(connection=conn, opts=opts)
            return list(compare_metadata(mc, metadata))
    opts = environment.context_options(stream, schema)
    metadata = opts.pop("target_metadata", None) or stream.require_metadata()
    mc = MigrationContext.configure(connection=conn, opts=opts)
    return list(compare_metadata(mc, metadata))


# --- descriptions --------------------------------------------------------------------------


def _name(obj: Any) -> str:
    schema = getattr(obj, "schema", None)
    if schema is None and getattr(obj, "table", None) is not None:
        schema = obj.table.schema
    table = getattr(getattr(obj, "table", None), "name", None)
    name = getattr(obj, "name", None) or "(unnamed)"
    parts = [p for p in (schema, table, name) if p]
    return ".".join(parts)


def describe(diff: Any) -> str:
    """One line for an Alembic diff tuple (or a list of column modifications)."""
    if isinstance(diff, list):
        return "; ".join(describe(d) for d in diff)
    kind = diff[0]
    if kind in ("add_table", "remove_table"):
        return f"{kind.replace('_', ' ')} {_name(diff[1])}"
    if kind in ("add_column", "remove_column"):
        schema, table, column = diff[1], diff[2], diff[3]
        where = ".".join(p for p in (schema, table) if p)
        return f"{kind.replace('_', ' ')} {where}.{column.name}"
    if kind.startswith("modify_"):
        schema, table, column = diff[1], diff[2], diff[3]
        where = ".".join(p for p in (schema, table, column) if p)
        what = kind.removeprefix("modify_").replace("_", " ")
        return f"modify {what} of {where}: {diff[-2]!r} -> {diff[-1]!r}"
    if kind in ("add_fk", "remove_fk"):
        fk = diff[1]
        return f"{kind.replace('_', ' ')} {fk.name or ''} on {_name(fk.parent)}".replace("  ", " ")
    if kind in ("add_enum_type", "remove_enum_type", "add_sequence", "remove_sequence"):
        return f"{kind.replace('_', ' ')} {'.'.join(diff[1])}"
    return f"{kind.replace('_', ' ')} {_name(diff[1])}"


# --- SQL ------------------------------------------------------------------------------------


def _sql_name(schema: str | None, name: str, what: str) -> str:
    """``"schema"."name"``, or just ``"name"`` when the object follows the pinned search_path
    (models without a schema: the revision then works for any schema, e.g. tenants)."""
    if schema is None:
        return identifiers.quote(name, what)
    return identifiers.quote(schema) + "." + identifiers.quote(name, what)


def _literal(text: str) -> str:
    # standard_conforming_strings is on (the default since PostgreSQL 9.1): only ' needs doubling
    return "'" + text.replace("'", "''") + "'"


_PG = postgresql.dialect()  # type: ignore[no-untyped-call]


class CreateEnumTypeOp(ops.ExecuteSQLOp):
    """``CREATE TYPE ... AS ENUM`` rendered as ``op.execute``; a diff of its own for ``check``."""

    def __init__(self, key: Key, sql_schema: str | None, labels: Iterable[str]) -> None:
        self.key, self.sql_schema, self.labels = key, sql_schema, list(labels)
        name = _sql_name(sql_schema, key[1], "type name")
        values = ", ".join(_literal(v) for v in self.labels)
        super().__init__(f"CREATE TYPE {name} AS ENUM ({values})")

    def reverse(self) -> DropEnumTypeOp:
        return DropEnumTypeOp(self.key, self.sql_schema, self.labels)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("add_enum_type", self.key)


class DropEnumTypeOp(ops.ExecuteSQLOp):
    """``DROP TYPE IF EXISTS``, no CASCADE: a type something else still uses stops the run."""

    def __init__(self, key: Key, sql_schema: str | None, labels: Iterable[str] = ()) -> None:
        self.key, self.sql_schema, self.labels = key, sql_schema, list(labels)
        super().__init__("DROP TYPE IF EXISTS " + _sql_name(sql_schema, key[1], "type name"))

    def reverse(self) -> CreateEnumTypeOp:
        return CreateEnumTypeOp(self.key, self.sql_schema, self.labels)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("remove_enum_type", self.key)


def _sequence_schema(seq: sa.Sequence) -> str | None:
    """Where a sequence is created: its own schema, else its column's table's schema."""
    if seq.schema is not None:
        return seq.schema
    column = getattr(seq, "column", None)
    table = getattr(column, "table", None)
    return getattr(table, "schema", None)


class CreateSequenceOp(ops.ExecuteSQLOp):
    def __init__(self, key: Key, sequence: sa.Sequence) -> None:
        self.key, self.sequence = key, sequence
        sql = "CREATE SEQUENCE " + _sql_name(
            _sequence_schema(sequence), sequence.name, "sequence name"
        )
        if sequence.data_type is not None:
            sql += " AS " + _PG.type_compiler_instance.process(sequence.data_type)
        options = _PG.ddl_compiler(_PG, None).get_identity_options(sequence)  # type: ignore[arg-type]
        super().__init__(sql + (" " + options if options else ""))

    def reverse(self) -> DropSequenceOp:
        return DropSequenceOp(self.key, self.sequence)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("add_sequence", self.key)


class DropSequenceOp(ops.ExecuteSQLOp):
    def __init__(self, key: Key, sequence: sa.Sequence) -> None:
        self.key, self.sequence = key, sequence
        name = _sql_name(_sequence_schema(sequence), sequence.name, "sequence name")
        super().__init__("DROP SEQUENCE " + name)

    def reverse(self) -> CreateSequenceOp:
        return CreateSequenceOp(self.key, self.sequence)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("remove_sequence", self.key)


# --- sequences: a comparator plugin ---------------------------------------------------------

_SEQUENCES = sa.text(
    """
    SELECT c.relname, format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement,
           s.seqmin, s.seqmax, s.seqcache, s.seqcycle
    FROM pg_catalog.pg_sequence s
    JOIN pg_catalog.pg_class c ON c.oid = s.seqrelid
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = :schema
      AND NOT EXISTS (  -- owned by a SERIAL (a) or IDENTITY (i) column
        SELECT 1 FROM pg_catalog.pg_depend d
        WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid
          AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.deptype IN ('a', 'i'))
    """
)

_SEQUENCE_TYPES: dict[str, tuple[type[sa.types.TypeEngine[Any]] | None, int]] = {
    "smallint": (sa.SmallInteger, 2**15 - 1),
    "integer": (sa.Integer, 2**31 - 1),
    "bigint": (None, 2**63 - 1),  # PostgreSQL's default: not spelled out
}


def _database_sequences(
    conn: Connection, schema: str, sql_schema: str | None
) -> dict[str, sa.Sequence]:
    """The schema's free-standing sequences, with only their non-default options (so that a
    downgrade re-creating a dropped one reads like what a user would have written), named in
    SQL with ``sql_schema`` (``None``: through the search_path)."""
    found = {}
    for name, type_name, start, increment, minv, maxv, cache, cycle in conn.execute(
        _SEQUENCES, {"schema": schema}
    ):
        data_type, top = _SEQUENCE_TYPES.get(type_name, (None, 2**63 - 1))
        low, high = (1, top) if increment > 0 else (-top - 1, -1)
        found[name] = sa.Sequence(
            name,
            start=None if start == (low if increment > 0 else high) else start,
            increment=None if increment == 1 else increment,
            minvalue=None if minv == low else minv,
            maxvalue=None if maxv == high else maxv,
            cache=None if cache == 1 else cache,
            cycle=cycle or None,
            schema=sql_schema,
            data_type=data_type() if data_type is not None else None,
        )
    return found


def _model_sequences(metadata: Any, schema: str) -> dict[str, sa.Sequence]:
    found = {}
    for md in metadata if isinstance(metadata, (list, tuple)) else [metadata]:
        if md is None:
            continue
        for seq in md._sequences.values():
            # unqualified sequences are created through the stream's pinned search_path
            if (_sequence_schema(seq) or schema) == schema:
                found[seq.name] = seq
    return found


def _compare_sequences(
    autogen_context: AutogenContext, upgrade_ops: ops.UpgradeOps, schemas: set[str | None]
) -> PriorityDispatchResult:
    schema = _stream_schema(autogen_context.opts, autogen_context.dialect)
    conn = autogen_context.connection
    if schema is None or conn is None:  # enabled outside a stream: not ours to judge
        return PriorityDispatchResult.CONTINUE
    models = [autogen_context.metadata, autogen_context.opts.get(MODELS_OPTION)]
    wanted = _model_sequences(models, schema)
    # the schema is reflected by name, or as None when made the default (schema-less runs)
    present = schema in schemas or (
        None in schemas and autogen_context.dialect.default_schema_name == schema
    )
    sql_schema = None if autogen_context.opts.get(SCHEMALESS_OPTION) else schema
    existing = _database_sequences(conn, schema, sql_schema) if present else {}
    # Runs after the table comparator: creations go first (a table's default may call
    # nextval), removals last (after the tables whose defaults used them are gone).
    upgrade_ops.ops[:0] = [
        CreateSequenceOp((schema, n), wanted[n]) for n in sorted(wanted.keys() - existing.keys())
    ]
    upgrade_ops.ops.extend(
        DropSequenceOp((schema, n), existing[n]) for n in sorted(existing.keys() - wanted.keys())
    )
    return PriorityDispatchResult.CONTINUE


def _plan_for_catalog_lookups(
    autogen_context: AutogenContext, upgrade_ops: ops.UpgradeOps
) -> PriorityDispatchResult:
    """Before any reflection: reflection asks the catalogs about the stream's few objects, but
    hash joins, merge joins and sequential scans read whole catalogs, so each query got slower
    with every other schema in the database. Nested loops over the catalogs' indexes cost the
    same however crowded it is. SET LOCAL: only this read-only transaction."""
    conn = autogen_context.connection
    stream_schema = _stream_schema(autogen_context.opts, autogen_context.dialect)
    if stream_schema is not None and conn is not None:
        database.set_local(
            conn, enable_hashjoin="off", enable_mergejoin="off", enable_seqscan="off"
        )
    return PriorityDispatchResult.CONTINUE


def setup(plugin: Plugin) -> None:
    """Alembic plugin entry: our comparators (a stream opts in, see :func:`options`)."""
    plugin.add_autogenerate_comparator(
        _plan_for_catalog_lookups, "autogenerate", priority=DispatchPriority.FIRST
    )
    plugin.add_autogenerate_comparator(
        _compare_sequences, "schema", qualifier="postgresql", priority=DispatchPriority.LAST
    )
    plugin.add_autogenerate_comparator(
        _compare_nextval_default,
        "column",
        "server_default",
        qualifier="postgresql",
        priority=DispatchPriority.FIRST,
    )


Plugin.setup_plugin_from_module(sys.modules[__name__], PLUGIN_NAME)


# --- enum types: rewriting the generated operations ----------------------------------------

_ENUM_TYPES = sa.text(
    """
    SELECT n.nspname, t.typname FROM pg_catalog.pg_type t
    JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
    WHERE t.typtype = 'e' AND n.nspname = ANY(:schemas)
    """
)

_ENUM_USERS = sa.text(
    """
    SELECT t.typname, cn.nspname, c.relname, a.attname FROM pg_catalog.pg_type t
    JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
    JOIN pg_catalog.pg_attribute a ON a.atttypid IN (t.oid, t.typarray)
    JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
    JOIN pg_catalog.pg_namespace cn ON cn.oid = c.relnamespace
    WHERE t.typtype = 'e' AND n.nspname = :schema AND a.attnum > 0 AND NOT a.attisdropped
    """
)


def _enums(type_: Any) -> Iterator[sa.Enum]:
    """The named native enum types a column type creates (also inside ARRAY / TypeDecorator)."""
    if isinstance(type_, sa.types.TypeDecorator):
        type_ = type_.impl_instance
    if isinstance(type_, sa.ARRAY):
        yield from _enums(type_.item_type)
    elif (
        isinstance(type_, sa.Enum)
        and type_.native_enum
        and type_.name
        and getattr(type_, "create_type", True)
    ):
        yield type_


def _enum_key(enum: sa.Enum, table_schema: str | None, schema: str) -> tuple[Key, str | None]:
    """(where the type lives, the schema to write in SQL). An unqualified type is created by
    the table's unqualified CREATE TYPE, i.e. in the stream's pinned search_path."""
    sql_schema = enum.schema or table_schema
    return (sql_schema or schema, str(enum.name)), sql_schema


def _without_create(type_: Any) -> Any:
    """``type_`` with its enum(s) marked ``create_type=False`` (the type already exists)."""
    if isinstance(type_, sa.ARRAY):
        new = copy.copy(type_)
        new.item_type = _without_create(type_.item_type)
        return new
    if isinstance(type_, sa.Enum) and type_.native_enum and type_.name:
        return postgresql.ENUM(
            *type_.enums, name=type_.name, schema=type_.schema, create_type=False
        )
    return type_


def _columns(op: Any) -> Iterator[tuple[str, sa.Column[Any], str]]:
    """(role, column, table) for every column an operation creates with a table ("table"),
    adds ("add"), gives a new type ("retype") or removes ("remove")."""
    if isinstance(op, ops.CreateTableOp):
        for col in op.columns:
            if isinstance(col, sa.Column):
                yield "table", col, op.table_name
    elif isinstance(op, ops.DropTableOp):
        for col in op._reverse.columns if op._reverse else ():
            if isinstance(col, sa.Column):
                yield "remove", col, op.table_name
    elif isinstance(op, ops.ModifyTableOps):
        for sub in op.ops:
            if isinstance(sub, ops.AddColumnOp):
                yield "add", sub.column, op.table_name
            elif isinstance(sub, ops.DropColumnOp):
                yield "remove", sub.to_column(), op.table_name
            elif isinstance(sub, ops.AlterColumnOp) and sub.modify_type is not None:
                yield "retype", sa.Column(sub.column_name, sub.modify_type), op.table_name
                if sub.existing_type is not None:
                    yield "remove", sa.Column(sub.column_name, sub.existing_type), op.table_name


class _Seen:
    """What a walk over operations learnt about the enum types they use."""

    def __init__(self) -> None:
        self.created: set[Key] = set()
        self.removed: set[Place] = set()
        self.labels: dict[Key, list[str]] = {}
        self.sql_schema: dict[Key, str | None] = {}

    def drop(self, key: Key) -> DropEnumTypeOp:
        return DropEnumTypeOp(key, self.sql_schema[key], self.labels[key])


def _walk(container: ops.OpContainer, existing: set[Key], schema: str) -> _Seen:
    """Make every enum type exist before its first use, rewriting ``container`` in place;
    ``existing`` (the types present before it runs) is updated as it goes."""
    seen = _Seen()
    result: list[Any] = []
    for op in container.ops:
        table_schema = getattr(op, "schema", None)
        for role, col, table in list(_columns(op)):
            if role == "remove":
                whole = isinstance(op, ops.DropTableOp)
                seen.removed.add((table_schema or schema, table, "*" if whole else col.name))
            for enum in _enums(col.type):
                key, sql_schema = _enum_key(enum, table_schema, schema)
                seen.labels.setdefault(key, list(enum.enums))
                seen.sql_schema.setdefault(key, sql_schema)
                if role == "remove":
                    continue
                if key in existing:
                    if role == "table" and key not in seen.created:
                        assert isinstance(op, ops.CreateTableOp)
                        # op.columns holds the model's own Column objects: replace, don't mutate
                        columns = cast("list[Any]", op.columns)
                        at = columns.index(col)
                        columns[at] = replacement = col._copy()
                        replacement.type = _without_create(col.type)
                    continue
                existing.add(key)
                if key[0] != schema:
                    continue  # another stream's schema: that stream owns the type
                seen.created.add(key)
                if role != "table":  # op.create_table creates its types; nothing else does
                    result.append(CreateEnumTypeOp(key, sql_schema, enum.enums))
        result.append(op)
    container.ops[:] = result
    return seen


def _insert_drops(container: ops.OpContainer, drops: list[DropEnumTypeOp], schema: str) -> None:
    """Put each DROP TYPE right after the last operation that uses the type."""
    last: dict[Key, int] = {}
    for i, op in enumerate(container.ops):
        for _role, col, _table in _columns(op):
            for enum in _enums(col.type):
                last[_enum_key(enum, getattr(op, "schema", None), schema)[0]] = i
    end = len(container.ops) - 1
    # insert from the back so earlier positions stay valid
    for drop in sorted(drops, key=lambda d: (last.get(d.key, end), d.key), reverse=True):
        container.ops.insert(last.get(drop.key, end) + 1, drop)


def _model_enum_keys(metadata: Any, schema: str) -> set[Key]:
    keys: set[Key] = set()
    for md in metadata if isinstance(metadata, (list, tuple)) else [metadata]:
        for table in md.tables.values() if md is not None else ():
            for col in table.columns:
                for enum in _enums(col.type):
                    keys.add(_enum_key(enum, table.schema, schema)[0])
    return keys


def _fix_enum_types(
    conn: Connection,
    schema: str,
    metadata: Any,
    upgrade: ops.UpgradeOps,
    downgrade: ops.DowngradeOps,
) -> None:
    modelled = _model_enum_keys(metadata, schema)
    referenced = {schema} | {k[0] for k in modelled}
    for container in (upgrade, downgrade):
        for op in container.ops:
            for _role, col, _table in _columns(op):
                for enum in _enums(col.type):
                    referenced.add(_enum_key(enum, getattr(op, "schema", None), schema)[0][0])
    before: set[Key] = {
        (nsp, name) for nsp, name in conn.execute(_ENUM_TYPES, {"schemas": sorted(referenced)})
    }

    state = set(before)
    up = _walk(upgrade, state, schema)

    # Upgrade: drop a type of ours that this revision stops using, once neither the models
    # nor any column left in the database use it.
    users: dict[str, set[Place]] = {}
    for typname, nsp, rel, att in conn.execute(_ENUM_USERS, {"schema": schema}):
        users.setdefault(typname, set()).add((nsp, rel, att))
    orphaned = [
        key
        for key in sorted(before)
        if key[0] == schema
        and key not in modelled
        and key in up.labels
        and all(
            (s, t, "*") in up.removed or (s, t, c) in up.removed
            for s, t, c in users.get(key[1], ())
        )
    ]
    if orphaned:
        _insert_drops(upgrade, [up.drop(k) for k in orphaned], schema)
        state -= set(orphaned)

    # Downgrade, back to ``before``: recreate what the upgrade dropped (before its first use),
    # drop what the upgrade created (after its last use).
    _walk(downgrade, state, schema)
    if up.created:
        _insert_drops(downgrade, [up.drop(k) for k in sorted(up.created)], schema)


def process_revision_directives(context: MigrationContext, revision: Any, directives: Any) -> None:
    """Alembic hook: complete the generated operations of a stream's revision (see module doc)."""
    schema = _stream_schema(context.opts, context.dialect)
    conn = context.connection
    if schema is None or conn is None:
        return
    metadata = context.opts.get("target_metadata")
    for script in directives:
        pairs = zip(script.upgrade_ops_list, script.downgrade_ops_list, strict=True)
        for upgrade, downgrade in pairs:
            if upgrade.is_empty() and downgrade.is_empty():
                continue
            _fix_enum_types(conn, schema, metadata, upgrade, downgrade)
