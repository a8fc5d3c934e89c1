"""Tenant sources: where a tenant stream's list of schemas comes from."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from . import catalog, database, identifiers
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
            return catalog.schemas_like(conn, source.value)
    except sa.exc.DBAPIError as exc:
        if conn.in_transaction():
            conn.rollback()
        raise DatabaseError(
            f"stream {stream.name!r}: tenant source failed: {database.describe(exc)}"
        ) from None
    func = resolve_attr(source.value, stream.project.root, f"tenant source of {stream.name!r}")
    return list(func(conn))


def validate_tenant(name: object, project: Project | None = None) -> str:
    """A valid identifier that is not a system, tool or named-stream schema."""
    checked = identifiers.validate(name, "tenant name")
    named = {s.schema for s in project.streams.values() if s.schema} if project else set()
    if identifiers.is_never_tenant(checked) or checked in named:
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


def refuse_bad(tenants: Sequence[str] | None, project: Project | None) -> None:
    """Validate ``--tenant`` names up front: refused before any SQL runs, not when the tenant
    stream's turn comes after the named streams were already migrated."""
    for name in tenants or ():
        validate_tenant(name, project)


def targets(
    stream: Stream, conn: Connection, only: Sequence[str] | None = None, *, new: bool = False
) -> list[str]:
    """The schemas a stream applies to: its own, or its tenants (optionally narrowed to
    ``only``). A named tenant must exist or be listed by the stream's source, unless ``new``
    (upgrade creates the tenants it is given): a typo would otherwise read as a tenant at
    base, or be created by downgrade/stamp."""
    if not stream.is_tenant:
        assert stream.schema is not None
        return [stream.schema]
    if not only:
        return names(stream, conn)
    wanted = [validate_tenant(t, stream.project) for t in only]
    if new:
        return wanted
    existing = catalog.existing_schemas(conn, wanted)
    missing = [t for t in wanted if t not in existing]
    listed = set(names(stream, conn)) if missing else set()
    unknown = [t for t in missing if t not in listed]
    if unknown:
        pl = "s" if len(unknown) > 1 else ""
        raise ConfigError(
            f"unknown tenant{pl} {', '.join(map(repr, unknown))} of stream "
            f"{stream.name!r} (no such schema{pl}, and not listed by {stream.config.tenants})"
        )
    return wanted
