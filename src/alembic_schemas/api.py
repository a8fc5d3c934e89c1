"""The public operations. The CLI only parses arguments and calls these.

Each function takes ``config``: a loaded :class:`Project`, a path to a config file or its
folder, or ``None`` to search upward from the working directory.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, ParamSpec, TypeVar

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import Script
from alembic.script.revision import RevisionError as AlembicRevisionError
from alembic.util import CommandError
from sqlalchemy.engine import Connection, Engine

from . import autogenerate, database, environment, identifiers, scaffold, sources
from .config import Project, find_config, load_project
from .errors import (
    AlembicSchemasError,
    ConfigError,
    DatabaseError,
    MigrationFailed,
    RevisionError,
)
from .executor import Executor, read_versions, select_shard
from .recorder import SCHEMA as RECORD_SCHEMA
from .recorder import Recorder, edited_revisions, sync_applied
from .recorder import ensure as recorder_ensure
from .recorder import last_run_failures as recorder_last_failures
from .recorder import recent_failures as recorder_recent_failures
from .results import CheckResult, EditedRevision, SchemaResult, SchemaState, UpgradeReport
from .streams import SCHEMA_KEY, SCRATCH_KEY, Stream, streams_of

ConfigArg = Project | str | os.PathLike[str] | None
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


def load(config: ConfigArg = None) -> Project:
    return config if isinstance(config, Project) else load_project(config)


class Session:
    """A project plus one engine, for one API call."""

    def __init__(self, project: Project, pool_size: int = 5) -> None:
        self.project = project
        self.engine: Engine = database.project_engine(project, pool_size=pool_size)

    def close(self) -> None:
        self.engine.dispose()

    def connect(self) -> contextlib.AbstractContextManager[Connection]:
        return database.connect(self.engine)

    def targets(
        self, stream: Stream, only: Sequence[str] | None = None, *, new: bool = False
    ) -> list[str]:
        """The schemas a stream applies to: its own, or its tenants (optionally narrowed).
        A named tenant must exist or be listed by the stream's source, unless ``new`` (upgrade
        creates the tenants it is given): a typo would otherwise read as a tenant at base,
        or be created by downgrade/stamp."""
        if not stream.is_tenant:
            assert stream.schema is not None
            return [stream.schema]
        if only:
            wanted = [sources.validate_tenant(t, self.project) for t in only]
            if not new:
                with self.connect() as conn:
                    existing = set(
                        conn.execute(
                            sa.text(
                                "SELECT nspname FROM pg_catalog.pg_namespace"
                                " WHERE nspname = ANY(:names)"
                            ),
                            {"names": wanted},
                        ).scalars()
                    )
                    missing = [t for t in wanted if t not in existing]
                    listed = set(sources.names(stream, conn)) if missing else set()
                unknown = [t for t in missing if t not in listed]
                if unknown:
                    pl = "s" if len(unknown) > 1 else ""
                    raise ConfigError(
                        f"unknown tenant{pl} {', '.join(map(repr, unknown))} of stream "
                        f"{stream.name!r} (no such schema{pl}, and not listed by "
                        f"{stream.config.tenants})"
                    )
            return wanted
        with self.connect() as conn:
            return sources.names(stream, conn)


def _refuse_bad_tenants(tenants: Sequence[str] | None, config: ConfigArg = None) -> None:
    """Validate ``--tenant`` names up front: refused before any SQL runs, not when the tenant
    stream's turn comes after the named streams were already migrated."""
    project = load(config) if tenants else None
    for name in tenants or ():
        sources.validate_tenant(name, project)


def _stream(config: ConfigArg, name: str) -> Stream:
    project = load(config)
    return Stream(project, project.stream(name))


@contextlib.contextmanager
def session(config: ConfigArg) -> Iterator[Session]:
    s = Session(load(config))
    try:
        yield s
    finally:
        s.close()


def current_heads(conn: Connection, stream: Stream, schema: str) -> tuple[str, ...]:
    mc = MigrationContext.configure(
        connection=conn,
        opts={"version_table": stream.version_table, "version_table_schema": schema},
    )
    return tuple(sorted(mc.get_current_heads()))


def pending_count(stream: Stream, current: Sequence[str]) -> int:
    """How many revisions of the stream are not yet applied over ``current``."""
    script = stream.script
    everything = {s.revision for s in script.walk_revisions()}
    if not current:
        return len(everything)
    applied = {s.revision for s in script.revision_map.iterate_revisions(tuple(current), "base")}
    return len(everything - applied)


def _states(conn: Connection, stream: Stream, schemas: Sequence[str]) -> list[SchemaState]:
    """States of many schemas of one stream from one bulk read of their version tables."""
    versions = read_versions(conn, schemas, stream.version_table, bulk=True)
    conn.rollback()
    heads = tuple(sorted(stream.script.get_heads()))
    pending = functools.lru_cache(maxsize=None)(functools.partial(pending_count, stream))
    return [
        SchemaState(
            stream=stream.name,
            schema=schema,
            tenant=stream.is_tenant,
            current=versions[schema],
            heads=heads,
            pending=pending(versions[schema]),
        )
        for schema in schemas
    ]


def _apply(s: Session, stream: Stream, schema: str, run: Callable[[Config], Any]) -> SchemaResult:
    """Run an alembic command on one schema in its own transaction, retrying lock timeouts."""
    started = time.perf_counter()
    with s.connect() as conn:
        before = current_heads(conn, stream, schema)
        conn.rollback()

        def attempt() -> tuple[str, ...]:
            with database.transaction(conn):
                # Lock first, then read: a concurrent run cannot also report this schema as
                # applied. run_in_context re-takes the (reentrant) lock.
                environment.prepare(conn, s.project, stream, schema)
                found = current_heads(conn, stream, schema)
                run(stream.alembic_config(connection=conn, **{SCHEMA_KEY: schema}))
                # Same transaction: the applied-revision rows match the version rows.
                sync_applied(
                    conn, stream.script, stream.name, schema, current_heads(conn, stream, schema)
                )
            return found

        try:
            found, error = database.with_retries(
                conn, s.project.lock_retries, s.project.lock_timeout, attempt
            )
        except (CommandError, AlembicRevisionError) as exc:
            # The same REVISION goes to every stream: say which one it failed in.
            where = f"{stream.name}/{schema}" if stream.is_tenant else stream.name
            raise RevisionError(f"{where}: {str(exc).strip().splitlines()[0]}") from exc
        except MigrationFailed as exc:  # e.g. a refused autocommit_block
            found, error = None, str(exc)
        seconds = time.perf_counter() - started
        if error is not None or found is None:
            reached = database.read_after_failure(
                conn, lambda: current_heads(conn, stream, schema), before
            )
            return SchemaResult(
                stream.name, schema, stream.is_tenant, before, reached, seconds, error
            )
        after = current_heads(conn, stream, schema)
        conn.rollback()
    return SchemaResult(
        stream.name, schema, stream.is_tenant, found, after, time.perf_counter() - started
    )


def _raise_failures(results: Sequence[SchemaResult], note: str = "") -> None:
    """MigrationFailed naming the first failed schema, with the results as ``.report``."""
    failed = [r for r in results if r.error]
    if failed:
        first = failed[0]
        where = f"{first.stream}/{first.schema}" if first.tenant else first.stream
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        exc = MigrationFailed(f"{where}: {first.error}{more}{note}")
        exc.report = results  # type: ignore[attr-defined]
        raise exc


def _record_refused(exc: sa.exc.DBAPIError) -> DatabaseError:
    """One line for run record tables the database will not create (read-only, disk full)."""
    return DatabaseError(
        f"cannot create the run record (schema {RECORD_SCHEMA}), nothing was migrated: "
        f"{database.describe(exc)}"
    )


def _ensure_record(conn: Connection) -> None:
    try:
        recorder_ensure(conn)
    except sa.exc.DBAPIError as exc:
        raise _record_refused(exc) from None


def _run_each(
    config: ConfigArg,
    streams: Sequence[str] | None,
    tenant_names: Sequence[str] | None,
    run: Callable[[Stream, Config], Any],
    *,
    reverse: bool = False,
) -> list[SchemaResult]:
    _refuse_bad_tenants(tenant_names, config)
    results: list[SchemaResult] = []
    with session(config) as s:
        selected = streams_of(s.project, streams)
        # Every stream's schemas first: an unknown tenant is refused before anything changes.
        planned = [
            (stream, s.targets(stream, tenant_names))
            for stream in (reversed(selected) if reverse else selected)
        ]
        with s.connect() as conn:
            _ensure_record(conn)  # _apply writes alembic_schemas.applied
            conn.commit()
        for stream, schemas in planned:
            for schema in schemas:
                result = _apply(s, stream, schema, functools.partial(run, stream))
                results.append(result)
                if result.error:
                    _raise_failures(results)
    return results


def _offline(
    config: ConfigArg,
    streams: Sequence[str] | None,
    tenant_names: Sequence[str] | None,
    run: Callable[[Stream, Config], Any],
    output: IO[str] | None,
) -> None:
    project = load(config)
    _refuse_bad_tenants(tenant_names, project)  # downgrade --sql came here unchecked
    out = output or sys.stdout
    todo: list[tuple[Stream, str]] = []
    for stream in streams_of(project, streams):  # every refusal before any output
        if stream.is_tenant and not tenant_names:
            raise ConfigError(f"--sql for tenant stream {stream.name!r} needs --tenant NAME")
        schemas = tenant_names if stream.is_tenant else [stream.schema]
        for schema in schemas or ():
            assert schema is not None
            identifiers.validate(schema)
            environment.refuse_offline_tabs(stream, schema)
            todo.append((stream, schema))
    for stream, schema in todo:
        # A newline in the name would end this comment and start a statement of its own.
        shown = schema if schema.isprintable() else repr(schema)
        out.write(f"-- stream {stream.name}, schema {shown}\n")
        cfg = stream.alembic_config(**{SCHEMA_KEY: schema})
        cfg.output_buffer = out  # type: ignore[assignment]
        run(stream, cfg)


# --- verbs ---------------------------------------------------------------------------


@dataclass
class InitResult:
    config_path: Path
    created: list[Path]
    wrote_config: bool


def init(directory: str | os.PathLike[str] | None = None) -> InitResult:
    """Write a starter config if none exists, and every missing stream script directory."""
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
    """Add a stream to the config file and create its script directory."""
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
    config: ConfigArg = None,
) -> list[Script]:
    """Create a revision in ``stream``; with autogenerate, diff only that stream's schema."""
    with session(config) as s:
        st = Stream(s.project, s.project.stream(stream))
        if autogenerate:
            st.require_metadata()
        kwargs: dict[str, Any] = dict(
            message=message,
            autogenerate=autogenerate,
            rev_id=rev_id,
            head=head,
            splice=splice,
            branch_label=branch_label,
            depends_on=depends_on,
        )
        if not autogenerate:
            result = command.revision(st.alembic_config(), **kwargs)
        elif st.is_tenant:
            result = _autogenerate_tenant(s, st, kwargs)
        else:
            assert st.schema is not None
            with s.connect() as conn:
                cfg = st.alembic_config(connection=conn, **{SCHEMA_KEY: st.schema})
                try:
                    result = command.revision(cfg, **kwargs)
                except CommandError as exc:
                    if "not up to date" not in str(exc):
                        raise
                    raise AlembicSchemasError(
                        f"stream {stream!r}: the database is not at head; run "
                        f"'alembic-schemas upgrade -s {stream}' before autogenerating"
                    ) from None
    found = result if isinstance(result, list) else [result]
    return [sc for sc in found if sc is not None]


def _autogenerate_tenant(s: Session, st: Stream, kwargs: dict[str, Any]) -> Any:
    """Autogenerate a tenant revision against a scratch schema brought to head.

    Everything happens in one transaction that is rolled back, so the scratch schema never
    outlives the call, even when autogenerate fails or the process is killed. A dedicated
    engine is used because the scratch schema is made the dialect's default schema."""
    scratch = "alembic_schemas_scratch_" + uuid.uuid4().hex[:16]
    engine = database.create_engine(
        s.engine.url.render_as_string(hide_password=False), poolclass=sa.pool.NullPool
    )
    try:
        with database.connect(engine) as conn:
            conn.begin()
            try:
                cfg = st.alembic_config(connection=conn, **{SCHEMA_KEY: scratch, SCRATCH_KEY: True})
                command.upgrade(cfg, "heads")
                return command.revision(cfg, **kwargs)
            finally:
                conn.rollback()
    finally:
        engine.dispose()


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``K/N`` (1 <= K <= N) to (K, N)."""
    if not text:
        return None
    k, sep, n = text.partition("/")
    if not (sep and k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
        raise ConfigError(f"--shard {text!r} must be K/N with 1 <= K <= N, e.g. 1/4")
    return int(k), int(n)


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
    config: ConfigArg = None,
) -> UpgradeReport:
    """Upgrade every selected stream (default all, in dependency order) to ``revision``.

    Tenant streams run through the parallel executor (``jobs`` workers, default CPU count).
    After more than ``max_failures`` failed schemas no new schema starts. ``retry_failed``
    narrows each tenant stream to the tenants that failed in its last run; ``shard`` "K/N"
    to a stable 1/N of them. Raises MigrationFailed (with ``.report``) when anything failed.
    """
    _refuse_bad_tenants(tenants, config)
    if sql:
        _offline(
            config,
            streams,
            tenants,
            lambda _s, cfg: command.upgrade(cfg, revision, sql=True),
            output,
        )
        return UpgradeReport()
    project = load(config)
    selected = streams_of(project, streams)  # an unknown stream is refused before connecting
    workers = max(1, jobs or project.jobs or os.cpu_count() or 1)
    shard_kn = parse_shard(shard) if isinstance(shard, str) else shard
    started = time.perf_counter()
    s = Session(project, pool_size=workers + 2)
    unrecorded: list[str] = []  # why the run record could not be written, if it could not
    try:
        try:
            recorder = Recorder(s.engine)  # creates the record's tables when missing
        except sa.exc.DBAPIError as exc:
            raise _record_refused(exc) from None
        report = UpgradeReport(recorder.run_id)

        def record(write: Callable[[], None]) -> None:
            # A record the database refuses (read-only, disk full) must neither hide the
            # migrations' own outcome nor stop them: it is reported with that outcome.
            try:
                write()
            except sa.exc.DBAPIError as exc:
                unrecorded.append(database.describe(exc))

        def done(result: SchemaResult) -> None:
            record(lambda: recorder.add(result))
            if on_result is not None:
                on_result(result)

        try:
            for stream in selected:
                if not stream.is_tenant:
                    assert stream.schema is not None
                    if on_plan is not None:
                        on_plan(stream.name, 1, 1)
                    result = _apply(
                        s, stream, stream.schema, lambda cfg: command.upgrade(cfg, revision)
                    )
                    report.append(result)
                    done(result)
                else:
                    names = s.targets(stream, tenants, new=True)  # upgrade creates them
                    if retry_failed:
                        with s.connect() as conn:
                            failed = set(recorder_last_failures(conn, stream.name))
                        names = [n for n in names if n in failed]
                    names = select_shard(names, shard_kn)
                    ex = Executor(
                        stream,
                        s.engine,
                        jobs=workers,
                        max_failures=max_failures - len(report.failed),
                        on_result=done,
                    )
                    plan = ex.plan(names, revision)
                    report.at_target[stream.name] = len(names) - len(plan.todo)
                    if on_plan is not None:
                        on_plan(stream.name, len(names), len(plan.todo))
                    report.extend(ex.run(plan, revision))
                if len(report.failed) > max_failures:
                    break
        finally:
            record(recorder.flush)
    finally:
        s.close()
    report.seconds = time.perf_counter() - started
    note = f" (run record not written: {unrecorded[0]})" if unrecorded else ""
    _raise_failures(report, note)
    if unrecorded:
        raise DatabaseError(
            f"every migration succeeded, but the run record was not written: {unrecorded[0]}"
        )
    return report


@_user_errors
def downgrade(
    revision: str,
    *,
    streams: Sequence[str],
    tenants: Sequence[str] | None = None,
    sql: bool = False,
    output: IO[str] | None = None,
    config: ConfigArg = None,
) -> list[SchemaResult]:
    """Downgrade the named streams (dependents first) to ``revision``."""
    if not streams:
        raise ConfigError("downgrade needs -s STREAM")
    if sql:
        _offline(
            config,
            streams,
            tenants,
            lambda _s, cfg: command.downgrade(cfg, revision, sql=True),
            output,
        )
        return []
    return _run_each(
        config, streams, tenants, lambda _s, cfg: command.downgrade(cfg, revision), reverse=True
    )


@_user_errors
def stamp(
    revision: str,
    *,
    streams: Sequence[str] | None = None,
    tenants: Sequence[str] | None = None,
    purge: bool = False,
    config: ConfigArg = None,
) -> list[SchemaResult]:
    """Set the version row(s) without running migrations."""
    return _run_each(
        config, streams, tenants, lambda _s, cfg: command.stamp(cfg, revision, purge=purge)
    )


@_user_errors
def current(
    *,
    streams: Sequence[str] | None = None,
    tenants: Sequence[str] | None = None,
    config: ConfigArg = None,
) -> list[SchemaState]:
    """The applied revision(s) of every selected schema."""
    _refuse_bad_tenants(tenants, config)
    out: list[SchemaState] = []
    with session(config) as s:
        for stream in streams_of(s.project, streams):
            names = s.targets(stream, tenants)
            with s.connect() as conn:
                out += _states(conn, stream, names)
    return out


@_user_errors
def status(
    *,
    streams: Sequence[str] | None = None,
    tenants: Sequence[str] | None = None,
    drift: bool = True,
    config: ConfigArg = None,
) -> list[SchemaState]:
    """Every schema and tenant: current revision, head, pending count and drift."""
    _refuse_bad_tenants(tenants, config)
    out: list[SchemaState] = []
    with session(config) as s:
        for stream in streams_of(s.project, streams):
            names = s.targets(stream, tenants)
            with s.connect() as conn:
                edited: dict[str, list[EditedRevision]] = {}
                for e in edited_revisions(
                    conn, stream.script, stream.name, names, tenant=stream.is_tenant
                ):
                    edited.setdefault(e.schema, []).append(e)
                conn.rollback()
                for state in _states(conn, stream, names):
                    state.edited = edited.get(state.schema, [])
                    if drift and stream.metadata is not None:
                        with conn.begin():
                            state.drift = [
                                autogenerate.describe(d)
                                for d in autogenerate.compare(stream, state.schema, conn)
                            ]
                    out.append(state)
    return out


@_user_errors
def verify(
    *,
    streams: Sequence[str] | None = None,
    tenants: Sequence[str] | None = None,
    config: ConfigArg = None,
) -> list[EditedRevision]:
    """Applied revisions whose file was edited (or removed) since it was applied: each
    file's sha256 against the one recorded in ``alembic_schemas.applied``. Empty: clean."""
    _refuse_bad_tenants(tenants, config)
    out: list[EditedRevision] = []
    with session(config) as s:
        for stream in streams_of(s.project, streams):
            names = s.targets(stream, tenants)
            with s.connect() as conn:
                out += edited_revisions(
                    conn, stream.script, stream.name, names, tenant=stream.is_tenant
                )
                conn.rollback()
    return out


def last_failures(*, limit: int = 20, config: ConfigArg = None) -> list[dict[str, Any]]:
    """The latest failed attempts (from the run record) whose schema has not succeeded since."""
    with session(config) as s, s.connect() as conn:
        return recorder_recent_failures(conn, limit)


@_user_errors
def check(
    *,
    streams: Sequence[str] | None = None,
    tenants: Sequence[str] | None = None,
    config: ConfigArg = None,
) -> list[CheckResult]:
    """Compare models with the database; a result is clean when at head and no differences."""
    return [
        CheckResult(st.stream, st.schema, st.tenant, st.pending, st.drift or [])
        for st in status(streams=streams, tenants=tenants, config=config)
    ]


@_user_errors
def history(stream: str, *, rev_range: str | None = None, config: ConfigArg = None) -> list[Script]:
    """The stream's revisions, newest first (optionally ``base:head`` style range)."""
    st = _stream(config, stream)
    if rev_range:
        base, _, head = rev_range.partition(":")
        return list(st.script.walk_revisions(base or "base", head or "heads"))
    return list(st.script.walk_revisions())


@_user_errors
def heads(
    *, streams: Sequence[str] | None = None, config: ConfigArg = None
) -> dict[str, list[Script]]:
    project = load(config)
    return {
        st.name: [sc for h in st.script.get_heads() if (sc := st.script.get_revision(h))]
        for st in streams_of(project, streams)
    }


@_user_errors
def show(stream: str, revision: str, *, config: ConfigArg = None) -> list[Script]:
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
    return command.merge(st.alembic_config(), list(revisions), message=message)


def alembic_config(stream: str, *, schema: str | None = None, config: ConfigArg = None) -> Config:
    """A plain ``alembic.config.Config`` for a stream (tenant streams: pass ``schema``), for
    ``alembic.command.*`` and pytest-alembic. Put a Connection in ``attributes["connection"]``
    to run on it; otherwise the project's database is used."""
    st = _stream(config, stream)
    if schema is not None:
        if st.is_tenant:  # not public, the run record or a named stream's schema
            sources.validate_tenant(schema, st.project)
        identifiers.validate(schema)
        return st.alembic_config(**{SCHEMA_KEY: schema})
    return st.alembic_config()


__all__ = [
    "AlembicSchemasError",
    "CheckResult",
    "InitResult",
    "SchemaResult",
    "SchemaState",
    "add_stream",
    "alembic_config",
    "check",
    "current",
    "downgrade",
    "heads",
    "history",
    "init",
    "load",
    "merge",
    "revision",
    "show",
    "stamp",
    "status",
    "upgrade",
]
