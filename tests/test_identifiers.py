"""Property test: no schema or tenant name changes the structure of a statement the tool emits.

For arbitrary text, :func:`identifiers.quote` either refuses the name (with a one-line reason
that really applies) or the tool's own statements, run by PostgreSQL inside a transaction that
is rolled back, create, pin and query exactly a schema of that name and nothing else.
``ALEMBIC_SCHEMAS_HYPOTHESIS_EXAMPLES=N`` runs N examples instead of the quick default
(tests/conftest.py).
"""

from __future__ import annotations

import operator
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import example, given
from hypothesis import strategies as st
from sqlalchemy.engine import Connection

from alembic_schemas import database, identifiers, versions
from alembic_schemas.config import Project, StreamConfig
from alembic_schemas.runtime import schema as schema_tx
from alembic_schemas.streams import Stream

from helpers import scratch_connection

TRICKY = "\"';,. $%\\-_()[]{}*/\n\t\r" + "aAzZ09éßİı日本\u200b\u0301\U0001f600"
names = st.one_of(
    st.text(max_size=70),
    st.text(alphabet=TRICKY, max_size=70),
    st.text(alphabet="aé日\U0001f600", min_size=14, max_size=66),  # around the 63-byte limit
    st.builds(
        operator.add, st.sampled_from(["pg_", "PG_", "Pg_", "$user", "public"]), st.text(max_size=4)
    ),
    st.text(
        alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=3
    ),
)


@pytest.fixture(scope="module")
def conn(admin_engine: sa.Engine, server_url: str) -> Iterator[Connection]:
    """One connection to a throw-away database; every example rolls back."""
    with scratch_connection(admin_engine, server_url, "ident_") as connection:
        yield connection


def _stream() -> Stream:
    root = Path.cwd()
    project = Project(
        root=root, config_path=root / "pyproject.toml", url=None, script_location=root
    )
    return Stream(project, StreamConfig(name="tenant", tenants="like:x"))


def _refusal_applies(name: str, message: str) -> bool:
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return "UTF-8" in message
    if name == "":
        return "empty" in message
    if "\x00" in name:
        return "NUL" in message
    if size > identifiers.MAX_BYTES:
        return f"{size} bytes" in message
    if name.lower().startswith("pg_"):
        return "pg_ prefix" in message
    if name == "$user":
        return "current role" in message
    return False


def _schemas(c: Connection) -> set[str]:
    return set(c.execute(sa.text("SELECT nspname FROM pg_catalog.pg_namespace")).scalars())


@given(name=names)
@example(name='"; DROP SCHEMA public CASCADE; --')
@example(name="x'); SELECT pg_sleep(10); --")
@example(name="100%s")
@example(name="%(name)s")
@example(name="Tenant A")
@example(name="a" * 63)
@example(name="é" * 31 + "x")
@example(name="é" * 32)
@example(name="a" * 64)
@example(name="")
@example(name="pg_x")
@example(name="PG_x")
@example(name="$user")
@example(name="a\x00b")
@example(name="\ud800")
def test_a_name_is_refused_or_stays_exactly_one_name(conn: Connection, name: str) -> None:
    try:
        quoted = identifiers.quote(name)
    except identifiers.InvalidIdentifier as exc:
        message = str(exc)
        assert "\n" not in message and _refusal_applies(name, message), message
        return
    assert not _refusal_applies(name, "")
    assert 0 < len(name.encode("utf-8")) <= identifiers.MAX_BYTES

    table = identifiers.qualified(name, "alembic_version")
    with conn.begin() as tx:
        try:
            existing = _schemas(conn)
            # The statements a tenant's migration starts with: timeouts, search_path, lock, schema.
            schema_tx.begin(conn, _stream(), name)
            assert _schemas(conn) - existing == ({name} if name not in existing else set())
            assert conn.scalar(sa.select(sa.func.current_schemas(False))) == [name]

            # Qualified names: a version table, then the executor's bulk read of versions.
            database.run_sql(conn, f"CREATE TABLE {table} (version_num varchar(32) PRIMARY KEY)")
            conn.execute(
                versions.version_table("alembic_version").insert().values(version_num="v1")
            )
            assert versions.read_versions(conn, [name], "alembic_version") == {name: ("v1",)}
            assert (
                conn.scalar(
                    sa.text(
                        "SELECT n.nspname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
                        "ON n.oid = c.relnamespace WHERE c.oid = to_regclass(:t)"
                    ),
                    {"t": table},
                )
                == name
            )

            # PostgreSQL's own parser reads the quoted forms back as exactly the name.
            assert conn.scalar(sa.select(sa.func.parse_ident(quoted))) == [name]
            assert conn.scalar(sa.select(sa.func.parse_ident(table))) == [name, "alembic_version"]
            other = "public" if name != "public" else "information_schema"
            database.set_local(conn, search_path=(name, other))
            assert conn.scalar(sa.select(sa.func.current_schemas(False))) == [name, other]
        finally:
            tx.rollback()
