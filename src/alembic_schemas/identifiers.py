"""The one place where schema and tenant names are validated and quoted into SQL.

Every other module passes names through :func:`validate` (refusing bad ones before any
SQL runs) and builds statements with :func:`quote` / :func:`qualified`; nothing else
formats a name into SQL text.
"""

from __future__ import annotations

from .errors import ConfigError

MAX_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1; longer names are silently truncated by the server


class InvalidIdentifier(ConfigError):
    """A schema or tenant name that PostgreSQL would reject, truncate or reserve."""


def validate(name: object, what: str = "schema name") -> str:
    """Return ``name`` if it is a usable PostgreSQL schema name, else raise InvalidIdentifier.

    Any character except NUL is allowed (it is always quoted); upper case and non-ASCII
    are kept as written. Refused: empty names, names over 63 bytes in UTF-8 (the server
    would truncate them, so two long names could collide), names starting with ``pg_``
    (reserved for system schemas), ``$user`` (even quoted, ``search_path`` reads it as the
    current role's name, so such a schema could never be pinned), and anything that is not a
    string.
    """
    if not isinstance(name, str):
        raise InvalidIdentifier(f"invalid {what} {name!r}: must be a string")
    if name == "":
        raise InvalidIdentifier(f"invalid {what}: empty")
    if "\x00" in name:
        raise InvalidIdentifier(f"invalid {what} {name!r}: contains a NUL character")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidIdentifier(f"invalid {what} {name!r}: not valid UTF-8") from None
    if size > MAX_BYTES:
        raise InvalidIdentifier(
            f"invalid {what} {name!r}: {size} bytes, PostgreSQL allows at most {MAX_BYTES}"
        )
    if name.lower().startswith("pg_"):
        raise InvalidIdentifier(f"invalid {what} {name!r}: the pg_ prefix is reserved")
    if name == "$user":
        raise InvalidIdentifier(
            f"invalid {what} {name!r}: search_path reads it as the current role's name"
        )
    return name


def quote(name: str, what: str = "schema name") -> str:
    """Validate ``name`` and return it as a double-quoted SQL identifier."""
    validate(name, what)
    return '"' + name.replace('"', '""') + '"'


def qualified(schema: str, name: str) -> str:
    """``"schema"."name"`` with both parts validated and quoted."""
    return quote(schema) + "." + quote(name, "object name")


def search_path(*schemas: str) -> str:
    """A ``search_path`` value listing ``schemas`` quoted, for ``SET search_path TO ...``."""
    return ", ".join(quote(s) for s in schemas)
