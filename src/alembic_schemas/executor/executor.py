"""The one executor: migrates the schemas of a stream, named or tenant, with one policy.

* Plan: every schema's current revision is read in a few bulk queries; tenants already at
  the target of an upgrade are skipped without opening a transaction.
* One transaction per schema holds its revisions and version row, set up by
  :func:`alembic_schemas.runtime.schema.begin`: timeouts, the (stream, schema) advisory lock,
  the schema, the pinned search_path. The version is read again under the lock, so a
  concurrent run cannot also report the schema applied.
* Replay: a tenant's upgrade replays the revisions rendered once as SQL (see :mod:`.replay`);
  Alembic runs the rest in the same transaction, one schema at a time per process (its
  ``op``/``context`` are module globals).
* Workers: ``jobs`` threads, each with its own connection; psycopg releases the GIL while
  PostgreSQL works. A tenant held by a concurrent run is put aside and retried at the end
  with a waiting lock (named schemas always wait).
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
from typing import Literal

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script.revision import RevisionError as AlembicRevisionError
from alembic.util import CommandError
from sqlalchemy.engine import Connection, Engine

from .. import database, extensions, records, versions
from ..errors import (
    AlembicSchemasError,
    ConfigError,
    DatabaseError,
    RevisionError,
    describe_python_error,
    mark_revision,
)
from ..results import SchemaResult
from ..runtime import autocommit, baseline
from ..runtime import schema as schema_tx
from ..streams import PREPARED_KEY, SCHEMA_KEY, Stream
from .plan import Plan
from .replay import ALEMBIC_LOCK, Replayer, Step

log = logging.getLogger("alembic_schemas")

Heads = tuple[str, ...]


@dataclass(frozen=True)
class Action:
    """What to do to each schema: one of Alembic's verbs and its arguments."""

    verb: Literal["upgrade", "downgrade", "stamp"] = "upgrade"
    revision: str = "heads"
    purge: bool = False

    def run(self, cfg: Config) -> None:
        if self.verb == "upgrade":
            command.upgrade(cfg, self.revision)
        elif self.verb == "downgrade":
            command.downgrade(cfg, self.revision)
        else:
            command.stamp(cfg, self.revision, purge=self.purge)


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
        self.replayer = Replayer(stream, engine.dialect) if stream.is_tenant else None
        self._vt = versions.version_table(stream.version_table)
        self._failures = 0
        self._stop = threading.Event()
        self._count_lock = threading.Lock()

    @property
    def where(self) -> Callable[[str], str]:
        return lambda schema: (
            f"{self.stream.name}/{schema}" if self.stream.is_tenant else self.stream.name
        )

    def plan(self, schemas: Sequence[str]) -> Plan:
        """Where each schema stands. Tenants already at an upgrade's target are left out;
        a named schema is always visited (its result is reported, applied or not)."""
        replayed = self.replayer is not None and self.action.verb == "upgrade"
        target = versions.resolve(self.stream.script, self.action.revision) if replayed else ()
        with database.connect(self.engine) as conn:
            current = versions.read_versions(conn, schemas, self.stream.version_table, bulk=True)
            conn.rollback()
        todo = [s for s in schemas if not (replayed and current[s] == target)]
        return Plan(target, current, todo)

    # --- running -------------------------------------------------------------------------

    def run(self, plan: Plan) -> list[SchemaResult]:
        """Apply the action to ``plan.todo``; one outcome per schema attempted."""
        if plan.todo:
            ensure_records(self.engine)  # applied-revision rows are written per schema
        work: queue.Queue[str] = queue.Queue()
        for schema in plan.todo:
            work.put(schema)
        deferred: list[str] = []
        outcomes: list[SchemaResult] = []
        out_lock = threading.Lock()

        def drain(wait: bool) -> None:
            with database.connect(self.engine) as conn:
                while not self._stop.is_set():
                    try:
                        schema = work.get_nowait()
                    except queue.Empty:
                        return
                    outcome = self._attempt(conn, schema, plan, wait=wait)
                    if outcome is None:  # another run holds this schema: come back later
                        with out_lock:
                            deferred.append(schema)
                        continue
                    self._record(outcome, outcomes, out_lock)

        # Named schemas wait for a concurrent run at once; tenants are tried first.
        self._parallel(lambda: drain(wait=not self.stream.is_tenant))
        if deferred and not self._stop.is_set():
            for schema in deferred:
                work.put(schema)
            self._parallel(lambda: drain(wait=True))  # waiting never defers again
        return outcomes

    def _parallel(self, fn: Callable[[], None]) -> None:
        with ThreadPoolExecutor(self.jobs, thread_name_prefix="alembic-schemas") as pool:
            futures = [pool.submit(fn) for _ in range(self.jobs)]
            try:
                for future in futures:
                    future.result()
            except BaseException:
                self._stop.set()  # e.g. an unknown revision: no new schema starts
                raise

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
                lambda: self._migrate(conn, schema, plan.target, wait=wait),
            )
        except (CommandError, AlembicRevisionError) as exc:
            # The same REVISION goes to every stream: say which one it failed in.
            raise RevisionError(f"{self.where(schema)}: {_first_line(exc)}") from exc
        except ConfigError:  # e.g. the stream's metadata does not import: a usage error
            raise
        except AlembicSchemasError as exc:  # e.g. a refused autocommit_block
            return self._failed(conn, schema, before, started, str(exc))
        except Exception as exc:  # a revision's own Python error
            log.debug("%s failed", self.where(schema), exc_info=True)
            return self._failed(conn, schema, before, started, describe_python_error(exc))
        if error is not None:
            return self._failed(conn, schema, before, started, error)
        if result is None:
            return None
        found, after = result
        return SchemaResult(
            self.stream.name,
            schema,
            self.stream.is_tenant,
            found,
            after,
            time.perf_counter() - started,
        )

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
        self, conn: Connection, schema: str, target: Heads, *, wait: bool
    ) -> tuple[Heads, Heads] | None:
        """One transaction: set-up and lock, read the version under the lock, apply."""
        with database.transaction(conn):
            if not schema_tx.begin(conn, self.stream, schema, lock="wait" if wait else "try"):
                return None
            found = current = self._read(conn, schema)
            if self.action.verb == "upgrade" and not current:  # a new schema: from its baseline?
                current = baseline.build_new(conn, self.stream, schema, self.action.revision)
            if self.action.verb != "upgrade" or self.replayer is None:
                return found, self._via_alembic(conn, schema)
            if current == target:
                return found, current
            way = self.replayer.path(current, target) if self.replayer is not None else None
            steps, complete = way if way is not None else ([], False)
            if steps:
                self._replay(conn, schema, current, steps)
            if complete:
                return found, target
            # Alembic runs in this transaction, under the lock already held.
            return found, self._via_alembic(conn, schema)

    def _replay(self, conn: Connection, schema: str, current: Heads, steps: list[Step]) -> None:
        if not current:
            # a tenant downgraded to base keeps its (empty) version table
            conn.execute(sa.schema.CreateTable(self._vt, if_not_exists=True))
        for step in steps:
            if step.sql is not None and step.sql.strip():
                # Rendered with the engine's pyformat dialect, so a literal % is doubled;
                # passing (empty) parameters lets the driver undo that.
                try:
                    conn.exec_driver_sql(step.sql)
                except sa.exc.DBAPIError as exc:  # no frame of the revision's file: say it
                    mark_revision(exc, step.revision, self._path(step.revision))
                    raise
        reached = steps[-1].revision
        if current:
            conn.execute(
                self._vt.update()
                .where(self._vt.c.version_num == current[0])
                .values(version_num=reached)
            )
        else:
            conn.execute(self._vt.insert().values(version_num=reached))
        records.record_applied(
            conn,
            self.stream.name,
            schema,
            [(st.revision, st.checksum) for st in steps if st.checksum is not None],
        )

    def _path(self, revision: str) -> str | None:
        script = self.stream.script.get_revision(revision)
        return None if script is None else script.path

    def _via_alembic(self, conn: Connection, schema: str) -> Heads:
        """Alembic runs the action inside the schema's transaction, already set up; the
        applied-revision rows then match the version rows, in the same transaction."""
        cfg = self.stream.alembic_config(
            connection=conn, **{SCHEMA_KEY: schema, PREPARED_KEY: True}
        )
        with ALEMBIC_LOCK:
            # A partially applied revision is never replayed (its block needs Alembic).
            if self.action.verb == "stamp":  # whoever stamps has settled partial revisions
                records.clear_partial(conn, self.stream.name, schema)
            else:
                autocommit.refuse_partial(conn, self.stream, schema)
            self.action.run(cfg)
        after = self._read(conn, schema)
        records.sync_applied(conn, self.stream.script, self.stream.name, schema, after)
        return after


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
