"""Provisioning a new tenant at head in constant time, whatever the history length.

A *snapshot* of a tenant schema at head is built once per content of the revision files:
the tenant stream and the named streams it depends on are migrated, revision by revision,
into a throw-away database, and ``pg_dump`` (with data, so seed rows and the version row
come along) captures the staging schema. The SQL is kept in ``alembic_schemas.snapshot``.
Provisioning then replays it in one transaction, which creates the staging schema, and
renames that schema to the tenant: the tenant's name only ever appears in
``ALTER SCHEMA ... RENAME TO``, quoted by :mod:`identifiers`.

Statements a revision runs against other schemas (say, a row written to a shared table),
objects outside the schema (roles, extensions) and values that depend on the schema's name
are not part of a schema snapshot: ``replay=True`` migrates revision by revision instead.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
import subprocess
import time
import uuid
import zlib
from collections.abc import Iterable

import psycopg
import psycopg.conninfo
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from . import database, embedded, environment, identifiers, recorder
from .errors import AlembicSchemasError, DatabaseError, MigrationFailed
from .executor import Executor
from .streams import Stream

log = logging.getLogger("alembic_schemas")

# Part of the fingerprint: bump when the stored SQL changes shape, so old rows are never used.
FORMAT = b"alembic-schemas snapshot 2"
KEEP = 5  # snapshots kept per stream; older ones are pruned when a new one is stored

snapshot = sa.Table(
    "snapshot",
    recorder.metadata,
    sa.Column("stream", sa.Text, primary_key=True),
    sa.Column("fingerprint", sa.String(64), primary_key=True),
    sa.Column("sql", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
)

# The first line of a stored snapshot names the settings its script changes (SET LOCAL), so
# that provisioning can put the caller's values back afterwards.
_HEADER = "-- alembic-schemas settings: "
# pg_dump's guards for a long restore session; provisioning keeps the caller's (or the
# project's) timeouts instead.
_DROPPED_SETTINGS = frozenset(
    {
        "statement_timeout",
        "lock_timeout",
        "idle_in_transaction_session_timeout",
        "transaction_timeout",
    }
)


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


def fingerprint(stream: Stream) -> str:
    """Changes whenever a revision file (or env.py) of the stream or a dependency changes.

    Hashes the files' bytes without importing them, and remembers each file's hash while
    its size, mtime and inode stay the same: on every ``create`` the history costs one
    ``stat`` per revision file."""
    digest = hashlib.sha256(FORMAT)
    for st in snapshot_streams(stream):
        digest.update(f"\0stream {st.name} {st.schema} {st.version_table}\0".encode())
        env_py = st.path / "env.py"
        if env_py.is_file():
            digest.update(_file_digest(str(env_py)))
        # The stream's alembic Config names only script_location: versions/ is the one place.
        with os.scandir(st.path / "versions") as found:
            files = sorted(
                (e.name, e.path) for e in found if e.name.endswith(".py") and e.is_file()
            )
        for name, path in files:
            digest.update(f"\0{name}\0".encode())
            digest.update(_file_digest(path))
    return digest.hexdigest()


_FILE_DIGESTS: dict[str, tuple[tuple[int, int, int], bytes]] = {}
# A file written this recently is hashed again each time: a second write within the clock's
# granularity could leave size and mtime unchanged.
_RACY_NS = 2_000_000_000


def _file_digest(path: str) -> bytes:
    stat = os.stat(path)
    key = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
    cached = _FILE_DIGESTS.get(path)
    if cached is not None and cached[0] == key:
        return cached[1]
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).digest()
    if time.time_ns() - stat.st_mtime_ns > _RACY_NS:
        _FILE_DIGESTS[path] = (key, digest)
    return digest


# --- reading pg_dump's script ------------------------------------------------------------

_SPECIAL = re.compile(r"--|/\*|'|\"|\$|;|\\")
_BLOCK_COMMENT = re.compile(r"/\*|\*/")
_DOLLAR_TAG = re.compile(r"\$(?:[^\W\d]\w*)?\$")
_IDENT_CHAR = re.compile(r"[\w$]")
_SET = re.compile(r"SET\s+(?!LOCAL\b|SESSION\b)(\w+)\s*(?:=|TO\b)", re.IGNORECASE)
_SET_CONFIG = re.compile(r"SELECT pg_catalog\.set_config\('(\w+)', (.*), false\);\Z", re.DOTALL)
_LEADING_COMMENTS = re.compile(r"\A(?:\s+|--[^\n]*)*")


def split_script(sql: str) -> list[str]:
    """The top-level statements of a psql script, with psql meta-command lines left out.

    Knows what can hide a ``;`` or a line start: string literals (also ``E''``), quoted
    identifiers, dollar quotes and comments, so rows and function bodies are never cut or
    rewritten, whatever text they hold."""
    out: list[str] = []
    start = i = 0
    blank = True  # nothing but whitespace and comments since ``start``
    n = len(sql)
    while (m := _SPECIAL.search(sql, i)) is not None:
        j, token = m.start(), m.group()
        if sql[i:j].strip():
            blank = False
        if token == "--":
            eol = sql.find("\n", j)
            i = n if eol < 0 else eol + 1
        elif token == "/*":
            depth, k = 1, j + 2
            while depth and (c := _BLOCK_COMMENT.search(sql, k)) is not None:
                depth += 1 if c.group() == "/*" else -1
                k = c.end()
            i = k if not depth else n
        elif token in ("'", '"'):
            blank = False
            escapes = (
                token == "'"
                and j > 0
                and sql[j - 1] in "Ee"
                and (j < 2 or not _IDENT_CHAR.match(sql[j - 2]))
            )
            i = _end_of_quoted(sql, j, token, escapes)
        elif token == "$":
            blank = False
            tag = _DOLLAR_TAG.match(sql, j)
            if tag is not None and not (j > 0 and _IDENT_CHAR.match(sql[j - 1])):
                end = sql.find(tag.group(), tag.end())
                i = n if end < 0 else end + len(tag.group())
            else:
                i = j + 1
        elif token == ";":
            out.append(sql[start : j + 1])
            start = i = j + 1
            blank = True
        else:  # a backslash: at a statement's start it begins a psql meta-command line
            if blank:
                eol = sql.find("\n", j)
                start = i = n if eol < 0 else eol + 1
            else:
                i = j + 1
    if sql[start:].strip() and not blank:
        out.append(sql[start:])
    return out


def _end_of_quoted(sql: str, j: int, quote: str, escapes: bool) -> int:
    """Index just past the literal or identifier opened at ``j``."""
    k = j + 1
    n = len(sql)
    while k < n:
        c = sql[k]
        if escapes and c == "\\":
            k += 2
        elif c == quote:
            if sql.startswith(quote, k + 1):
                k += 2
            else:
                return k + 1
        else:
            k += 1
    return n


def restore_script(dump: str, known_settings: Iterable[str]) -> str:
    """pg_dump's script made safe to run inside a caller's transaction, behind a header.

    Session ``SET``s become ``SET LOCAL`` (they would otherwise outlive the transaction on a
    pooled connection); settings the server does not know (a newer pg_dump's, such as
    ``transaction_timeout`` on PostgreSQL 15) and pg_dump's timeout guards are left out."""
    known = {s.lower() for s in known_settings}
    changed: list[str] = []
    statements: list[str] = []
    for raw in split_script(dump):
        stmt = raw[_LEADING_COMMENTS.match(raw).end() :]  # type: ignore[union-attr]
        if (m := _SET.match(stmt)) is not None:
            name = m.group(1).lower()
            if name in _DROPPED_SETTINGS or name not in known:
                continue
            stmt = "SET LOCAL " + stmt[3:].lstrip()
            changed.append(name)
        elif (m := _SET_CONFIG.match(stmt)) is not None:
            stmt = f"SELECT pg_catalog.set_config('{m.group(1)}', {m.group(2)}, true);"
            changed.append(m.group(1).lower())
        statements.append(stmt)
    header = _HEADER + ",".join(sorted(set(changed)))
    return header + "\n" + "\n".join(statements) + "\n"


def _settings_of(script: str) -> list[str]:
    header = script.partition("\n")[0]
    if not header.startswith(_HEADER):
        raise AlembicSchemasError("the stored provisioning snapshot is not in a known format")
    return [s for s in header.removeprefix(_HEADER).split(",") if s]


# --- building ------------------------------------------------------------------------------


def _pg_dump() -> str:
    return str(embedded.bin_path() / "pg_dump")


def _dump(url: sa.URL, schema: str) -> str:
    """``pg_dump`` of one schema (DDL, rows and privileges) as a plain SQL script."""
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
    proc = subprocess.run(
        [
            _pg_dump(),
            "--schema",
            schema,
            "--no-owner",  # objects belong to whoever provisions, as with a replay
            "--inserts",  # plain statements: no COPY ... FROM stdin
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


def build_snapshot(stream: Stream, engine: Engine) -> str:
    """Migrate a staging schema to head in a scratch database and dump it."""
    from . import api

    project = stream.project
    scratch = "alembic_schemas_tmp_" + uuid.uuid4().hex[:12]
    admin = database.create_engine(
        engine.url.render_as_string(hide_password=False),
        isolation_level="AUTOCOMMIT",
        poolclass=sa.pool.NullPool,
    )
    try:
        with database.connect(admin) as conn:
            known = list(conn.scalars(sa.text("SELECT name FROM pg_catalog.pg_settings")))
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
        staged = dataclasses.replace(project, url=url.render_as_string(hide_password=False))
        deps = [st.name for st in snapshot_streams(stream) if st.name != stream.name]
        if deps:
            api.upgrade(streams=deps, jobs=1, config=staged)
        # The staging name is one sources refuse as a tenant: drive the executor directly.
        with api.session(staged) as s:
            ex = Executor(Stream(staged, stream.config), s.engine, jobs=1)
            outcomes = ex.run(ex.plan([staging_schema(stream)], "heads"), "heads")
        failed = [o for o in outcomes if o.error]
        if failed:
            raise MigrationFailed(f"building the provisioning snapshot: {failed[0].error}")
        return restore_script(_dump(url, staging_schema(stream)), known)
    finally:
        with database.connect(admin) as conn:
            conn.exec_driver_sql(
                f"DROP DATABASE IF EXISTS {identifiers.quote(scratch, 'database name')} "
                "WITH (FORCE)"
            )
        admin.dispose()


def _ensure_table(conn: Connection) -> None:
    """Create ``alembic_schemas.snapshot`` if missing, safely under concurrent first uses."""
    exists = conn.scalar(sa.select(sa.func.to_regclass(f"{recorder.SCHEMA}.snapshot")))
    conn.rollback()
    if exists is None:
        with conn.begin():
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(recorder._LOCK_KEY)))
            conn.execute(sa.schema.CreateSchema(recorder.SCHEMA, if_not_exists=True))
            snapshot.create(conn, checkfirst=True)


def _cached(conn: Connection, stream: Stream, key: str) -> str | None:
    found = conn.scalar(
        sa.select(snapshot.c.sql).where(
            snapshot.c.stream == stream.name, snapshot.c.fingerprint == key
        )
    )
    conn.rollback()
    return None if found is None else str(found)


def get_snapshot(stream: Stream, engine: Engine) -> str:
    """The cached snapshot for the current revision files, built on first use.

    Builds of one stream are serialised by a session advisory lock, so concurrent first
    ``create`` calls build it once (and never run Alembic in two threads at a time)."""
    key = fingerprint(stream)
    with database.connect(engine) as conn:
        _ensure_table(conn)
        found = _cached(conn, stream, key)
        if found is not None:
            return found
        lock = (environment._LOCK_NAMESPACE, environment.lock_key(stream.name, "\0snapshot"))
        conn.execute(sa.select(sa.func.pg_advisory_lock(*lock)))
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
            conn.execute(sa.select(sa.func.pg_advisory_unlock(*lock)))
            conn.commit()


# --- provisioning --------------------------------------------------------------------------


def schema_exists(conn: Connection, name: str) -> bool:
    query = sa.text("SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = :n")
    return conn.scalar(query, {"n": name}) is not None


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
    ns = environment._LOCK_NAMESPACE
    conn.execute(
        sa.select(
            sa.func.pg_advisory_xact_lock(ns, environment.lock_key(stream.name, staging)),
            sa.func.pg_advisory_xact_lock(ns, environment.lock_key(stream.name, tenant)),
        )
    )
    if schema_exists(conn, tenant):
        raise AlembicSchemasError(f"schema {tenant!r} already exists")
    names = sorted({*_settings_of(sql), *(timeouts or {}), "search_path"})
    row = conn.execute(sa.select(*(sa.func.current_setting(n) for n in names))).one()
    saved = dict(zip(names, row, strict=True))
    if timeouts:
        conn.execute(sa.select(*(sa.func.set_config(k, v, True) for k, v in timeouts.items())))
    rename = f"ALTER SCHEMA {identifiers.quote(staging)} RENAME TO {identifiers.quote(tenant)};\n"
    if stream.config.owner:
        rename += (
            f"ALTER SCHEMA {identifiers.quote(tenant)} OWNER TO "
            f"{identifiers.quote_role(stream.config.owner)};\n"
        )
    # Grants as replay gives them; default privileges belong to whoever provisions.
    rename += "".join(g + ";\n" for g in environment.grants_sql(tenant, stream.config.grants))
    with conn.begin_nested():  # a failure leaves the caller's transaction usable
        _run_script(conn, sql + rename, tenant)
    conn.execute(sa.select(*(sa.func.set_config(k, v, True) for k, v in saved.items())))


def _run_script(conn: Connection, sql: str, tenant: str) -> None:
    """Run the snapshot as one script, in one round trip. ``no_parameters``: psycopg is given
    no parameter set, so a ``%`` in a seed row (or a tenant name) is text, not a placeholder."""
    try:
        conn.exec_driver_sql(sql, execution_options={"no_parameters": True})
    except sa.exc.DBAPIError as exc:
        hint = ""
        if getattr(exc.orig, "sqlstate", None) in ("42P01", "3F000", "42704"):
            hint = " (are the streams it depends on at head? run 'alembic-schemas upgrade')"
        raise DatabaseError(
            f"provisioning tenant {tenant!r} from the snapshot failed: "
            f"{database.describe(exc)}{hint}"
        ) from exc
