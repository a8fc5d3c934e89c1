"""Autogenerate reflects only the stream's schema: 200 other schemas full of look-alike tables,
types and sequences change neither the revision it writes nor the queries it sends."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from sqlalchemy import event

import alembic_schemas
from alembic_schemas import database, identifiers

from helpers import ProjectDir, scratch_database

T = TypeVar("T")

OTHER_SCHEMAS = 200

MODELS = """
import sqlalchemy as sa

metadata = sa.MetaData(schema="myschema")

sa.Table(
    "user",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(100), nullable=False, index=True),
    sa.Column("mood", sa.Enum("happy", "sad", name="mood")),
    sa.Column("number", sa.Integer, sa.Sequence("user_number")),
)
sa.Table(
    "address",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("user_id", sa.ForeignKey("myschema.user.id"), nullable=False, index=True),
    sa.Column("street", sa.String(200), server_default="unknown"),
    sa.UniqueConstraint("user_id", "street"),
)
"""


def other_schema_names(count: int) -> list[str]:
    # a few awkward names among them: mixed case, a quote, a space
    return [f'Other "{i}"' if i % 50 == 7 else f"other_{i:03d}" for i in range(count)]


def other_schemas_sql(names: list[str]) -> str:
    """Each schema gets the stream's own table, type and sequence names, with different shapes,
    FKs and indexes, and an ``alembic_version`` of its own: anything reflected would show."""
    parts = []
    for name in names:
        s = identifiers.quote(name)
        parts.append(
            f"""
            CREATE SCHEMA {s};
            CREATE TYPE {s}.mood AS ENUM ('up', 'down', 'sideways');
            CREATE SEQUENCE {s}.user_number START 42;
            CREATE TABLE {s}."user" (id bigserial PRIMARY KEY, login text UNIQUE,
                                     mood {s}.mood, seen timestamptz DEFAULT now());
            CREATE TABLE {s}.address (id serial PRIMARY KEY,
                                      user_id bigint NOT NULL REFERENCES {s}."user" (id),
                                      city text CHECK (city <> ''));
            CREATE INDEX ON {s}.address (user_id, city);
            CREATE TABLE {s}.alembic_version (version_num varchar(32) PRIMARY KEY);
            INSERT INTO {s}.alembic_version VALUES ('deadbeef');
            """
        )
    return "\n".join(parts)


@pytest.fixture
def crowded_db_url(admin_engine: sa.Engine, server_url: str) -> Iterator[str]:
    """A second fresh database, holding OTHER_SCHEMAS schemas that belong to no stream."""
    with scratch_database(admin_engine, server_url) as url:
        engine = database.create_engine(url)
        try:
            with engine.begin() as conn:
                conn.exec_driver_sql(other_schemas_sql(other_schema_names(OTHER_SCHEMAS)))
        finally:
            engine.dispose()
        yield url


def recorded(fn: Callable[[], T]) -> tuple[T, list[tuple[str, str]]]:
    """Run ``fn`` and return what it returned and every SQL statement (text, parameters) that
    any engine sent meanwhile."""
    seen: list[tuple[str, str]] = []

    def listener(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        seen.append((statement, repr(params)))

    event.listen(sa.engine.Engine, "before_cursor_execute", listener)
    try:
        return fn(), seen
    finally:
        event.remove(sa.engine.Engine, "before_cursor_execute", listener)


def revision_text(path: str) -> str:
    """A revision file without what differs on every run (its creation date)."""
    return re.sub(r"Create Date: .*", "", Path(path).read_text())


def mentions_other(statements: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [s for s in statements if "other" in (s[0] + s[1]).lower()]


def run_scenario(
    project_dir: ProjectDir, url: str, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """First revision (fixed id), upgrade, then a second autogenerate that must be empty; on
    the database at ``url``. Returns the revision texts and the statements of each autogenerate."""
    monkeypatch.setenv("ALEMBIC_SCHEMAS_URL", url)
    for old in project_dir.versions("myschema"):
        old.unlink()
    (first,), first_sql = recorded(
        lambda: alembic_schemas.revision(
            "myschema", "init", autogenerate=True, rev_id="first", config=project_dir.root
        )
    )
    alembic_schemas.upgrade(config=project_dir.root)
    (second,), second_sql = recorded(
        lambda: alembic_schemas.revision(
            "myschema", "again", autogenerate=True, rev_id="second", config=project_dir.root
        )
    )
    second_text = revision_text(second.path)
    Path(second.path).unlink()  # leave the stream at head for check
    (result,), check_sql = recorded(lambda: alembic_schemas.check(config=project_dir.root))
    return {
        "first": revision_text(first.path),
        "second": second_text,
        "first_sql": first_sql,
        "second_sql": second_sql,
        "check_sql": check_sql,
        "clean": result.clean,
        "differences": result.differences,
    }


def test_other_schemas_change_neither_the_revision_nor_the_queries(
    project_dir: ProjectDir,
    db_url: str,
    crowded_db_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    project_dir.write("scope_models.py", MODELS)
    project_dir.write(
        "pyproject.toml",
        """
        [tool.alembic-schemas]
        script_location = "migrations"

        [tool.alembic-schemas.streams.myschema]
        schema = "myschema"
        metadata = "scope_models:metadata"
        """,
    )
    alembic_schemas.init(project_dir.root)

    empty = run_scenario(project_dir, db_url, monkeypatch)
    crowded = run_scenario(project_dir, crowded_db_url, monkeypatch)

    # the same revision, byte for byte (but for its date), and nothing of the others in it
    assert "op.create_table('user'" in empty["first"]
    assert "DROP TYPE IF EXISTS" in empty["first"]  # our additions ran too
    assert crowded["first"] == empty["first"]
    assert "other" not in crowded["first"].lower()
    assert crowded["second"] == empty["second"]
    assert "op." not in crowded["second"]  # nothing left to do after upgrade
    assert crowded["clean"], crowded["differences"]
    assert empty["clean"], empty["differences"]

    # Reflection is scoped before it starts: no query names another schema, and the crowded
    # database costs exactly as many queries as the empty one.
    for key in ("first_sql", "second_sql", "check_sql"):
        assert mentions_other(crowded[key]) == [], key
        assert len(crowded[key]) == len(empty[key]), key


def test_the_recorder_sees_reflection_of_other_schemas(crowded_db_url: str) -> None:
    """The check above would notice an unscoped reflection: reflecting the whole database
    (Alembic's include_schemas without include_name) names the other schemas in its queries."""
    engine = database.create_engine(crowded_db_url)
    try:

        def reflect_everything() -> None:
            with engine.connect() as conn:
                sa.MetaData().reflect(conn, schema="other_000")

        _, statements = recorded(reflect_everything)
    finally:
        engine.dispose()
    assert mentions_other(statements)
