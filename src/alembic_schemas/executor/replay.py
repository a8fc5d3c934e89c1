"""Rendering a revision's ``upgrade()`` to SQL once, to replay it in every tenant.

A revision is replayed when it does not need a live connection: it is rendered in Alembic's
offline mode, with no schema names, and the SQL is run in each tenant with ``search_path``
pinned there. Revisions that read the database (``op.get_bind()``, ``batch_alter_table``,
``autocommit_block``, ...) or set ``alembic_schemas_replay = False`` run through Alembic.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from alembic.script import Script

from .. import identifiers, records
from ..runtime import compat
from ..streams import Stream
from . import plan

# Source markers of revisions that need a live connection, so cannot be replayed as SQL.
ONLINE_MARKERS = (
    "get_bind",
    "get_context",
    "batch_alter_table",
    "autocommit_block",
    "inspect(",
    "run_async",
    "migration_context",
)
# alembic.op / alembic.context are module globals: one Alembic run at a time per process.
# Re-entrant: on Citus a worker may take it before its schema's transaction (executor.turns).
ALEMBIC_LOCK = threading.RLock()


@dataclass
class Step:
    """One revision on a linear path: its id, its parent and (when replayable) its SQL."""

    revision: str
    down: str | None
    sql: str | None
    merge: bool = False
    checksum: str | None = None  # of the revision file, recorded in alembic_schemas.applied


def is_replayable(script: Script) -> bool:
    module = script.module
    flag = getattr(module, "alembic_schemas_replay", None)
    if flag is not None:
        return bool(flag)
    try:
        with open(script.path, encoding="utf-8") as f:
            source = f.read()
    except OSError:
        return False
    return not any(marker in source for marker in ONLINE_MARKERS)


class _HasTab(Exception):
    pass


def render_upgrade(stream: Stream, script: Script, dialect: sa.engine.Dialect) -> str | None:
    """The SQL of one revision's ``upgrade()``, with no schema names (offline mode); None
    when a statement holds a tab, which Alembic's offline output turns into four spaces (a
    literal 'a\tb' would be replayed as 'a    b'): Alembic then runs that revision."""
    buf = io.StringIO()
    opts: dict[str, Any] = {
        "as_sql": True,
        "output_buffer": buf,
        "literal_binds": True,
        "transactional_ddl": False,
        "version_table": identifiers.sa_object(stream.version_table),
    }
    if stream.metadata is not None:
        # Ops name unnamed constraints by target_metadata's naming convention, as they do
        # online (autogenerate.context_options); without it replayed tenants got other names.
        opts["target_metadata"] = stream.metadata
    mc = MigrationContext.configure(dialect=dialect, opts=opts)

    def refuse_tabs(construct: Any) -> None:
        statement = sa.text(construct) if isinstance(construct, str) else construct
        kw = {} if isinstance(statement, sa.schema.DDLElement) else {"literal_binds": True}
        # SQLAlchemy indents DDL with a tab after each newline: only other tabs count.
        text = str(statement.compile(dialect=dialect, compile_kwargs=kw)).replace("\n\t", "\n")
        if "\t" in text:
            raise _HasTab

    compat.wrap_exec(mc, refuse_tabs)
    try:
        with ALEMBIC_LOCK, Operations.context(mc):
            script.module.upgrade()
    except _HasTab:
        return None
    return buf.getvalue()


class Replayer:
    """Renders each revision of a stream at most once, and finds replayable paths."""

    def __init__(self, stream: Stream, dialect: sa.engine.Dialect) -> None:
        self.stream = stream
        self.dialect = dialect
        self._steps: dict[str, Step] = {}
        self._lock = threading.Lock()

    def step(self, revision: str) -> Step:
        with self._lock:
            if revision not in self._steps:
                sc = self.stream.script.get_revision(revision)
                assert sc is not None
                down = sc.down_revision
                if not (down is None or isinstance(down, str)):
                    self._steps[revision] = Step(revision, None, None, merge=True)
                else:
                    replay = is_replayable(sc)
                    sql = render_upgrade(self.stream, sc, self.dialect) if replay else None
                    checksum = records.file_checksum(sc.path)
                    self._steps[revision] = Step(revision, down, sql, checksum=checksum)
            return self._steps[revision]

    def _parent(self, revision: str) -> str | tuple[str, ...] | None:
        step = self.step(revision)
        return ("merge",) if step.merge else step.down

    def path(self, current: plan.Heads, target: plan.Heads) -> tuple[list[Step], bool] | None:
        """The replayable steps from ``current`` towards ``target``, and whether they reach it.

        None when the way is not a single linear chain (branches, merges, downgrades): then
        Alembic does all of it. Otherwise the leading replayable revisions are replayed and
        Alembic takes over, in the same transaction, from the first that needs a connection.
        """
        chain = plan.linear_path(current, target, self._parent)
        if chain is None:
            return None
        prefix: list[Step] = []
        for revision in chain:
            step = self.step(revision)
            if step.sql is None:
                break
            prefix.append(step)
        return prefix, len(prefix) == len(chain)
