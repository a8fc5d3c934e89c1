"""Comparator plugin: sequences (Alembic neither creates nor compares them), ``nextval``
server defaults compared by name, and catalog-friendly plans for reflection."""

from __future__ import annotations

import re
import sys
from typing import Any

import sqlalchemy as sa
from alembic.autogenerate.api import AutogenContext
from alembic.operations import ops
from alembic.runtime.plugins import Plugin
from alembic.util import DispatchPriority, PriorityDispatchResult
from sqlalchemy.engine import Connection

from .. import catalog, database
from ..runtime import compat
from .ops import CreateSequenceOp, DropSequenceOp, sequence_schema
from .options import MODELS_OPTION, SCHEMALESS_OPTION, stream_schema

PLUGIN_NAME = "alembic_schemas.autogenerate"
PLUGINS = ["alembic.autogenerate.*", PLUGIN_NAME]

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
    compared = stream_schema(autogen_context.opts, autogen_context.dialect)
    conn_default, model_default = conn_col.server_default, metadata_col.server_default
    if compared is None or not (
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
    where = metadata_col.table.schema or schema or compared

    def qualified(name: str) -> str:
        return name if "." in name else f"{where}.{name}"

    alter_column_op.existing_server_default = conn_default
    if qualified(db.group(1)) != qualified(model.group(1)):
        alter_column_op.modify_server_default = model_default
    return PriorityDispatchResult.STOP


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
    found: dict[str, sa.Sequence] = {}
    for name, type_name, start, increment, minv, maxv, cache, cycle in catalog.free_sequences(
        conn, schema
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
    found: dict[str, sa.Sequence] = {}
    for md in metadata if isinstance(metadata, (list, tuple)) else [metadata]:
        if md is None:
            continue
        for seq in compat.free_sequences(md):
            # unqualified sequences are created through the stream's pinned search_path
            if (sequence_schema(seq) or schema) == schema:
                found[seq.name] = seq
    return found


def _compare_sequences(
    autogen_context: AutogenContext, upgrade_ops: ops.UpgradeOps, schemas: set[str | None]
) -> PriorityDispatchResult:
    schema = stream_schema(autogen_context.opts, autogen_context.dialect)
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
    if (
        stream_schema(autogen_context.opts, autogen_context.dialect) is not None
        and conn is not None
        # A tenant compared as the default schema is reflected through visibility filters
        # (pg_table_is_visible), which no index serves: forced nested loops over the
        # catalogs made each compare about 10x slower with 1,000 tenants in the database.
        and not autogen_context.opts.get(SCHEMALESS_OPTION)
    ):
        plan = {"enable_hashjoin": "off", "enable_mergejoin": "off", "enable_seqscan": "off"}
        database.set_local(conn, plan)
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
