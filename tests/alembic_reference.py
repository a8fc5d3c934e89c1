"""What plain Alembic makes of a stream's history, to hold alembic-schemas to it.

:func:`plain_alembic` migrates one schema with Alembic alone (the environment in
``tests/fixtures/plain_alembic``, over the stream's own versions folder); :func:`catalog`
reads everything PostgreSQL knows about a schema, rows included, with the schema's own name
taken out, so that two schemas can be compared with ``==``; :func:`assert_same_schema` does
that and names the first part that differs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from alembic_schemas import identifiers

PLAIN_ENV = Path(__file__).parent / "fixtures" / "plain_alembic"


def plain_config(versions: Path, conn: sa.Connection, schema: str, **attributes: Any) -> Config:
    """An Alembic Config for the plain environment over ``versions`` and ``schema``."""
    cfg = Config()
    cfg.set_main_option("script_location", str(PLAIN_ENV))
    cfg.set_main_option("version_locations", str(versions))
    cfg.set_main_option("path_separator", "os")
    cfg.attributes.update(connection=conn, schema=schema, **attributes)
    return cfg


def plain_alembic(
    engine: sa.Engine,
    versions: Path,
    schema: str,
    *,
    tenant: bool,
    metadata: sa.MetaData | None = None,
    target: str = "heads",
    baseline: str | None = None,
    baseline_metadata: sa.MetaData | None = None,
) -> None:
    """Migrate ``schema`` to ``target`` with Alembic alone. With ``baseline``, first the
    cookbook's "create_all + stamp": the tables, types and sequences of
    ``baseline_metadata`` (default ``metadata``) created in the schema, stamped there."""
    with engine.connect() as conn:
        cfg = plain_config(versions, conn, schema, tenant=tenant, metadata=metadata)
        if baseline is not None:
            models = baseline_metadata if baseline_metadata is not None else metadata
            assert models is not None, "a baseline needs models"
            with conn.begin():
                conn.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {identifiers.quote(schema)}")
                conn.exec_driver_sql(f"SET LOCAL search_path TO {identifiers.quote(schema)}")
                models.create_all(conn.execution_options(schema_translate_map={None: schema}))
            conn.execution_options(schema_translate_map=None)
            command.stamp(cfg, baseline)
        command.upgrade(cfg, target)


CATALOG_QUERIES = {
    "schema": """
        SELECT pg_catalog.pg_get_userbyid(n.nspowner), coalesce(n.nspacl::text, '')
        FROM pg_catalog.pg_namespace n WHERE n.nspname = :s
    """,
    "relations": """
        SELECT c.relname, c.relkind, c.relpersistence, coalesce(c.relacl::text, ''),
               coalesce(pg_catalog.obj_description(c.oid, 'pg_class'), '')
        FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = :s ORDER BY c.relname
    """,
    "columns": """
        SELECT c.relname, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod),
               coalesce(pg_catalog.pg_get_expr(d.adbin, d.adrelid), ''), a.attnotnull,
               a.attidentity, a.attgenerated, coalesce(co.collname, ''),
               coalesce(pg_catalog.col_description(c.oid, a.attnum), '')
        FROM pg_catalog.pg_attribute a
        JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        LEFT JOIN pg_catalog.pg_collation co
               ON co.oid = a.attcollation AND a.attcollation <> 100
        WHERE n.nspname = :s AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND a.attnum > 0
          AND NOT a.attisdropped
        ORDER BY c.relname, a.attnum
    """,
    "constraints": """
        SELECT coalesce(c.relname, ''), con.conname, con.contype,
               pg_catalog.pg_get_constraintdef(con.oid), con.condeferrable, con.condeferred,
               con.convalidated
        FROM pg_catalog.pg_constraint con
        JOIN pg_catalog.pg_namespace n ON n.oid = con.connamespace
        LEFT JOIN pg_catalog.pg_class c ON c.oid = con.conrelid
        WHERE n.nspname = :s ORDER BY 1, 2
    """,
    "indexes": """
        SELECT c.relname, pg_catalog.pg_get_indexdef(c.oid), x.indisvalid
        FROM pg_catalog.pg_index x
        JOIN pg_catalog.pg_class c ON c.oid = x.indexrelid
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = :s ORDER BY 1
    """,
    "sequences": """
        SELECT s.sequencename, s.data_type::text, s.start_value, s.increment_by, s.min_value,
               s.max_value, s.cache_size, s.cycle, s.last_value,
               coalesce(owner.relname || '.' || a.attname, ''), coalesce(d.deptype::text, '')
        FROM pg_catalog.pg_sequences s
        JOIN pg_catalog.pg_namespace n ON n.nspname = s.schemaname
        JOIN pg_catalog.pg_class sc ON sc.relname = s.sequencename AND sc.relnamespace = n.oid
        LEFT JOIN pg_catalog.pg_depend d
               ON d.objid = sc.oid AND d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
              AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
              AND d.deptype IN ('a', 'i')
        LEFT JOIN pg_catalog.pg_class owner ON owner.oid = d.refobjid
        LEFT JOIN pg_catalog.pg_attribute a
               ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
        WHERE s.schemaname = :s ORDER BY 1
    """,
    "types": """
        SELECT t.typname, t.typtype,
               coalesce((SELECT pg_catalog.array_agg(e.enumlabel::text ORDER BY e.enumsortorder)
                         FROM pg_catalog.pg_enum e WHERE e.enumtypid = t.oid), '{}')
        FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
        WHERE n.nspname = :s ORDER BY 1
    """,
    "functions": """
        SELECT p.proname, pg_catalog.pg_get_function_identity_arguments(p.oid),
               pg_catalog.md5(p.prosrc)
        FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = :s ORDER BY 1, 2
    """,
    "triggers": """
        SELECT c.relname, t.tgname, pg_catalog.pg_get_triggerdef(t.oid)
        FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = :s AND NOT t.tgisinternal ORDER BY 1, 2
    """,
}


def _reparsed(conn: sa.Connection, schema: str, table: str, definition: str) -> str:
    """A CHECK definition after one more parse: PostgreSQL may move casts around in a CHECK
    it deparses (as any dump and restore shows), the same constraint either way."""
    with conn.begin_nested() as tx:
        like = identifiers.qualified(schema, table)
        conn.exec_driver_sql(f"CREATE TEMP TABLE reference_reparse (LIKE {like})")
        conn.exec_driver_sql(
            f"ALTER TABLE pg_temp.reference_reparse ADD CONSTRAINT reparsed {definition}"
        )
        # by name: LIKE copies NOT NULL, which PostgreSQL 18 lists as constraints too
        text = conn.scalar(
            sa.text(
                "SELECT pg_catalog.pg_get_constraintdef(oid) FROM pg_catalog.pg_constraint"
                " WHERE conrelid = 'pg_temp.reference_reparse'::pg_catalog.regclass"
                " AND conname = 'reparsed'"
            )
        )
        tx.rollback()
    return str(text)


def catalog(engine: sa.Engine, schema: str, volatile: Sequence[str] = ()) -> dict[str, Any]:
    """Everything one schema holds (its rows too), with its own name taken out. Columns
    named in ``volatile`` are left out of the rows (say, a ``now()`` default: it holds when
    the migration ran)."""
    out: dict[str, Any] = {}
    with engine.connect() as autocommit:
        conn = autocommit.execution_options(isolation_level="READ COMMITTED")
        with conn.begin():
            # search_path pg_catalog: every name of the schema comes out qualified, then masked
            conn.exec_driver_sql("SET LOCAL search_path TO pg_catalog")
            own = str(conn.scalar(sa.text("SELECT pg_catalog.quote_ident(:s)"), {"s": schema}))

            def norm(value: Any) -> Any:
                if isinstance(value, str):
                    return value.replace(own + ".", "<schema>.")
                if isinstance(value, list):
                    return [norm(v) for v in value]
                return value

            for part, query in CATALOG_QUERIES.items():
                rows = [tuple(r) for r in conn.execute(sa.text(query), {"s": schema})]
                if part == "constraints":
                    rows = [
                        (*r[:3], _reparsed(conn, schema, r[0], r[3]), *r[4:])
                        if r[2] == "c" and r[0]
                        else r
                        for r in rows
                    ]
                out[part] = [tuple(norm(v) for v in row) for row in rows]
            data: dict[str, list[str]] = {}
            tables = [r[0] for r in out["relations"] if r[1] == "r"]
            for table in tables:
                qualified = identifiers.qualified(schema, table)
                rows_sql = (
                    "SELECT (pg_catalog.to_jsonb(t) - CAST(:volatile AS text[]))::text"
                    f" FROM {qualified} t"
                )
                found = conn.scalars(sa.text(rows_sql), {"volatile": list(volatile)})
                data[table] = sorted(found)
            out["rows"] = data
    return out


def assert_same_schema(
    engine: sa.Engine,
    schema: str,
    reference: str,
    *,
    reference_engine: sa.Engine | None = None,
    volatile: Sequence[str] = (),
) -> None:
    """``schema`` holds exactly what ``reference`` holds (structure and rows); the
    reference may live in another database."""
    got = catalog(engine, schema, volatile)
    want = catalog(reference_engine or engine, reference, volatile)
    for part in want:
        assert got[part] == want[part], f"{part} of {schema!r} differ from {reference!r}"
