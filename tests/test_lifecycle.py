"""Tenant lifecycle (issue 3): ``tenants list / create / drop``, and snapshot provisioning.

The central test proves that a tenant provisioned from the snapshot is identical to one
migrated revision by revision: same tables, columns, types, defaults, constraints, indexes,
sequences, enums, privileges, version row and seed rows.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import threading
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

import alembic_schemas
from alembic_schemas import identifiers, provision, tenants
from alembic_schemas.cli import cli as cli_main
from alembic_schemas.config import URL_ENV
from alembic_schemas.errors import AlembicSchemasError

from alembic_reference import catalog
from helpers import FIXTURES, Catalog, ProjectDir, finish, revision_text

HEAD = "ten05"
LIFECYCLE_WITHOUT_BIND = ("shared01", "ten01", "ten02", "ten03", "ten05")

# The history: tests/fixtures/lifecycle. It exercises what a snapshot must carry over: an enum
# that gains a label in the middle, an identity column, a SERIAL, a free-standing sequence used
# by a default, added, dropped and retyped columns, a FK to the named schema, unique/check
# constraints, plain, unique and partial indexes, server defaults, a table comment, a grant,
# seed rows written by op.bulk_insert (with text that looks like SQL, psql commands and
# placeholders), a data migration through op.get_bind() (ten04), and a table created and
# dropped again.

MODELS = """
import sqlalchemy as sa

shared_md = sa.MetaData(schema="shared")
sa.Table(
    "plan",
    shared_md,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(50), nullable=False),
    sa.UniqueConstraint("name", name="uq_plan_name"),
)

tenant_md = sa.MetaData()
shared_md.tables["shared.plan"].to_metadata(tenant_md)
sa.Sequence("invoice_number_seq", start=1000, increment=5, metadata=tenant_md)
sa.Table(
    "account",
    tenant_md,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("email", sa.String(320), nullable=False),
    sa.Column(
        "role",
        sa.Enum("owner", "admin", "member", name="account_role"),
        nullable=False,
        server_default="member",
    ),
    sa.Column(
        "plan_id",
        sa.Integer,
        sa.ForeignKey("shared.plan.id", name="fk_account_plan"),
        nullable=False,
    ),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
    ),
    sa.Column("nickname", sa.String(50), server_default="anon", nullable=False),
    sa.UniqueConstraint("email", name="uq_account_email"),
    sa.CheckConstraint("length(email) > 3", name="ck_account_email"),
    sa.Index("ix_account_created_at", "created_at"),
    sa.Index("ix_account_nickname", "nickname", postgresql_where=sa.text("nickname <> 'anon'")),
    comment="people who sign in",
)
sa.Table(
    "invoice",
    tenant_md,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column(
        "account_id",
        sa.BigInteger,
        sa.ForeignKey("account.id", name="fk_invoice_account", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column(
        "number",
        sa.BigInteger,
        server_default=sa.text("nextval('invoice_number_seq')"),
        nullable=False,
    ),
    sa.Column("amount", sa.Numeric(12, 2), server_default="0", nullable=False),
    sa.Column("status", sa.String(10), server_default="open", nullable=False),
    sa.CheckConstraint("amount >= 0", name="ck_invoice_amount"),
    sa.CheckConstraint("status IN ('open', 'paid', 'void')", name="ck_invoice_status"),
    sa.Index("ix_invoice_account_number", "account_id", "number", unique=True),
)
sa.Table(
    "setting",
    tenant_md,
    sa.Column("key", sa.String(100), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)
"""


def make_project(project_dir: ProjectDir, *, with_bind: bool = True) -> Path:
    """A shared schema stream (plans) and a tenant stream over ``like:tenant%``, with the
    shared stream at head. ``with_bind=False`` leaves out the get_bind data migration, so
    every revision is replayed as SQL rather than run through Alembic."""
    root = project_dir.root
    module = "lifecycle_models_" + uuid.uuid4().hex[:8]
    project_dir.write(f"{module}.py", MODELS)
    project_dir.write(
        "pyproject.toml",
        f"""
        [tool.alembic-schemas]
        script_location = "migrations"

        [tool.alembic-schemas.streams.shared]
        schema = "shared"
        metadata = "{module}:shared_md"

        [tool.alembic-schemas.streams.tenant]
        tenants = "like:tenant%"
        metadata = "{module}:tenant_md"
        depends_on = ["shared"]
        """,
    )
    alembic_schemas.init(root)
    project_dir.install("lifecycle", *([] if with_bind else LIFECYCLE_WITHOUT_BIND))
    if not with_bind:
        ten05 = root / "migrations" / "tenant" / "versions" / "ten05.py"
        ten05.write_text(ten05.read_text().replace('"ten04"', '"ten03"'), encoding="utf-8")
    alembic_schemas.upgrade(streams=["shared"], config=root)
    return root


@pytest.fixture
def project(project_dir: ProjectDir) -> ProjectDir:
    make_project(project_dir)
    return project_dir


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def schemas(db: sa.Engine) -> set[str]:
    return Catalog(db).user_schemas()


def versions(db: sa.Engine, schema: str) -> list[str]:
    with db.connect() as conn:
        table = identifiers.qualified(schema, "alembic_version")
        return list(conn.scalars(sa.text(f"SELECT version_num FROM {table}")))


def tables(db: sa.Engine, schema: str) -> set[str]:
    return set(sa.inspect(db).get_table_names(schema=schema))


def dropped_columns(db: sa.Engine, schema: str) -> int:
    with db.connect() as conn:
        return int(
            conn.scalar(
                sa.text(
                    "SELECT count(*) FROM pg_catalog.pg_attribute a "
                    "JOIN pg_catalog.pg_class c ON c.oid = a.attrelid "
                    "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = :s AND a.attisdropped"
                ),
                {"s": schema},
            )
        )


def _snapshots(db: sa.Engine) -> list[str]:
    """The fingerprints of the stored snapshots (none when the table was never created)."""
    with db.connect() as conn:
        if conn.scalar(sa.text("SELECT to_regclass('alembic_schemas.snapshot')")) is None:
            return []
        return list(
            conn.scalars(sa.text("SELECT fingerprint FROM alembic_schemas.snapshot ORDER BY 1"))
        )


# --- the identity test -------------------------------------------------------------------------


@pytest.mark.parametrize("with_bind", [True, False], ids=["alembic-online", "sql-replay"])
def test_provisioned_tenant_is_identical_to_one_migrated_revision_by_revision(
    project_dir: ProjectDir, db: sa.Engine, with_bind: bool
) -> None:
    root = make_project(project_dir, with_bind=with_bind)

    made = tenants.create("tenant_snap", config=root)
    assert made.after == (HEAD,)
    alembic_schemas.upgrade(streams=["tenant"], tenants=["tenant_step"], config=root)
    tenants.create("tenant_replay", replay=True, config=root)

    snap = catalog(db, "tenant_snap")
    step = catalog(db, "tenant_step")
    for part in snap:
        assert snap[part] == step[part], f"{part} differs between snapshot and step-by-step"
    assert catalog(db, "tenant_replay") == step

    # The catalog holds what the history built (an equality of two empty schemas proves
    # nothing), and the two tenants really were built differently: only the migrated one
    # carries the columns the history dropped.
    assert [t for t in snap["types"] if t[1] == "e"] == [
        ("account_role", "e", ["owner", "admin", "member"])
    ]
    assert {row[0] for row in snap["relations"]} >= {
        "account",
        "invoice",
        "setting",
        "alembic_version",
        "invoice_number_seq",
        "account_id_seq",
        "invoice_id_seq",
        "ix_account_nickname",
        "uq_account_email",
    }
    assert ("account", "people who sign in") in {(r[0], r[4]) for r in snap["relations"]}
    assert any(r[0] == "setting" and "=r/" in r[3] for r in snap["relations"])  # the grant
    assert [json.loads(r) for r in snap["rows"]["alembic_version"]] == [{"version_num": HEAD}]
    seeds = {json.loads(r)["key"]: json.loads(r)["value"] for r in snap["rows"]["setting"]}
    assert seeds["percent"] == "100% of %s and %(x)s"
    assert seeds["multiline"] == "one\nSET work_mem = '1GB';\n\\. two\n\\connect x"
    assert seeds["ünïcode"] == "ünïcödé ✓ 'single' \"double\" $$dollar$$ ; -- /*"
    assert ("seeded_count" in seeds) is with_bind
    fk = [c for c in snap["constraints"] if c[1] == "fk_account_plan"]
    assert fk and "REFERENCES shared.plan(id)" in fk[0][3]
    assert dropped_columns(db, "tenant_step") > 0
    assert dropped_columns(db, "tenant_snap") == 0

    assert (
        ok(project_dir.cli("check", "-s", "tenant", "--all")).count("models match the database")
        == 3
    )


# --- CLI ---------------------------------------------------------------------------------------


def test_tenants_create_provisions_at_head_and_list_shows_revision_and_pending(
    project: ProjectDir, db: sa.Engine
) -> None:
    out = ok(project.cli("tenants", "create", "tenant_a"))
    assert out.strip().startswith(f"created tenant tenant_a at {HEAD}")
    assert versions(db, "tenant_a") == [HEAD]
    assert tables(db, "tenant_a") == {"account", "invoice", "setting", "alembic_version"}
    assert "models match the database" in ok(project.cli("check", "-s", "tenant", "--all"))

    alembic_schemas.upgrade("ten02", streams=["tenant"], tenants=["tenant_b"], config=project.root)
    lines = ok(project.cli("tenants", "list")).splitlines()
    assert lines == [f"tenant_a\t{HEAD}\t0 pending", "tenant_b\tten02\t3 pending"]
    listed = json.loads(ok(project.cli("tenants", "list", "--json")))
    assert listed == [
        {"stream": "tenant", "tenant": "tenant_a", "current": [HEAD], "pending": 0, "error": None},
        {
            "stream": "tenant",
            "tenant": "tenant_b",
            "current": ["ten02"],
            "pending": 3,
            "error": None,
        },
    ]


def test_tenants_list_says_so_when_there_are_none(project: ProjectDir) -> None:
    assert ok(project.cli("tenants", "list")).strip() == "no tenants"
    assert json.loads(ok(project.cli("tenants", "list", "--json"))) == []


def test_tenants_create_refuses_an_existing_schema_in_one_line(
    project: ProjectDir, db: sa.Engine
) -> None:
    ok(project.cli("tenants", "create", "tenant_a"))
    with db.connect() as conn:
        conn.execute(sa.text("INSERT INTO tenant_a.setting VALUES ('mine', 'kept')"))
    proc = project.cli("tenants", "create", "tenant_a")
    assert proc.returncode in (1, 2)
    assert proc.stderr.strip().splitlines() == [
        "alembic-schemas: error: schema 'tenant_a' already exists"
    ]
    with db.connect() as conn:
        assert conn.scalar(sa.text("SELECT value FROM tenant_a.setting WHERE key = 'mine'")) == (
            "kept"
        )


def test_tenants_create_replay_migrates_revision_by_revision(
    project: ProjectDir, db: sa.Engine
) -> None:
    out = ok(project.cli("tenants", "create", "tenant_r", "--replay"))
    assert out.startswith(f"created tenant tenant_r at {HEAD}")
    assert versions(db, "tenant_r") == [HEAD]
    assert dropped_columns(db, "tenant_r") > 0  # really replayed: the dropped column is there
    assert _snapshots(db) == []  # and no snapshot was built for it


def test_tenants_drop_needs_yes_when_stdin_is_not_a_terminal(
    project: ProjectDir, db: sa.Engine
) -> None:
    ok(project.cli("tenants", "create", "tenant_a"))
    proc = project.cli("tenants", "drop", "tenant_a")
    assert proc.returncode == 2
    assert "--yes" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "tenant_a" in schemas(db)

    assert ok(project.cli("tenants", "drop", "tenant_a", "--yes")).strip() == (
        "dropped tenant tenant_a"
    )
    assert "tenant_a" not in schemas(db)
    assert ok(project.cli("tenants", "list")).strip() == "no tenants"


def test_tenants_drop_refuses_names_the_source_does_not_list_unless_forced(
    project: ProjectDir, db: sa.Engine
) -> None:
    with db.connect() as conn:
        conn.exec_driver_sql("CREATE SCHEMA billing")
        conn.exec_driver_sql("CREATE TABLE billing.ledger (id int)")
    proc = project.cli("tenants", "drop", "billing", "--yes")
    assert proc.returncode == 2
    assert "not a tenant of stream 'tenant'" in proc.stderr and "--force" in proc.stderr
    assert "billing" in schemas(db)

    ok(project.cli("tenants", "drop", "billing", "--yes", "--force"))
    assert "billing" not in schemas(db)
    proc = project.cli("tenants", "drop", "billing", "--yes", "--force")
    assert proc.returncode == 1 and "does not exist" in proc.stderr

    # Not even --force drops a schema the tool manages for a named stream.
    proc = project.cli("tenants", "drop", "shared", "--yes", "--force")
    assert proc.returncode == 2 and "schema of stream 'shared'" in proc.stderr
    assert "shared" in schemas(db)


@pytest.mark.parametrize(
    "name",
    ["", "pg_tenant", "x" * 64, "é" * 32, "tenant\x00x"],
    ids=["empty", "pg-prefix", "64-bytes", "64-utf8-bytes", "nul"],
)
def test_bad_tenant_names_are_refused_before_any_sql(
    project_dir: ProjectDir, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    project_dir.write(
        "pyproject.toml",
        """
        [tool.alembic-schemas.streams.tenant]
        tenants = "like:tenant%"
        """,
    )
    # A URL nobody listens on: reaching the database at all would fail differently (exit 1).
    nowhere = "postgresql+psycopg://nobody@/nowhere?host=/nonexistent-alembic-schemas&port=1"
    monkeypatch.setenv(URL_ENV, nowhere)
    runner = CliRunner()  # in-process (fast); its stdin is not a terminal either
    for args in (("create", name), ("drop", name, "--yes", "--force")):
        result = runner.invoke(cli_main, ["tenants", *args])
        assert result.exit_code == 2, result.output
        assert result.stderr.startswith("alembic-schemas: error: invalid tenant name")
        assert len(result.stderr.strip().splitlines()) == 1


def test_api_refuses_a_nul_in_a_tenant_name(project: ProjectDir, db: sa.Engine) -> None:
    before = schemas(db)
    with pytest.raises(identifiers.InvalidIdentifier):
        tenants.create("tenant\x00x", config=project.root)
    assert schemas(db) == before


def test_unusual_names_are_provisioned_and_dropped_exactly_as_written(
    project: ProjectDir, db: sa.Engine
) -> None:
    names = [
        'tenant Acme "Corp"; DROP SCHEMA shared CASCADE; --',
        "tenant MixedCase Ünïcödé",
        "tenant's, \\ $$",
    ]
    before = schemas(db)
    ok(project.cli("tenants", "create", names[0]))
    for name in names[1:]:
        tenants.create(name, config=project.root)
    assert schemas(db) == before | set(names)
    for name in names:
        assert versions(db, name) == [HEAD]
        assert tables(db, name) == {"account", "invoice", "setting", "alembic_version"}
    assert tables(db, "public") == set()

    listed = [t["tenant"] for t in json.loads(ok(project.cli("tenants", "list", "--json")))]
    assert sorted(listed) == sorted(names)
    ok(project.cli("tenants", "drop", names[0], "--yes"))
    assert schemas(db) == before | set(names[1:])


# --- the snapshot ------------------------------------------------------------------------------


def test_snapshot_is_reused_until_a_revision_file_changes_or_one_is_added(
    project: ProjectDir, db: sa.Engine
) -> None:
    root = project.root
    tenants.create("tenant_1", config=root)
    (first,) = _snapshots(db)

    # Mark the cached script: a tenant made from the cache gets the marker table.
    stream = tenants.tenant_stream(alembic_schemas.load(root), "tenant")
    marker = f"CREATE TABLE {identifiers.qualified(provision.staging_schema(stream), 'from_cache')} ();\n"
    with db.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_schemas.snapshot SET sql = sql || :m"), {"m": marker})
    tenants.create("tenant_2", config=root)
    assert "from_cache" in tables(db, "tenant_2")
    assert _snapshots(db) == [first]

    # Edit a revision: a new snapshot is built from the files, without the marker.
    ten05 = root / "migrations" / "tenant" / "versions" / "ten05.py"
    ten05.write_text(
        ten05.read_text().replace(
            '    op.execute("GRANT SELECT ON setting TO PUBLIC")',
            '    op.execute("GRANT SELECT ON setting TO PUBLIC")\n'
            '    op.create_index("ix_setting_value", "setting", ["value"])',
        )
    )
    tenants.create("tenant_3", config=root)
    assert "from_cache" not in tables(db, "tenant_3")
    assert "ix_setting_value" in {
        i["name"] for i in sa.inspect(db).get_indexes("setting", "tenant_3")
    }
    assert len(_snapshots(db)) == 2

    # Add a revision: the new tenant is at the new head, with its column.
    project.revision(
        "tenant", "ten06", "ten05", 'op.add_column("account", sa.Column("phone", sa.String(30)))'
    )
    made = tenants.create("tenant_4", config=root)
    assert made.after == ("ten06",)
    assert versions(db, "tenant_4") == ["ten06"]
    assert "phone" in {c["name"] for c in sa.inspect(db).get_columns("account", "tenant_4")}
    assert len(_snapshots(db)) == 3


def test_a_revision_in_another_version_location_rebuilds_the_snapshot(
    project: ProjectDir, db: sa.Engine
) -> None:
    stream_dir = project.root / "migrations" / "tenant"
    shutil.copy(FIXTURES / "version_locations" / "alembic.ini", stream_dir / "alembic.ini")
    (stream_dir / "more").mkdir()
    tenants.create("tenant_1", config=project.root)
    assert versions(db, "tenant_1") == [HEAD]

    # A new head in more/ (the stream's alembic.ini lists it): the cached snapshot is stale.
    (stream_dir / "more" / "ten06.py").write_text(
        revision_text("ten06", HEAD, 'op.add_column("account", sa.Column("phone", sa.Text))')
    )
    made = tenants.create("tenant_2", config=project.root)
    assert made.after == ("ten06",)
    assert "phone" in {c["name"] for c in sa.inspect(db).get_columns("account", "tenant_2")}
    assert len(_snapshots(db)) == 2


def test_concurrent_creates_of_different_tenants_both_succeed(
    project: ProjectDir,
    db: sa.Engine,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Threads, on a cold cache: both need the snapshot that neither has built yet; one
    # builds it, the other waits for it.
    caplog.set_level(logging.INFO, logger="alembic_schemas")
    # An in-process CLI run (another test) stops this logger propagating to caplog's handler.
    monkeypatch.setattr(logging.getLogger("alembic_schemas"), "propagate", True)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def create(name: str) -> None:
        try:
            barrier.wait()
            tenants.create(name, config=project.root)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(f"tenant_t{i}",)) for i in (1, 2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert len(_snapshots(db)) == 1
    builds = [r for r in caplog.records if r.getMessage().startswith("building the provisioning")]
    assert len(builds) == 1

    # Processes, on a warm cache: they contend for the staging schema.
    procs = [project.spawn("tenants", "create", f"tenant_p{i}", app=f"as_p{i}") for i in (1, 2)]
    for p in procs:
        _, err = finish(p)
        assert p.returncode == 0, err
    for name in ("tenant_t1", "tenant_t2", "tenant_p1", "tenant_p2"):
        assert versions(db, name) == [HEAD]
    assert not {s for s in schemas(db) if s.startswith("alembic_schemas_")} - {"alembic_schemas"}


# --- inside the caller's transaction -----------------------------------------------------------

SETTINGS = (
    "search_path",
    "client_min_messages",
    "statement_timeout",
    "lock_timeout",
    "row_security",
    "check_function_bodies",
    "standard_conforming_strings",
    "xmloption",
    "default_tablespace",
    "default_table_access_method",
    "client_encoding",
)


def _settings(conn: sa.Connection) -> dict[str, str]:
    return {name: str(conn.scalar(sa.select(sa.func.current_setting(name)))) for name in SETTINGS}


def test_create_in_callers_transaction_rolls_back_and_commits_with_it(
    project: ProjectDir, db: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The app brings its own connection and the config names no URL: nothing else is used
    # (no embedded server is started beside the project).
    monkeypatch.delenv(URL_ENV)
    app = sa.create_engine(project.url)
    try:
        with app.connect() as conn:
            # The app's session settings, then some of its transaction's own.
            conn.exec_driver_sql("SET search_path TO public")
            conn.exec_driver_sql("SET client_min_messages TO log")
            conn.commit()
            conn.exec_driver_sql("SET LOCAL statement_timeout = '12s'")
            conn.exec_driver_sql("SET LOCAL row_security = on")
            before = _settings(conn)
            result = tenants.create("tenant_rb", connection=conn, config=project.root)
            assert result.after == (HEAD,)
            assert _settings(conn) == before
            assert conn.scalar(sa.text("SELECT count(*) FROM tenant_rb.setting")) == 5
            assert "tenant_rb" not in schemas(db)  # not committed: invisible to others
            conn.rollback()
            assert "tenant_rb" not in schemas(db)

            with conn.begin():
                tenants.create("tenant_ok", connection=conn, config=project.root)
                conn.execute(sa.text("SELECT 1"))  # the caller goes on in its transaction
            # SET LOCAL, not SET: nothing outlives the transaction in the app's session.
            assert conn.scalar(sa.text("SHOW search_path")) == "public"
            assert conn.scalar(sa.text("SHOW client_min_messages")) == "log"
            assert conn.scalar(sa.text("SHOW check_function_bodies")) == "on"
            conn.rollback()
    finally:
        app.dispose()
    assert versions(db, "tenant_ok") == [HEAD]
    assert not (project.root / ".alembic-schemas").exists()
    assert not {s for s in schemas(db) if s.startswith("alembic_schemas_")} - {"alembic_schemas"}


def test_create_in_callers_transaction_refuses_replay_and_existing_schemas(
    project: ProjectDir, db: sa.Engine
) -> None:
    with db.connect() as setup:
        setup.exec_driver_sql("CREATE SCHEMA tenant_x")
    app = sa.create_engine(project.url)
    try:
        with app.connect() as conn:
            with pytest.raises(AlembicSchemasError, match="replay"):
                tenants.create("tenant_y", connection=conn, replay=True, config=project.root)
            with pytest.raises(AlembicSchemasError, match="already exists"):
                tenants.create("tenant_x", connection=conn, config=project.root)
            conn.rollback()
    finally:
        app.dispose()
    assert "tenant_y" not in schemas(db)
