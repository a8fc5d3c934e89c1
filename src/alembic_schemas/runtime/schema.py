"""The one set-up of a schema's migration transaction, used by named streams, tenant fleets,
``autocommit_block`` resumption, provisioning and (as text) ``--sql`` output:

1. ``lock_timeout`` / ``statement_timeout`` for the transaction;
2. the (stream, schema) advisory lock: waited for, tried, or already held;
3. the schema itself (quoted, optional owner) and the stream's grants;
4. ``search_path`` pinned to that schema alone.

The schema is not named before the lock is held: resolving a search_path naming a schema
that does not exist yet leaves a negative catalog-cache entry that waiting on an advisory
lock does not refresh, so CREATE SCHEMA IF NOT EXISTS would miss the schema a concurrent
run just committed and fail on pg_namespace's unique index.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

from sqlalchemy.engine import Connection

from .. import catalog, citus, database, identifiers, locks
from ..config import TABLE_PRIVILEGES, Grants, Project
from ..streams import Stream

Lock = Literal["wait", "try", "held"]


def timeouts(project: Project) -> dict[str, str]:
    """The settings every migration transaction starts with."""
    return {"lock_timeout": project.lock_timeout, "statement_timeout": project.statement_timeout}


def create_statements(schema: str, owner: str | None = None, grants: Grants = ()) -> list[str]:
    """``CREATE SCHEMA IF NOT EXISTS`` (with ``owner``), then the ``grants`` on it."""
    sql = "CREATE SCHEMA IF NOT EXISTS " + identifiers.quote(schema)
    if owner:
        sql += " AUTHORIZATION " + identifiers.quote_role(owner)
    return [sql, *grants_sql(schema, grants)]


def create_schema_sql(schema: str, owner: str | None = None, grants: Grants = ()) -> str:
    """:func:`create_statements` as one script: one round trip."""
    return ";\n".join(create_statements(schema, owner, grants))


def _create(stream: Stream, schema: str) -> list[str]:
    return create_statements(schema, stream.config.owner, stream.config.grants)


def grants_sql(schema: str, grants: Grants) -> list[str]:
    """Give each role of a stream's ``grants`` access to ``schema``: usage, its privileges on
    the tables already there and, through default privileges of the migrating role, on every
    table and sequence later revisions create. Privileges come from config's allow-list."""
    out: list[str] = []
    s = identifiers.quote(schema)
    for role, privileges in grants:
        r = identifiers.quote_role(role)
        tables = ", ".join(p for p in privileges if p in TABLE_PRIVILEGES)
        # nextval() needs USAGE: only roles that may insert get it.
        sequences = "USAGE, SELECT" if "INSERT" in privileges else "SELECT"
        defaults = f"ALTER DEFAULT PRIVILEGES FOR ROLE CURRENT_USER IN SCHEMA {s} GRANT"
        out += [
            f"GRANT USAGE ON SCHEMA {s} TO {r}",
            f"GRANT {tables} ON ALL TABLES IN SCHEMA {s} TO {r}",
            f"GRANT {sequences} ON ALL SEQUENCES IN SCHEMA {s} TO {r}",
            f"{defaults} {tables} ON TABLES TO {r}",
            f"{defaults} {sequences} ON SEQUENCES TO {r}",
        ]
    return out


def begin(
    conn: Connection, stream: Stream, schema: str, *, lock: Lock = "wait", create: bool = True
) -> bool:
    """Set up the schema's transaction on ``conn`` (already begun): timeouts, the lock, the
    schema (unless ``create`` is false: it exists), then the pinned search_path. With
    ``lock="try"``, False (and nothing else done) when another run holds the schema."""
    project = stream.project
    on_citus = citus.is_citus(conn)
    if on_citus:  # SET LOCAL statements from here on reach every worker used
        citus.begin(conn)
        citus.set_local(conn, timeouts(project))
    else:
        database.set_local(conn, timeouts(project))
    if lock == "wait":
        locks.wait(conn, stream.name, schema, project.lock_timeout)
    elif lock == "try":
        if not locks.try_lock(conn, stream.name, schema):
            return False
    else:  # this session holds it already (at session level): re-entrant, no wait
        locks.lock(conn, stream.name, schema)
    if create and on_citus:
        _create_on_citus(conn, stream, schema)
    elif create:
        config = stream.config
        database.run_sql(conn, create_schema_sql(schema, config.owner, config.grants))
    database.set_local(conn, search_path=(schema,))
    return True


def _create_on_citus(conn: Connection, stream: Stream, schema: str) -> None:
    """Only a schema ``pg_namespace`` lacks is created: ``CREATE SCHEMA IF NOT EXISTS`` of an
    existing schema that is not distributed would distribute it. Tenants become distributed
    schemas; a named stream's schema stays on the coordinator."""
    statements = _create(stream, schema)
    if catalog.schema_exists(conn, schema):
        citus.run_each(conn, statements[1:])  # the grants only
    else:
        citus.create_schema(conn, statements, distributed=stream.is_tenant)


def begin_read(conn: Connection, project: Project) -> None:
    """For autogenerate and check: timeouts only. search_path stays pg_catalog so that
    reflection names every schema explicitly."""
    database.set_local(conn, timeouts(project))


def offline_statements(stream: Stream, schema: str, *, create: bool = True) -> list[str]:
    """:func:`begin` as the text ``--sql`` output starts each schema's transaction with (no
    lock: nothing runs)."""

    def setting(value: str) -> str:
        # Durations were validated by config against ^\d+(\.\d+)?\s*unit?$ : no quotes possible.
        return value.replace("'", "")

    statements = _create(stream, schema) if create else []
    statements.append("SET LOCAL search_path TO " + identifiers.search_path(schema))
    statements += [
        f"SET LOCAL {name} = '{setting(value)}'" for name, value in timeouts(stream.project).items()
    ]
    return statements


@contextlib.contextmanager
def as_default_schema(conn: Connection, schema: str) -> Iterator[None]:
    """Make ``schema`` the only schema on the search_path and the dialect's default schema.

    The dialect is per engine: only used where no other thread shares it (a dedicated
    engine, or the one-call session of status/check for a tenant)."""
    database.set_local(conn, search_path=(schema,))
    dialect = conn.dialect
    previous = dialect.default_schema_name
    dialect.default_schema_name = schema
    try:
        yield
    finally:
        dialect.default_schema_name = previous
