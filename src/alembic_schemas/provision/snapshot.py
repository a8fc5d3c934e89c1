"""Provisioning a new tenant at head in constant time, whatever the history length.

A *snapshot* of a tenant schema at head is built once per content of the revision files:
the tenant stream is migrated, revision by revision, into a staging schema of a throw-away
database, where the named streams it depends on are upgraded first, and ``pg_dump`` (with
data, so seed rows and the version row come along) captures the staging schema. The SQL is
kept in ``alembic_schemas.snapshot``. Provisioning then replays it in one transaction, which
creates the staging schema, and renames that schema to the tenant: the tenant's name only
ever appears in ``ALTER SCHEMA ... RENAME TO``, quoted by :mod:`alembic_schemas.identifiers`.

Statements a revision runs against other schemas (say, a row written to a shared table),
objects outside the schema (roles, extensions) and values that depend on the schema's name
are not part of a schema snapshot: ``replay=True`` migrates revision by revision instead.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import subprocess
import uuid
import zlib
from collections.abc import Callable, Sequence

import psycopg
import psycopg.conninfo
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from .. import catalog, citus, database, embedded, identifiers, locks, records, versions
from ..errors import AlembicSchemasError, DatabaseError, MigrationFailed
from ..executor import Action, Executor
from ..runtime import compat
from ..runtime import schema as schema_tx
from ..streams import Stream
from .script import restore_script, settings_of, statements_of

log = logging.getLogger("alembic_schemas")

# Part of the fingerprint: bump when the stored SQL changes shape, so old rows are never used.
FORMAT = b"alembic-schemas snapshot 3"
KEEP = 5  # snapshots kept per stream; older ones are pruned when a new one is stored
snapshot = records.snapshot


def staging_schema(stream: Stream) -> str:
    """The fixed name a snapshot creates before it is renamed to the tenant."""
    return f"alembic_schemas_new_{zlib.crc32(stream.name.encode()):08x}"


def snapshot_streams(stream: Stream) -> list[Stream]:
    """The tenant stream and every stream it depends on (transitively), dependencies first."""
    project = stream.project
    wanted: set[str] = set()
    todo = [stream.name]
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            todo.extend(project.stream(name).depends_on)
    return [Stream(project, s) for s in project.select(sorted(wanted))]


def fingerprint(stream: Stream, dependencies: str = "") -> str:
    """Changes whenever a revision file (or env.py) of the stream or a dependency changes,
    or ``dependencies`` (where the dependency schemas stand in the target database).

    Hashes the files' bytes without importing them (each file once while it is unchanged on
    disk): on every ``create`` the history costs one ``stat`` per revision file."""
    digest = hashlib.sha256(FORMAT)
    digest.update(dependencies.encode())
    for st in snapshot_streams(stream):
        digest.update(f"\0stream {st.name} {st.schema} {st.version_table}\0".encode())
        env_py = records.file_checksum(str(st.path / "env.py"))
        if env_py is not None:
            digest.update(env_py.encode())
        # wherever the stream's alembic.ini puts its revisions (version_locations)
        base = st.path.absolute()
        for path in compat.revision_files(st.script):
            # named as within the stream's folder: the same history hashes alike anywhere
            name = path.relative_to(base) if path.is_relative_to(base) else path
            digest.update(f"\0{name}\0".encode())
            digest.update((records.file_checksum(str(path)) or "").encode())
    return digest.hexdigest()


def _pg_dump() -> str:
    return str(embedded.bin_path() / "pg_dump")


def _dump(
    url: sa.URL, schemas: list[str], *, ddl_only: bool = False, extensions: Sequence[str] = ()
) -> str:
    """``pg_dump`` of some schemas as a plain SQL script: DDL, rows and privileges, or with
    ``ddl_only`` their DDL alone (and that of the ``extensions`` named)."""
    params: dict[str, str] = {
        k: (v[-1] if isinstance(v, tuple) else v) for k, v in url.query.items()
    }
    for key, value in (("host", url.host), ("port", url.port), ("user", url.username)):
        if value is not None:
            params.setdefault(key, str(value))
    params["dbname"] = str(url.database)
    env = dict(os.environ)
    if url.password is not None:
        env["PGPASSWORD"] = str(url.password)  # not on the command line, where ps shows it
    conninfo = psycopg.conninfo.make_conninfo("", **params)
    what = ["--schema-only", "--no-privileges"] if ddl_only else ["--inserts"]  # no COPY
    proc = subprocess.run(
        [
            _pg_dump(),
            *(arg for schema in schemas for arg in ("--schema", schema)),
            *(arg for name in extensions for arg in ("--extension", name)),
            "--no-owner",  # objects belong to whoever provisions, as with a replay
            *what,
            "--dbname",
            conninfo,
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        last = proc.stderr.strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        raise DatabaseError(f"pg_dump failed: {last[0]}")
    return proc.stdout


def _dependencies(stream: Stream) -> list[Stream]:
    """The named streams the tenant stream depends on (transitively), dependencies first."""
    return [st for st in snapshot_streams(stream) if st.schema is not None]


def dependency_state(conn: Connection, stream: Stream) -> str:
    """Where the dependency schemas stand in the target database: their version rows, or
    absent. A snapshot built over them holds while this does not change."""
    deps = _dependencies(stream)
    present = catalog.existing_schemas(conn, [st.schema for st in deps if st.schema])
    parts = []
    for st in deps:
        assert st.schema is not None
        if st.schema in present:
            heads = versions.read_versions(conn, [st.schema], st.version_table)[st.schema]
            parts.append(f"{st.name}={','.join(heads)}")
        else:
            parts.append(f"{st.name} absent")
    return ";".join(parts)


def _copy_dependencies(
    target: Engine, scratch: sa.URL, deps: list[Stream], known: list[str]
) -> None:
    """The dependency schemas as they are in the target database (their DDL, no rows), and
    the extensions they may use, restored in the scratch database. Reading them takes only
    pg_dump's ACCESS SHARE locks; nothing is written to the target database."""
    with database.connect(target) as conn:
        # The staging schema is built as a plain one (then distributed when provisioned).
        extensions = [e for e in catalog.extensions(conn) if e[0] not in citus.EXTENSIONS]
        conn.rollback()
    schemas = [st.schema for st in deps if st.schema is not None]
    elsewhere = sorted({s for _, s in extensions} - {*schemas, "public", "pg_catalog"})
    dump = _dump(target.url, schemas, ddl_only=True, extensions=[e for e, _ in extensions])
    engine = database.create_engine(
        scratch.render_as_string(hide_password=False), poolclass=sa.pool.NullPool
    )
    try:
        with database.connect(engine) as conn, conn.begin():
            for schema in elsewhere:  # where extensions live, outside the copied schemas
                database.run_sql(conn, "CREATE SCHEMA IF NOT EXISTS " + identifiers.quote(schema))
            database.run_sql(conn, restore_script(dump, known))
    except sa.exc.DBAPIError as exc:
        raise DatabaseError(
            "building the provisioning snapshot: copying the schemas it depends on"
            f" ({', '.join(schemas)}) from the target database failed: {database.describe(exc)}"
        ) from None
    finally:
        engine.dispose()


def build_snapshot(stream: Stream, engine: Engine) -> str:
    """Migrate a staging schema to head in a scratch database and dump it.

    The schemas of the streams it depends on are taken as they are in the target database
    (their DDL, copied with pg_dump), so their histories need not replay from base; those
    not there yet are migrated in the scratch database (from their baseline, if any). The
    staging schema is never built in the target database: its revisions may write to the
    dependency schemas, and that must not reach the real ones."""
    project = stream.project
    scratch = "alembic_schemas_tmp_" + uuid.uuid4().hex[:12]
    admin = database.create_engine(
        engine.url.render_as_string(hide_password=False),
        isolation_level="AUTOCOMMIT",
        poolclass=sa.pool.NullPool,
    )
    deps = _dependencies(stream)
    try:
        with database.connect(admin) as conn:
            known = catalog.setting_names(conn)
            present = catalog.existing_schemas(conn, [st.schema for st in deps if st.schema])
            try:
                conn.exec_driver_sql(
                    f"CREATE DATABASE {identifiers.quote(scratch, 'database name')} "
                    "TEMPLATE template0"
                )
            except sa.exc.DBAPIError as exc:
                raise DatabaseError(
                    "cannot build the provisioning snapshot (it needs a scratch database): "
                    f"{database.describe(exc)}; use --replay (replay=True) instead"
                ) from None
        url = engine.url.set(database=scratch)
        copied = [st for st in deps if st.schema in present]
        if copied:
            _copy_dependencies(engine, url, copied, known)
        # the scratch database for every connection: direct_url names the real one
        staged = dataclasses.replace(
            project, url=url.render_as_string(hide_password=False), direct_url=None
        )
        with database.session(staged) as s:
            # the streams it depends on that were not copied, then the staging schema (a
            # name sources refuse)
            for st in snapshot_streams(Stream(staged, stream.config)):
                if st.schema in present:
                    continue
                schema = st.schema if st.schema is not None else staging_schema(stream)
                ex = Executor(st, s.engine, Action("upgrade", "heads"))
                failed = [o for o in ex.run(ex.plan([schema])) if o.error]
                if failed:
                    error = MigrationFailed(
                        "building the provisioning snapshot failed in stream"
                        f" {failed[0].stream!r}: {failed[0].error}"
                    )
                    error.statement = failed[0].statement  # type: ignore[attr-defined]
                    raise error
        return restore_script(_dump(url, [staging_schema(stream)]), known)
    finally:
        with database.connect(admin) as conn:
            conn.exec_driver_sql(
                f"DROP DATABASE IF EXISTS {identifiers.quote(scratch, 'database name')} "
                "WITH (FORCE)"
            )
        admin.dispose()


def _cached(conn: Connection, stream: Stream, key: str) -> str | None:
    found = conn.scalar(
        sa.select(snapshot.c.sql).where(
            snapshot.c.stream == stream.name, snapshot.c.fingerprint == key
        )
    )
    conn.rollback()
    return None if found is None else str(found)


def get_snapshot(
    stream: Stream, engine: Engine, before_build: Callable[[], None] | None = None
) -> str:
    """The cached snapshot for the current revision files, built on first use (after
    ``before_build``, which may refuse).

    Builds of one stream are serialised by a session advisory lock, so concurrent first
    ``create`` calls build it once (and never run Alembic in two threads at a time)."""
    with database.connect(engine) as conn:
        records.ensure(conn)
        conn.commit()
        key = fingerprint(stream, dependency_state(conn, stream))
        conn.rollback()
        found = _cached(conn, stream, key)
        if found is not None:
            return found
        if before_build is not None:
            before_build()
        unlock = locks.session_lock(conn, locks.snapshot_args(stream.name))
        conn.commit()
        try:
            found = _cached(conn, stream, key)
            if found is not None:
                return found
            log.info("building the provisioning snapshot of stream %s", stream.name)
            sql = build_snapshot(stream, engine)
            with conn.begin():
                conn.execute(
                    sa.dialects.postgresql.insert(snapshot)
                    .values(stream=stream.name, fingerprint=key, sql=sql)
                    .on_conflict_do_nothing()
                )
                keep = (
                    sa.select(snapshot.c.fingerprint)
                    .where(snapshot.c.stream == stream.name)
                    .order_by(snapshot.c.created_at.desc())
                    .limit(KEEP)
                )
                conn.execute(
                    snapshot.delete().where(
                        snapshot.c.stream == stream.name,
                        snapshot.c.fingerprint != key,
                        snapshot.c.fingerprint.not_in(keep.scalar_subquery()),
                    )
                )
            return sql
        finally:
            if conn.in_transaction():
                conn.rollback()
            unlock()
            conn.commit()


def provision(
    stream: Stream,
    conn: Connection,
    tenant: str,
    sql: str,
    *,
    timeouts: dict[str, str] | None = None,
) -> None:
    """Create ``tenant`` from a snapshot inside the caller's transaction on ``conn``.

    Provisionings of one stream are serialised until the transaction ends (the staging
    schema has one name). ``timeouts`` (e.g. the project's ``lock_timeout``) apply to the
    statements after that wait; every setting is back to the caller's value afterwards."""
    identifiers.validate(tenant, "tenant name")
    staging = staging_schema(stream)
    # Few round trips: they are most of the cost besides the script. The staging lock comes
    # first (one provisioning of this stream at a time), as its own statement's target list
    # is evaluated in order; the existence check needs a statement of its own, after them.
    conn.execute(
        sa.select(
            sa.func.pg_advisory_xact_lock(*locks.args(stream.name, staging)),
            sa.func.pg_advisory_xact_lock(*locks.args(stream.name, tenant)),
        )
    )
    if catalog.schema_exists(conn, tenant):
        raise AlembicSchemasError(f"schema {tenant!r} already exists")
    on_citus = citus.is_citus(conn)
    if on_citus:  # before the tenant is touched, as an upgrade does
        citus.refuse_unreferenceable(conn, stream.config, stream.metadata, [sql], stream.project)
    names = sorted(
        {*settings_of(sql), *(timeouts or {}), "search_path", *_citus_settings(on_citus)}
    )
    row = conn.execute(sa.select(*(sa.func.current_setting(n) for n in names))).one()
    saved = dict(zip(names, row, strict=True))
    if timeouts and on_citus:  # as SET LOCAL statements, so that they reach the workers
        settings = (citus.PROPAGATE, *schema_tx.settings_sql(stream.project))
        database.send(conn, [(sql, None) for sql in settings])
    elif timeouts:
        conn.execute(sa.select(*(sa.func.set_config(k, v, True) for k, v in timeouts.items())))
    finish = [f"ALTER SCHEMA {identifiers.quote(staging)} RENAME TO {identifiers.quote(tenant)}"]
    if stream.config.owner:
        finish.append(
            f"ALTER SCHEMA {identifiers.quote(tenant)} OWNER TO "
            f"{identifiers.quote_role(stream.config.owner)}"
        )
    # Grants as replay gives them; default privileges belong to whoever provisions.
    finish += schema_tx.grants_sql(tenant, stream.config.grants)
    with conn.begin_nested():  # a failure leaves the caller's transaction usable
        if on_citus:
            # Built as a plain schema, as pg_dump wrote it for one (Citus refuses some of its
            # ALTER TABLE statements on distributed tables), then distributed as a whole.
            _run_script(conn, [citus.sharding_statement(False), *statements_of(sql)], tenant)
            citus.distribute_schema(conn, staging)
        else:
            _run_script(conn, statements_of(sql), tenant)
        _run_script(conn, finish, tenant)
    conn.execute(sa.select(*(sa.func.set_config(k, v, True) for k, v in saved.items())))


def _citus_settings(on_citus: bool) -> tuple[str, ...]:
    """Citus settings provisioning changes, to be put back afterwards."""
    return (
        ("citus.propagate_set_commands", "citus.enable_schema_based_sharding") if on_citus else ()
    )


def _run_script(conn: Connection, statements: Sequence[str], tenant: str) -> None:
    """The statements one per query, pipelined (one network wait for them all), sent as
    written: a ``%`` in a seed row (or a tenant name) is text, not a placeholder."""
    try:
        if conn.dialect.is_async:  # asyncpg prepares each statement: one at a time
            for statement in statements:
                conn.exec_driver_sql(statement, execution_options={"no_parameters": True})
        else:
            database.send(conn, [(statement, None) for statement in statements])
    except sa.exc.DBAPIError as exc:
        hint = ""
        if database.sqlstate(exc) in ("42P01", "3F000", "42704"):
            hint = " (are the streams it depends on at head? run 'alembic-schemas upgrade')"
        raise DatabaseError(
            f"provisioning tenant {tenant!r} from the snapshot failed: "
            f"{database.describe(exc)}{hint}"
        ) from exc
