"""Advisory locks: their keys, and taking, waiting for and releasing them.

Every run that migrates, provisions or drops a schema holds the (stream, schema) lock while it
does; only runs of this tool take these locks, never an application query.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from . import database

NAMESPACE = zlib.crc32(b"alembic_schemas") - 2**31
RECORD_KEY = 0x616C656D  # serialises creating the run record's tables across concurrent runs


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


def wait(conn: Connection, stream: str, schema: str, lock_timeout: str) -> None:
    """Wait for the (stream, schema) lock as long as another run holds it, then restore
    ``lock_timeout``. Only migration runs queue behind this lock, never an application
    query, so lock_timeout need not bound it (statement_timeout still does); bounding it
    made a concurrent run fail whenever the other one took longer than the timeout."""
    database.set_local(conn, {"lock_timeout": "0"})
    lock(conn, stream, schema)
    database.set_local(conn, {"lock_timeout": lock_timeout})


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
