"""Comparing a stream's models with one schema, and describing the differences in words."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

from ..runtime import schema as schema_tx
from ..streams import Stream
from .scope import context_options, schemaless_options


def compare(stream: Stream, schema: str, conn: Connection) -> list[Any]:
    """Alembic's diff list between the stream's models and ``schema`` (only that schema)."""
    schema_tx.begin_read(conn, stream.project)
    if stream.is_tenant:
        # The same comparison as a tenant autogenerate (against the scratch schema): the tenant
        # as default schema, the schema-less models as they are. Copying the models into the
        # tenant schema instead makes defaults such as nextval('seq') and enum types differ
        # from what the schema-less revisions created (phantom diffs, or an error when
        # Alembic's server-side default comparison cannot resolve 'seq').
        with schema_tx.as_default_schema(conn, schema):
            opts = schemaless_options(stream)
            metadata = opts.pop("target_metadata")
            mc = MigrationContext.configure(connection=conn, opts=opts)
            return list(compare_metadata(mc, metadata))
    opts = context_options(stream, schema)
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


_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]


def _as_sql(value: Any) -> str:
    """A server default, type or comment as SQL text, never a Python repr (a reflected
    default is a ``DefaultClause`` around a ``TextClause``)."""
    if value is None:
        return "none"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, sa.types.TypeEngine):
        return str(value.compile(dialect=_DIALECT))
    arg = getattr(value, "arg", None)  # DefaultClause
    if arg is None:
        arg = getattr(value, "sqltext", None)  # Computed
    if isinstance(arg, str):
        return "'" + arg.replace("'", "''") + "'"
    if isinstance(arg, sa.sql.ClauseElement):
        return str(arg.compile(dialect=_DIALECT, compile_kwargs={"literal_binds": True}))
    if isinstance(value, sa.sql.ClauseElement):
        return str(value.compile(dialect=_DIALECT, compile_kwargs={"literal_binds": True}))
    return type(value).__name__


def describe(diff: Any, own_schema: str | None = None) -> str:
    """One line for an Alembic diff tuple (or a list of column modifications). Objects in
    ``own_schema`` (a tenant compared as the default schema) are named without it, like
    Alembic names that tenant's tables."""
    if isinstance(diff, list):
        return "; ".join(describe(d, own_schema) for d in diff)
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
        if kind == "modify_nullable":
            before, after = (("nullable" if v else "not null") for v in diff[-2:])
        else:
            before, after = (_as_sql(v) for v in diff[-2:])
        return f"modify {what} of {where}: {before} -> {after}"
    if kind in ("add_fk", "remove_fk"):
        fk = diff[1]
        return f"{kind.replace('_', ' ')} {fk.name or ''} on {_name(fk.parent)}".replace("  ", " ")
    if kind in ("add_enum_type", "remove_enum_type", "add_sequence", "remove_sequence"):
        schema, name = diff[1]
        return f"{kind.replace('_', ' ')} {name if schema == own_schema else f'{schema}.{name}'}"
    return f"{kind.replace('_', ' ')} {_name(diff[1])}"
