"""Version tables: the table itself, a schema's current heads, bulk reads over many schemas,
and counting what is pending."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from . import catalog, database, identifiers

_CHUNK = 500  # schemas per UNION ALL query of a bulk read

Heads = tuple[str, ...]


def version_table(name: str) -> sa.Table:
    """Alembic's version table, unqualified (it resolves through the pinned search_path)."""
    return sa.Table(
        identifiers.sa_object(name),
        sa.MetaData(),
        sa.Column("version_num", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("version_num", name=identifiers.sa_object(f"{name}_pkc")),
    )


def create_table_sql(table: str, schema: str) -> str:
    """``CREATE TABLE IF NOT EXISTS`` of the version table in ``schema``, as Alembic makes it."""
    pk = identifiers.quote_object(f"{table}_pkc")
    return (
        f"CREATE TABLE IF NOT EXISTS {identifiers.qualified(schema, table)} "
        f"(version_num VARCHAR(32) NOT NULL, CONSTRAINT {pk} PRIMARY KEY (version_num))"
    )


def select_sql(table: str, schema: str) -> str:
    return f"SELECT version_num FROM {identifiers.qualified(schema, table)}"


def current_heads(conn: Connection, table: str, schema: str) -> Heads:
    """The revisions recorded in ``schema``'s version table, sorted (empty: at base)."""
    mc = MigrationContext.configure(
        connection=conn,
        opts={
            "version_table": identifiers.sa_object(table),
            "version_table_schema": identifiers.sa_name(schema),
        },
    )
    return tuple(sorted(mc.get_current_heads()))


def read_versions(
    conn: Connection, schemas: Sequence[str], table: str, *, bulk: bool = False
) -> dict[str, Heads]:
    """Every schema's version rows in a few round trips; a schema without one is at base.

    ``bulk``: end the transaction after each chunk. Reading a table locks it until the
    transaction ends, and 10,000 tenants' locks overflow the server's lock table."""
    found: dict[str, Heads] = {s: () for s in schemas}
    with_table = catalog.schemas_with_table(conn, schemas, table)
    for start in range(0, len(with_table), _CHUNK):
        chunk = with_table[start : start + _CHUNK]
        sql = " UNION ALL ".join(
            f"SELECT {i} AS i, version_num FROM {identifiers.qualified(s, table)}"
            for i, s in enumerate(chunk)
        )
        rows: dict[str, list[str]] = {}
        for i, version in database.run_sql(conn, sql):
            rows.setdefault(chunk[i], []).append(version)
        if bulk:
            conn.rollback()
        for s in chunk:
            found[s] = tuple(sorted(rows.get(s, [])))
    return found


def pending_count(script: ScriptDirectory, current: Sequence[str]) -> int:
    """How many revisions of the history are not yet applied over ``current``."""
    everything = {s.revision for s in script.walk_revisions()}
    if not current:
        return len(everything)
    applied = {s.revision for s in script.revision_map.iterate_revisions(tuple(current), "base")}
    return len(everything - applied)


def resolve(script: ScriptDirectory, revision: str) -> Heads:
    """The revision ids ``revision`` names (``head``/``heads``: every head), sorted."""
    if revision in ("head", "heads"):
        return tuple(sorted(script.get_heads()))
    revs = script.get_revisions(revision)
    return tuple(sorted(r.revision for r in revs if r is not None))
