"""The run record: every schema attempt of every run, in ``alembic_schemas.attempt``.

Created on first use (its own schema). ``upgrade --retry-failed`` reads the tenants whose
attempt failed in a stream's last run; ``status`` shows the last failures.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from . import database
from .results import SchemaResult

SCHEMA = "alembic_schemas"
_LOCK_KEY = 0x616C656D  # serialises creating the record table across concurrent runs

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
)


def ensure(conn: Connection) -> None:
    """Create the record schema and table if missing (safe under concurrent runs)."""
    exists = conn.scalar(sa.select(sa.func.to_regclass(f"{SCHEMA}.attempt")))
    if exists is None:
        with conn.begin_nested() if conn.in_transaction() else conn.begin():
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_LOCK_KEY)))
            conn.execute(sa.schema.CreateSchema(SCHEMA, if_not_exists=True))
            metadata.create_all(conn, checkfirst=True)


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
    }


class Recorder:
    """Buffers results and writes them in batches (each second or every 500 rows)."""

    def __init__(self, engine: Engine, run_id: str | None = None) -> None:
        self.engine = engine
        self.run_id = run_id or str(uuid.uuid4())
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._last = time.monotonic()
        with database.connect(engine) as conn:
            ensure(conn)
            conn.commit()

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


def _exists(conn: Connection) -> bool:
    return conn.scalar(sa.select(sa.func.to_regclass(f"{SCHEMA}.attempt"))) is not None


def last_run_failures(conn: Connection, stream: str) -> list[str]:
    """Schemas of the stream whose latest attempt failed: the failures of the last run,
    and of each shard's last run when hosts run ``--shard K/N``."""
    if not _exists(conn):
        return []
    later = attempt.alias("later")
    newer = sa.select(later.c.id).where(
        later.c.stream == attempt.c.stream,
        later.c.schema_name == attempt.c.schema_name,
        later.c.id > attempt.c.id,
    )
    query = (
        sa.select(attempt.c.schema_name)
        .where(attempt.c.stream == stream, attempt.c.status == "failed", ~sa.exists(newer))
        .order_by(attempt.c.schema_name)
    )
    return list(conn.execute(query).scalars())


def recent_failures(conn: Connection, limit: int = 20) -> list[dict[str, Any]]:
    """The latest failed attempts whose schema has not succeeded since (one per schema)."""
    if not _exists(conn):
        return []
    # Only each schema's latest attempt: a schema that failed twice is listed once, with
    # its latest error, and one that succeeded since is not listed.
    later = attempt.alias("later")
    later_attempt = sa.select(later.c.id).where(
        later.c.stream == attempt.c.stream,
        later.c.schema_name == attempt.c.schema_name,
        later.c.id > attempt.c.id,
    )
    query = (
        sa.select(
            attempt.c.run_id,
            attempt.c.stream,
            attempt.c.schema_name,
            attempt.c.error,
            attempt.c.recorded_at,
        )
        .where(attempt.c.status == "failed", ~sa.exists(later_attempt))
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
        }
        for r in conn.execute(query)
    ]
