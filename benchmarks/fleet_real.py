"""Fleet benchmark on a history shaped like a real one (issue 11): ours vs plain Alembic in a loop.

    python benchmarks/fleet_real.py [--tenants 1000] [--jobs N] [--baseline-sample K]
                                    [--rounds R] [--url URL] [--json]

Writes, in a temporary folder, a tenant stream with 60 revisions (``_common.real_history``: the
first uses ``batch_alter_table``, 10 read data through ``op.get_bind()`` and update conditionally,
two forks of two branches merged back, the rest ordinary ops) and a plain Alembic environment over
the same revision files (version table in each tenant schema, ``search_path`` pinned to the tenant,
one transaction per tenant). Then, on the same server, in one run:

1. plain loop: one connection, ``alembic.command.upgrade(cfg, "head")`` per tenant, base -> head
   (on ``--baseline-sample`` tenants spread over the list and extrapolated; default: all of them),
   half of them (every other one) before 2. and the other half after it: the machine's speed
   drifts during a run, and this way a drift moves both sides;
2. ours: ``alembic_schemas.upgrade(jobs=J)`` for every tenant, base -> head (J: ``--jobs``,
   default CPU count);
3. plain downgrade loop of the last 5 revisions (the reference for the downgrade checks);
4. ours downgrade of the last 5 revisions with ``--jobs 2`` and with ``--jobs 1``, ``--rounds``
   times each, alternating, every tenant upgraded back to head by ours in between.

Targets: plain loop / ours >= 5x; downgrade jobs=1 / jobs=2 >= 1.6x.

Each measurement starts on a quiet server: a CHECKPOINT, then no autovacuum worker running (the
catalog churn of 1,000 tenants' DDL wakes autovacuum, which would otherwise run into whatever
is measured next).

Every measured run is checked: every tenant at the expected revision, and its catalog (tables,
columns with types/defaults/nullability, constraints, indexes, sequences, version table) identical
to that of the schemas migrated by plain Alembic, and its rows identical to those plain Alembic
left in the same tenant (the history's rows depend on the tenant's name; tenants outside the
baseline sample are checked for catalog only). A run that fails or differs is reported as FAILED
(exit code 1).

Wall times are ``time.perf_counter``; CPU is user+sys of this process (every thread) and of its
reaped children (ours' worker processes), from ``resource.getrusage``, per tenant. The server is a
throw-away embedded PostgreSQL unless ``--url`` or ``$ALEMBIC_SCHEMAS_URL`` names one (then it
needs CREATEDB: two scratch databases are created and dropped).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
from alembic_schemas.config import URL_ENV  # noqa: E402

STREAM = _common.TENANT_STREAM
VERSION_TABLE = "alembic_version"
HISTORY = _common.real_history()
HEAD = HISTORY[-1].id
DOWN_TO = HISTORY[-6].id  # downgrade takes back the last 5 revisions (a linear run)
DOWN_JOBS = (2, 1)

PLAIN_ENV = '''"""Plain Alembic, one tenant per call: the connection and the tenant come from attributes."""

from alembic import context
from sqlalchemy import text

config = context.config
connection = config.attributes["connection"]
tenant = config.attributes["tenant"]
quoted = connection.dialect.identifier_preparer.quote_schema(tenant)

# One transaction per tenant, unqualified names resolve in the tenant, its own version table.
with connection.begin():
    connection.execute(text(f"SET LOCAL search_path TO {quoted}"))
    context.configure(connection=connection, target_metadata=None, version_table_schema=tenant)
    with context.begin_transaction():
        context.run_migrations()
'''


# --- the projects ------------------------------------------------------------------------


def build_project(root: Path, url: str) -> Path:
    """Ours: one tenant stream over ``like:tenant_%`` holding the generated history."""
    return _common.tenant_project(root, url, HISTORY)


def plain_config(root: Path, versions: Path) -> Config:
    """A plain Alembic environment over the same revision files."""
    root.mkdir(parents=True)
    (root / "env.py").write_text(PLAIN_ENV, encoding="utf-8")
    cfg = Config()
    cfg.set_main_option("script_location", str(root))
    cfg.set_main_option("version_locations", str(versions))
    return cfg


# --- what a schema looks like ------------------------------------------------------------

# Per tenant: its version rows, its catalog as sorted text lines (search_path pinned to it, and its
# own name removed, so that two tenants' texts compare) and one md5 per table of its rows. Column
# order is not compared: a column dropped by a downgrade and added back comes last.
FINGERPRINT_FUNCTION = sa.text(
    r"""
CREATE OR REPLACE FUNCTION pg_temp.fingerprint(tenants text[], vt text)
RETURNS TABLE (tenant text, version text, catalog text, data text)
LANGUAGE plpgsql AS $fn$
DECLARE
    t text;
    nsp oid;
    rel text;
    part text;
BEGIN
    FOREACH t IN ARRAY tenants LOOP
        tenant := t;
        version := NULL;
        catalog := NULL;
        data := '';
        SELECT oid INTO nsp FROM pg_catalog.pg_namespace WHERE nspname = t;
        IF nsp IS NULL THEN
            RETURN NEXT;
            CONTINUE;
        END IF;
        PERFORM pg_catalog.set_config('search_path', pg_catalog.quote_ident(t), true);
        IF pg_catalog.to_regclass(pg_catalog.format('%I.%I', t, vt)) IS NOT NULL THEN
            EXECUTE pg_catalog.format(
                'SELECT pg_catalog.string_agg(version_num, '','' ORDER BY version_num) FROM %I.%I',
                t, vt
            ) INTO version;
        END IF;
        SELECT pg_catalog.string_agg(line, E'\n' ORDER BY line) INTO catalog FROM (
            SELECT pg_catalog.format('rel %s %s', c.relname, c.relkind) AS line
              FROM pg_catalog.pg_class c WHERE c.relnamespace = nsp
            UNION ALL
            SELECT pg_catalog.format(
                       'col %s %s %s notnull=%s identity=%s default=%s', c.relname,
                       a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod),
                       a.attnotnull, a.attidentity, pg_catalog.pg_get_expr(d.adbin, d.adrelid))
              FROM pg_catalog.pg_attribute a
              JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
              LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
             WHERE c.relnamespace = nsp AND c.relkind IN ('r', 'p', 'v')
               AND a.attnum > 0 AND NOT a.attisdropped
            UNION ALL
            SELECT pg_catalog.format('con %s %s %s %s', c.relname, k.conname, k.contype,
                                     pg_catalog.pg_get_constraintdef(k.oid))
              FROM pg_catalog.pg_constraint k JOIN pg_catalog.pg_class c ON c.oid = k.conrelid
             WHERE k.connamespace = nsp
            UNION ALL
            SELECT pg_catalog.format('idx %s', pg_catalog.pg_get_indexdef(i.indexrelid))
              FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
             WHERE c.relnamespace = nsp
            UNION ALL
            SELECT pg_catalog.format('seq %s %s %s %s %s %s', c.relname,
                                     s.seqtypid::pg_catalog.regtype, s.seqstart, s.seqincrement,
                                     s.seqmax, s.seqcycle)
              FROM pg_catalog.pg_sequence s JOIN pg_catalog.pg_class c ON c.oid = s.seqrelid
             WHERE c.relnamespace = nsp
        ) AS lines;
        catalog := pg_catalog.replace(catalog, pg_catalog.quote_ident(t) || '.', '');
        FOR rel IN
            SELECT c.relname FROM pg_catalog.pg_class c
             WHERE c.relnamespace = nsp AND c.relkind = 'r' AND c.relname <> vt
             ORDER BY c.relname
        LOOP
            EXECUTE pg_catalog.format(
                'SELECT pg_catalog.md5(COALESCE(pg_catalog.string_agg(x::text, E''\n'' '
                'ORDER BY x::text), '''')) FROM %I.%I AS x', t, rel
            ) INTO part;
            data := data || rel || '=' || part || ' ';
        END LOOP;
        RETURN NEXT;
    END LOOP;
END
$fn$
"""
)
FINGERPRINT_SQL = sa.text(
    "SELECT tenant, version, catalog, data "
    "FROM pg_temp.fingerprint(CAST(:tenants AS text[]), CAST(:vt AS text))"
)
# Reading a table locks it to the end of the transaction; the server's lock table holds a few
# thousand: one transaction per chunk of tenants (about 25 tables each).
CHUNK = 100


@dataclass(frozen=True)
class Fingerprint:
    version: str | None
    catalog: str | None
    data: str


def fingerprints(engine: Engine, names: Sequence[str]) -> dict[str, Fingerprint]:
    found: dict[str, Fingerprint] = {}
    with engine.connect() as conn:
        conn.execute(FINGERPRINT_FUNCTION)
        conn.commit()
        for start in range(0, len(names), CHUNK):
            params = {"tenants": list(names[start : start + CHUNK]), "vt": VERSION_TABLE}
            for r in conn.execute(FINGERPRINT_SQL, params):
                found[r.tenant] = Fingerprint(r.version, r.catalog, r.data)
            conn.rollback()  # releases the chunk's locks
    return found


@dataclass(frozen=True)
class Reference:
    """What plain Alembic left: the one catalog every tenant has, and each tenant's rows."""

    revision: str
    catalog: str
    data: dict[str, str]


def reference(engine: Engine, names: Sequence[str], revision: str) -> Reference:
    """Plain Alembic's result on ``names``; SystemExit when it is not consistent itself."""
    prints = fingerprints(engine, names)
    catalogs = {p.catalog for p in prints.values()}
    wrong = [n for n, p in prints.items() if p.version != revision]
    if wrong or len(catalogs) != 1 or None in catalogs:
        raise SystemExit(
            f"plain Alembic's own result is inconsistent at {revision}: {len(wrong)} tenants "
            f"elsewhere, {len(catalogs)} distinct catalogs"
        )
    return Reference(revision, catalogs.pop() or "", {n: p.data for n, p in prints.items()})


def compare(engine: Engine, names: Sequence[str], ref: Reference) -> list[str]:
    """Differences from ``ref`` (empty when every tenant matches)."""
    problems: list[str] = []
    for name, p in sorted(fingerprints(engine, names).items()):
        if p.version != ref.revision:
            problems.append(f"{name}: at {p.version or 'base'}, expected {ref.revision}")
        elif p.catalog != ref.catalog:
            problems.append(f"{name}: catalog differs: {first_difference(p.catalog, ref.catalog)}")
        elif name in ref.data and p.data != ref.data[name]:
            problems.append(f"{name}: rows differ from plain Alembic's in the same tenant")
    return problems


def first_difference(ours: str | None, theirs: str) -> str:
    a, b = set((ours or "").splitlines()), set(theirs.splitlines())
    only_ours, only_theirs = sorted(a - b), sorted(b - a)
    return (
        f"{len(only_ours)} lines only here (first: {only_ours[:1]}), "
        f"{len(only_theirs)} only in plain Alembic's (first: {only_theirs[:1]})"
    )


# --- the measurements --------------------------------------------------------------------


@dataclass
class Measurement:
    name: str
    tenants: int  # tenants actually run
    extrapolated_to: int | None = None
    seconds: float | None = None
    cpu_seconds: float | None = None
    server_cpu_seconds: float | None = None  # the PostgreSQL server's, when it runs here
    error: str | None = None
    checked: int = 0  # tenants compared with plain Alembic's result
    rows_checked: int = 0  # of which, rows compared too

    @property
    def per_tenant(self) -> float | None:
        return None if self.seconds is None else self.seconds / self.tenants

    @property
    def total(self) -> float | None:
        """Wall time for every tenant (extrapolated from the sample's mean when sampled)."""
        per = self.per_tenant
        return None if per is None else per * (self.extrapolated_to or self.tenants)

    @property
    def cpu_ms_per_tenant(self) -> float | None:
        return None if self.cpu_seconds is None else self.cpu_seconds * 1e3 / self.tenants

    @property
    def server_cpu_ms_per_tenant(self) -> float | None:
        seconds = self.server_cpu_seconds
        return None if seconds is None else seconds * 1e3 / self.tenants

    @property
    def ok(self) -> bool:
        return self.error is None and self.seconds is not None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "tenants": self.tenants,
            "extrapolated_to": self.extrapolated_to,
            "seconds": self.seconds,
            "total_seconds": self.total,
            "per_tenant": self.per_tenant,
            "cpu_ms_per_tenant": self.cpu_ms_per_tenant,
            "server_cpu_ms_per_tenant": self.server_cpu_ms_per_tenant,
            "checked": self.checked,
            "rows_checked": self.rows_checked,
            "error": self.error,
        }


def measure(m: Measurement, run: Callable[[], None], postmaster: int | None) -> Measurement:
    clocks = _common.Clocks(postmaster)
    try:
        run()
    except Exception as exc:
        m.error = _one_line(exc)
    spent = clocks.stop()
    m.seconds, m.cpu_seconds, m.server_cpu_seconds = spent.wall, spent.cpu, spent.server_cpu
    return m


def combined(name: str, parts: Sequence[Measurement], extrapolated_to: int | None) -> Measurement:
    """One measurement of the tenants of ``parts`` (run at different times), their sums."""
    m = Measurement(name, sum(p.tenants for p in parts), extrapolated_to)
    m.error = next((p.error for p in parts if p.error is not None), None)
    if all(p.ok for p in parts):
        m.seconds = sum(p.seconds or 0.0 for p in parts)
        m.cpu_seconds = sum(p.cpu_seconds or 0.0 for p in parts)
        if all(p.server_cpu_seconds is not None for p in parts):
            m.server_cpu_seconds = sum(p.server_cpu_seconds or 0.0 for p in parts)
    return m


def _one_line(exc: BaseException) -> str:
    report = getattr(exc, "report", None)
    failed = getattr(report, "failed", None)
    if failed:  # MigrationFailed: the first tenant's own error
        return f"{len(failed)} tenants failed, first {failed[0].schema}: {failed[0].error}"
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {(lines[0] if lines else '')[:300]}"


def plain_loop(engine: Engine, cfg: Config, names: Sequence[str], verb: str, to: str) -> None:
    """``alembic.command.<verb>(cfg, to)`` for each tenant, one after another, on one connection."""
    run = command.upgrade if verb == "upgrade" else command.downgrade
    with engine.connect() as conn:
        cfg.attributes["connection"] = conn
        for name in names:
            cfg.attributes["tenant"] = name
            run(cfg, to)


def ours(project: Path, verb: str, to: str, jobs: int) -> Callable[[], None]:
    def run() -> None:
        if verb == "upgrade":
            alembic_schemas.upgrade(to, streams=[STREAM], jobs=jobs, config=project)
        else:
            alembic_schemas.downgrade(to, streams=[STREAM], jobs=jobs, config=project)

    return run


def check(m: Measurement, engine: Engine, names: Sequence[str], ref: Reference) -> None:
    if m.error is not None:
        log(f"  FAILED {m.name}: {m.error}")
        return
    started = time.perf_counter()
    problems = compare(engine, names, ref)
    m.checked = len(names)
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        m.error = f"{len(problems)} of {len(names)} tenants wrong: {'; '.join(problems[:3])}{more}"
    rows = m.rows_checked = sum(1 for n in names if n in ref.data)
    log(
        f"  {m.name}: {m.seconds:.2f} s, CPU {m.cpu_ms_per_tenant:.2f} ms/tenant; "
        f"{len(names)} tenants at {ref.revision}, catalog compared, rows compared in {rows} "
        f"({time.perf_counter() - started:.1f} s): {'ok' if not problems else 'FAILED'}"
    )
    if problems:
        log(f"  FAILED {m.name}: {m.error}")


# --- the run -----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = _common.fleet_arguments(
        "python benchmarks/fleet_real.py",
        "A 60-revision real-shaped history over N tenants: ours vs plain Alembic.",
    )
    p.add_argument(
        "--baseline-sample",
        type=int,
        default=0,
        help="tenants the plain loop migrates, extrapolated (default 0: all of them; else >= 2)",
    )
    p.add_argument(
        "--rounds", type=int, default=1, help="downgrade jobs=2/jobs=1 pairs (default 1)"
    )
    args = p.parse_args(argv)
    if args.tenants < 2 or args.baseline_sample < 0 or args.baseline_sample == 1 or args.rounds < 1:
        p.error("--tenants >= 2, --baseline-sample 0 or >= 2 and --rounds >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    n: int = args.tenants
    jobs: int = args.jobs or os.cpu_count() or 1
    names = _common.tenant_names(n)
    sample = _common.spread_sample(names, args.baseline_sample)
    ms: list[Measurement] = []

    with contextlib.ExitStack() as stack:
        srv = stack.enter_context(_common.server(args.url))
        ours_db = stack.enter_context(_common.scratch_database(srv, "real"))
        plain_db = stack.enter_context(_common.scratch_database(srv, "real_plain"))
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fleet-real-")))
        os.environ[URL_ENV] = ours_db.url
        project = build_project(tmp / "project", ours_db.url)
        cfg = plain_config(tmp / "plain", project.parent / "migrations" / STREAM / "versions")
        plain = plain_db.engine(poolclass=sa.pool.NullPool)
        _common.fresh_tenants(plain_db, plain, names)
        version = _common.server_version(plain)
        postmaster = _common.postmaster_pid(srv.admin_engine())

        def timed(m: Measurement, run: Callable[[], None]) -> Measurement:
            _common.quiesce(srv, m.name)
            ms.append(measure(m, run, postmaster))
            return m

        log(f"fleet_real: {n} tenants, {len(HISTORY)} revisions, PostgreSQL {version}, jobs={jobs}")

        # The plain loop's sample in two halves, one before ours and one after: the machine's
        # speed drifts, and a drift between the two sides would move the ratio.
        halves = (sample[0::2], sample[1::2])
        log(f"plain loop: command.upgrade per tenant, {len(halves[0])} tenants (before ours)")
        first = timed(
            Measurement("plain upgrade, half before ours", len(halves[0])),
            lambda: plain_loop(plain, cfg, halves[0], "upgrade", "head"),
        )
        if not first.ok:
            log(f"  FAILED {first.name}: {first.error}")
            return report(ms, n, jobs, version, args.json)

        log(f"ours: upgrade every tenant, jobs={jobs}")
        engine = ours_db.engine(poolclass=sa.pool.NullPool)
        _common.fresh_tenants(ours_db, engine, names)
        up = timed(
            Measurement(f"ours upgrade (jobs={jobs})", n), ours(project, "upgrade", "head", jobs)
        )

        log(f"plain loop: command.upgrade per tenant, {len(halves[1])} tenants (after ours)")
        second = timed(
            Measurement("plain upgrade, half after ours", len(halves[1])),
            lambda: plain_loop(plain, cfg, halves[1], "upgrade", "head"),
        )
        base = combined("plain loop upgrade", (first, second), n if len(sample) < n else None)
        ms.append(base)
        if not base.ok:
            log(f"  FAILED {base.name}: {base.error}")
            return report(ms, n, jobs, version, args.json)
        up_ref = reference(plain, sample, HEAD)
        base.checked = base.rows_checked = len(sample)
        for m in (first, second, base):
            log(f"  {m.name}: {m.seconds:.2f} s, {(m.per_tenant or 0.0) * 1e3:.1f} ms/tenant")
        check(up, engine, names, up_ref)

        log("plain loop: command.downgrade of the last 5 revisions per tenant")
        pdown = Measurement("plain loop downgrade -5", len(sample), n if len(sample) < n else None)
        timed(pdown, lambda: plain_loop(plain, cfg, sample, "downgrade", DOWN_TO))
        if not (up.ok and pdown.ok):
            return report(ms, n, jobs, version, args.json)
        down_ref = reference(plain, sample, DOWN_TO)
        pdown.checked = pdown.rows_checked = len(sample)
        plain.dispose()

        for r in range(1, args.rounds + 1):
            for j in DOWN_JOBS:
                log(f"ours: downgrade of the last 5 revisions, jobs={j} (round {r})")
                down = timed(
                    Measurement(f"ours downgrade -5 (jobs={j})", n),
                    ours(project, "downgrade", DOWN_TO, j),
                )
                check(down, engine, names, down_ref)
                again = timed(
                    Measurement(f"ours upgrade last 5 (jobs={jobs})", n),
                    ours(project, "upgrade", "head", jobs),
                )
                check(again, engine, names, up_ref)
        engine.dispose()
    return report(ms, n, jobs, version, args.json)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarise(ms: Sequence[Measurement], n: int, jobs: int, version: str) -> dict[str, Any]:
    def totals(prefix: str) -> list[float]:
        return [m.total for m in ms if m.name.startswith(prefix) and m.ok and m.total is not None]

    base, up = _mean(totals("plain loop upgrade")), _mean(totals("ours upgrade (jobs"))
    j2, j1 = totals("ours downgrade -5 (jobs=2)"), totals("ours downgrade -5 (jobs=1)")
    pairs = [a / b for a, b in zip(j1, j2, strict=False) if b]
    speedup = None if base is None or not up else base / up
    down = _mean(pairs)
    return {
        "benchmark": "fleet_real",
        "tenants": n,
        "revisions": len(HISTORY),
        "jobs": jobs,
        "cpus": os.cpu_count(),
        "postgresql": version,
        "alembic": alembic.__version__,
        "sqlalchemy": sa.__version__,
        "measurements": [m.as_dict() for m in ms],
        "ratios": {
            "plain_loop_over_ours": speedup,
            "downgrade_jobs1_over_jobs2": down,
            "downgrade_jobs1_over_jobs2_each_round": pairs,
        },
        "targets": {
            "plain_loop_over_ours": {
                "target": ">= 5",
                "met": None if speedup is None else speedup >= 5,
            },
            "downgrade_jobs1_over_jobs2": {
                "target": ">= 1.6",
                "met": None if down is None else down >= 1.6,
            },
        },
    }


def render(summary: dict[str, Any], ms: Sequence[Measurement], n: int) -> str:
    rows = []
    for m in ms:
        sampled = m.extrapolated_to is not None
        rows.append(
            [
                m.name,
                f"{m.tenants}" + (f" -> {n}" if sampled else ""),
                "-" if m.total is None else f"{m.total:.2f}" + ("*" if sampled else ""),
                "-" if m.per_tenant is None else f"{m.per_tenant * 1e3:.2f}",
                "-" if m.cpu_ms_per_tenant is None else f"{m.cpu_ms_per_tenant:.2f}",
                "-" if m.server_cpu_ms_per_tenant is None else f"{m.server_cpu_ms_per_tenant:.2f}",
                "FAILED" if m.error else (f"ok ({m.rows_checked})" if m.checked else "-"),
            ]
        )
    r, t = summary["ratios"], summary["targets"]

    def met(key: str) -> str:
        value = t[key]["met"]
        return "-" if value is None else ("yes" if value else "NO")

    each = ", ".join(f"{x:.2f}" for x in r["downgrade_jobs1_over_jobs2_each_round"])
    ratio_rows = [
        [
            "plain loop / ours (upgrade base->head)",
            _x(r["plain_loop_over_ours"]),
            ">= 5x",
            met("plain_loop_over_ours"),
        ],
        [
            f"downgrade -5: jobs=1 / jobs=2 ({each})",
            _x(r["downgrade_jobs1_over_jobs2"]),
            ">= 1.6x",
            met("downgrade_jobs1_over_jobs2"),
        ],
    ]
    out = [
        f"fleet_real: {n} tenants x {summary['revisions']} revisions, PostgreSQL "
        f"{summary['postgresql']}, {summary['cpus']} CPUs, jobs={summary['jobs']}",
        "",
        _common.table(HEADERS, rows),
    ]
    if any(m.extrapolated_to for m in ms):
        out.append(f"* extrapolated to {n} tenants from the sample's mean per tenant")
    out += [
        "CPU: user+sys of this process and its reaped children (workers); server: PostgreSQL's",
        "check: every tenant at the target, its catalog equal to plain Alembic's; rows too in",
        "       the (N) tenants plain Alembic migrated",
    ]
    out += ["", _common.table(["ratio", "value", "target", "met"], ratio_rows)]
    out += [f"FAILED {m.name}: {m.error}" for m in ms if m.error]
    return "\n".join(out)


HEADERS = [
    "measurement",
    "tenants",
    "total s",
    "ms/tenant",
    "CPU ms/tenant",
    "server CPU ms/tenant",
    "check",
]


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def report(ms: Sequence[Measurement], n: int, jobs: int, version: str, as_json: bool) -> int:
    summary = summarise(ms, n, jobs, version)
    text = render(summary, ms, n)
    if as_json:
        print(text, file=sys.stderr)
        print(json.dumps(summary, indent=2))
    else:
        print(text)
    return 0 if ms and all(m.ok for m in ms) else 1


if __name__ == "__main__":
    sys.exit(main())
