"""Errors a user can cause: one clear line on stderr, no traceback (unless --verbose), exit 2
for usage/configuration and 1 for runtime failures."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

import alembic_schemas
from alembic_schemas import database, identifiers
from alembic_schemas.errors import ConfigError, DatabaseError, RevisionError

from helpers import TEST_URL_ENV, ProjectDir, closed_port, embedded_server, one_error_line, wait_for

PREFIX = "alembic-schemas: error: "

CONFIG = """
[tool.alembic-schemas]
script_location = "migrations"

[tool.alembic-schemas.streams.core]
schema = "core"
metadata = "err_models:metadata"
"""

MODELS = """
import sqlalchemy as sa

metadata = sa.MetaData(schema="core")
account = sa.Table(
    "account", metadata, sa.Column("id", sa.Integer, primary_key=True)
)
"""


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ProjectDir:
    """A project whose database URL points at a closed port: nothing can reach a server, so a
    config error that still shows up as such was found before any connection or SQL."""
    url = f"postgresql+psycopg://nobody@127.0.0.1:{closed_port()}/nowhere"
    monkeypatch.setenv("ALEMBIC_SCHEMAS_URL", url)
    monkeypatch.chdir(tmp_path)
    project = ProjectDir(tmp_path, url)
    project.write("pyproject.toml", CONFIG)
    project.write("err_models.py", MODELS)
    alembic_schemas.init(tmp_path)
    return project


@pytest.fixture
def project(project_dir: ProjectDir) -> ProjectDir:
    """One stream ``core`` with an applied first revision ``r1`` on the test database."""
    project_dir.write("pyproject.toml", CONFIG)
    project_dir.write("err_models.py", MODELS)
    alembic_schemas.init(project_dir.root)
    alembic_schemas.revision(
        "core", "first", autogenerate=True, rev_id="r1", config=project_dir.root
    )
    alembic_schemas.upgrade(config=project_dir.root)
    return project_dir


def _add_revision(project: ProjectDir, rev_id: str, upgrade_body: str) -> Path:
    (script,) = alembic_schemas.revision("core", rev_id, rev_id=rev_id, config=project.root)
    path = Path(script.path)
    text = path.read_text()
    head, tail = text.split("def upgrade() -> None:\n    pass", 1)
    path.write_text(f"{head}def upgrade() -> None:\n    {upgrade_body}{tail}")
    return path


# --- configuration ----------------------------------------------------------------------


def test_no_config_found(tmp_path: Path) -> None:
    proc = ProjectDir(tmp_path, "postgresql+psycopg://x@127.0.0.1:1/x").cli("current")
    message = one_error_line(proc, 2)
    assert message.startswith(f"no alembic-schemas configuration found in {tmp_path}")
    assert "alembic-schemas init" in message


def test_config_file_named_with_c_does_not_exist(offline: ProjectDir) -> None:
    message = one_error_line(offline.cli("-c", "missing.toml", "current"), 2)
    assert message == "config file not found: missing.toml"


CONFIG_MISTAKES = {
    "malformed TOML": (
        CONFIG + "depends_on = [\n",
        "pyproject.toml: malformed TOML: ",
    ),
    "unknown top-level key": (
        CONFIG.replace('script_location = "migrations"', "script_locaton = 'migrations'"),
        "pyproject.toml: unknown key 'script_locaton' (allowed: ",
    ),
    "unknown stream key": (
        CONFIG + 'shema = "core"\n',
        "pyproject.toml: stream 'core': unknown key 'shema' (allowed: ",
    ),
    "wrong value type": (
        CONFIG.replace('script_location = "migrations"', 'lock_retries = "3"'),
        "pyproject.toml: 'lock_retries' must be int, not str",
    ),
    "wrong value type in a stream": (
        CONFIG + 'depends_on = "core"\n',
        "pyproject.toml: stream 'core': 'depends_on' must be list, not str",
    ),
    "bad duration": (
        CONFIG.replace('script_location = "migrations"', 'lock_timeout = "soon"'),
        "pyproject.toml: lock_timeout 'soon' is not a duration",
    ),
    "depends on an unknown stream": (
        CONFIG + 'depends_on = ["shared"]\n',
        "pyproject.toml: stream 'core' depends on unknown stream 'shared'",
    ),
}


@pytest.mark.parametrize("case", list(CONFIG_MISTAKES))
def test_config_mistakes_are_usage_errors(offline: ProjectDir, case: str) -> None:
    text, expected = CONFIG_MISTAKES[case]
    (offline.root / "pyproject.toml").write_text(text)
    message = one_error_line(offline.cli("upgrade"), 2)
    assert expected in message
    assert str(offline.root / "pyproject.toml") in message, "the message names the file"


BAD_SCHEMA_NAMES = {
    "pg_x": "the pg_ prefix is reserved",
    "PG_Catalog2": "the pg_ prefix is reserved",
    "a" * 64: "64 bytes, PostgreSQL allows at most 63",
    "é" * 32: "64 bytes, PostgreSQL allows at most 63",
    "": "empty",
    "nul\\u0000byte": "contains a NUL character",
    "information_schema": "reserved for PostgreSQL or alembic-schemas",
    "alembic_schemas": "reserved for PostgreSQL or alembic-schemas",
    "alembic_schemas_x": "reserved for PostgreSQL or alembic-schemas",
}


@pytest.mark.parametrize("name", list(BAD_SCHEMA_NAMES), ids=lambda n: repr(n)[:20])
def test_bad_schema_name_is_refused_before_any_sql(offline: ProjectDir, name: str) -> None:
    (offline.root / "pyproject.toml").write_text(
        CONFIG.replace('schema = "core"', f'schema = "{name}"')
    )
    for args in (("upgrade",), ("upgrade", "--sql")):
        proc = offline.cli(*args)
        message = one_error_line(proc, 2)  # 2, not a connection error: nothing reached the server
        assert message.startswith(f"{offline.root / 'pyproject.toml'}: stream 'core': ")
        assert "invalid schema name" in message
        assert BAD_SCHEMA_NAMES[name] in message
        assert "CREATE" not in proc.stdout


def test_bad_owner_role_and_add_stream_schema_are_refused(offline: ProjectDir) -> None:
    config = offline.root / "pyproject.toml"
    config.write_text(CONFIG + 'owner = "pg_signal_backend"\n')
    message = one_error_line(offline.cli("upgrade", "--sql"), 2)
    assert "stream 'core': invalid owner role 'pg_signal_backend'" in message

    config.write_text(CONFIG)
    message = one_error_line(
        offline.cli("add-stream", "x", "--schema", "pg_x", "--metadata", "m:a"), 2
    )
    assert "stream 'x': invalid schema name 'pg_x'" in message
    assert config.read_text() == CONFIG, "a refused stream leaves the config alone"


BROKEN_METADATA = {
    "missing module": (
        "err_nothere:metadata",
        "metadata of stream 'core' 'err_nothere:metadata' could not be imported: "
        "ModuleNotFoundError: No module named 'err_nothere'",
    ),
    "missing attribute": (
        "err_models:meta",
        "metadata of stream 'core' 'err_models:meta': err_models has no attribute 'meta'",
    ),
    "syntax error": (
        "err_broken:metadata",
        "metadata of stream 'core' 'err_broken:metadata' could not be imported: SyntaxError: ",
    ),
    "import raises": (
        "err_raises:metadata",
        "metadata of stream 'core' 'err_raises:metadata' could not be imported: "
        "RuntimeError: models need APP_SECRET",
    ),
    "not a MetaData": (
        "err_models:account",
        "metadata of stream 'core' (err_models:account) is a Table, not a sqlalchemy MetaData",
    ),
    "no colon": (
        "err_models.metadata",
        "metadata of stream 'core' 'err_models.metadata' must look like 'package.module:attribute'",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN_METADATA))
def test_metadata_that_does_not_import_is_one_line_while_alembic_loads_env_py(
    project: ProjectDir, case: str
) -> None:
    path, expected = BROKEN_METADATA[case]
    project.write("err_broken.py", "metadata = (\n")
    project.write("err_raises.py", "raise RuntimeError('models need APP_SECRET')\n")
    config = project.root / "pyproject.toml"
    config.write_text(config.read_text().replace("err_models:metadata", path))
    # upgrade resolves the metadata inside env.py, while Alembic runs it.
    assert expected in one_error_line(project.cli("upgrade"), 2)


def test_metadata_that_does_not_import_offline_and_in_autogenerate(project: ProjectDir) -> None:
    config = project.root / "pyproject.toml"
    config.write_text(config.read_text().replace("err_models:metadata", "err_nothere:metadata"))
    expected = "metadata of stream 'core' 'err_nothere:metadata' could not be imported"
    for args in (("upgrade", "--sql"), ("revision", "-s", "core", "--autogenerate")):
        assert expected in one_error_line(project.cli(*args), 2), args
    assert len(project.versions("core")) == 1, "no revision file was written"


# Each usage row of README's "User errors" table, word for word ({config} is the config file).
DOCUMENTED_USAGE_ERRORS = {
    "unknown key": (
        CONFIG.replace('script_location = "migrations"', "script_locaton = 'migrations'"),
        ("upgrade",),
        "{config}: unknown key 'script_locaton' (allowed: direct_url, jobs, lock_retries, lock_timeout, "
        "script_location, statement_timeout, streams, url, version_table)",
    ),
    "unknown stream key": (
        CONFIG + 'shema = "core"\n',
        ("upgrade",),
        "{config}: stream 'core': unknown key 'shema' (allowed: baseline, baseline_metadata, "
        "commit_before_autocommit_block, depends_on, grants, metadata, owner, reference_tables, "
        "register, schema, tenants, version_table)",
    ),
    "reference_tables on a tenant stream": (
        CONFIG
        + '[tool.alembic-schemas.streams.t]\ntenants = "like:t_%"\nreference_tables = true\n',
        ("upgrade",),
        "{config}: stream 't': reference_tables applies to streams with a 'schema' only",
    ),
    "bad reference table name": (
        CONFIG + 'reference_tables = ["plan", ""]\n',
        ("upgrade",),
        "{config}: stream 'core': invalid reference table name: empty",
    ),
    "malformed TOML": (
        CONFIG + "depends_on = [\n",
        ("upgrade",),
        "{config}: malformed TOML: Invalid value (at end of document)",
    ),
    "wrong value type": (
        CONFIG.replace('script_location = "migrations"', 'lock_retries = "3"'),
        ("upgrade",),
        "{config}: 'lock_retries' must be int, not str",
    ),
    "bad duration": (
        CONFIG.replace('script_location = "migrations"', 'lock_timeout = "soon"'),
        ("upgrade",),
        "{config}: lock_timeout 'soon' is not a duration like '5s', '500ms' or '0'",
    ),
    "unknown dependency": (
        CONFIG + 'depends_on = ["shared"]\n',
        ("upgrade",),
        "{config}: stream 'core' depends on unknown stream 'shared'",
    ),
    "bad schema name": (
        CONFIG.replace('schema = "core"', 'schema = "pg_x"'),
        ("upgrade",),
        "{config}: stream 'core': invalid schema name 'pg_x': the pg_ prefix is reserved",
    ),
    "bad owner role": (
        CONFIG + 'owner = "pg_signal_backend"\n',
        ("upgrade",),
        "{config}: stream 'core': invalid owner role 'pg_signal_backend': "
        "the pg_ prefix is reserved",
    ),
    "depends_on cycle": (
        CONFIG
        + 'depends_on = ["other"]\n\n[tool.alembic-schemas.streams.other]\nschema = "other"\n'
        + 'depends_on = ["core"]\n',
        ("upgrade",),
        "{config}: depends_on cycle: core -> other -> core",
    ),
    "bad command-line usage": (
        CONFIG,
        ("downgrade", "-s", "core"),
        "Missing argument 'REVISION'. (see 'alembic-schemas downgrade --help')",
    ),
    "--shard malformed": (
        CONFIG,
        ("upgrade", "--shard", "4/3"),
        "--shard '4/3' must be K/N with 1 <= K <= N, e.g. 1/4",
    ),
}


@pytest.mark.parametrize("case", list(DOCUMENTED_USAGE_ERRORS))
def test_documented_usage_errors_print_exactly_their_line(offline: ProjectDir, case: str) -> None:
    text, args, expected = DOCUMENTED_USAGE_ERRORS[case]
    config = offline.root / "pyproject.toml"
    config.write_text(text)
    assert one_error_line(offline.cli(*args), 2) == expected.format(config=config)


def test_no_config_prints_exactly_the_documented_line(tmp_path: Path) -> None:
    proc = ProjectDir(tmp_path, f"postgresql+psycopg://x@127.0.0.1:{closed_port()}/x").cli(
        "upgrade"
    )
    assert one_error_line(proc, 2) == (
        f"no alembic-schemas configuration found in {tmp_path} or its parents (add "
        "[tool.alembic-schemas] to pyproject.toml, or run 'alembic-schemas init')"
    )


# --- streams and revisions ----------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("upgrade", "-s", "nope"),
        ("upgrade", "--sql", "-s", "nope"),
        ("downgrade", "-s", "nope", "base"),
        ("revision", "-s", "nope", "-m", "x"),
        ("current", "-s", "nope"),
        ("history", "-s", "nope"),
        ("show", "-s", "nope", "head"),
        ("stamp", "-s", "nope", "head"),
        ("check", "-s", "nope"),
        ("status", "-s", "core", "-s", "nope"),
    ],
    ids=lambda a: " ".join(a),
)
def test_unknown_stream_is_a_usage_error_before_connecting(
    offline: ProjectDir, args: tuple[str, ...]
) -> None:
    message = one_error_line(offline.cli(*args), 2)
    assert message == "unknown stream 'nope' (configured: core)"


def test_unknown_revision_is_a_usage_error_naming_the_stream(project: ProjectDir) -> None:
    assert one_error_line(project.cli("upgrade", "nope"), 2) == (
        "core: Can't locate revision identified by 'nope'"
    )
    assert one_error_line(project.cli("downgrade", "-s", "core", "nope"), 2) == (
        "core: Can't locate revision identified by 'nope'"
    )
    assert "Can't locate revision identified by 'nope'" in one_error_line(
        project.cli("show", "-s", "core", "nope"), 2
    )
    assert "Can't locate revision identified by 'nope'" in one_error_line(
        project.cli("history", "-s", "core", "-r", "nope:"), 2
    )
    assert "Relative revision -5 didn't produce 5 migrations" in one_error_line(
        project.cli("downgrade", "-s", "core", "-5"), 2
    )


def test_multiple_heads_name_the_stream(project: ProjectDir) -> None:
    alembic_schemas.revision("core", "side", head="base", rev_id="side", config=project.root)
    message = one_error_line(project.cli("upgrade"), 2)
    assert message.startswith("core: Multiple head revisions are present")


def test_autogenerate_behind_head_says_to_upgrade_first(project: ProjectDir) -> None:
    alembic_schemas.revision("core", "second", rev_id="r2", config=project.root)
    message = one_error_line(project.cli("revision", "-s", "core", "--autogenerate"), 1)
    assert message == (
        "stream 'core': the database is not at head; run 'alembic-schemas upgrade -s core' "
        "before autogenerating"
    )


# --- the database -------------------------------------------------------------------------


def test_unreachable_database_on_a_closed_port(offline: ProjectDir) -> None:
    where = make_url(offline.url).render_as_string(hide_password=True)
    for args in (
        ("upgrade",),
        ("current",),
        ("status",),
        ("check",),
        ("stamp", "head"),
        ("revision", "-s", "core", "--autogenerate"),
    ):
        message = one_error_line(offline.cli(*args, app=None), 1)  # the URL as given
        assert message.startswith(f"cannot connect to {where}: "), (args, message)
        assert "Connection refused" in message


def test_unreachable_database_on_a_missing_socket_folder(offline: ProjectDir) -> None:
    url = "postgresql+psycopg://nobody@/nowhere?host=/nonexistent/socket/dir"
    message = one_error_line(ProjectDir(offline.root, url).cli("current"), 1)
    assert message.startswith("cannot connect to ")
    assert '"/nonexistent/socket/dir/.s.PGSQL.' in message
    assert "No such file or directory" in message


def test_role_or_database_that_does_not_exist(project: ProjectDir) -> None:
    url = make_url(project.url)
    no_role = url.set(username="nobody_" + uuid.uuid4().hex[:6])
    message = one_error_line(
        ProjectDir(project.root, no_role.render_as_string(False)).cli("current"), 1
    )
    assert message.startswith("cannot connect to ")
    assert f'role "{no_role.username}" does not exist' in message

    no_db = url.set(database="nodb_" + uuid.uuid4().hex[:6])
    message = one_error_line(
        ProjectDir(project.root, no_db.render_as_string(False)).cli("upgrade"), 1
    )
    assert f'database "{no_db.database}" does not exist' in message


def _wrong_password_url(url: str, role: str) -> str:
    return make_url(url).set(username=role, password="wrong").render_as_string(False)


def _refuses_wrong_password(url: str) -> bool:
    engine = database.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect():
            return False
    except sa.exc.OperationalError:
        return True
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def password_server() -> Iterator[tuple[str, str]]:
    """(url, role) on a server of our own that checks passwords for ``role``.

    The session's embedded server trusts its Unix socket, so it cannot show this; here the
    role gets a scram-sha-256 line of its own in pg_hba.conf."""
    # Like conftest's server: a folder under /tmp the server's system user can reach
    # (pytest's own tmp folders are private to the user running pytest).
    role = "pw_user"
    with embedded_server() as url:
        engine = database.create_engine(url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN PASSWORD 'right'")
            hba = Path(conn.exec_driver_sql("SHOW hba_file").scalar_one())
            hba.write_text(f"local all {role} scram-sha-256\n" + hba.read_text())
            conn.exec_driver_sql("SELECT pg_reload_conf()")
        engine.dispose()
        bad = _wrong_password_url(url, role)
        wait_for("the pg_hba.conf reload", partial(_refuses_wrong_password, bad))  # asynchronous
        yield url, role


def test_bad_password(offline: ProjectDir, password_server: tuple[str, str]) -> None:
    url, role = password_server
    bad = _wrong_password_url(url, role)
    message = one_error_line(ProjectDir(offline.root, bad).cli("upgrade"), 1)
    assert message.startswith("cannot connect to ")
    assert f'password authentication failed for user "{role}"' in message
    assert "wrong" not in message, "the password is not shown"


def test_bad_password_on_the_test_server(
    project: ProjectDir, admin_engine: sa.Engine, server_url: str
) -> None:
    """Also on $ALEMBIC_SCHEMAS_TEST_URL's server, when it checks passwords (CI's system
    PostgreSQL over TCP may; the embedded one trusts its socket)."""
    role = "pw_" + uuid.uuid4().hex[:8]
    quoted = identifiers.quote(role, "role name")
    with admin_engine.connect() as conn:
        conn.exec_driver_sql(f"CREATE ROLE {quoted} LOGIN PASSWORD 'right'")
    try:
        bad = _wrong_password_url(project.url, role)
        if not _refuses_wrong_password(bad):
            pytest.skip(
                f"the test server ({'$' + TEST_URL_ENV if os.environ.get(TEST_URL_ENV) else 'embedded'}) "
                "does not check passwords on this connection; test_bad_password covers it"
            )
        message = one_error_line(ProjectDir(project.root, bad).cli("current"), 1)
        assert f'password authentication failed for user "{role}"' in message
    finally:
        with admin_engine.connect() as conn:
            conn.exec_driver_sql(f"DROP ROLE {quoted}")


# --- failures while migrating -----------------------------------------------------------------


def test_sql_error_in_a_migration_names_the_stream(project: ProjectDir, db: sa.Engine) -> None:
    _add_revision(project, "r2", 'op.execute("SELECT * FROM no_such_table")')
    message = one_error_line(project.cli("upgrade"), 1)
    assert message.startswith("core")
    assert message.endswith(': relation "no_such_table" does not exist')
    with db.connect() as conn:
        assert conn.scalar(sa.text("SELECT version_num FROM core.alembic_version")) == "r1"


def test_connection_lost_during_a_migration(project: ProjectDir) -> None:
    # The server ends our own session in the middle of the revision: OperationalError.
    _add_revision(project, "r2", 'op.execute("SELECT pg_terminate_backend(pg_backend_pid())")')
    message = one_error_line(project.cli("upgrade"), 1)
    assert message.startswith("core: ")
    assert "terminating connection due to administrator command" in message


def test_python_error_in_a_migration_names_its_file(project: ProjectDir) -> None:
    path = _add_revision(project, "r2", "undefined_helper()")
    message = one_error_line(project.cli("upgrade"), 1)
    # the stream first, as for every failed migration; then the revision, its file and line
    assert message == (
        f"core: revision r2 ({path}:22): NameError: name 'undefined_helper' is not defined"
        " (--verbose shows the traceback)"
    )


def test_error_raised_in_env_py_names_env_py(project: ProjectDir) -> None:
    env_py = project.root / "migrations" / "core" / "env.py"
    env_py.write_text("raise RuntimeError('env.py is broken')\n")
    for args in (("upgrade",), ("revision", "-s", "core", "--autogenerate")):
        message = one_error_line(project.cli(*args), 1).removeprefix("core: ")
        assert message.startswith("RuntimeError: env.py is broken (at ")
        assert f"{env_py}:1;" in message


def test_syntax_error_in_a_revision_file(project: ProjectDir) -> None:
    project.write("migrations/core/versions/broken.py", "revision = (\n")
    for args in (("upgrade",), ("history",)):
        message = one_error_line(project.cli(*args), 1).removeprefix("core: ")
        assert message.startswith("SyntaxError: ")
        assert "broken.py" in message


def test_database_error_while_comparing_models(project: ProjectDir) -> None:
    # Alembic compares server defaults by running SQL: a default calling a missing function
    # fails inside autogenerate, not at connect time.
    models = project.root / "err_models.py"
    models.write_text(
        models.read_text().replace(
            'sa.Column("id", sa.Integer, primary_key=True)',
            'sa.Column("id", sa.Integer, primary_key=True), '
            'sa.Column("n", sa.Integer, server_default=sa.text("0"))',
        )
    )
    # Through the CLI: this process imported the models before they changed.
    project.cli("revision", "-s", "core", "--autogenerate", "--rev-id", "r2", check=True)
    project.cli("upgrade", check=True)
    models.write_text(models.read_text().replace('sa.text("0")', 'sa.text("no_such_fn()")'))
    for args in (("check",), ("status",), ("revision", "-s", "core", "--autogenerate")):
        message = one_error_line(project.cli(*args), 1)
        assert "function no_such_fn() does not exist" in message


def test_check_names_each_difference_on_stdout_and_fails_in_one_line(
    project: ProjectDir, db: sa.Engine
) -> None:
    with db.connect() as conn:
        conn.exec_driver_sql("ALTER TABLE core.account ADD COLUMN extra int")
    proc = project.cli("check")
    assert one_error_line(proc, 1) == "1 schema(s) differ from their models"
    assert proc.stdout.strip() == "core: remove column core.account.extra", proc.stdout
    with db.connect() as conn:  # check only reads
        assert conn.scalar(sa.text("SELECT version_num FROM core.alembic_version")) == "r1"
        assert conn.scalar(sa.text("SELECT count(*) FROM core.account")) == 0


def test_verbose_shows_the_traceback(offline: ProjectDir) -> None:
    proc = offline.cli("--verbose", "upgrade", "-s", "nope")
    assert proc.returncode == 2
    assert "Traceback (most recent call last)" in proc.stderr
    assert proc.stderr.rstrip().endswith(f"{PREFIX}unknown stream 'nope' (configured: core)")


# --- the Python API raises the same errors ----------------------------------------------------


def test_api_raises_typed_errors(project: ProjectDir, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(RevisionError, match="core: Can't locate revision identified by 'nope'"):
        alembic_schemas.upgrade("nope", config=project.root)
    with pytest.raises(ConfigError, match="unknown stream 'nope'"):
        alembic_schemas.current(streams=["nope"], config=project.root)
    monkeypatch.setenv("ALEMBIC_SCHEMAS_URL", f"postgresql://x@127.0.0.1:{closed_port()}/x")
    with pytest.raises(DatabaseError, match="cannot connect to"):
        alembic_schemas.current(config=project.root)
    assert RevisionError.exit_code == ConfigError.exit_code == 2
    assert DatabaseError.exit_code == 1
