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
    autogenerate,
    citus,
    database,
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
from .errors import ConfigError, DatabaseError, MigrationFailed, RevisionError
from .executor import Action, Executor, select_shard
from .executor.executor import ensure_records
from .executor.plan import parse_shard as _parse_shard
from .results import (
    CheckResult,
    EditedRevision,
    PartialRevision,
    SchemaResult,
    SchemaState,
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


def _states(conn: sa.Connection, stream: Stream, schemas: Sequence[str]) -> list[SchemaState]:
    """States of many schemas of one stream from one bulk read of their version tables."""
    found = versions.read_versions(conn, schemas, stream.version_table, bulk=True)
    conn.rollback()
    heads = tuple(sorted(stream.script.get_heads()))
    pending = functools.lru_cache(maxsize=None)(
        functools.partial(versions.pending_count, stream.script)
    )
    return [
        SchemaState(stream.name, s, stream.is_tenant, found[s], heads, pending(found[s]))
        for s in schemas
    ]


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
    """One upgrade run's record: each result is recorded as it comes; a record the database
    refuses (read-only, disk full) neither hides the migrations' outcome nor stops them."""

    def __init__(self, s: database.Session, on_result: Callable[[SchemaResult], None] | None):
        ensure_records(s.engine)
        self.recorder = records.Recorder(s.engine)
        self.on_result = on_result
        self.unrecorded: list[str] = []

    def _write(self, write: Callable[[], None]) -> None:
        try:
            write()
        except sa.exc.DBAPIError as exc:
            self.unrecorded.append(database.describe(exc))

    def done(self, result: SchemaResult) -> None:
        self._write(lambda: self.recorder.add(result))
        if self.on_result is not None:
            self.on_result(result)

    def flush(self) -> None:
        self._write(self.recorder.flush)


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
) -> UpgradeReport:
    """``action`` on every schema of ``selected`` (in that order) with ``jobs`` workers, the
    run record written as results come; raises MigrationFailed when anything failed."""
    workers = max(1, jobs or project.jobs or os.cpu_count() or 1)
    started = time.perf_counter()
    new = action.verb == "upgrade"  # upgrade creates the tenants it is given
    with db.session(project, pool_size=workers + 2) as s:
        # refused behind a pooler before anything runs, where a stream needs one session
        engines = {stream.name: pooling.engine_for(s, stream) for stream in selected}
        run = _Run(s, on_result)
        report = UpgradeReport(run.recorder.run_id)
        try:
            for stream in selected:
                with s.connect() as conn:
                    names = sources.targets(stream, conn, tenants, new=new)
                    if retry_failed and stream.is_tenant:
                        failed = set(records.last_run_failures(conn, stream.name))
                        names = [n for n in names if n in failed]
                if stream.is_tenant:
                    names = select_shard(names, shard)
                ex = Executor(
                    stream,
                    engines[stream.name],
                    action,
                    jobs=workers,
                    max_failures=max_failures - len(report.failed),
                    on_result=run.done,
                )
                plan = ex.plan(names)
                report.at_target[stream.name] = len(names) - len(plan.todo)
                if on_plan is not None:
                    on_plan(stream.name, len(names), len(plan.todo))
                report.extend(ex.run(plan))
                if len(report.failed) > max_failures:
                    break
        finally:
            run.flush()
    report.seconds = time.perf_counter() - started
    note = f" (run record not written: {run.unrecorded[0]})" if run.unrecorded else ""
    _raise_failures(report, note)
    if run.unrecorded:
        raise DatabaseError(
            f"every migration succeeded, but the run record was not written: {run.unrecorded[0]}"
        )
    return report


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
    database: DatabaseArg = None,
    config: ConfigArg = None,
) -> UpgradeReport:
    """Upgrade every selected stream (default all, in dependency order) to ``revision``.

    Tenant streams run on ``jobs`` parallel workers (default: ``jobs`` in the config, else
    the CPU count). After more than ``max_failures`` failed schemas no new schema starts.
    ``retry_failed`` narrows each tenant stream to the tenants that failed in its last run;
    ``shard`` "K/N" to a stable 1/N of them. ``on_plan(stream, total, todo)`` and
    ``on_result(result)`` report progress. With ``sql``, writes the SQL to ``output`` and
    touches no database. Returns the UpgradeReport; raises MigrationFailed (with ``.report``)
    when anything failed, ConfigError/RevisionError for bad arguments.
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
    """The applied revision(s) of every selected schema (a few queries per stream)."""
    project = load(config, database)
    sources.refuse_bad(tenants, project)
    out: list[SchemaState] = []
    with db.session(project) as s:
        for stream in streams_of(project, streams):
            with s.connect() as conn:
                out += _states(conn, stream, sources.targets(stream, conn, tenants))
    return out


@_user_errors
def status(
    *,
    streams: Sequence[str] | None = None,
    tenants: Sequence[str] | None = None,
    drift: bool = True,
    database: DatabaseArg = None,
    config: ConfigArg = None,
) -> list[SchemaState]:
    """Every schema and tenant: current revision, head, pending count, edited revisions and
    (unless ``drift`` is false, or the stream has no metadata) the differences between the
    models and the schema."""
    project = load(config, database)
    sources.refuse_bad(tenants, project)
    out: list[SchemaState] = []
    with db.session(project) as s:
        for stream in streams_of(project, streams):
            with s.connect() as conn:
                names = sources.targets(stream, conn, tenants)
                edited: dict[str, list[EditedRevision]] = {}
                for e in records.edited_revisions(
                    conn, stream.script, stream.name, names, tenant=stream.is_tenant
                ):
                    edited.setdefault(e.schema, []).append(e)
                partial = _partial(conn, stream, names)
                conn.rollback()
                invalid = _invalid_indexes(conn, names)
                for state in _states(conn, stream, names):
                    state.edited = edited.get(state.schema, [])
                    state.partial = partial.get(state.schema, [])
                    state.invalid_indexes = invalid.get(state.schema, [])
                    if drift and stream.metadata is not None:
                        with conn.begin():
                            state.drift = [
                                autogenerate.describe(d)
                                for d in autogenerate.compare(stream, state.schema, conn)
                            ]
                    out.append(state)
    return out


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
    """The latest failed attempts (from the run record) whose schema has not succeeded since."""
    with db.session(load(config, database)) as s, s.connect() as conn:
        return records.recent_failures(conn, limit)


@_user_errors
def check(
    *,
    streams: Sequence[str] | None = None,
    tenants: Sequence[str] | None = None,
    database: DatabaseArg = None,
    config: ConfigArg = None,
) -> list[CheckResult]:
    """Compare models with the database; a result is clean when at head and no differences.
    A stream without metadata compares nothing (``compared`` is false): only its pending
    revisions can make it unclean."""
    return [
        CheckResult(
            st.stream,
            st.schema,
            st.tenant,
            st.pending,
            [*(st.drift or []), *(f"INVALID index {i}" for i in st.invalid_indexes)],
            st.drift is not None,
        )
        for st in status(streams=streams, tenants=tenants, database=database, config=config)
    ]


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
