"""Awaitable entry points for async applications (FastAPI's lifespan, an async sign-up handler).

Migrations always run through psycopg 3, also for ``postgresql+asyncpg`` URLs and for an
``AsyncEngine`` passed as ``database=``. Each function here runs its synchronous twin in a
worker thread (``asyncio.to_thread``), so the event loop keeps serving requests meanwhile::

    @asynccontextmanager
    async def lifespan(app):
        await alembic_schemas.aio.upgrade(database=engine, config="pyproject.toml")
        yield

:func:`create_tenant` with ``connection=`` provisions inside the caller's ``AsyncConnection``
transaction: the snapshot (built once, possibly slow) is fetched in a thread, then the one
provisioning script runs on the connection through ``AsyncConnection.run_sync``.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from . import command, tenants
from .config import ConfigArg, DatabaseArg, load
from .errors import ConfigError
from .results import SchemaResult
from .sources import validate_tenant

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

P = ParamSpec("P")
R = TypeVar("R")


def _in_thread(fn: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """``fn`` as a coroutine function that runs it in a worker thread."""

    @functools.wraps(fn)
    async def run(*args: P.args, **kwargs: P.kwargs) -> R:
        return await asyncio.to_thread(fn, *args, **kwargs)

    run.__doc__ = f"Awaitable :func:`{fn.__module__}.{fn.__name__}` (run in a thread)."
    return run


upgrade = _in_thread(command.upgrade)
downgrade = _in_thread(command.downgrade)
stamp = _in_thread(command.stamp)
current = _in_thread(command.current)
status = _in_thread(command.status)
check = _in_thread(command.check)
verify = _in_thread(command.verify)
list_tenants = _in_thread(tenants.list_tenants)
drop_tenant = _in_thread(tenants.drop)


async def create_tenant(
    name: str,
    *,
    stream: str | None = None,
    replay: bool = False,
    connection: AsyncConnection | None = None,
    database: DatabaseArg = None,
    config: ConfigArg = None,
) -> SchemaResult:
    """Awaitable :func:`alembic_schemas.tenants.create`.

    With ``connection`` (an ``AsyncConnection``, e.g. ``async with engine.begin() as conn``),
    the tenant is created inside that connection's transaction and committed or rolled back
    with it, as with a sync Connection."""
    if connection is None:
        return await asyncio.to_thread(
            tenants.create,
            name,
            stream=stream,
            replay=replay,
            database=database,
            config=config,
        )
    return await _create_in(connection, name, stream, replay, load(config, database))


async def _create_in(
    connection: AsyncConnection, name: str, stream: str | None, replay: bool, project: ConfigArg
) -> SchemaResult:
    started = time.perf_counter()
    project = load(project)
    validate_tenant(name, project)
    st = tenants.tenant_stream(project, stream)
    if replay:
        raise ConfigError("replay=True cannot run inside a caller's connection")
    if not connection.in_transaction():
        await connection.begin()
    await connection.run_sync(lambda conn: tenants.refuse_existing(conn, name))
    sql = await asyncio.to_thread(tenants.snapshot_for, st, connection.engine.sync_engine)
    return await connection.run_sync(
        lambda conn: tenants.provision_in(conn, st, name, sql, started)
    )


__all__ = [
    "check",
    "create_tenant",
    "current",
    "downgrade",
    "drop_tenant",
    "list_tenants",
    "status",
    "stamp",
    "upgrade",
    "verify",
]
