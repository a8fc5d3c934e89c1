"""Promises 8 and 9 of issue 5: a search_path hijack (CVE-2018-1058 pattern) is never picked up,
and everything runs as a non-superuser migrator, with the application role given access through
a stream's ``grants``.

The project has a named stream ``core`` (schema ``core``) and a tenant stream ``tenant``
(``like:t_%``). Their revisions use unqualified names on purpose: tables (``account``,
``note``), ``lower(varchar)``, ``now()`` and ``integer + numeric``. An unprivileged role plants
in ``public`` a better match for each (``public.lower(varchar)`` beats ``pg_catalog.lower(text)``
for a varchar argument, ``public.+(integer, numeric)`` beats the implicit cast to numeric), plus
``public.account``, ``public.note`` and a ``public.alembic_version`` claiming a bogus revision.
Each planted object is shown to win on a session whose search_path includes ``public``, so the
assertions that migrations never see them can fail.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from alembic_schemas import database
from alembic_schemas.config import load_project
from alembic_schemas.runtime import schema as schema_tx

from helpers import ProjectDir

APP_PRIVILEGES = '["SELECT", "INSERT"]'

CONFIG = """
[tool.alembic-schemas]
script_location = "migrations"
lock_timeout = "5s"

[tool.alembic-schemas.streams.core]
schema = "core"
metadata = "sec_models:core"
{core_grants}

[tool.alembic-schemas.streams.tenant]
tenants = "like:t_%"
metadata = "sec_models:tenant"
depends_on = ["core"]
{tenant_grants}
"""

MODELS = """
import sqlalchemy as sa

core = sa.MetaData()
sa.Table(
    "account", core,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("email", sa.String(100), nullable=False),
    sa.Column("created", sa.DateTime(timezone=True)),
    sa.Column("score", sa.Numeric),
    schema="core",
)

tenant = sa.MetaData()
sa.Table(
    "note", tenant,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("body", sa.String(100), nullable=False),
    sa.Column("n", sa.Numeric),
)
"""

INVOICE_MODEL = """
sa.Table(
    "invoice", core,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("total", sa.Numeric, nullable=False),
    schema="core",
)
sa.Table("tag", tenant, sa.Column("id", sa.Integer, primary_key=True), sa.Column("label", sa.Text))
"""

# The revisions: tests/fixtures/security (core: c1, c2; tenant: t1, t2 online, t3).

PLANTS = [
    "CREATE FUNCTION public.lower(varchar) RETURNS text LANGUAGE sql AS $$ SELECT 'hijacked' $$",
    "CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE sql"
    " AS $$ SELECT '1999-01-01 00:00:00+00'::timestamptz $$",
    "CREATE FUNCTION public.evil_add(integer, numeric) RETURNS numeric LANGUAGE sql"
    " AS $$ SELECT 666::numeric $$",
    "CREATE OPERATOR public.+ (LEFTARG = integer, RIGHTARG = numeric, FUNCTION = public.evil_add)",
    "CREATE TABLE public.account (id serial, email text, created timestamptz, score numeric)",
    "CREATE TABLE public.note (id serial, body text, n numeric)",
    "CREATE TABLE public.alembic_version (version_num varchar(32) PRIMARY KEY)",
    "INSERT INTO public.alembic_version VALUES ('bogus')",
]

Role = Callable[..., str]


@pytest.fixture
def make_role(admin_engine: sa.Engine, db_url: str) -> Iterator[Role]:
    """Create throw-away roles (unique names: roles are cluster-wide); returns a URL-ready name.
    Dropped afterwards, with whatever they own or were granted in the test database."""
    made: list[str] = []
    database_name = make_url(db_url).database

    def make(prefix: str, attributes: str = "LOGIN") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        with admin_engine.connect() as conn:
            # A password too, for servers ($ALEMBIC_SCHEMAS_TEST_URL) that do not trust sockets.
            conn.exec_driver_sql(f"CREATE ROLE {name} {attributes} PASSWORD 'pw'")
            conn.exec_driver_sql(f'GRANT CONNECT ON DATABASE "{database_name}" TO {name}')
        made.append(name)
        return name

    yield make
    engine = database.create_engine(db_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            for name in made:
                conn.exec_driver_sql(f"DROP OWNED BY {name} CASCADE")
    finally:
        engine.dispose()
    with admin_engine.connect() as conn:
        for name in reversed(made):
            conn.exec_driver_sql(f'REVOKE ALL ON DATABASE "{database_name}" FROM {name}')
            conn.exec_driver_sql(f"DROP ROLE IF EXISTS {name}")


def url_for(db_url: str, role: str) -> str:
    return make_url(db_url).set(username=role, password="pw").render_as_string(hide_password=False)


def write_project(project: ProjectDir, *, grants: str = "") -> None:
    project.write(
        "pyproject.toml",
        CONFIG.format(
            core_grants=f"grants = {grants}" if grants else "",
            tenant_grants=f"grants = {grants}" if grants else "",
        ),
    )
    project.write("sec_models.py", MODELS)
    project.cli("init", check=True)
    project.install("security", "c1_account", "t1_note")


# --- promise 8: search_path hijack ---------------------------------------------------------


def test_objects_planted_in_public_are_never_used_by_migrations_or_autogenerate(
    project_dir: ProjectDir, db: sa.Engine, db_url: str, make_role: Role
) -> None:
    intruder = make_role("intruder")
    with db.connect() as conn:
        # PostgreSQL 15+ no longer lets every role create in public: say it explicitly.
        conn.exec_driver_sql(f"GRANT CREATE ON SCHEMA public TO {intruder}")
    intruder_engine = database.create_engine(
        url_for(db_url, intruder), isolation_level="AUTOCOMMIT"
    )
    try:
        with intruder_engine.connect() as conn:
            for sql in PLANTS:
                conn.exec_driver_sql(sql)
    finally:
        intruder_engine.dispose()
    with db.connect() as conn:
        # The plants are live: a session with public on its path resolves to them.
        conn.exec_driver_sql("SET search_path TO public")
        hijacked = conn.exec_driver_sql(
            "SELECT lower(CAST('X' AS varchar)), 1 + 1.5, (SELECT version_num FROM alembic_version)"
        ).one()
        assert tuple(hijacked) == ("hijacked", 666, "bogus")
        conn.exec_driver_sql("SET search_path TO pg_catalog")

    write_project(project_dir)
    project_dir.install("security", "t2_online")
    project_dir.cli("upgrade", "-s", "core", check=True)
    project_dir.cli("upgrade", "-s", "tenant", "--tenant", "t_a", "t1", check=True)  # replay
    project_dir.cli("upgrade", "-s", "tenant", "--tenant", "t_a", check=True)  # online t2
    project_dir.cli("tenants", "create", "t_b", "--replay", check=True)  # replay, then online
    project_dir.cli("tenants", "create", "t_c", check=True)  # snapshot

    with db.connect() as conn:
        (row,) = conn.exec_driver_sql(
            "SELECT email, created > '2000-01-01', score FROM core.account"
        ).all()
        assert tuple(row) == ("mixed@example.com", True, 2.5)
        for tenant in ("t_a", "t_b", "t_c"):
            notes = conn.exec_driver_sql(f"SELECT body, n FROM {tenant}.note ORDER BY id").all()
            assert [tuple(n) for n in notes] == [("replayed", 2.5), ("online", 2.5)], tenant
            version = conn.exec_driver_sql(f"SELECT version_num FROM {tenant}.alembic_version")
            assert version.scalar_one() == "t2"
        for table in ("account", "note"):
            assert conn.exec_driver_sql(f"SELECT count(*) FROM public.{table}").scalar_one() == 0
        assert conn.exec_driver_sql(
            "SELECT version_num FROM public.alembic_version"
        ).scalars().all() == ["bogus"]

    # Autogenerate and check compare against the target schema only: public.account and
    # public.note (same names as the models) change nothing.
    assert project_dir.cli("check").returncode == 0
    for stream in ("core", "tenant"):
        before = set(project_dir.versions(stream))
        project_dir.cli("revision", "-s", stream, "-m", "nothing", "--autogenerate", check=True)
        (new,) = set(project_dir.versions(stream)) - before
        body = new.read_text()
        assert "op." not in body.split("def upgrade")[1], body


# --- promise 9: least privilege, and grants -------------------------------------------------


def test_non_superuser_migrator_runs_named_and_tenant_streams_and_app_role_gets_access(
    project_dir: ProjectDir, db: sa.Engine, db_url: str, make_role: Role
) -> None:
    migrator = make_role("migrator", "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE")
    app = make_role("app")
    database_name = make_url(db_url).database
    with db.connect() as conn:
        # CREATE on the database lets it create its own schemas; nothing else is granted.
        conn.exec_driver_sql(f'GRANT CREATE ON DATABASE "{database_name}" TO {migrator}')
    as_migrator = ProjectDir(project_dir.root, url_for(db_url, migrator))
    write_project(as_migrator, grants=f"{{ {app} = {APP_PRIVILEGES} }}")
    project_dir.install("security", "t2_online")

    as_migrator.cli("upgrade", check=True)
    for tenant in ("t_a", "t_b", "t_c"):
        as_migrator.cli("tenants", "create", tenant, "--replay", check=True)

    # Snapshot provisioning needs a scratch database: without CREATEDB, one clear line.
    refused = as_migrator.cli("tenants", "create", "t_d")
    assert refused.returncode == 1
    # (an info line "building the provisioning snapshot ..." may come first)
    errors = [ln for ln in refused.stderr.splitlines() if "error" in ln or "Traceback" in ln]
    assert len(errors) == 1, refused.stderr
    line = errors[0]
    assert line.startswith("alembic-schemas: error: "), line
    assert "CREATEDB" in line or "permission denied to create database" in line, line
    assert "--replay" in line, line

    # Later revisions in both streams, then a fleet upgrade and a clean check.
    project_dir.install("security", "c2_invoice", "t3_tag")
    with (project_dir.root / "sec_models.py").open("a") as f:
        f.write(INVOICE_MODEL)
    as_migrator.cli("upgrade", check=True)
    assert as_migrator.cli("check").returncode == 0, "models and database agree"

    with db.connect() as conn:
        owners = conn.exec_driver_sql(
            "SELECT DISTINCT pg_get_userbyid(nspowner) FROM pg_namespace "
            "WHERE nspname IN ('core', 't_a', 't_b', 't_c', 'alembic_schemas')"
        ).scalars()
        assert set(owners) == {migrator}
        assert not conn.exec_driver_sql(
            f"SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = '{migrator}'"
        ).scalar_one()

    with db.connect() as conn:
        conn.exec_driver_sql(f"ALTER ROLE {migrator} CREATEDB")
    as_migrator.cli("tenants", "create", "t_d", check=True)

    assert_app_role_has_dml_but_no_ddl(db_url, app, ["core.invoice", "core.account"])
    for tenant in ("t_a", "t_b", "t_c", "t_d"):
        assert_app_role_has_dml_but_no_ddl(db_url, app, [f"{tenant}.tag", f"{tenant}.note"])


def assert_app_role_has_dml_but_no_ddl(db_url: str, app: str, tables: list[str]) -> None:
    engine = database.create_engine(url_for(db_url, app))
    try:
        with engine.connect() as conn:
            for table in tables:
                column = "label" if table.endswith(".tag") else None
                if table.endswith(".invoice"):
                    conn.exec_driver_sql(f"INSERT INTO {table} (total) VALUES (3)")
                elif column:
                    conn.exec_driver_sql(f"INSERT INTO {table} (label) VALUES ('x')")
                elif table.endswith(".note"):
                    conn.exec_driver_sql(f"INSERT INTO {table} (body) VALUES ('app')")
                else:
                    conn.exec_driver_sql(f"INSERT INTO {table} (email) VALUES ('app@x')")
                assert conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one() >= 1
                conn.commit()
                schema = table.split(".")[0]
                for ddl in (
                    f"CREATE TABLE {schema}.intruder (id int)",
                    f"ALTER TABLE {table} ADD COLUMN extra int",
                    f"DROP TABLE {table}",
                    f"DELETE FROM {table}",  # not granted: only SELECT, INSERT
                ):
                    with pytest.raises(sa.exc.ProgrammingError, match="permission denied|must be"):
                        conn.exec_driver_sql(ddl)
                    conn.rollback()
    finally:
        engine.dispose()


def test_grants_privileges_outside_the_allow_list_are_refused_in_one_line(
    project_dir: ProjectDir,
) -> None:
    for grants, needle in (
        ('{ app = ["SELECT; DROP TABLE x"] }', "unknown privilege 'SELECT; DROP TABLE X'"),
        ('{ app = ["ALL"] }', "unknown privilege 'ALL'"),
        ("{ app = [] }", "non-empty list of privileges"),
        ('["pg_app"]', "pg_"),
        ("3", "'grants' must be list or dict"),
    ):
        project_dir.write(
            "pyproject.toml", CONFIG.format(core_grants=f"grants = {grants}", tenant_grants="")
        )
        proc = project_dir.cli("upgrade")
        assert proc.returncode == 2, proc.stderr
        (line,) = proc.stderr.strip().splitlines()
        assert needle in line, line


def test_grants_sql_quotes_roles_and_uses_only_allowed_privileges(
    project_dir: ProjectDir,
) -> None:
    project_dir.write(
        "pyproject.toml",
        CONFIG.format(core_grants='grants = { "App \\"Role\\"" = ["select"] }', tenant_grants=""),
    )
    project = load_project()
    sql = schema_tx.create_schema_sql("core", None, project.stream("core").grants)
    assert sql.split(";\n") == [
        'CREATE SCHEMA IF NOT EXISTS "core"',
        'GRANT USAGE ON SCHEMA "core" TO "App ""Role"""',
        'GRANT SELECT ON ALL TABLES IN SCHEMA "core" TO "App ""Role"""',
        'GRANT SELECT ON ALL SEQUENCES IN SCHEMA "core" TO "App ""Role"""',
        'ALTER DEFAULT PRIVILEGES FOR ROLE CURRENT_USER IN SCHEMA "core" GRANT SELECT '
        'ON TABLES TO "App ""Role"""',
        'ALTER DEFAULT PRIVILEGES FOR ROLE CURRENT_USER IN SCHEMA "core" GRANT SELECT '
        'ON SEQUENCES TO "App ""Role"""',
    ]
    # A plain list of roles gets the DML privileges, and sequence USAGE for nextval().
    project_dir.write(
        "pyproject.toml", CONFIG.format(core_grants='grants = ["app_user"]', tenant_grants="")
    )
    (listed,) = load_project().stream("core").grants
    assert listed == ("app_user", ("SELECT", "INSERT", "UPDATE", "DELETE"))
    assert 'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA "t" TO "app_user"' in (
        schema_tx.grants_sql("t", (listed,))
    )
    # No grants configured: the schema statement alone, as before.
    assert schema_tx.create_schema_sql("core") == 'CREATE SCHEMA IF NOT EXISTS "core"'
