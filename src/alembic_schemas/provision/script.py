"""pg_dump's plain script, read as pure text: its top-level statements, and the same script
made safe to run inside a caller's transaction."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

from ..errors import AlembicSchemasError

# that provisioning can put the caller's values back afterwards.
_HEADER = "-- alembic-schemas settings: "
# pg_dump's guards for a long restore session; provisioning keeps the caller's (or the
# project's) timeouts instead.
_DROPPED_SETTINGS = frozenset(
    {
        "statement_timeout",
        "lock_timeout",
        "idle_in_transaction_session_timeout",
        "transaction_timeout",
    }
)


_SPECIAL = re.compile(r"--|/\*|'|\"|\$|;|\\")
_BLOCK_COMMENT = re.compile(r"/\*|\*/")
_DOLLAR_TAG = re.compile(r"\$(?:[^\W\d]\w*)?\$")
_IDENT_CHAR = re.compile(r"[\w$]")
_SET = re.compile(r"SET\s+(?!LOCAL\b|SESSION\b)(\w+)\s*(?:=|TO\b)", re.IGNORECASE)
_SET_CONFIG = re.compile(r"SELECT pg_catalog\.set_config\('(\w+)', (.*), false\);\Z", re.DOTALL)
_LEADING_COMMENTS = re.compile(r"\A(?:\s+|--[^\n]*)*")


def split_script(sql: str) -> list[str]:
    """The top-level statements of a psql script, with psql meta-command lines left out.

    Knows what can hide a ``;`` or a line start: string literals (also ``E''``), quoted
    identifiers, dollar quotes and comments, so rows and function bodies are never cut or
    rewritten, whatever text they hold."""
    out: list[str] = []
    start = i = 0
    blank = True  # nothing but whitespace and comments since ``start``
    n = len(sql)
    while (m := _SPECIAL.search(sql, i)) is not None:
        j, token = m.start(), m.group()
        if sql[i:j].strip():
            blank = False
        if token == "--":
            eol = sql.find("\n", j)
            i = n if eol < 0 else eol + 1
        elif token == "/*":
            depth, k = 1, j + 2
            while depth and (c := _BLOCK_COMMENT.search(sql, k)) is not None:
                depth += 1 if c.group() == "/*" else -1
                k = c.end()
            i = k if not depth else n
        elif token in ("'", '"'):
            blank = False
            escapes = (
                token == "'"
                and j > 0
                and sql[j - 1] in "Ee"
                and (j < 2 or not _IDENT_CHAR.match(sql[j - 2]))
            )
            i = _end_of_quoted(sql, j, token, escapes)
        elif token == "$":
            blank = False
            tag = _DOLLAR_TAG.match(sql, j)
            if tag is not None and not (j > 0 and _IDENT_CHAR.match(sql[j - 1])):
                end = sql.find(tag.group(), tag.end())
                i = n if end < 0 else end + len(tag.group())
            else:
                i = j + 1
        elif token == ";":
            out.append(sql[start : j + 1])
            start = i = j + 1
            blank = True
        else:  # a backslash: at a statement's start it begins a psql meta-command line
            if blank:
                eol = sql.find("\n", j)
                start = i = n if eol < 0 else eol + 1
            else:
                i = j + 1
    if sql[start:].strip() and not blank:
        out.append(sql[start:])
    return out


def _end_of_quoted(sql: str, j: int, quote: str, escapes: bool) -> int:
    """Index just past the literal or identifier opened at ``j``."""
    k = j + 1
    n = len(sql)
    while k < n:
        c = sql[k]
        if escapes and c == "\\":
            k += 2
        elif c == quote:
            if sql.startswith(quote, k + 1):
                k += 2
            else:
                return k + 1
        else:
            k += 1
    return n


def restore_script(dump: str, known_settings: Iterable[str]) -> str:
    """pg_dump's script made safe to run inside a caller's transaction, behind a header.

    Session ``SET``s become ``SET LOCAL`` (they would otherwise outlive the transaction on a
    pooled connection); settings the server does not know (a newer pg_dump's, such as
    ``transaction_timeout`` on PostgreSQL 15) and pg_dump's timeout guards are left out."""
    known = {s.lower() for s in known_settings}
    changed: list[str] = []
    statements: list[str] = []
    for raw in split_script(dump):
        stmt = raw[_LEADING_COMMENTS.match(raw).end() :]  # type: ignore[union-attr]
        if (m := _SET.match(stmt)) is not None:
            name = m.group(1).lower()
            if name in _DROPPED_SETTINGS or name not in known:
                continue
            stmt = "SET LOCAL " + stmt[3:].lstrip()
            changed.append(name)
        elif (m := _SET_CONFIG.match(stmt)) is not None:
            stmt = f"SELECT pg_catalog.set_config('{m.group(1)}', {m.group(2)}, true);"
            changed.append(m.group(1).lower())
        statements.append(stmt)
    header = _HEADER + ",".join(sorted(set(changed)))
    return header + "\n" + "\n".join(statements) + "\n"


def settings_of(script: str) -> list[str]:
    header = script.partition("\n")[0]
    if not header.startswith(_HEADER):
        raise AlembicSchemasError("the stored provisioning snapshot is not in a known format")
    return [s for s in header.removeprefix(_HEADER).split(",") if s]


@functools.lru_cache(maxsize=8)
def statements_of(script: str) -> tuple[str, ...]:
    """The stored script's statements, to send one per query (Citus forwards a string of
    several statements to its workers whole, and some DDL then fails there); split once per
    script while it is in use."""
    settings_of(script)  # a known format
    return tuple(split_script(script.partition("\n")[2]))
