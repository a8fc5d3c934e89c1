"""alembic_schemas.routing: an application's queries routed to one tenant's schema for one
transaction, with the name validated and quoted, sync and async."""

from __future__ import annotations

import asyncio

# Imported when the module is collected: the per-test cleanup of sys.modules (conftest) must
# not make a test import a C extension (asyncpg, greenlet) a second time.
import asyncpg  # noqa: F401
import greenlet  # noqa: F401
import pytest
import sqlalchemy as sa
import sqlalchemy.dialects.postgresql.asyncpg  # noqa: F401
from sqlalchemy import orm
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from alembic_schemas import identifiers
from alembic_schemas.errors import ConfigError
from alembic_schemas.routing import translate_map, use_tenant, use_tenant_async

TENANTS = ("t_one", "Acme Corp", 'x"; DROP SCHEMA t_one CASCADE; --')
item = sa.Table("item", sa.MetaData(), sa.Column("name", sa.Text))


@pytest.fixture
def tenant_db(db: sa.Engine) -> sa.Engine:
    with db.connect() as conn:
        for tenant in TENANTS:
            q = identifiers.quote(tenant)
            conn.exec_driver_sql(f"CREATE SCHEMA {q}")
            conn.exec_driver_sql(f"CREATE TABLE {q}.item (name text)")
            conn.exec_driver_sql(f"INSERT INTO {q}.item VALUES ('of {tenant}')")
    return db


def _app_engine(db_url: str) -> sa.Engine:
    return sa.create_engine(make_url(db_url))  # an application's plain engine


def test_use_tenant_routes_one_transaction_of_a_connection_or_session(
    tenant_db: sa.Engine, db_url: str
) -> None:
    app = _app_engine(db_url)
    try:
        with app.connect() as conn:
            for tenant in TENANTS:
                with conn.begin():
                    use_tenant(conn, tenant)
                    assert conn.scalar(sa.select(item.c.name)) == f"of {tenant}"
            # SET LOCAL: the next transaction is back on the connection's own search_path
            assert conn.scalar(sa.text("SHOW search_path")) == '"$user", public'
            conn.rollback()
        with orm.Session(app) as session, session.begin():
            use_tenant(session, "Acme Corp", also=["public"])
            assert session.scalar(sa.select(item.c.name)) == "of Acme Corp"
        with app.connect() as conn:  # the hostile name is one quoted schema, which survived
            assert conn.scalar(sa.text("SELECT count(*) FROM t_one.item")) == 1
    finally:
        app.dispose()


@pytest.mark.parametrize("name", ["pg_x", "public", "", "$user", "x" * 64, "alembic_schemas"])
def test_use_tenant_refuses_names_that_are_never_tenants_before_any_sql(
    name: str, db_url: str
) -> None:
    app = _app_engine(db_url)
    statements: list[str] = []
    sa.event.listen(app, "before_cursor_execute", lambda *a: statements.append(a[2]))
    try:
        with app.connect() as conn, pytest.raises(identifiers.InvalidIdentifier):
            use_tenant(conn, name)
        with pytest.raises(identifiers.InvalidIdentifier):
            translate_map(name)
    finally:
        app.dispose()
    assert not [s for s in statements if "search_path" in s]


def test_use_tenant_refuses_an_autocommit_connection(db_url: str) -> None:
    app = sa.create_engine(make_url(db_url), isolation_level="AUTOCOMMIT")
    try:
        with app.connect() as conn, pytest.raises(ConfigError, match="needs a transaction"):
            use_tenant(conn, "t_one")
    finally:
        app.dispose()


def test_translate_map_routes_schemaless_tables(tenant_db: sa.Engine, db_url: str) -> None:
    app = _app_engine(db_url)
    try:
        with app.connect() as conn:
            for tenant in TENANTS:
                routed = conn.execution_options(schema_translate_map=translate_map(tenant))
                assert routed.scalar(sa.select(item.c.name)) == f"of {tenant}"
    finally:
        app.dispose()


def test_use_tenant_async_routes_an_async_session_and_connection(
    tenant_db: sa.Engine, db_url: str
) -> None:
    async def main() -> list[str | None]:
        engine = create_async_engine(make_url(db_url).set(drivername="postgresql+asyncpg"))
        found: list[str | None] = []
        try:
            for tenant in TENANTS:
                async with AsyncSession(engine) as session, session.begin():
                    await use_tenant_async(session, tenant)
                    found.append(await session.scalar(sa.select(item.c.name)))
            async with engine.begin() as conn:
                await use_tenant_async(conn, "t_one")
                found.append(await conn.scalar(sa.select(item.c.name)))
                with pytest.raises(identifiers.InvalidIdentifier):
                    await use_tenant_async(conn, "pg_x")
        finally:
            await engine.dispose()
        return found

    assert asyncio.run(main()) == [*(f"of {t}" for t in TENANTS), "of t_one"]
