"""Plan and run a tenant stream's upgrade over many schemas.

* Plan: every tenant's current revision is read in a few bulk queries; tenants already at
  the target are skipped without opening a transaction.
* Replay: each revision on the path is rendered to SQL once (Alembic offline mode, no schema
  names), then replayed per tenant with ``search_path`` pinned to that tenant. The SQL never
  contains a tenant name; only ``SET LOCAL search_path`` and ``CREATE SCHEMA`` name it,
  through :mod:`identifiers`. Revisions that read the database (``op.get_bind()``,
  ``batch_alter_table``, ``autocommit_block``, ...) or that set ``alembic_schemas_replay =
  False`` run through Alembic itself, one tenant at a time (Alembic's ``op``/``context`` are
  module-global, so those runs are serialised by a process-wide lock).
* Workers: ``jobs`` threads, each with its own connection; psycopg releases the GIL while
  PostgreSQL works, so both cores are busy.
* Safety: one transaction per tenant holds its revisions and version row; a transaction-scoped
  advisory lock per (stream, tenant) makes concurrent runs skip, then wait for, each other's
  tenants; lock timeouts are retried with back-off; every attempt is recorded.
"""

from __future__ import annotations

import io
import queue
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from alembic.script import Script
from sqlalchemy.engine import Connection, Engine

from . import database, environment, identifiers, recorder
from .errors import AlembicSchemasError
from .results import SchemaResult
from .streams import SCHEMA_KEY, Stream

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
_ALEMBIC_LOCK = threading.Lock()  # alembic.op / alembic.context are module globals
_PLAN_CHUNK = 500


@dataclass
class Step:
    """One revision on a linear path: its id, its parent and (when replayable) its SQL."""

    revision: str
    down: str | None
    sql: str | None
    merge: bool = False
    checksum: str | None = None  # of the revision file, recorded in alembic_schemas.applied


@dataclass
class Plan:
    target: tuple[str, ...]
    current: dict[str, tuple[str, ...]]
    todo: list[str] = field(default_factory=list)


def shard_of(tenant: str, shards: int) -> int:
    """Stable shard number (1..shards) of a tenant name."""
    return zlib.crc32(tenant.encode("utf-8")) % shards + 1


def select_shard(tenants: Iterable[str], shard: tuple[int, int] | None) -> list[str]:
    if shard is None:
        return list(tenants)
    k, n = shard
    return [t for t in tenants if shard_of(t, n) == k]


def read_versions(
    conn: Connection, schemas: Sequence[str], version_table: str, *, bulk: bool = False
) -> dict[str, tuple[str, ...]]:
    """Every schema's version rows in a few round trips; a schema without one is at base.

    ``bulk``: end the transaction after each chunk. Reading a table locks it until the
    transaction ends, and 10,000 tenants' locks overflow the server's lock table."""
    found: dict[str, tuple[str, ...]] = {s: () for s in schemas}
    with_table = list(
        conn.execute(
            sa.text(
                "SELECT n.nspname FROM pg_catalog.pg_namespace n "
                "JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid "
                "WHERE c.relname = :vt AND c.relkind = 'r' AND n.nspname = ANY(:schemas)"
            ),
            {"vt": version_table, "schemas": list(schemas)},
        ).scalars()
    )
    for start in range(0, len(with_table), _PLAN_CHUNK):
        chunk = with_table[start : start + _PLAN_CHUNK]
        sql = " UNION ALL ".join(
            f"SELECT {i} AS i, version_num FROM {identifiers.qualified(s, version_table)}"
            for i, s in enumerate(chunk)
        )
        rows: dict[str, list[str]] = {}
        for i, version in database.run_sql(conn, sql):
            rows.setdefault(chunk[i], []).append(version)
        if bulk:
            conn.rollback()
        for s in chunk:
            found[s] = tuple(sorted(rows.get(s, [])))
    return found


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
        "version_table": stream.version_table,
    }
    if stream.metadata is not None:
        # Ops name unnamed constraints by target_metadata's naming convention, as they do
        # online (environment.context_options); without it replayed tenants got other names.
        opts["target_metadata"] = stream.metadata
    mc = MigrationContext.configure(dialect=dialect, opts=opts)
    impl = mc.impl
    exec_ = impl._exec

    def exec_checked(construct: Any, *args: Any, **kwargs: Any) -> Any:
        statement = sa.text(construct) if isinstance(construct, str) else construct
        kw = {} if isinstance(statement, sa.schema.DDLElement) else {"literal_binds": True}
        # SQLAlchemy indents DDL with a tab after each newline: only other tabs count.
        text = str(statement.compile(dialect=dialect, compile_kwargs=kw)).replace("\n\t", "\n")
        if "\t" in text:
            raise _HasTab
        return exec_(construct, *args, **kwargs)

    impl._exec = exec_checked  # type: ignore[method-assign]
    try:
        with _ALEMBIC_LOCK, Operations.context(mc):
            script.module.upgrade()
    except _HasTab:
        return None
    return buf.getvalue()


class Replayer:
    """Renders each revision of a stream at most once, and finds linear paths."""

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
                    checksum = recorder.file_checksum(sc.path)
                    self._steps[revision] = Step(revision, down, sql, checksum=checksum)
            return self._steps[revision]

    def path(
        self, current: tuple[str, ...], target: tuple[str, ...]
    ) -> tuple[list[Step], bool] | None:
        """The replayable steps from ``current`` towards ``target``, and whether they reach it.

        None when the way is not a single linear chain (branches, merges, downgrades): then
        Alembic does all of it. Otherwise the leading replayable revisions are replayed and
        Alembic takes over, in the same transaction, from the first that needs a connection.
        """
        if len(target) != 1 or len(current) > 1:
            return None
        chain: list[Step] = []
        rev: str | None = target[0]
        start = current[0] if current else None
        while rev != start:
            if rev is None:
                return None  # current is not an ancestor of target (downgrade or branch)
            step = self.step(rev)
            if step.merge:
                return None  # Alembic walks merge points
            chain.append(step)
            rev = step.down
        chain.reverse()
        prefix: list[Step] = []
        for step in chain:
            if step.sql is None:
                break
            prefix.append(step)
        return prefix, len(prefix) == len(chain)


def version_table(name: str) -> sa.Table:
    """Alembic's version table, unqualified (it resolves through the tenant's search_path)."""
    return sa.Table(
        name,
        sa.MetaData(),
        sa.Column("version_num", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("version_num", name=f"{name}_pkc"),
    )


class Executor:
    """Upgrades one tenant stream over a list of tenants with ``jobs`` parallel workers."""

    def __init__(
        self,
        stream: Stream,
        engine: Engine,
        *,
        jobs: int,
        max_failures: int = 0,
        on_result: Callable[[SchemaResult], None] | None = None,
    ) -> None:
        self.stream = stream
        self.project = stream.project
        self.engine = engine
        self.jobs = max(1, jobs)
        self.max_failures = max_failures
        self.on_result = on_result
        self.replayer = Replayer(stream, engine.dialect)
        self._vt = version_table(stream.version_table)
        self._failures = 0
        self._stop = threading.Event()
        self._count_lock = threading.Lock()

    def resolve_target(self, revision: str) -> tuple[str, ...]:
        script = self.stream.script
        if revision in ("head", "heads"):
            return tuple(sorted(script.get_heads()))
        revs = script.get_revisions(revision)
        return tuple(sorted(r.revision for r in revs if r is not None))

    def plan(self, tenants: Sequence[str], revision: str) -> Plan:
        target = self.resolve_target(revision)
        with database.connect(self.engine) as conn:
            current = read_versions(conn, tenants, self.stream.version_table, bulk=True)
            conn.rollback()
        todo = [t for t in tenants if current[t] != target]
        return Plan(target, current, todo)

    # --- running -------------------------------------------------------------------------

    def run(self, plan: Plan, revision: str) -> list[SchemaResult]:
        """Apply ``plan``; returns one outcome per tenant that was attempted."""
        if plan.todo:
            # the applied-revision rows are written in each tenant's transaction
            with database.connect(self.engine) as conn:
                recorder.ensure(conn)
                conn.commit()
        work: queue.Queue[str] = queue.Queue()
        for t in plan.todo:
            work.put(t)
        deferred: list[str] = []
        outcomes: list[SchemaResult] = []
        out_lock = threading.Lock()

        def drain(wait: bool) -> None:
            with database.connect(self.engine) as conn:
                while not self._stop.is_set():
                    try:
                        tenant = work.get_nowait()
                    except queue.Empty:
                        return
                    outcome = self._attempt(conn, tenant, plan, revision, wait=wait)
                    if outcome is None:  # another run holds this tenant: come back later
                        with out_lock:
                            deferred.append(tenant)
                        continue
                    self._record(outcome, outcomes, out_lock)

        self._parallel(lambda: drain(wait=False))
        if deferred and not self._stop.is_set():
            for t in deferred:
                work.put(t)
            self._parallel(lambda: drain(wait=True))  # waiting never defers again
        return outcomes

    def _parallel(self, fn: Callable[[], None]) -> None:
        threads = [threading.Thread(target=fn, daemon=True) for _ in range(self.jobs)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()

    def _record(
        self, outcome: SchemaResult, outcomes: list[SchemaResult], lock: threading.Lock
    ) -> None:
        with lock:
            outcomes.append(outcome)
            if outcome.error:
                self._failures += 1
                if self._failures > self.max_failures:
                    self._stop.set()
        if self.on_result is not None:
            self.on_result(outcome)

    def _attempt(
        self, conn: Connection, tenant: str, plan: Plan, revision: str, *, wait: bool
    ) -> SchemaResult | None:
        """One tenant, with lock-timeout retries. None: skipped because another run holds it."""
        started = time.perf_counter()
        before = plan.current.get(tenant, ())
        try:
            result, error = database.with_retries(
                conn,
                self.project.lock_retries,
                self.project.lock_timeout,
                lambda: self._migrate(conn, tenant, plan.target, revision, wait=wait),
            )
        except AlembicSchemasError as exc:  # e.g. a refused autocommit_block
            return self._failed(conn, tenant, before, started, str(exc))
        except Exception as exc:  # a revision's own Python error
            lines = str(exc).strip().splitlines()
            return self._failed(
                conn, tenant, before, started, f"{type(exc).__name__}: {lines[0] if lines else ''}"
            )
        if error is not None:
            return self._failed(conn, tenant, before, started, error)
        if result is None:
            return None
        before, after = result
        return SchemaResult(
            self.stream.name, tenant, True, before, after, time.perf_counter() - started
        )

    def _failed(
        self, conn: Connection, tenant: str, before: tuple[str, ...], started: float, error: str
    ) -> SchemaResult:
        seconds = time.perf_counter() - started
        reached = database.read_after_failure(
            conn, lambda: read_versions(conn, [tenant], self.stream.version_table)[tenant], before
        )
        return SchemaResult(self.stream.name, tenant, True, before, reached, seconds, error)

    def _migrate(
        self, conn: Connection, tenant: str, target: tuple[str, ...], revision: str, *, wait: bool
    ) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
        """One transaction: lock, read the version under the lock, apply, record the version."""
        with database.transaction(conn):
            # Lock before naming the tenant in search_path: see environment.prepare.
            database.set_local(
                conn,
                lock_timeout=self.project.lock_timeout,
                statement_timeout=self.project.statement_timeout,
            )
            if wait:
                environment.wait_lock(conn, self.stream.name, tenant, self.project.lock_timeout)
            elif not environment.try_lock(conn, self.stream.name, tenant):
                return None
            config = self.stream.config
            database.run_sql(
                conn, environment.create_schema_sql(tenant, config.owner, config.grants)
            )
            database.set_local(conn, search_path=(tenant,))
            current = read_versions(conn, [tenant], self.stream.version_table)[tenant]
            if current == target:
                return current, current
            way = self.replayer.path(current, target)
            steps, complete = way if way is not None else ([], False)
            if steps:
                if not current:
                    # a tenant downgraded to base keeps its (empty) version table
                    conn.execute(sa.schema.CreateTable(self._vt, if_not_exists=True))
                for step in steps:
                    if step.sql.strip():  # type: ignore[union-attr]
                        # Rendered with the engine's pyformat dialect, so a literal % is
                        # doubled; passing (empty) parameters lets the driver undo that.
                        conn.exec_driver_sql(step.sql)  # type: ignore[arg-type]
                reached = steps[-1].revision
                if current:
                    conn.execute(
                        self._vt.update()
                        .where(self._vt.c.version_num == current[0])
                        .values(version_num=reached)
                    )
                else:
                    conn.execute(self._vt.insert().values(version_num=reached))
                recorder.record_applied(
                    conn,
                    self.stream.name,
                    tenant,
                    [(st.revision, st.checksum) for st in steps if st.checksum is not None],
                )
            if complete:
                return current, target
            # Alembic runs in this transaction, under the lock already held: the version read
            # above stays true, so a concurrent run cannot also report this tenant applied.
            after = self._via_alembic(conn, tenant, revision)
            recorder.sync_applied(conn, self.stream.script, self.stream.name, tenant, after)
            return current, after

    def _via_alembic(self, conn: Connection, tenant: str, revision: str) -> tuple[str, ...]:
        """Revisions that need a live connection: Alembic runs them, one tenant at a time,
        inside the caller's transaction (run_in_context takes the advisory lock again, which
        this session already holds, so it never waits on another run)."""
        from .api import current_heads

        with _ALEMBIC_LOCK:
            command.upgrade(
                self.stream.alembic_config(connection=conn, **{SCHEMA_KEY: tenant}), revision
            )
            return current_heads(conn, self.stream, tenant)
