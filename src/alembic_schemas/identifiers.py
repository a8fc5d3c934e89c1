"""The one place where schema, tenant, role and object names are validated and quoted into SQL.

Every other module passes names through :func:`validate` (refusing bad ones before any SQL
runs) and builds statements with :func:`quote` / :func:`qualified`, or hands SQLAlchemy and
Alembic a :func:`sa_name` that they always quote; nothing else formats a name into SQL text.
SQLAlchemy's own quoting rules are never changed: the user's process keeps them as they are.
"""

from __future__ import annotations

import re

from sqlalchemy.dialects.postgresql.base import RESERVED_WORDS
from sqlalchemy.sql.elements import quoted_name

from .errors import ConfigError

MAX_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1; longer names are silently truncated by the server

# Role names PostgreSQL's grammar reads as keywords even when quoted: TO "public" grants to
# every role, and "none" is rejected.
RESERVED_ROLES = frozenset({"public", "none"})

# The run record's schema; "alembic_schemas_*" are the tool's scratch and staging schemas.
TOOL_SCHEMA = "alembic_schemas"
TOOL_PREFIX = TOOL_SCHEMA + "_"

# Schemas that are never a stream's target nor a tenant, whatever a source returns.
SYSTEM_SCHEMAS = frozenset({"information_schema", TOOL_SCHEMA})
NOT_TENANTS = SYSTEM_SCHEMAS | {"public"}


def is_reserved_schema(name: str) -> bool:
    """PostgreSQL's information_schema and the tool's own schemas: never a stream's target."""
    return name in SYSTEM_SCHEMAS or name.startswith(TOOL_PREFIX)


def is_never_tenant(name: str) -> bool:
    """Reserved schemas and ``public``: never a tenant, never dropped as one."""
    return name in NOT_TENANTS or name.startswith(TOOL_PREFIX)


class InvalidIdentifier(ConfigError):
    """A schema or tenant name that PostgreSQL would reject, truncate or reserve."""


def _check_text(name: object, what: str) -> str:
    """Rules every identifier follows: a non-empty string of at most 63 UTF-8 bytes, no NUL."""
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
    return name


def validate(name: object, what: str = "schema name") -> str:
    """Return ``name`` if it is a usable PostgreSQL schema name, else raise InvalidIdentifier.

    Any character except NUL is allowed (it is always quoted); upper case and non-ASCII
    are kept as written. Refused: empty names, names over 63 bytes in UTF-8 (the server
    would truncate them, so two long names could collide), names starting with ``pg_``
    (reserved for system schemas), ``$user`` (even quoted, ``search_path`` reads it as the
    current role's name, so such a schema could never be pinned), and anything that is not a
    string.
    """
    checked = _check_text(name, what)
    if checked.lower().startswith("pg_"):
        raise InvalidIdentifier(f"invalid {what} {checked!r}: the pg_ prefix is reserved")
    if checked == "$user":
        raise InvalidIdentifier(
            f"invalid {what} {checked!r}: search_path reads it as the current role's name"
        )
    return checked


def validate_role(name: object, what: str = "role name") -> str:
    """:func:`validate`, and not a name PostgreSQL reads as a keyword where a role goes."""
    checked = validate(name, what)
    if checked in RESERVED_ROLES:
        raise InvalidIdentifier(
            f"invalid {what} {checked!r}: PostgreSQL reads it as a keyword, not a role, even quoted"
        )
    return checked


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote(name: str, what: str = "schema name") -> str:
    """Validate ``name`` as a schema name and return it as a double-quoted SQL identifier."""
    return _quoted(validate(name, what))


def quote_role(name: str, what: str = "role name") -> str:
    """Validate ``name`` as a role and return it as a double-quoted SQL identifier."""
    return _quoted(validate_role(name, what))


def validate_object(name: object, what: str = "object name") -> str:
    """A table, index, type or database name: the rules every identifier follows (schema
    rules such as the ``pg_`` prefix do not apply)."""
    return _check_text(name, what)


def quote_object(name: str, what: str = "object name") -> str:
    """A table, index, type or database name, double-quoted. Schema rules (``pg_`` prefix,
    ``$user``) do not apply: an index may well be called ``pg_x``."""
    return _quoted(_check_text(name, what))


def qualified(schema: str, name: str, what: str = "object name") -> str:
    """``"schema"."name"``: the schema validated as a schema, the name as an object name."""
    return quote(schema) + "." + quote_object(name, what)


def search_path(*schemas: str) -> str:
    """A ``search_path`` value listing ``schemas`` quoted, for ``SET search_path TO ...``."""
    return ", ".join(quote(s) for s in schemas)


# A name PostgreSQL reads as written when bare: lower case, no keyword. SQLAlchemy's list
# lacks a few keywords PostgreSQL will not take as a bare schema name.
_BARE = re.compile(r"[a-z_][a-z0-9_$]*\Z")
_KEYWORDS = frozenset(RESERVED_WORDS) | {
    "collation",
    "concurrently",
    "lateral",
    "system_user",
    "tablesample",
}


def needs_quotes(name: str) -> bool:
    return not _BARE.match(name) or name in _KEYWORDS


def sa_name(name: str, what: str = "schema name") -> quoted_name:
    """A validated schema name for SQLAlchemy and Alembic to write (``version_table_schema``,
    ``schema_translate_map`` values, copied tables), quoted exactly when it needs to be.
    Their own rules leave some names bare that PostgreSQL reads otherwise: keywords such as
    ``lateral``, and a name ending in a newline (``$`` matches before it)."""
    checked = validate(name, what)
    return quoted_name(checked, needs_quotes(checked))


def sa_object(name: str, what: str = "object name") -> quoted_name:
    """:func:`sa_name` for a table or index name (no schema rules), e.g. the version table."""
    checked = _check_text(name, what)
    return quoted_name(checked, needs_quotes(checked))
