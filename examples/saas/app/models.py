"""A shared schema (plans, tenant registry) and per-tenant tables with no schema."""

import enum

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class SharedBase(DeclarativeBase):
    metadata = sa.MetaData(schema="shared")


class TenantBase(DeclarativeBase):
    # schema=None: the tool places these tables in each tenant's schema.
    metadata = sa.MetaData()


class Plan(SharedBase):
    __tablename__ = "plan"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(50), unique=True)


class Tenant(SharedBase):
    __tablename__ = "tenant"
    schema_name: Mapped[str] = mapped_column(sa.String(63), primary_key=True)
    plan_id: Mapped[int] = mapped_column(sa.ForeignKey("shared.plan.id"))


# The tenant models reference shared.plan; a copy of its Table in the tenant metadata lets
# SQLAlchemy resolve the FK. Tables with a schema are never emitted by the tenant stream.
Plan.__table__.to_metadata(TenantBase.metadata)


class Role(enum.Enum):
    owner = "owner"
    member = "member"


class Account(TenantBase):
    __tablename__ = "account"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(200), unique=True)
    role: Mapped[Role] = mapped_column(sa.Enum(Role, name="account_role"))
    plan_id: Mapped[int] = mapped_column(sa.ForeignKey("shared.plan.id"))


class Project(TenantBase):
    __tablename__ = "project"
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(sa.ForeignKey("account.id"), index=True)
    title: Mapped[str] = mapped_column(sa.String(200))
    created_at: Mapped[sa.DateTime] = mapped_column(
        sa.DateTime(timezone=True), server_default=sa.text("now()")
    )
