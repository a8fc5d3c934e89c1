"""Every query of PostgreSQL's catalogs (``pg_catalog``) the tool makes, in one place."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from . import identifiers


def schema_exists(conn: Connection, name: str) -> bool:
    query = sa.text("SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = :n")
    return conn.scalar(query, {"n": name}) is not None


def existing_schemas(conn: Connection, names: Sequence[str]) -> set[str]:
    """Those of ``names`` that exist."""
    query = sa.text("SELECT nspname FROM pg_catalog.pg_namespace WHERE nspname = ANY(:names)")
    return set(conn.execute(query, {"names": list(names)}).scalars())


def schemas_like(conn: Connection, pattern: str) -> list[str]:
    """Schema names matching a ``LIKE`` pattern (bound as a parameter), sorted."""
    query = sa.text(
        "SELECT nspname FROM pg_catalog.pg_namespace WHERE nspname LIKE :pattern ORDER BY nspname"
    )
    return list(conn.execute(query, {"pattern": pattern}).scalars())


def schemas_with_table(conn: Connection, schemas: Sequence[str], table: str) -> list[str]:
    """Those of ``schemas`` that hold an ordinary table named ``table``."""
    query = sa.text(
        "SELECT n.nspname FROM pg_catalog.pg_namespace n "
        "JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid "
        "WHERE c.relname = :table AND c.relkind = 'r' AND n.nspname = ANY(:schemas)"
    )
    return list(conn.execute(query, {"table": table, "schemas": list(schemas)}).scalars())


def relation_exists(conn: Connection, schema: str, name: str) -> bool:
    query = sa.text(
        "SELECT 1 FROM pg_catalog.pg_class c "
        "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = :schema AND c.relname = :name"
    )
    return conn.scalar(query, {"schema": schema, "name": name}) is not None


def is_empty_schema(conn: Connection, schema: str, version_table: str) -> bool:
    """True when ``schema`` holds nothing but (maybe) its version table: no other relation,
    type of its own or function."""
    query = sa.text(
        "SELECT NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c"
        " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = :schema AND c.relname <> :vt AND c.relname <> :vt || '_pkc')"
        " AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_type t"
        " JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace"
        " WHERE n.nspname = :schema AND t.typrelid = 0 AND t.typcategory <> 'A')"
        " AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_proc p"
        " JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = :schema)"
    )
    return bool(conn.scalar(query, {"schema": schema, "vt": version_table}))


def column_count(conn: Connection, schema: str, columns: Sequence[tuple[str, str]]) -> int:
    """How many of the (table, column) pairs exist in ``schema``."""
    query = sa.text(
        "SELECT count(*) FROM pg_catalog.pg_attribute a"
        " JOIN pg_catalog.pg_class c ON c.oid = a.attrelid"
        " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = :schema AND NOT a.attisdropped"
        " AND (c.relname || '.' || a.attname) = ANY(:names)"
    )
    names = [f"{t}.{c}" for t, c in columns]
    return int(conn.scalar(query, {"schema": schema, "names": names}) or 0)


def invalid_indexes(conn: Connection, schema: str) -> list[str]:
    """Quoted ``"schema"."index"`` of the schema's INVALID indexes."""
    names = conn.scalars(
        sa.text(
            "SELECT c.relname FROM pg_catalog.pg_index i"
            " JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid"
            " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = :schema AND NOT i.indisvalid ORDER BY c.relname"
        ),
        {"schema": schema},
    )
    return [identifiers.qualified(schema, name, "index name") for name in names]


def setting_names(conn: Connection) -> list[str]:
    """Every run-time setting the server knows."""
    return list(conn.scalars(sa.text("SELECT name FROM pg_catalog.pg_settings")))


# Free-standing sequences: not owned by a SERIAL (a) or IDENTITY (i) column.
_SEQUENCES = sa.text(
    """
    SELECT c.relname, format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement,
           s.seqmin, s.seqmax, s.seqcache, s.seqcycle
    FROM pg_catalog.pg_sequence s
    JOIN pg_catalog.pg_class c ON c.oid = s.seqrelid
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = :schema
      AND NOT EXISTS (
        SELECT 1 FROM pg_catalog.pg_depend d
        WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid
          AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.deptype IN ('a', 'i'))
    """
)


def free_sequences(conn: Connection, schema: str) -> list[Any]:
    """(name, type, start, increment, min, max, cache, cycle) of the schema's sequences that
    no column owns."""
    return list(conn.execute(_SEQUENCES, {"schema": schema}))


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


def enum_types(conn: Connection, schemas: Sequence[str]) -> set[tuple[str, str]]:
    """(schema, type name) of the enum types in ``schemas``."""
    return {(nsp, name) for nsp, name in conn.execute(_ENUM_TYPES, {"schemas": list(schemas)})}


def enum_users(conn: Connection, schema: str) -> dict[str, set[tuple[str, str, str]]]:
    """For each enum type of ``schema``: the (schema, table, column) places that use it."""
    users: dict[str, set[tuple[str, str, str]]] = {}
    for typname, nsp, rel, att in conn.execute(_ENUM_USERS, {"schema": schema}):
        users.setdefault(typname, set()).add((nsp, rel, att))
    return users


def extensions(conn: Connection) -> list[tuple[str, str]]:
    """(extension, schema) of every extension installed in the database but plpgsql."""
    query = sa.text(
        "SELECT e.extname, n.nspname FROM pg_catalog.pg_extension e"
        " JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace"
        " WHERE e.extname <> 'plpgsql' ORDER BY 1"
    )
    return [(str(name), str(schema)) for name, schema in conn.execute(query)]


def version_tables(conn: Connection) -> list[tuple[str, str]]:
    """(schema, table) of every table shaped like Alembic's version table (one column,
    ``version_num``), in any user schema, sorted: what ``adopt`` reports."""
    query = sa.text(
        "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c "
        "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relkind IN ('r', 'p') "
        "AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
        "AND n.nspname NOT LIKE 'pg\\_%' "
        "AND (SELECT array_agg(a.attname) FROM pg_catalog.pg_attribute a "
        "     WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) "
        "    = ARRAY['version_num']::name[] "
        "ORDER BY 1, 2"
    )
    return [(str(s), str(t)) for s, t in conn.execute(query)]


def table_names(conn: Connection, schema: str) -> list[str]:
    """The ordinary and partitioned tables of ``schema``, sorted."""
    query = sa.text(
        "SELECT c.relname FROM pg_catalog.pg_class c "
        "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = :schema AND c.relkind IN ('r', 'p') ORDER BY 1"
    )
    return list(conn.execute(query, {"schema": schema}).scalars())
