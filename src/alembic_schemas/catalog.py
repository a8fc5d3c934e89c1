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


# --- the structure of many schemas at once (fleet drift) -----------------------------------
#
# Each query reads one kind of object of every given schema; rows start with the schema's name.
# Text that PostgreSQL deparses (types, defaults, index and constraint definitions) names the
# schema's own objects qualified: the session's search_path holds only pg_catalog.

_STRUCTURE: dict[str, str] = {
    # Without USAGE on a schema, reflection (through pg_table_is_visible) sees none of it.
    "schemas": """
        SELECT n.nspname, pg_catalog.has_schema_privilege(n.oid, 'USAGE')
        FROM pg_catalog.pg_namespace n WHERE n.nspname = ANY(:schemas)
    """,
    "relations": """
        SELECT n.nspname, c.relname, c.relkind, c.relpersistence,
               array_to_string(c.reloptions, ','),
               CASE WHEN c.relkind = 'p' THEN pg_catalog.pg_get_partkeydef(c.oid) END,
               (SELECT array_agg(i.inhparent::pg_catalog.regclass::text ORDER BY i.inhseqno)
                  FROM pg_catalog.pg_inherits i WHERE i.inhrelid = c.oid)::text,
               d.description
        FROM pg_catalog.pg_namespace n
        JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid
        LEFT JOIN pg_catalog.pg_description d ON d.objoid = c.oid
             AND d.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objsubid = 0
        WHERE n.nspname = ANY(:schemas) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
    """,
    # attnum only orders a table's columns; it is dropped from the fingerprint.
    "columns": """
        SELECT n.nspname, c.relname, a.attnum, a.attname,
               pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_catalog.pg_get_expr(ad.adbin, ad.adrelid), a.attidentity, a.attgenerated,
               CASE WHEN a.attcollation <> t.typcollation
                    THEN a.attcollation::pg_catalog.regcollation::text END,
               d.description
        FROM pg_catalog.pg_namespace n
        JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid
        JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid
        JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
        LEFT JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
        LEFT JOIN pg_catalog.pg_description d ON d.objoid = c.oid
             AND d.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objsubid = a.attnum
        WHERE n.nspname = ANY(:schemas) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
          AND a.attnum > 0 AND NOT a.attisdropped
    """,
    "constraints": """
        SELECT n.nspname, c.relname, k.conname, k.contype,
               pg_catalog.pg_get_constraintdef(k.oid), k.convalidated
        FROM pg_catalog.pg_namespace n
        JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid
        JOIN pg_catalog.pg_constraint k ON k.conrelid = c.oid
        WHERE n.nspname = ANY(:schemas)
    """,
    "indexes": """
        SELECT n.nspname, c.relname, i.relname, pg_catalog.pg_get_indexdef(x.indexrelid),
               x.indisvalid, x.indisready, d.description
        FROM pg_catalog.pg_namespace n
        JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid
        JOIN pg_catalog.pg_index x ON x.indrelid = c.oid
        JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid
        LEFT JOIN pg_catalog.pg_description d ON d.objoid = i.oid
             AND d.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objsubid = 0
        WHERE n.nspname = ANY(:schemas)
    """,
    # Every sequence, with the column that owns it (SERIAL 'a', IDENTITY 'i'), if any.
    "sequences": """
        SELECT n.nspname, c.relname, pg_catalog.format_type(s.seqtypid, NULL), s.seqstart,
               s.seqincrement, s.seqmin, s.seqmax, s.seqcache, s.seqcycle,
               oc.relname, oa.attname, dep.deptype
        FROM pg_catalog.pg_namespace n
        JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid
        JOIN pg_catalog.pg_sequence s ON s.seqrelid = c.oid
        LEFT JOIN pg_catalog.pg_depend dep ON dep.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
             AND dep.objid = c.oid AND dep.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
             AND dep.deptype IN ('a', 'i')
        LEFT JOIN pg_catalog.pg_class oc ON oc.oid = dep.refobjid
        LEFT JOIN pg_catalog.pg_attribute oa ON oa.attrelid = dep.refobjid
             AND oa.attnum = dep.refobjsubid
        WHERE n.nspname = ANY(:schemas)
    """,
    # Enum labels in order, domains with their base type, default and constraints; not the
    # row types of tables nor array types.
    "types": """
        SELECT n.nspname, t.typname, t.typtype,
               (SELECT array_agg(e.enumlabel ORDER BY e.enumsortorder)
                  FROM pg_catalog.pg_enum e WHERE e.enumtypid = t.oid)::text,
               CASE WHEN t.typtype = 'd'
                    THEN pg_catalog.format_type(t.typbasetype, t.typtypmod) END,
               t.typnotnull, t.typdefault,
               (SELECT array_agg(k.conname || ' ' || pg_catalog.pg_get_constraintdef(k.oid)
                                 ORDER BY k.conname)
                  FROM pg_catalog.pg_constraint k WHERE k.contypid = t.oid)::text
        FROM pg_catalog.pg_namespace n
        JOIN pg_catalog.pg_type t ON t.typnamespace = n.oid
        LEFT JOIN pg_catalog.pg_class r ON r.oid = t.typrelid
        WHERE n.nspname = ANY(:schemas) AND t.typelem = 0 AND t.typtype <> 'p'
          AND (t.typrelid = 0 OR r.relkind = 'c')
    """,
}

STRUCTURE_KINDS = tuple(_STRUCTURE)


def structure(conn: Connection, schemas: Sequence[str]) -> dict[str, list[tuple[Any, ...]]]:
    """Rows of each kind of object (:data:`STRUCTURE_KINDS`) in ``schemas``: one query per
    kind, each row starting with its schema's name."""
    params = {"schemas": list(schemas)}
    return {
        kind: [tuple(r) for r in conn.execute(sa.text(sql), params)]
        for kind, sql in _STRUCTURE.items()
    }


def quoted_names(conn: Connection, schemas: Sequence[str]) -> dict[str, str]:
    """Each schema's name as PostgreSQL writes it in deparsed SQL (``quote_ident``)."""
    query = sa.text("SELECT n, pg_catalog.quote_ident(n) FROM unnest(CAST(:schemas AS text[])) n")
    return {name: quoted for name, quoted in conn.execute(query, {"schemas": list(schemas)})}


def schemas_holding_table(conn: Connection, table: str) -> list[str]:
    """Every schema holding an ordinary table named ``table``, sorted."""
    query = sa.text(
        "SELECT n.nspname FROM pg_catalog.pg_namespace n "
        "JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid "
        "WHERE c.relname = :table AND c.relkind = 'r' ORDER BY n.nspname"
    )
    return list(conn.execute(query, {"table": table}).scalars())
