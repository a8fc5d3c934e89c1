"""Reading a fleet (issue 12): drift compared once per structure and equal to one compare per
tenant, counts first, one bad tenant reported on its own line, orphans and ``register``, and
honest run summaries (not started, Ctrl-C).

The project is ``tests/fixtures/fleet_read``: a tenant stream (``like:t\\_%``) whose history
``r1`` (account, item, an enum type, a sequence used by a default, an identity column, an
index, FK, unique and check constraints) and ``r2`` (a column; a data step that sleeps on an
item named ``slow`` and divides by zero on one named ``poison``) matches its models.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

import alembic_schemas
from alembic_schemas import autogenerate, database, identifiers, tenants
from alembic_schemas.errors import ConfigError, Interrupted, MigrationFailed
from alembic_schemas.streams import Stream

from helpers import ProjectDir

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "fleet_read"
STREAM = "tenant"


@dataclass
class Fleet:
    project: ProjectDir
    db: sa.Engine

    @property
    def root(self) -> Path:
        return self.project.root

    def sql(self, text: str) -> None:
        with self.db.connect() as conn:
            conn.exec_driver_sql(text)

    def create(self, names: Sequence[str], at: str = "head", items: Sequence[str] = ()) -> None:
        """Tenant schemas at ``at`` (through the tool), each holding ``items`` by name."""
        self.sql(";".join(f"CREATE SCHEMA {identifiers.quote(n)}" for n in names))
        alembic_schemas.upgrade(at, tenants=list(names), jobs=2, config=self.root)
        if items:
            values = ", ".join(f"('{i}')" for i in items)
            self.sql(
                ";".join(
                    f"INSERT INTO {identifiers.qualified(n, 'item')} (name) VALUES {values}"
                    for n in names
                )
            )

    def versions(self, names: Sequence[str]) -> dict[str, str]:
        with self.db.connect() as conn:
            return {
                n: conn.exec_driver_sql(
                    f"SELECT version_num FROM {identifiers.qualified(n, 'alembic_version')}"
                ).scalar_one()
                for n in names
            }

    def cli(self, *args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
        """The CLI in the project, on the test database (as another role with ``url``)."""
        return ProjectDir(self.root, url or self.project.url).cli(*args)

    def configure(self, old: str, new: str) -> None:
        config = self.root / "pyproject.toml"
        text = config.read_text()
        assert old in text
        config.write_text(text.replace(old, new))


@pytest.fixture
def fleet(project_dir: ProjectDir, db: sa.Engine) -> Fleet:
    shutil.copytree(FIXTURE, project_dir.root, dirs_exist_ok=True)
    alembic_schemas.init(project_dir.root)
    return Fleet(project_dir, db)


def _names(n: int) -> list[str]:
    return [f"t_{i:03d}" for i in range(n)]


def _per_tenant_compare(fleet: Fleet, names: Sequence[str]) -> dict[str, list[str]]:
    """Alembic's compare once per tenant: the baseline fleet drift must equal."""
    project = alembic_schemas.load(fleet.root)
    stream = Stream(project, project.stream(STREAM))
    out = {}
    with database.session(project) as s, s.connect() as conn:
        for name in names:
            with conn.begin():
                found = autogenerate.compare(stream, name, conn)
                out[name] = [autogenerate.describe(d, own_schema=name) for d in found]
    return out


# --- drift -------------------------------------------------------------------------------

ODD = 't_Odd "x"; y'  # quoted everywhere PostgreSQL deparses it


def test_fleet_drift_equals_one_compare_per_tenant_and_compares_each_structure_once(
    fleet: Fleet,
) -> None:
    names = [*_names(14), ODD]
    fleet.create(names)
    odd = identifiers.quote(ODD)
    fleet.sql(
        f"""
        ALTER TABLE t_001.account ADD COLUMN extra text;
        ALTER TABLE t_002.account ADD COLUMN extra text;
        DROP INDEX t_003.ix_item_account_id;
        ALTER TABLE t_004.item ALTER COLUMN name TYPE varchar(50);
        ALTER TABLE t_005.account ALTER COLUMN score SET DEFAULT 5;
        ALTER TABLE t_006.item ALTER COLUMN status SET DEFAULT 't_006';
        ALTER TABLE t_007.item ALTER COLUMN status SET DEFAULT 't_007';
        ALTER TABLE t_008.account ALTER COLUMN ticket SET DEFAULT nextval('t_008.ticket_seq');
        CREATE SEQUENCE t_009.extra_seq;
        ALTER TYPE t_010.mood ADD VALUE 'meh';
        ALTER TABLE t_011.item DROP CONSTRAINT fk_item_account_id;
        ALTER TABLE t_011.item ADD CONSTRAINT fk_item_account_id
            FOREIGN KEY (account_id) REFERENCES t_012.account (id);
        ALTER TABLE t_013.item DROP COLUMN note;
        ALTER TABLE t_013.item ADD COLUMN note text;
        ALTER TABLE {odd}.account ALTER COLUMN ticket
            SET DEFAULT nextval('{odd.replace("'", "''")}.ticket_seq');
        ALTER TABLE {odd}.item ALTER COLUMN status SET DEFAULT 'x'
        """
    )

    report = alembic_schemas.status(config=fleet.root)

    drift = {s.schema: s.drift for s in report}
    baseline = _per_tenant_compare(fleet, names)
    for name in names:
        assert collections.Counter(drift[name] or []) == collections.Counter(baseline[name]), name
    assert baseline["t_001"] == ["remove column account.extra"]
    assert baseline["t_003"] == ["add index item.ix_item_account_id"]
    assert baseline["t_004"] == ["modify type of item.name: VARCHAR(50) -> TEXT"]
    assert baseline["t_005"] == ["modify default of account.score: 5 -> '0'"]
    assert baseline["t_009"] == ["remove sequence extra_seq"], "named as in a tenant: no schema"
    groups = {tuple(g.schemas) for g in report.groups}
    clean = ("t_000", "t_008", "t_012", "t_013")
    assert groups == {
        clean,  # t_008 names its own sequence qualified, t_013 re-added a column: the same
        ("t_001", "t_002"),
        ("t_003",),
        ("t_004",),
        ("t_005",),
        ("t_006",),  # a default mentioning the tenant's own name is kept apart
        ("t_007",),
        ("t_009",),
        ("t_010",),  # an enum label: compare may not see it, the fingerprint does
        ("t_011",),  # its foreign key points at another tenant's table
        (ODD,),
    }
    (summary,) = report.summaries()
    differing = [g for g in report.groups if g.differences]
    assert summary.drift_groups == len(differing)
    assert summary.drifted == sum(len(g.schemas) for g in differing)
    assert all(g.id for g in report.groups) and len({g.id for g in report.groups}) == len(groups)


def test_status_and_check_open_with_counts_and_list_only_what_needs_attention(
    fleet: Fleet,
) -> None:
    names = _names(25)
    fleet.create(names[:22])
    fleet.create(names[22:], at="r1")
    fleet.sql(
        "ALTER TABLE t_001.account ADD COLUMN extra text; DROP INDEX t_002.ix_item_account_id"
    )

    status = fleet.cli("status")
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[0] == (
        "tenant: 25 tenants: 22 at r2 (head), 3 at r1; "
        "3 pending, 3 drift groups (5 tenants), 0 errors, 0 failed, 0 orphans"
    )
    assert "tenant: 3 tenants at r1 (1 pending): t_022, t_023, t_024" in lines
    assert "  remove column account.extra" in lines
    assert "  add column item.note" in lines, "the tenants at r1 lack r2's column: one group"
    assert "t_005" not in status.stdout, "a tenant at head without drift is not listed"

    every = fleet.cli("status", "--all", "--no-drift").stdout.splitlines()
    assert every[0].endswith("3 pending, drift not compared, 0 errors, 0 failed, 0 orphans")
    assert "tenant/t_005: at r2, head r2, 0 pending" in every, "no trailing comma"
    assert len([x for x in every if x.startswith("tenant/")]) == 25

    data = json.loads(fleet.cli("status", "--json").stdout)
    assert {"schemas", "last_failures", "edited"} <= set(data), "documented keys stay"
    (counts,) = data["summary"]
    assert (counts["schemas"], counts["pending"], counts["drift_groups"]) == (25, 3, 3)
    assert counts["at"] == [{"current": ["r2"], "schemas": 22}, {"current": ["r1"], "schemas": 3}]
    assert sorted(g["schemas"] for g in data["drift_groups"]) == [
        ["t_001"],
        ["t_002"],
        ["t_022", "t_023", "t_024"],
    ]
    by_schema = {s["schema"]: s for s in data["schemas"]}
    assert by_schema["t_001"]["drift_group"] == next(
        g["id"] for g in data["drift_groups"] if g["schemas"] == ["t_001"]
    )
    assert by_schema["t_005"]["error"] is None and by_schema["t_005"]["drift"] == []

    check = fleet.cli("check")
    assert check.returncode == 1
    assert check.stdout.splitlines()[0] == lines[0]
    assert "models match the database" not in check.stdout
    assert check.stderr.strip() == "alembic-schemas: error: 5 schema(s) differ from their models"
    assert "tenant/t_005: models match the database" in fleet.cli("check", "--all").stdout
    named = fleet.cli("check", "--tenant", "t_005", "--tenant", "t_001")
    assert "tenant/t_005: models match the database" in named.stdout
    assert "tenant/t_001: remove column account.extra" in named.stdout
    items = json.loads(fleet.cli("check", "--json").stdout)
    assert len(items) == 25
    assert {"stream", "schema", "pending", "differences"} <= set(items[0])


# --- one bad tenant ----------------------------------------------------------------------


@pytest.fixture
def reader(admin_engine: sa.Engine, db_url: str) -> Iterator[str]:
    """A login role of the test's own (roles are cluster-wide), dropped afterwards."""
    role = "reader_" + uuid.uuid4().hex[:8]
    with admin_engine.connect() as conn:
        conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN PASSWORD 'pw'")
    yield role
    database_name = make_url(db_url).database
    with admin_engine.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{database_name}" WITH (FORCE)')
        conn.exec_driver_sql(f"DROP ROLE IF EXISTS {role}")


def test_one_bad_tenant_is_reported_on_its_line_and_the_rest_is_read(
    fleet: Fleet, reader: str
) -> None:
    names = _names(8)
    fleet.create(names)
    fleet.sql(
        f"""
        UPDATE t_001.alembic_version SET version_num = 'deadbeef';
        DROP TABLE t_002.alembic_version;
        CREATE TABLE t_002.alembic_version (v text);
        DROP TABLE t_003.alembic_version;
        GRANT USAGE ON SCHEMA alembic_schemas TO {reader};
        GRANT SELECT ON ALL TABLES IN SCHEMA alembic_schemas TO {reader};
        """
        # No privilege at all on t_004; t_003 has no version table left to grant on.
        + "".join(f"GRANT USAGE ON SCHEMA {n} TO {reader};" for n in names if n != "t_004")
        + "".join(
            f"GRANT SELECT ON {n}.alembic_version TO {reader};"
            for n in names
            if n not in ("t_003", "t_004")
        )
    )
    as_reader = make_url(fleet.project.url).set(username=reader, password="pw")
    url = as_reader.render_as_string(hide_password=False)

    status = fleet.cli("status", "--all", url=url)
    assert status.returncode == 1
    lines = status.stdout.splitlines()
    assert lines[0].startswith("tenant: 8 tenants: 4 at r2 (head), 1 at <base>, 1 at deadbeef")
    assert "3 errors" in lines[0]
    line = {x.split(":")[0]: x for x in lines[1:]}
    assert "names revision 'deadbeef', which is not in the history" in line["tenant/t_001"]
    assert 'column "version_num" does not exist' in line["tenant/t_002"]
    assert line["tenant/t_003"].startswith("tenant/t_003: at <base>, head r2, 2 pending")
    assert "permission denied for schema t_004" in line["tenant/t_004"]
    assert line["tenant/t_005"] == "tenant/t_005: at r2, head r2, 0 pending, no drift"
    assert "3 schema(s) could not be read or compared" in status.stderr
    assert len(status.stderr.strip().splitlines()) == 1

    current = fleet.cli("current", url=url)
    assert current.returncode == 1
    assert "tenant/t_000: r2 (head)" in current.stdout
    assert "tenant/t_004: ERROR: cannot read t_004.alembic_version: permission denied" in (
        current.stdout
    )
    listed = fleet.cli("tenants", "list", url=url)
    assert listed.returncode == 1 and "Traceback" not in listed.stderr
    assert "t_000\tr2\t0 pending" in listed.stdout
    assert "t_001\t?\tERROR: version table alembic_version names revision 'deadbeef'" in (
        listed.stdout
    )
    check = fleet.cli("check", url=url)
    assert check.returncode == 1
    assert "tenant/t_002: ERROR: cannot read" in check.stdout
    assert "4 schema(s) differ from their models (3 could not be checked; tenant/t_001:" in (
        check.stderr
    )

    # The same through the API: one state per tenant, the reasons in `error`.
    states = {s.schema: s for s in alembic_schemas.current(config=fleet.root)}
    assert (states["t_001"].current, states["t_001"].pending) == (("deadbeef",), None)
    assert states["t_003"].error is None and states["t_003"].pending == 2


# --- orphans and register ----------------------------------------------------------------


def test_a_schema_with_the_version_table_the_source_does_not_list_is_an_orphan(
    fleet: Fleet,
) -> None:
    fleet.create(_names(2))
    # `upgrade --tenant NAME` migrates any name; `like:t\_%` will never list it again.
    alembic_schemas.upgrade(tenants=["acme", "tX"], config=fleet.root)
    fleet.sql("CREATE SCHEMA other; CREATE TABLE other.alembic_version (version_num text)")
    fleet.sql("INSERT INTO other.alembic_version VALUES ('from_another_history')")

    status = fleet.cli("status")
    assert status.returncode == 0, status.stderr
    assert status.stdout.splitlines()[0].endswith("2 orphans")
    assert "tenant/acme: ORPHAN at r2: holds the stream's version table but its source" in (
        status.stdout
    )
    assert "tenant/tX: ORPHAN" in status.stdout, "'_' is escaped: tX does not match t\\_%"
    assert "other" not in status.stdout, "another history's version table is not ours"
    orphans = json.loads(fleet.cli("status", "--json").stdout)["orphans"]
    assert orphans == [
        {"stream": STREAM, "schema": "acme", "current": ["r2"], "error": None},
        {"stream": STREAM, "schema": "tX", "current": ["r2"], "error": None},
    ]
    named = json.loads(fleet.cli("status", "--tenant", "t_000", "--json").stdout)
    assert named["orphans"] == [], "orphans are looked for when reading the whole fleet"


def test_tenants_create_refuses_a_name_its_source_would_never_list(fleet: Fleet) -> None:
    fleet.create(_names(1))
    proc = fleet.cli("tenants", "create", "acme")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "alembic-schemas: error: tenant 'acme' would not be listed by like:t\\_% after "
        "creation, so upgrade, status and tenants list would never see it: set register = "
        "\"...(:name)\" on stream 'tenant' to add it to the source"
    )
    with pytest.raises(ConfigError, match="would not be listed"):
        tenants.create("tX", replay=True, config=fleet.root)
    with fleet.db.connect() as conn:
        assert not conn.scalar(
            sa.text("SELECT count(*) FROM pg_namespace WHERE nspname IN ('acme', 'tX')")
        )
    assert fleet.cli("tenants", "create", "t_new").returncode == 0


REGISTRY = """
CREATE SCHEMA registry;
CREATE TABLE registry.tenant (name text PRIMARY KEY);
INSERT INTO registry.tenant VALUES ('t_000');
"""


def test_register_adds_the_new_tenant_to_the_source_in_the_creating_transaction(
    fleet: Fleet,
) -> None:
    fleet.sql(REGISTRY)
    fleet.configure(
        "tenants = 'like:t\\_%'",
        'tenants = "query:SELECT name FROM registry.tenant ORDER BY name"\n'
        'register = "INSERT INTO registry.tenant (name) VALUES (:name)"',
    )
    fleet.create(["t_000"])

    assert fleet.cli("tenants", "create", "acme").returncode == 0
    tenants.create("beta", replay=True, config=fleet.root)
    with fleet.db.connect() as autocommit:
        conn = autocommit.execution_options(isolation_level="READ COMMITTED")
        conn.begin()
        tenants.create("gamma", connection=conn, config=fleet.root)
        assert conn.scalar(sa.text("SELECT count(*) FROM registry.tenant")) == 4
        conn.rollback()  # the request failed: neither schema nor row stays
    listed = fleet.cli("tenants", "list").stdout.splitlines()
    assert listed == ["acme\tr2\t0 pending", "beta\tr2\t0 pending", "t_000\tr2\t0 pending"]
    assert "0 orphans" in fleet.cli("status").stdout
    with fleet.db.connect() as conn:
        assert not conn.scalar(sa.text("SELECT count(*) FROM pg_namespace WHERE nspname = 'gamma'"))

    # A register that does not make the source list the tenant: refused, nothing left.
    fleet.configure("VALUES (:name)", "VALUES (upper(:name))")
    proc = fleet.cli("tenants", "create", "delta")
    assert proc.returncode == 2
    assert "the register SQL of stream 'tenant' did not make the source list it" in proc.stderr
    with fleet.db.connect() as conn:
        assert conn.scalar(sa.text("SELECT count(*) FROM registry.tenant")) == 3
        assert not conn.scalar(sa.text("SELECT count(*) FROM pg_namespace WHERE nspname = 'delta'"))


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            "register = \"INSERT INTO registry.tenant VALUES ('x')\"",
            "stream 'tenant': register must use the bound parameter :name",
        ),
        (
            '[tool.alembic-schemas.streams.core]\nschema = "core"\nregister = "SELECT :name"',
            "stream 'core': 'register' is only for tenant streams",
        ),
    ],
)
def test_register_must_bind_name_and_belongs_to_tenant_streams(
    fleet: Fleet, section: str, message: str
) -> None:
    fleet.configure("tenants = 'like:t\\_%'", f"tenants = 'like:t\\_%'\n{section}")
    proc = fleet.cli("tenants", "list")
    assert proc.returncode == 2
    assert message in proc.stderr


# --- run summaries -----------------------------------------------------------------------


def test_a_stopped_run_counts_the_tenants_it_never_started(fleet: Fleet) -> None:
    names = _names(30)
    fleet.create(names, at="r1", items=["a"])
    fleet.sql("INSERT INTO t_004.item (name) VALUES ('poison')")

    proc = fleet.cli("upgrade", "--jobs", "1", "--max-failures", "0")
    assert proc.returncode == 1
    assert "tenant: 4 applied, 1 failed, 0 unchanged, 25 not started" in proc.stdout
    assert "ETA" in proc.stderr, "plain progress lines carry the time left"

    with pytest.raises(MigrationFailed) as exc:
        alembic_schemas.upgrade(jobs=1, config=fleet.root)
    report = exc.value.report  # type: ignore[attr-defined]
    assert report.as_dict()["not_started"] == 25
    assert report.as_dict()["interrupted"] is False

    # The failure stays under "last failures" until the tenant reaches the run's target.
    assert "tenant/t_004" in fleet.cli("status", "--no-drift").stdout
    fleet.cli("stamp", "-s", STREAM, "--tenant", "t_004", "r2")
    status = json.loads(fleet.cli("status", "--no-drift", "--json").stdout)
    assert status["last_failures"] == []
    assert status["summary"][0]["failed"] == 0
    assert status["last_run"]["outcome"] == "failed"
    assert alembic_schemas.last_failures(config=fleet.root) == []


def test_downgrade_reports_counts_in_text_and_json(fleet: Fleet) -> None:
    fleet.create(_names(3))
    proc = fleet.cli("downgrade", "-s", STREAM, "r1", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert (data["applied"], data["failed"], data["unchanged"], data["not_started"]) == (3, 0, 0, 0)
    assert [r["status"] for r in data["results"]] == ["applied"] * 3
    text = fleet.cli("downgrade", "-s", STREAM, "r1").stdout
    assert "tenant: 0 applied, 0 failed, 3 unchanged, 0 not started" in text


def test_ctrl_c_lets_tenants_in_flight_finish_prints_the_summary_and_exits_130(
    fleet: Fleet,
) -> None:
    names = _names(40)
    fleet.create(names, at="r1", items=["slow"])  # r2 takes 0.3 s per tenant

    proc = subprocess.Popen(
        [sys.executable, "-m", "alembic_schemas", "upgrade", "--jobs", "2"],
        cwd=fleet.root,
        env={**os.environ, "ALEMBIC_SCHEMAS_URL": fleet.project.url},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and set(fleet.versions(names).values()) == {"r1"}:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)

    assert proc.returncode == 130, err
    versions = fleet.versions(names)
    assert set(versions.values()) <= {"r1", "r2"}, "every tenant at a recorded revision"
    done = sum(1 for v in versions.values() if v == "r2")
    assert 0 < done < len(names)
    assert f"tenant: {done} applied, 0 failed, 0 unchanged, {len(names) - done} not started" in out
    assert "stopping: no new schema starts" in err
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith(f"alembic-schemas: error: interrupted: {done} applied, 0 failed")
    )
    status = fleet.cli("status", "--no-drift").stdout
    assert "was interrupted at" in status and f"{done} applied" in status
    with fleet.db.connect() as conn:
        run = conn.execute(
            sa.text("SELECT * FROM alembic_schemas.run WHERE outcome <> 'done'")
        ).one()
    assert (run.outcome, run.applied, run.not_started) == ("interrupted", done, len(names) - done)


def test_an_interrupt_from_the_api_stops_the_run_with_its_report(fleet: Fleet) -> None:
    names = _names(6)
    fleet.create(names, at="r1")
    interrupt = alembic_schemas.Interrupt()

    def stop_after_two(r: alembic_schemas.SchemaResult) -> None:
        if r.schema == "t_001":
            interrupt.stop()

    with pytest.raises(Interrupted) as exc:
        alembic_schemas.upgrade(
            jobs=1, on_result=stop_after_two, interrupt=interrupt, config=fleet.root
        )
    report = exc.value.report  # type: ignore[attr-defined]
    assert [r.schema for r in report] == ["t_000", "t_001"]
    assert report.counts() == {"applied": 2, "unchanged": 0, "failed": 0, "not_started": 4}
    assert exc.value.exit_code == 130
