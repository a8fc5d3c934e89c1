"""Two schemas, two metadata objects: each alembic-schemas stream owns one."""

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class MySchemaBase(DeclarativeBase):
    metadata = sa.MetaData(schema="myschema")


class Schema1Base(DeclarativeBase):
    metadata = sa.MetaData(schema="schema1")


class User(MySchemaBase):
    __tablename__ = "user"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(100))


class Contact(Schema1Base):
    __tablename__ = "contact"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(200), unique=True)


class Address(Schema1Base):
    __tablename__ = "address"
    id: Mapped[int] = mapped_column(primary_key=True)
    contact_id: Mapped[int] = mapped_column(sa.ForeignKey("schema1.contact.id"))
    street: Mapped[str] = mapped_column(sa.String(200))


class Mark(MySchemaBase):
    __tablename__ = "marks"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("myschema.user.id"))
    score: Mapped[int]
