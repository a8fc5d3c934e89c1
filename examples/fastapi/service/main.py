"""A FastAPI + SQLModel service on an async engine: a shared tenant registry, one schema per
tenant, sign-up that registers and provisions a tenant in one transaction, and every request
routed to its tenant's schema.

    DATABASE_URL=postgresql+asyncpg://app@localhost/app uvicorn service.main:app
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, Header, HTTPException, status
from pydantic import BaseModel, Field
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

import alembic_schemas
from alembic_schemas.routing import use_tenant_async

from .models import SLUG_PATTERN, Hero, HeroCreate, Tenant

HERE = Path(__file__).resolve().parent.parent  # the folder of pyproject.toml
engine = create_async_engine(os.environ["DATABASE_URL"])


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    # Every stream, every tenant, to head, in a worker thread: the loop stays free.
    await alembic_schemas.aio.upgrade(database=engine, config=HERE)
    yield
    await engine.dispose()


app = FastAPI(lifespan=lifespan)


class SignUp(BaseModel):
    slug: str = Field(pattern=SLUG_PATTERN)
    name: str = Field(min_length=1, max_length=200)


@app.post("/signup", status_code=status.HTTP_201_CREATED)
async def sign_up(body: SignUp) -> dict[str, str]:
    """Register the tenant and create its schema at head, in one transaction: either both
    happen or neither does."""
    try:
        async with engine.begin() as conn:
            await conn.execute(Tenant.__table__.insert().values(slug=body.slug, name=body.name))
            await alembic_schemas.aio.create_tenant(body.slug, connection=conn, config=HERE)
    except IntegrityError:
        raise HTTPException(status.HTTP_409_CONFLICT, "tenant exists") from None
    except alembic_schemas.AlembicSchemasError as exc:  # e.g. a name that is never a tenant
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None
    return {"tenant": body.slug}


async def tenant_session(x_tenant: Annotated[str, Header()]) -> AsyncIterator[AsyncSession]:
    """A session whose transaction is routed to the caller's tenant schema (search_path
    pinned with SET LOCAL, then "shared"), for registered tenants only."""
    async with AsyncSession(engine, expire_on_commit=False) as session, session.begin():
        if await session.get(Tenant, x_tenant) is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "unknown tenant")
        await use_tenant_async(session, x_tenant, also=["shared"])
        yield session


TenantSession = Annotated[AsyncSession, Depends(tenant_session)]


@app.post("/heroes", status_code=status.HTTP_201_CREATED)
async def create_hero(hero: HeroCreate, session: TenantSession) -> Hero:
    row = Hero.model_validate(hero)
    session.add(row)
    await session.flush()
    return row


@app.get("/heroes")
async def list_heroes(session: TenantSession) -> list[Hero]:
    return list((await session.exec(select(Hero).order_by(Hero.id))).all())
