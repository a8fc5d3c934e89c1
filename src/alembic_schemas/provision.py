"""Provisioning a new tenant at head in constant time, whatever the history length.

A *snapshot* of a tenant schema at head is built once per head (and per content of the
revision files): the tenant stream and the named streams it depends on are migrated,
revision by revision, into a throw-away database, and ``pg_dump`` (with data, so seed rows
and the version row come along) captures the staging schema. The SQL is kept in
``alembic_schemas.snapshot``. Provisioning then replays it in one transaction, which creates
the staging schema, and renames that schema to the tenant: the tenant's name only ever
appears in ``ALTER SCHEMA ... RENAME TO``, quoted by :mod:`identifiers`.

Statements a revision runs against other schemas (say, a row written to a shared table) are
not part of a schema snapshot: ``replay=True`` migrates revision by revision instead.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
import subprocess
import uuid
import zlib
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from . import database, embedded, environment, identifiers, recorder
from .errors import AlembicSchemasError, DatabaseError
from .streams import Stream

log = logging.getLogger("alembic_schemas")

snapshot = sa.Table(
    "snapshot",
    recorder.metadata,
    sa.Column("stream", sa.Text, primary_key=True),
    sa.Column("fingerprint", sa.String(64), primary_key=True),
    sa.Column("sql", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
)

_SESSION_SET = re.compile(r"^SET (\w+) = ", re.MULTILINE)
_SESSION_SEARCH_PATH = "SELECT pg_catalog.set_config('search_path', '', false);"


def staging_schema(stream: Stream) -> str:
    """The fixed name a snapshot creates before it is renamed to the tenant."""
    return f"alembic_schemas_new_{zlib.crc32(stream.name.encode()):08x}"


def fingerprint(stream: Stream) -> str:
    """Changes whenever any revision file of the stream (or a dependency) changes."""
    digest = hashlib.sha256()
    project = stream.project
    for name in (*stream.config.depends_on, stream.name):
        st = Stream(project, project.stream(name))
        for sc in sorted(st.script.walk_revisions(), key=lambda s: s.revision):
            digest.update(sc.revision.encode())
            digest.update(Path(sc.path).read_bytes())
    return digest.hexdigest()


def _pg_dump() -> str:
    return str(embedded.bin_path() / "pg_dump")


def _dump(url: sa.URL, schema: str) -> str:
    """``pg_dump`` of one schema (DDL and rows), as SQL safe to run inside our transaction."""
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
    import psycopg.conninfo

    conninfo = psycopg.conninfo.make_conninfo("", **params)
    proc = subprocess.run(
        [
            _pg_dump(),
            "--schema",
            schema,
            "--no-owner",
            "--no-privileges",
            "--inserts",
            "--dbname",
            conninfo,
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise DatabaseError(f"pg_dump failed: {proc.stderr.strip().splitlines()[-1:]}")
    lines = [ln for ln in proc.stdout.splitlines() if not ln.startswith("\\")]  # psql meta
    sql = "\n".join(lines)
    # Session settings would outlive our transaction on a pooled connection: make them local.
    sql = _SESSION_SET.sub(lambda m: f"SET LOCAL {m.group(1)} = ", sql)
    return sql.replace(
        _SESSION_SEARCH_PATH, "SELECT pg_catalog.set_config('search_path', '', true);"
    )


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
            conn.exec_driver_sql(f"CREATE DATABASE {identifiers.quote(scratch)} TEMPLATE template0")
        url = engine.url.set(database=scratch)
        staged = dataclasses.replace(project, url=url.render_as_string(hide_password=False))
        api.upgrade(
            streams=[*stream.config.depends_on, stream.name],
            tenants=[staging_schema(stream)],
            jobs=1,
            config=staged,
        )
        return _dump(url, staging_schema(stream))
    finally:
        with database.connect(admin) as conn:
            conn.exec_driver_sql(
                f"DROP DATABASE IF EXISTS {identifiers.quote(scratch)} WITH (FORCE)"
            )
        admin.dispose()


def get_snapshot(stream: Stream, engine: Engine) -> str:
    """The cached snapshot for the current revision files, built on first use."""
    key = fingerprint(stream)
    with database.connect(engine) as conn:
        recorder.ensure(conn)
        snapshot.create(conn, checkfirst=True)
        conn.commit()
        found = conn.scalar(
            sa.select(snapshot.c.sql).where(
                snapshot.c.stream == stream.name, snapshot.c.fingerprint == key
            )
        )
        conn.rollback()
    if found is not None:
        return str(found)
    log.info("building the provisioning snapshot of stream %s", stream.name)
    sql = build_snapshot(stream, engine)
    with database.connect(engine) as conn, conn.begin():
        conn.execute(
            sa.dialects.postgresql.insert(snapshot)
            .values(stream=stream.name, fingerprint=key, sql=sql)
            .on_conflict_do_nothing()
        )
    return sql


def schema_exists(conn: Connection, name: str) -> bool:
    query = sa.text("SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = :n")
    return conn.scalar(query, {"n": name}) is not None


def provision(stream: Stream, conn: Connection, tenant: str, sql: str) -> None:
    """Create ``tenant`` from a snapshot inside the caller's transaction on ``conn``."""
    identifiers.validate(tenant, "tenant name")
    staging = staging_schema(stream)
    environment.lock(conn, stream.name, staging)  # one provisioning of this stream at a time
    environment.lock(conn, stream.name, tenant)
    if schema_exists(conn, tenant):
        raise AlembicSchemasError(f"schema {tenant!r} already exists")
    # The snapshot sets a few settings for its own statements; put the caller's back after.
    names = sorted(set(re.findall(r"^SET LOCAL (\w+) = ", sql, re.MULTILINE)) | {"search_path"})
    saved = {n: conn.scalar(sa.select(sa.func.current_setting(n))) for n in names}
    with conn.begin_nested():
        conn.exec_driver_sql(sql)
        conn.exec_driver_sql(
            f"ALTER SCHEMA {identifiers.quote(staging)} RENAME TO {identifiers.quote(tenant)}"
        )
        if stream.config.owner:
            conn.exec_driver_sql(
                f"ALTER SCHEMA {identifiers.quote(tenant)} OWNER TO "
                f"{identifiers.quote(stream.config.owner, 'role name')}"
            )
    for name, value in saved.items():
        conn.execute(sa.select(sa.func.set_config(name, value, True)))
