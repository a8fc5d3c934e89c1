"""The keys a stream's run puts in Alembic's context options, read by the hooks here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import sqlalchemy as sa

SCHEMA_OPTION = "alembic_schemas_schema"
"""Key in the migration context's options naming the stream's schema (read by the hooks)."""

MODELS_OPTION = "alembic_schemas_models"
"""The stream's own MetaData: ``target_metadata`` may be a per-schema copy of its tables, and a
copy of tables leaves free-standing sequences behind."""

SCHEMALESS_OPTION = "alembic_schemas_schemaless"
"""True in a tenant stream's schema-less run (see :func:`environment.schemaless_options`): the
schema compared is the connection's default schema, which Alembic reflects and renders with no
name, so the SQL added here names no schema either and applies to any tenant."""


def stream_schema(opts: Mapping[str, Any], dialect: sa.engine.Dialect) -> str | None:
    """The schema this run compares; ``None`` when the run is not a stream's."""
    if opts.get(SCHEMALESS_OPTION):
        # runtime.schema.as_default_schema made the compared schema the dialect's default
        return dialect.default_schema_name
    return cast("str | None", opts.get(SCHEMA_OPTION))
