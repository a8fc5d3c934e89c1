"""Alembic's ``autocommit_block`` (``CREATE INDEX CONCURRENTLY`` and friends) in a schema's run.

alembic-schemas runs each schema's revisions in one transaction that it owns, so Alembic's own
``autocommit_block`` (which commits a transaction Alembic began) cannot work there. A
replacement is put on the run's MigrationContext that keeps the run's guarantees:

* the commit before the block only commits whole revisions and their version rows: a revision
  that wrote anything before its block is refused and the whole transaction rolls back;
* the (stream, schema) lock is held across the commit, as a session-level advisory lock, so a
  concurrent run cannot start the same revision while the block runs;
* the block runs in autocommit with the schema's search_path and timeouts; afterwards a new
  transaction holds the rest of the revision and its version row;
* if the block fails, the INVALID indexes it left are dropped (``DROP INDEX CONCURRENTLY``), or
  named with the statement that drops them; no version row claims the revision;
* a marker committed just before the block lets a later run recognise INVALID indexes left by
  an attempt killed inside it, and drop them before running the block again. INVALID indexes
  without that marker are not ours to drop: the run stops and names them.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy as sa
from alembic.runtime.migration import MigrationContext
from sqlalchemy import event
from sqlalchemy.engine import Connection

from . import database, environment, identifiers, recorder
from .errors import MigrationFailed
from .streams import Stream

# Statements that only read: a revision may check the catalog before its block.
_READS = ("select", "show")


class Hook:
    """What :func:`install` put on a run: call :meth:`remove` when the run ends."""

    def __init__(self) -> None:
        self.writes = 0  # statements of the running revision that may have written
        self.unlock: Callable[[], None] | None = None  # set once a block has committed
        self.unstamped: str | None = None  # revision whose block ran, version row not yet
        self.removers: list[Callable[[], None]] = []

    def count(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not statement.lstrip().lower().startswith(_READS):
            self.writes += 1

    def explain(self, exc: BaseException) -> None:
        """Say on a failure what a committed block left (its effects are not rolled back)."""
        if self.unstamped is not None:
            exc.add_note(
                f"revision {self.unstamped}'s autocommit_block had completed and stays; its"
                " version row was not written, so the next run runs the block again (write it"
                " to be repeatable, e.g. create_index(..., if_not_exists=True))"
            )

    def remove(self) -> None:
        for remover in self.removers:
            remover()
        if self.unlock is not None:
            self.unlock()


def install(
    ctx: MigrationContext,
    conn: Connection | None,
    stream: Stream,
    schema: str,
    *,
    commit: bool = True,
) -> Hook:
    """Give ``ctx`` an ``autocommit_block`` that works inside the schema's transaction
    (``conn`` is None for ``--sql``; ``commit=False`` for a scratch schema that must never be
    committed)."""
    hook = Hook()
    if conn is None:
        ctx.autocommit_block = _offline_block(ctx, stream, schema)  # type: ignore[method-assign]
        return hook
    if not commit:
        ctx.autocommit_block = lambda: _in_transaction_block(conn)  # type: ignore[method-assign]
        return hook
    begin = ctx.begin_transaction

    def begin_transaction(_per_migration: bool = False) -> Any:
        # Alembic calls this with _per_migration=True as each revision starts. Once a block
        # has committed, each revision commits with its version row before the next starts:
        # a later failure must not roll back the stamp of a revision whose block stays.
        if _per_migration:
            if hook.unlock is not None:
                _commit(ctx, conn, stream, schema)
                _resume(conn, stream, schema)
                hook.unstamped = None
            hook.writes = 0
        return begin(_per_migration=_per_migration)

    ctx.begin_transaction = begin_transaction  # type: ignore[method-assign]
    ctx.autocommit_block = lambda: _block(ctx, conn, stream, schema, hook)  # type: ignore[method-assign]
    event.listen(conn, "before_cursor_execute", hook.count)
    hook.removers.append(lambda: event.remove(conn, "before_cursor_execute", hook.count))
    return hook


def _calling_revision() -> tuple[str, str]:
    """(revision id, file) of the revision module whose upgrade()/downgrade() entered the
    block: Alembic does not tell the context which revision is running."""
    frame = sys._getframe(1)
    while frame is not None:
        found = frame.f_globals
        if "revision" in found and "down_revision" in found:
            return str(found["revision"]), str(found.get("__file__", "?"))
        frame = frame.f_back  # type: ignore[assignment]
    return "?", "?"


def _resume(conn: Connection, stream: Stream, schema: str) -> None:
    """A new transaction for the schema, as environment.prepare starts the first one (the
    locks are this session's already, so nothing waits)."""
    project = stream.project
    conn.begin()
    database.set_local(
        conn, lock_timeout=project.lock_timeout, statement_timeout=project.statement_timeout
    )
    environment.lock(conn, stream.name, schema)
    database.set_local(conn, search_path=(schema,))


def _session_lock(conn: Connection, stream: Stream, schema: str) -> Callable[[], None]:
    """Take the (stream, schema) lock at session level, so that it outlives the commits;
    returns its release."""
    args = environment.lock_args(stream.name, schema)
    conn.execute(sa.select(sa.func.pg_advisory_lock(*args)))  # ours already: no wait

    def unlock() -> None:
        # A dead connection took its locks with it.
        if not conn.invalidated:
            with contextlib.suppress(sa.exc.DBAPIError):
                conn.execute(sa.select(sa.func.pg_advisory_unlock(*args)))

    return unlock


def _commit(ctx: MigrationContext, conn: Connection, stream: Stream, schema: str) -> None:
    """Commit the revisions run so far with their version rows and, in the same transaction,
    their checksums (the caller records them only at the end of the run). The record's tables
    exist: mark_unfinished made sure before the first commit."""
    recorder.sync_applied(conn, stream.script, stream.name, schema, ctx.get_current_heads())
    conn.commit()


@contextlib.contextmanager
def _block(
    ctx: MigrationContext, conn: Connection, stream: Stream, schema: str, hook: Hook
) -> Iterator[None]:
    revision, path = _calling_revision()
    if hook.writes:
        raise MigrationFailed(
            f"revision {revision} ({path}) writes {hook.writes} statement(s) before its"
            " autocommit_block; committing them without the revision's version row would"
            " leave it half-applied: move them to a revision of their own or after the block"
        )
    leftovers = invalid_indexes(conn, schema)
    if leftovers and not recorder.is_unfinished(conn, stream.name, schema, revision):
        fixes = "; ".join(f"DROP INDEX CONCURRENTLY {q}" for q in leftovers)
        raise MigrationFailed(
            f"INVALID index(es) {', '.join(leftovers)} (left by an interrupted CREATE INDEX"
            f" CONCURRENTLY?) would break revision {revision}'s autocommit_block;"
            f" drop them and run again: {fixes}"
        )
    if hook.unlock is None:
        hook.unlock = _session_lock(conn, stream, schema)
    recorder.mark_unfinished(conn, stream.name, schema, revision)
    _commit(ctx, conn, stream, schema)  # whole revisions before this one
    project = stream.project
    level = conn.get_isolation_level()
    conn.execution_options(isolation_level="AUTOCOMMIT")
    saved: dict[str, str] = {}
    ok = False
    try:
        saved = _set_session(
            conn,
            search_path=identifiers.search_path(schema),
            lock_timeout=project.lock_timeout,
            statement_timeout=project.statement_timeout,
        )
        for name in leftovers:  # of this revision's interrupted attempt
            database.run_sql(conn, "DROP INDEX CONCURRENTLY IF EXISTS " + name)
        try:
            yield
        except BaseException as exc:
            _clean_up(conn, schema, exc)
            raise
        ok = True
    finally:
        _leave_autocommit(conn, level, saved, ok)
    _resume(conn, stream, schema)
    recorder.clear_unfinished(conn, stream.name, schema, revision)
    hook.unstamped = revision
    hook.writes = 0  # a second block may follow directly


def invalid_indexes(conn: Connection, schema: str) -> list[str]:
    """Quoted ``"schema"."index"`` of the schema's INVALID indexes."""
    names = conn.scalars(
        sa.text(
            "SELECT c.relname FROM pg_catalog.pg_index i"
            " JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid"
            " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = :schema AND NOT i.indisvalid ORDER BY c.relname"
        ),
        {"schema": schema},
    )
    return [identifiers.qualified(schema, name) for name in names]


def _set_session(conn: Connection, **settings: str) -> dict[str, str]:
    """Set session-level settings (each statement is its own transaction here, so SET LOCAL
    would not last); returns the previous values."""
    names = list(settings)
    before = conn.execute(sa.select(*(sa.func.current_setting(n) for n in names))).one()
    conn.execute(sa.select(*(sa.func.set_config(n, v, False) for n, v in settings.items())))
    return dict(zip(names, before, strict=True))


def _clean_up(conn: Connection, schema: str, exc: BaseException) -> None:
    """Drop the INVALID indexes a failed block left, and say so on the error."""
    try:
        left = invalid_indexes(conn, schema)
    except sa.exc.DBAPIError:  # the connection is gone: the next run finds them
        exc.add_note("INVALID indexes it may have left are dropped by the next run")
        return
    for name in left:
        try:
            database.run_sql(conn, "DROP INDEX CONCURRENTLY IF EXISTS " + name)
            exc.add_note(f"dropped the INVALID index {name} it left")
        except sa.exc.DBAPIError as drop_error:
            exc.add_note(
                f"INVALID index {name} is left ({database.describe(drop_error)}):"
                f" drop it with DROP INDEX CONCURRENTLY {name}"
            )
            if conn.invalidated:
                return


def _leave_autocommit(conn: Connection, level: Any, saved: dict[str, str], ok: bool) -> None:
    if conn.invalidated:
        return
    if saved:
        with contextlib.suppress(sa.exc.DBAPIError):
            _set_session(conn, **saved)
    # Each statement already committed; this only ends SQLAlchemy's autobegun transaction,
    # which must be closed before the isolation level changes back.
    if conn.in_transaction():
        (conn.commit if ok else conn.rollback)()
    conn.execution_options(isolation_level=level)


_CONCURRENTLY = re.compile(
    r"^(\s*(?:CREATE\s+(?:UNIQUE\s+)?INDEX|DROP\s+INDEX|REINDEX\s+\w+))\s+CONCURRENTLY\b",
    re.IGNORECASE,
)


@contextlib.contextmanager
def _in_transaction_block(conn: Connection) -> Iterator[None]:
    """For a scratch schema (tenant autogenerate): run the block in the transaction. Its
    tables are new and empty, so an index built without CONCURRENTLY is the same index."""

    def plain(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> tuple[str, Any]:
        return _CONCURRENTLY.sub(r"\1", statement, count=1), parameters

    event.listen(conn, "before_cursor_execute", plain, retval=True)
    try:
        yield
    finally:
        event.remove(conn, "before_cursor_execute", plain)


def _offline_block(ctx: MigrationContext, stream: Stream, schema: str) -> Callable[[], Any]:
    """``--sql``: Alembic writes COMMIT before the block and BEGIN after it, which ends the
    SET LOCAL settings; set the search_path for the block and restore them after it."""
    original = ctx.autocommit_block

    @contextlib.contextmanager
    def block() -> Iterator[None]:
        with original():
            environment.write_offline(ctx, "SET search_path TO " + identifiers.search_path(schema))
            yield
            ctx.execute("RESET search_path")
        for statement in environment.offline_settings(stream.project, schema):
            environment.write_offline(ctx, statement)  # not execute(): it reads ":x" as a bind

    return block
