"""Autogenerate scope benchmark (issue 2): does a crowded database slow a stream's autogenerate?

    python benchmarks/autogenerate_scope.py [--schemas 200] [--runs 11] [--baseline-runs 1]
                                            [--no-baseline] [--url URL] [--json]

Builds two scratch databases on the same server: one empty, one holding N other schemas (each with
the stream's own table, type and sequence names: 3 tables with FKs, a unique and a check constraint,
an index, an enum type, a sequence and a version table), both then VACUUM ANALYZEd as autovacuum
would have done in a live database. In each it times, in-process:

* ``first``: ``alembic_schemas.revision(-s myschema, --autogenerate)`` for the stream's first
  revision (its schema does not exist yet);
* ``at head``: after ``upgrade``, the same autogenerate again (it reflects the stream's schema in
  full and writes an empty revision);

each the median of ``--runs`` calls, the two databases taking turns (after a warm-up round; every
generated file is removed). The baseline is plain Alembic as its docs suggest for a multi-schema
database: ``include_schemas=True`` with an ``include_object`` filter keeping one schema's tables,
which still reflects every schema.

Prints each time, the number of SQL statements each autogenerate sent, and the ratio N / 0 other
schemas (goal for alembic-schemas: at most 1.2x). The server is a throw-away embedded PostgreSQL
unless ``--url`` or ``$ALEMBIC_SCHEMAS_URL`` names one (then it needs CREATEDB).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import event

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402
from _common import log  # noqa: E402

import alembic_schemas  # noqa: E402
from alembic_schemas import identifiers  # noqa: E402
from alembic_schemas.config import URL_ENV  # noqa: E402

GOAL = 1.2
STREAM = "myschema"

MODELS = """
import sqlalchemy as sa

metadata = sa.MetaData(schema="myschema")

sa.Table(
    "user",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(100), nullable=False, index=True),
    sa.Column("mood", sa.Enum("happy", "sad", name="mood")),
    sa.Column("number", sa.Integer, sa.Sequence("user_number")),
)
sa.Table(
    "address",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("user_id", sa.ForeignKey("myschema.user.id"), nullable=False, index=True),
    sa.Column("street", sa.String(200), server_default="unknown"),
    sa.UniqueConstraint("user_id", "street"),
)
sa.Table(
    "note",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("address_id", sa.ForeignKey("myschema.address.id", ondelete="CASCADE")),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("created", sa.DateTime(timezone=True), server_default=sa.text("now()")),
    sa.CheckConstraint("length(body) > 0", name="ck_note_body"),
)
"""

# Plain Alembic, the way its documentation handles several schemas: every schema is reflected,
# include_object then drops the tables of the others from the comparison.
BASELINE_ENV = """
import sqlalchemy as sa
from alembic import context

import bench_models

def include_object(obj, name, type_, reflected, compare_to):
    if type_ == "table":
        return obj.schema == "myschema" and name != "alembic_version"
    return True

engine = sa.create_engine(context.config.get_main_option("sqlalchemy.url"), poolclass=sa.pool.NullPool)
with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=bench_models.metadata,
        include_schemas=True,
        include_object=include_object,
        version_table="baseline_version",  # in public: plain Alembic's default place
        compare_type=True,
        compare_server_default=True,
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
"""


def other_schema_names(count: int) -> list[str]:
    return [f"other_{i:03d}" for i in range(count)]


def other_schemas_sql(names: Sequence[str]) -> str:
    """The stream's table, type and sequence names again, with other shapes, in every schema."""
    parts = []
    for name in names:
        s = identifiers.quote(name)
        parts.append(
            f"""
            CREATE SCHEMA {s};
            CREATE TYPE {s}.mood AS ENUM ('up', 'down', 'sideways');
            CREATE SEQUENCE {s}.user_number START 42;
            CREATE TABLE {s}."user" (id bigserial PRIMARY KEY, login text UNIQUE,
                                     mood {s}.mood, seen timestamptz DEFAULT now());
            CREATE TABLE {s}.address (id serial PRIMARY KEY,
                                      user_id bigint NOT NULL REFERENCES {s}."user" (id),
                                      city text CHECK (city <> ''));
            CREATE INDEX ON {s}.address (user_id, city);
            CREATE TABLE {s}.note (id serial PRIMARY KEY,
                                   address_id int REFERENCES {s}.address (id), body text);
            CREATE TABLE {s}.alembic_version (version_num varchar(32) PRIMARY KEY);
            INSERT INTO {s}.alembic_version VALUES ('deadbeef');
            """
        )
    return "\n".join(parts)


@dataclass
class Timing:
    """One tool, one scenario, one database: the runs' seconds and the statements of one run."""

    tool: str
    scenario: str
    other_schemas: int
    seconds: list[float] = field(default_factory=list)
    statements: int = 0

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


@contextlib.contextmanager
def counting() -> Iterator[list[int]]:
    """Counts the SQL statements any engine sends while active."""
    box = [0]

    def listener(*_: Any) -> None:
        box[0] += 1

    event.listen(sa.engine.Engine, "before_cursor_execute", listener)
    try:
        yield box
    finally:
        event.remove(sa.engine.Engine, "before_cursor_execute", listener)


def quiet() -> contextlib.AbstractContextManager[Any]:
    """Alembic's "Generating ..." lines: kept off stdout, which is for the results."""
    return contextlib.redirect_stdout(io.StringIO())


def once(timing: Timing, generate: Callable[[], list[Path]]) -> None:
    """Time one call of ``generate`` (which returns the files it wrote: removed after)."""
    with counting() as count, quiet():
        started = time.perf_counter()
        written = generate()
        timing.seconds.append(time.perf_counter() - started)
    timing.statements = count[0]
    for path in written:
        path.unlink()


def interleaved(
    tool: str,
    scenario: str,
    runs: int,
    cases: Sequence[tuple[int, str, Callable[[], list[Path]]]],
    warm_up: bool = True,
) -> list[Timing]:
    """``runs`` rounds, each timing every case once (after one untimed warm-up round), so that
    load from elsewhere on the machine falls on the 0- and the N-schema case alike."""
    timings = [Timing(tool, scenario, n) for n, _url, _generate in cases]
    for round_ in range(0 if warm_up else 1, runs + 1):
        for timing, (_n, url, generate) in zip(timings, cases, strict=True):
            os.environ[URL_ENV] = url
            once(timing, generate)
            if round_ == 0:
                timing.seconds.clear()  # the warm-up
    return timings


def build_project(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "bench_models.py").write_text(textwrap.dedent(MODELS).lstrip())
    (root / "pyproject.toml").write_text(
        textwrap.dedent(
            """
            [tool.alembic-schemas]
            script_location = "migrations"

            [tool.alembic-schemas.streams.myschema]
            schema = "myschema"
            metadata = "bench_models:metadata"
            """
        ).lstrip()
    )
    alembic_schemas.init(root)
    baseline = root / "baseline"
    (baseline / "versions").mkdir(parents=True)
    (baseline / "env.py").write_text(textwrap.dedent(BASELINE_ENV).lstrip())
    mako = root / "migrations" / STREAM / "script.py.mako"
    (baseline / "script.py.mako").write_text(mako.read_text())
    return root


def ours(root: Path) -> Callable[[], list[Path]]:
    def generate() -> list[Path]:
        scripts = alembic_schemas.revision(STREAM, "bench", autogenerate=True, config=root)
        return [Path(s.path) for s in scripts]

    return generate


def baseline(root: Path, url: str) -> Callable[[], list[Path]]:
    cfg = Config()
    cfg.set_main_option("script_location", str(root / "baseline"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))

    def generate() -> list[Path]:
        found = command.revision(cfg, "bench", autogenerate=True)
        scripts = found if isinstance(found, list) else [found]
        return [Path(s.path) for s in scripts if s is not None]

    return generate


def scenario(
    args: argparse.Namespace,
    root: Path,
    dbs: Sequence[tuple[int, str]],
    cases: list[tuple[int, str, Callable[[], list[Path]]]],
    name: str,
) -> list[Timing]:
    """One scenario: ours on every database, interleaved; then plain Alembic on each."""
    timings = interleaved("alembic-schemas", name, args.runs, cases)
    if not args.no_baseline:
        for n, url in dbs:
            log(f"plain Alembic: {name}, {n} other schemas")
            timings += interleaved(
                "plain alembic",
                name,
                args.baseline_runs,
                [(n, url, baseline(root, url))],
                warm_up=n == 0,  # a crowded warm-up would cost a minute, for nothing
            )
    return timings


def run(args: argparse.Namespace) -> list[Timing]:
    timings: list[Timing] = []
    with contextlib.ExitStack() as stack:
        srv = stack.enter_context(_common.server(args.url))
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="scope-bench-")))
        root = build_project(tmp / "project")
        sys.path.insert(0, str(root))  # the baseline env imports bench_models
        empty = stack.enter_context(_common.scratch_database(srv, "scope_empty"))
        crowded = stack.enter_context(_common.scratch_database(srv, "scope_crowded"))
        empty.recreate()
        crowded.recreate()
        engine = crowded.engine()
        try:
            version = _common.server_version(engine)
            log(f"building {args.schemas} other schemas in {crowded.name}")
            started = time.perf_counter()
            with engine.begin() as conn:
                conn.exec_driver_sql(other_schemas_sql(other_schema_names(args.schemas)))
            log(f"  done in {time.perf_counter() - started:.1f}s (PostgreSQL {version})")
        finally:
            engine.dispose()
        # Catalog statistics as autovacuum keeps them in a live database; a database created
        # a second ago has none, and the planner then guesses.
        for db in (empty, crowded):
            analyze = db.engine(isolation_level="AUTOCOMMIT")
            try:
                with analyze.connect() as conn:
                    conn.exec_driver_sql("VACUUM ANALYZE")
            finally:
                analyze.dispose()

        dbs = ((0, empty.url), (args.schemas, crowded.url))
        for db in (empty, crowded):
            db.checkpoint()

        log("alembic-schemas: first revision (the stream's schema does not exist yet)")
        cases = [(n, url, ours(root)) for n, url in dbs]
        timings += scenario(args, root, dbs, cases, "first")

        # Bring both databases to head with the same revision; autogenerate again then
        # reflects the stream's schema in full and finds nothing to do.
        os.environ[URL_ENV] = empty.url
        with quiet():
            alembic_schemas.revision(STREAM, "init", autogenerate=True, rev_id="init", config=root)
            for _n, url in dbs:
                os.environ[URL_ENV] = url
                alembic_schemas.upgrade(config=root)

        log("alembic-schemas: at head")
        timings += scenario(args, root, dbs, cases, "at head")
    return timings


def ratios(timings: list[Timing]) -> dict[tuple[str, str], float]:
    by = {(t.tool, t.scenario, t.other_schemas): t for t in timings}
    out = {}
    for t in timings:
        if t.other_schemas:
            base = by.get((t.tool, t.scenario, 0))
            if base:
                out[(t.tool, t.scenario)] = t.median / base.median
    return out


def report(timings: list[Timing], n: int) -> str:
    rows = [
        [
            t.tool,
            t.scenario,
            str(t.other_schemas),
            f"{t.median * 1000:.0f} ms",
            str(len(t.seconds)),
            str(t.statements),
        ]
        for t in timings
    ]
    lines = [
        _common.table(
            ["tool", "autogenerate", "other schemas", "median", "runs", "SQL statements"], rows
        ),
        "",
    ]
    for (tool, scenario), ratio in ratios(timings).items():
        goal = f" (goal <= {GOAL}x: {'met' if ratio <= GOAL else 'NOT met'})"
        note = goal if tool == "alembic-schemas" else ""
        lines.append(f"{tool}, {scenario}: {n} / 0 other schemas = {ratio:.2f}x{note}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--schemas", type=int, default=200, help="other schemas (default 200)")
    p.add_argument("--runs", type=int, default=11, help="timed runs of ours per case (default 11)")
    p.add_argument(
        "--baseline-runs",
        type=int,
        default=1,
        help="timed runs of plain Alembic (default 1: a run takes a minute at 200 schemas)",
    )
    p.add_argument("--no-baseline", action="store_true", help="skip plain Alembic")
    p.add_argument("--url", help="server to use (default $ALEMBIC_SCHEMAS_URL, else embedded)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    args = p.parse_args(argv)
    if args.runs < 1 or args.baseline_runs < 1 or args.schemas < 1:
        p.error("--schemas, --runs and --baseline-runs must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    timings = run(args)
    if args.json:
        print(
            json.dumps(
                {
                    "other_schemas": args.schemas,
                    "goal": GOAL,
                    "timings": [asdict(t) | {"median": t.median} for t in timings],
                    "ratios": {f"{k[0]}, {k[1]}": v for k, v in ratios(timings).items()},
                },
                indent=2,
            )
        )
    else:
        print(report(timings, args.schemas))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
