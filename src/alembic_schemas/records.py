"""The tool's own tables, in schema ``alembic_schemas``: the run record and what it knows.

``alembic_schemas.attempt`` holds every schema attempt of every run.

Created on first use (its own schema). ``upgrade --retry-failed`` reads the tenants whose
attempt failed in a stream's last run; ``status`` shows the last failures.

``alembic_schemas.run`` holds one row per ``upgrade``/``downgrade`` run: what it aimed at,
when it started and ended, how it ended (``running`` until then; ``done``, ``failed`` or
``interrupted``) and its counts. ``status`` shows an interrupted last run, and a failed
attempt stops counting as a failure once its schema is at the run's target.

``alembic_schemas.applied`` holds, per (stream, schema), each applied revision and the
sha256 of its file when it was applied, written in the migration's own transaction;
``verify`` (and ``status``) report revisions whose file changed since.

``alembic_schemas.unfinished`` marks a revision whose non-transactional block (an
``autocommit_block``) has started on a schema and whose version row is not written yet: a
later run that finds INVALID indexes there knows they are that attempt's leftovers.

``alembic_schemas.snapshot`` keeps each tenant stream's provisioning snapshot (see
:mod:`alembic_schemas.provision`).

:func:`ensure` creates them all, once, safely under concurrent runs.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
import time
import uuid
from collections.abc import Collection, Sequence
from typing import Any

import sqlalchemy as sa
from alembic.script import ScriptDirectory
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Connection, Engine

from . import catalog, citus, database, identifiers, locks
from .results import EditedRevision, SchemaResult

SCHEMA = identifiers.TOOL_SCHEMA

metadata = sa.MetaData(schema=SCHEMA)
attempt = sa.Table(
    "attempt",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("run_id", sa.String(36), nullable=False, index=True),
    sa.Column("stream", sa.Text, nullable=False),
    sa.Column("schema_name", sa.Text, nullable=False),
    sa.Column("from_rev", sa.Text, nullable=False),
    sa.Column("to_rev", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("seconds", sa.Float, nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("recorded_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
    sa.Column("statement", sa.Text),  # the failing SQL statement, when one failed
)
run = sa.Table(
    "run",
    metadata,
    sa.Column("run_id", sa.String(36), primary_key=True),
    sa.Column("verb", sa.String(16), nullable=False),
    sa.Column("revision", sa.Text, nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False, server_default="running"),
    sa.Column("applied", sa.Integer),
    sa.Column("unchanged", sa.Integer),
    sa.Column("failed", sa.Integer),
    sa.Column("not_started", sa.Integer),
    sa.Column("started_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
)
applied = sa.Table(
    "applied",
    metadata,
    sa.Column("stream", sa.Text, primary_key=True),
    sa.Column("schema_name", sa.Text, primary_key=True),
    sa.Column("revision", sa.Text, primary_key=True),
    sa.Column("checksum", sa.Text, nullable=False),  # sha256 hex of the revision file's bytes
    sa.Column(
        "applied_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
    ),
)

unfinished = sa.Table(
    "unfinished",
    metadata,
    sa.Column("stream", sa.Text, primary_key=True),
    sa.Column("schema_name", sa.Text, primary_key=True),
    sa.Column("revision", sa.Text, primary_key=True),
    sa.Column(
        "started_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
    ),
    # The revision's statements before its block were committed (commit_before_autocommit_block):
    # it is partially applied until its version row commits. ``committed`` says what was.
    sa.Column("partial", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("committed", sa.Text),
)
snapshot = sa.Table(
    "snapshot",
    metadata,
    sa.Column("stream", sa.Text, primary_key=True),
    sa.Column("fingerprint", sa.String(64), primary_key=True),
    sa.Column("sql", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
)
_TABLES = [f"{SCHEMA}.{t.name}" for t in metadata.sorted_tables]
# Columns added after the tables were first released: databases recorded by an older version
# get them when the tool next runs.
_ADDED_COLUMNS = [attempt.c.statement, unfinished.c.partial, unfinished.c.committed]


def ensure(conn: Connection) -> None:
    """Create the record schema and its tables, and add columns they lack, if needed (safe
    under concurrent runs)."""
    if not _complete(conn):
        with conn.begin_nested() if conn.in_transaction() else conn.begin():
            locks.lock_record(conn)
            if not citus.is_citus(conn):
                conn.execute(sa.schema.CreateSchema(SCHEMA, if_not_exists=True))
            elif not catalog.schema_exists(conn, SCHEMA):  # on the coordinator, not distributed
                create = sa.schema.CreateSchema(SCHEMA).compile(dialect=conn.dialect)
                citus.create_schema(conn, str(create), distributed=False)
            metadata.create_all(conn, checkfirst=True)
            for column in _ADDED_COLUMNS:
                ddl = sa.schema.CreateColumn(column).compile(dialect=conn.dialect)
                database.run_sql(
                    conn,
                    f"ALTER TABLE {identifiers.qualified(SCHEMA, column.table.name)}"
                    f" ADD COLUMN IF NOT EXISTS {ddl}",
                )


def _complete(conn: Connection) -> bool:
    tables = conn.scalar(
        sa.select(sa.and_(*(sa.func.to_regclass(t).is_not(None) for t in _TABLES)))
    )
    wanted = [(c.table.name, c.name) for c in _ADDED_COLUMNS]
    return bool(tables) and catalog.column_count(conn, SCHEMA, wanted) == len(wanted)


def _exists(conn: Connection, table: sa.Table) -> bool:
    return catalog.relation_exists(conn, SCHEMA, table.name)


def _row(run_id: str, r: SchemaResult) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "stream": r.stream,
        "schema_name": r.schema,
        "from_rev": ",".join(r.before),
        "to_rev": ",".join(r.after),
        "status": r.status,
        "seconds": r.seconds,
        "error": r.error,
        "statement": r.statement,
    }


class Recorder:
    """Buffers results and writes them in batches (each second or every 500 rows); the
    tables exist (:func:`ensure`)."""

    def __init__(self, engine: Engine, run_id: str | None = None) -> None:
        self.engine = engine
        self.run_id = run_id or str(uuid.uuid4())
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._last = time.monotonic()

    def add(self, result: SchemaResult) -> None:
        with self._lock:
            self._rows.append(_row(self.run_id, result))
            due = len(self._rows) >= 500 or time.monotonic() - self._last > 1.0
        if due:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            rows, self._rows = self._rows, []
            self._last = time.monotonic()
        if rows:
            with database.connect(self.engine) as conn, conn.begin():
                conn.execute(attempt.insert(), rows)


def _latest_failed() -> sa.ColumnElement[bool]:
    """The attempt failed and is its schema's latest in the stream."""
    later = attempt.alias("later")
    newer = sa.select(later.c.id).where(
        later.c.stream == attempt.c.stream,
        later.c.schema_name == attempt.c.schema_name,
        later.c.id > attempt.c.id,
    )
    return sa.and_(attempt.c.status == "failed", ~sa.exists(newer))


def last_run_failures(conn: Connection, stream: str) -> list[str]:
    """Schemas of the stream whose latest attempt failed: the failures of the last run,
    and of each shard's last run when hosts run ``--shard K/N``."""
    if not _exists(conn, attempt):
        return []
    query = (
        sa.select(attempt.c.schema_name)
        .where(attempt.c.stream == stream, _latest_failed())
        .order_by(attempt.c.schema_name)
    )
    return list(conn.execute(query).scalars())


def recent_failures(conn: Connection, limit: int | None = 20) -> list[dict[str, Any]]:
    """The latest failed attempts whose schema has not succeeded since (one per schema),
    newest first, with the revision their run aimed at (``revision``: None when unknown) and
    where the schema was left (``to``)."""
    if not _exists(conn, attempt):
        return []
    # Only each schema's latest attempt: a schema that failed twice is listed once, with
    # its latest error, and one that succeeded since is not listed.
    target: Any = sa.null()
    joined: Any = attempt
    if _exists(conn, run):
        target, joined = run.c.revision, attempt.outerjoin(run, run.c.run_id == attempt.c.run_id)
    query = (
        sa.select(
            attempt.c.run_id,
            attempt.c.stream,
            attempt.c.schema_name,
            attempt.c.error,
            attempt.c.recorded_at,
            attempt.c.to_rev,
            target.label("revision"),
            attempt.c.statement,
        )
        .select_from(joined)
        .where(_latest_failed())
        .order_by(attempt.c.id.desc())
        .limit(limit)
    )
    return [
        {
            "run_id": r.run_id,
            "stream": r.stream,
            "schema": r.schema_name,
            "error": r.error,
            "at": r.recorded_at.isoformat(),
            "revision": r.revision,
            "to": [v for v in r.to_rev.split(",") if v],
            "statement": r.statement,
        }
        for r in conn.execute(query)
    ]


def start_run(engine: Engine, run_id: str, verb: str, revision: str) -> None:
    """The run's row, before its first schema (the tables exist: :func:`ensure`)."""
    with database.connect(engine) as conn, conn.begin():
        conn.execute(run.insert().values(run_id=run_id, verb=verb, revision=revision))


def finish_run(engine: Engine, run_id: str, outcome: str, counts: dict[str, int]) -> None:
    """How the run ended (``done``, ``failed``, ``interrupted``) and its counts."""
    wanted = {k: v for k, v in counts.items() if k in run.c}
    with database.connect(engine) as conn, conn.begin():
        conn.execute(
            run.update()
            .where(run.c.run_id == run_id)
            .values(outcome=outcome, finished_at=sa.func.now(), **wanted)
        )


def last_run(conn: Connection) -> dict[str, Any] | None:
    """The latest run's row, or None."""
    if not _exists(conn, run):
        return None
    row = conn.execute(sa.select(run).order_by(run.c.started_at.desc()).limit(1)).first()
    if row is None:
        return None
    found = dict(row._mapping)
    for key in ("started_at", "finished_at"):
        found[key] = found[key].isoformat() if found[key] is not None else None
    return found


# --- applied revisions and their checksums ------------------------------------------------

# path -> ((mtime_ns, size, inode), sha256): each file is hashed once per process, and again
# when it changed on disk (so an in-process verify after an edit sees the edit).
_checksums: dict[str, tuple[tuple[int, int, int], str]] = {}
# A file written this recently is hashed again each time: a second write within the clock's
# granularity could leave size and mtime unchanged.
_RACY_NS = 2_000_000_000


def file_checksum(path: str | None) -> str | None:
    """sha256 hex of a file's bytes (a revision file, an env.py); None when it does not exist."""
    if path is None:
        return None
    try:
        st = os.stat(path)
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        cached = _checksums.get(path)
        if cached is not None and cached[0] == key:
            return cached[1]
        with open(path, "rb") as f:
            found = hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return None
    if time.time_ns() - st.st_mtime_ns > _RACY_NS:
        _checksums[path] = (key, found)
    return found


def applied_upsert(
    stream: str, schema: str, revisions: Sequence[tuple[str, str]]
) -> tuple[str, tuple[Any, ...]]:
    """Upsert (revision, checksum) rows in one statement (two array parameters), to send in
    a pipeline in the caller's transaction: a revision applied again gets its file's checksum."""
    sql = (
        f"INSERT INTO {SCHEMA}.applied (stream, schema_name, revision, checksum)"
        " SELECT %s, %s, r, c FROM ROWS FROM"
        " (pg_catalog.unnest(%s::text[]), pg_catalog.unnest(%s::text[])) AS u(r, c)"
        " ON CONFLICT (stream, schema_name, revision)"
        " DO UPDATE SET checksum = EXCLUDED.checksum, applied_at = now()"
    )
    return sql, (stream, schema, [r for r, _ in revisions], [c for _, c in revisions])


def sync_applied(
    conn: Connection,
    script: ScriptDirectory,
    stream: str,
    schema: str,
    heads: Sequence[str],
) -> None:
    """Make the schema's rows exactly the ancestors-or-self of ``heads``: rows of revisions
    no longer applied (downgrade, stamp) go; missing ones get the file's current checksum.
    Existing rows keep their checksum, so an edit made before this run is still found."""
    database.send(conn, sync_statements(script, stream, schema, heads))


@functools.lru_cache(maxsize=64)
def _ancestors(script: ScriptDirectory, heads: tuple[str, ...]) -> dict[str, str | None]:
    """Revision -> file of the ancestors-or-self of ``heads``: the same for every schema at
    those heads (a loaded ScriptDirectory's graph does not change)."""
    walk = script.revision_map.iterate_revisions(heads, "base")
    return {sc.revision: getattr(sc, "path", None) for sc in walk}


def sync_statements(
    script: ScriptDirectory,
    stream: str,
    schema: str,
    heads: Sequence[str],
    *,
    recorded: Collection[str] = (),
) -> list[database.Statement]:
    """:func:`sync_applied` as two statements with array parameters, to send in a pipeline
    (one network wait): built with SQLAlchemy Core, a 60-revision history cost ~240 bound
    values to coerce and compile for every schema, more CPU than the rest of a tenant's
    replayed upgrade."""
    ancestors = _ancestors(script, tuple(heads)) if heads else {}
    table = f"{SCHEMA}.applied"
    statements: list[database.Statement] = [
        (
            f"DELETE FROM {table} WHERE stream = %s AND schema_name = %s"
            " AND NOT (revision = ANY(%s::text[]))",
            (stream, schema, list(ancestors)),
        )
    ]
    revisions: list[str] = []
    checksums: list[str] = []
    for rev, path in ancestors.items():
        if rev in recorded:  # the caller's statement before these wrote its row
            continue
        checksum = file_checksum(path)
        if checksum is not None:
            revisions.append(rev)
            checksums.append(checksum)
    if revisions:
        statements.append(
            (
                f"INSERT INTO {table} (stream, schema_name, revision, checksum)"
                " SELECT %s, %s, r, c FROM ROWS FROM"
                " (pg_catalog.unnest(%s::text[]), pg_catalog.unnest(%s::text[])) AS u(r, c)"
                " ON CONFLICT DO NOTHING",
                (stream, schema, revisions, checksums),
            )
        )
    return statements


def edited_revisions(
    conn: Connection,
    script: ScriptDirectory,
    stream: str,
    schemas: Sequence[str],
    *,
    tenant: bool,
) -> list[EditedRevision]:
    """Recorded revisions of ``schemas`` whose file changed or is gone: one query for the
    whole stream, compared in Python (each file hashed once)."""
    if not _exists(conn, applied):
        return []
    paths = {sc.revision: sc.path for sc in script.walk_revisions()}
    query = (
        sa.select(applied.c.schema_name, applied.c.revision, applied.c.checksum)
        .where(
            applied.c.stream == stream,
            applied.c.schema_name
            == sa.any_(sa.bindparam("schemas", list(schemas), ARRAY(sa.Text))),
        )
        .order_by(applied.c.schema_name, applied.c.applied_at, applied.c.revision)
    )
    found: list[EditedRevision] = []
    for schema, rev, recorded in conn.execute(query):
        path = paths.get(rev)
        current = file_checksum(path)
        if current != recorded:
            found.append(EditedRevision(stream, schema, tenant, rev, path, recorded, current))
    return found


# --- revisions whose non-transactional block started ----------------------------------


def mark_unfinished(
    conn: Connection, stream: str, schema: str, revision: str, committed: str | None = None
) -> None:
    """In the transaction committed just before the block runs. ``committed`` (the revision's
    own statements that this commit includes) marks the revision partially applied."""
    ensure(conn)
    values = {"partial": committed is not None, "committed": committed}
    stmt = pg_insert(unfinished).values(
        stream=stream, schema_name=schema, revision=revision, **values
    )
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[unfinished.c.stream, unfinished.c.schema_name, unfinished.c.revision],
            set_={"started_at": sa.func.now(), **values},
        )
    )


def _marker(stream: str, schema: str, revision: str) -> sa.ColumnElement[bool]:
    return sa.and_(
        unfinished.c.stream == stream,
        unfinished.c.schema_name == schema,
        unfinished.c.revision == revision,
    )


def add_committed(conn: Connection, stream: str, schema: str, revision: str, what: str) -> None:
    """Say what else of a partially applied revision is committed now (its block)."""
    conn.execute(
        unfinished.update()
        .where(_marker(stream, schema, revision), unfinished.c.partial)
        .values(committed=unfinished.c.committed + " and " + what)
    )


def clear_unfinished(conn: Connection, stream: str, schema: str, revision: str) -> None:
    """In the transaction that writes the revision's version row (or, when a failed block
    left nothing behind, right after it)."""
    conn.execute(unfinished.delete().where(_marker(stream, schema, revision)))


def clear_partial(conn: Connection, stream: str, schema: str) -> None:
    """A stamp: whoever stamps has settled what partially applied revisions left."""
    if _exists(conn, unfinished):
        conn.execute(
            unfinished.delete().where(
                unfinished.c.stream == stream,
                unfinished.c.schema_name == schema,
                unfinished.c.partial,
            )
        )


def partial_revisions(conn: Connection, stream: str, schemas: Sequence[str]) -> list[Any]:
    """Rows (schema_name, revision, committed, started_at) of the partially applied revisions
    of ``schemas``: one query for the whole stream."""
    if not _exists(conn, unfinished) or not schemas:
        return []
    query = (
        sa.select(
            unfinished.c.schema_name,
            unfinished.c.revision,
            unfinished.c.committed,
            unfinished.c.started_at,
        )
        .where(
            unfinished.c.stream == stream,
            unfinished.c.partial,
            unfinished.c.schema_name
            == sa.any_(sa.bindparam("schemas", list(schemas), ARRAY(sa.Text))),
        )
        .order_by(unfinished.c.schema_name, unfinished.c.started_at)
    )
    return list(conn.execute(query))


def is_unfinished(conn: Connection, stream: str, schema: str, revision: str) -> bool:
    if not _exists(conn, unfinished):
        return False
    return bool(conn.scalar(sa.select(sa.exists().where(_marker(stream, schema, revision)))))


def forget(conn: Connection, stream: str, schema: str) -> None:
    """A dropped schema's applied revisions and markers (its attempts stay: they are history)."""
    ensure(conn)
    for table in (applied, unfinished):
        conn.execute(table.delete().where(table.c.stream == stream, table.c.schema_name == schema))
