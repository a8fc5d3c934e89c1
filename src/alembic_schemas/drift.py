"""Drift across a fleet in a few queries: tenants with the same structure get the same answer
from Alembic's compare, so it runs once per structure, not once per tenant.

A tenant's *fingerprint* covers everything Alembic's compare (and this package's comparators)
read: tables, columns with type, default, nullability, identity, generation, collation and
comment, constraints, indexes, sequences with their options and owner, enum labels, domains,
functions, and whether the schema can be read at all. It is computed for every tenant at once,
one catalog query per kind of object (:func:`catalog.fingerprint`), two queries at a time.

What compare reads of a tenant depends on its own name only through qualification: with the
tenant alone on the search_path, its own objects are unqualified (``nextval('seq'::regclass)``).
The catalog queries deparse each tenant's SQL that way, so two tenants share a fingerprint
exactly when compare reads them alike; a literal that mentions a tenant's own name (a default
of ``'t_1'``) keeps it apart, as it should. Tenants are grouped by fingerprint and compare runs
on the first tenant of each group.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from . import autogenerate, catalog, database
from .errors import AlembicSchemasError, describe_python_error
from .results import DriftGroup
from .streams import Stream

CHUNK = 10_000  # tenants per catalog query (one scan of each catalog per chunk)
WORKERS = 2  # catalog queries at a time, each on its own connection

Progress = Callable[[str, int, int], None]


def fingerprints(
    schemas: Sequence[str], hashes: Mapping[str, Mapping[str, str]]
) -> dict[str, Hashable]:
    """Each schema's fingerprint from the per-kind hashes (kind -> schema -> hash); a schema
    without objects of a kind has none there, like every other such schema."""
    kinds = sorted(hashes)
    return {s: tuple(hashes[k].get(s) for k in kinds) for s in schemas}


def group(found: Mapping[str, Hashable]) -> list[list[str]]:
    """Schemas with equal fingerprints together, groups and members in ``found``'s order."""
    groups: dict[Hashable, list[str]] = {}
    for schema, fp in found.items():
        groups.setdefault(fp, []).append(schema)
    return list(groups.values())


def group_id(fp: Hashable) -> str:
    """A short stable name for a fingerprint (the same structure: the same id, run to run)."""
    return hashlib.sha256(repr(fp).encode("utf-8")).hexdigest()[:12]


def _chunks(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _hashes(engine: Engine, kind: str, schemas: Sequence[str]) -> tuple[str, dict[str, str]]:
    with database.connect(engine) as conn:
        try:
            return kind, catalog.fingerprint(conn, kind, schemas)
        finally:
            conn.rollback()  # also restores the search_path the query moved


def tenant_fingerprints(
    engine: Engine, schemas: Sequence[str], on_progress: Progress | None = None
) -> dict[str, Hashable]:
    """Fingerprints of many schemas: one query per kind of object and chunk of schemas."""
    jobs = [
        (kind, chunk) for chunk in _chunks(schemas, CHUNK) for kind in catalog.FINGERPRINT_KINDS
    ]
    hashes: dict[str, dict[str, str]] = {kind: {} for kind in catalog.FINGERPRINT_KINDS}
    with ThreadPoolExecutor(WORKERS, thread_name_prefix="alembic-schemas-drift") as pool:
        for n, (kind, found) in enumerate(pool.map(lambda j: _hashes(engine, *j), jobs), 1):
            hashes[kind].update(found)
            if on_progress is not None:
                on_progress("reading structure", n, len(jobs))
    return fingerprints(schemas, hashes)


def compare_one(
    stream: Stream, schema: str, conn: Connection
) -> tuple[list[str] | None, str | None]:
    """Alembic's compare of ``schema`` with the models, described: (differences, None), or
    (None, why it could not be compared). Configuration errors propagate."""
    own = schema if stream.is_tenant else None
    try:
        with conn.begin():
            found = autogenerate.compare(stream, schema, conn)
            return [autogenerate.describe(d, own_schema=own) for d in found], None
    except AlembicSchemasError:
        raise
    except sa.exc.DBAPIError as exc:
        return None, f"could not compare with the models: {database.describe(exc)}"
    except Exception as exc:  # e.g. a model type Alembic cannot compare: this group only
        return None, f"could not compare with the models: {describe_python_error(exc)}"


def fleet_drift(
    stream: Stream,
    conn: Connection,
    schemas: Sequence[str],
    on_progress: Progress | None = None,
) -> list[DriftGroup]:
    """The stream's schemas grouped by structure, each group compared once with the models."""
    groups: list[tuple[str, list[str]]]
    if stream.is_tenant and schemas:
        found = tenant_fingerprints(conn.engine, schemas, on_progress)
        groups = [(group_id(found[g[0]]), g) for g in group(found)]
    else:  # a named stream's one schema: nothing to share
        groups = [("", [s]) for s in schemas]
    out: list[DriftGroup] = []
    for n, (gid, members) in enumerate(groups, 1):
        differences, error = compare_one(stream, members[0], conn)
        out.append(DriftGroup(stream.name, gid, members, differences, error))
        if on_progress is not None:
            on_progress("comparing with the models", n, len(groups))
    return out
