"""pg_dump's plain script, read as pure text: its top-level statements, and the same script
made safe to run inside a caller's transaction."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

from ..errors import AlembicSchemasError
from ..sqlscript import split_script

# The first line of a stored snapshot names the settings its script changes (SET LOCAL), so
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


_SET = re.compile(r"SET\s+(?!LOCAL\b|SESSION\b)(\w+)\s*(?:=|TO\b)", re.IGNORECASE)
_SET_CONFIG = re.compile(r"SELECT pg_catalog\.set_config\('(\w+)', (.*), false\);\Z", re.DOTALL)
_LEADING_COMMENTS = re.compile(r"\A(?:\s+|--[^\n]*)*")


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
