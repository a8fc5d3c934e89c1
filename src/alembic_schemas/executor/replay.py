"""Rendering revisions to SQL once, to replay them in every tenant.

A revision is replayed when it does not need a live connection. That is decided by what it
does when rendered in Alembic's offline mode: a revision that touches the connection (``op.
get_bind()``, ``op.get_context().connection``, inspection, ``run_async``), enters an
``autocommit_block``, fails offline (a batch recreate that reflects, ``alembic.context`` use)
or writes a tab (offline output turns tabs into spaces) runs through Alembic instead. A module
flag ``alembic_schemas_replay = True/False`` overrides the decision.

For a tenant's way from its current revision to the target, Alembic's own ordered steps are
split into segments: runs of replayable revisions (their SQL and the version-row statements
Alembic would write, rendered once for every tenant at that revision) and single revisions
that Alembic runs, all in the tenant's one transaction.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from alembic.runtime.migration import MigrationContext
from alembic.script import Script

from .. import database, identifiers, records, sqlscript
from ..runtime import compat
from ..streams import Stream

# alembic.op / alembic.context are module globals: one Alembic run at a time per process.
ALEMBIC_LOCK = threading.Lock()

Heads = tuple[str, ...]


class _NeedsConnection(Exception):
    """The revision used the database while being rendered: it runs through Alembic."""


@dataclass(frozen=True)
class Replay:
    """Statements to send as they are, one per query; and the revisions they apply."""

    statements: tuple[str, ...]
    revisions: tuple[tuple[str, str | None], ...]  # (revision, checksum of its file)
    owners: tuple[str, ...] = ()  # the revision each statement belongs to (error messages)
    queries: tuple[database.Statement, ...] = ()  # the statements as sent (database.rendered)


@dataclass(frozen=True)
class Online:
    """A revision Alembic runs (``upgrade`` to it) in the tenant's transaction."""

    revision: str
    heads: Heads = ()  # the version rows before it
    # the version-row statements Alembic writes after it (database.rendered), for a caller
    # that sends them itself (environment.Session)
    versions: tuple[database.Statement, ...] = ()


Segment = Replay | Online


class _Capture:
    """An output buffer that keeps each statement Alembic writes offline."""

    def __init__(self) -> None:
        self.statements: list[str] = []

    def write(self, text: str) -> None:
        # One write per statement; a string op.execute() may hold several.
        self.statements += [s.strip() for s in sqlscript.split_script(text) if s.strip()]

    def flush(self) -> None:
        pass

    def take(self) -> list[str]:
        out, self.statements = self.statements, []
        return out


def _offline_context(stream: Stream, dialect: sa.engine.Dialect, out: _Capture) -> MigrationContext:
    opts: dict[str, Any] = {
        "as_sql": True,
        "output_buffer": out,
        "literal_binds": True,
        "transactional_ddl": False,
        "version_table": identifiers.sa_object(stream.version_table),
    }
    if stream.metadata is not None:
        # Ops name unnamed constraints by target_metadata's naming convention, as they do
        # online (autogenerate.context_options); without it replayed tenants got other names.
        opts["target_metadata"] = stream.metadata
    return MigrationContext.configure(dialect=dialect, opts=opts)


def render_upgrade(stream: Stream, script: Script, dialect: sa.engine.Dialect) -> list[str] | None:
    """The statements of one revision's ``upgrade()`` with no schema names (offline mode);
    None when it needs a live connection (see the module's doc)."""
    flag = getattr(script.module, "alembic_schemas_replay", None)
    if flag is False:
        return None
    out = _Capture()
    mc = _offline_context(stream, dialect, out)

    def refuse(*_: Any, **__: Any) -> Any:
        raise _NeedsConnection

    compat.replace_autocommit_block(mc, refuse)

    def refuse_tabs(construct: Any) -> None:
        statement = sa.text(construct) if isinstance(construct, str) else construct
        kw = {} if isinstance(statement, sa.schema.DDLElement) else {"literal_binds": True}
        # SQLAlchemy indents DDL with a tab after each newline: only other tabs count.
        text = str(statement.compile(dialect=dialect, compile_kwargs=kw)).replace("\n\t", "\n")
        if "\t" in text:
            raise _NeedsConnection

    compat.wrap_exec(mc, refuse_tabs)
    try:
        uses = {"get_bind": refuse, "get_context": refuse, "run_async": refuse}
        with ALEMBIC_LOCK, compat.operations(mc, **uses):
            script.module.upgrade()
    except Exception:
        if flag is True:
            raise  # forced replay of a revision that cannot be rendered: say why
        return None
    return out.take()


def is_replayable(stream: Stream, script: Script, dialect: sa.engine.Dialect) -> bool:
    return render_upgrade(stream, script, dialect) is not None


class Replayer:
    """Renders each revision of a stream at most once, and splits ways into segments."""

    def __init__(self, stream: Stream, dialect: sa.engine.Dialect) -> None:
        self.stream = stream
        self.dialect = dialect
        self._sql: dict[str, list[str] | None] = {}
        self._ways: dict[tuple[Heads, str], list[Segment]] = {}
        self._steps: dict[Online, list[Any]] = {}
        self._lock = threading.Lock()

    def statements(self, script: Script) -> list[str] | None:
        if script.revision not in self._sql:
            self._sql[script.revision] = render_upgrade(self.stream, script, self.dialect)
        return self._sql[script.revision]

    def segments(self, current: Heads, destination: str) -> list[Segment]:
        """The way from ``current`` to ``destination`` as Alembic would walk it."""
        with self._lock:
            key = (current, destination)
            if key not in self._ways:
                self._ways[key] = self._split(current, destination)
            return self._ways[key]

    def steps(self, segment: Online) -> list[Any]:
        """Alembic's step for an online segment of a way :meth:`segments` split (its one
        revision, from its heads)."""
        with self._lock:
            return self._steps[segment]

    def _split(self, current: Heads, destination: str) -> list[Segment]:
        steps = compat.upgrade_steps(self.stream.script, destination, current)
        out = _Capture()
        versions = compat.head_maintainer(_offline_context(self.stream, self.dialect, out), current)
        segments: list[Segment] = []
        run = _Run(tuple(sorted(versions.heads)))
        for step in steps:
            script = step.revision
            statements = self.statements(script)
            before = tuple(sorted(versions.heads))
            versions.update_to_step(step)  # the version rows, as Alembic writes them
            version_sql = out.take()
            if statements is None:
                if run.revisions:
                    segments.append(self._replay(run, before))
                rows = tuple(database.rendered(sql) for sql in version_sql)
                online = Online(script.revision, before, rows)
                self._steps.setdefault(online, [step])
                segments.append(online)
                run = _Run(tuple(sorted(versions.heads)))
                continue
            run.add(script, statements, version_sql)
        if run.revisions:
            segments.append(self._replay(run, tuple(sorted(versions.heads))))
        return segments

    def _replay(self, run: _Run, end: Heads) -> Replay:
        """The run's statements with the version rows' between revisions or, when the run
        goes from at most one head to one and no statement names the version table, only
        Alembic's statement from the first to the last (the rows between are never seen:
        the tenant's one transaction holds them)."""
        table = self.stream.version_table.lower()
        named = any(table in sql.lower() for _, sql_of, _ in run.steps for sql in sql_of)
        if len(run.start) > 1 or len(end) != 1 or named:
            return run.replay(interleaved=True)
        out = _Capture()
        compat.move_head(_offline_context(self.stream, self.dialect, out), run.start, end[0])
        return run.replay(interleaved=False, version_sql=out.take())


@dataclass
class _Run:
    """Consecutive replayable revisions of a way, from the version rows ``start``."""

    start: Heads
    revisions: list[tuple[str, str | None]] = field(default_factory=list)
    # (revision, its own statements, the version-row statements Alembic writes after it)
    steps: list[tuple[str, list[str], list[str]]] = field(default_factory=list)

    def add(self, script: Script, statements: list[str], version_sql: list[str]) -> None:
        self.revisions.append((script.revision, records.file_checksum(script.path)))
        self.steps.append((script.revision, statements, version_sql))

    def replay(self, *, interleaved: bool, version_sql: Sequence[str] = ()) -> Replay:
        sql: list[str] = []
        owners: list[str] = []
        for revision, statements, versions in self.steps:
            mine = statements + versions if interleaved else statements
            sql += mine
            owners += [revision] * len(mine)
        sql += version_sql
        owners += [self.steps[-1][0]] * len(version_sql)
        queries = tuple(database.rendered(statement) for statement in sql)
        return Replay(tuple(sql), tuple(self.revisions), tuple(owners), queries)
