"""Provisioning benchmark (issue 3): creating a tenant at head must not cost more with a longer
history (target: a 100-revision history at most 1.5x a 5-revision one).

    python benchmarks/provision.py [--creates 20] [--replays 5] [--url URL] [--json]

Builds three tenant-stream projects in a temporary folder, each in its own scratch database:

* ``5 revisions``: four tables with identity keys, foreign keys, unique and check constraints,
  indexes and server defaults, then two added columns (one indexed);
* ``100 revisions, same schema``: those 5 revisions and 95 generated ones that add, index,
  retype and drop columns and create and drop tables, ending at the very same schema, so only
  the length of the history differs;
* ``100 revisions, growing``: those 5 and 95 generated ones that each add a column (every fifth
  also an index), so the schema grows with the history too (+95 columns, +19 indexes).

For each project it measures, on the same server:

1. the one-off snapshot build (``provision.get_snapshot`` on a cold cache);
2. ``--creates`` steady-state creates through the API, each with its own connection
   (``tenants.create(name, config=project)``, what ``alembic-schemas tenants create`` runs);
3. ``--creates`` creates inside an application's connection (``tenants.create(name,
   connection=conn)``, then commit), the sign-up path;
4. ``--replays`` creates with ``replay=True`` (revision by revision), for comparison.

It prints medians and the ratios of each 100-revision project to the 5-revision one. Checks:
every tenant is at head, and a snapshot tenant's columns, constraints and indexes equal a
replayed tenant's. The server is a throw-away embedded PostgreSQL unless ``--url`` or
``$ALEMBIC_SCHEMAS_URL`` names one (then it needs CREATEDB: it works in scratch databases).
Exit code 1 when a check failed.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import statistics
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402
from _common import log  # noqa: E402

import alembic_schemas  # noqa: E402
from alembic_schemas import provision, tenants  # noqa: E402
from alembic_schemas.config import URL_ENV  # noqa: E402
from alembic_schemas.versions import read_versions  # noqa: E402

STREAM = "tenant"
TABLES = ("account", "project", "task", "comment")
TARGET = 1.5

BASE: list[str] = [
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
    op.create_table(
        "project",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("account_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["account.id"], name="fk_project_account", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("account_id", "name", name="uq_project_account_name"),
        sa.CheckConstraint("length(name) > 0", name="ck_project_name"),
    )
    op.create_index("ix_project_account_id", "project", ["account_id"])
    """,
    """
    op.create_table(
        "task",
        sa.Column("id", sa.BigInteger(), sa.Identity(), primary_key=True),
        sa.Column("project_id", sa.BigInteger(), nullable=False),
        sa.Column("title", sa.String(300), nullable=False),
        sa.Column("status", sa.String(20), server_default="open", nullable=False),
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
        sa.ForeignKeyConstraint(["task_id"], ["task.id"], name="fk_comment_task", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["author_id"], ["account.id"], name="fk_comment_author", ondelete="SET NULL"
        ),
    )
    op.create_index("ix_comment_task_id", "comment", ["task_id"])
    """,
    """
    op.add_column(
        "project", sa.Column("archived", sa.Boolean(), server_default=sa.false(), nullable=False)
    )
    """,
    """
    op.add_column("task", sa.Column("due_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_task_due_at", "task", ["due_at"])
    """,
]

GROWTH_TYPES = (
    "sa.Integer()",
    "sa.Text()",
    "sa.Boolean(), server_default=sa.false(), nullable=False",
    "sa.Numeric(10, 2)",
    "sa.DateTime(timezone=True)",
)


def churn(i: int) -> str:
    """Revision ``i`` (from 6) of a history that ends where it started: in groups of five
    revisions a column is added, indexed, retyped, unindexed and dropped (every third group
    also creates and drops a table)."""
    group, step = divmod(i - 6, 5)
    table, col = TABLES[group % len(TABLES)], f"tmp_{group:03d}"
    index, scratch = f"ix_{table}_{col}", f"tmp_table_{group:03d}"
    with_table = group % 3 == 0
    if step == 0:
        body = f'op.add_column("{table}", sa.Column("{col}", sa.Integer()))'
        if with_table:
            body += (
                f'\nop.create_table("{scratch}", sa.Column("id", sa.Integer(), primary_key=True),'
                f' sa.Column("note", sa.Text()))'
            )
        return body
    if step == 1:
        return f'op.create_index("{index}", "{table}", ["{col}"])'
    if step == 2:
        return (
            f'op.alter_column("{table}", "{col}", type_=sa.BigInteger(), '
            f'existing_type=sa.Integer(), server_default="0")'
        )
    if step == 3:
        return f'op.drop_index("{index}", table_name="{table}")'
    body = f'op.drop_column("{table}", "{col}")'
    if with_table:
        body += f'\nop.drop_table("{scratch}")'
    return body


def growth(i: int) -> str:
    """Revision ``i`` (from 6) of a history that adds one column per revision (every fifth
    revision also indexes it)."""
    table, col = TABLES[i % len(TABLES)], f"c{i:03d}"
    body = f'op.add_column("{table}", sa.Column("{col}", {GROWTH_TYPES[i % len(GROWTH_TYPES)]}))'
    if i % 5 == 0:
        body += f'\nop.create_index("ix_{table}_{col}", "{table}", ["{col}"])'
    return body


def revision_bodies(kind: str, n: int) -> list[str]:
    extra = {"churn": churn, "growth": growth}.get(kind)
    bodies = [textwrap.dedent(b).strip() for b in BASE[:n]]
    if extra is not None:
        bodies += [extra(i) for i in range(len(BASE) + 1, n + 1)]
    return bodies


def build_project(root: Path, url: str, kind: str, n: int) -> Path:
    """A project with one tenant stream over ``like:tenant_%`` and ``n`` generated revisions."""
    upgrade_only = 'raise NotImplementedError("benchmark history: upgrade only")'
    revisions = [
        (f"r{i:03d}", f"{kind} {i}", body, upgrade_only)
        for i, body in enumerate(revision_bodies(kind, n), start=1)
    ]
    return _common.tenant_project(root, url, _common.linear(revisions)).parent


# --- checking --------------------------------------------------------------------------------

SHAPE_SQL = sa.text(
    """
SELECT 'column', c.relname || '.' || a.attname || ' ' || pg_catalog.format_type(a.atttypid, a.atttypmod)
       || ' ' || coalesce(pg_catalog.pg_get_expr(d.adbin, d.adrelid), '') || ' ' || a.attnotnull::text
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE n.nspname = :s AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped
UNION ALL
SELECT 'constraint', con.conname || ' ' || CASE con.contype WHEN 'c' THEN 'CHECK'
       ELSE pg_catalog.pg_get_constraintdef(con.oid) END
FROM pg_catalog.pg_constraint con JOIN pg_catalog.pg_namespace n ON n.oid = con.connamespace
WHERE n.nspname = :s
UNION ALL
SELECT 'index', indexname || ' ' || indexdef FROM pg_catalog.pg_indexes WHERE schemaname = :s
"""
)


def shape(engine: Engine, schema: str) -> list[tuple[str, str]]:
    """Columns, constraints and indexes of ``schema``, its own name taken out.

    CHECK constraints by name only: PostgreSQL may place the casts of an ``IN`` list on a
    varchar column differently after a dump and restore (the same constraint; the test
    suite compares them after a round trip)."""
    with engine.connect() as conn:
        prefix = str(conn.scalar(sa.text("SELECT pg_catalog.quote_ident(:s)"), {"s": schema}))
        rows = conn.execute(SHAPE_SQL, {"s": schema}).all()
    return sorted((kind, str(text).replace(prefix + ".", "<tenant>.")) for kind, text in rows)


def check(engine: Engine, snapshot_tenant: str, replay_tenant: str, names: Sequence[str]) -> str:
    """'' when every tenant is at head and snapshot and replay built the same schema."""
    with engine.connect() as conn:
        found = read_versions(conn, names, "alembic_version")
    heads = set(found.values())
    if len(heads) != 1 or not next(iter(heads)):
        return f"tenants are at different revisions: {sorted(heads)}"
    if shape(engine, snapshot_tenant) != shape(engine, replay_tenant):
        return "a snapshot tenant differs from a replayed one"
    return ""


# --- measuring -------------------------------------------------------------------------------


@dataclass
class Result:
    label: str
    revisions: int
    tables: int = 0
    columns: int = 0
    indexes: int = 0
    snapshot_kb: float = 0.0
    build_s: float = 0.0
    fingerprint_ms: float = 0.0
    create_ms: list[float] = field(default_factory=list)
    in_app_ms: list[float] = field(default_factory=list)
    replay_ms: list[float] = field(default_factory=list)
    error: str = ""

    @staticmethod
    def median(values: Sequence[float]) -> float | None:
        return statistics.median(values) if values else None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("create_ms", "in_app_ms", "replay_ms"):
            out[key.replace("_ms", "_median_ms")] = self.median(out.pop(key))
        return out


def ms(fn: Callable[[], object]) -> float:
    return _common.timed(fn)[0] * 1000


def in_app(app: Engine, name: str, project: alembic_schemas.Project) -> float:
    """One sign-up: the app's pooled connection, its transaction, commit included."""
    with app.connect() as conn:
        started = time.perf_counter()
        tenants.create(name, connection=conn, config=project)
        conn.commit()
        return (time.perf_counter() - started) * 1000


class Subject:
    """One project in its own scratch database, with the engines used to measure it."""

    def __init__(self, db: _common.ScratchDatabase, tmp: Path, label: str, kind: str, n: int):
        self.db = db
        self.result = Result(label, n)
        db.recreate()
        os.environ[URL_ENV] = db.url  # the project (and anything it starts) uses this database
        self.project = alembic_schemas.load(build_project(tmp / kind, db.url, kind, n))
        self.stream = tenants.tenant_stream(self.project, STREAM)
        self.engine = db.engine(poolclass=sa.pool.NullPool)
        self.app = db.engine(pool_size=2)  # an application's own pooled engine
        self.names: list[str] = []

    @property
    def label(self) -> str:
        return self.result.label

    def prepare(self) -> None:
        """The one-off snapshot build, then one create of each kind to warm up."""
        r = self.result
        r.build_s = ms(lambda: provision.get_snapshot(self.stream, self.engine)) / 1000
        r.snapshot_kb = len(provision.get_snapshot(self.stream, self.engine).encode()) / 1024
        r.fingerprint_ms = statistics.median(
            ms(lambda: provision.fingerprint(self.stream)) for _ in range(20)
        )
        tenants.create("tenant_warmup", config=self.project)
        in_app(self.app, "tenant_warmup_app", self.project)
        self.names += ["tenant_warmup", "tenant_warmup_app"]

    def create(self, name: str) -> None:
        self.names.append(name)
        self.result.create_ms.append(
            ms(functools.partial(tenants.create, name, config=self.project))
        )

    def create_in_app(self, name: str) -> None:
        self.names.append(name)
        self.result.in_app_ms.append(in_app(self.app, name, self.project))

    def replay(self, name: str) -> None:
        self.names.append(name)
        self.result.replay_ms.append(
            ms(functools.partial(tenants.create, name, replay=True, config=self.project))
        )

    def finish(self) -> None:
        """Check the tenants and count what the schema holds."""
        r = self.result
        replayed = [n for n in self.names if n.startswith("tenant_r")]
        r.error = check(self.engine, "tenant_c000", (replayed or ["tenant_c000"])[0], self.names)
        for kind, _ in shape(self.engine, "tenant_c000"):
            r.columns += kind == "column"
            r.indexes += kind == "index"
        with self.engine.connect() as conn:
            r.tables = len(sa.inspect(conn).get_table_names(schema="tenant_c000")) - 1

    def close(self) -> None:
        self.app.dispose()
        self.engine.dispose()


def measure(subjects: Sequence[Subject], creates: int, replays: int) -> None:
    """Every measurement round-robin over the projects, so that anything drifting on the
    server (its caches, the growing catalog, other load) weighs on each project alike."""
    for s in subjects:
        log(f"{s.label}: building the snapshot")
        s.prepare()
    log(f"{creates} creates, {creates} in an app's connection, {replays} replays per project")
    steps: list[tuple[str, Callable[[Subject, str], None], int]] = [
        ("tenant_c", Subject.create, creates),
        ("tenant_a", Subject.create_in_app, creates),
        ("tenant_r", Subject.replay, replays),
    ]
    for prefix, step, count in steps:
        for k in range(count):
            for s in subjects:
                step(s, f"{prefix}{k:03d}")
                s.db.checkpoint()  # the next create does not pay for this one's writes
    for s in subjects:
        s.finish()
        log(f"{s.label}: {'ok' if not s.result.error else 'FAILED: ' + s.result.error}")


# --- reporting -------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def render(results: Sequence[Result], version: str, creates: int, replays: int) -> str:
    rows = [
        [
            r.label,
            f"{r.tables}/{r.columns}/{r.indexes}",
            fmt(r.snapshot_kb),
            fmt(r.build_s, 2),
            fmt(r.median(r.create_ms)),
            fmt(r.median(r.in_app_ms)),
            fmt(r.median(r.replay_ms)),
            fmt(r.fingerprint_ms, 2),
        ]
        for r in results
    ]
    head = [
        "project",
        "tables/cols/idx",
        "snapshot KB",
        "build s",
        "create ms",
        "in-app ms",
        "replay ms",
        "fingerprint ms",
    ]
    lines = [
        f"tenant provisioning, PostgreSQL {version}: medians of {creates} creates "
        f"(own connection / inside an app's connection) and {replays} replays",
        "",
        _common.table(head, rows),
        "",
    ]
    base = results[0]
    for r in results[1:]:
        parts = []
        for what, a, b in (
            ("create", r.median(r.create_ms), base.median(base.create_ms)),
            ("in-app", r.median(r.in_app_ms), base.median(base.in_app_ms)),
            ("replay", r.median(r.replay_ms), base.median(base.replay_ms)),
        ):
            parts.append(f"{what} {fmt(ratio(a, b), 2)}x")
        lines.append(f"{r.label} / {base.label}: " + ", ".join(parts))
    base_ms = (base.median(base.create_ms), base.median(base.in_app_ms))
    for r in results[1:]:
        # The target is about history length: it is judged on the same schema at head. A
        # history that also grows the schema provisions a bigger schema, which costs more
        # by itself; its figure is shown against the same bar for information.
        worst = max(
            (
                x
                for x in (
                    ratio(r.median(r.create_ms), base_ms[0]),
                    ratio(r.median(r.in_app_ms), base_ms[1]),
                )
                if x is not None
            ),
            default=None,
        )
        within = worst is not None and worst <= TARGET
        if r.label.endswith("same schema"):
            verdict = "target met" if within else "target MISSED"
        else:
            verdict = "within" if within else "above"
        lines.append(
            f"{r.label} vs {base.label}, snapshot provisioning: {fmt(worst, 2)}x, {verdict} "
            f"(<= {TARGET}x)"
        )
    for r in results:
        if r.error:
            lines.append(f"{r.label}: FAILED: {r.error}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python benchmarks/provision.py",
        description="Tenant provisioning time for a 5- and a 100-revision history.",
    )
    p.add_argument("--creates", type=int, default=20, help="creates per way (default 20)")
    p.add_argument("--replays", type=int, default=5, help="replayed creates (default 5; 0 skips)")
    p.add_argument("--revisions", type=int, default=100, help="long history (default 100)")
    p.add_argument(
        "--url", default=None, help=f"PostgreSQL server (default: ${URL_ENV} or embedded)"
    )
    p.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")
    args = p.parse_args(argv)
    if args.creates < 1 or args.replays < 0 or args.revisions <= len(BASE):
        p.error(f"--creates >= 1, --replays >= 0, --revisions > {len(BASE)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    long = args.revisions
    projects = [
        (f"{len(BASE)} revisions", "base", len(BASE)),
        (f"{long} revisions, same schema", "churn", long),
        (f"{long} revisions, growing", "growth", long),
    ]
    with contextlib.ExitStack() as stack:
        srv = stack.enter_context(_common.server(args.url))
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="provision-bench-")))
        admin = srv.admin_engine()
        version = _common.server_version(admin)
        admin.dispose()
        subjects: list[Subject] = []
        for label, kind, n in projects:
            db = stack.enter_context(_common.scratch_database(srv, "provision"))
            subject = Subject(db, tmp, label, kind, n)
            stack.callback(subject.close)
            subjects.append(subject)
        try:
            measure(subjects, args.creates, args.replays)
        except Exception as exc:
            for s in subjects:
                s.result.error = s.result.error or f"{type(exc).__name__}: {exc}"
        results = [s.result for s in subjects]
    text = render(results, version, args.creates, args.replays)
    if args.json:
        print(text, file=sys.stderr)
        print(json.dumps([r.as_dict() for r in results], indent=2))
    else:
        print(text)
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
