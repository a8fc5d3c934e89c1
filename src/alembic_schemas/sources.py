"""Tenant sources: where a tenant stream's list of schemas comes from."""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from . import catalog, database, identifiers, versions
from .config import Project
from .errors import ConfigError, DatabaseError
from .results import Orphan
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


# --- tenants the source does not list ------------------------------------------------------


def orphans(stream: Stream, conn: Connection, claimed: Collection[str]) -> list[Orphan]:
    """Schemas holding the stream's version table, at one of its revisions (or none), that
    neither its source nor anything else (``claimed``) lists; never a named stream's schema,
    ``public`` or the tool's own."""
    named = {s.schema for s in stream.project.streams.values() if s.schema}
    candidates = [
        s
        for s in catalog.schemas_holding_table(conn, stream.version_table)
        if s not in claimed and s not in named and not identifiers.is_never_tenant(s)
    ]
    if not candidates:
        return []
    unreadable: dict[str, str] = {}
    found = versions.read_versions(
        conn, candidates, stream.version_table, bulk=True, errors=unreadable
    )
    conn.rollback()
    known = {sc.revision for sc in stream.script.walk_revisions()}
    # Another history's version table (another tool, another stream) is none of ours.
    return [
        Orphan(stream.name, s, found[s])
        for s in candidates
        if s not in unreadable and set(found[s]) <= known
    ]


def register(stream: Stream, conn: Connection, name: str) -> None:
    """Run the stream's ``register`` SQL for a new tenant, in the caller's transaction."""
    if stream.config.register is not None:
        conn.execute(sa.text(stream.config.register), {"name": name})


def require_listed(stream: Stream, conn: Connection, name: str) -> None:
    """Refuse (ConfigError) a new tenant the source does not list: upgrade, status and
    ``tenants list`` would never see it. Run in the creating transaction, after
    :func:`register`, so that whatever the source reads already holds the tenant."""
    if name in names(stream, conn):
        return
    source = stream.config.tenants
    hint = (
        f'set register = "...(:name)" on stream {stream.name!r} to add it to the source'
        if stream.config.register is None
        else f"the register SQL of stream {stream.name!r} did not make the source list it"
    )
    raise ConfigError(
        f"tenant {name!r} would not be listed by {source} after creation, so upgrade, "
        f"status and tenants list would never see it: {hint}"
    )
