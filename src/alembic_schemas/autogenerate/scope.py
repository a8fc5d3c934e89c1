"""What a stream's Alembic context compares: only its schema (filters that run before
reflection), its models, and the hooks of this package."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from .. import identifiers
from ..streams import Stream
from .comparators import PLUGINS
from .enums import compare_type, process_revision_directives
from .options import MODELS_OPTION, SCHEMA_OPTION, SCHEMALESS_OPTION
from .render import render_item


def hooks(
    schema: str | None, models: sa.MetaData | None = None, *, schemaless: bool = False
) -> dict[str, Any]:
    """The ``context.configure`` options that switch on this package for ``schema``, or with
    ``schemaless`` for the connection's default schema, leaving its name out of all SQL."""
    return {
        SCHEMA_OPTION: schema,
        SCHEMALESS_OPTION: schemaless,
        MODELS_OPTION: models,
        "autogenerate_plugins": PLUGINS,
        "process_revision_directives": process_revision_directives,
        "compare_type": compare_type,
        "render_item": render_item,  # imports for types from outside SQLAlchemy (sqlmodel)
    }


def include_name_for(schema: str) -> Any:
    """Reflect only ``schema``: runs before reflection, unlike include_object."""

    def include_name(name: str | None, type_: str, parent_names: dict[str, Any]) -> bool:
        if type_ == "schema":
            return name == schema
        return True

    return include_name


def include_object_for(schema: str) -> Any:
    """Compare only the metadata tables of ``schema``; others are references, not targets."""

    def include_object(
        obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
    ) -> bool:
        if type_ == "table":
            return bool(obj.schema == schema)
        return True

    return include_object


def context_options(stream: Stream, schema: str) -> dict[str, Any]:
    """``context.configure`` options shared by migrations, autogenerate and check."""
    opts: dict[str, Any] = dict(
        version_table=identifiers.sa_object(stream.version_table),
        # SQLAlchemy's rules leave some names bare that PostgreSQL reads otherwise
        version_table_schema=identifiers.sa_name(schema),
        include_schemas=True,
        include_name=include_name_for(schema),
        include_object=include_object_for(schema),
        compare_type=True,
        compare_server_default=True,
    )
    if stream.metadata is not None:
        opts["target_metadata"] = stream.target_metadata(schema)
    opts.update(hooks(schema, stream.metadata))  # enum types, sequences
    return opts


def schemaless_options(stream: Stream) -> dict[str, Any]:
    """Options for autogenerating a tenant stream against a scratch schema that is made the
    connection's default schema: Alembic then reflects it as ``schema=None`` and renders
    every op without a schema, so the revision applies to any tenant."""

    def include_object(obj: Any, name: str | None, type_: str, reflected: bool, other: Any) -> bool:
        # Tables of named schemas (e.g. shared.plan referenced by a FK) are not ours to emit.
        return not (type_ == "table" and obj.schema is not None)

    opts: dict[str, Any] = dict(
        version_table=identifiers.sa_object(stream.version_table),
        version_table_schema=None,
        include_schemas=False,
        include_object=include_object,
        target_metadata=stream.require_metadata(),
        compare_type=True,
        compare_server_default=True,
    )
    # enum types and sequences, named without a schema like everything else in the file
    opts.update(hooks(None, stream.metadata, schemaless=True))
    return opts
