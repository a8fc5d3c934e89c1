"""Extensions, seen from a tenant: what to say when a tenant misses what one defines.

An extension belongs to the database, installed into one schema. ``CREATE EXTENSION`` in a
tenant revision puts it into the first tenant migrated (its search_path holds only that
tenant): every other tenant then misses its operator classes, types and functions (and
dropping that tenant drops it). Extensions belong in a named stream's schema (qualify what
they define: ``shared.gin_trgm_ops``) or in ``pg_catalog``; a failure that looks like this
says so, naming where each extension is.
"""

from __future__ import annotations

from sqlalchemy.engine import Connection

from . import catalog
from .errors import ErrorText
from .streams import Stream

# undefined_object (an operator class, a type), undefined_function
MISSING = frozenset({"42704", "42883"})


def hint(conn: Connection, stream: Stream, schema: str, error: str) -> str:
    """``error`` with a hint when a tenant misses something an extension installed elsewhere
    defines; ``error`` unchanged otherwise. Reads the catalog only for such errors."""
    if getattr(error, "sqlstate", None) not in MISSING:
        return error
    named = {c.schema for c in stream.project.streams.values() if c.schema}
    away = [(e, s) for e, s in catalog.extensions(conn) if s not in ("pg_catalog", schema)]
    if not away:
        return error
    where = ", ".join(
        f"{e} is in schema {s}" + ("" if s in named or s == "public" else " (another tenant?)")
        for e, s in away
    )
    return ErrorText.of(
        f"{error} (a tenant's search_path holds only the tenant, and {where}: install"
        " extensions from a named stream (CREATE EXTENSION ... SCHEMA shared) and qualify what"
        " they define (shared.gin_trgm_ops), or into pg_catalog; see the README, Extensions)",
        getattr(error, "statement", None),
        getattr(error, "sqlstate", None),
    )
