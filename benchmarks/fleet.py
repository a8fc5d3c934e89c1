"""Fleet upgrade benchmark (issue 4): one tenant stream, N tenant schemas, four ways to migrate them.

    python benchmarks/fleet.py [--tenants 1000] [--jobs N] [--sample 20] [--url URL] [--json]

Builds, in a temporary folder, a project whose tenant stream has a fixed 5-revision history (4 tables
with PK/FK/index/unique/check constraints, then 2 added columns) and N empty tenant schemas, then
measures on the same server:

1. ours: ``alembic_schemas.upgrade(streams=["tenant"], jobs=J)`` for every tenant, base -> head;
2. ours no-op: the same call again with every tenant at head;
3. psql floor: the same migration SQL (offline mode) replayed by ``psql`` in one session, one
   transaction per tenant; only the psql run is timed;
4. cookbook loop: Alembic's cookbook recipe for schema-per-tenant, one ``alembic -x tenant=T upgrade
   head`` process per tenant, on a sample of tenants, extrapolated; and its no-op run.

Next to each wall time, the CPU it cost the measuring side: user+sys of this process (every thread)
and of its children reaped during the measurement (worker processes; psql for the floor), from
``resource.getrusage``, divided by tenants. Targets (issue 11): ours <= 0.6x the psql floor, ours'
CPU <= 1.5 ms per tenant; ``--tenants 10000`` measures at 10,000 tenants.

Each measurement starts from a freshly created database holding N empty tenant schemas. After
each run a check (one query per 1,000 tenants) proves that every tenant is at head with the 4
tables and all their columns; a run that fails or does not pass the check is reported as FAILED.

The server is a throw-away embedded PostgreSQL unless ``--url`` or ``$ALEMBIC_SCHEMAS_URL`` names one
(the benchmark then needs CREATEDB: it works in a scratch database that it drops at the end).
Exit code 1 when a measurement failed or did not leave the tenants at head.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import alembic
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Engine

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402
from _common import log  # noqa: E402

import alembic_schemas  # noqa: E402
from alembic_schemas import identifiers  # noqa: E402
from alembic_schemas.config import URL_ENV  # noqa: E402

STREAM = _common.TENANT_STREAM
VERSION_TABLE = "alembic_version"
TABLES = ("account", "project", "task", "comment")
EXPECTED_COLUMNS = 20  # account 4, project 4+1, task 5+1, comment 5, at head
# A name used only to render the SQL once; it never reaches the database.
PLACEHOLDER = "fleet_bench_placeholder_tenant"

# The 5 revisions: (id, message, upgrade body, downgrade body), written like a tenant stream's
# revisions are: no schema anywhere, names resolve in whichever tenant the run targets.
REVISIONS: list[tuple[str, str, str, str]] = [
    (
        "fleet0001",
        "account",
        """
        op.create_table(
            "account",
            sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
            sa.Column("email", sa.String(320), nullable=False),
            sa.Column("name", sa.String(200), nullable=False),
            sa.Column(
                "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
            ),
            sa.UniqueConstraint("email", name="uq_account_email"),
            sa.CheckConstraint("length(name) > 0", name="ck_account_name"),
        )
        op.create_index("ix_account_created_at", "account", ["created_at"])
        """,
        """
        op.drop_index("ix_account_created_at", table_name="account")
        op.drop_table("account")
        """,
    ),
    (
        "fleet0002",
        "project",
        """
        op.create_table(
            "project",
            sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
            sa.Column("account_id", sa.BigInteger(), nullable=False),
            sa.Column("name", sa.String(200), nullable=False),
            sa.Column(
                "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
            ),
            sa.ForeignKeyConstraint(
                ["account_id"], ["account.id"], name="fk_project_account", ondelete="CASCADE"
            ),
            sa.UniqueConstraint("account_id", "name", name="uq_project_account_name"),
            sa.CheckConstraint("length(name) > 0", name="ck_project_name"),
        )
        op.create_index("ix_project_account_id", "project", ["account_id"])
        """,
        """
        op.drop_index("ix_project_account_id", table_name="project")
        op.drop_table("project")
        """,
    ),
    (
        "fleet0003",
        "task and comment",
        """
        op.create_table(
            "task",
            sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
            sa.Column("project_id", sa.BigInteger(), nullable=False),
            sa.Column("title", sa.String(300), nullable=False),
            sa.Column("status", sa.String(20), server_default="open", nullable=False),
            sa.Column(
                "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
            ),
            sa.ForeignKeyConstraint(
                ["project_id"], ["project.id"], name="fk_task_project", ondelete="CASCADE"
            ),
            sa.CheckConstraint("status IN ('open', 'doing', 'done')", name="ck_task_status"),
        )
        op.create_index("ix_task_project_id_status", "task", ["project_id", "status"])
        op.create_table(
            "comment",
            sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
            sa.Column("task_id", sa.BigInteger(), nullable=False),
            sa.Column("author_id", sa.BigInteger(), nullable=True),
            sa.Column("body", sa.Text(), nullable=False),
            sa.Column(
                "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
            ),
            sa.ForeignKeyConstraint(
                ["task_id"], ["task.id"], name="fk_comment_task", ondelete="CASCADE"
            ),
            sa.ForeignKeyConstraint(
                ["author_id"], ["account.id"], name="fk_comment_author", ondelete="SET NULL"
            ),
            sa.CheckConstraint("length(body) > 0", name="ck_comment_body"),
        )
        op.create_index("ix_comment_task_id", "comment", ["task_id"])
        """,
        """
        op.drop_index("ix_comment_task_id", table_name="comment")
        op.drop_table("comment")
        op.drop_index("ix_task_project_id_status", table_name="task")
        op.drop_table("task")
        """,
    ),
    (
        "fleet0004",
        "project archived flag",
        """
        op.add_column(
            "project",
            sa.Column("archived", sa.Boolean(), server_default=sa.false(), nullable=False),
        )
        """,
        """
        op.drop_column("project", "archived")
        """,
    ),
    (
        "fleet0005",
        "task due date",
        """
        op.add_column("task", sa.Column("due_at", sa.DateTime(timezone=True), nullable=True))
        op.create_index("ix_task_due_at", "task", ["due_at"])
        """,
        """
        op.drop_index("ix_task_due_at", table_name="task")
        op.drop_column("task", "due_at")
        """,
    ),
]
HEAD = REVISIONS[-1][0]

# Alembic's cookbook recipe "Rudimental Schema-Level Multi Tenancy for PostgreSQL Databases", as an
# application would carry it: the tenant comes from -x tenant=NAME, goes onto search_path (the
# recipe formats it into the SQL text itself), and the version table lives in the tenant.
COOKBOOK_ENV = '''"""Schema-per-tenant environment following Alembic's cookbook: alembic -x tenant=NAME ..."""

from logging.config import fileConfig

from alembic import context
from sqlalchemy import engine_from_config, pool, text

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name)

target_metadata = None
tenant = context.get_x_argument(as_dictionary=True).get("tenant")
if not tenant:
    raise SystemExit("pass the tenant schema: alembic -x tenant=NAME ...")


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        version_table_schema=tenant,
    )
    with context.begin_transaction():
        context.execute('SET LOCAL search_path TO "%s"' % tenant)
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = engine_from_config(
        config.get_section(config.config_ini_section, {}),
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )
    with connectable.connect() as connection:
        # Unqualified DDL lands in the tenant; SQLAlchemy 2 needs the SET committed.
        connection.execute(text('set search_path to "%s"' % tenant))
        connection.commit()
        # The recipe's workaround so reflection treats the tenant as the default schema.
        connection.dialect.default_schema_name = tenant
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            version_table_schema=tenant,
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
'''

COOKBOOK_INI = """[alembic]
script_location = %(here)s
version_locations = {versions}
sqlalchemy.url = {url}

[loggers]
keys = root,sqlalchemy,alembic

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARNING
handlers = console
qualname =

[logger_sqlalchemy]
level = WARNING
handlers =
qualname = sqlalchemy.engine

[logger_alembic]
level = INFO
handlers =
qualname = alembic

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %(levelname)-5.5s [%(name)s] %(message)s
"""


# --- the project -------------------------------------------------------------------------


def build_project(root: Path, url: str) -> Path:
    """A project with one tenant stream over ``like:tenant_%`` and the 5 revisions."""
    return _common.tenant_project(root, url, _common.linear(REVISIONS))


def build_cookbook(root: Path, url: str, versions: Path) -> Path:
    """A plain Alembic environment (the cookbook recipe) over the same revision files."""
    root.mkdir(parents=True)
    (root / "env.py").write_text(COOKBOOK_ENV, encoding="utf-8")
    ini = root / "alembic.ini"
    # configparser interpolation: a literal % must be written %%
    ini.write_text(
        COOKBOOK_INI.format(versions=str(versions).replace("%", "%%"), url=url.replace("%", "%%")),
        encoding="utf-8",
    )
    return ini


# --- checking a result -------------------------------------------------------------------

# Reads every listed tenant's version rows server-side (a tenant without a version table reports
# none), so that the check below is one query per chunk of tenants, not one per tenant.
VERSIONS_FUNCTION = sa.text(
    """
CREATE OR REPLACE FUNCTION pg_temp.fleet_versions(tenants text[], vt text)
RETURNS TABLE (tenant text, version text) LANGUAGE plpgsql AS $fn$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY tenants LOOP
        tenant := t;
        version := NULL;
        IF pg_catalog.to_regclass(pg_catalog.format('%I.%I', t, vt)) IS NOT NULL THEN
            EXECUTE pg_catalog.format(
                'SELECT pg_catalog.string_agg(version_num, '','') FROM %I.%I', t, vt
            ) INTO version;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$fn$
"""
)

VERIFY_SQL = sa.text(
    """
    SELECT v.tenant,
           n.oid IS NOT NULL AS present,
           (SELECT count(*) FROM pg_catalog.pg_class c
             WHERE c.relnamespace = n.oid AND c.relkind = 'r'
               AND c.relname = ANY(CAST(:tables AS text[]))) AS tables,
           (SELECT count(*) FROM pg_catalog.pg_attribute a
              JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
             WHERE c.relnamespace = n.oid AND c.relkind = 'r'
               AND c.relname = ANY(CAST(:tables AS text[]))
               AND a.attnum > 0 AND NOT a.attisdropped) AS columns,
           v.version
      FROM pg_temp.fleet_versions(CAST(:tenants AS text[]), CAST(:vt AS text)) AS v
      LEFT JOIN pg_catalog.pg_namespace n ON n.nspname = v.tenant
    """
)


# Reading a table takes a lock held to the end of the transaction, and the server's lock table
# holds a few thousand (max_locks_per_transaction x connections): 10,000 version tables read in
# one transaction fail with "out of shared memory". So: one query per chunk, one transaction each.
VERIFY_CHUNK = 1000


def verify(engine: Engine, names: Sequence[str]) -> list[str]:
    """Problems found (empty when every tenant is at head with the 4 tables and all columns)."""
    found: dict[str, Any] = {}
    with engine.connect() as conn:
        conn.execute(VERSIONS_FUNCTION)
        conn.commit()
        for start in range(0, len(names), VERIFY_CHUNK):
            chunk = list(names[start : start + VERIFY_CHUNK])
            params = {"tables": list(TABLES), "vt": VERSION_TABLE, "tenants": chunk}
            found.update((r.tenant, r) for r in conn.execute(VERIFY_SQL, params))
            conn.rollback()  # releases the chunk's locks
    problems: list[str] = []
    for name in names:
        r = found.get(name)
        if r is None or not r.present:
            problems.append(f"{name}: schema missing")
        elif r.version != HEAD:
            problems.append(f"{name}: at {r.version or 'base'}, expected {HEAD}")
        elif r.tables != len(TABLES) or r.columns != EXPECTED_COLUMNS:
            problems.append(
                f"{name}: {r.tables} of {len(TABLES)} tables, "
                f"{r.columns} of {EXPECTED_COLUMNS} columns"
            )
    return problems


def describe_problems(problems: Sequence[str], total: int) -> str:
    shown = "; ".join(problems[:5])
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    return f"{len(problems)} of {total} tenants wrong: {shown}{more}"


# --- the measurements --------------------------------------------------------------------


@dataclass
class Measurement:
    name: str
    tenants: int  # tenants actually run
    seconds: float | None = None  # wall time for those tenants
    extrapolated_to: int | None = None  # set when ``seconds`` was scaled from a sample
    error: str | None = None
    verified: bool | None = None  # None: not checked
    cpu_seconds: float | None = None  # this process's (and its reaped children's) user+sys
    server_cpu_seconds: float | None = None  # the server's, when it runs on this machine
    notes: list[str] = field(default_factory=list)

    @property
    def per_tenant(self) -> float | None:
        if self.seconds is None or not self.tenants:
            return None
        return self.seconds / self.tenants

    def total_for(self, n: int) -> float | None:
        per = self.per_tenant
        return None if per is None else per * n

    @property
    def cpu_per_tenant(self) -> float | None:
        if self.cpu_seconds is None or not self.tenants:
            return None
        return self.cpu_seconds / self.tenants

    @property
    def server_cpu_per_tenant(self) -> float | None:
        if self.server_cpu_seconds is None or not self.tenants:
            return None
        return self.server_cpu_seconds / self.tenants

    @property
    def ok(self) -> bool:
        return self.error is None and self.seconds is not None and self.verified is not False

    def spent(self, spent: _common.Spent) -> None:
        self.seconds = spent.wall
        self.cpu_seconds = spent.cpu
        self.server_cpu_seconds = spent.server_cpu

    def as_dict(self, n: int) -> dict[str, Any]:
        d = asdict(self)
        d["per_tenant"] = self.per_tenant
        d["total_for_all"] = self.total_for(n)
        d["cpu_per_tenant"] = self.cpu_per_tenant
        d["server_cpu_per_tenant"] = self.server_cpu_per_tenant
        return d


def run_ours(project: Path, jobs: int, label: str, n: int, postmaster: int | None) -> Measurement:
    kwargs: dict[str, Any] = {"streams": [STREAM], "config": project}
    params = inspect.signature(alembic_schemas.upgrade).parameters
    m = Measurement(label, n)
    if "jobs" in params:
        kwargs["jobs"] = jobs
    else:
        m.notes.append("upgrade() takes no jobs= yet: ran with its default")
    clocks = _common.Clocks(postmaster)
    try:
        result = alembic_schemas.upgrade(**kwargs)
    except Exception as exc:
        m.spent(clocks.stop())
        m.error = _one_line(exc)
        return m
    m.spent(clocks.stop())
    failed = [r for r in _iter_results(result) if getattr(r, "error", None)]
    if failed:
        first = failed[0]
        m.error = (
            f"{len(failed)} tenants failed, first {getattr(first, 'schema', '?')}: "
            f"{getattr(first, 'error', '?')}"
        )
    return m


def _one_line(exc: BaseException) -> str:
    """The exception's first line (database errors carry their whole SQL statement after it)."""
    lines = str(exc).strip().splitlines()
    first = lines[0] if lines else ""
    return f"{type(exc).__name__}: {first[:300]}"


def _iter_results(result: object) -> list[object]:
    """Per-schema results, whether upgrade() returns a list or a summary holding one."""
    if isinstance(result, list):
        return result
    for attr in ("results", "schemas", "tenants"):
        inner = getattr(result, attr, None)
        if isinstance(inner, list):
            return inner
    return []


Renderer = Callable[[str], str]


def render_ours(project: Path) -> Renderer:
    def render(tenant: str) -> str:
        buf = io.StringIO()
        alembic_schemas.upgrade(
            streams=[STREAM], tenants=[tenant], sql=True, output=buf, config=project
        )
        return buf.getvalue()

    return render


def render_cookbook(ini: Path) -> Renderer:
    def render(tenant: str) -> str:
        cfg = Config(str(ini), cmd_opts=argparse.Namespace(x=[f"tenant={tenant}"]))
        buf = io.StringIO()
        cfg.output_buffer = buf
        command.upgrade(cfg, "head", sql=True)
        return buf.getvalue()

    return render


def tenant_sql(render: Renderer, names: Sequence[str]) -> Callable[[str], str]:
    """Offline SQL per tenant. Rendered once for a placeholder name and specialised by text
    substitution, after proving on a real tenant that substitution gives exactly what rendering
    that tenant gives (else every tenant is rendered, which is correct but slow)."""
    for name in (PLACEHOLDER, *names):
        identifiers.validate(name)
        if not name.isascii() or not name.replace("_", "a").isalnum() or name != name.lower():
            raise SystemExit(f"tenant name {name!r} is not a plain identifier")
    template = render(PLACEHOLDER)
    probe = names[-1]
    if template.replace(PLACEHOLDER, probe) == render(probe):
        return lambda name: template.replace(PLACEHOLDER, name)
    log("  substituted SQL differs from rendered SQL: rendering every tenant")
    return render


def write_psql_file(path: Path, sql_for: Callable[[str], str], names: Sequence[str]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for name in names:
            sql = sql_for(name)
            if "BEGIN;" not in sql:  # keep one transaction per tenant whatever the renderer did
                sql = f"BEGIN;\n{sql}\nCOMMIT;\n"
            f.write(sql)
            f.write("\n")


def run_psql(
    srv: _common.Server, url: str, sql_file: Path, n: int, postmaster: int | None
) -> Measurement:
    argv, env = _common.psql_command(srv, url)
    m = Measurement("psql floor", n)
    clocks = _common.Clocks(postmaster)
    proc = subprocess.run(
        [*argv, "-f", str(sql_file)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    m.spent(clocks.stop())  # CPU: psql's own (a reaped child), for comparison
    if proc.returncode != 0:
        errors = [ln for ln in proc.stderr.splitlines() if "ERROR" in ln or "FATAL" in ln]
        m.error = f"psql exited {proc.returncode}: " + (
            errors[0] if errors else proc.stderr.strip()[-500:]
        )
    return m


def alembic_argv() -> list[str]:
    beside = Path(sys.executable).with_name("alembic")
    return [str(beside)] if beside.is_file() else [sys.executable, "-m", "alembic"]


def run_cookbook(
    ini: Path, sample: Sequence[str], n: int, label: str, postmaster: int | None
) -> Measurement:
    """One ``alembic -x tenant=T upgrade head`` process per sampled tenant, run one after another."""
    m = Measurement(label, len(sample), extrapolated_to=n)
    clocks = _common.Clocks(postmaster)
    for name in sample:
        proc = subprocess.run(
            [*alembic_argv(), "-c", str(ini), "-x", f"tenant={name}", "upgrade", "head"],
            cwd=ini.parent,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            tail = proc.stderr.strip().splitlines()[-1:] or ["?"]
            m.error = f"{name}: alembic exited {proc.returncode}: {tail[0]}"
            break
    m.spent(clocks.stop())
    return m


# --- the run -----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = _common.fleet_arguments(
        "python benchmarks/fleet.py",
        "Upgrade N tenant schemas: alembic-schemas vs the psql floor vs the cookbook.",
    )
    p.add_argument(
        "--sample", type=int, default=20, help="tenants for the cookbook loop (default 20; 0 skips)"
    )
    args = p.parse_args(argv)
    if args.tenants < 2:
        p.error("--tenants must be at least 2")
    if args.sample < 0:
        p.error("--sample must be >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    n: int = args.tenants
    jobs: int = args.jobs or os.cpu_count() or 1
    names = _common.tenant_names(n)
    measurements: dict[str, Measurement] = {}

    with contextlib.ExitStack() as stack:
        srv = stack.enter_context(_common.server(args.url))
        db = stack.enter_context(_common.scratch_database(srv, "fleet"))
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fleet-bench-")))
        os.environ[URL_ENV] = db.url  # the project and every child process use the scratch database
        db.recreate()
        engine = db.engine(poolclass=sa.pool.NullPool)
        version = _common.server_version(engine)
        postmaster = _common.postmaster_pid(srv.admin_engine())
        project = build_project(tmp / "project", db.url)
        versions = project.parent / "migrations" / STREAM / "versions"
        ini = build_cookbook(tmp / "cookbook", db.url, versions)
        log(f"fleet: {n} tenants, {len(REVISIONS)} revisions, PostgreSQL {version}, jobs={jobs}")

        # 1. ours, base -> head
        log("ours: upgrade every tenant")
        _common.fresh_tenants(db, engine, names)
        _common.quiesce(srv, "ours upgrade")
        ours = run_ours(project, jobs, f"ours upgrade (jobs={jobs})", n, postmaster)
        measurements["ours"] = ours
        if ours.error is None:
            check(ours, engine, names)

        # 2. ours again, nothing pending
        if ours.error is None:
            log("ours: no-op run (every tenant at head)")
            # measured right after ours, as it always was: no quiesce (with one, in a run of
            # 10,000 tenants, this pass took 0.51 s per 1,000 instead of 0.36; cause not found)
            noop = run_ours(project, jobs, "ours no-op (all at head)", n, postmaster)
            if noop.error is None:
                check(noop, engine, names)
        else:
            noop = Measurement("ours no-op (all at head)", n, error="skipped: ours failed")
        measurements["ours_noop"] = noop
        report_errors(ours, noop)

        # 3. psql replaying the offline SQL, one session, one transaction per tenant
        log("psql floor: rendering the offline SQL")
        sql_file = tmp / "fleet.sql"
        try:
            sql_for, source = tenant_sql(render_ours(project), names), "alembic-schemas --sql"
        except Exception as exc:
            log(f"  alembic-schemas offline SQL failed ({_one_line(exc)});")
            log("  rendering with the cookbook environment's offline mode instead")
            sql_for, source = tenant_sql(render_cookbook(ini), names), "cookbook env --sql"
        write_psql_file(sql_file, sql_for, names)
        log(f"  {sql_file.stat().st_size / 1e6:.1f} MB of SQL from {source}")
        _common.fresh_tenants(db, engine, names)
        log("psql floor: replaying")
        _common.quiesce(srv, "psql floor")
        floor = run_psql(srv, db.url, sql_file, n, postmaster)
        floor.notes.append(f"SQL from {source}")
        if floor.error is None:
            check(floor, engine, names)
        measurements["psql"] = floor
        report_errors(floor)

        # 4. the cookbook loop on a sample
        if args.sample:
            sample = _common.spread_sample(names, args.sample)
            log(f"cookbook loop: {len(sample)} processes, one per tenant")
            _common.fresh_tenants(db, engine, names)
            _common.quiesce(srv, "cookbook loop")
            cook = run_cookbook(ini, sample, n, "cookbook loop (1 process/tenant)", postmaster)
            if cook.error is None:
                check(cook, engine, sample)
                log("cookbook loop: no-op run")
                cook_noop = run_cookbook(ini, sample, n, "cookbook no-op", postmaster)
                if cook_noop.error is None:
                    check(cook_noop, engine, sample)
            else:
                cook_noop = Measurement("cookbook no-op", 0, error="skipped: cookbook failed")
            measurements["cookbook"] = cook
            measurements["cookbook_noop"] = cook_noop
            report_errors(cook, cook_noop)
        engine.dispose()

    summary = summarise(n, jobs, version, measurements)
    text = render_table(summary, measurements, n)
    if args.json:
        print(text, file=sys.stderr)
        print(json.dumps(summary, indent=2))
    else:
        print(text)
    return 0 if all(m.ok for m in measurements.values()) else 1


def check(m: Measurement, engine: Engine, names: Sequence[str]) -> None:
    started = time.perf_counter()
    queries = -(-len(names) // VERIFY_CHUNK)
    problems = verify(engine, names)
    m.verified = not problems
    if problems:
        m.error = "verification failed: " + describe_problems(problems, len(names))
    log(
        f"  {m.name}: {m.seconds:.2f} s; checked {len(names)} tenants in "
        f"{queries} {'query' if queries == 1 else 'queries'} "
        f"({time.perf_counter() - started:.2f} s): {'ok' if not problems else 'FAILED'}"
    )


def report_errors(*ms: Measurement) -> None:
    for m in ms:
        if m.error:
            log(f"  FAILED {m.name}: {m.error}")


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def summarise(n: int, jobs: int, version: str, ms: dict[str, Measurement]) -> dict[str, Any]:
    ours, noop, floor = ms["ours"], ms["ours_noop"], ms["psql"]
    cook, cook_noop = ms.get("cookbook"), ms.get("cookbook_noop")
    ours_total = ours.seconds if ours.ok else None
    noop_total = noop.seconds if noop.ok else None
    floor_total = floor.seconds if floor.ok else None
    cook_total = cook.total_for(n) if cook and cook.ok else None
    cook_noop_total = cook_noop.total_for(n) if cook_noop and cook_noop.ok else None
    ratios = {
        "ours_over_psql_floor": _ratio(ours_total, floor_total),
        "cookbook_over_ours": _ratio(cook_total, ours_total),
        "cookbook_over_psql_floor": _ratio(cook_total, floor_total),
        "cookbook_noop_over_ours_noop": _ratio(cook_noop_total, noop_total),
        "ours_noop_seconds_per_1000": None if noop_total is None else noop_total * 1000 / n,
        "ours_seconds_for_10000": None if ours_total is None else ours_total * 10000 / n,
        "ours_cpu_ms_per_tenant": _ms(ours.cpu_per_tenant),
    }
    targets = {
        "ours_over_psql_floor": {
            "target": "<= 0.6",
            "met": _met(ratios["ours_over_psql_floor"], 0.6, le=True),
        },
        "ours_cpu_ms_per_tenant": {
            "target": "<= 1.5",
            "met": _met(ratios["ours_cpu_ms_per_tenant"], 1.5, le=True),
        },
        "cookbook_over_ours": {
            "target": ">= 35",
            "met": _met(ratios["cookbook_over_ours"], 35.0, le=False),
        },
        "ours_noop_seconds_per_1000": {
            "target": "< 0.5",
            "met": _met(ratios["ours_noop_seconds_per_1000"], 0.5, le=True),
        },
        "ours_seconds_for_10000": {
            "target": "< 180",
            "met": _met(ratios["ours_seconds_for_10000"], 180.0, le=True),
            "extrapolated": n < 10000,
        },
    }
    return {
        "benchmark": "fleet",
        "tenants": n,
        "revisions": len(REVISIONS),
        "jobs": jobs,
        "cpus": os.cpu_count(),
        "postgresql": version,
        "python": platform.python_version(),
        "alembic": alembic.__version__,
        "sqlalchemy": sa.__version__,
        "measurements": {k: m.as_dict(n) for k, m in ms.items()},
        "ratios": ratios,
        "targets": targets,
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3


def _met(value: float | None, bound: float, *, le: bool) -> bool | None:
    if value is None:
        return None
    return value <= bound if le else value >= bound


def _fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _s(x: float | None, digits: int) -> str:
    return "-" if x is None else f"{x:.{digits}f} s"


def _x(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}x"


def render_table(summary: dict[str, Any], ms: dict[str, Measurement], n: int) -> str:
    head = (
        f"fleet: {n} tenants x {summary['revisions']} revisions, PostgreSQL {summary['postgresql']}, "
        f"{summary['cpus']} CPUs, jobs={summary['jobs']}"
    )
    rows = []
    for m in ms.values():
        sampled = m.extrapolated_to is not None
        ran = f"{m.tenants}" + (f" -> {n}" if sampled else "")
        total = m.total_for(n) if sampled else m.seconds
        status = "FAILED" if m.error else ("ok" if m.verified else "-")
        cpu, server = m.cpu_per_tenant, m.server_cpu_per_tenant
        rows.append(
            [
                m.name,
                ran,
                _fmt(total) + ("*" if sampled and total is not None else ""),
                _fmt(m.per_tenant, 5),
                "-" if cpu is None else f"{cpu * 1e3:.2f}",
                "-" if server is None else f"{server * 1e3:.2f}",
                status,
            ]
        )
    headers = [
        "measurement",
        "tenants",
        "total s",
        "s/tenant",
        "CPU ms/tenant",
        "server CPU ms/tenant",
        "check",
    ]
    out = [head, "", _common.table(headers, rows)]
    if any(m.extrapolated_to is not None for m in ms.values()):
        out.append(f"* extrapolated to {n} tenants from the sample's mean per tenant")
    out.append("CPU: user+sys of the measuring process and its reaped children (getrusage);")
    out.append("server CPU: the PostgreSQL server's processes (from /proc, when it runs here)")
    r, t = summary["ratios"], summary["targets"]

    def met(key: str) -> str:
        value = t[key]["met"]
        return "-" if value is None else ("yes" if value else "NO")

    ten_k = "ours for 10,000 tenants" + (" (extrapolated)" if n < 10000 else "")
    ratio_rows = [
        [
            "ours / psql floor",
            _fmt(r["ours_over_psql_floor"]),
            "<= 0.6",
            met("ours_over_psql_floor"),
        ],
        [
            "ours CPU per tenant (this process + workers)",
            "-" if r["ours_cpu_ms_per_tenant"] is None else f"{r['ours_cpu_ms_per_tenant']:.2f} ms",
            "<= 1.5 ms",
            met("ours_cpu_ms_per_tenant"),
        ],
        ["cookbook / ours", _x(r["cookbook_over_ours"]), ">= 35x", met("cookbook_over_ours")],
        [
            "ours no-op per 1,000 tenants" + (" (scaled)" if n != 1000 else ""),
            _s(r["ours_noop_seconds_per_1000"], 3),
            "< 0.5 s",
            met("ours_noop_seconds_per_1000"),
        ],
        [ten_k, _s(r["ours_seconds_for_10000"], 1), "< 180 s", met("ours_seconds_for_10000")],
        ["cookbook / psql floor", _x(r["cookbook_over_psql_floor"]), "", ""],
        ["cookbook no-op / ours no-op", _x(r["cookbook_noop_over_ours_noop"]), "", ""],
    ]
    out += ["", _common.table(["ratio", "value", "target", "met"], ratio_rows)]
    failures = [f"{m.name}: {m.error}" for m in ms.values() if m.error]
    notes = [f"{m.name}: {note}" for m in ms.values() for note in m.notes]
    if notes:
        out += ["", *("note: " + x for x in notes)]
    if failures:
        out += ["", *("FAILED " + x for x in failures)]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
