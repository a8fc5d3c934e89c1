"""The one executor: migrates the schemas of a stream, named or tenant, with one policy.

* Plan: every schema's current revision is read in a few bulk queries; tenants already at
  the target of an upgrade are skipped without opening a transaction.
* One transaction per schema holds its revisions and version rows, set up by
  :func:`alembic_schemas.runtime.schema.begin`: timeouts, the (stream, schema) advisory lock,
  the schema, the pinned search_path, and the version read again under the lock, so a
  concurrent run cannot also report the schema applied.
* Replay: a tenant's upgrade replays the revisions rendered once as SQL (see :mod:`.replay`),
  pipelined, one statement per query; Alembic runs the revisions that need a connection, in
  the same transaction, and the ones after are replayed again. Everything is rendered before
  any transaction opens: no transaction waits on this process.
* Workers: ``jobs`` threads, each with its own connection, when Alembic has nothing to run;
  ``jobs`` worker processes when it does (Alembic's ``op`` and ``context`` are module
  globals: a process of its own gives each worker its own), see :mod:`.workers`. A tenant
  held by a concurrent run is put aside and retried at the end with a waiting lock (named
  schemas always wait).
* Lock timeouts are retried with back-off; every outcome is handed to ``on_result``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from alembic.config import Config
from alembic.script.revision import RevisionError as AlembicRevisionError
from alembic.util import CommandError
from sqlalchemy.engine import Connection, Engine

from .. import citus, database, environment, extensions, records, versions
from ..config import Project
from ..errors import (
    AlembicSchemasError,
    ConfigError,
    DatabaseError,
    MigrationFailed,
    RevisionError,
    describe_python_error,
    mark_revision,
)
from ..results import SchemaResult
from ..runtime import autocommit, baseline, compat
from ..runtime import schema as schema_tx
from ..streams import PREPARED_KEY, SCHEMA_KEY, Stream
from . import workers
from .plan import Plan
from .replay import ALEMBIC_LOCK, Online, Replay, Replayer, Segment

log = logging.getLogger("alembic_schemas")

Heads = tuple[str, ...]


@dataclass(frozen=True)
class Action:
    """What to do to each schema: one of Alembic's verbs and its arguments."""

    verb: Literal["upgrade", "downgrade", "stamp"] = "upgrade"
    revision: str = "heads"
    purge: bool = False


def ensure_records(engine: Engine) -> None:
    """The run record's tables, before a run writes to them; one line when refused."""
    try:
        with database.connect(engine) as conn:
            records.ensure(conn)
            conn.commit()
    except sa.exc.DBAPIError as exc:
        raise DatabaseError(
            f"cannot create the run record (schema {records.SCHEMA}), nothing was migrated: "
            f"{database.describe(exc)}"
        ) from None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


class Executor:
    """Applies ``action`` to schemas of one stream with ``jobs`` parallel workers."""

    def __init__(
        self,
        stream: Stream,
        engine: Engine,
        action: Action,
        *,
        jobs: int = 1,
        max_failures: int = 0,
        on_result: Callable[[SchemaResult], None] | None = None,
    ) -> None:
        self.stream = stream
        self.project = stream.project
        self.engine = engine
        self.action = action
        self.jobs = max(1, jobs)
        self.max_failures = max_failures
        self.on_result = on_result
        self.replayer = (
            Replayer(stream, engine.dialect)
            if stream.is_tenant and action.verb == "upgrade"
            else None
        )
        self._failures = 0
        self._citus = False
        self._stop = threading.Event()
        self._configs = threading.local()

    def where(self, schema: str) -> str:
        return f"{self.stream.name}/{schema}" if self.stream.is_tenant else self.stream.name

    def stop(self) -> None:
        """Start no new schema; those in flight finish (or roll back)."""
        self._stop.set()

    def plan(self, schemas: Sequence[str]) -> Plan:
        """Where each schema stands. Tenants already at an upgrade's target are left out;
        a named schema is always visited (its result is reported, applied or not)."""
        target = versions.resolve(self.stream.script, self.action.revision) if self.replayer else ()
        with database.connect(self.engine) as conn:
            self._citus = citus.is_citus(conn)
            current = versions.read_versions(conn, schemas, self.stream.version_table, bulk=True)
            conn.rollback()
        todo = [s for s in schemas if not (self.replayer and current[s] == target)]
        return Plan(target, current, todo)

    def segments(self, plan: Plan) -> dict[Heads, list[Segment]]:
        """Every way the plan takes, rendered before any transaction opens."""
        if self.replayer is None:
            return {}
        try:
            return {
                current: self.replayer.segments(current, self.action.revision)
                for current in {plan.current[s] for s in plan.todo}
            }
        except (CommandError, AlembicRevisionError) as exc:
            raise RevisionError(f"{self.stream.name}: {_first_line(exc)}") from exc

    def needs_alembic(self, plan: Plan) -> bool:
        ways = self.segments(plan)
        if self.replayer is None:
            return bool(plan.todo)
        return any(isinstance(seg, Online) for way in ways.values() for seg in way)

    # --- running -------------------------------------------------------------------------

    def run(self, plan: Plan) -> list[SchemaResult]:
        """Apply the action to ``plan.todo``; one outcome per schema attempted."""
        if not plan.todo:
            return []
        ensure_records(self.engine)  # applied-revision rows are written per schema
        if self._citus and self.replayer is not None:
            self._refuse_unreferenceable(plan)
        if self.jobs > 1 and len(plan.todo) > 1 and self.needs_alembic(plan):
            return self._run_in_processes(plan)
        self.segments(plan)
        return self._run_in_threads(plan)

    def _refuse_unreferenceable(self, plan: Plan) -> None:
        """Citus, before any tenant is touched: tenant tables may reference only their own
        schema and reference tables (see :func:`alembic_schemas.citus.referenced_tables`)."""
        ways = self.segments(plan).values()
        sqls = [
            sql for way in ways for seg in way if isinstance(seg, Replay) for sql in seg.statements
        ]
        with database.connect(self.engine) as conn:
            citus.refuse_unreferenceable(
                conn, self.stream.config, self.stream.metadata, sqls, self.project
            )

    def _run_in_processes(self, plan: Plan) -> list[SchemaResult]:
        """``jobs`` worker processes, each with its own Alembic globals, Executor and
        connection, migrate tenants the parent hands out; outcomes come back here."""
        recipe = _Recipe(
            self.project,
            self.stream.name,
            self.engine.url.render_as_string(hide_password=False),
            self.action,
            plan,
            citus.Gate(workers.mp_context()) if self._citus else None,
        )
        return workers.run(
            plan.todo,
            jobs=self.jobs,
            initializer=_start_worker,
            initargs=(recipe,),
            task=_attempt_in_worker,
            on_outcome=self.record,
            stopped=self._stop.is_set,
        )

    def _run_in_threads(self, plan: Plan) -> list[SchemaResult]:
        work: queue.Queue[str] = queue.Queue()
        for schema in plan.todo:
            work.put(schema)
        deferred: list[str] = []
        outcomes: list[SchemaResult] = []
        lock = threading.Lock()

        def drain(wait: bool) -> None:
            with database.connect(self.engine) as conn:
                while not self._stop.is_set():
                    try:
                        schema = work.get_nowait()
                    except queue.Empty:
                        return
                    outcome = self.attempt(conn, schema, plan, wait=wait)
                    if outcome is None:  # another run holds this schema: come back later
                        with lock:
                            deferred.append(schema)
                        continue
                    with lock:
                        outcomes.append(outcome)
                    self.record(outcome)

        jobs = min(self.jobs, len(plan.todo))
        # Named schemas wait for a concurrent run at once; tenants are tried first.
        self._parallel(jobs, lambda: drain(wait=not self.stream.is_tenant))
        if deferred and not self._stop.is_set():
            for schema in deferred:
                work.put(schema)
            self._parallel(min(jobs, len(deferred)), lambda: drain(wait=True))
        return outcomes

    def _parallel(self, jobs: int, fn: Callable[[], None]) -> None:
        if jobs == 1:
            fn()
            return
        with ThreadPoolExecutor(jobs, thread_name_prefix="alembic-schemas") as pool:
            futures = [pool.submit(fn) for _ in range(jobs)]
            try:
                for future in futures:
                    future.result()
            except BaseException:
                self._stop.set()  # e.g. an unknown revision: no new schema starts
                raise

    def record(self, outcome: SchemaResult) -> None:
        """Count a failure (stopping past ``max_failures``) and report the outcome."""
        if outcome.error:
            self._failures += 1
            if self._failures > self.max_failures:
                self._stop.set()
        if self.on_result is not None:
            self.on_result(outcome)

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def attempt(
        self, conn: Connection, schema: str, plan: Plan, *, wait: bool
    ) -> SchemaResult | None:
        """One schema, with lock-timeout retries. None: skipped, another run holds it."""
        started = time.perf_counter()
        before = plan.current.get(schema, ())
        try:
            result, error = database.with_retries(
                conn,
                self.project.lock_retries,
                self.project.lock_timeout,
                lambda: self._migrate(conn, schema, plan, wait=wait),
            )
        except (CommandError, AlembicRevisionError) as exc:
            # The same REVISION goes to every stream: say which one it failed in.
            raise RevisionError(f"{self.where(schema)}: {_first_line(exc)}") from exc
        except ConfigError:  # e.g. the stream's metadata does not import: a usage error
            raise
        except AlembicSchemasError as exc:  # e.g. a refused autocommit_block
            # describe: with the notes saying what was done about it (an index dropped)
            # (its message names the revision itself when it was raised in one)
            error = database.describe(exc, revision=False)
            return self._failed(conn, schema, before, started, error)
        except Exception as exc:  # a revision's own Python error
            log.debug("%s failed", self.where(schema), exc_info=True)
            return self._failed(conn, schema, before, started, describe_python_error(exc))
        if error is not None:
            return self._failed(conn, schema, before, started, error)
        if result is None:
            return None
        found, after = result
        seconds = time.perf_counter() - started
        return SchemaResult(self.stream.name, schema, self.stream.is_tenant, found, after, seconds)

    def _read(self, conn: Connection, schema: str) -> Heads:
        return versions.read_versions(conn, [schema], self.stream.version_table)[schema]

    def _failed(
        self, conn: Connection, schema: str, before: Heads, started: float, error: str
    ) -> SchemaResult:
        seconds = time.perf_counter() - started
        # An autocommit_block may have committed revisions: where it stopped is read.
        reached = database.read_after_failure(conn, lambda: self._read(conn, schema), before)
        if self.stream.is_tenant:  # an extension another tenant took?
            error = database.read_after_failure(
                conn, lambda: extensions.hint(conn, self.stream, schema, error), error
            )
        return SchemaResult(
            self.stream.name, schema, self.stream.is_tenant, before, reached, seconds, error
        )

    def _migrate(
        self, conn: Connection, schema: str, plan: Plan, *, wait: bool
    ) -> tuple[Heads, Heads] | None:
        """One transaction: set-up and lock, read the version under the lock, apply."""
        with citus.shared(), database.transaction(conn):
            lock: schema_tx.Lock = "wait" if wait else "try"
            current = schema_tx.begin(conn, self.stream, schema, lock=lock, read=True, restart=True)
            if current is None:
                return None
            found = current
            if self.action.verb == "upgrade" and not current:  # a new schema: from its baseline?
                current = baseline.build_new(conn, self.stream, schema, self.action.revision)
            if self.replayer is None:  # named streams, downgrade, stamp: Alembic
                return found, self._via_alembic(conn, schema, self.action)
            if current == plan.target:
                return found, current
            way = self.replayer.segments(current, self.action.revision)
            if len(way) == 1 and isinstance(way[0], Replay):  # the common case: one pipeline
                self._replay(conn, schema, way[0], record=True)
                return found, plan.target
            session: environment.Session | None = None
            unsent: list[Online] = []  # revisions Alembic ran whose version rows are not sent
            try:
                for segment in way:
                    if isinstance(segment, Replay):
                        self._replay(conn, schema, segment, record=False, rows_of=unsent)
                        unsent = []
                        continue
                    session = session or environment.Session(
                        self.stream, schema, conn, self.action.revision, self._config()
                    )
                    unsent = self._online(conn, schema, session, segment, unsent)
            finally:
                if session is not None:
                    session.close()
            read = (versions.select_sql(self.stream.version_table, schema), None)
            after = tuple(sorted(str(r[0]) for r in self._send(conn, [read], (), rows_of=unsent)))
            # The replayed revisions' rows, then those of the revisions Alembic ran (a commit
            # around an autocommit_block synced them already for what it committed).
            replayed = [rev for seg in way if isinstance(seg, Replay) for rev in seg.revisions]
            statements = self._applied(schema, replayed)
            statements += records.sync_statements(
                self.stream.script,
                self.stream.name,
                schema,
                after,
                recorded={rev for rev, checksum in replayed if checksum},
            )
            database.send(conn, statements)
            return found, after

    def _applied(
        self, schema: str, revisions: Sequence[tuple[str, str | None]]
    ) -> list[database.Statement]:
        """The statement recording ``revisions`` (those with a file) as applied, if any."""
        rows = [(rev, checksum) for rev, checksum in revisions if checksum]
        return [records.applied_upsert(self.stream.name, schema, rows)] if rows else []

    def _replay(
        self,
        conn: Connection,
        schema: str,
        segment: Replay,
        *,
        record: bool,
        rows_of: Sequence[Online] = (),
    ) -> None:
        """Send a segment's statements, after the version rows of the revisions Alembic ran
        before it (``rows_of``); with ``record``, its revisions' applied rows too."""
        statements = list(segment.queries)
        if record:
            statements += self._applied(schema, segment.revisions)
        self._send(conn, statements, segment.owners, rows_of=rows_of)

    def _send(
        self,
        conn: Connection,
        statements: Sequence[database.Statement],
        owners: Sequence[str],
        *,
        rows_of: Sequence[Online] = (),
    ) -> list[tuple[Any, ...]]:
        """Send the version rows of the revisions Alembic ran (``rows_of``), checked as Alembic
        checks them (an UPDATE or DELETE changes one row), then ``statements`` (those of
        revisions ``owners``), in one pipeline; the rows of the last. Errors name the
        revision."""
        rows = [(sql, online.revision) for online in rows_of for sql in online.versions]
        checked = [i for i, ((sql, _), _) in enumerate(rows) if not sql.startswith("INSERT")]
        owners = [revision for _, revision in rows] + list(owners)
        try:
            return database.send(conn, [sql for sql, _ in rows] + list(statements), one_row=checked)
        except sa.exc.DBAPIError as exc:  # no frame of the revision's file: say which it was
            index = getattr(exc, "statement_index", None)
            if index is not None and index < len(owners):
                mark_revision(exc, owners[index], self._path(owners[index]))
            raise
        except database.RowCountError as exc:  # as Alembic's check, which was spared
            revision = owners[exc.index]
            raise MigrationFailed(
                f"revision {revision} ({self._path(revision)}): the version table changed under"
                f" Alembic: its version-row statement after the revision matched {exc.found}"
                f" rows, not one: {exc.sql}"
            ) from None

    def _path(self, revision: str) -> str | None:
        script = self.stream.script.get_revision(revision)
        return None if script is None else script.path

    def _config(self) -> Config:
        """This thread's Alembic Config for tenants' sessions (one per thread, as the cookbook
        loop's one Config: building one reads the stream's alembic.ini)."""
        cfg: Config | None = getattr(self._configs, "config", None)
        if cfg is None:
            cfg = self._configs.config = self.stream.alembic_config()
        return cfg

    def _online(
        self,
        conn: Connection,
        schema: str,
        session: environment.Session,
        segment: Online,
        rows_of: Sequence[Online],
    ) -> list[Online]:
        """Alembic runs one revision of a replayed way, from the version rows the executor
        wrote (``segment.heads``; those of the revisions Alembic ran just before it, ``rows_of``,
        are sent first), on the schema's run kept by ``session``. Returns ``[segment]`` when
        its own version rows are left to send, else none."""
        assert self.replayer is not None
        steps = self.replayer.steps(segment)
        self._send(conn, [], (), rows_of=rows_of)
        with ALEMBIC_LOCK:
            # A partially applied revision is never replayed (its block needs Alembic).
            autocommit.refuse_partial(conn, self.stream, schema)
            deferred = session.run(segment.heads, steps)
        return [segment] if deferred else []

    def _via_alembic(self, conn: Connection, schema: str, action: Action) -> Heads:
        """Alembic runs ``action`` inside the schema's transaction, already set up; the
        applied-revision rows are then made to match the version rows, in the same
        transaction."""
        cfg = self.stream.alembic_config(
            connection=conn, **{SCHEMA_KEY: schema, PREPARED_KEY: True}
        )
        with ALEMBIC_LOCK:
            if action.verb == "stamp":  # whoever stamps has settled partial revisions
                records.clear_partial(conn, self.stream.name, schema)
            else:
                autocommit.refuse_partial(conn, self.stream, schema)
            compat.run_alembic(
                cfg, self.stream.script, action.verb, action.revision, purge=action.purge
            )
        after = self._read(conn, schema)
        records.sync_applied(conn, self.stream.script, self.stream.name, schema, after)
        return after


@dataclass(frozen=True)
class _Recipe:
    """What a worker process needs to build its own Executor (all of it picklable)."""

    project: Project
    stream: str
    url: str
    action: Action
    plan: Plan
    gate: citus.Gate | None = None  # on Citus: autocommit blocks wait for no open transaction


@dataclass
class _Worker:
    executor: Executor
    conn: Connection
    plan: Plan


_worker: _Worker | None = None  # set in a worker process only, by _start_worker


def _start_worker(recipe: _Recipe) -> None:
    """In a new worker process: its own engine, connection and Executor; the tenants the
    parent hands out are rendered here again, before any transaction opens."""
    global _worker
    workers.ignore_interrupts()  # Ctrl-C is the parent's: in-flight tenants finish
    citus.use_gate(recipe.gate)
    project = recipe.project
    stream = Stream(project, project.stream(recipe.stream))
    engine = database.create_engine(recipe.url, poolclass=sa.pool.NullPool)
    executor = Executor(stream, engine, recipe.action)
    executor.segments(recipe.plan)
    conn = engine.connect()
    _worker = _Worker(executor, conn, recipe.plan)


def _attempt_in_worker(schema: str, wait: bool) -> SchemaResult | None:
    assert _worker is not None, "not a worker process"
    return _worker.executor.attempt(_worker.conn, schema, _worker.plan, wait=wait)
