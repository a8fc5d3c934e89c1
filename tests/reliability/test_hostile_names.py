"""Hostile names (issue 5, promise 7): every path that takes a schema, tenant or role name.

Generated names (hypothesis) go through the config file (``schema``, ``owner``, ``grants``
role names in both forms, ``version_table``), the command line (``--tenant`` on every verb that
takes it, ``upgrade/downgrade --sql --tenant``, ``tenants create/drop NAME``, ``add-stream
--schema/--owner``), the tenant sources (``query:``, ``like:``, ``callable:``, returning names
that exist as real schemas) and the Python API. Each name must be either

* refused before any SQL runs: a one-line error naming it (the CLI: exit 2 with one line
  ``alembic-schemas: error: ...``, with the URL pointing at a closed port so that a refusal
  made after connecting would show as a connection error instead), or
* accepted exactly as written and quoted, so that the SQL the tool emits parses (with
  PostgreSQL's own parser, pglast) to the very tree it gives for a plain placeholder name.

Names over 63 bytes, including pairs that share their first 63 bytes (which the server would
truncate into one), are refused. A sample of accepted names really runs in PostgreSQL and must
create exactly that schema and nothing else, and a batch of hostile tenants is migrated,
provisioned and dropped end to end, partly by real ``python -m alembic_schemas`` processes.

``ALEMBIC_SCHEMAS_HOSTILE_NAMES=N`` sets the total number of generated examples (default
2,000, so that the whole suite stays quick; CI and a release check may ask for 10,000 or more);
``-s`` prints the count per path.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import logging
import operator
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pglast
import pglast.keywords
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pglast.parser import parse_sql_json
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

import alembic_schemas
from alembic_schemas import cli, command, database, identifiers, sources, tenants
from alembic_schemas.config import load_project
from alembic_schemas.errors import AlembicSchemasError, DatabaseError
from alembic_schemas.runtime import schema as schema_tx
from alembic_schemas.streams import SCHEMA_KEY, Stream

from helpers import closed_port, scratch_connection, write_revision

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PREFIX = "alembic-schemas: error: "
TOTAL = int(os.environ.get("ALEMBIC_SCHEMAS_HOSTILE_NAMES") or 2_000)

# Share of the examples per path (sums to 100).
WEIGHTS = {
    "config keys": 18,
    "config -> upgrade --sql": 10,
    "cli --tenant": 24,
    "cli --sql --tenant": 12,
    "python api": 10,
    "cli add-stream": 6,
    "tenant sources": 12,
    "postgres: schema + roles": 5,
    "postgres: --sql script": 3,
}
QUOTA = {path: TOTAL * w // sum(WEIGHTS.values()) for path, w in WEIGHTS.items()}

NAMED = "core"  # the named stream's schema: never a tenant
TENANT_REFUSED = {"public", "information_schema", "alembic_schemas", NAMED}
TOOL_PREFIX = "alembic_schemas_"
RESERVED_ROLES = {"public", "none"}
MAX = 63
PLACEHOLDER = "hn_placeholder"
OWNER_PLACEHOLDER = "hn_owner_placeholder"
GRANTEE_PLACEHOLDER = "hn_grantee_placeholder"
VT_PLACEHOLDER = "hn_vt_placeholder"


# --- names ---------------------------------------------------------------------------------

TRICKY = "\"'\\;-/*$%:(){}[], .=\n\r\t\x0b\x0c\x00\x7f\x85\u2028\u200b\u0301éßİı日本\U0001f600_aZ09"
FRAGMENTS = [
    "--", "/*", "*/", ";", "'", '"', '""', "\\", "$$", "$a$", "$1", "%s", "%(n)s", "%%", ":n",
    "::", "\n", "\r\n", " ", "\t", "\x00", "é", "日", "\U0001f600", "U&", "E'", "e'",
    "DROP SCHEMA core CASCADE", "'); DROP TABLE x; --", '"; DROP SCHEMA public CASCADE; --',
    "pg_", "PG_", "Pg_", "$user", "public", "information_schema", "alembic_schemas",
    "alembic_schemas_", "core", "tenant", "a", "Z",
]  # fmt: skip
KEYWORDS = sorted(
    set(pglast.keywords.RESERVED_KEYWORDS)
    | set(pglast.keywords.TYPE_FUNC_NAME_KEYWORDS)
    | set(pglast.keywords.COL_NAME_KEYWORDS)
    | set(pglast.keywords.UNRESERVED_KEYWORDS)
)
SPECIAL = [
    "", " ", "public", "PUBLIC", "Public", "information_schema", "alembic_schemas",
    "alembic_schemas_x", "alembic_schemas_new_0", "alembic_schemas_scratch_0", "alembic_schema",
    NAMED, NAMED.upper(), NAMED + " ", " " + NAMED, "tenant", "$user", "$USER", "$user ",
    "pg_catalog", "pg_toast", "pg_temp_1", "PG_x", "Pg_", "pg_", "pg", "pgx", "none", "NONE",
    "current_user", "session_user", "current_role", "default", "user", "all", "lateral",
    "collation", "system_user", "concurrently", "tablesample", "t_ok", "100%s", "%(name)s",
    ":name", "a.b", '"', '""', "'", "\\", "Tenant A", "x;y",
]  # fmt: skip
UNITS = ["a", "Z", "_", " ", '"', "'", "é", "日", "\U0001f600", "\\", ";", "\n"]


@st.composite
def sized(draw: st.DrawFn, target: int | None = None) -> str:
    """A name of exactly ``target`` UTF-8 bytes (around the 63-byte limit), mixing 1- to
    4-byte characters so that byte length and character count differ."""
    size = target if target is not None else draw(st.sampled_from([1, 59, 60, 62, 63, 64, 65]))
    out, used = [], 0
    for unit in draw(st.lists(st.sampled_from(UNITS), max_size=70)):
        n = len(unit.encode())
        if used + n > size:
            break
        out.append(unit)
        used += n
    out.append("a" * (size - used))
    return "".join(out)


@st.composite
def sharing_63_bytes(draw: st.DrawFn) -> tuple[str, str]:
    """Two different names longer than 63 bytes with the same first 63: the server would
    truncate both into one schema."""
    base = draw(sized(MAX))
    first, second = draw(
        st.lists(st.text(alphabet=TRICKY.replace("\x00", ""), min_size=1, max_size=4),
                 min_size=2, max_size=2, unique=True)
    )  # fmt: skip
    return base + first, base + second


def _names(surrogates: bool) -> st.SearchStrategy[str]:
    options = [
        st.text(max_size=70),
        st.text(alphabet=TRICKY, max_size=70),
        st.lists(st.sampled_from(FRAGMENTS), max_size=8).map("".join),
        st.sampled_from(SPECIAL),
        st.sampled_from(KEYWORDS),
        st.builds(operator.add, st.sampled_from(SPECIAL), st.text(alphabet=TRICKY, max_size=3)),
        # Plain lower-case names plus a line end: a bare-identifier pattern using `$` passes
        # "t_a\n" (SQLAlchemy's did), and PostgreSQL then reads t_a.
        st.builds(
            operator.add,
            st.from_regex(r"[a-z_][a-z0-9_$]{0,12}", fullmatch=True),
            st.sampled_from(["\n", "\r", "\r\n", " "]),
        ),
        sized(),
        sharing_63_bytes().map(operator.itemgetter(0)),
    ]
    if surrogates:  # undecodable command-line bytes arrive as lone surrogates
        options.append(
            st.text(
                alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
                min_size=1,
                max_size=3,
            ).map(lambda s: "t_" + s)
        )
    return st.one_of(*options)


names = _names(surrogates=True)
file_names = _names(surrogates=False)  # a TOML file (UTF-8) cannot hold a lone surrogate


def _accepted(name: str) -> str:
    """A name the tool must accept, made from any generated one (for runs in PostgreSQL)."""
    name = name.replace("\x00", "").encode("utf-8", "ignore").decode()
    name = name.encode()[:MAX].decode("utf-8", "ignore")
    if name.lower().startswith("pg_"):
        name = "x" + name[1:]
    if name in ("", "$user") or name in TENANT_REFUSED or name.startswith(TOOL_PREFIX):
        name = "t" + name
    return name.encode()[:MAX].decode("utf-8", "ignore")


accepted_names = file_names.map(_accepted)
sql_names = file_names.map(lambda n: _accepted(n.replace("\t", " ")))  # --sql refuses tabs


# --- the rules, written out independently of the code under test ----------------------------


def identifier_problem(name: object) -> str | None:
    """What a refusal of ``name`` as any identifier must mention, or None when valid."""
    if not isinstance(name, str):
        return "must be a string"
    if name == "":
        return "empty"
    if "\x00" in name:
        return "NUL"
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return "UTF-8"
    if size > MAX:
        return f"{size} bytes"
    if name.lower().startswith("pg_"):
        return "pg_ prefix"
    if name == "$user":
        return "current role"
    return None


def schema_problem(name: object) -> str | None:
    """A named stream's schema: not information_schema nor one of the tool's own."""
    problem = identifier_problem(name)
    if problem is None and (
        name in ("information_schema", "alembic_schemas") or str(name).startswith(TOOL_PREFIX)
    ):
        return "reserved"
    return problem


def tenant_problem(name: object) -> str | None:
    problem = identifier_problem(name)
    if problem is None:
        assert isinstance(name, str)
        if name in TENANT_REFUSED or name.startswith(TOOL_PREFIX):
            return ""  # wording depends on the verb; the name must still be in it
    return problem


def role_problem(name: object) -> str | None:
    problem = identifier_problem(name)
    if problem is None and name in RESERVED_ROLES:
        return "keyword"
    return problem


def version_table_problem(name: object) -> str | None:
    problem = identifier_problem(name)
    if problem is None and isinstance(name, str) and len(name.encode()) > MAX - len("_pkc"):
        return "_pkc"
    return problem


def offline_problem(problem: str | None, name: str) -> str | None:
    """``--sql`` also refuses a tab: Alembic's offline output turns it into spaces."""
    return problem if problem is not None or "\t" not in name else "tabs"


def names_it(message: str, name: object, problem: str) -> bool:
    """The message is one line, names the name (repr) and says why."""
    named = repr(name) in message or (name == "" and "empty" in message)
    return len(message.splitlines()) == 1 and named and problem in message


# --- PostgreSQL's parser: the structure of emitted SQL ----------------------------------------

_POSITIONS = {"location", "stmt_location", "stmt_len"}


def tree(sql: str) -> Any:
    """The statements' parse trees, without source positions (which move with the name)."""

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k not in _POSITIONS}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    return strip(json.loads(parse_sql_json(sql)).get("stmts", []))


def substitute(node: Any, mapping: dict[str, str]) -> Any:
    if isinstance(node, str):
        return mapping.get(node, node)
    if isinstance(node, dict):
        return {k: substitute(v, mapping) for k, v in node.items()}
    if isinstance(node, list):
        return [substitute(v, mapping) for v in node]
    return node


def assert_same_structure(hostile_sql: str, placeholder_sql: str, mapping: dict[str, str]) -> None:
    """``hostile_sql`` parses to ``placeholder_sql``'s tree with each placeholder string node
    replaced by the hostile name: the name stayed one name, wherever it went."""
    expected = substitute(tree(placeholder_sql), mapping)
    assert tree(hostile_sql) == expected, (hostile_sql, mapping)


# --- running the CLI in-process ------------------------------------------------------------


NOWHERE = f"postgresql+psycopg://nobody@127.0.0.1:{closed_port()}/nowhere"


@dataclass
class Outcome:
    code: int
    out: str
    err: str


def run_cli(args: Sequence[str], url: str = NOWHERE) -> Outcome:
    """``alembic_schemas.cli.main`` (the real entry point: exit codes and error lines), with
    output captured by click's runner. The CLI points the package logger at this call's
    stderr; it is put back afterwards."""
    log = logging.getLogger("alembic_schemas")
    saved = (list(log.handlers), log.level, log.propagate)
    sigpipe = signal.getsignal(signal.SIGPIPE)  # main() resets it for `| head`
    code: Any = 0
    try:
        with CliRunner().isolation(env={"ALEMBIC_SCHEMAS_URL": url}) as (out, err, _):
            try:
                cli.main(list(args))
            except SystemExit as exc:
                code = exc.code
            return Outcome(
                int(code or 0),
                out.getvalue().decode("utf-8", "replace"),
                err.getvalue().decode("utf-8", "replace"),
            )
    finally:
        log.handlers[:], log.level, log.propagate = saved
        signal.signal(signal.SIGPIPE, sigpipe)


def assert_refused(outcome: Outcome, name: object, problem: str) -> None:
    """Exit 2, nothing on stdout (no SQL), one error line naming the name."""
    assert outcome.code == 2, (name, outcome)
    assert outcome.out == "", (name, outcome)
    assert outcome.err.startswith(PREFIX) and outcome.err.endswith("\n"), outcome
    assert names_it(outcome.err[len(PREFIX) : -1], name, problem), (name, outcome.err)


def assert_reached_the_database(outcome: Outcome, name: object) -> None:
    """Accepted: the run went on to connect (exit 1, the closed port's one line)."""
    assert outcome.code == 1, (name, outcome)
    assert outcome.err.startswith(PREFIX + "cannot connect to "), (name, outcome)
    assert len(outcome.err.splitlines()) == 1, outcome


def report(path: str, counts: Counter[str]) -> None:
    """Print the path's figures; the examples run must reach its share of the total."""
    examples = counts["examples"] or counts["refused"] + counts["accepted"]
    print(
        f"\nhostile names: {path}: {examples} examples, "
        f"{counts['refused']} names refused, {counts['accepted']} accepted"
    )
    assert examples >= QUOTA[path], (path, examples, QUOTA[path])


def _settings(path: str) -> Callable[[Any], Any]:
    return settings(
        max_examples=QUOTA[path],
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# --- projects --------------------------------------------------------------------------------

TENANT_REVISIONS = [
    (
        "r1",
        None,
        'op.create_table("item", sa.Column("id", sa.Integer, primary_key=True),'
        ' sa.Column("name", sa.Text))\nop.create_index("item_name", "item", ["name"])',
        'op.drop_table("item")',
    ),
    ("r2", "r1", 'op.add_column("item", sa.Column("note", sa.Text))', 'op.drop_column("item", "note")'),
]  # fmt: skip
CORE_REVISIONS = [
    (
        "c1",
        None,
        'op.create_table("setting", sa.Column("key", sa.Text, primary_key=True))',
        'op.drop_table("setting")',
    ),
]


def toml_str(value: str) -> str:
    """A TOML basic string: ``"``, ``\\`` and control characters escaped."""
    out = ['"']
    for ch in value:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    text = "".join(out)
    assert tomllib.loads(f"k = {text}")["k"] == value  # round-trips exactly
    return text


def config_text(
    *,
    schema: str = NAMED,
    owner: str | None = None,
    grants: Sequence[str] = (),
    grants_as_table: bool = False,
    version_table: str | None = None,
    tenants: str = "like:t\\\\_%",
    url: str | None = None,
) -> str:
    lines = ["[tool.alembic-schemas]", 'script_location = "migrations"']
    if url is not None:
        lines.append(f"url = {toml_str(url)}")
    lines += ["", "[tool.alembic-schemas.streams.core]", f"schema = {toml_str(schema)}"]
    if owner is not None:
        lines.append(f"owner = {toml_str(owner)}")
    if version_table is not None:
        lines.append(f"version_table = {toml_str(version_table)}")
    if grants and grants_as_table:
        pairs = ", ".join(f'{toml_str(g)} = ["SELECT", "INSERT"]' for g in grants)
        lines.append(f"grants = {{ {pairs} }}")
    elif grants:
        lines.append("grants = [" + ", ".join(toml_str(g) for g in grants) + "]")
    lines += [
        "",
        "[tool.alembic-schemas.streams.tenant]",
        f"tenants = {toml_str(tenants)}",
        'depends_on = ["core"]',
        "",
    ]
    return "\n".join(lines)


# An autocommit_block: in --sql output it sets the tenant's search_path again by itself.
AUTOCOMMIT_REVISION = (
    "r3",
    "r2",
    "with op.get_context().autocommit_block():\n"
    '    op.create_index("item_note", "item", ["note"], postgresql_concurrently=True)',
    'op.drop_index("item_note")',
)


def make_project(root: Path, config: str, *, autocommit: bool = False) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(config, encoding="utf-8")
    alembic_schemas.init(root)
    tenant = [*TENANT_REVISIONS, *([AUTOCOMMIT_REVISION] if autocommit else [])]
    for stream, revisions in (("core", CORE_REVISIONS), ("tenant", tenant)):
        for rev, down, up, down_body in revisions:
            write_revision(root, stream, rev, down, up, downgrade=down_body)
    return root


@pytest.fixture(scope="module")
def offline_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project with a named stream (schema "core") and a tenant stream, never connected."""
    return make_project(tmp_path_factory.mktemp("hostile") / "project", config_text())


@pytest.fixture(scope="module")
def conn(admin_engine: sa.Engine, server_url: str) -> Iterator[Connection]:
    """One connection to a throw-away database, for the module's PostgreSQL examples."""
    with scratch_connection(admin_engine, server_url, "hostile_") as connection:
        yield connection


def raw_quote(name: str) -> str:
    """Quoting for names PostgreSQL takes but the tool refuses (``$user``): only to plant
    such schemas; the tool itself never builds SQL this way."""
    return '"' + name.replace('"', '""') + '"'


def _schemas(c: Connection) -> set[str]:
    return set(c.execute(sa.text("SELECT nspname FROM pg_catalog.pg_namespace")).scalars())


# --- config ----------------------------------------------------------------------------------

KEYS = ["schema", "owner", "grants", "grants table", "version_table"]


def test_config_names_are_refused_naming_them_or_kept_exactly_and_quoted(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    root = tmp_path_factory.mktemp("config")
    path = root / "pyproject.toml"
    counts: Counter[str] = Counter()

    @_settings("config keys")
    @given(key=st.sampled_from(KEYS), name=file_names)
    @example(key="grants", name="public")
    @example(key="grants table", name="none")
    @example(key="owner", name="public")
    @example(key="schema", name="public")
    @example(key="version_table", name="v" * 60)
    @example(key="version_table", name="v" * 59)
    @example(key="schema", name="a" * 63 + "x")
    @example(key="schema", name="é" * 32)
    @example(key="owner", name="$user")
    def prop(key: str, name: str) -> None:
        options: dict[str, dict[str, Any]] = {
            "schema": {"schema": name},
            "owner": {"owner": name},
            "grants": {"grants": [name]},
            "grants table": {"grants": [name], "grants_as_table": True},
            "version_table": {"version_table": name},
        }
        path.write_text(config_text(**options[key]), encoding="utf-8")
        problem = {
            "schema": schema_problem,
            "owner": role_problem,
            "grants": role_problem,
            "grants table": role_problem,
            "version_table": version_table_problem,
        }[key](name)
        try:
            project = load_project(path)
        except identifiers.InvalidIdentifier as exc:
            assert problem is not None, (key, name, exc)
            assert names_it(str(exc), name, problem), (key, name, str(exc))
            counts["refused"] += 1
            return
        assert problem is None, (key, name)
        core = project.streams["core"]
        # Kept exactly as written: no truncation, case folding or normalisation.
        kept = {
            "schema": core.schema,
            "owner": core.owner,
            "grants": core.grants[0][0] if core.grants else None,
            "grants table": core.grants[0][0] if core.grants else None,
            "version_table": core.version_table,
        }[key]
        assert kept == name
        # The tool's own statements for the stream: CREATE SCHEMA ... AUTHORIZATION, grants.
        schema, owner = core.schema or NAMED, core.owner
        grantee = core.grants[0][0] if core.grants else None
        privileges = core.grants[0][1] if core.grants else ("SELECT",)
        hostile = schema_tx.create_schema_sql(
            schema, owner or OWNER_PLACEHOLDER, ((grantee or GRANTEE_PLACEHOLDER, privileges),)
        )
        plain = schema_tx.create_schema_sql(
            PLACEHOLDER if key == "schema" else schema,
            OWNER_PLACEHOLDER,
            ((GRANTEE_PLACEHOLDER, privileges),),
        )
        mapping = {PLACEHOLDER: schema}
        if owner:
            mapping[OWNER_PLACEHOLDER] = owner
        if grantee:
            mapping[GRANTEE_PLACEHOLDER] = grantee
        assert_same_structure(hostile, plain, mapping)
        counts["accepted"] += 1

    prop()
    report("config keys", counts)


def test_config_names_reach_upgrade_sql_quoted_or_are_refused_before_any_output(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A named stream's ``schema``/``owner``/``grants``/``version_table`` through the whole
    ``upgrade --sql`` (Alembic's version table DDL and rows included)."""
    root = make_project(tmp_path_factory.mktemp("config-sql") / "p", config_text())
    path = root / "pyproject.toml"
    counts: Counter[str] = Counter()
    args = ["-c", str(root), "upgrade", "--sql", "-s", "core"]

    def sql_for(**kwargs: Any) -> Outcome:
        path.write_text(config_text(**kwargs), encoding="utf-8")
        return run_cli(args)

    plain = sql_for(
        schema=PLACEHOLDER,
        owner=OWNER_PLACEHOLDER,
        grants=[GRANTEE_PLACEHOLDER],
        version_table=VT_PLACEHOLDER,
    )
    assert plain.code == 0, plain

    @_settings("config -> upgrade --sql")
    @given(
        schema=file_names,
        # Often plain, so that the schema name alone decides about half of the examples.
        owner=st.one_of(file_names, st.just("app_owner")),
        grantee=st.one_of(file_names, st.just("app_reader")),
        vt=st.one_of(file_names, st.just("alembic_version")),
    )
    @example(schema="lateral", owner="x", grantee="y", vt="collation")
    @example(schema="a\nb;--", owner="o'", grantee='g"', vt="v\\")
    @example(schema="Tenant A", owner="current_user", grantee="PUBLIC", vt="alembic_version")
    @example(schema="s", owner="o", grantee="g", vt="\t")  # was written as "    "
    def prop(schema: str, owner: str, grantee: str, vt: str) -> None:
        outcome = sql_for(schema=schema, owner=owner, grants=[grantee], version_table=vt)
        checks = [
            (schema, schema_problem(schema)),
            (owner, role_problem(owner)),
            (grantee, role_problem(grantee)),
            (vt, version_table_problem(vt)),
        ]
        refused = [(n, p) for n, p in checks if p is not None]
        if not refused:
            refused = [(n, "tabs") for n, _ in checks if offline_problem(None, n)]
        if refused:
            # One of the bad names is named (config reads keys in a fixed order).
            assert outcome.code == 2 and outcome.out == "", outcome
            message = outcome.err[len(PREFIX) : -1]
            assert any(names_it(message, n, p) for n, p in refused), (refused, outcome.err)
            counts["refused"] += 1
            return
        assert outcome.code == 0, (schema, owner, grantee, vt, outcome)
        mapping = {
            PLACEHOLDER: schema,
            OWNER_PLACEHOLDER: owner,
            GRANTEE_PLACEHOLDER: grantee,
            VT_PLACEHOLDER: vt,
            VT_PLACEHOLDER + "_pkc": vt + "_pkc",
        }
        assert_same_structure(outcome.out, plain.out, mapping)
        counts["accepted"] += 1

    prop()
    report("config -> upgrade --sql", counts)


def test_a_stream_name_with_a_trailing_newline_is_refused(tmp_path: Path) -> None:
    # `$` in the stream-name pattern matched before a final newline, so "core\n" was a stream
    # and wrote "-- stream core" + newline + ", schema ..." into --sql output.
    path = tmp_path / "pyproject.toml"
    path.write_text(
        config_text().replace("streams.core]", f"streams.{toml_str('core' + chr(10))}]"),
        encoding="utf-8",
    )
    with pytest.raises(AlembicSchemasError, match="stream names may use"):
        load_project(path)


# --- the command line ------------------------------------------------------------------------

# Every command line taking a tenant name (NAME); each would connect after validating it.
TENANT_COMMANDS: list[list[str]] = [
    ["upgrade", "--tenant=NAME"],
    ["upgrade", "-s", "tenant", "--tenant=t_ok", "--tenant=NAME", "--jobs", "2"],
    ["downgrade", "-s", "tenant", "--tenant=NAME", "base"],
    ["stamp", "-s", "tenant", "--tenant=NAME", "r1"],
    ["check", "--tenant=NAME"],
    ["status", "--tenant=NAME", "--json"],
    ["current", "-s", "tenant", "--tenant=NAME"],
    ["verify", "--tenant=NAME"],
    ["tenants", "create", "--", "NAME"],
    ["tenants", "create", "--replay", "--", "NAME"],
    ["tenants", "drop", "--yes", "--", "NAME"],
    ["tenants", "drop", "--yes", "--force", "--", "NAME"],
]


def test_cli_tenant_names_are_refused_before_connecting_or_reach_the_database(
    offline_root: Path,
) -> None:
    counts: Counter[str] = Counter()
    config = ["-c", str(offline_root)]

    @_settings("cli --tenant")
    @given(command=st.sampled_from(TENANT_COMMANDS), name=names)
    @example(command=TENANT_COMMANDS[0], name="public")
    @example(command=TENANT_COMMANDS[10], name="alembic_schemas")
    @example(command=TENANT_COMMANDS[11], name=NAMED)
    @example(command=TENANT_COMMANDS[8], name="t_\udcff")
    @example(command=TENANT_COMMANDS[8], name="-x")
    @example(command=TENANT_COMMANDS[1], name="a" * 64)
    @example(command=TENANT_COMMANDS[4], name="")
    def prop(command: list[str], name: str) -> None:
        # The name is one argv element (only the template's NAME is replaced).
        outcome = run_cli(config + [a.replace("NAME", name) for a in command])
        problem = tenant_problem(name)
        if problem is not None:
            assert_refused(outcome, name, problem)
            counts["refused"] += 1
        else:
            assert_reached_the_database(outcome, name)
            counts["accepted"] += 1

    prop()
    report("cli --tenant", counts)


def test_names_sharing_their_first_63_bytes_are_both_refused_on_every_path(
    offline_root: Path,
) -> None:
    """The server would truncate both to one schema: the tool refuses them instead."""

    @settings(max_examples=50, deadline=None, database=None)
    @given(pair=sharing_63_bytes(), command=st.sampled_from(TENANT_COMMANDS))
    def prop(pair: tuple[str, str], command: list[str]) -> None:
        first, second = pair
        assert first != second and first.encode()[:MAX] == second.encode()[:MAX]
        for name in pair:
            argv = ["-c", str(offline_root)] + [
                a.replace("NAME", name) for a in command if a != "--tenant=t_ok"
            ]
            assert_refused(run_cli(argv), name, f"{len(name.encode())} bytes")
        both = ["-c", str(offline_root), "upgrade", "--sql", "-s", "tenant"]
        outcome = run_cli([*both, f"--tenant={first}", f"--tenant={second}"])
        assert_refused(outcome, first, f"{len(first.encode())} bytes")

    prop()


def test_cli_sql_for_a_hostile_tenant_parses_like_a_plain_one(
    offline_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """``upgrade --sql`` / ``downgrade --sql`` with ``--tenant``: refused, or the printed
    script (schema, search_path, Alembic's version table and rows, an autocommit_block's
    own search_path) keeps its structure."""
    counts: Counter[str] = Counter()
    config = ["-c", str(offline_root)]
    with_block = make_project(
        tmp_path_factory.mktemp("autocommit") / "p", config_text(), autocommit=True
    )
    variants = [
        ["upgrade", "--sql", "-s", "tenant"],
        ["upgrade", "--sql"],  # the named stream's section too
        ["downgrade", "--sql", "-s", "tenant", "r2:base"],
        ["-c", str(with_block), "upgrade", "--sql", "-s", "tenant"],
    ]
    plain = {}
    for i, args in enumerate(variants):
        plain[i] = run_cli([*config, *args, f"--tenant={PLACEHOLDER}"])
        assert plain[i].code == 0 and PLACEHOLDER in plain[i].out, plain[i]
    assert "CONCURRENTLY" in plain[3].out

    @_settings("cli --sql --tenant")
    @given(variant=st.sampled_from(range(len(variants))), name=names)
    @example(variant=0, name="t_a\nDROP SCHEMA core CASCADE;--")
    @example(variant=2, name="public")
    @example(variant=2, name=NAMED)
    @example(variant=0, name="lateral")
    @example(variant=1, name="collation")
    @example(variant=0, name="system_user")
    @example(variant=0, name="a:b")
    @example(variant=0, name="100%s")
    @example(variant=0, name="\r")
    @example(variant=0, name=":x")  # came out as schema "NULL"
    @example(variant=0, name="t_a\n")  # came out bare: schema t_a
    @example(variant=3, name="(:x)")
    @example(variant=0, name="a\\:b")
    @example(variant=2, name="a\tb")  # Alembic wrote it as "a    b"
    def prop(variant: int, name: str) -> None:
        outcome = run_cli([*config, *variants[variant], f"--tenant={name}"])
        problem = offline_problem(tenant_problem(name), name)
        if problem is not None:
            assert_refused(outcome, name, problem)
            counts["refused"] += 1
            return
        assert outcome.code == 0, (name, outcome)
        assert_same_structure(outcome.out, plain[variant].out, {PLACEHOLDER: name})
        counts["accepted"] += 1

    prop()
    report("cli --sql --tenant", counts)


def test_add_stream_names_are_refused_leaving_the_config_alone_or_written_exactly(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    root = make_project(tmp_path_factory.mktemp("add-stream") / "p", config_text())
    path = root / "pyproject.toml"
    original = path.read_bytes()
    counts: Counter[str] = Counter()

    @_settings("cli add-stream")
    @given(option=st.sampled_from(["--schema", "--owner"]), name=names)
    @example(option="--schema", name="a\udcffb")  # once wiped pyproject.toml
    @example(option="--schema", name="a\x7fb")  # once written as TOML the file refused
    @example(option="--owner", name="public")
    @example(option="--schema", name="pg_x")
    def prop(option: str, name: str) -> None:
        schema = name if option == "--schema" else "extra"
        argv = ["-c", str(root), "add-stream", "extra", f"--schema={schema}"]
        if option == "--owner":
            argv.append(f"--owner={name}")
        outcome = run_cli(argv)
        problem = schema_problem(name) if option == "--schema" else role_problem(name)
        if problem is None and option == "--schema" and name == NAMED:
            problem = ""  # two streams may not share a schema
        try:
            if problem is not None:
                assert outcome.code == 2, (name, outcome)
                assert names_it(outcome.err[len(PREFIX) : -1], name, problem), outcome.err
                assert path.read_bytes() == original
                assert not (root / "migrations" / "extra").exists()
                counts["refused"] += 1
                return
            assert outcome.code == 0, (name, outcome)
            stream = load_project(path).streams["extra"]
            assert (stream.schema if option == "--schema" else stream.owner) == name
            counts["accepted"] += 1
        finally:
            path.write_bytes(original)
            shutil.rmtree(root / "migrations" / "extra", ignore_errors=True)

    prop()
    report("cli add-stream", counts)


# --- the Python API --------------------------------------------------------------------------


def test_python_api_tenant_names_are_refused_before_connecting_or_reach_the_database(
    offline_root: Path,
) -> None:
    project = dataclasses.replace(load_project(offline_root), url=NOWHERE)
    counts: Counter[str] = Counter()

    def offline_upgrade(name: str) -> str:
        buf = io.StringIO()
        command.upgrade(streams=["tenant"], tenants=[name], sql=True, output=buf, config=project)
        return buf.getvalue()

    def offline_downgrade(name: str) -> str:
        buf = io.StringIO()
        command.downgrade(
            "r2:base", streams=["tenant"], tenants=[name], sql=True, output=buf, config=project
        )
        return buf.getvalue()

    calls: dict[str, Callable[[str], Any]] = {
        "upgrade": lambda n: command.upgrade(tenants=[n], config=project),
        "downgrade": lambda n: command.downgrade(
            "base", streams=["tenant"], tenants=[n], config=project
        ),
        "stamp": lambda n: command.stamp("r1", streams=["tenant"], tenants=[n], config=project),
        "current": lambda n: command.current(streams=["tenant"], tenants=[n], config=project),
        "status": lambda n: command.status(tenants=[n], config=project),
        "check": lambda n: command.check(tenants=[n], config=project),
        "verify": lambda n: command.verify(tenants=[n], config=project),
        "tenants.create": lambda n: tenants.create(n, config=project),
        "tenants.drop": lambda n: tenants.drop(n, force=True, config=project),
        "upgrade sql": offline_upgrade,
        "downgrade sql": offline_downgrade,
        "alembic_config": lambda n: command.alembic_config("tenant", schema=n, config=project),
    }
    plain = {k: calls[k](PLACEHOLDER) for k in ("upgrade sql", "downgrade sql")}

    @_settings("python api")
    @given(call=st.sampled_from(sorted(calls)), name=names)
    @example(call="alembic_config", name=NAMED)  # would write core's alembic_version
    @example(call="downgrade sql", name="public")
    @example(call="tenants.drop", name="alembic_schemas")
    def prop(call: str, name: str) -> None:
        problem = tenant_problem(name)
        if call in ("upgrade sql", "downgrade sql"):
            problem = offline_problem(problem, name)
        try:
            result = calls[call](name)
        except identifiers.InvalidIdentifier as exc:
            assert problem is not None, (call, name, exc)
            assert exc.exit_code == 2 and names_it(str(exc), name, problem), (call, str(exc))
            counts["refused"] += 1
            return
        except AlembicSchemasError as exc:
            if problem is not None:  # tenants.drop words its refusals itself
                assert call == "tenants.drop" and exc.exit_code == 2, (call, name, exc)
                assert names_it(str(exc), name, problem), str(exc)
                counts["refused"] += 1
                return
            assert isinstance(exc, DatabaseError) and "cannot connect" in str(exc), (call, exc)
            counts["accepted"] += 1
            return
        assert problem is None, (call, name)
        if call == "alembic_config":
            assert result.attributes[SCHEMA_KEY] == name
        else:
            assert call in plain, call
            assert_same_structure(result, plain[call], {PLACEHOLDER: name})
        counts["accepted"] += 1

    prop()
    report("python api", counts)


def test_plain_alembic_x_tenant_takes_the_same_names_as_tenant(
    offline_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``alembic -x tenant=NAME`` (the env.py every stream has) refuses what --tenant does:
    ``core`` would have put the tenant stream's version row into core's version table."""
    from alembic import command
    from alembic.config import Config

    project = load_project(offline_root)
    stream = Stream(project, project.streams["tenant"])
    for name in ("public", NAMED, "alembic_schemas", "alembic_schemas_x", "pg_x", "a" * 64):
        out = io.StringIO()
        cfg = Config(cmd_opts=argparse.Namespace(x=[f"tenant={name}"]), output_buffer=out)
        cfg.set_main_option("script_location", str(stream.path))
        with pytest.raises(identifiers.InvalidIdentifier) as info:
            command.upgrade(cfg, "head", sql=True)
        assert repr(name) in str(info.value)
        assert out.getvalue() == ""
    out = io.StringIO()
    cfg = Config(cmd_opts=argparse.Namespace(x=["tenant=Tenant A"]), output_buffer=out)
    cfg.set_main_option("script_location", str(stream.path))
    monkeypatch.setenv("ALEMBIC_SCHEMAS_URL", NOWHERE)  # offline: never connected
    command.upgrade(cfg, "head", sql=True)
    assert 'CREATE SCHEMA IF NOT EXISTS "Tenant A"' in out.getvalue()


# --- tenant sources ----------------------------------------------------------------------------

SOURCE_CALLABLE = "def names(conn):\n    return list(conn.info['hostile_names'])\n"


def test_tenant_sources_skip_bad_names_and_pass_the_rest_exactly(
    conn: Connection, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """``query:``, ``like:`` and ``callable:`` sources returning hostile names, including names
    that exist as real schemas in PostgreSQL (which takes almost anything up to 63 bytes)."""
    root = tmp_path_factory.mktemp("sources")
    module = "hostile_src_" + uuid.uuid4().hex[:8]
    (root / f"{module}.py").write_text(SOURCE_CALLABLE, encoding="utf-8")
    base = load_project(make_project(root, config_text()))
    kinds = {
        "query": "query:SELECT name FROM hostile_src.names ORDER BY id",
        "like": "like:%",
        "callable": f"callable:{module}:names",
    }
    streams = {
        kind: Stream(base, dataclasses.replace(base.streams["tenant"], tenants=text))
        for kind, text in kinds.items()
    }
    with conn.begin():
        conn.exec_driver_sql(
            "CREATE SCHEMA hostile_src; CREATE TABLE hostile_src.names (id serial, name text)"
        )
    log = logging.getLogger("alembic_schemas")
    counts: Counter[str] = Counter()

    class Capture(logging.Handler):
        def __init__(self) -> None:
            super().__init__()
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(record.getMessage())

    @_settings("tenant sources")
    @given(
        kind=st.sampled_from(sorted(kinds)),
        raw=st.lists(st.one_of(names, st.sampled_from([None, 7, b"t_x"])), max_size=6),
    )
    @example(kind="query", raw=["a" * 63 + "x", "a" * 63, "t_ok", "t_ok", "public"])
    @example(kind="like", raw=["Tenant A", "lateral", '"; DROP SCHEMA core; --', "$user"])
    def prop(kind: str, raw: list[Any]) -> None:
        capture = Capture()
        saved = (list(log.handlers), log.level, log.propagate)
        log.handlers[:], log.level, log.propagate = [capture], logging.INFO, False
        try:
            with conn.begin() as tx:
                try:
                    existing = _schemas(conn)
                    if kind == "query":
                        for value in raw:
                            text = value if isinstance(value, str) else repr(value)
                            if identifier_problem(text) in ("NUL", "UTF-8"):
                                continue  # text columns hold neither
                            conn.execute(
                                sa.text("INSERT INTO hostile_src.names (name) VALUES (:n)"),
                                {"n": text},
                            )
                        listed = list(
                            conn.execute(
                                sa.text("SELECT name FROM hostile_src.names ORDER BY id")
                            ).scalars()
                        )
                    elif kind == "like":
                        made = [_accepted(v) if isinstance(v, str) else "t_x" for v in raw]
                        # The tool-refused names PostgreSQL takes become real schemas too.
                        made += [v for v in raw if v in ("$user", "alembic_schemas_x", NAMED)]
                        for name in dict.fromkeys(made):
                            if name not in existing:
                                database.run_sql(conn, f"CREATE SCHEMA {raw_quote(name)}")
                        listed = sorted(_schemas(conn))
                    else:
                        conn.info["hostile_names"] = raw
                        listed = raw
                    found = sources.names(streams[kind], conn)
                finally:
                    conn.info.pop("hostile_names", None)
                    tx.rollback()
        finally:
            log.handlers[:], log.level, log.propagate = saved
        expected = [n for n in dict.fromkeys(listed) if tenant_problem(n) is None]
        if kind == "like":
            assert sorted(found) == sorted(expected)
        else:
            assert found == expected, (listed, found)
        for value in dict.fromkeys(v for v in listed if tenant_problem(v) is not None):
            assert any(repr(value) in m or (value == "" and "empty" in m)
                       for m in capture.messages), (value, capture.messages)  # fmt: skip
        # Many names per example here: count examples, and names refused/accepted.
        counts["examples"] += 1
        counts["accepted"] += len(found)
        counts["refused"] += len(listed) - len(found)

    prop()
    report("tenant sources", counts)


# --- running accepted names in PostgreSQL -----------------------------------------------------


def test_accepted_schema_and_role_names_create_exactly_that_schema(conn: Connection) -> None:
    """The tool's CREATE SCHEMA ... AUTHORIZATION and grants, run for real (rolled back), with
    a hostile schema name and hostile owner and grantee roles created just for the example."""
    counts: Counter[str] = Counter()

    @_settings("postgres: schema + roles")
    @given(schema=accepted_names, role=accepted_names)
    @example(schema="lateral", role="current_user")
    @example(schema='"; DROP SCHEMA public CASCADE; --', role="x'); DROP ROLE postgres; --")
    @example(schema="é" * 31 + "x", role="日" * 21)
    def prop(schema: str, role: str) -> None:
        if role in RESERVED_ROLES:
            role = "r_" + role
        with conn.begin() as tx:
            try:
                before = _schemas(conn)
                exists = conn.scalar(
                    sa.text("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = :r"), {"r": role}
                )
                if not exists:
                    database.run_sql(conn, f"CREATE ROLE {identifiers.quote_role(role)}")
                grants = ((role, ("SELECT", "INSERT")),)
                database.run_sql(conn, schema_tx.create_schema_sql(schema, role, grants))
                after = _schemas(conn)
                assert after - before == ({schema} if schema not in before else set())
                assert before - after == set()
                row = conn.execute(
                    sa.text(
                        "SELECT pg_catalog.pg_get_userbyid(nspowner),"
                        " pg_catalog.has_schema_privilege(:r, oid, 'USAGE')"
                        " FROM pg_catalog.pg_namespace WHERE nspname = :s"
                    ),
                    {"r": role, "s": schema},
                ).one()
                if schema not in before:
                    assert tuple(row) == (role, True)
                # As a `name`, PostgreSQL keeps it whole (it would truncate past 63 bytes).
                assert conn.scalar(sa.text("SELECT CAST(:s AS name)"), {"s": schema}) == schema
            finally:
                tx.rollback()
        counts["accepted"] += 1

    prop()
    report("postgres: schema + roles", counts)


def _statements_without_transaction_control(script: str) -> list[str]:
    """The script's statements, less BEGIN/COMMIT (the test's own transaction holds them)."""
    out = []
    for stmt in pglast.split(script, with_parser=True):
        if "TransactionStmt" not in json.dumps(tree(stmt)):
            out.append(stmt)
    return out


OUTSIDE = sa.text(
    "SELECT count(*) FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n"
    " ON n.oid = c.relnamespace WHERE n.nspname NOT IN (:s, 'pg_toast')"
)


def test_accepted_tenant_sql_scripts_create_exactly_their_schema_when_run(
    conn: Connection, offline_root: Path
) -> None:
    """The ``upgrade --sql --tenant NAME`` script, run as printed (rolled back): one new
    schema, named exactly NAME, at r2, with the tenant's table; nothing else changes."""
    counts: Counter[str] = Counter()
    config = ["-c", str(offline_root)]

    @_settings("postgres: --sql script")
    @given(name=sql_names)
    @example(name="lateral")
    @example(name="Tenant A")
    @example(name="t_a\nDROP SCHEMA public CASCADE;--")
    @example(name="100%s")
    @example(name="é" * 31 + "x")
    def prop(name: str) -> None:
        outcome = run_cli([*config, "upgrade", "--sql", "-s", "tenant", f"--tenant={name}"])
        assert outcome.code == 0, (name, outcome)
        statements = _statements_without_transaction_control(outcome.out)
        with conn.begin() as tx:
            try:
                before = _schemas(conn)
                outside_before = conn.scalar(OUTSIDE, {"s": name})
                for stmt in statements:
                    database.run_sql(conn, stmt)
                assert _schemas(conn) - before == {name}
                versions = database.run_sql(
                    conn,
                    f"SELECT version_num FROM {identifiers.qualified(name, 'alembic_version')}",
                ).scalars()
                assert list(versions) == ["r2"]
                item = conn.scalar(
                    sa.text(
                        "SELECT n.nspname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace"
                        " n ON n.oid = c.relnamespace WHERE c.oid = to_regclass(:t)"
                    ),
                    {"t": identifiers.qualified(name, "item")},
                )
                assert item == name
                # Nothing created outside the tenant (its TOAST tables live in pg_toast).
                assert conn.scalar(OUTSIDE, {"s": name}) == outside_before
            finally:
                tx.rollback()
        counts["accepted"] += 1

    prop()
    report("postgres: --sql script", counts)


# --- end to end: a fleet of hostile tenants, partly through real processes --------------------

E2E_TENANTS = [
    "t_e2e",
    "t_e2e\n",  # SQLAlchemy wrote it bare, and PostgreSQL read it as t_e2e
    "Tenant A",
    "lateral",
    "collation",
    "system_user",
    '"; DROP SCHEMA core CASCADE; --',
    "x'); SELECT pg_sleep(10); --",
    "100%s",
    "%(name)s",
    "a:b",
    "semi;colon",
    "new\nline",
    "back\\slash",
    "/* c */",
    "$USER",
    "é" * 31 + "x",  # 63 bytes, 32 characters
    "a" * 63,
    "日本\U0001f600",
]
# Listed by the source but refused: system, tool and named-stream schemas, names the server
# would truncate (the first shares its 63-byte prefix with an existing schema), bad text.
E2E_REFUSED = [
    "public",
    "information_schema",
    "alembic_schemas",
    "alembic_schemas_x",
    NAMED,
    "$user",
    "b" * 63 + "X",
    "é" * 32,
    "pg_x",
    "",
]


def test_a_fleet_of_hostile_tenants_migrates_provisions_and_drops_exactly_their_schemas(
    tmp_path: Path, db_url: str, db: sa.Engine
) -> None:
    root = make_project(
        tmp_path / "p",
        config_text(tenants="query:SELECT name FROM hostile_src.names", url=db_url),
    )
    with db.connect() as c:
        c.exec_driver_sql("CREATE SCHEMA hostile_src; CREATE TABLE hostile_src.names (name text)")
        for name in [*E2E_TENANTS, *E2E_REFUSED]:
            c.execute(sa.text("INSERT INTO hostile_src.names VALUES (:n)"), {"n": name})
        # Real schemas the source's refused names would reach if truncated or let through.
        for name in ("$user", "alembic_schemas_x", "b" * 63):
            database.run_sql(c, f"CREATE SCHEMA {raw_quote(name)}")
        before = _schemas(c)

    report_ = alembic_schemas.upgrade(config=root, jobs=2)
    tenant_rows = {r.schema: r for r in report_ if r.tenant}
    assert sorted(tenant_rows) == sorted(E2E_TENANTS)
    assert all(r.error is None and r.after == ("r2",) for r in tenant_rows.values())

    with db.connect() as c:
        after = _schemas(c)
        assert after - before == {*E2E_TENANTS, NAMED, "alembic_schemas"} - before
        rows = c.execute(sa.text("SELECT schemaname, tablename FROM pg_catalog.pg_tables"))
        tables = {(str(s), str(t)) for s, t in rows}
    for name in E2E_TENANTS:
        assert (name, "item") in tables and (name, "alembic_version") in tables
    for name in ("$user", "alembic_schemas_x", "b" * 63, "public"):
        assert (name, "item") not in tables and (name, "alembic_version") not in tables

    # Alembic (not the executor) writes the version row of a stamp: only "t_e2e\n" moves.
    stamp = run_cli(["-c", str(root), "stamp", "-s", "tenant", "--tenant=t_e2e\n", "r1"], db_url)
    assert stamp.code == 0, stamp
    with db.connect() as c:
        for name, version in (("t_e2e", "r2"), ("t_e2e\n", "r1")):
            vt = identifiers.qualified(name, "alembic_version")
            assert database.run_sql(c, f"SELECT version_num FROM {vt}").scalar_one() == version

    # Real processes, started together: refusals (closed port) and a hostile create/drop.
    created = ["Tenant B; --", "x\ny"]  # argv carries any byte but NUL
    refusals = {
        "pg_x": ["tenants", "create", "pg_x"],
        "a" * 64: ["upgrade", "--tenant", "a" * 64],
        "public": ["tenants", "drop", "--yes", "public"],
        NAMED: ["status", "--tenant", NAMED],
        "$user": ["upgrade", "--sql", "--tenant", "$user"],
    }
    started = time.monotonic()
    procs = {name: _spawn(root, args, NOWHERE) for name, args in refusals.items()} | {
        "sql": _spawn(root, ["upgrade", "--sql", "-s", "tenant", "--tenant", created[1]], NOWHERE),
        "plain sql": _spawn(
            root, ["upgrade", "--sql", "-s", "tenant", "--tenant", PLACEHOLDER], NOWHERE
        ),
    }
    results = {name: _wait(p) for name, p in procs.items()}
    for name in refusals:
        assert_refused(results[name], name, tenant_problem(name) or "")
    assert results["sql"].code == 0 and results["plain sql"].code == 0
    assert_same_structure(results["sql"].out, results["plain sql"].out, {PLACEHOLDER: created[1]})

    for name in created:
        with db.connect() as c:
            before = _schemas(c)
        proc = _wait(_spawn(root, ["tenants", "create", name], db_url))
        assert proc.code == 0, proc
        with db.connect() as c:
            assert _schemas(c) - before == {name}
            assert (
                database.run_sql(
                    c, f"SELECT version_num FROM {identifiers.qualified(name, 'alembic_version')}"
                ).scalar_one()
                == "r2"
            )
        assert _wait(_spawn(root, ["tenants", "create", name], db_url)).code == 1  # exists
    processes = len(procs) + 2 * len(created)

    # Drops, in-process: exactly the named schema goes, whatever its name.
    for name in [*created, *E2E_TENANTS[:6]]:
        with db.connect() as c:
            before = _schemas(c)
        force = ["--force"] if name in created else []  # the source does not list those
        outcome = run_cli(["-c", str(root), "tenants", "drop", "--yes", *force, "--", name], db_url)
        assert outcome.code == 0, (name, outcome)
        with db.connect() as c:
            assert before - _schemas(c) == {name} and _schemas(c) - before == set()
    print(
        f"\nhostile names: end to end: {len(E2E_TENANTS)} hostile tenants migrated, "
        f"{len(E2E_REFUSED)} listed names refused, {processes} real processes "
        f"({time.monotonic() - started:.1f}s), {len(created) + 6} drops"
    )


def _spawn(root: Path, args: Sequence[str], url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "alembic_schemas", *args],
        cwd=root,
        env={**os.environ, "ALEMBIC_SCHEMAS_URL": url},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait(proc: subprocess.Popen[str]) -> Outcome:
    out, err = proc.communicate(timeout=120)
    return Outcome(proc.returncode, out, err)


def test_the_names_the_tool_hands_sqlalchemy_are_quoted_for_every_keyword() -> None:
    """The schema and version table names alembic-schemas gives SQLAlchemy and Alembic are
    written quoted wherever PostgreSQL would misread them bare: checked against PostgreSQL's
    parser for every keyword, in the statements Alembic writes for a version table."""
    preparer = postgresql.dialect().identifier_preparer  # type: ignore[no-untyped-call]
    for word in KEYWORDS:
        schema = preparer.quote_schema(identifiers.sa_name(word))
        table = preparer.quote(identifiers.sa_object(word))
        sql = (
            f"CREATE TABLE {schema}.{table} (version_num varchar(32));"
            f"INSERT INTO {schema}.{table} (version_num) VALUES ('r1')"
            f" RETURNING {schema}.{table}.version_num;"
            f"SELECT {schema}.{table}.version_num FROM {schema}.{table}"
        )
        pglast.parse_sql(sql)  # raises on a keyword left bare
    # A final newline is not a legal bare identifier ("$" matched before it).
    assert preparer.quote_schema(identifiers.sa_name("t_a\n")) == '"t_a\n"'
    # Plain names stay bare, as SQLAlchemy writes them.
    assert preparer.quote_schema(identifiers.sa_name("tenant_1")) == "tenant_1"
