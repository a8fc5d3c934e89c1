"""The Alembic environment of a stream, run in-process for one (stream, schema, connection).

Every stream's ``env.py`` calls :func:`run_env`, so plain ``alembic`` on a stream folder and
alembic-schemas behave the same. For each schema the run:

* holds one transaction for its revisions and its version row;
* pins ``search_path`` to the schema (nothing resolves through ``public``) and sets timeouts;
* takes a transaction-scoped advisory lock on (stream, schema), so concurrent runs serialise;
* creates the schema (quoted, optional owner) before the first migration;
* keeps the version table inside the schema, and scopes autogenerate to that schema only.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection

from . import database, identifiers
from .config import TABLE_PRIVILEGES, Grants, Project, load_project
from .errors import ConfigError
from .streams import PROJECT_KEY, SCHEMA_KEY, SCRATCH_KEY, STREAM_KEY, Stream

_LOCK_NAMESPACE = zlib.crc32(b"alembic_schemas") - 2**31


def lock_key(stream: str, schema: str) -> int:
    """A stable signed 32-bit key for the (stream, schema) advisory lock."""
    return zlib.crc32(f"{stream}\x00{schema}".encode()) - 2**31


def lock_args(stream: str, schema: str) -> tuple[int, int]:
    """The two-key advisory lock of (stream, schema)."""
    return _LOCK_NAMESPACE, lock_key(stream, schema)


def lock(conn: Connection, stream: str, schema: str) -> None:
    """Wait (up to lock_timeout) for the transaction-scoped lock on (stream, schema)."""
    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(*lock_args(stream, schema))))


def wait_lock(conn: Connection, stream: str, schema: str, lock_timeout: str) -> None:
    """Wait for the (stream, schema) lock as long as another run holds it, then restore
    ``lock_timeout``. Only migration runs queue behind this lock, never an application
    query, so lock_timeout need not bound it (statement_timeout still does); bounding it
    made a concurrent run fail whenever the other one took longer than the timeout."""
    database.set_local(conn, lock_timeout="0")
    lock(conn, stream, schema)
    database.set_local(conn, lock_timeout=lock_timeout)


def try_lock(conn: Connection, stream: str, schema: str) -> bool:
    return bool(
        conn.scalar(sa.select(sa.func.pg_try_advisory_xact_lock(*lock_args(stream, schema))))
    )


def create_schema_sql(schema: str, owner: str | None = None, grants: Grants = ()) -> str:
    """``CREATE SCHEMA IF NOT EXISTS``, then the stream's grants: one script, one round trip."""
    sql = "CREATE SCHEMA IF NOT EXISTS " + identifiers.quote(schema)
    if owner:
        sql += " AUTHORIZATION " + identifiers.quote_role(owner)
    return ";\n".join([sql, *grants_sql(schema, grants)])


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


def prepare(conn: Connection, project: Project, stream: Stream, schema: str) -> None:
    """Inside the schema's transaction: timeouts, lock, the schema itself, then search_path.

    The schema is not named before the lock is held: resolving a search_path naming a schema
    that does not exist yet leaves a negative catalog-cache entry that waiting on an advisory
    lock does not refresh, so CREATE SCHEMA IF NOT EXISTS would miss the schema a concurrent
    run just committed and fail on pg_namespace's unique index."""
    database.set_local(
        conn, lock_timeout=project.lock_timeout, statement_timeout=project.statement_timeout
    )
    wait_lock(conn, stream.name, schema, project.lock_timeout)
    database.run_sql(conn, create_schema_sql(schema, stream.config.owner, stream.config.grants))
    database.set_local(conn, search_path=(schema,))


def prepare_read_only(conn: Connection, project: Project) -> None:
    """For autogenerate and check: timeouts only. search_path stays pg_catalog so that
    reflection names every schema explicitly."""
    database.set_local(
        conn, lock_timeout=project.lock_timeout, statement_timeout=project.statement_timeout
    )


def include_name_for(schema: str) -> Any:
    """Reflect only ``schema``: runs before reflection, unlike include_object."""

    def include_name(name: str | None, type_: str, parent_names: dict[str, Any]) -> bool:
        if type_ == "schema":
            return name == schema
        return True

    return include_name


def include_object_for(schema: str) -> Any:
    """Compare only the metadata tables of ``schema``; others are references, not targets."""

    def include_object(
        obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
    ) -> bool:
        if type_ == "table":
            return bool(obj.schema == schema)
        return True

    return include_object


def context_options(stream: Stream, schema: str) -> dict[str, Any]:
    """``context.configure`` options shared by migrations, autogenerate and check."""
    opts: dict[str, Any] = dict(
        version_table=stream.version_table,
        version_table_schema=schema,
        include_schemas=True,
        include_name=include_name_for(schema),
        include_object=include_object_for(schema),
        compare_type=True,
        compare_server_default=True,
    )
    if stream.metadata is not None:
        opts["target_metadata"] = stream.target_metadata(schema)
    from . import autogenerate  # late import: autogenerate imports this module

    opts.update(autogenerate.options(schema, stream.metadata))  # enum types, sequences
    return opts


def schemaless_options(stream: Stream) -> dict[str, Any]:
    """Options for autogenerating a tenant stream against a scratch schema that is made the
    connection's default schema: Alembic then reflects it as ``schema=None`` and renders
    every op without a schema, so the revision applies to any tenant."""

    def include_object(obj: Any, name: str | None, type_: str, reflected: bool, other: Any) -> bool:
        # Tables of named schemas (e.g. shared.plan referenced by a FK) are not ours to emit.
        return not (type_ == "table" and obj.schema is not None)

    opts: dict[str, Any] = dict(
        version_table=stream.version_table,
        version_table_schema=None,
        include_schemas=False,
        include_object=include_object,
        target_metadata=stream.require_metadata(),
        compare_type=True,
        compare_server_default=True,
    )
    from . import autogenerate  # late import: autogenerate imports this module

    # enum types and sequences, named without a schema like everything else in the file
    opts.update(autogenerate.options(None, stream.metadata, schemaless=True))
    return opts


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


def _is_revision_run(env: EnvironmentContext) -> bool:
    """True for runs that must not change the database: autogenerate/check (a revision
    context) and reads such as plain ``alembic current`` (no destination revision)."""
    opts = env.context_opts
    return "revision_context" in opts or "destination_rev" not in opts


def run_in_context(env: EnvironmentContext, stream: Stream, schema: str, conn: Connection) -> None:
    """Configure ``env`` for (stream, schema) on ``conn`` and run it in one transaction
    (which an ``autocommit_block`` splits in two: see :mod:`.autocommit`)."""
    from . import autocommit  # late import: autocommit imports this module

    project = stream.project
    read_only = _is_revision_run(env)
    own = not conn.in_transaction()
    if own:
        conn.begin()
    try:
        if read_only and (env.config.attributes.get(SCRATCH_KEY) or stream.is_tenant):
            # Tenant autogenerate/check, also from plain `alembic -x tenant=T`: compare
            # schema-less, so no tenant name is rendered into a revision file.
            prepare_read_only(conn, project)
            with as_default_schema(conn, schema):
                env.configure(connection=conn, dont_mutate=True, **schemaless_options(stream))
                with env.begin_transaction():
                    env.run_migrations()
        else:
            if read_only:
                prepare_read_only(conn, project)
            else:
                prepare(conn, project, stream, schema)
            if stream.is_tenant and not read_only:
                # Ops and op.get_bind() queries naming no schema land in the tenant.
                conn.execution_options(schema_translate_map={None: schema})
            env.configure(connection=conn, dont_mutate=read_only, **context_options(stream, schema))
            # A scratch schema lives in a transaction that is rolled back: nothing may commit.
            scratch = bool(env.config.attributes.get(SCRATCH_KEY))
            hook = autocommit.install(env.get_context(), conn, stream, schema, commit=not scratch)
            try:
                with env.begin_transaction():
                    env.run_migrations()
            except BaseException as exc:
                hook.explain(exc)
                raise
            finally:
                hook.remove()
                if stream.is_tenant and not read_only:
                    conn.execution_options(schema_translate_map=None)
    except BaseException:
        if own and conn.in_transaction():
            conn.rollback()
        raise
    if own and conn.in_transaction():
        (conn.rollback if read_only else conn.commit)()


def refuse_offline_tabs(stream: Stream, schema: str) -> None:
    """``--sql``: Alembic's offline output turns every tab into four spaces, so a name with a
    tab would be written as another name. Such names are refused before any output."""
    names = [("schema name", schema), ("version table name", stream.version_table)]
    names += [("owner role", stream.config.owner or "")]
    names += [("grant role", role) for role, _ in stream.config.grants]
    for what, name in names:
        if "\t" in name:
            raise identifiers.InvalidIdentifier(
                f"invalid {what} {name!r} for --sql: Alembic's offline output turns tabs "
                "into spaces"
            )


def run_offline(env: EnvironmentContext, stream: Stream, schema: str, url: str) -> None:
    from . import autocommit  # late import: autocommit imports this module

    refuse_offline_tabs(stream, schema)
    # paramstyle "named", as in Alembic's own env.py template: a pyformat dialect would write
    # every % (in names and literals) as %%, which psql then runs as written.
    env.configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **context_options(stream, schema),
    )
    with env.begin_transaction():
        create = create_schema_sql(schema, stream.config.owner, stream.config.grants)
        for statement in [create, *offline_settings(stream.project, schema)]:
            write_offline(env.get_context(), statement)
        autocommit.install(env.get_context(), None, stream, schema)
        env.run_migrations()


def write_offline(ctx: MigrationContext, statement: str) -> None:
    """Write ``statement`` to ``--sql`` output as is. ``execute()`` wraps a string in text(),
    which reads ":x" in a quoted name as a bind parameter: tenant ":x" came out as "NULL"."""
    ctx.impl.static_output(statement + ctx.impl.command_terminator)


def offline_settings(project: Project, schema: str) -> list[str]:
    """The SET LOCAL statements that start each schema's transaction in ``--sql`` output."""

    def setting(value: str) -> str:
        # Durations were validated by config against ^\d+(\.\d+)?\s*unit?$ : no quotes possible.
        return value.replace("'", "")

    return [
        "SET LOCAL search_path TO " + identifiers.search_path(schema),
        f"SET LOCAL lock_timeout = '{setting(project.lock_timeout)}'",
        f"SET LOCAL statement_timeout = '{setting(project.statement_timeout)}'",
    ]


def _stream_from_env(env: EnvironmentContext) -> tuple[Stream, str]:
    """Work out (stream, schema) for this run: from the API's attributes, or for plain
    ``alembic`` from the config file found above the script directory."""
    cfg = env.config
    project = cfg.attributes.get(PROJECT_KEY)
    name = cfg.attributes.get(STREAM_KEY)
    script_dir = env.script.dir
    if project is None:
        project = load_project(script_dir)
    if name is None:
        name = next(
            (
                s.name
                for s in project.streams.values()
                if Stream(project, s).path.samefile(script_dir)
            ),
            None,
        )
        if name is None:
            raise ConfigError(f"{script_dir} is not the script directory of any configured stream")
    stream = Stream(project, project.stream(name))
    schema = (
        cfg.attributes.get(SCHEMA_KEY)
        or stream.schema
        or env.get_x_argument(as_dictionary=True).get("tenant")
    )
    if schema is None:
        raise ConfigError(f"stream {stream.name!r} is a tenant stream: pass -x tenant=NAME")
    if stream.is_tenant and cfg.attributes.get(SCHEMA_KEY) is None:
        # Plain `alembic -x tenant=NAME`: the tenant names --tenant takes, so not `public`
        # or a named stream's schema (whose alembic_version this run would write to).
        from .sources import validate_tenant

        validate_tenant(schema, project)
    identifiers.validate(schema)
    return stream, schema


def run_env() -> None:
    """Entry point called by each stream's env.py."""
    from alembic import context

    env: EnvironmentContext = context._proxy  # type: ignore[attr-defined]
    stream, schema = _stream_from_env(env)
    if env.is_offline_mode():
        run_offline(env, stream, schema, database.resolve_url(stream.project))
        return
    given = env.config.attributes.get("connection")
    if isinstance(given, sa.Engine):
        # pytest-alembic (and some Alembic recipes) put an Engine here, not a Connection.
        with database.connect(given) as conn:
            run_in_context(env, stream, schema, conn)
            if conn.in_transaction():
                conn.commit()
        return
    if given is not None:
        run_in_context(env, stream, schema, given)
        return
    engine = database.project_engine(stream.project, poolclass=sa.pool.NullPool)
    try:
        with database.connect(engine) as conn:
            run_in_context(env, stream, schema, conn)
            if conn.in_transaction():
                conn.commit()
    finally:
        engine.dispose()
