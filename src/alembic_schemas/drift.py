"""Drift across a fleet in a few queries: tenants with the same structure get the same answer
from Alembic's compare, so it runs once per structure, not once per tenant.

A tenant's *fingerprint* is everything Alembic's compare (and this package's comparators)
look at, read for every tenant at once from the catalogs (:func:`catalog.structure`): tables,
columns with type, default, nullability, identity, generation, collation and comment,
constraints, indexes, sequences with their options and owner, enum labels and domains. Tenants
are grouped by fingerprint and compare runs on one tenant of each group.

The fingerprint leaves out the tenant's own name and nothing else. The catalogs are read with
only ``pg_catalog`` on the search_path, so deparsed SQL qualifies the tenant's own objects
(``nextval('"Acme".seq'::regclass)``); compare reads them with the tenant as the only schema,
unqualified (``nextval('seq'::regclass)``). :func:`normalise` replaces exactly those
qualifications, outside string literals and inside ``'...'::reg*`` name literals, by one
marker. Any other string literal that mentions the tenant's name puts the tenant in a group of
its own: a different fingerprint only costs one more compare, a shared one must be exact.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from . import autogenerate, catalog, database
from .errors import AlembicSchemasError, describe_python_error
from .results import DriftGroup
from .streams import Stream

# Stands for the tenant's own schema in normalised text: PostgreSQL text never holds NUL.
OWN = "\x00"

# Per kind of catalog row (see catalog.structure): the cells holding deparsed SQL, which may
# qualify the tenant's own objects; names and other values are kept exactly as they are.
SQL_CELLS: dict[str, frozenset[int]] = {
    "relations": frozenset({5, 6}),  # partition key, parent tables
    "columns": frozenset({4, 6, 9}),  # type, default or generation expression, collation
    "constraints": frozenset({4}),  # definition
    "indexes": frozenset({3}),  # CREATE INDEX ... ON schema.table ...
    "sequences": frozenset({2}),  # data type
    "types": frozenset({4, 6, 7}),  # domain base type, default, constraints
}
COLUMN_ORDER = 2  # the columns' attnum: orders a table's columns, then is dropped

CHUNK = 2000  # tenants per round of catalog queries

_TOKEN = re.compile(r"""'(?:[^']|'')*'|"(?:[^"]|"")*"|[\w$]+|::|\s+|.""", re.S)

Progress = Callable[[str, int, int], None]


def normalise(text: str, name: str, quoted: str) -> tuple[str, bool]:
    """``text`` with ``quoted.`` (the schema as PostgreSQL writes it, then a dot) replaced by
    :data:`OWN` wherever it qualifies a name, and whether a string literal mentions ``name``
    otherwise (the caller then keeps the tenant apart)."""
    # Inside a literal a quote is doubled: '"it''s".seq'::regclass names "it's".seq.
    forms = {name, quoted, name.replace("'", "''"), quoted.replace("'", "''")}
    if not any(f in text for f in forms):
        return text, False
    tokens = _TOKEN.findall(text)
    out: list[str] = []
    mentions = False
    for i, token in enumerate(tokens):
        following = tokens[i + 1] if i + 1 < len(tokens) else ""
        if token == quoted and following == ".":
            out.append(OWN)
            continue
        if len(token) > 1 and token[0] == token[-1] == "'":
            content = token[1:-1].replace("''", "'")
            if any(f in content for f in forms):
                cast = tokens[i + 2] if i + 2 < len(tokens) else ""
                if following == "::" and cast.lower().startswith("reg"):
                    # '"Acme".seq'::regclass names an object: qualified like any name.
                    inner, nested = normalise(content, name, quoted)
                    mentions = mentions or nested
                    out.append("'" + inner.replace("'", "''") + "'")
                    continue
                mentions = True
        out.append(token)
    return "".join(out), mentions


def _sort_key(row: tuple[Any, ...]) -> tuple[tuple[bool, Any], ...]:
    # None sorts apart from values; a column's values share one type.
    return tuple((v is not None, v if v is not None else 0) for v in row)


def fingerprints(
    structure: Mapping[str, Sequence[tuple[Any, ...]]],
    quoted: Mapping[str, str],
) -> dict[str, Hashable]:
    """Each schema of ``quoted`` (name -> quote_ident form) to a value equal for two schemas
    exactly when their catalog rows are equal up to their own name (see module doc)."""
    per: dict[str, dict[str, list[tuple[Any, ...]]]] = {s: {} for s in quoted}
    apart: set[str] = set()
    for kind, rows in structure.items():
        cells = SQL_CELLS.get(kind, frozenset())
        for row in rows:
            schema = row[0]
            values = list(row[1:])
            for i in cells:
                value = row[i]
                if isinstance(value, str):
                    values[i - 1], mentions = normalise(value, schema, quoted[schema])
                    if mentions:
                        apart.add(schema)
            per[schema].setdefault(kind, []).append(tuple(values))
    out: dict[str, Hashable] = {}
    for schema, kinds in per.items():
        parts: list[tuple[Any, ...]] = []
        for kind in catalog.STRUCTURE_KINDS:
            rows = kinds.get(kind, [])
            if kind == "columns":
                # each table's columns in order; attnum itself differs after a drop and re-add
                ordered = sorted(rows, key=lambda r: (r[0], r[COLUMN_ORDER - 1]))
                parts.append(tuple(r[: COLUMN_ORDER - 1] + r[COLUMN_ORDER:] for r in ordered))
            else:
                parts.append(tuple(sorted(rows, key=_sort_key)))
        if schema in apart:
            parts.append(("mentions its own name", schema))
        out[schema] = tuple(parts)
    return out


def group(found: Mapping[str, Hashable]) -> list[list[str]]:
    """Schemas with equal fingerprints together, groups and members in ``found``'s order."""
    groups: dict[Hashable, list[str]] = {}
    for schema, fp in found.items():
        groups.setdefault(fp, []).append(schema)
    return list(groups.values())


def group_id(fp: Hashable) -> str:
    """A short stable name for a fingerprint (the same structure: the same id, run to run)."""
    return hashlib.sha256(repr(fp).encode("utf-8", "surrogatepass")).hexdigest()[:12]


def _chunks(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def tenant_fingerprints(
    conn: Connection, schemas: Sequence[str], on_progress: Progress | None = None
) -> dict[str, Hashable]:
    """Fingerprints of many schemas, a few catalog queries per :data:`CHUNK` of them."""
    found: dict[str, Hashable] = {}
    for chunk in _chunks(schemas, CHUNK):
        quoted = catalog.quoted_names(conn, chunk)
        rows = catalog.structure(conn, chunk)
        conn.rollback()
        found.update(fingerprints(rows, quoted))
        if on_progress is not None:
            on_progress("reading structure", len(found), len(schemas))
    return found


def compare_one(
    stream: Stream, schema: str, conn: Connection
) -> tuple[list[str] | None, str | None]:
    """Alembic's compare of ``schema`` with the models, described: (differences, None), or
    (None, why it could not be compared). Configuration errors propagate."""
    try:
        with conn.begin():
            return [
                autogenerate.describe(d, own_schema=schema if stream.is_tenant else None)
                for d in autogenerate.compare(stream, schema, conn)
            ], None
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
    if stream.is_tenant:
        found = tenant_fingerprints(conn, schemas, on_progress)
        groups = [(group_id(found[g[0]]), g) for g in group(found)]
    else:  # one schema: nothing to share
        groups = [("", [s]) for s in schemas]
    out: list[DriftGroup] = []
    for n, (gid, members) in enumerate(groups, 1):
        differences, error = compare_one(stream, members[0], conn)
        out.append(DriftGroup(stream.name, gid, members, differences, error))
        if on_progress is not None:
            on_progress("comparing with the models", n, len(groups))
    return out
