"""SQLModel models: the tenant registry in schema "shared", the heroes in every tenant schema."""

from __future__ import annotations

from sqlmodel import Field, SQLModel

# A tenant's slug is its schema's name: the app allows a strict subset of what PostgreSQL
# (and alembic-schemas) would take.
SLUG_PATTERN = r"^[a-z][a-z0-9_]{2,39}$"


class Tenant(SQLModel, table=True):
    __tablename__ = "tenant"
    __table_args__ = {"schema": "shared"}

    slug: str = Field(primary_key=True, max_length=40)
    name: str = Field(max_length=200)


class HeroCreate(SQLModel):
    name: str = Field(max_length=100)
    secret_name: str = Field(max_length=100)


class Hero(HeroCreate, table=True):
    # No schema: each tenant's schema has its own hero table.
    id: int | None = Field(default=None, primary_key=True)
