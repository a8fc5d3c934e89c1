"""Enum types: comparing them as the stream created them, and rewriting generated operations
so that each type exists before its first use and is dropped after its last."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any, cast

import sqlalchemy as sa
from alembic.operations import ops
from alembic.runtime.migration import MigrationContext
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

from .. import catalog
from ..runtime import compat
from .ops import CreateEnumTypeOp, DropEnumTypeOp, Key, Place
from .options import stream_schema


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
    schema = stream_schema(context.opts, context.dialect)
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
        for col in op.to_table().columns:
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
                        columns[at] = replacement = compat.copy_column(col)
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
    before: set[Key] = catalog.enum_types(conn, sorted(referenced))

    state = set(before)
    up = _walk(upgrade, state, schema)

    # Upgrade: drop a type of ours that this revision stops using, once neither the models
    # nor any column left in the database use it.
    users: dict[str, set[Place]] = catalog.enum_users(conn, schema)
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
    schema = stream_schema(context.opts, context.dialect)
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
