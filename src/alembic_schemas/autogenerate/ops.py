"""Operations autogenerate adds for enum types and sequences, rendered as ``op.execute`` with
names quoted by :mod:`alembic_schemas.identifiers`, so revision files need nothing from this
package to run."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from alembic.operations import ops
from sqlalchemy.dialects import postgresql

from .. import identifiers
from ..runtime import compat

Key = tuple[str, str]  # (schema the object lives in, its name)
Place = tuple[str, str, str]  # (schema, table, column); column "*" means the whole table


def sql_name(schema: str | None, name: str, what: str) -> str:
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
        name = sql_name(sql_schema, key[1], "type name")
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
        super().__init__("DROP TYPE IF EXISTS " + sql_name(sql_schema, key[1], "type name"))

    def reverse(self) -> CreateEnumTypeOp:
        return CreateEnumTypeOp(self.key, self.sql_schema, self.labels)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("remove_enum_type", self.key)


def sequence_schema(seq: sa.Sequence) -> str | None:
    """Where a sequence is created: its own schema, else its column's table's schema."""
    if seq.schema is not None:
        return seq.schema
    column = getattr(seq, "column", None)
    table = getattr(column, "table", None)
    return getattr(table, "schema", None)


class CreateSequenceOp(ops.ExecuteSQLOp):
    def __init__(self, key: Key, sequence: sa.Sequence) -> None:
        self.key, self.sequence = key, sequence
        sql = "CREATE SEQUENCE " + sql_name(
            sequence_schema(sequence), sequence.name, "sequence name"
        )
        if sequence.data_type is not None:
            sql += " AS " + _PG.type_compiler_instance.process(sequence.data_type)
        options = compat.identity_options(sequence, _PG)
        super().__init__(sql + (" " + options if options else ""))

    def reverse(self) -> DropSequenceOp:
        return DropSequenceOp(self.key, self.sequence)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("add_sequence", self.key)


class DropSequenceOp(ops.ExecuteSQLOp):
    def __init__(self, key: Key, sequence: sa.Sequence) -> None:
        self.key, self.sequence = key, sequence
        name = sql_name(sequence_schema(sequence), sequence.name, "sequence name")
        super().__init__("DROP SEQUENCE " + name)

    def reverse(self) -> CreateSequenceOp:
        return CreateSequenceOp(self.key, self.sequence)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("remove_sequence", self.key)
