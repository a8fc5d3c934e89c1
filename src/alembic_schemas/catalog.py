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


# --- the structure of many schemas at once (fleet drift) -----------------------------------
#
# One query per kind of object returns, for each of many schemas, a hash of every property of
# those objects that Alembic's compare (and this package's comparators) read. SQL that
# PostgreSQL deparses (types, defaults, constraint and index expressions) is deparsed with the
# schema alone on the search_path, exactly as compare reads it: its own objects unqualified,
# others qualified. set_config() is called in the same expression as the deparse (a CASE
# evaluates its condition first) and only where a name can appear; the session's search_path
# is restored when the caller's transaction ends.

_AT = "pg_catalog.set_config('search_path', ns.q, true) IS NOT NULL"


def _row(where: str, row: str) -> str:
    """``row`` as text, deparsed with the schema on the search_path when ``where`` holds."""
    return f"CASE WHEN ({where}) AND {_AT} THEN {row}::text ELSE {row}::text END"


def _kind(select: str, order: str, source: str) -> str:
    """Per schema: md5 of the ordered array of its rows' texts."""
    return f"""
        WITH ns AS (
            SELECT n.oid, n.nspname, pg_catalog.quote_ident(n.nspname) AS q
            FROM pg_catalog.pg_namespace n WHERE n.nspname = ANY(:schemas)
        )
        SELECT ns.nspname, pg_catalog.md5(pg_catalog.array_agg({select} ORDER BY {order})::text)
        FROM ns {source}
        GROUP BY ns.nspname
    """


_DESCRIPTION = (
    "LEFT JOIN pg_catalog.pg_description d ON d.objoid = {oid} AND d.objsubid = {sub}"
    " AND d.classoid = 'pg_catalog.pg_class'::pg_catalog.regclass"
)

_FINGERPRINT: dict[str, str] = {
    # Without USAGE on a schema, reflection (through pg_table_is_visible) sees none of it.
    "schemas": """
        SELECT n.nspname, pg_catalog.has_schema_privilege(n.oid, 'USAGE')::text
        FROM pg_catalog.pg_namespace n WHERE n.nspname = ANY(:schemas)
    """,
    "relations": _kind(
        _row(
            "c.relkind = 'p'",
            """ROW(c.relname, c.relkind, c.relpersistence, c.reloptions,
                CASE WHEN c.relkind = 'p' THEN pg_catalog.pg_get_partkeydef(c.oid) END,
                (SELECT pg_catalog.array_agg(CASE WHEN p.relnamespace = c.relnamespace
                     THEN '=' || p.relname ELSE p.oid::pg_catalog.regclass::text END
                     ORDER BY i.inhseqno)
                   FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class p ON p.oid = i.inhparent
                  WHERE i.inhrelid = c.oid),
                d.description)""",
        ),
        "c.relname",
        "JOIN pg_catalog.pg_class c ON c.relnamespace = ns.oid "
        + _DESCRIPTION.format(oid="c.oid", sub="0")
        + " WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')",
    ),
    # Ordered by attnum: a table's column order, not the numbers (a dropped column leaves a gap).
    "columns": _kind(
        _row(
            "ad.adbin IS NOT NULL OR a.attcollation <> t.typcollation"
            " OR t.typnamespace <> 'pg_catalog'::pg_catalog.regnamespace",
            """ROW(c.relname, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod),
                a.attnotnull, pg_catalog.pg_get_expr(ad.adbin, ad.adrelid), a.attidentity,
                a.attgenerated, NULLIF(a.attcollation, t.typcollation)::pg_catalog.regcollation,
                d.description)""",
        ),
        "c.relname, a.attnum",
        """JOIN pg_catalog.pg_class c ON c.relnamespace = ns.oid
           JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid
           JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
           LEFT JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
           """
        + _DESCRIPTION.format(oid="c.oid", sub="a.attnum")
        + """ WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND a.attnum > 0
              AND NOT a.attisdropped""",
    ),
    # NOT NULL constraints (PostgreSQL 18 lists them) are the columns' attnotnull.
    "constraints": _kind(
        _row(
            "k.contype NOT IN ('p', 'u')",
            """ROW(c.relname, k.conname, k.contype, pg_catalog.pg_get_constraintdef(k.oid),
                k.convalidated)""",
        ),
        "c.relname, k.conname",
        """JOIN pg_catalog.pg_class c ON c.relnamespace = ns.oid
           JOIN pg_catalog.pg_constraint k ON k.conrelid = c.oid
           WHERE k.contype <> 'n'""",
    ),
    # Structurally: pg_get_indexdef always names the schema. Operator classes and collations
    # by oid (the built-in ones are the same everywhere; a schema's own make it stand apart).
    "indexes": _kind(
        _row(
            "x.indexprs IS NOT NULL OR x.indpred IS NOT NULL",
            """ROW(c.relname, i.relname, am.amname, x.indisunique, x.indisprimary,
                x.indnullsnotdistinct, x.indnkeyatts, x.indoption, x.indclass, x.indcollation,
                (SELECT pg_catalog.array_agg(a.attname ORDER BY k.ord)
                   FROM pg_catalog.unnest(x.indkey::pg_catalog.int2[]) WITH ORDINALITY k(num, ord)
                   LEFT JOIN pg_catalog.pg_attribute a
                     ON a.attrelid = x.indrelid AND a.attnum = k.num),
                pg_catalog.pg_get_expr(x.indexprs, x.indrelid),
                pg_catalog.pg_get_expr(x.indpred, x.indrelid),
                i.reloptions, x.indisvalid, x.indisready, d.description)""",
        ),
        "c.relname, i.relname",
        """JOIN pg_catalog.pg_class c ON c.relnamespace = ns.oid
           JOIN pg_catalog.pg_index x ON x.indrelid = c.oid
           JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid
           JOIN pg_catalog.pg_am am ON am.oid = i.relam
           """
        + _DESCRIPTION.format(oid="i.oid", sub="0"),
    ),
    # Every sequence, with its options and the column owning it (SERIAL 'a', IDENTITY 'i').
    "sequences": _kind(
        """ROW(c.relname, pg_catalog.format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement,
            s.seqmin, s.seqmax, s.seqcache, s.seqcycle, oc.relname, oa.attname, dep.deptype)::text""",
        "c.relname",
        """JOIN pg_catalog.pg_class c ON c.relnamespace = ns.oid
           JOIN pg_catalog.pg_sequence s ON s.seqrelid = c.oid
           LEFT JOIN pg_catalog.pg_depend dep
             ON dep.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND dep.objid = c.oid
            AND dep.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
            AND dep.deptype IN ('a', 'i')
           LEFT JOIN pg_catalog.pg_class oc ON oc.oid = dep.refobjid
           LEFT JOIN pg_catalog.pg_attribute oa
             ON oa.attrelid = dep.refobjid AND oa.attnum = dep.refobjsubid""",
    ),
    # Enum labels in order; domains with base type, default and constraints; not the row
    # types of tables nor array types.
    "types": _kind(
        _row(
            "t.typtype = 'd'",
            """ROW(t.typname, t.typtype,
                (SELECT pg_catalog.array_agg(e.enumlabel ORDER BY e.enumsortorder)
                   FROM pg_catalog.pg_enum e WHERE e.enumtypid = t.oid),
                CASE WHEN t.typtype = 'd'
                     THEN pg_catalog.format_type(t.typbasetype, t.typtypmod) END,
                t.typnotnull, pg_catalog.pg_get_expr(t.typdefaultbin, 0),
                -- conrelid = 0 (a domain's): the (conrelid, contypid) index, not a scan per type
                CASE WHEN t.typtype = 'd' THEN (
                    SELECT pg_catalog.array_agg(
                               k.conname || ' ' || pg_catalog.pg_get_constraintdef(k.oid)
                               ORDER BY k.conname)
                      FROM pg_catalog.pg_constraint k
                     WHERE k.conrelid = 0 AND k.contypid = t.oid) END)""",
        ),
        "t.typname",
        """JOIN pg_catalog.pg_type t ON t.typnamespace = ns.oid
           LEFT JOIN pg_catalog.pg_class r ON r.oid = t.typrelid
           WHERE t.typelem = 0 AND t.typtype <> 'p' AND (t.typrelid = 0 OR r.relkind = 'c')""",
    ),
    # Compare runs a default's SQL to compare it with the model's: its functions count.
    "functions": _kind(
        _row(
            "true",
            """ROW(p.proname, pg_catalog.pg_get_function_identity_arguments(p.oid),
                pg_catalog.pg_get_function_result(p.oid), p.prokind, p.provolatile,
                pg_catalog.md5(p.prosrc))""",
        ),
        "p.proname, pg_catalog.pg_get_function_identity_arguments(p.oid)",
        "JOIN pg_catalog.pg_proc p ON p.pronamespace = ns.oid",
    ),
}

FINGERPRINT_KINDS = tuple(_FINGERPRINT)


def fingerprint(conn: Connection, kind: str, schemas: Sequence[str]) -> dict[str, str]:
    """For each of ``schemas`` that has objects of ``kind`` (one of FINGERPRINT_KINDS): a
    hash equal for two schemas exactly when compare reads those objects alike."""
    query = sa.text(_FINGERPRINT[kind])
    return {name: value for name, value in conn.execute(query, {"schemas": list(schemas)})}


def schemas_holding_table(conn: Connection, table: str) -> list[str]:
    """Every schema holding an ordinary table named ``table``, sorted."""
    query = sa.text(
        "SELECT n.nspname FROM pg_catalog.pg_namespace n "
        "JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid "
        "WHERE c.relname = :table AND c.relkind = 'r' ORDER BY n.nspname"
    )
    return list(conn.execute(query, {"table": table}).scalars())


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
