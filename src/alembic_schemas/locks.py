"""Advisory locks: their keys, and taking, waiting for and releasing them.

Every run that migrates, provisions or drops a schema holds the (stream, schema) lock while it
does; only runs of this tool take these locks, never an application query.
"""

from __future__ import annotations

import contextlib
import time
import zlib
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from . import database
from .errors import MigrationFailed

NAMESPACE = zlib.crc32(b"alembic_schemas") - 2**31
RECORD_KEY = 0x616C656D  # serialises creating the run record's tables across concurrent runs
_FIRST_PAUSE, _LONGEST_PAUSE = 0.01, 0.2  # seconds between tries of a lock another run holds
# A waiting run's try; its name is what pg_stat_activity shows of a session that waits.
_POLL = "SELECT pg_catalog.pg_try_advisory_xact_lock(%s, %s) AS waiting_for_another_run"


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


Deadline = tuple[float, int] | None
"""When a wait for a lock gives up (``time.monotonic()``), and the statement_timeout (ms) it
comes from; None: never."""


def deadline(conn: Connection) -> Deadline:
    """The end of a wait for a lock starting now, from the transaction's statement_timeout:
    only runs of this tool take these locks, so lock_timeout does not bound the wait."""
    limit_ms = conn.scalar(
        sa.text("SELECT CAST(setting AS bigint) FROM pg_settings WHERE name = 'statement_timeout'")
    )
    return (time.monotonic() + limit_ms / 1000, int(limit_ms)) if limit_ms else None


def _pause(until: Deadline, pause: float) -> float:
    """Sleep ``pause`` (or fail past ``until``); the next pause."""
    if until is not None and time.monotonic() >= until[0]:
        raise MigrationFailed(
            f"another run held the schema for longer than statement_timeout ({until[1]}ms)"
        )
    time.sleep(pause)
    return min(pause * 2, _LONGEST_PAUSE)


def wait(conn: Connection, stream: str, schema: str) -> None:
    """Wait, in the current transaction, for the (stream, schema) lock as long as another run
    holds it, in short tries rather than one blocked statement (whose snapshot a CREATE INDEX
    CONCURRENTLY of the holder would wait for); bounded by statement_timeout."""
    until, pause = deadline(conn), _FIRST_PAUSE
    while not conn.exec_driver_sql(_POLL, args(stream, schema)).scalar():
        pause = _pause(until, pause)


def wait_outside(conn: Connection, stream: str, schema: str, until: Deadline) -> None:
    """Wait until the (stream, schema) lock is free, on a connection with no transaction open:
    each try is a statement of its own, outside any transaction (the lock it takes ends with
    it; the caller takes the lock in its own transaction)."""
    pause = _FIRST_PAUSE
    while not database.scalar_outside_transaction(conn, _POLL, args(stream, schema)):
        pause = _pause(until, pause)


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
