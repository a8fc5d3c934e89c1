"""Connection poolers in transaction mode (PgBouncer): which connection each step uses.

Through a transaction pooler, each transaction may run on another server connection, so
nothing of a session lasts: session-level advisory locks, session ``SET``, prepared
statements. Migrations themselves need none of it (one transaction per schema, with
``SET LOCAL`` settings and a transaction-scoped lock), so with ``direct_url`` set:

* schema migrations (upgrade, downgrade, stamp, and the provisioning of ``tenants create``)
  run through ``url``, the pooler, with no session state and no prepared statements;
* the steps that need one session go through ``direct_url``: streams whose history has an
  ``autocommit_block`` (a session-level lock is held across its commits, and the block runs
  in autocommit with session settings), building the provisioning snapshot (a session lock,
  a scratch database and ``pg_dump``), and reading the catalog (check, status, autogenerate).

Without ``direct_url``, before such a step the tool checks whether a transaction pooler is
in the way and refuses in one line if so, rather than leaving a lock held on a server
connection that another client then gets.
"""

from __future__ import annotations

import functools
import os

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from . import database
from .database import Session
from .errors import ConfigError
from .streams import Stream

SESSION_MARKERS = ("autocommit_block",)


@functools.lru_cache(maxsize=256)
def _uses_session(path: str, mtime: float) -> bool:
    try:
        with open(path, encoding="utf-8") as f:
            return any(marker in f.read() for marker in SESSION_MARKERS)
    except OSError:
        return False


def session_revision(stream: Stream) -> str | None:
    """The first revision of the stream's history that needs one session (an
    ``autocommit_block``), or None."""
    for script in stream.script.walk_revisions():
        path = script.path
        try:
            mtime = os.stat(path).st_mtime
        except OSError:
            continue
        if _uses_session(path, mtime):
            return script.revision
    return None


def behind_transaction_pooler(engine: Engine) -> bool:
    """True when a pooler hands one client's successive transactions to other server
    connections. A transaction on a second client gets the server connection the first
    client just released (PgBouncer reuses the most recent one), or the first client's next
    statement reaches another backend: neither can happen on direct connections."""
    pid = sa.select(sa.func.pg_backend_pid())
    with database.connect(engine) as first:
        before = first.scalar(pid)
        first.commit()
        with database.connect(engine) as second:
            second.begin()
            other = second.scalar(pid)
            after = first.scalar(pid)
            first.commit()
            second.rollback()
    return other == before or after != before


def _refuse(session: Session, what: str) -> None:
    if session.project.direct_url is None and behind_transaction_pooler(session.engine):
        raise ConfigError(
            f"{what} needs one database session across transactions, and PostgreSQL is "
            "reached through a connection pooler in transaction mode, where session-level "
            "locks and settings do not last: set direct_url to a direct connection "
            "(see 'Connection poolers' in the README)"
        )


def engine_for(session: Session, stream: Stream) -> Engine:
    """The engine that migrates ``stream``'s schemas: the session's own for a history with
    an ``autocommit_block`` (refused when a pooler is in the way without ``direct_url``),
    else the pooled one."""
    revision = session_revision(stream)
    if revision is None:
        return session.pooled
    _refuse(session, f"stream {stream.name!r}: revision {revision}'s autocommit_block")
    return session.engine


def refuse_snapshot_build(session: Session, stream: Stream) -> None:
    """Before building a tenant stream's provisioning snapshot (a session lock, a scratch
    database, pg_dump): refused behind a transaction pooler without ``direct_url``."""
    _refuse(session, f"building the provisioning snapshot of stream {stream.name!r}")
