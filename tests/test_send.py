"""``database.send``: statements one per query, pipelined. In a transaction psycopg has begun,
they go to libpq directly; the first send of a transaction goes through psycopg's own pipeline
(psycopg begins it as it would, isolation level included), on cursors a connection keeps. Either
way the rows are a cursor's, and the failing statement is named exactly."""

from __future__ import annotations

import decimal
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from alembic_schemas import database


def _statements(*sql: str) -> list[database.Statement]:
    return [(s, None) for s in sql]


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    """Transactions as the tool's: SQLAlchemy begins them, psycopg sends BEGIN when first used."""
    engine = database.create_engine(db_url, poolclass=sa.pool.NullPool)
    yield engine
    engine.dispose()


@pytest.fixture
def begun(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A connection whose transaction psycopg has begun (its first send did): the sends after
    it go to libpq directly. Rolled back at the end."""
    with engine.connect() as conn:
        database.send(conn, _statements("SELECT 0"))
        yield conn
        conn.rollback()


def _status(conn: sa.Connection) -> int:
    return int(conn.connection.driver_connection.pgconn.transaction_status)  # type: ignore[union-attr]


def test_rows_in_a_begun_transaction_are_what_a_cursor_returns(begun: sa.Connection) -> None:
    query = (
        "SELECT 1 AS i, 2::bigint AS b, 'x'::text AS t, true AS ok, NULL::int AS nothing,"
        " 1.5::numeric AS n, ARRAY[1, 2] AS a, 'y'::name AS nm"
    )
    sent = database.send(begun, _statements("SELECT 1", query))
    # libpq directly: no cursor was made for these two (the first send made one)
    assert len(begun.connection.info["alembic_schemas.cursors"]) == 1
    expected = [tuple(begun.exec_driver_sql(query).one())]
    assert sent == expected == [(1, 2, "x", True, None, decimal.Decimal("1.5"), [1, 2], "y")]
    assert database.send(begun, _statements("CREATE TEMP TABLE x (i int)")) == []
    assert database.send(begun, _statements("SELECT i FROM x")) == []


def test_parameters_are_merged_as_psycopg_would_and_a_percent_without_them_is_text(
    begun: sa.Connection,
) -> None:
    assert database.send(begun, [("SELECT %s::text, %s::int", ("it's", 7))]) == [("it's", 7)]
    assert database.send(begun, [("SELECT 'a%%b'", ())]) == [("a%b",)]
    assert database.send(begun, [("SELECT 'a%%b'", None)]) == [("a%%b",)]
    lock = "SELECT pg_catalog.pg_try_advisory_xact_lock(%s, %s)"
    assert database.send(begun, [(lock, (-2147483648, 2147483647))]) == [(True,)]


def test_the_failing_statement_is_named_with_postgresqls_detail_and_the_rest_not_run(
    begun: sa.Connection,
) -> None:
    bad = _statements(
        "CREATE TEMP TABLE t (i int PRIMARY KEY)",
        "INSERT INTO t VALUES (1)",
        "INSERT INTO t VALUES (1)",
        "INSERT INTO t VALUES (2)",
    )
    with pytest.raises(sa.exc.IntegrityError) as failed:
        database.send(begun, bad)
    assert failed.value.statement_index == 2  # type: ignore[attr-defined]
    assert failed.value.statement == "INSERT INTO t VALUES (1)"
    orig = failed.value.orig
    assert orig.sqlstate == "23505"  # type: ignore[union-attr]
    assert orig.diag.message_detail == "Key (i)=(1) already exists."  # type: ignore[union-attr]
    begun.rollback()
    database.send(begun, _statements("SELECT 0"))
    assert database.send(begun, _statements("SELECT 7", "SELECT 8")) == [(8,)]


def test_a_statement_told_to_change_one_row_that_changed_none_is_reported(
    engine: sa.Engine,
) -> None:
    with engine.connect() as conn:
        database.send(conn, _statements("CREATE TEMP TABLE v (n text)"))
        sent = _statements("INSERT INTO v VALUES ('a')", "UPDATE v SET n = 'b' WHERE n = 'a'")
        database.send(conn, sent, one_row=[1])
        with pytest.raises(database.RowCountError) as wrong:
            database.send(conn, _statements("UPDATE v SET n = 'c' WHERE n = 'a'"), one_row=[0])
        assert (wrong.value.index, wrong.value.found) == (0, 0)
        conn.rollback()


def test_a_pipeline_larger_than_the_sockets_buffers_is_sent_whole(begun: sa.Connection) -> None:
    padding = "x" * 2000  # ~6 MB each way: more than either side buffers
    many = _statements(*(f"SELECT {i}, '{padding}'" for i in range(3000)))
    assert database.send(begun, many) == [(2999, padding)]


def test_a_connection_that_breaks_in_a_pipeline_is_invalidated_and_replaced(
    begun: sa.Connection,
) -> None:
    with pytest.raises(sa.exc.DBAPIError) as broken:
        database.send(
            begun,
            _statements("SELECT pg_terminate_backend(pg_backend_pid())", "SELECT 2"),
        )
    assert begun.invalidated and broken.value.connection_invalidated
    begun.rollback()
    assert database.send(begun, _statements("SELECT 3")) == [(3,)]


def test_the_first_send_of_a_transaction_begins_it_with_the_connections_isolation_level(
    engine: sa.Engine,
) -> None:
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
        assert _status(conn) == 0  # idle: psycopg has not begun yet
        assert database.send(conn, _statements("SHOW transaction_isolation")) == [
            ("repeatable read",)
        ]
        assert database.send(conn, _statements("SHOW transaction_isolation")) == [
            ("repeatable read",)
        ]
        conn.rollback()


def test_first_sends_reuse_the_connections_cursors_and_name_the_failing_statement(
    db: sa.Engine,
) -> None:
    with db.connect() as conn:  # autocommit: no transaction, so psycopg's pipeline
        first = database.send(conn, _statements(*(f"SELECT {i}" for i in range(8))))
        assert first == [(7,)]
        kept = conn.connection.info["alembic_schemas.cursors"]
        assert database.send(conn, _statements("SELECT 'a'", "SELECT 'b'")) == [("b",)]
        assert conn.connection.info["alembic_schemas.cursors"] is kept  # no new cursors
        bad = _statements("SELECT 1", "SELECT 2", "SELECT * FROM no_such_table", "SELECT 4")
        with pytest.raises(sa.exc.DBAPIError) as failed:
            database.send(conn, bad)
        assert failed.value.statement_index == 2  # type: ignore[attr-defined]
        assert failed.value.statement == "SELECT * FROM no_such_table"
        assert "no_such_table" in str(failed.value.orig)
        assert database.send(conn, _statements("SELECT 7", "SELECT 8")) == [(8,)]


def test_a_new_connection_behind_the_same_record_gets_new_cursors(db: sa.Engine) -> None:
    with db.connect() as conn:
        database.send(conn, _statements("SELECT 1"))
        old = conn.connection.info["alembic_schemas.cursors"][0]
        conn.invalidate()
        conn.rollback()
        assert database.send(conn, _statements("SELECT 2")) == [(2,)]
        new = conn.connection.info["alembic_schemas.cursors"][0]
        assert new is not old and new.connection is conn.connection.driver_connection
        conn.rollback()
