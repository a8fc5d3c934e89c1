"""The SQL script splitter (``alembic_schemas.sqlscript``, used by replay and provisioning) and
pg_dump's script made safe to restore (``alembic_schemas.provision.script``), as pure text.

``split_script`` must cut a script exactly at its top-level ``;`` whatever a string, quoted
identifier, dollar quote or comment holds, and drop psql's meta-command lines. Checked on
examples, on a real pg_dump 18 script (tests/fixtures/dumps), by a property over generated
statements, and against PostgreSQL's own scanner (pglast)."""

from __future__ import annotations

import re
from pathlib import Path

import pglast
import pytest
from hypothesis import given
from hypothesis import strategies as st

from alembic_schemas.errors import AlembicSchemasError
from alembic_schemas.provision.script import restore_script, settings_of
from alembic_schemas.sqlscript import split_script

DUMP = (Path(__file__).parent.parent / "fixtures" / "dumps" / "pg_dump_18.sql").read_text("utf-8")
HEADER = "-- alembic-schemas settings: "
META_LINE = re.compile(r"^\\.*$", re.MULTILINE)


def _without_meta_lines(sql: str) -> str:
    """psql's meta-command lines blanked out (same length, so offsets stay), for pglast."""
    return META_LINE.sub(lambda m: " " * len(m.group()), sql)


def _assert_pglast_agrees(sql: str, statements: list[str]) -> None:
    """PostgreSQL's own scanner (pglast) sees a top-level ``;`` exactly where each of
    ``statements`` (consecutive pieces of ``sql``) ends, and nowhere else."""
    theirs = [t.start for t in pglast.parser.scan(_without_meta_lines(sql)) if t.name == "ASCII_59"]
    ours, at = [], 0
    for stmt in statements:
        at = sql.index(stmt, at) + len(stmt)
        if stmt.endswith(";"):
            ours.append(at - 1)
    assert ours == theirs, (sql, statements)


def _bare(stmt: str) -> str:
    """A statement without the whitespace and ``--`` lines before it."""
    return re.sub(r"\A(?:\s+|--[^\n]*)*", "", stmt)


# --- examples, one feature each ------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "statements"),
    [
        ("SELECT 1; SELECT 2;", ["SELECT 1;", " SELECT 2;"]),
        ("SELECT 'a;b'; SELECT 'it''s;';", ["SELECT 'a;b';", " SELECT 'it''s;';"]),
        # E'' strings: a backslash escapes the quote; in a plain string it does not.
        ("SELECT E'\\';'; SELECT 2;", ["SELECT E'\\';';", " SELECT 2;"]),
        ("SELECT e'\\\\'; SELECT 2;", ["SELECT e'\\\\';", " SELECT 2;"]),
        ("SELECT '\\'; SELECT 2;", ["SELECT '\\';", " SELECT 2;"]),
        # ...but an identifier ending in e before a string is not an E'' string.
        ("SELECT fe'\\'; SELECT 2;", ["SELECT fe'\\';", " SELECT 2;"]),
        ('SELECT "a;b", "x""y;"; SELECT 2;', ['SELECT "a;b", "x""y;";', " SELECT 2;"]),
        ("SELECT $$;'$$; SELECT 2;", ["SELECT $$;'$$;", " SELECT 2;"]),
        ("SELECT $f$ $$ ; $f$; SELECT 2;", ["SELECT $f$ $$ ; $f$;", " SELECT 2;"]),
        # $1 is a parameter and a$b$ part of an identifier, not dollar quotes.
        ("SELECT $1; SELECT a$b$c; SELECT 2;", ["SELECT $1;", " SELECT a$b$c;", " SELECT 2;"]),
        (
            "SELECT 1 -- not the end; '\n; SELECT 2;",
            ["SELECT 1 -- not the end; '\n;", " SELECT 2;"],
        ),
        (
            "SELECT 1 /* a /* b; */ '; */; SELECT 2;",
            ["SELECT 1 /* a /* b; */ '; */;", " SELECT 2;"],
        ),
    ],
)
def test_split_cuts_only_at_top_level_semicolons(sql: str, statements: list[str]) -> None:
    assert split_script(sql) == statements
    assert "".join(statements) == sql
    _assert_pglast_agrees(sql, statements)


def test_a_trailing_statement_without_a_semicolon_is_kept() -> None:
    assert split_script("SELECT 1; SELECT 2") == ["SELECT 1;", " SELECT 2"]
    assert split_script("SELECT 1;\nSELECT 'x'\n") == ["SELECT 1;", "\nSELECT 'x'\n"]


def test_trailing_comments_and_whitespace_are_not_a_statement() -> None:
    assert split_script("SELECT 1; -- done\n  /* really */ \n") == ["SELECT 1;"]
    assert split_script("") == []
    assert split_script("  -- nothing\n") == []


def test_psql_meta_command_lines_are_left_out_only_at_a_statement_start() -> None:
    sql = "\\restrict k3y\nSELECT 1;\n-- c\n\\connect db\nSELECT 'a\n\\b'; \\unrestrict k3y\n"
    assert split_script(sql) == ["SELECT 1;", "SELECT 'a\n\\b';"]


def test_unterminated_quotes_and_comments_run_to_the_end() -> None:
    assert split_script("SELECT 1; SELECT 'a; b") == ["SELECT 1;", " SELECT 'a; b"]
    assert split_script("SELECT 1; SELECT $x$ ; ") == ["SELECT 1;", " SELECT $x$ ; "]
    assert split_script("SELECT 1; /* a; /* b */ ;") == ["SELECT 1;"]


def test_a_real_pg_dump_script_splits_as_postgresql_reads_it() -> None:
    statements = split_script(DUMP)
    assert len(statements) == 24
    assert not any("restrict" in s for s in statements), "psql's \\restrict lines are left out"
    function = next(s for s in statements if "CREATE FUNCTION" in s)
    assert function.rstrip().endswith("END\n$$;") and "-- a comment; inside the body" in function
    rows = [_bare(s) for s in statements if _bare(s).startswith("INSERT INTO")]
    assert "'line\nbreak; \\ back''slash', '/* not a comment */');" in rows[2]
    assert rows[3].endswith("(3, '$$ dollar $$', '-- not a comment');")
    _assert_pglast_agrees(DUMP, statements)
    # And with the parser: every statement parses on its own.
    for stmt in statements:
        pglast.parse_sql(stmt)


# --- the property ----------------------------------------------------------------------------

# Pieces that lex the same wherever they stand between spaces; several hide a ';', a quote or a
# comment start.
TOKENS = [
    "SELECT", "x", "1", "a_b", "é", ",", "(", ")", "+", "::text", "$1", "a$b$c",
    "'a;b'", "'it''s;'", "''", "E'\\';'", "e'\\\\'", "U&'d\\0061t;'", "b'01'",
    '"a;b"', '"x""y;"', '"$$"', '"--"', '"/*"',
    "$$;$$", "$$ ' \" -- /* $$", "$f$ $$ ; $f$", "$_x1$ ;$ $_x1$", "$é$ ; $é$",
]  # fmt: skip
COMMENTS = ["-- c; 'x\n", "/* ; ' */", "/* a /* b ; */ ' */", "--\n"]
META = ["\\connect db\n", "\\restrict k3y\n", "\\set ON_ERROR_STOP 1\n"]

statement = st.builds(
    lambda lead, before, tokens: lead + " ".join([*before, *tokens]) + ";",
    st.sampled_from(["", " ", "\n", "\n\n"]),
    st.lists(st.sampled_from(COMMENTS), max_size=2),
    st.lists(st.sampled_from(TOKENS + COMMENTS), min_size=1).filter(
        lambda ts: any(t in TOKENS for t in ts)
    ),
)


@given(st.lists(statement, max_size=8))
def test_split_of_joined_statements_gives_them_back(statements: list[str]) -> None:
    sql = "".join(statements)
    assert split_script(sql) == statements
    _assert_pglast_agrees(sql, statements)


@given(st.lists(st.tuples(st.sampled_from(["", *META]), statement), max_size=6))
def test_meta_command_lines_before_statements_are_dropped(
    pairs: list[tuple[str, str]],
) -> None:
    sql = "".join(f"\n{meta}" + stmt if meta else stmt for meta, stmt in pairs)
    assert split_script(sql) == [stmt for _, stmt in pairs]
    _assert_pglast_agrees(sql, [stmt for _, stmt in pairs])


@given(st.lists(statement, min_size=1, max_size=5))
def test_the_last_statement_may_lack_its_semicolon(statements: list[str]) -> None:
    *head, last = statements
    sql = "".join([*head, last.removesuffix(";")])
    assert split_script(sql) == [*head, last.removesuffix(";")]


# --- restore_script and settings_of ----------------------------------------------------------

KNOWN = {
    "client_encoding",
    "standard_conforming_strings",
    "search_path",
    "check_function_bodies",
    "xmloption",
    "client_min_messages",
    "row_security",
    "default_tablespace",
    "default_table_access_method",
    # pg_dump's timeouts: dropped even though the server knows them.
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
}


def test_restore_makes_session_settings_local_and_lists_them_in_the_header() -> None:
    script = restore_script(DUMP, KNOWN)
    header, _, body = script.partition("\n")
    changed = sorted(
        KNOWN - {"statement_timeout", "lock_timeout"} - {"idle_in_transaction_session_timeout"}
    )
    assert header == HEADER + ",".join(changed)
    assert settings_of(script) == changed
    assert "SET LOCAL client_encoding = 'UTF8';" in body
    assert "SELECT pg_catalog.set_config('search_path', '', true);" in body
    assert re.search(r"^SET (?!LOCAL )", body, re.MULTILINE) is None, "no session SET is left"
    for guard in (
        "statement_timeout",
        "lock_timeout",
        "idle_in_transaction",
        "transaction_timeout",
    ):
        assert guard not in body
    assert "\\restrict" not in body and "\\unrestrict" not in body


def test_restore_leaves_out_settings_the_server_does_not_know() -> None:
    script = restore_script(DUMP, KNOWN - {"xmloption", "default_table_access_method"})
    assert "xmloption" not in script and "default_table_access_method" not in script
    assert "xmloption" not in settings_of(script)
    assert "SET LOCAL row_security = off;" in script


def test_restore_keeps_every_other_statement_exactly() -> None:
    settings = ("SET ", "SELECT pg_catalog.set_config(")
    kept = [_bare(s) for s in split_script(DUMP) if not _bare(s).startswith(settings)]
    body = restore_script(DUMP, KNOWN).partition("\n")[2]
    restored = [s.lstrip("\n") for s in split_script(body)]
    assert [s for s in restored if not s.startswith(settings)] == kept
    _assert_pglast_agrees(body, restored)


def test_restore_of_a_script_without_settings_has_an_empty_header() -> None:
    script = restore_script("CREATE TABLE t (x int);\n", KNOWN)
    assert script == HEADER + "\nCREATE TABLE t (x int);\n"
    assert settings_of(script) == []


def test_a_snapshot_in_another_format_is_refused() -> None:
    with pytest.raises(AlembicSchemasError, match="not in a known format"):
        settings_of("CREATE TABLE t (x int);\n")
