"""Config validation (``alembic_schemas.config``) on small TOML files: every refusal names the
file, the stream and the key, and is a usage error (ConfigError, exit 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from alembic_schemas import config
from alembic_schemas.config import DEFAULT_PRIVILEGES, Project, load_project
from alembic_schemas.errors import ConfigError
from alembic_schemas.identifiers import InvalidIdentifier

CORE = '[streams.core]\nschema = "core"\n'


def _load(tmp_path: Path, text: str, name: str = config.OWN_FILE) -> Project:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return load_project(path)


def _refused(tmp_path: Path, text: str) -> str:
    """The message ConfigError gives for ``text``, with the config file's path cut off."""
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, text)
    assert caught.value.exit_code == 2
    message = str(caught.value)
    assert "\n" not in message
    prefix = f"{tmp_path / config.OWN_FILE}: "
    return message.removeprefix(prefix)


@pytest.fixture(autouse=True)
def _no_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(config.URL_ENV, raising=False)


# --- what a valid file gives -----------------------------------------------------------------


def test_defaults_fill_what_the_file_leaves_out(tmp_path: Path) -> None:
    project = _load(tmp_path, CORE)
    assert project.url is None
    assert project.script_location == (tmp_path / "migrations").resolve()
    assert (project.lock_timeout, project.statement_timeout, project.lock_retries) == ("5s", "0", 3)
    assert project.jobs is None
    core = project.stream("core")
    assert (core.schema, core.tenants, core.is_tenant) == ("core", None, False)
    assert (core.version_table, core.depends_on, core.grants, core.owner) == (
        "alembic_version",
        (),
        (),
        None,
    )


def test_pyproject_reads_only_its_tool_section(tmp_path: Path) -> None:
    text = '[project]\nname = "x"\n\n[tool.alembic-schemas]\njobs = 4\n\n'
    text += '[tool.alembic-schemas.streams.core]\nschema = "core"\n'
    project = _load(tmp_path, text, config.PYPROJECT)
    assert project.jobs == 4
    assert list(project.streams) == ["core"]


def test_the_url_environment_variable_wins_over_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _load(tmp_path, 'url = "postgresql://file/db"\n' + CORE).url == "postgresql://file/db"
    monkeypatch.setenv(config.URL_ENV, "postgresql://env/db")
    assert _load(tmp_path, 'url = "postgresql://file/db"\n' + CORE).url == "postgresql://env/db"


def test_find_config_walks_up_past_a_pyproject_without_the_section(tmp_path: Path) -> None:
    (tmp_path / config.OWN_FILE).write_text(CORE, encoding="utf-8")
    inner = tmp_path / "app" / "pkg"
    inner.mkdir(parents=True)
    (tmp_path / "app" / config.PYPROJECT).write_text('[project]\nname = "app"\n', encoding="utf-8")
    assert config.find_config(inner) == tmp_path / config.OWN_FILE
    assert load_project(inner).config_path == tmp_path / config.OWN_FILE


def test_no_config_anywhere_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no alembic-schemas configuration found in .* init'\)"):
        config.find_config(tmp_path)
    with pytest.raises(ConfigError, match="config file not found: "):
        load_project(tmp_path / "missing.toml")


def test_a_pyproject_named_directly_without_the_section_is_refused(tmp_path: Path) -> None:
    path = tmp_path / config.PYPROJECT
    path.write_text('[project]\nname = "x"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"pyproject.toml: no \[tool.alembic-schemas\] section$"):
        load_project(path)


def test_malformed_toml_and_a_section_that_is_not_a_table_are_refused(tmp_path: Path) -> None:
    assert _refused(tmp_path, "jobs = \n").startswith("malformed TOML: ")
    text = '[tool]\nalembic-schemas = "x"\n'
    assert _refused(tmp_path, text) == "[tool.alembic-schemas] must be a table"


# --- keys and types ------------------------------------------------------------------------


def test_an_unknown_top_level_key_is_refused_listing_the_allowed_ones(tmp_path: Path) -> None:
    message = _refused(tmp_path, 'urll = "x"\n')
    assert message.startswith("unknown key 'urll' (allowed: ")
    listed = message.removesuffix(")").partition("(allowed: ")[2].split(", ")
    assert listed == sorted(listed) and {"url", "streams", "lock_timeout", "jobs"} <= set(listed)


def test_an_unknown_stream_key_is_refused_naming_the_stream(tmp_path: Path) -> None:
    message = _refused(tmp_path, CORE + 'shema = "x"\n')
    assert message.startswith("stream 'core': unknown key 'shema' (allowed: ")
    listed = message.removesuffix(")").partition("(allowed: ")[2].split(", ")
    assert listed == sorted(listed) and {"schema", "tenants", "metadata"} <= set(listed)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('jobs = "2"\n', "'jobs' must be int, not str"),
        ("lock_retries = true\n", "'lock_retries' must be int, not bool"),
        ("lock_timeout = 5\n", "'lock_timeout' must be str, not int"),
        ("url = []\n", "'url' must be str, not list"),
        ("streams = 1\n", "'streams' must be dict, not int"),
        (CORE + 'depends_on = "a"\n', "stream 'core': 'depends_on' must be list, not str"),
        (CORE + 'grants = "app"\n', "stream 'core': 'grants' must be list or dict, not str"),
        (CORE + "version_table = 1\n", "stream 'core': 'version_table' must be str, not int"),
        (CORE + "depends_on = [1]\n", "stream 'core': depends_on must be a list of stream names"),
        ("streams.core = 1\n", "stream 'core': must be a table"),
    ],
    ids=lambda v: v.split("\n")[-2] if "\n" in v else None,
)
def test_a_value_of_the_wrong_type_is_refused_naming_key_and_types(
    tmp_path: Path, text: str, message: str
) -> None:
    assert _refused(tmp_path, text) == message


def test_a_stream_needs_exactly_one_of_schema_and_tenants(tmp_path: Path) -> None:
    both = CORE + 'tenants = "like:t_%"\n'
    assert _refused(tmp_path, both) == "stream 'core': set exactly one of 'schema' or 'tenants'"
    neither = '[streams.core]\nmetadata = "m:metadata"\n'
    assert _refused(tmp_path, neither) == "stream 'core': set exactly one of 'schema' or 'tenants'"


# --- durations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["0", "5s", "500ms", "1.5 min", "10", "2h", "1d", "250us", " 3s "]
)
def test_durations_postgresql_reads_are_accepted(tmp_path: Path, value: str) -> None:
    project = _load(tmp_path, f'lock_timeout = "{value}"\nstatement_timeout = "{value}"\n')
    assert project.lock_timeout == project.statement_timeout == value.strip()


@pytest.mark.parametrize("value", ["", "s", "-1s", "5 sec", "1e3", "5s; RESET ALL", "5s'", "5m"])
def test_other_durations_are_refused_with_an_example(tmp_path: Path, value: str) -> None:
    assert _refused(tmp_path, f'lock_timeout = "{value}"\n') == (
        f"lock_timeout {value!r} is not a duration like '5s', '500ms' or '0'"
    )
    assert _refused(tmp_path, f'statement_timeout = "{value}"\n').startswith(
        f"statement_timeout {value!r} is not a duration"
    )


# --- stream names, schema names, version tables ----------------------------------------------


@pytest.mark.parametrize("name", ["core", "Core_2", "billing.v2", "a-b", "_x", "9"])
def test_stream_names_of_letters_digits_and_separators_are_accepted(
    tmp_path: Path, name: str
) -> None:
    project = _load(tmp_path, f'[streams."{name}"]\nschema = "s"\n')
    assert list(project.streams) == [name]


@pytest.mark.parametrize("name", ["core\\n", "a b", "", "-a", ".a", "a/b", "é", "a;b"])
def test_other_stream_names_are_refused(tmp_path: Path, name: str) -> None:
    shown = repr(name.replace("\\n", "\n"))
    assert _refused(tmp_path, f'[streams."{name}"]\nschema = "s"\n') == (
        f"stream {shown}: stream names may use letters, digits, '_', '-', '.'"
    )


@pytest.mark.parametrize(
    ("schema", "reason"),
    [
        ("pg_x", "the pg_ prefix is reserved"),
        ("PG_catalog", "the pg_ prefix is reserved"),
        ("$user", "search_path reads it as the current role's name"),
        ("information_schema", "reserved for PostgreSQL or alembic-schemas"),
        ("alembic_schemas", "reserved for PostgreSQL or alembic-schemas"),
        ("alembic_schemas_x", "reserved for PostgreSQL or alembic-schemas"),
        ("a" * 64, "64 bytes, PostgreSQL allows at most 63"),
    ],
)
def test_unusable_schema_names_are_refused_with_the_reason(
    tmp_path: Path, schema: str, reason: str
) -> None:
    with pytest.raises(InvalidIdentifier) as caught:
        _load(tmp_path, f'[streams.core]\nschema = "{schema}"\n')
    assert str(caught.value) == (
        f"{tmp_path / config.OWN_FILE}: stream 'core': invalid schema name {schema!r}: {reason}"
    )


def test_schema_names_needing_quotes_are_kept_exactly(tmp_path: Path) -> None:
    project = _load(tmp_path, '[streams.core]\nschema = "Tenant A; --\\"x"\n')
    assert project.stream("core").schema == 'Tenant A; --"x'


def test_two_streams_on_one_schema_are_refused(tmp_path: Path) -> None:
    text = CORE + '[streams.other]\nschema = "core"\n'
    assert _refused(tmp_path, text) == "streams 'core' and 'other' both target schema 'core'"


def test_a_version_table_fits_with_its_pkc_suffix_in_63_bytes(tmp_path: Path) -> None:
    fits, over = "v" * 59, "v" * 60
    assert _load(tmp_path, f'version_table = "{fits}"\n' + CORE).stream("core").version_table == (
        fits
    )
    assert _refused(tmp_path, f'version_table = "{over}"\n' + CORE) == (
        f"stream 'core': invalid version table name {over!r}: 60 bytes, at most 59"
        " (its primary key is named '<name>_pkc')"
    )
    # Counted in bytes: 30 two-byte characters are 60 bytes.
    assert "60 bytes, at most 59" in _refused(tmp_path, CORE + f'version_table = "{"é" * 30}"\n')


def test_a_stream_version_table_overrides_the_project_default(tmp_path: Path) -> None:
    text = 'version_table = "versions"\n' + CORE + '[streams.t]\ntenants = "like:t_%"\n'
    text += 'version_table = "t_versions"\n'
    project = _load(tmp_path, text)
    assert project.stream("core").version_table == "versions"
    assert project.stream("t").version_table == "t_versions"


# --- depends_on ------------------------------------------------------------------------------


def _streams(*pairs: tuple[str, list[str]]) -> str:
    return "".join(
        f'[streams.{name}]\nschema = "s_{name}"\ndepends_on = {deps!r}\n'.replace("'", '"')
        for name, deps in pairs
    )


def test_streams_come_in_dependency_order_and_config_order_otherwise(tmp_path: Path) -> None:
    text = _streams(("app", ["auth", "billing"]), ("billing", ["auth"]), ("auth", []), ("logs", []))
    assert list(_load(tmp_path, text).streams) == ["auth", "billing", "app", "logs"]


def test_select_keeps_dependency_order_and_refuses_an_unknown_stream(tmp_path: Path) -> None:
    project = _load(tmp_path, _streams(("b", ["a"]), ("a", []), ("c", [])))
    assert [s.name for s in project.select(["c", "b", "a"])] == ["a", "b", "c"]
    assert [s.name for s in project.select(None)] == ["a", "b", "c"]
    with pytest.raises(ConfigError, match=r"^unknown stream 'x' \(configured: a, b, c\)$"):
        project.select(["x"])


def test_an_unknown_dependency_is_refused(tmp_path: Path) -> None:
    assert _refused(tmp_path, _streams(("a", ["nope"]))) == (
        "stream 'a' depends on unknown stream 'nope'"
    )


@pytest.mark.parametrize(
    ("pairs", "cycle"),
    [
        ((("a", ["a"]),), "a -> a"),
        ((("a", ["b"]), ("b", ["a"])), "a -> b -> a"),
        ((("x", ["a"]), ("a", ["b"]), ("b", ["c"]), ("c", ["a"])), "a -> b -> c -> a"),
    ],
)
def test_a_dependency_cycle_is_refused_naming_it(
    tmp_path: Path, pairs: tuple[tuple[str, list[str]], ...], cycle: str
) -> None:
    assert _refused(tmp_path, _streams(*pairs)) == f"depends_on cycle: {cycle}"


# --- owner and grants --------------------------------------------------------------------------


def test_grants_as_a_list_give_the_dml_privileges(tmp_path: Path) -> None:
    project = _load(tmp_path, CORE + 'grants = ["app", "Report Reader"]\n')
    assert project.stream("core").grants == (
        ("app", DEFAULT_PRIVILEGES),
        ("Report Reader", DEFAULT_PRIVILEGES),
    )


def test_grants_as_a_table_are_normalised_and_deduplicated(tmp_path: Path) -> None:
    text = CORE + 'grants = { app = ["select", " Insert ", "SELECT"], audit = ["TRUNCATE"] }\n'
    assert _load(tmp_path, text).stream("core").grants == (
        ("app", ("SELECT", "INSERT")),
        ("audit", ("TRUNCATE",)),
    )


@pytest.mark.parametrize(
    ("grants", "message"),
    [
        ('{ app = ["SELECT", "DROP"] }', "grants.app: unknown privilege 'DROP' (allowed: SELECT,"),
        ('{ app = ["ALL"] }', "grants.app: unknown privilege 'ALL'"),
        ("{ app = [] }", "grants.app must be a non-empty list of privileges"),
        ('{ app = "SELECT" }', "grants.app must be a non-empty list of privileges"),
        ("{ app = [1] }", "grants.app must be a non-empty list of privileges"),
        ("[1]", "grants must list role names, not int"),
    ],
)
def test_bad_grants_are_refused_naming_the_role(tmp_path: Path, grants: str, message: str) -> None:
    assert _refused(tmp_path, CORE + f"grants = {grants}\n").startswith(f"stream 'core': {message}")


@pytest.mark.parametrize(
    ("key", "role", "reason"),
    [
        ("owner", "public", "PostgreSQL reads it as a keyword, not a role, even quoted"),
        ("owner", "none", "PostgreSQL reads it as a keyword, not a role, even quoted"),
        ("owner", "pg_monitor", "the pg_ prefix is reserved"),
        ("grants", "public", "PostgreSQL reads it as a keyword, not a role, even quoted"),
        ("grants", "", "empty"),
    ],
)
def test_roles_postgresql_would_misread_are_refused(
    tmp_path: Path, key: str, role: str, reason: str
) -> None:
    value = f'"{role}"' if key == "owner" else f'["{role}"]'
    what = "owner role" if key == "owner" else "grant role"
    shown = f"invalid {what}: {reason}" if not role else f"invalid {what} {role!r}: {reason}"
    with pytest.raises(InvalidIdentifier) as caught:
        _load(tmp_path, CORE + f"{key} = {value}\n")
    assert str(caught.value).endswith(f"stream 'core': {shown}"), str(caught.value)


def test_the_table_privileges_allow_list_is_what_grants_accept(tmp_path: Path) -> None:
    every = ", ".join(f'"{p}"' for p in config.TABLE_PRIVILEGES)
    grants = _load(tmp_path, CORE + f"grants = {{ app = [{every}] }}\n").stream("core").grants
    assert grants == (("app", config.TABLE_PRIVILEGES),)
