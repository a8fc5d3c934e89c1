"""Two runs preparing the same new schema at once: the second waits, then finds it; and a wait
longer than statement_timeout ends in one line."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from alembic_schemas import database, load
from alembic_schemas.errors import MigrationFailed
from alembic_schemas.runtime import schema as schema_tx
from alembic_schemas.streams import Stream

from helpers import HANG, Catalog, wait_for, with_app_name


def _stream(root: Path, settings: str = "") -> Stream:
    (root / "pyproject.toml").write_text(
        f'[tool.alembic-schemas]\n{settings}\n[tool.alembic-schemas.streams.s]\nschema = "fresh"\n'
    )
    project = load(root)
    return Stream(project, project.stream("s"))


def _in_thread(fn: Callable[[], None]) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as exc:  # reported to the test thread
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, errors


def test_second_run_waits_for_the_lock_then_finds_the_schema_created_by_the_first(
    tmp_path: Path, db_url: str, catalog: Catalog
) -> None:
    stream = _stream(tmp_path)
    engine = database.create_engine(db_url)
    waiting = database.create_engine(with_app_name(db_url, "as_waiter"))
    found: list[str] = []

    def second() -> None:
        with waiting.connect() as conn, conn.begin():
            schema_tx.begin(conn, stream, "fresh")
            found.append(conn.scalar(sa.text("SELECT current_schema()")))

    try:
        with engine.connect() as first:
            first.begin()
            schema_tx.begin(first, stream, "fresh")  # holds the lock, creates
            waiter, errors = _in_thread(second)
            wait_for("the second run to wait for the lock", catalog.waiting_for_lock("as_waiter"))
            assert waiter.is_alive() and found == []
            first.commit()
            waiter.join(timeout=HANG)
        assert errors == []
        assert found == ["fresh"]
    finally:
        engine.dispose()
        waiting.dispose()


def test_a_wait_longer_than_statement_timeout_fails_in_one_line(
    tmp_path: Path, db_url: str
) -> None:
    stream = _stream(tmp_path, 'statement_timeout = "300ms"')
    engine = database.create_engine(db_url)
    try:
        with engine.connect() as first:
            first.begin()
            schema_tx.begin(first, stream, "fresh")  # holds the lock until the test ends
            with engine.connect() as conn, conn.begin(), pytest.raises(MigrationFailed) as failed:
                schema_tx.begin(conn, stream, "fresh")
            assert str(failed.value) == (
                "another run held the schema for longer than statement_timeout (300ms)"
            )
            assert first.in_transaction(), "the first run still holds it"
    finally:
        engine.dispose()
