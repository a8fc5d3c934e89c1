"""Tenant sources: where a tenant stream's list of schemas comes from."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from . import identifiers
from .config import Project
from .errors import ConfigError, DatabaseError
from .streams import Stream, resolve_attr

log = logging.getLogger("alembic_schemas")

KINDS = ("query", "like", "callable")


@dataclass(frozen=True)
class Source:
    kind: str
    value: str

    @classmethod
    def parse(cls, text: str, stream: str = "?") -> Source:
        kind, sep, value = text.partition(":")
        if not sep or kind not in KINDS or not value.strip():
            raise ConfigError(
                f"stream {stream!r}: tenants = {text!r} must be 'query:SQL', "
                "'like:PATTERN' or 'callable:module:function'"
            )
        return cls(kind, value.strip())


def _raw_names(stream: Stream, conn: Connection) -> Iterable[object]:
    assert stream.config.tenants is not None
    source = Source.parse(stream.config.tenants, stream.name)
    try:
        if source.kind == "query":
            return list(conn.execute(sa.text(source.value)).scalars())
        if source.kind == "like":
            query = sa.text(
                "SELECT nspname FROM pg_catalog.pg_namespace WHERE nspname LIKE :pattern "
                "ORDER BY nspname"
            )
            return list(conn.execute(query, {"pattern": source.value}).scalars())
    except sa.exc.DBAPIError as exc:
        if conn.in_transaction():
            conn.rollback()
        from .database import describe

        raise DatabaseError(
            f"stream {stream.name!r}: tenant source failed: {describe(exc)}"
        ) from None
    func = resolve_attr(source.value, stream.project.root, f"tenant source of {stream.name!r}")
    return list(func(conn))


# Schemas that are never tenants, whatever a source returns: system and shared schemas,
# the run record's, and the tool's own scratch/staging schemas.
NOT_TENANTS = {"public", "information_schema", identifiers.TOOL_SCHEMA}
TOOL_PREFIX = identifiers.TOOL_SCHEMA + "_"


def validate_tenant(name: object, project: Project | None = None) -> str:
    """A valid identifier that is not a system, tool or named-stream schema."""
    checked = identifiers.validate(name, "tenant name")
    named = {s.schema for s in project.streams.values() if s.schema} if project else set()
    if checked in NOT_TENANTS or checked.startswith(TOOL_PREFIX) or checked in named:
        raise identifiers.InvalidIdentifier(
            f"invalid tenant name {checked!r}: a system, tool or named-stream schema"
        )
    return checked


def names(stream: Stream, conn: Connection) -> list[str]:
    """The stream's tenant schemas, validated; a bad name is logged and skipped, never run."""
    out: list[str] = []
    seen: set[str] = set()
    for raw in _raw_names(stream, conn):
        try:
            name = validate_tenant(raw, stream.project)
        except identifiers.InvalidIdentifier as exc:
            log.warning("skipping tenant: %s", exc)
            continue
        if name not in seen:
            seen.add(name)
            out.append(name)
    return out
