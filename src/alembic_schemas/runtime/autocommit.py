"""Alembic's ``autocommit_block`` (``CREATE INDEX CONCURRENTLY`` and friends) in a schema's run.

alembic-schemas runs each schema's revisions in one transaction that it owns, so Alembic's own
``autocommit_block`` (which commits a transaction Alembic began) cannot work there. A
replacement is put on the run's MigrationContext that keeps the run's guarantees:

* the commit before the block only commits whole revisions and their version rows: a revision
  that wrote anything before its block is refused and the whole transaction rolls back, unless
  its stream sets ``commit_before_autocommit_block``: then those statements are committed too
  (as Alembic does) and the revision is recorded as partially applied until its version row
  commits; a later run stops on it, naming what was committed (:func:`refuse_partial`);
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
import shlex
from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy as sa
from alembic.runtime.migration import MigrationContext
from sqlalchemy import event
from sqlalchemy.engine import Connection

from .. import catalog, citus, database, identifiers, locks, records
from ..errors import MigrationFailed
from ..streams import Stream
from . import compat
from . import schema as schema_tx

# Statements that only read: a revision may check the catalog before its block.
_READS = ("select", "show")


class Hook:
    """What :func:`install` put on a run: call :meth:`remove` when the run ends.

    Pass :meth:`after_revision` as the context's ``on_version_apply``: once a block has
    committed, each revision commits with its version row before the next starts, so that
    a later failure cannot roll back the stamp of a revision whose block stays."""

    def __init__(self, conn: Connection | None, stream: Stream, schema: str) -> None:
        self.conn, self.stream, self.schema = conn, stream, schema
        self.writes: list[str] = []  # statements of the running revision that may have written
        self.unlock: Callable[[], None] | None = None  # set once a block has committed
        self.unstamped: str | None = None  # revision whose block ran, version row not yet
        self.partial: str | None = None  # revision whose writes before its block committed
        self.removers: list[Callable[[], None]] = []

    def after_revision(self, ctx: MigrationContext, step: Any, heads: Any, run_args: Any) -> None:
        if self.unlock is not None and self.conn is not None:
            _commit(ctx, self.conn, self.stream, self.schema)
            _resume(self.conn, self.stream, self.schema)
            self.unstamped = self.partial = None
        self.writes = []

    def count(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not statement.lstrip().lower().startswith(_READS):
            self.writes.append(" ".join(statement.split()))

    def explain(self, exc: BaseException) -> None:
        """Say on a failure what a committed block left (its effects are not rolled back)."""
        if self.partial is not None:
            exc.add_note(
                f"revision {self.partial} is partially applied (its statements before the"
                " autocommit_block were committed, its version row was not): the next run"
                " stops on it until it is settled by hand and stamped"
            )
        elif self.unstamped is not None:
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


def new_hook(conn: Connection | None, stream: Stream, schema: str) -> Hook:
    """A Hook to pass to the context (``on_version_apply``) before :func:`install`."""
    return Hook(conn, stream, schema)


def install(ctx: MigrationContext, hook: Hook, *, commit: bool = True) -> None:
    """Give ``ctx`` an ``autocommit_block`` that works inside the schema's transaction
    (``hook.conn`` is None for ``--sql``; ``commit=False`` for a scratch schema that must never
    be committed). The version table must exist already: creating it is not a write of the
    first revision."""
    conn, stream, schema = hook.conn, hook.stream, hook.schema
    if conn is None:
        compat.replace_autocommit_block(ctx, _offline_block(ctx, stream, schema))
        return
    if not commit:
        compat.replace_autocommit_block(ctx, lambda: _in_transaction_block(conn))
        return
    compat.replace_autocommit_block(ctx, lambda: _block(ctx, conn, stream, schema, hook))
    event.listen(conn, "before_cursor_execute", hook.count)
    hook.removers.append(lambda: event.remove(conn, "before_cursor_execute", hook.count))


def _resume(conn: Connection, stream: Stream, schema: str) -> None:
    """A new transaction for the schema, set up as the first one was (the lock is this
    session's already, so nothing waits)."""
    conn.begin()
    schema_tx.begin(conn, stream, schema, lock="held", create=False)


def _commit(ctx: MigrationContext, conn: Connection, stream: Stream, schema: str) -> None:
    """Commit the revisions run so far with their version rows and, in the same transaction,
    their checksums (the caller records them only at the end of the run). The record's tables
    exist: mark_unfinished made sure before the first commit."""
    records.sync_applied(conn, stream.script, stream.name, schema, ctx.get_current_heads())
    conn.commit()


@contextlib.contextmanager
def _block(
    ctx: MigrationContext, conn: Connection, stream: Stream, schema: str, hook: Hook
) -> Iterator[None]:
    revision, path = compat.calling_revision()
    committed = _writes_before(stream, revision, path, hook.writes)
    leftovers = _invalid_indexes(conn, schema)
    if leftovers and not records.is_unfinished(conn, stream.name, schema, revision):
        fixes = "; ".join(f"DROP INDEX CONCURRENTLY {q}" for q in leftovers)
        raise MigrationFailed(
            f"INVALID index(es) {', '.join(leftovers)} (left by an interrupted CREATE INDEX"
            f" CONCURRENTLY?) would break revision {revision}'s autocommit_block;"
            f" drop them and run again: {fixes}"
        )
    if hook.unlock is None:
        # at session level, so that it outlives the commits (ours already: no wait)
        hook.unlock = locks.session_lock(conn, locks.args(stream.name, schema))
    records.mark_unfinished(conn, stream.name, schema, revision, committed)
    _commit(ctx, conn, stream, schema)  # whole revisions before this one (and its writes)
    if committed is not None:
        hook.partial = revision
    # a parallel run on Citus: no other transaction of the run open (citus.Gate)
    with citus.exclusive(), _autocommit(conn, stream, schema, leftovers, revision, committed):
        yield
    _resume(conn, stream, schema)
    records.clear_unfinished(conn, stream.name, schema, revision)
    hook.unstamped = revision
    hook.writes = []  # a second block may follow directly


@contextlib.contextmanager
def _autocommit(
    conn: Connection,
    stream: Stream,
    schema: str,
    leftovers: list[str],
    revision: str,
    committed: str | None,
) -> Iterator[None]:
    """The block itself: autocommit, the schema's settings, the leftovers of an interrupted
    attempt dropped first and, if it fails, the INVALID indexes it left (and, when nothing of
    the revision stays, its marker)."""
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
            _refuse_invalid_left(conn, schema, revision)
        except BaseException as exc:
            if _clean_up(conn, schema, exc) and committed is None:
                # Nothing of the revision stays: no marker either.
                records.clear_unfinished(conn, stream.name, schema, revision)
            raise
        if committed is not None:
            records.add_committed(conn, stream.name, schema, revision, "its autocommit_block")
        ok = True
    finally:
        _leave_autocommit(conn, level, saved, ok)


def _writes_before(stream: Stream, revision: str, path: str, writes: list[str]) -> str | None:
    """What committing before the block would commit of the revision itself: None when
    nothing; refused unless the stream opted in to commit it as Alembic does."""
    if not writes:
        return None
    if not stream.config.commit_before_autocommit_block:
        raise MigrationFailed(
            f"revision {revision} ({path}) writes {len(writes)} statement(s) before its"
            " autocommit_block; committing them without the revision's version row would"
            " leave it half-applied: move them to a revision of their own or after the block,"
            f" or set commit_before_autocommit_block = true on stream {stream.name!r} to commit"
            " them first as Alembic does"
        )
    shown = "; ".join(w if len(w) <= 200 else w[:200] + " ..." for w in writes)
    return f"{len(writes)} statement(s) before its autocommit_block ({shown})"


def refuse_partial(conn: Connection, stream: Stream, schema: str) -> None:
    """Stop before migrating a schema that a revision was partially applied to: running it
    again would run its committed statements twice. One line says what was committed and
    how to go on. Only streams that opted in can leave such a revision."""
    if not stream.config.commit_before_autocommit_block:
        return
    found = records.partial_revisions(conn, stream.name, [schema])
    if not found:
        return
    _schema, revision, committed, since = found[0]
    raise MigrationFailed(partial_message(stream, schema, revision, committed, since))


def partial_message(stream: Stream, schema: str, revision: str, committed: str, since: Any) -> str:
    script = stream.script.get_revision(revision)
    path = script.path if script is not None else "file not found"
    down = script.down_revision if script is not None else None
    parent = "base" if not down else (down if isinstance(down, str) else " ".join(down))
    stamp = f"alembic-schemas stamp -s {stream.name}"
    if stream.is_tenant:
        stamp += f" --tenant {shlex.quote(schema)}"
    return (
        f"revision {revision} ({path}) is partially applied: a run started at"
        f" {since:%Y-%m-%d %H:%M:%S %Z} committed {committed}, but not its version row;"
        f" finish it by hand and run '{stamp} {revision}', or undo it by hand and run"
        f" '{stamp} {parent}'"
    )


def _invalid_indexes(conn: Connection, schema: str) -> list[str]:
    """Quoted names of the schema's INVALID indexes; on Citus, an index INVALID on a worker
    (its shard's or the worker's copy) counts too."""
    if not citus.is_citus(conn):
        return catalog.invalid_indexes(conn, schema)
    return sorted({i.qualified for i in citus.invalid_indexes(conn, [schema])})


def _refuse_invalid_left(conn: Connection, schema: str, revision: str) -> None:
    """On Citus a block can succeed and leave an INVALID index: ``IF NOT EXISTS`` skips an
    index that is INVALID on the coordinator, or valid there and INVALID on a worker."""
    if not citus.is_citus(conn):
        return
    left = citus.invalid_indexes(conn, [schema])
    if left:
        raise MigrationFailed(
            f"revision {revision}'s autocommit_block completed but left INVALID index(es)"
            f" {', '.join(map(str, left))}"
        )


def _set_session(conn: Connection, **settings: str) -> dict[str, str]:
    """Set session-level settings (each statement is its own transaction here, so SET LOCAL
    would not last); returns the previous values."""
    names = list(settings)
    before = conn.execute(sa.select(*(sa.func.current_setting(n) for n in names))).one()
    conn.execute(sa.select(*(sa.func.set_config(n, v, False) for n, v in settings.items())))
    return dict(zip(names, before, strict=True))


def _clean_up(conn: Connection, schema: str, exc: BaseException) -> bool:
    """Drop the INVALID indexes a failed block left, and say so on the error. True when none
    is left."""
    try:
        left = _invalid_indexes(conn, schema)
    except sa.exc.DBAPIError:  # the connection is gone: the next run finds them
        exc.add_note("INVALID indexes it may have left are dropped by the next run")
        return False
    clean = True
    for name in left:
        try:
            database.run_sql(conn, "DROP INDEX CONCURRENTLY IF EXISTS " + name)
            exc.add_note(f"dropped the INVALID index {name} it left")
        except sa.exc.DBAPIError as drop_error:
            clean = False
            exc.add_note(
                f"INVALID index {name} is left ({database.describe(drop_error)}):"
                f" drop it with DROP INDEX CONCURRENTLY {name}"
            )
            if conn.invalidated:
                return False
    return clean


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
            write_offline(ctx, "SET search_path TO " + identifiers.search_path(schema))
            yield
            ctx.execute("RESET search_path")
        for statement in schema_tx.offline_statements(stream, schema, create=False):
            write_offline(ctx, statement)

    return block


def write_offline(ctx: MigrationContext, statement: str) -> None:
    """Write ``statement`` to ``--sql`` output as is. ``execute()`` wraps a string in text(),
    which reads ":x" in a quoted name as a bind parameter: tenant ":x" came out as "NULL"."""
    ctx.impl.static_output(statement + ctx.impl.command_terminator)
