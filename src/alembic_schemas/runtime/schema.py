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

from .. import citus, database, identifiers, locks, versions
from ..config import TABLE_PRIVILEGES, Grants, Project
from ..streams import Stream

Lock = Literal["wait", "try", "held"]
Heads = tuple[str, ...]


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


def _setting(name: str, value: str) -> str:
    # Durations were validated by config against ^\d+(\.\d+)?\s*unit?$ : no quotes possible.
    return f"SET LOCAL {name} = '{value.replace(chr(39), '')}'"


def settings_sql(project: Project) -> list[str]:
    """``SET LOCAL`` of the timeouts every migration transaction starts with."""
    return [_setting(name, value) for name, value in timeouts(project).items()]


def begin(
    conn: Connection,
    stream: Stream,
    schema: str,
    *,
    lock: Lock = "wait",
    create: bool = True,
    read: bool = False,
    restart: bool = False,
) -> Heads | None:
    """Set up the schema's transaction on ``conn`` (already begun): timeouts, the lock, the
    schema (unless ``create`` is false: it exists), the pinned search_path and, with ``read``,
    the version table (created empty if missing) and its rows, which it returns. Two network
    waits: the lock, then the rest. With ``lock="try"``, None (and nothing else done) when
    another run holds the schema. ``restart``: the transaction holds nothing of the caller's
    yet; while another run holds the schema it is rolled back, the wait happens with no
    transaction open (never idle in one), and the set-up starts again in a new one."""
    project = stream.project
    key = locks.args(stream.name, schema)
    on_citus = citus.is_citus(conn)
    first: list[database.Statement] = [(sql, None) for sql in settings_sql(project)]
    if on_citus:  # the SET LOCAL statements reach every worker the transaction uses
        first.insert(0, (citus.PROPAGATE, None))
    if lock == "held":  # this session holds it already (at session level): re-entrant
        first.append(("SELECT pg_catalog.pg_advisory_xact_lock(%s, %s)", key))
    else:
        first.append(("SELECT pg_catalog.pg_try_advisory_xact_lock(%s, %s)", key))
    if create and on_citus:  # whether the schema exists, read under the lock
        first = citus.with_schema_exists(first, schema)
    taken = database.send(conn, first)
    if lock == "try" and not taken[0][0]:
        return None
    if lock == "wait" and not taken[0][0] and restart:
        deadline = locks.deadline(conn)  # statement_timeout, read while SET LOCAL holds
        while not taken[0][0]:
            conn.rollback()
            locks.wait_outside(conn, stream.name, schema, deadline)
            taken = database.send(conn, first)  # another run may have been quicker: again
    elif lock == "wait" and not taken[0][0]:
        locks.wait(conn, stream.name, schema)  # in short tries: see locks.wait
        if create and on_citus:  # whether the schema exists, read again under the lock
            taken = database.send(conn, citus.with_schema_exists([("SELECT 1", None)], schema))
    rest: list[database.Statement] = []
    if create and on_citus:
        rest += citus.create_schema_sql(_create(stream, schema), taken[0][1], stream.is_tenant)
    elif create:
        rest += [(sql, None) for sql in _create(stream, schema)]
    rest.append(("SET LOCAL search_path TO " + identifiers.search_path(schema), None))
    if read:
        rest.append((versions.create_table_sql(stream.version_table, schema), None))
        rest.append((versions.select_sql(stream.version_table, schema), None))
    rows = database.send(conn, rest)
    return tuple(sorted(str(r[0]) for r in rows)) if read else ()


def begin_read(conn: Connection, project: Project) -> None:
    """For autogenerate and check: timeouts only. search_path stays pg_catalog so that
    reflection names every schema explicitly."""
    database.set_local(conn, timeouts(project))


def offline_statements(stream: Stream, schema: str, *, create: bool = True) -> list[str]:
    """:func:`begin` as the text ``--sql`` output starts each schema's transaction with (no
    lock: nothing runs)."""

    statements = _create(stream, schema) if create else []
    statements.append("SET LOCAL search_path TO " + identifiers.search_path(schema))
    return statements + settings_sql(stream.project)


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
