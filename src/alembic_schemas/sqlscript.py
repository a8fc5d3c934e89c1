"""SQL text split into its top-level statements (pure): a script's statements are sent one per
query, as PostgreSQL's extended protocol, pipelines and distributed PostgreSQL need."""

from __future__ import annotations

import re

_SPECIAL = re.compile(r"--|/\*|'|\"|\$|;|\\")
_BLOCK_COMMENT = re.compile(r"/\*|\*/")
_DOLLAR_TAG = re.compile(r"\$(?:[^\W\d]\w*)?\$")
_IDENT_CHAR = re.compile(r"[\w$]")


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
    if sql[i:].strip():  # plain text after the last quote, comment or ';'
        blank = False
    if not blank:
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
