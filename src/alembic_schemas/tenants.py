"""Tenant lifecycle: list, create (provision at head), drop.

An app can provision a tenant on sign-up inside its own request: pass ``connection`` and the
tenant is created in that connection's transaction, committed or rolled back with it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection

from . import api, database, environment, identifiers, provision
from .errors import AlembicSchemasError, ConfigError
from .executor import read_versions
from .results import SchemaResult
from .sources import names
from .streams import Stream

__all__ = ["TenantInfo", "create", "drop", "list_tenants", "names"]


@dataclass
class TenantInfo:
    stream: str
    name: str
    current: tuple[str, ...]
    pending: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "tenant": self.name,
            "current": list(self.current),
            "pending": self.pending,
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


def list_tenants(*, stream: str | None = None, config: api.ConfigArg = None) -> list[TenantInfo]:
    """Every tenant of the source with its revision and pending count (two queries)."""
    with api.session(config) as s:
        st = tenant_stream(s.project, stream)
        with s.connect() as conn:
            tenants = names(st, conn)
            versions = read_versions(conn, tenants, st.version_table)
        return [
            TenantInfo(st.name, t, versions[t], api.pending_count(st, versions[t])) for t in tenants
        ]


def create(
    name: str,
    *,
    stream: str | None = None,
    replay: bool = False,
    connection: Connection | None = None,
    config: api.ConfigArg = None,
) -> SchemaResult:
    """Provision tenant ``name`` at head.

    By default from the stream's snapshot (constant time, see :mod:`provision`); with
    ``replay`` by migrating revision by revision. With ``connection``, runs inside that
    connection's current transaction (begun if needed) and leaves committing to the caller.
    """
    identifiers.validate(name, "tenant name")
    started = time.perf_counter()
    with api.session(config) as s:
        st = tenant_stream(s.project, stream)
        if replay:
            if connection is not None:
                raise ConfigError("replay=True cannot run inside a caller's connection")
            with s.connect() as conn:
                if provision.schema_exists(conn, name):
                    raise AlembicSchemasError(f"schema {name!r} already exists")
            report = api.upgrade(streams=[st.name], tenants=[name], jobs=1, config=s.project)
            return report[0]
        sql = provision.get_snapshot(st, s.engine)
        if connection is not None:
            if not connection.in_transaction():
                connection.begin()
            provision.provision(st, connection, name, sql)
            after = api.current_heads(connection, st, name)
        else:
            with s.connect() as conn:
                with conn.begin():
                    provision.provision(st, conn, name, sql)
                after = api.current_heads(conn, st, name)
                conn.rollback()
    return SchemaResult(st.name, name, True, (), after, time.perf_counter() - started)


def drop(
    name: str,
    *,
    stream: str | None = None,
    force: bool = False,
    config: api.ConfigArg = None,
) -> None:
    """Drop tenant ``name`` (its schema, CASCADE). Refuses names the source does not list
    unless ``force``."""
    identifiers.validate(name, "tenant name")
    with api.session(config) as s:
        st = tenant_stream(s.project, stream)
        with s.connect() as conn:
            listed = name in names(st, conn)
            conn.rollback()
            if not listed and not force:
                raise ConfigError(
                    f"{name!r} is not a tenant of stream {st.name!r} (use --force to drop it anyway)"
                )
            with conn.begin():
                database.set_local(conn, lock_timeout=s.project.lock_timeout)
                environment.lock(conn, st.name, name)
                if not provision.schema_exists(conn, name):
                    raise AlembicSchemasError(f"schema {name!r} does not exist")
                conn.exec_driver_sql(f"DROP SCHEMA {identifiers.quote(name)} CASCADE")
