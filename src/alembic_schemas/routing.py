"""Route an application's queries to one tenant's schema, without formatting names into SQL.

Two ways, for sync and async code alike:

* :func:`use_tenant` pins ``search_path`` to the tenant (then ``also``, e.g. ``"shared"``) with
  ``SET LOCAL``, for the current transaction only: a pooled connection never carries one
  tenant's path into the next request, and it works through PgBouncer in transaction pooling.
  Call it first in each transaction; :func:`use_tenant_async` does the same on an
  ``AsyncConnection`` or ``AsyncSession``.
* :func:`translate_map` gives the ``schema_translate_map`` that sends schema-less tables to
  the tenant (``conn.execution_options(schema_translate_map=...)``); tables that name a schema
  keep it.

Tenant names are validated as the tool's own (1-63 bytes, no ``pg_`` prefix, not ``public``,
``$user`` or a schema of the tool) and always quoted, so ``acme"; DROP SCHEMA x; --`` can only
ever name a schema that does not exist. Whether a name is one of *your* tenants is the
application's question: check its registry before routing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import orm
from sqlalchemy.engine import Connection

from . import database, identifiers
from .errors import ConfigError
from .sources import validate_tenant

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

__all__ = ["translate_map", "use_tenant", "use_tenant_async"]


def _search_path(tenant: str, also: Sequence[str]) -> str:
    name = validate_tenant(tenant)
    return identifiers.search_path(name, *(identifiers.validate(s) for s in also))


def use_tenant(target: Connection | orm.Session, tenant: str, *, also: Sequence[str] = ()) -> None:
    """Pin ``search_path`` to ``tenant`` then ``also`` for the current transaction (begun if
    needed) of a Connection or ORM Session. Raises ``InvalidIdentifier`` (a ConfigError) for a
    name that can never be a tenant, and ConfigError on an autocommit connection, where
    ``SET LOCAL`` would silently not apply."""
    path = _search_path(tenant, also)
    conn = target.connection() if isinstance(target, orm.Session) else target
    if getattr(conn.connection.dbapi_connection, "autocommit", False):
        raise ConfigError(
            "use_tenant needs a transaction: on an autocommit connection SET LOCAL does not "
            "last, and the next query would not be routed to the tenant"
        )
    database.run_sql(conn, "SET LOCAL search_path TO " + path)


async def use_tenant_async(
    target: AsyncConnection | AsyncSession, tenant: str, *, also: Sequence[str] = ()
) -> None:
    """:func:`use_tenant` for an ``AsyncConnection`` or ``AsyncSession``."""
    _search_path(tenant, also)  # refused before any round trip

    def pin(sync: Any) -> None:
        use_tenant(sync, tenant, also=also)

    await target.run_sync(pin)


def translate_map(tenant: str) -> dict[str | None, str]:
    """``schema_translate_map`` sending schema-less tables to ``tenant``. The tenant maps to
    itself too: with a map, SQLAlchemy renders schema names again from text, and that keeps
    the quoting a name like ``Acme Corp`` needs."""
    name = identifiers.sa_name(validate_tenant(tenant))
    return {None: name, name: name}
