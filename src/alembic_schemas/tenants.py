"""Tenant lifecycle: list, create (provision at head), drop.

An app can provision a tenant on sign-up inside its own request: pass ``connection`` and the
tenant is created in that connection's transaction, committed or rolled back with it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from . import (
    catalog,
    citus,
    command,
    database,
    identifiers,
    locks,
    pooling,
    provision,
    records,
    sources,
    versions,
)
from . import database as db  # for functions whose `database` argument hides the module
from .config import ConfigArg, DatabaseArg, Project, load
from .errors import AlembicSchemasError, ConfigError, MigrationFailed
from .results import SchemaResult
from .runtime import schema as schema_tx
from .sources import names, validate_tenant
from .streams import Stream

__all__ = ["TenantInfo", "create", "drop", "list_tenants", "names"]


@dataclass
class TenantInfo:
    stream: str
    name: str
    current: tuple[str, ...]
    pending: int | None  # None: not known (see error)
    error: str | None = None  # its version table could not be read, or names no revision

    def as_dict(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "tenant": self.name,
            "current": list(self.current),
            "pending": self.pending,
            "error": self.error,
        }


def tenant_stream(project: Any, stream: str | None) -> Stream:
    """The named tenant stream, or the only one when there is exactly one."""
    if stream is not None:
        st = Stream(project, project.stream(stream))
        if not st.is_tenant:
            raise ConfigError(f"stream {stream!r} is not a tenant stream")
        return st
    found = [Stream(project, s) for s in project.streams.values() if s.is_tenant]
    if len(found) != 1:
        raise ConfigError(
            "name the tenant stream with -s STREAM" if found else "no tenant stream configured"
        )
    return found[0]


def list_tenants(
    *, stream: str | None = None, database: DatabaseArg = None, config: ConfigArg = None
) -> list[TenantInfo]:
    """Every tenant of the source with its revision and pending count (a few queries); a
    tenant whose version cannot be read or is unknown to the history carries the reason."""
    project = load(config, database)
    st = tenant_stream(project, stream)
    with db.session(project) as s, s.connect() as conn:
        states = command.states(conn, st, names(st, conn))
    return [TenantInfo(st.name, t.schema, t.current, t.pending, t.error) for t in states]


def create(
    name: str,
    *,
    stream: str | None = None,
    replay: bool = False,
    connection: Connection | None = None,
    database: DatabaseArg = None,
    config: ConfigArg = None,
) -> SchemaResult:
    """Provision tenant ``name`` at head.

    By default from the stream's snapshot (constant time, see :mod:`provision`); with
    ``replay`` by migrating revision by revision. With ``connection``, runs inside that
    connection's current transaction (begun if needed) and leaves committing to the caller.
    """
    started = time.perf_counter()
    project = load(config, database)
    validate_tenant(name, project)
    st = tenant_stream(project, stream)
    if connection is not None:
        if replay:
            raise ConfigError("replay=True cannot run inside a caller's connection")
        citus.check_connection(connection)  # before anything is sent to a worker
        if not connection.in_transaction():
            connection.begin()
        refuse_existing(connection, name)  # before a possibly long snapshot build
        with connection.begin_nested() as trial:
            _would_be_listed(st, connection, name)
            trial.rollback()
        sql = snapshot_for(st, connection.engine)
        return provision_in(connection, st, name, sql, started)
    with db.session(project) as s:
        with s.connect() as conn:
            try:
                refuse_existing(conn, name)
                _would_be_listed(st, conn, name)  # before a possibly long snapshot build
            finally:
                conn.rollback()
        if replay:
            return _create_by_replay(s, st, name)
        try:
            try:
                sql = provision.get_snapshot(
                    st, s.engine, lambda: pooling.refuse_snapshot_build(s, st)
                )
            except MigrationFailed as exc:  # say which tenant it was for
                exc.args = (f"{st.name}/{name}: {exc}",)
                raise
            with db.connect(s.pooled) as conn:  # through the pooler, when direct_url is set
                with conn.begin():
                    provision.provision(st, conn, name, sql, timeouts=schema_tx.timeouts(project))
                    _register(st, conn, name)
                after = versions.current_heads(conn, st.version_table, name)
                conn.rollback()
        except sa.exc.DBAPIError as exc:  # e.g. a read-only database: say which tenant
            raise MigrationFailed(f"{st.name}/{name}: {db.describe(exc)}") from None
    return SchemaResult(st.name, name, True, (), after, time.perf_counter() - started)


def snapshot_for(st: Stream, engine: Engine) -> str:
    """The stream's snapshot, for provisioning in a caller's connection on ``engine``: built
    (once) through ``direct_url`` when the config names one (the caller may be behind a
    transaction pooler), else on the caller's database, not the configured URL (which may be
    absent: no embedded server is started for an app that brings its own connection). An
    async engine's URL is used through psycopg: the build is sync, and may take seconds."""
    direct = db.resolve_direct_url(st.project)
    if direct is None and not engine.dialect.is_async:
        return provision.get_snapshot(st, engine)
    own = db.create_engine(direct or engine.url, poolclass=sa.pool.NullPool)
    try:
        return provision.get_snapshot(st, own)
    finally:
        own.dispose()


def provision_in(
    connection: Connection, st: Stream, name: str, sql: str, started: float
) -> SchemaResult:
    """Provision ``name`` from ``sql`` in the caller's transaction on ``connection`` (sync, or
    the sync face of an AsyncConnection inside ``run_sync``)."""
    if not connection.in_transaction():
        connection.begin()
    with connection.begin_nested():  # refused: the caller's transaction is as it was
        provision.provision(st, connection, name, sql)
        _register(st, connection, name)
    after = versions.current_heads(connection, st.version_table, name)
    return SchemaResult(st.name, name, True, (), after, time.perf_counter() - started)


def _register(st: Stream, conn: Connection, name: str) -> None:
    """In the creating transaction: the stream's ``register`` SQL, then the source must list
    the new tenant (ConfigError otherwise, and the transaction is rolled back)."""
    sources.register(st, conn, name)
    sources.require_listed(st, conn, name)


def _would_be_listed(st: Stream, conn: Connection, name: str) -> None:
    """Ask the source before building anything: the schema and ``register`` in a transaction
    (or savepoint) the caller rolls back."""
    db.run_sql(conn, schema_tx.create_schema_sql(name))
    _register(st, conn, name)


def _create_by_replay(s: db.Session, st: Stream, name: str) -> SchemaResult:
    """Migrate the new tenant revision by revision. The migration commits on its own (an
    autocommit_block commits what precedes it), so ``register`` runs once the tenant is at
    head (the source was asked beforehand)."""
    try:
        report = command.upgrade(streams=[st.name], tenants=[name], jobs=1, config=s.project)
        with s.connect() as conn, conn.begin():
            _register(st, conn, name)
    except (AlembicSchemasError, sa.exc.DBAPIError) as exc:
        # A failed create must not leave a half-provisioned (or unlisted) tenant behind.
        error = exc
        if isinstance(exc, sa.exc.DBAPIError):
            error = MigrationFailed(f"{st.name}/{name}: {db.describe(exc)}")
        with s.connect() as conn, conn.begin():
            if _drop_schema(conn, s.project, st, name):
                error.args = (f"{error} (the partly created schema was dropped)",)
        raise error from (exc if error is not exc else None)
    return report[0]


def refuse_existing(conn: Connection, name: str) -> None:
    if catalog.schema_exists(conn, name):
        raise AlembicSchemasError(f"schema {name!r} already exists")


def drop(
    name: str,
    *,
    stream: str | None = None,
    force: bool = False,
    database: DatabaseArg = None,
    config: ConfigArg = None,
) -> None:
    """Drop tenant ``name`` (its schema, CASCADE). Refuses names the source does not list
    unless ``force``."""
    identifiers.validate(name, "tenant name")
    project = load(config, database)
    st = tenant_stream(project, stream)
    if identifiers.is_never_tenant(name):  # public, the tool's own schemas
        raise ConfigError(f"refusing to drop {name!r}: not a tenant schema")
    # Never a schema the tool itself manages, not even with force.
    owners = {c.schema: c.name for c in project.streams.values() if c.schema}
    if name in owners:
        raise ConfigError(f"refusing to drop {name!r}: it is the schema of stream {owners[name]!r}")
    with db.session(project) as s, s.connect() as conn:
        listed = name in names(st, conn)
        conn.rollback()
        if not listed and not force:
            raise ConfigError(
                f"{name!r} is not a tenant of stream {st.name!r} (use --force to drop it anyway)"
            )
        with conn.begin():
            if not _drop_schema(conn, s.project, st, name):
                raise AlembicSchemasError(f"schema {name!r} does not exist")


def _drop_schema(conn: Connection, project: Project, st: Stream, name: str) -> bool:
    """Drop the tenant's schema and its records under the tenant's lock; False if absent."""
    if citus.is_citus(conn):  # the drop takes its shards' locks on a worker too
        settings = (citus.PROPAGATE, *schema_tx.settings_sql(project))
        database.send(conn, [(sql, None) for sql in settings])
    else:
        database.set_local(conn, {"lock_timeout": project.lock_timeout})
    locks.lock(conn, st.name, name)
    if not catalog.schema_exists(conn, name):
        return False
    database.run_sql(conn, f"DROP SCHEMA {identifiers.quote(name)} CASCADE")
    records.forget(conn, st.name, name)
    return True
