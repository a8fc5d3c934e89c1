"""Citus benchmark (issue 14): a tenant fleet upgraded on a Citus cluster against the same run on a
plain PostgreSQL of the same version, on the same machine.

    python benchmarks/citus.py [--tenants 200] [--jobs N] [--runs 1] [--url COORDINATOR]
                               [--pg-bin /usr/lib/postgresql/15/bin] [--timeout 900] [--json]

The fleet benchmark's project (benchmarks/fleet.py: one tenant stream over ``like:tenant_%``,
its 5-revision history of 4 tables with PK/FK/index/unique/check and 2 added columns) upgrades
N empty tenant schemas from base to head, with ``--jobs`` workers, on:

1. Citus: the cluster whose coordinator ``--url`` (default ``$ALEMBIC_SCHEMAS_CITUS_URL``)
   names, in a scratch database made on every node (database propagation, the citus extension
   on each node, the coordinator and workers registered as in the URL's database); the tenant
   schemas are distributed schemas (made with ``citus.enable_schema_based_sharding`` on), so
   each tenant's tables become single-shard tables on one worker;
2. plain: a PostgreSQL started for the run from ``--pg-bin`` (default: the Citus
   coordinator's own major version under /usr/lib/postgresql) on a spare loopback port, in a
   temporary folder, as the ``postgres`` OS user when run as root; the same tenant schemas,
   plain.

Each run starts from a fresh scratch database; after it every tenant must be at head with its 4
tables and 20 columns (and, on Citus, a distributed schema whose 5 tables are Citus tables); a
run that fails, does not pass the check, or takes longer than ``--timeout`` (a hang) is reported
as FAILED. Then the same upgrade again, every tenant at head (the no-op run). Prints the median
wall times and the ratio Citus / plain (target: at most 2.0). Exit code 1 when a run failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402
import fleet  # noqa: E402
from _common import log  # noqa: E402

import alembic_schemas  # noqa: E402
from alembic_schemas import database, identifiers  # noqa: E402
from alembic_schemas.config import URL_ENV  # noqa: E402

CITUS_URL_ENV = "ALEMBIC_SCHEMAS_CITUS_URL"
TARGET = 2.0  # Citus wall time at most this many times the plain one


# --- the two servers -------------------------------------------------------------------------


class Target:
    """Where one side runs: makes a fresh scratch database holding N empty tenant schemas."""

    name = ""
    url = ""

    def fresh(self, names: Sequence[str]) -> None:
        raise NotImplementedError

    def drop(self) -> None:
        raise NotImplementedError

    def check(self, engine: Engine, names: Sequence[str]) -> list[str]:
        return fleet.verify(engine, names)


def _admin(url: str) -> Engine:
    return database.create_engine(url, isolation_level="AUTOCOMMIT")


def _with_database(url: str, name: str, host: str | None = None, port: int | None = None) -> str:
    u = make_url(url).set(database=name)
    if host is not None:
        u = u.set(host=host, port=port)
    if u.drivername == "postgresql":
        u = u.set(drivername="postgresql+psycopg")
    return u.render_as_string(hide_password=False)


def _create_schemas(url: str, names: Sequence[str], sharding: bool) -> None:
    """One CREATE SCHEMA per query (Citus: distributed schemas)."""
    engine = _admin(url)
    with engine.connect() as conn:
        if sharding:
            conn.exec_driver_sql("SET citus.enable_schema_based_sharding = on")
        for name in names:
            conn.exec_driver_sql("CREATE SCHEMA " + identifiers.quote(name))
    engine.dispose()


class Plain(Target):
    name = "plain"

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self.db = _common.ScratchDatabase(_common.Server(server_url, embedded=False), "citusb")
        self.url = self.db.url

    def fresh(self, names: Sequence[str]) -> None:
        self.db.recreate()
        _create_schemas(self.url, names, sharding=False)
        self.db.checkpoint()

    def drop(self) -> None:
        self.db.drop()


class Citus(Target):
    name = "citus"

    def __init__(self, coordinator_url: str) -> None:
        self.coordinator_url = coordinator_url
        self.database = f"citusb_{uuid.uuid4().hex[:10]}"
        self.url = _with_database(coordinator_url, self.database)
        engine = _admin(coordinator_url)
        with engine.connect() as conn:
            nodes = conn.exec_driver_sql(
                "SELECT groupid, nodename, nodeport FROM pg_dist_node"
                " WHERE noderole = 'primary' AND isactive ORDER BY groupid"
            ).all()
        engine.dispose()
        self.coordinator = [(h, p) for g, h, p in nodes if g == 0]
        self.workers = [(h, p) for g, h, p in nodes if g != 0]
        if len(self.coordinator) != 1 or not self.workers:
            raise SystemExit(f"{coordinator_url}: not a Citus coordinator with registered workers")

    def _on_admin(self, *statements: str) -> None:
        engine = _admin(self.coordinator_url)
        with engine.connect() as conn:
            conn.exec_driver_sql("SET citus.enable_create_database_propagation = on")
            for statement in statements:
                conn.exec_driver_sql(statement)
        engine.dispose()

    def _node(self, host: str, port: int, statement: str, **params: object) -> None:
        # a plain engine: the tool's own refuses to connect to a worker
        engine = sa.create_engine(
            _with_database(self.coordinator_url, self.database, host, port),
            isolation_level="AUTOCOMMIT",
        )
        with engine.connect() as conn:
            conn.execute(sa.text(statement), params)
        engine.dispose()

    def fresh(self, names: Sequence[str]) -> None:
        self.drop()
        quoted = identifiers.quote_object(self.database, "database name")
        self._on_admin(f"CREATE DATABASE {quoted}")
        for host, port in self.coordinator + self.workers:
            self._node(host, port, "CREATE EXTENSION citus")
        host, port = self.coordinator[0]
        self._node(host, port, "SELECT citus_set_coordinator_host(:h, :p)", h=host, p=port)
        for worker in self.workers:
            self._node(host, port, "SELECT citus_add_node(:h, :p)", h=worker[0], p=worker[1])
        _create_schemas(self.url, names, sharding=True)
        self._on_admin("CHECKPOINT")

    def drop(self) -> None:
        quoted = identifiers.quote_object(self.database, "database name")
        for _ in range(10):  # a worker may hold an inter-node session for a moment
            try:
                self._on_admin(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
                return
            except sa.exc.OperationalError:
                time.sleep(1)
        log(f"  could not drop {self.database} on every node")

    def check(self, engine: Engine, names: Sequence[str]) -> list[str]:
        problems = fleet.verify(engine, names)
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT n.nspname, count(p.logicalrelid) FROM pg_catalog.pg_namespace n"
                    " JOIN pg_catalog.pg_dist_schema d ON d.schemaid = n.oid"
                    " LEFT JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid"
                    " LEFT JOIN pg_catalog.pg_dist_partition p ON p.logicalrelid = c.oid"
                    " WHERE n.nspname = ANY(:names) GROUP BY n.nspname"
                ),
                {"names": list(names)},
            ).all()
        tables: dict[str, int] = dict(rows)
        expected = len(fleet.TABLES) + 1  # and the version table
        problems += [
            f"{n}: {'not a distributed schema' if n not in tables else f'{tables[n]} Citus tables'}"
            for n in names
            if tables.get(n) != expected
        ]
        return problems


@contextlib.contextmanager
def plain_postgres(bin_dir: Path) -> Iterator[str]:
    """A throw-away PostgreSQL from ``bin_dir`` on a spare loopback port; its URL."""
    folder = Path(tempfile.mkdtemp(prefix="citus-bench-plain-"))
    as_postgres: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root
        shutil.chown(folder, "postgres", "postgres")
        as_postgres = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = folder / "data"

    def run(*argv: str) -> None:
        subprocess.run([*as_postgres, *argv], check=True, stdout=subprocess.DEVNULL)

    run(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
    # The Citus nodes' settings, but for loading citus.
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c max_connections=200"
    options += " -c wal_level=logical"
    log(f"starting a plain PostgreSQL from {bin_dir} on 127.0.0.1:{port}")
    run(
        str(bin_dir / "pg_ctl"),
        "-D",
        str(data),
        "-l",
        str(folder / "log"),
        "-w",
        "-o",
        options,
        "start",
    )
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)


# --- the runs --------------------------------------------------------------------------------


@dataclass
class Run:
    target: str
    seconds: float | None = None
    noop_seconds: float | None = None
    floor_seconds: float | None = None  # the same SQL replayed by psql, one session
    error: str | None = None


@dataclass
class Side:
    name: str
    version: str = ""
    runs: list[Run] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.runs) and all(r.error is None for r in self.runs)

    def median(self, attr: str) -> float | None:
        values = [getattr(r, attr) for r in self.runs if getattr(r, attr) is not None]
        return statistics.median(values) if values and self.ok else None


def timed_upgrade(project: Path, jobs: int, timeout: float) -> tuple[float, str | None]:
    """Wall time of ``upgrade`` of the tenant stream; an error, or a hang past ``timeout``."""
    outcome: dict[str, Any] = {}

    def upgrade() -> None:
        try:
            alembic_schemas.upgrade(streams=[fleet.STREAM], jobs=jobs, config=project)
        except Exception as exc:
            outcome["error"] = fleet._one_line(exc)

    started = time.perf_counter()
    worker = threading.Thread(target=upgrade, daemon=True)
    worker.start()
    worker.join(timeout)
    seconds = time.perf_counter() - started
    if worker.is_alive():
        return seconds, f"hang: no result after {timeout:.0f} s"
    return seconds, outcome.get("error")


def checked(target: Target, names: Sequence[str], what: str) -> str | None:
    engine = database.create_engine(target.url, poolclass=sa.pool.NullPool)
    problems = target.check(engine, names)
    engine.dispose()
    return (
        f"{what} check failed: " + fleet.describe_problems(problems, len(names))
        if problems
        else None
    )


def psql_floor(
    target: Target, project: Path, names: Sequence[str], sql_file: Path
) -> tuple[float | None, str | None]:
    """fleet.py's floor: the offline SQL of every tenant replayed by psql in one session, one
    transaction per tenant (psql sends one statement per query): what the server itself
    costs for that SQL, without the tool."""
    fleet.write_psql_file(sql_file, fleet.tenant_sql(fleet.render_ours(project), names), names)
    log(f"{target.name}: psql floor")
    target.fresh(names)
    server = _common.Server(target.url, embedded=False)
    floor = fleet.run_psql(server, target.url, sql_file, len(names), None)
    return floor.seconds, floor.error or checked(target, names, "psql floor")


def measure(
    target: Target, names: Sequence[str], args: argparse.Namespace, tmp: Path, k: int
) -> Run:
    run = Run(target.name)
    log(f"{target.name}: {len(names)} empty tenant schemas")
    target.fresh(names)
    project = fleet.build_project(tmp / f"{target.name}-{k}", target.url)
    os.environ[URL_ENV] = target.url
    log(f"{target.name}: upgrade, jobs={args.jobs}")
    run.seconds, run.error = timed_upgrade(project, args.jobs, args.timeout)
    run.error = run.error or checked(target, names, "upgrade")
    if run.error is None:
        run.noop_seconds, run.error = timed_upgrade(project, args.jobs, args.timeout)
    if run.error is None and not args.no_floor:
        run.floor_seconds, run.error = psql_floor(target, project, names, tmp / f"{k}.sql")
    log(
        f"  {target.name}: {run.seconds:.2f} s, no-op {run.noop_seconds or 0:.2f} s,"
        f" psql floor {run.floor_seconds or 0:.2f} s"
        + (f" FAILED: {run.error}" if run.error else " ok")
    )
    return run


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python benchmarks/citus.py",
        description="A tenant fleet upgraded on Citus against plain PostgreSQL of the same version.",
    )
    p.add_argument("--tenants", type=int, default=200, help="tenant schemas (default 200)")
    p.add_argument("--jobs", type=int, default=None, help="workers (default: CPU count)")
    p.add_argument("--runs", type=int, default=1, help="runs per side; medians (default 1)")
    p.add_argument("--url", default=None, help=f"Citus coordinator (default ${CITUS_URL_ENV})")
    p.add_argument("--pg-bin", default=None, help="plain PostgreSQL's bin folder")
    p.add_argument("--timeout", type=float, default=900.0, help="a run past it is a hang (s)")
    p.add_argument("--no-floor", action="store_true", help="skip the psql floor runs")
    p.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")
    args = p.parse_args(argv)
    args.url = args.url or os.environ.get(CITUS_URL_ENV)
    if not args.url:
        p.error(f"name the Citus coordinator with --url or ${CITUS_URL_ENV}")
    if args.tenants < 2 or args.runs < 1:
        p.error("--tenants must be at least 2 and --runs at least 1")
    args.jobs = args.jobs or os.cpu_count() or 1
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    names = _common.tenant_names(args.tenants)
    citus = Citus(args.url)
    coordinator = _admin(args.url)
    with coordinator.connect() as conn:
        extension = str(
            conn.exec_driver_sql(
                "SELECT extversion FROM pg_extension WHERE extname = 'citus'"
            ).scalar()
        )
    sides = {
        "citus": Side("citus", _common.server_version(coordinator)),
        "plain": Side("plain"),
    }
    coordinator.dispose()
    major = sides["citus"].version.split(".")[0]
    pg_bin = Path(args.pg_bin or f"/usr/lib/postgresql/{major}/bin")

    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="citus-bench-")))
        plain = Plain(stack.enter_context(plain_postgres(pg_bin)))
        sides["plain"].version = _common.server_version(_admin(plain.server_url))
        stack.callback(plain.drop)
        stack.callback(citus.drop)
        log(
            f"citus: {args.tenants} tenants, {len(fleet.REVISIONS)} revisions, jobs={args.jobs};"
            f" Citus {extension} on PostgreSQL {sides['citus'].version},"
            f" {len(citus.workers)} workers; plain PostgreSQL {sides['plain'].version}"
        )
        for k in range(args.runs):
            for target in (citus, plain):
                sides[target.name].runs.append(measure(target, names, args, tmp, k))

    summary = summarise(args, extension, sides)
    text = render(summary)
    if args.json:
        print(text, file=sys.stderr)
        print(json.dumps(summary, indent=2))
    else:
        print(text)
    return 0 if all(s.ok for s in sides.values()) else 1


def summarise(args: argparse.Namespace, extension: str, sides: dict[str, Side]) -> dict[str, Any]:
    def ratio_of(attr: str) -> float | None:
        citus, plain = sides["citus"].median(attr), sides["plain"].median(attr)
        return None if citus is None or plain is None or plain == 0 else citus / plain

    ratio = ratio_of("seconds")
    return {
        "benchmark": "citus",
        "tenants": args.tenants,
        "revisions": len(fleet.REVISIONS),
        "jobs": args.jobs,
        "runs": args.runs,
        "cpus": os.cpu_count(),
        "citus": extension,
        "python": platform.python_version(),
        "sides": {
            name: {
                "postgresql": s.version,
                "upgrade_seconds": s.median("seconds"),
                "noop_seconds": s.median("noop_seconds"),
                "psql_floor_seconds": s.median("floor_seconds"),
                "runs": [asdict(r) for r in s.runs],
            }
            for name, s in sides.items()
        },
        "ratio_citus_over_plain": ratio,
        "floor_ratio_citus_over_plain": ratio_of("floor_seconds"),
        "target": f"<= {TARGET}",
        "met": None if ratio is None else ratio <= TARGET,
        "failures": [f"{r.target}: {r.error}" for s in sides.values() for r in s.runs if r.error],
    }


def _s(x: float | None, scale: float = 1.0) -> str:
    return "-" if x is None else f"{x * scale:.2f}"


def _x(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def render(summary: dict[str, Any]) -> str:
    n = summary["tenants"]
    rows = [
        [
            f"{name} (PostgreSQL {side['postgresql'].split()[0]})",
            _s(side["upgrade_seconds"]),
            _s(side["upgrade_seconds"], 1000 / n),
            _s(side["noop_seconds"]),
            _s(side["psql_floor_seconds"]),
            "FAILED" if any(r["error"] for r in side["runs"]) else "ok",
        ]
        for name, side in summary["sides"].items()
    ]
    met = {None: "-", True: "met", False: "NOT met"}[summary["met"]]
    floor = _x(summary["floor_ratio_citus_over_plain"])
    out = [
        f"citus: {n} tenants x {summary['revisions']} revisions, Citus {summary['citus']},"
        f" {summary['cpus']} CPUs, jobs={summary['jobs']}, median of {summary['runs']} run(s)",
        "",
        _common.table(["side", "upgrade s", "ms/tenant", "no-op s", "psql floor s", "check"], rows),
        "",
        f"citus / plain: {_x(summary['ratio_citus_over_plain'])}"
        f" (target {summary['target']}: {met})",
        f"citus / plain, psql floor (the servers alone): {floor}",
    ]
    out += ["FAILED " + f for f in summary["failures"]]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
