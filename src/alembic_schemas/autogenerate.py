"""Scoped comparison of a stream's models with one schema, and readable descriptions of diffs."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection

from . import environment
from .streams import Stream


def compare(stream: Stream, schema: str, conn: Connection) -> list[Any]:
    """Alembic's diff list between the stream's models and ``schema`` (only that schema)."""
    environment.prepare_read_only(conn, stream.project)
    opts = environment.context_options(stream, schema)
    metadata = opts.pop("target_metadata", None) or stream.require_metadata()
    mc = MigrationContext.configure(connection=conn, opts=opts)
    return list(compare_metadata(mc, metadata))


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
    return f"{kind.replace('_', ' ')} {_name(diff[1])}"
