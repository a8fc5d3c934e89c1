"""The public operations, one short function per verb. The CLI only parses arguments and
calls these; an application or a test calls them directly.

Every function takes ``config``: a loaded :class:`~alembic_schemas.config.Project`, a path to
a config file or its folder, or ``None`` to search upward from the working directory. Errors
a user can cause raise :class:`~alembic_schemas.errors.AlembicSchemasError` subclasses with a
one-line message and the CLI's ``exit_code``.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, ParamSpec, TypeVar

import sqlalchemy as sa
from alembic import command as alembic_command
from alembic.config import Config
from alembic.script import Script
from alembic.script.revision import RevisionError as AlembicRevisionError
from alembic.util import CommandError

from . import (
    citus,
    database,
    drift,
    identifiers,
    offline,
    pooling,
    records,
    scaffold,
    sources,
    versions,
)
from . import database as db  # for verbs whose `database` argument hides the module
from .autogenerate.revision import autogenerate as autogenerate_revision
from .config import ConfigArg, DatabaseArg, Project, find_config, load, load_project
from .errors import ConfigError, DatabaseError, Interrupted, MigrationFailed, RevisionError
from .executor import Action, Executor, select_shard
from .executor.executor import ensure_records
from .executor.plan import parse_shard as _parse_shard
from .results import (
    CheckReport,
    DriftGroup,
    EditedRevision,
    Orphan,
    PartialRevision,
    SchemaResult,
    SchemaState,
    StatusReport,
    UpgradeReport,
)
from .runtime.autocommit import partial_message
from .streams import SCHEMA_KEY, Stream, streams_of

P = ParamSpec("P")
R = TypeVar("R")


def _user_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn Alembic's revision errors into our one-line RevisionError."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except (CommandError, AlembicRevisionError) as exc:
            raise RevisionError(str(exc).strip().splitlines()[0]) from exc

    return wrapper


def _stream(config: ConfigArg, name: str) -> Stream:
    project = load(config)
    return Stream(project, project.stream(name))


def _raise_failures(results: Sequence[SchemaResult], note: str = "") -> None:
    """MigrationFailed naming the first failed schema, with the results as ``.report``."""
    failed = [r for r in results if r.error]
    if failed:
        first = failed[0]
        where = f"{first.stream}/{first.schema}" if first.tenant else first.stream
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        exc = MigrationFailed(f"{where}: {first.error}{more}{note}")
        exc.report = results  # type: ignore[attr-defined]
        exc.statement = first.statement  # type: ignore[attr-defined]
        raise exc


def _unknown_revision(stream: Stream, current: Sequence[str]) -> str:
    known = {sc.revision for sc in stream.script.walk_revisions()}
    unknown = [r for r in current if r not in known] or list(current)
    return (
        f"version table {stream.version_table} names revision {', '.join(map(repr, unknown))}, "
        f"which is not in the history of stream {stream.name!r}"
    )


def states(conn: sa.Connection, stream: Stream, schemas: Sequence[str]) -> list[SchemaState]:
    """States of many schemas of one stream from one bulk read of their version tables. A
    schema whose version table cannot be read, or names a revision the history does not
    have, carries the reason in ``error`` (and ``pending`` None); the others are unaffected."""
    unreadable: dict[str, str] = {}
    found = versions.read_versions(
        conn, schemas, stream.version_table, bulk=True, errors=unreadable
    )
    conn.rollback()
    heads = tuple(sorted(stream.script.get_heads()))

    @functools.cache
    def pending(current: tuple[str, ...]) -> tuple[int | None, str | None]:
        try:
            return versions.pending_count(stream.script, current), None
        except (CommandError, AlembicRevisionError):
            return None, _unknown_revision(stream, current)

    out = []
    for s in schemas:
        count, error = (None, unreadable[s]) if s in unreadable else pending(found[s])
        out.append(SchemaState(stream.name, s, stream.is_tenant, found[s], heads, count))
        out[-1].error = error
    return out


class Interrupt:
    """Stops a running ``upgrade`` or ``downgrade`` from another thread or a signal handler
    (the CLI's Ctrl-C): no new schema starts, those in flight finish or roll back, and the
    run ends with :class:`~alembic_schemas.errors.Interrupted` carrying its report."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.RLock()  # re-entrant: a signal handler may run inside watch()
        self._executors: list[Executor] = []

    @property
    def stopped(self) -> bool:
        return self._event.is_set()

    def stop(self) -> None:
        self._event.set()
        with self._lock:
            running = list(self._executors)
        for ex in running:
            ex.stop()

    def watch(self, ex: Executor) -> None:
        with self._lock:
            self._executors.append(ex)
        if self.stopped:
            ex.stop()


def _interrupted(report: UpgradeReport) -> Interrupted:
    c = report.counts()
    exc = Interrupted(
        f"interrupted: {c['applied']} applied, {c['failed']} failed, {c['unchanged']} "
        f"unchanged, {c['not_started']} not started"
        + (f" (run {report.run_id})" if report.run_id else "")
    )
    exc.report = report  # type: ignore[attr-defined]
    return exc


def _each_schema(
    action: Action,
    config: ConfigArg,
    streams: Sequence[str] | None,
    tenants: Sequence[str] | None,
) -> list[SchemaResult]:
    """``action`` on every selected schema, one at a time; stops at the first failure."""
    project = load(config)
    sources.refuse_bad(tenants, project)
    results: list[SchemaResult] = []
    with database.session(project) as s:
        selected = streams_of(project, streams)
        with s.connect() as conn:
            # Every stream's schemas first: an unknown tenant is refused before anything changes.
            planned = [(st, sources.targets(st, conn, tenants)) for st in selected]
        for stream, schemas in planned:
            ex = Executor(stream, pooling.engine_for(s, stream), action)
            results += ex.run(ex.plan(schemas))
            _raise_failures(results)
    return results


# --- verbs ---------------------------------------------------------------------------


@dataclass
class InitResult:
    config_path: Path
    created: list[Path]
    wrote_config: bool


def init(directory: str | os.PathLike[str] | None = None) -> InitResult:
    """Write a starter config if none exists, and every missing stream script directory.

    Returns what was written; never overwrites a file."""
    folder = Path(directory or ".").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    wrote = False
    try:
        config_path = find_config(folder)
    except ConfigError:
        config_path = scaffold.write_starter(folder)
        wrote = True
    project = load_project(config_path)
    created: list[Path] = []
    project.script_location.mkdir(parents=True, exist_ok=True)
    for name in project.streams:
        created += scaffold.stream_files(project, name)
    return InitResult(config_path, created, wrote)


def add_stream(
    name: str,
    *,
    schema: str | None = None,
    tenants: str | None = None,
    metadata: str | None = None,
    depends_on: Sequence[str] = (),
    owner: str | None = None,
    config: ConfigArg = None,
) -> list[Path]:
    """Add a stream to the config file and create its script directory; returns the files
    created. Raises ConfigError for a bad or duplicate stream."""
    project = scaffold.append_stream(
        load(config),
        name,
        schema=schema,
        tenants=tenants,
        metadata=metadata,
        depends_on=tuple(depends_on),
        owner=owner,
    )
    return scaffold.stream_files(project, name)


@_user_errors
def revision(
    stream: str,
    message: str | None = None,
    *,
    autogenerate: bool = False,
    rev_id: str | None = None,
    head: str = "head",
    splice: bool = False,
    branch_label: str | None = None,
    depends_on: str | None = None,
    database: DatabaseArg = None,
    config: ConfigArg = None,
) -> list[Script]:
    """Create a revision in ``stream``; with ``autogenerate``, diff only that stream's schema
    (a tenant stream: a scratch schema at head). Returns the new revision scripts."""
    options: dict[str, Any] = dict(
        message=message,
        autogenerate=autogenerate,
        rev_id=rev_id,
        head=head,
        splice=splice,
        branch_label=branch_label,
        depends_on=depends_on,
    )
    st = _stream(load(config, database), stream)
    if autogenerate:
        st.require_metadata()
        with db.session(st.project) as s:
            result = autogenerate_revision(st, s.engine, options)
    else:
        result = alembic_command.revision(st.alembic_config(), **options)
    found = result if isinstance(result, list) else [result]
    return [sc for sc in found if sc is not None]


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``K/N`` (1 <= K <= N) to (K, N); raises ConfigError when malformed."""
    if not text:
        return None
    found = _parse_shard(text)
    if found is None:
        raise ConfigError(f"--shard {text!r} must be K/N with 1 <= K <= N, e.g. 1/4")
    return found


class _Run:
    """One run's record: a row for the run, and (for upgrade) each result recorded as it
    comes; a record the database refuses (read-only, disk full) neither hides the
    migrations' outcome nor stops them."""

    def __init__(
        self,
        s: database.Session,
        on_result: Callable[[SchemaResult], None] | None,
        verb: str,
        revision: str,
    ):
        ensure_records(s.engine)
        self.engine = s.engine
        self.recorder = records.Recorder(s.engine)
        self.on_result = on_result
        self.unrecorded: list[str] = []
        self.seen: list[SchemaResult] = []
        self._write(lambda: records.start_run(s.engine, self.recorder.run_id, verb, revision))

    def _write(self, write: Callable[[], None]) -> None:
        try:
            write()
        except sa.exc.DBAPIError as exc:
            self.unrecorded.append(database.describe(exc))

    def done(self, result: SchemaResult) -> None:
        self.seen.append(result)
        self._write(lambda: self.recorder.add(result))
        if self.on_result is not None:
            self.on_result(result)

    def flush(self) -> None:
        self._write(self.recorder.flush)

    def finish(self, report: UpgradeReport) -> None:
        """Write what is buffered, then how the run ended."""
        self.flush()
        outcome = "interrupted" if report.interrupted else "failed" if report.failed else "done"
        run_id = self.recorder.run_id
        self._write(lambda: records.finish_run(self.engine, run_id, outcome, report.counts()))


def _fleet(
    action: Action,
    project: Project,
    selected: Sequence[Stream],
    tenants: Sequence[str] | None,
    *,
    jobs: int | None,
    max_failures: int,
    retry_failed: bool = False,
    shard: tuple[int, int] | None = None,
    on_plan: Callable[[str, int, int], None] | None = None,
    on_result: Callable[[SchemaResult], None] | None = None,
    interrupt: Interrupt | None = None,
) -> UpgradeReport:
    """``action`` on every schema of ``selected`` (in that order) with ``jobs`` workers, the
    run record written as results come. The report counts, per stream, the schemas applied,
    unchanged (at the target already) and failed, and those never started (after too many
    failures, or ``interrupt``). Raises MigrationFailed when anything failed, Interrupted
    when stopped (both with ``.report``)."""
    workers = max(1, jobs or project.jobs or os.cpu_count() or 1)
    started = time.perf_counter()
    with db.session(project, pool_size=workers + 2) as s:
        # refused behind a pooler before anything runs, where a stream needs one session
        engines = {stream.name: pooling.engine_for(s, stream) for stream in selected}
        run = _Run(s, on_result, action.verb, action.revision)
        report = UpgradeReport(run.recorder.run_id)

        def targets(stream: Stream) -> list[str]:
            return _fleet_targets(s, stream, action, tenants, retry_failed, shard)

        def executor(stream: Stream, **kw: Any) -> Executor:
            return Executor(stream, engines[stream.name], action, **kw)

        try:
            for i, stream in enumerate(selected):
                names = targets(stream)
                ex = executor(
                    stream,
                    jobs=workers,
                    max_failures=max_failures - len(report.failed),
                    on_result=run.done,
                )
                if interrupt is not None:
                    interrupt.watch(ex)
                report.streams[stream.name] = stream.is_tenant
                plan = ex.plan(names)
                report.at_target[stream.name] = len(names) - len(plan.todo)
                if on_plan is not None:
                    on_plan(stream.name, len(names), len(plan.todo))
                results = ex.run(plan)
                report.extend(results)
                report.not_started[stream.name] = len(plan.todo) - len(results)
                report.interrupted = interrupt is not None and interrupt.stopped
                if len(report.failed) > max_failures or report.interrupted:
                    for rest in selected[i + 1 :]:  # never reached: what they would have run
                        report.streams[rest.name] = rest.is_tenant
                        report.not_started[rest.name] = len(executor(rest).plan(targets(rest)).todo)
                    break
        except KeyboardInterrupt:
            # No Interrupt was given (an application's main thread): the executor let the
            # schemas in flight finish; record what happened, then let the interrupt go on.
            report.extend(r for r in run.seen if r not in report)
            report.interrupted = True
            raise
        finally:
            run.finish(report)
            report.seconds = time.perf_counter() - started
    if report.interrupted:
        raise _interrupted(report)
    note = f" (run record not written: {run.unrecorded[0]})" if run.unrecorded else ""
    _raise_failures(report, note)
    if run.unrecorded:
        raise DatabaseError(
            f"every migration succeeded, but the run record was not written: {run.unrecorded[0]}"
        )
    return report


def _fleet_targets(
    s: database.Session,
    stream: Stream,
    action: Action,
    tenants: Sequence[str] | None,
    retry_failed: bool,
    shard: tuple[int, int] | None,
) -> list[str]:
    """The schemas a run takes in ``stream``: the selection (upgrade creates the tenants it
    is given), narrowed to the last run's failures (``retry_failed``) and to a shard."""
    with s.connect() as conn:
        names = sources.targets(stream, conn, tenants, new=action.verb == "upgrade")
        if retry_failed and stream.is_tenant:
            failed = set(records.last_run_failures(conn, stream.name))
            names = [n for n in names if n in failed]
    return select_shard(names, shard) if stream.is_tenant else names


@_user_errors
def upgrade(
    revision: str = "head",
    *,
    streams: Sequence[str] | None = None,
    tenants: Sequence[str] | None = None,
    sql: bool = False,
    output: IO[str] | None = None,
    jobs: int | None = None,
    max_failures: int = 0,
    retry_failed: bool = False,
    shard: str | tuple[int, int] | None = None,
    on_plan: Callable[[str, int, int], None] | None = None,
    on_result: Callable[[SchemaResult], None] | None = None,
    interrupt: Interrupt | None = None,
    database: DatabaseArg = None,
    config: ConfigArg = None,
) -> UpgradeReport:
    """Upgrade every selected stream (default all, in dependency order) to ``revision``.

    Tenant streams run on ``jobs`` parallel workers (default: ``jobs`` in the config, else
    the CPU count). After more than ``max_failures`` failed schemas no new schema starts.
    ``retry_failed`` narrows each tenant stream to the tenants that failed in its last run;
    ``shard`` "K/N" to a stable 1/N of them. ``on_plan(stream, total, todo)`` and
    ``on_result(result)`` report progress; ``interrupt.stop()`` stops the run. With ``sql``,
    writes the SQL to ``output`` and touches no database. Returns the UpgradeReport (applied,
    unchanged, failed and not started, per stream); raises MigrationFailed (with ``.report``)
    when anything failed, Interrupted (with ``.report``) when stopped, ConfigError/
    RevisionError for bad arguments.
    """
    project = load(config, database)
    sources.refuse_bad(tenants, project)
    if sql:
        offline.write(
            project,
            streams,
            tenants,
            lambda cfg: alembic_command.upgrade(cfg, revision, sql=True),
            output,
        )
        return UpgradeReport()
    return _fleet(
        Action("upgrade", revision),
        project,
        streams_of(project, streams),  # an unknown stream is refused before connecting
        tenants,
        jobs=jobs,
        max_failures=max_failures,
        retry_failed=retry_failed,
        shard=parse_shard(shard) if isinstance(shard, str) else shard,
        on_plan=on_plan,
        on_result=on_result,
        interrupt=interrupt,
    )


@_user_errors
def downgrade(
    revision: str,
    *,
    streams: Sequence[str],
    tenants: Sequence[str] | None = None,
    sql: bool = False,
    output: IO[str] | None = None,
    jobs: int | None = None,
    max_failures: int = 0,
    on_plan: Callable[[str, int, int], None] | None = None,
    on_result: Callable[[SchemaResult], None] | None = None,
    interrupt: Interrupt | None = None,
    database: DatabaseArg = None,
    config: ConfigArg = None,
) -> UpgradeReport:
    """Downgrade the named streams (dependents first) to ``revision`` (``-1``, ``base``, an
    id), tenants on ``jobs`` parallel workers, with the same run record, progress callbacks
    and report as :func:`upgrade`; raises MigrationFailed when anything failed."""
    if not streams:
        raise ConfigError("downgrade needs -s STREAM")
    project = load(config, database)
    sources.refuse_bad(tenants, project)
    if sql:
        offline.write(
            project,
            streams,
            tenants,
            lambda cfg: alembic_command.downgrade(cfg, revision, sql=True),
            output,
        )
        return UpgradeReport()
    return _fleet(
        Action("downgrade", revision),
        project,
        list(reversed(streams_of(project, streams))),
        tenants,
        jobs=jobs,
        max_failures=max_failures,
        on_plan=on_plan,
        on_result=on_result,
        interrupt=interrupt,
    )


@_user_errors
def stamp(
    revision: str,
    *,
    streams: Sequence[str] | None = None,
    tenants: Sequence[str] | None = None,
    purge: bool = False,
    database: DatabaseArg = None,
    config: ConfigArg = None,
) -> list[SchemaResult]:
    """Set the version row(s) without running migrations; one result per schema."""
    return _each_schema(Action("stamp", revision, purge), load(config, database), streams, tenants)


@_user_errors
def current(
    *,
    streams: Sequence[str] | None = None,
    tenants: Sequence[str] | None = None,
    database: DatabaseArg = None,
    config: ConfigArg = None,
) -> list[SchemaState]:
    """The applied revision(s) of every selected schema (a few queries per stream); a schema
    that cannot be read carries the reason in ``error``."""
    project = load(config, database)
    sources.refuse_bad(tenants, project)
    out: list[SchemaState] = []
    with db.session(project) as s:
        for stream in streams_of(project, streams):
            with s.connect() as conn:
                out += states(conn, stream, sources.targets(stream, conn, tenants))
    return out


Progress = Callable[[str, int, int], None]


@_user_errors
def status(
    *,
    streams: Sequence[str] | None = None,
    tenants: Sequence[str] | None = None,
    drift: bool = True,
    on_progress: Progress | None = None,
    database: DatabaseArg = None,
    config: ConfigArg = None,
) -> StatusReport:
    """Every schema and tenant: current revision, head, pending count, edited revisions and
    (unless ``drift`` is false, or the stream has no metadata) the differences between the
    models and the schema, compared once per group of tenants with the same structure.

    Returns a StatusReport: the list of SchemaState, plus ``groups`` (drift groups),
    ``orphans`` (schemas holding a tenant stream's version table that its source does not
    list; only when no ``tenants`` are named), ``failures`` (last failed attempts not
    resolved since), ``last_run`` and per-stream ``summaries()``. One schema that cannot be
    read or compared is reported in its state's ``error``; the others are unaffected.
    ``on_progress(phase, done, total)`` reports long reads."""
    project = load(config, database)
    sources.refuse_bad(tenants, project)
    report = StatusReport()
    report.drift = drift
    with db.session(project) as s:
        selected = streams_of(project, streams)
        listed: dict[str, list[str]] = {}
        for stream in selected:
            with s.connect() as conn:
                if on_progress is not None:
                    on_progress(f"{stream.name}: listing schemas", 0, 1)
                names = sources.targets(stream, conn, tenants)
                listed[stream.name] = names
                found, groups = _stream_status(conn, stream, names, drift, on_progress)
                report.extend(found)
                report.groups += groups
                heads = tuple(sorted(stream.script.get_heads()))
                report.streams.append((stream.name, stream.is_tenant, heads))
                if stream.metadata is None:
                    report.without_models.add(stream.name)
        with s.connect() as conn:
            if not tenants:
                report.orphans = _orphans(conn, project, selected, listed)
            report.failures = _unresolved_failures(conn, project)
            report.last_run = records.last_run(conn)
    return report


def _stream_status(
    conn: sa.Connection,
    stream: Stream,
    names: Sequence[str],
    with_drift: bool,
    on_progress: Progress | None,
) -> tuple[list[SchemaState], list[DriftGroup]]:
    """The stream's states, with drift compared once per group of equal structure."""
    edited: dict[str, list[EditedRevision]] = {}
    for e in records.edited_revisions(
        conn, stream.script, stream.name, names, tenant=stream.is_tenant
    ):
        edited.setdefault(e.schema, []).append(e)
    partial = _partial(conn, stream, names)
    conn.rollback()
    invalid = _invalid_indexes(conn, names)
    if on_progress is not None:
        on_progress(f"{stream.name}: reading versions", 0, len(names))
    found = states(conn, stream, names)
    for state in found:
        state.edited = edited.get(state.schema, [])
        state.partial = partial.get(state.schema, [])
        state.invalid_indexes = invalid.get(state.schema, [])
    if not with_drift or stream.metadata is None:
        return found, []

    def progress(phase: str, done: int, total: int) -> None:
        if on_progress is not None:
            on_progress(f"{stream.name}: {phase}", done, total)

    groups = drift.fleet_drift(stream, conn, names, progress)
    by_schema = {st.schema: st for st in found}
    for group in groups:
        for schema in group.schemas:
            st = by_schema[schema]
            st.drift = group.differences
            st.drift_group = group.id or None
            if group.error:
                st.error = "; ".join(e for e in (st.error, group.error) if e)
    return found, groups


def _orphans(
    conn: sa.Connection, project: Project, selected: Sequence[Stream], listed: dict[str, list[str]]
) -> list[Orphan]:
    """Orphans of each selected tenant stream: not listed by it, nor by any other stream."""
    tenant_streams = [Stream(project, c) for c in project.streams.values() if c.is_tenant]
    claimed: set[str] = set()
    for st in tenant_streams:
        claimed.update(listed[st.name] if st.name in listed else sources.names(st, conn))
    conn.rollback()
    return [o for st in selected if st.is_tenant for o in sources.orphans(st, conn, claimed)]


def _unresolved_failures(
    conn: sa.Connection, project: Project, limit: int | None = None
) -> list[dict[str, Any]]:
    """The latest failed attempts not succeeded since, without those whose schema has been
    brought to the failed run's target another way since (``stamp``, by hand)."""
    failures = records.recent_failures(conn, None)
    conn.rollback()
    now: dict[tuple[str, str], tuple[str, ...]] = {}
    for name, config in project.streams.items():
        schemas = sorted({f["schema"] for f in failures if f["stream"] == name})
        if schemas:
            unreadable: dict[str, str] = {}
            found = versions.read_versions(
                conn, schemas, config.version_table, bulk=True, errors=unreadable
            )
            conn.rollback()
            now.update({(name, s): found[s] for s in schemas if s not in unreadable})
    out = [f for f in failures if not _resolved(project, f, now.get((f["stream"], f["schema"])))]
    return out[:limit] if limit is not None else out


def _resolved(project: Project, failure: dict[str, Any], current: tuple[str, ...] | None) -> bool:
    """The schema is now at the revision the failed run aimed at."""
    if current is None or failure["revision"] is None or failure["stream"] not in project.streams:
        return False
    stream = Stream(project, project.streams[failure["stream"]])
    try:
        return current == versions.resolve(stream.script, failure["revision"])
    except (CommandError, AlembicRevisionError):  # e.g. a relative target: not knowable
        return False


def _partial(
    conn: sa.Connection, stream: Stream, names: Sequence[str]
) -> dict[str, list[PartialRevision]]:
    """The stream's partially applied revisions, by schema (one query)."""
    found: dict[str, list[PartialRevision]] = {}
    for schema, revision, committed, since in records.partial_revisions(conn, stream.name, names):
        message = partial_message(stream, schema, revision, committed, since)
        where = f"{stream.name}/{schema}" if stream.is_tenant else stream.name
        found.setdefault(schema, []).append(
            PartialRevision(
                stream.name, schema, revision, committed, since.isoformat(), f"{where}: {message}"
            )
        )
    return found


def _invalid_indexes(conn: sa.Connection, schemas: Sequence[str]) -> dict[str, list[str]]:
    """Citus: each schema's INVALID indexes, on the coordinator and every worker."""
    found: dict[str, list[str]] = {}
    if citus.is_citus(conn):
        for index in citus.invalid_indexes(conn, schemas):
            found.setdefault(index.schema, []).append(str(index))
        conn.rollback()
    return found


@_user_errors
def verify(
    *,
    streams: Sequence[str] | None = None,
    tenants: Sequence[str] | None = None,
    database: DatabaseArg = None,
    config: ConfigArg = None,
) -> list[EditedRevision]:
    """Applied revisions whose file was edited (or removed) since it was applied: each
    file's sha256 against the one recorded in ``alembic_schemas.applied``. Empty: clean."""
    project = load(config, database)
    sources.refuse_bad(tenants, project)
    out: list[EditedRevision] = []
    with db.session(project) as s:
        for stream in streams_of(project, streams):
            with s.connect() as conn:
                names = sources.targets(stream, conn, tenants)
                out += records.edited_revisions(
                    conn, stream.script, stream.name, names, tenant=stream.is_tenant
                )
                conn.rollback()
    return out


def last_failures(
    *, limit: int = 20, database: DatabaseArg = None, config: ConfigArg = None
) -> list[dict[str, Any]]:
    """The latest failed attempts (from the run record) whose schema has not succeeded
    since, nor been brought to the failed run's target another way (stamp, by hand)."""
    project = load(config, database)
    with db.session(project) as s, s.connect() as conn:
        return _unresolved_failures(conn, project, limit)


@_user_errors
def check(
    *,
    streams: Sequence[str] | None = None,
    tenants: Sequence[str] | None = None,
    on_progress: Progress | None = None,
    database: DatabaseArg = None,
    config: ConfigArg = None,
) -> CheckReport:
    """Compare models with the database; a result is clean when at head, with no
    differences (INVALID indexes included) and no error. The CheckReport (a list of
    CheckResult) keeps the status it was made from in ``.status`` (counts, drift groups,
    orphans)."""
    return CheckReport(
        status(
            streams=streams,
            tenants=tenants,
            on_progress=on_progress,
            database=database,
            config=config,
        )
    )


@_user_errors
def history(stream: str, *, rev_range: str | None = None, config: ConfigArg = None) -> list[Script]:
    """The stream's revisions, newest first (optionally a ``base:head`` style range)."""
    st = _stream(config, stream)
    if rev_range:
        base, _, head = rev_range.partition(":")
        return list(st.script.walk_revisions(base or "base", head or "heads"))
    return list(st.script.walk_revisions())


@_user_errors
def heads(
    *, streams: Sequence[str] | None = None, config: ConfigArg = None
) -> dict[str, list[Script]]:
    """Each selected stream's head revision(s)."""
    project = load(config)
    return {
        st.name: [sc for h in st.script.get_heads() if (sc := st.script.get_revision(h))]
        for st in streams_of(project, streams)
    }


@_user_errors
def show(stream: str, revision: str, *, config: ConfigArg = None) -> list[Script]:
    """The revision(s) ``revision`` names in ``stream``."""
    st = _stream(config, stream)
    found = st.script.get_revisions(revision)
    return [r for r in found if isinstance(r, Script)]


@_user_errors
def merge(
    stream: str,
    revisions: Sequence[str] = ("heads",),
    *,
    message: str | None = None,
    config: ConfigArg = None,
) -> Script | None:
    """Merge ``revisions`` (default: every head) into one; None when there is one head."""
    st = _stream(config, stream)
    if list(revisions) == ["heads"] and len(st.script.get_heads()) < 2:
        return None  # Alembic would write an empty "merge" of a single head
    return alembic_command.merge(st.alembic_config(), list(revisions), message=message)


def alembic_config(
    stream: str,
    *,
    schema: str | None = None,
    database: DatabaseArg = None,
    config: ConfigArg = None,
) -> Config:
    """A plain ``alembic.config.Config`` for a stream (tenant streams: pass ``schema``), for
    ``alembic.command.*`` and pytest-alembic. Put a Connection in ``attributes["connection"]``
    to run on it; otherwise ``database``, else the project's database, is used."""
    st = _stream(load(config, database), stream)
    if schema is not None:
        if st.is_tenant:  # not public, the run record or a named stream's schema
            sources.validate_tenant(schema, st.project)
        identifiers.validate(schema)
        return st.alembic_config(**{SCHEMA_KEY: schema})
    return st.alembic_config()
