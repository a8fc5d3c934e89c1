"""``revision --autogenerate``: a named stream compares its schema; a tenant stream compares a
scratch schema brought to head inside a transaction that is rolled back."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.util import CommandError
from sqlalchemy.engine import Engine

from .. import database
from ..errors import AlembicSchemasError
from ..streams import SCHEMA_KEY, SCRATCH_KEY, Stream


def autogenerate(stream: Stream, engine: Engine, options: dict[str, Any]) -> Any:
    """``alembic.command.revision(..., autogenerate=True)`` for the stream."""
    stream.require_metadata()
    if stream.is_tenant:
        return _tenant(stream, engine, options)
    assert stream.schema is not None
    with database.connect(engine) as conn:
        cfg = stream.alembic_config(connection=conn, **{SCHEMA_KEY: stream.schema})
        try:
            return command.revision(cfg, **options)
        except CommandError as exc:
            if "not up to date" not in str(exc):
                raise
            raise AlembicSchemasError(
                f"stream {stream.name!r}: the database is not at head; run "
                f"'alembic-schemas upgrade -s {stream.name}' before autogenerating"
            ) from None


def _tenant(stream: Stream, engine: Engine, options: dict[str, Any]) -> Any:
    """Everything happens in one transaction that is rolled back, so the scratch schema never
    outlives the call, even when autogenerate fails or the process is killed. A dedicated
    engine is used because the scratch schema is made the dialect's default schema."""
    scratch = "alembic_schemas_scratch_" + uuid.uuid4().hex[:16]
    own = database.create_engine(
        engine.url.render_as_string(hide_password=False), poolclass=sa.pool.NullPool
    )
    try:
        with database.connect(own) as conn:
            conn.begin()
            try:
                cfg = stream.alembic_config(
                    connection=conn, **{SCHEMA_KEY: scratch, SCRATCH_KEY: True}
                )
                command.upgrade(cfg, "heads")
                return command.revision(cfg, **options)
            finally:
                conn.rollback()
    finally:
        own.dispose()
