"""``database.send``: statements one per query, pipelined, on cursors a connection keeps between
sends; the failing statement is named exactly, whatever ran on those cursors before."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from alembic_schemas import database


def _statements(*sql: str) -> list[database.Statement]:
    return [(s, None) for s in sql]


def test_send_returns_the_last_statements_rows_and_reuses_the_connections_cursors(
    db: sa.Engine,
) -> None:
    with db.connect() as conn:
        conn.exec_driver_sql("BEGIN")
        first = database.send(conn, _statements(*(f"SELECT {i}" for i in range(6))))
        assert first == [(5,)]
        kept = conn.connection.info["alembic_schemas.cursors"]
        assert database.send(conn, _statements("SELECT 'a'", "SELECT 'b'")) == [("b",)]
        assert conn.connection.info["alembic_schemas.cursors"] is kept  # no new cursors
        assert database.send(conn, _statements("CREATE TEMP TABLE x (i int)")) == []
        conn.exec_driver_sql("ROLLBACK")


def test_the_failing_statement_is_named_after_longer_sends_on_the_same_cursors(
    db: sa.Engine,
) -> None:
    with db.connect() as conn:
        conn.exec_driver_sql("BEGIN")
        database.send(conn, _statements(*(f"SELECT {i}" for i in range(8))))  # all have results
        bad = _statements("SELECT 1", "SELECT 2", "SELECT * FROM no_such_table", "SELECT 4")
        with pytest.raises(sa.exc.DBAPIError) as failed:
            database.send(conn, bad)
        assert failed.value.statement_index == 2  # type: ignore[attr-defined]
        assert failed.value.statement == "SELECT * FROM no_such_table"
        assert "no_such_table" in str(failed.value.orig)
        conn.exec_driver_sql("ROLLBACK")
        conn.exec_driver_sql("BEGIN")
        assert database.send(conn, _statements("SELECT 7", "SELECT 8")) == [(8,)]
        conn.exec_driver_sql("ROLLBACK")


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
