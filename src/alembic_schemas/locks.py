"""Advisory locks: their keys, and taking, waiting for and releasing them.

Every run that migrates, provisions or drops a schema holds the (stream, schema) lock while it
does; only runs of this tool take these locks, never an application query.
"""

from __future__ import annotations

import contextlib
import time
import zlib
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .errors import MigrationFailed

NAMESPACE = zlib.crc32(b"alembic_schemas") - 2**31
RECORD_KEY = 0x616C656D  # serialises creating the run record's tables across concurrent runs
_FIRST_PAUSE, _LONGEST_PAUSE = 0.01, 0.2  # seconds between tries of a lock another run holds


def key(stream: str, schema: str) -> int:
    """A stable signed 32-bit key for the (stream, schema) advisory lock."""
    return zlib.crc32(f"{stream}\x00{schema}".encode()) - 2**31


def args(stream: str, schema: str) -> tuple[int, int]:
    """The two-key advisory lock of (stream, schema)."""
    return NAMESPACE, key(stream, schema)


def snapshot_args(stream: str) -> tuple[int, int]:
    """The lock that serialises building one stream's provisioning snapshot."""
    return args(stream, "\0snapshot")


def lock(conn: Connection, stream: str, schema: str) -> None:
    """Wait (up to lock_timeout) for the transaction-scoped lock on (stream, schema)."""
    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(*args(stream, schema))))


def wait(conn: Connection, attempt: Callable[[], list[tuple[Any, ...]]]) -> list[tuple[Any, ...]]:
    """Call ``attempt()`` (which begins the transaction's work with a try of the schema's
    lock and returns rows whose first value says if it was taken) until it takes the lock,
    rolling back and pausing between tries: no transaction is open while another run holds
    the schema, and no statement sits blocked on the lock (its snapshot would hold back a
    CREATE INDEX CONCURRENTLY of the holder's, a deadlock PostgreSQL ends by cancelling one).
    Only runs of this tool take this lock, so lock_timeout does not bound the wait;
    statement_timeout does, as it would a blocked statement."""
    limit_ms = conn.scalar(
        sa.text("SELECT CAST(setting AS bigint) FROM pg_settings WHERE name = 'statement_timeout'")
    )
    deadline = time.monotonic() + limit_ms / 1000 if limit_ms else None
    pause = _FIRST_PAUSE
    while True:
        conn.rollback()
        if deadline is not None and time.monotonic() >= deadline:
            raise MigrationFailed(
                f"another run held the schema for longer than statement_timeout ({limit_ms}ms)"
            )
        time.sleep(pause)
        pause = min(pause * 2, _LONGEST_PAUSE)
        conn.begin()
        rows = attempt()
        if rows[0][0]:
            return rows


def try_lock(conn: Connection, stream: str, schema: str) -> bool:
    return bool(conn.scalar(sa.select(sa.func.pg_try_advisory_xact_lock(*args(stream, schema)))))


def lock_record(conn: Connection) -> None:
    """The transaction-scoped lock around creating the run record's tables."""
    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(RECORD_KEY)))


def session_lock(conn: Connection, key_args: tuple[int, int]) -> Callable[[], None]:
    """Take a session-level lock that outlives commits (waiting for it); returns its release,
    which does nothing once the connection is gone (a dead session took its locks along)."""
    conn.execute(sa.select(sa.func.pg_advisory_lock(*key_args)))

    def unlock() -> None:
        if not conn.invalidated:
            with contextlib.suppress(sa.exc.DBAPIError):
                conn.execute(sa.select(sa.func.pg_advisory_unlock(*key_args)))

    return unlock
