"""The hand-over from a stream's ``env.py``: every stream's env.py calls :func:`run_env`, so
plain ``alembic`` on a stream folder and alembic-schemas run a schema the same way.

For each schema the run holds one transaction for its revisions and version row, set up by
:func:`alembic_schemas.runtime.schema.begin` (timeouts, lock, the schema, pinned search_path),
keeps the version table inside the schema, and scopes autogenerate to that schema only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from sqlalchemy.engine import Connection

from . import citus, database, identifiers, sources, versions
from .autogenerate import context_options, schemaless_options
from .config import load_project
from .errors import ConfigError
from .runtime import autocommit, compat
from .runtime import schema as schema_tx
from .streams import (
    HEADS_KEY,
    PREPARED_KEY,
    PROJECT_KEY,
    SCHEMA_KEY,
    SCRATCH_KEY,
    SESSION_KEY,
    STREAM_KEY,
    Stream,
)


def _is_revision_run(env: EnvironmentContext) -> bool:
    """True for runs that must not change the database: autogenerate/check (a revision
    context) and reads such as plain ``alembic current`` (no destination revision)."""
    opts = env.context_opts
    return "revision_context" in opts or "destination_rev" not in opts


def run_in_context(env: EnvironmentContext, stream: Stream, schema: str, conn: Connection) -> None:
    """Configure ``env`` for (stream, schema) on ``conn`` and run it in one transaction
    (which an ``autocommit_block`` splits: see :mod:`alembic_schemas.runtime.autocommit`)."""
    project = stream.project
    read_only = _is_revision_run(env)
    scratch = bool(env.config.attributes.get(SCRATCH_KEY))
    own = not conn.in_transaction()
    if own:
        conn.begin()
    try:
        citus.check_connection(conn)  # a connection the caller brought may be a worker's
        if read_only and (scratch or stream.is_tenant):
            # Tenant autogenerate/check, also from plain `alembic -x tenant=T`: compare
            # schema-less, so no tenant name is rendered into a revision file.
            schema_tx.begin_read(conn, project)
            with schema_tx.as_default_schema(conn, schema):
                env.configure(connection=conn, dont_mutate=True, **schemaless_options(stream))
                with env.begin_transaction():
                    env.run_migrations()
        elif read_only:
            schema_tx.begin_read(conn, project)
            env.configure(connection=conn, dont_mutate=True, **context_options(stream, schema))
            with env.begin_transaction():
                env.run_migrations()
        else:
            _migrate(env, stream, schema, conn, commit=not scratch)
    except BaseException:
        if own and conn.in_transaction():
            conn.rollback()
        raise
    if own and conn.in_transaction():
        (conn.rollback if read_only else conn.commit)()


def _migrate(
    env: EnvironmentContext, stream: Stream, schema: str, conn: Connection, *, commit: bool
) -> None:
    """Run revisions on ``schema``: the transaction set up, the version table there before the
    first revision (creating it is not a write of that revision's), an ``autocommit_block``
    that keeps the run's guarantees. A scratch schema (``commit`` false) lives in a
    transaction that is rolled back: nothing may commit. With a :class:`Session` the run
    stays configured for the caller's next revisions (the session undoes it when closed)."""
    attributes = env.config.attributes
    if not attributes.get(PREPARED_KEY):
        schema_tx.begin(conn, stream, schema)
        conn.execute(
            sa.schema.CreateTable(versions.version_table(stream.version_table), if_not_exists=True)
        )
    # Prepared: the executor's set-up (begin with read=True) created it already, in this
    # transaction; a fleet runs this once per schema that has revisions Alembic must run.
    if stream.is_tenant:
        # Ops and op.get_bind() queries naming no schema land in the tenant. The tenant maps to
        # itself too: with a map, SQLAlchemy re-renders every schema name from text, which
        # drops the quoting sa_name asks for (a name ending in a newline was left bare).
        name = identifiers.sa_name(schema)
        conn.execution_options(schema_translate_map={None: name, name: name})
    hook = autocommit.new_hook(conn, stream, schema)

    def undo() -> None:
        hook.remove()
        if stream.is_tenant:
            conn.execution_options(schema_translate_map=None)

    session = attributes.get(SESSION_KEY)
    if isinstance(session, Session):
        session.adopt(env, hook, undo)
    try:
        env.configure(
            connection=conn,
            on_version_apply=hook.after_revision,
            **context_options(stream, schema),
        )
        if stream.is_tenant:  # the map names the tenant: one Table serves every tenant
            compat.share_version_table(env.get_context())
        if isinstance(session, Session):
            compat.defer_version_writes(env.get_context(), session.defer_version_rows)
        known = attributes.get(HEADS_KEY)
        if known is not None:  # one segment of a way the executor replays around
            compat.assume_heads(env.get_context(), known)
        autocommit.install(env.get_context(), hook, commit=commit)
        _run_migrations(env, stream, schema, conn, hook)
    finally:
        if not isinstance(session, Session):
            undo()


def _run_migrations(
    env: EnvironmentContext, stream: Stream, schema: str, conn: Connection, hook: autocommit.Hook
) -> None:
    try:
        with env.begin_transaction():
            env.run_migrations()
    except BaseException as exc:
        hook.explain(exc)
        raise
    if stream.config.reference_tables and citus.is_citus(conn):
        # in the migration's transaction, so tenants never see the table otherwise
        citus.make_reference_tables(
            conn, schema, stream.config.reference_tables, stream.version_table
        )


class Session:
    """One schema's Alembic run, for a caller that runs some of the revisions on the way itself
    (the executor replays the others) in the schema's one transaction, already set up.

    The first :meth:`run` goes through the stream's ``env.py`` as ``alembic upgrade`` does; the
    run it configures (context, hooks, schema translation) is kept, and later calls run their
    revisions on it: ``env.py`` runs once per schema, as with plain Alembic, not once per
    revision. After an ``autocommit_block`` (which committed, and resumed in a new
    transaction) the run is closed, and the next call starts a new one. :meth:`close` undoes
    what the run set on the connection.

    ``config``: the Alembic Config to run with (the stream's, by default), which a caller
    migrating many schemas one after another may pass to each, as Alembic's cookbook loop
    passes one Config to every ``command.upgrade``: its attributes are set for each run.

    The version rows Alembic writes after each revision are left to the caller (see
    :meth:`run`), who sends them before the next statement of the transaction, with the
    statements that follow in one pipeline: a revision Alembic runs costs no query of its own
    beyond those it makes. Not after an ``autocommit_block``: its commit holds the row."""

    def __init__(
        self,
        stream: Stream,
        schema: str,
        conn: Connection,
        destination: str,
        config: Config | None = None,
    ) -> None:
        self.stream, self.schema, self.conn, self.destination = stream, schema, conn, destination
        self.config = config
        self._steps: list[Any] = []
        self._env: EnvironmentContext | None = None
        self._hook: autocommit.Hook | None = None
        self._undo: Callable[[], None] | None = None
        self._deferred = False

    def migrations(self, heads: Any, ctx: Any) -> list[Any]:
        """The steps of the current call (the EnvironmentContext's ``fn``)."""
        steps, self._steps = self._steps, []
        return steps

    def adopt(
        self, env: EnvironmentContext, hook: autocommit.Hook, undo: Callable[[], None]
    ) -> None:
        self._env, self._hook, self._undo = env, hook, undo

    def defer_version_rows(self) -> bool:
        """Whether the version-row write Alembic is about to make is left to the caller."""
        if self._hook is not None and self._hook.unlock is not None:
            return False  # a block committed: the commit after the revision must hold it
        self._deferred = True
        return True

    def run(self, heads: tuple[str, ...], steps: Sequence[Any]) -> bool:
        """Run Alembic's ``steps`` (revisions whose parents are ``heads``, the version rows the
        caller knows are there). True: their version rows were not written, and the caller
        sends the statements Alembic would have (rendered from the same steps and heads)
        before anything else runs in the transaction; False: they were written."""
        self._steps = list(steps)
        self._deferred = False
        try:
            if self._env is None or self._hook is None:
                self._start(heads)
            else:
                compat.assume_heads(self._env.get_context(), heads)
                with self._env:  # alembic.context, for the revisions that use it
                    _run_migrations(self._env, self.stream, self.schema, self.conn, self._hook)
        finally:
            self._steps = []
        if self._hook is not None and self._hook.unlock is not None:
            self.close()  # a block committed: the next revisions start a new run
        return self._deferred

    def _start(self, heads: tuple[str, ...]) -> None:
        attributes: dict[str, Any] = {"connection": self.conn, SCHEMA_KEY: self.schema}
        attributes |= {PREPARED_KEY: True, HEADS_KEY: heads, SESSION_KEY: self}
        if self.config is None:
            cfg = self.stream.alembic_config(**attributes)
        else:
            cfg = self.config
            cfg.attributes.update(attributes)
        script = self.stream.script
        with EnvironmentContext(
            cfg, script, fn=self.migrations, as_sql=False, destination_rev=self.destination
        ):
            script.run_env()

    def close(self) -> None:
        undo, self._undo, self._env, self._hook = self._undo, None, None, None
        if undo is not None:
            undo()


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
        ctx = env.get_context()
        for statement in schema_tx.offline_statements(stream, schema):
            autocommit.write_offline(ctx, statement)
        autocommit.install(ctx, autocommit.new_hook(None, stream, schema))
        env.run_migrations()


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
        sources.validate_tenant(schema, project)
    identifiers.validate(schema)
    return stream, schema


def run_env() -> None:
    """Entry point called by each stream's env.py."""
    env = compat.running_environment()
    stream, schema = _stream_from_env(env)
    if env.is_offline_mode():
        run_offline(env, stream, schema, database.OFFLINE_URL)
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
