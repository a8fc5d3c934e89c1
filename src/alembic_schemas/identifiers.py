"""The one place where schema and tenant names are validated and quoted into SQL.

Every other module passes names through :func:`validate` (refusing bad ones before any
SQL runs) and builds statements with :func:`quote` / :func:`qualified`; nothing else
formats a name into SQL text.
"""

from __future__ import annotations

import re

from sqlalchemy.dialects.postgresql import base as _pg

from .errors import ConfigError

MAX_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1; longer names are silently truncated by the server

# SQLAlchemy's quoting, which Alembic uses for the version table, fixed for every PostgreSQL
# dialect in the process (quoting more is always correct):
# * keywords PostgreSQL will not take as a bare schema name were left unquoted: Alembic wrote
#   `CREATE TABLE lateral.alembic_version` for a tenant named "lateral" (a syntax error, after
#   `tenants create` had committed the tenant);
# * its ^[A-Z0-9_$]+$ pattern let a final newline through (`$` matches before it), so tenant
#   "t_a\n" was written bare and PostgreSQL read it as t_a: `stamp` moved t_a's version row.
_pg.RESERVED_WORDS.update({"collation", "concurrently", "lateral", "system_user", "tablesample"})
_pg.PGIdentifierPreparer.legal_characters = re.compile(r"^[A-Z0-9_$]+\Z", re.I)

# Role names PostgreSQL's grammar reads as keywords even when quoted: TO "public" grants to
# every role, and "none" is rejected.
RESERVED_ROLES = frozenset({"public", "none"})

# The run record's schema; "alembic_schemas_*" are the tool's scratch and staging schemas.
TOOL_SCHEMA = "alembic_schemas"


def is_reserved_schema(name: str) -> bool:
    """PostgreSQL's information_schema and the tool's own schemas: never a stream's target."""
    return name in ("information_schema", TOOL_SCHEMA) or name.startswith(TOOL_SCHEMA + "_")


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


def validate_role(name: object, what: str = "role name") -> str:
    """:func:`validate`, and not a name PostgreSQL reads as a keyword where a role goes."""
    checked = validate(name, what)
    if checked in RESERVED_ROLES:
        raise InvalidIdentifier(
            f"invalid {what} {checked!r}: PostgreSQL reads it as a keyword, not a role, even quoted"
        )
    return checked


def quote_role(name: str, what: str = "role name") -> str:
    """Validate ``name`` as a role and return it as a double-quoted SQL identifier."""
    return quote(validate_role(name, what), what)


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
