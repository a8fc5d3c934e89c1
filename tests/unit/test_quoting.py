"""Names into SQL (``alembic_schemas.identifiers``), checked with PostgreSQL's own parser
(pglast), and proof that importing the package leaves SQLAlchemy's quoting as it was."""

from __future__ import annotations

import json
import subprocess
import sys

import pglast
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pglast import ast
from sqlalchemy.dialects import postgresql

from alembic_schemas import identifiers
from alembic_schemas.identifiers import InvalidIdentifier

# A named paramstyle: SQLAlchemy then writes a '%' in a name as it is, not doubled for the driver.
PREPARER = postgresql.dialect(paramstyle="named").identifier_preparer  # type: ignore[no-untyped-call]
TRICKY = "\"';,. $%\\-_()[]{}*/\n\t\raAzZ09éßİı日本\u200b\u0301\U0001f600"
names = st.one_of(st.text(min_size=1, max_size=20), st.text(TRICKY, min_size=1, max_size=20))


def _range_var(sql: str) -> ast.RangeVar:
    (raw,) = pglast.parse_sql(sql)
    assert isinstance(raw.stmt, ast.SelectStmt) and raw.stmt.fromClause
    found = raw.stmt.fromClause[0]
    assert isinstance(found, ast.RangeVar)
    return found


# --- validate ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "invalid schema name: empty"),
        ("a\x00b", "invalid schema name 'a\\x00b': contains a NUL character"),
        ("\ud800", "invalid schema name '\\ud800': not valid UTF-8"),
        ("a" * 64, f"invalid schema name {'a' * 64!r}: 64 bytes, PostgreSQL allows at most 63"),
        ("é" * 32, f"invalid schema name {'é' * 32!r}: 64 bytes, PostgreSQL allows at most 63"),
        ("pg_x", "invalid schema name 'pg_x': the pg_ prefix is reserved"),
        ("Pg_X", "invalid schema name 'Pg_X': the pg_ prefix is reserved"),
        ("$user", "invalid schema name '$user': search_path reads it as the current role's name"),
        (7, "invalid schema name 7: must be a string"),
    ],
)
def test_validate_refuses_names_postgresql_would_reject_truncate_or_misread(
    name: object, reason: str
) -> None:
    with pytest.raises(InvalidIdentifier) as caught:
        identifiers.validate(name)
    assert str(caught.value) == reason
    assert caught.value.exit_code == 2


@pytest.mark.parametrize("name", ["a" * 63, "é" * 31 + "x", "Tenant A", 'x"; DROP', "$USER ", "pg"])
def test_validate_keeps_every_other_name_exactly(name: str) -> None:
    assert identifiers.validate(name) == name


def test_validate_role_also_refuses_what_the_grammar_reads_as_keywords() -> None:
    for role in ("public", "none"):
        with pytest.raises(InvalidIdentifier, match="reads it as a keyword, not a role"):
            identifiers.validate_role(role, "owner role")
        with pytest.raises(InvalidIdentifier, match="reads it as a keyword"):
            identifiers.quote_role(role)
    assert identifiers.validate_role("PUBLIC") == "PUBLIC"
    assert identifiers.quote_role("app") == '"app"'


def test_reserved_schemas_and_never_tenants() -> None:
    for name in ("information_schema", "alembic_schemas", "alembic_schemas_scratch_1"):
        assert identifiers.is_reserved_schema(name) and identifiers.is_never_tenant(name)
    assert not identifiers.is_reserved_schema("public") and identifiers.is_never_tenant("public")
    for name in ("alembic_schema", "core", "t_alembic_schemas_x"):
        assert not identifiers.is_reserved_schema(name) and not identifiers.is_never_tenant(name)


# --- quoting -------------------------------------------------------------------------------


def test_quote_doubles_inner_quotes_and_validates() -> None:
    assert identifiers.quote('a"b') == '"a""b"'
    with pytest.raises(InvalidIdentifier, match="invalid tenant name 'pg_x'"):
        identifiers.quote("pg_x", "tenant name")


def test_object_names_follow_no_schema_rules() -> None:
    assert identifiers.quote_object("pg_x") == '"pg_x"'
    assert identifiers.quote_object("$user") == '"$user"'
    assert identifiers.qualified("core", "pg_x") == '"core"."pg_x"'
    with pytest.raises(InvalidIdentifier, match="invalid index name: empty"):
        identifiers.qualified("core", "", "index name")
    with pytest.raises(InvalidIdentifier, match="the pg_ prefix is reserved"):
        identifiers.qualified("pg_x", "t")


def test_search_path_lists_each_schema_quoted() -> None:
    assert identifiers.search_path("t_a", 'b"c') == '"t_a", "b""c"'


@given(names, names)
def test_a_qualified_name_parses_back_to_exactly_its_two_names(schema: str, table: str) -> None:
    try:
        sql = f"SELECT * FROM {identifiers.qualified(schema, table)}"
    except InvalidIdentifier:
        return
    found = _range_var(sql)
    assert (found.schemaname, found.relname) == (schema, table)


# --- names handed to SQLAlchemy ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "quoted"),
    [
        ("tenant_1", False),
        ("t$1", False),
        ("Tenant", True),
        ("1t", True),
        ("t-1", True),
        ("t_a\n", True),  # a bare name's "$" matches before a final newline
        ("lateral", True),  # keywords SQLAlchemy's list lacks
        ("tablesample", True),
        ("select", True),
        ("é", True),
    ],
)
def test_needs_quotes_exactly_when_postgresql_would_misread_it_bare(
    name: str, quoted: bool
) -> None:
    assert identifiers.needs_quotes(name) is quoted
    assert identifiers.sa_name(name).quote is quoted
    assert identifiers.sa_object(name).quote is quoted


def test_sa_name_validates_as_a_schema_and_sa_object_as_an_object() -> None:
    with pytest.raises(InvalidIdentifier, match="the pg_ prefix is reserved"):
        identifiers.sa_name("pg_x")
    assert str(identifiers.sa_object("pg_x")) == "pg_x"
    with pytest.raises(InvalidIdentifier, match="invalid version table: empty"):
        identifiers.sa_object("", "version table")


@given(names, names)
def test_sqlalchemy_writes_the_names_it_is_handed_so_they_parse_back_exactly(
    schema: str, table: str
) -> None:
    try:
        sql = (
            f"SELECT * FROM {PREPARER.quote_schema(identifiers.sa_name(schema))}"
            f".{PREPARER.quote(identifiers.sa_object(table))}"
        )
    except InvalidIdentifier:
        return
    found = _range_var(sql)
    assert (found.schemaname, found.relname) == (schema, table)


# --- no side effects on import -------------------------------------------------------------

PROBE = """
import json, sys
from sqlalchemy.dialects.postgresql import base
from sqlalchemy.sql.elements import quoted_name

def quoting():
    preparer = base.dialect().identifier_preparer
    return {
        "reserved": sorted(base.RESERVED_WORDS),
        "legal": base.PGIdentifierPreparer.legal_characters.pattern,
        "lateral": preparer.quote_schema("lateral"),
        "newline": preparer.quote_schema("t_a\\n"),
        "forced": preparer.quote_schema(quoted_name("plain", None)),
    }

before = quoting()
import alembic_schemas, alembic_schemas.cli, alembic_schemas.command  # noqa: E401
from alembic_schemas import identifiers
identifiers.sa_name("lateral")
print(json.dumps([before, quoting()]))
"""


def test_importing_the_package_leaves_sqlalchemys_postgresql_quoting_untouched() -> None:
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    before, after = json.loads(proc.stdout)
    assert after == before
    # What it means today: SQLAlchemy itself leaves these bare; the package does not change that.
    assert before["lateral"] == "lateral"
    assert "lateral" not in before["reserved"]
