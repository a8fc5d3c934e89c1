"""Two runs preparing the same new schema at once: the second waits, then finds it."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import sqlalchemy as sa

from alembic_schemas import database, load
from alembic_schemas.runtime import schema as schema_tx
from alembic_schemas.streams import Stream


def test_second_run_waits_for_the_lock_then_finds_the_schema_created_by_the_first(
    tmp_path: Path, db_url: str
) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.alembic-schemas]\n[tool.alembic-schemas.streams.s]\nschema = "fresh"\n'
    )
    project = load(tmp_path)
    stream = Stream(project, project.stream("s"))
    engine = database.create_engine(db_url)
    errors: list[BaseException] = []
    try:
        with engine.connect() as first:
            first.begin()
            schema_tx.begin(first, stream, "fresh")  # holds the lock, creates

            def second() -> None:
                try:
                    with engine.connect() as conn, conn.begin():
                        schema_tx.begin(conn, stream, "fresh")
                        assert conn.scalar(sa.text("SELECT current_schema()")) == "fresh"
                except BaseException as exc:  # reported to the test thread
                    errors.append(exc)

            waiter = threading.Thread(target=second)
            waiter.start()
            time.sleep(0.5)  # the second run is now waiting on the advisory lock
            assert waiter.is_alive()
            first.commit()
            waiter.join(timeout=30)
        assert not waiter.is_alive()
        assert errors == []
    finally:
        engine.dispose()
