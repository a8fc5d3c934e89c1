"""One test per function of ``alembic_schemas.runtime.compat``, the only module that touches
private Alembic and SQLAlchemy names: an upgrade of either library that moves one of them fails
here, by name, before any behaviour test does."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.config import Config
from alembic.operations import Operations
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.dialects import postgresql

from alembic_schemas.runtime import compat


def _offline_context() -> tuple[MigrationContext, io.StringIO]:
    out = io.StringIO()
    ctx = MigrationContext.configure(
        dialect_name="postgresql", opts={"as_sql": True, "output_buffer": out}
    )
    return ctx, out


# An env.py that runs offline into a file: run_alembic can be seen working without a server.
ENV_PY = """
import os
from alembic import context

with open(os.environ["COMPAT_SQL_OUT"], "w") as out:
    context.configure(dialect_name="postgresql", as_sql=True, output_buffer=out)
    with context.begin_transaction():
        context.run_migrations()
"""


@pytest.fixture
def script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ScriptDirectory:
    """A script directory with a -> b -> c, each upgrade selecting its own name."""
    (tmp_path / "versions").mkdir()
    (tmp_path / "env.py").write_text(ENV_PY, encoding="utf-8")
    for rev, down in (("a", None), ("b", "a"), ("c", "b")):
        (tmp_path / "versions" / f"{rev}.py").write_text(
            f"from alembic import op\nrevision = {rev!r}\ndown_revision = {down!r}\n\n\n"
            f"def upgrade():\n    op.execute(\"SELECT '{rev}'\")\n",
            encoding="utf-8",
        )
    monkeypatch.setenv("COMPAT_SQL_OUT", str(tmp_path / "out.sql"))
    return ScriptDirectory(str(tmp_path))


def test_running_environment_is_the_env_py_context_and_refused_outside_one() -> None:
    with pytest.raises(RuntimeError, match=r"run_env\(\) must be called from env.py"):
        compat.running_environment()
    with EnvironmentContext(Config(), None) as env:  # type: ignore[arg-type]
        assert compat.running_environment() is env
    with pytest.raises(RuntimeError):
        compat.running_environment()


def test_wrap_exec_sees_each_construct_before_the_offline_output() -> None:
    ctx, out = _offline_context()
    seen: list[tuple[Any, str]] = []
    compat.wrap_exec(ctx, lambda construct: seen.append((construct, out.getvalue())))
    op = Operations(ctx)
    op.execute("SELECT 1")
    op.create_table("item", sa.Column("id", sa.Integer, primary_key=True))
    (text, _), (create, _) = seen
    assert str(text) == "SELECT 1"
    assert isinstance(create, sa.schema.CreateTable) and create.element.name == "item"
    assert seen[0][1] == "" and "SELECT 1;" in seen[1][1], "called before each is written"
    assert "CREATE TABLE item" in out.getvalue()


def test_replace_autocommit_block_installs_the_new_one_and_returns_the_original() -> None:
    ctx, out = _offline_context()
    calls: list[str] = []

    @contextmanager
    def block() -> Iterator[None]:
        calls.append("entered")
        yield

    original = ctx.autocommit_block
    returned = compat.replace_autocommit_block(ctx, block)
    assert returned == original
    with Operations(ctx).get_context().autocommit_block():
        pass
    assert calls == ["entered"]
    with returned():  # the original still works: offline, it writes COMMIT / BEGIN
        pass
    assert "COMMIT;" in out.getvalue()


def test_calling_revision_finds_the_revision_module_up_the_stack() -> None:
    module: dict[str, Any] = {
        "revision": "r9",
        "down_revision": "r8",
        "__file__": "/project/migrations/core/versions/r9.py",
        "compat": compat,
    }
    exec("def upgrade():\n    return (lambda: compat.calling_revision())()", module)
    assert module["upgrade"]() == ("r9", "/project/migrations/core/versions/r9.py")
    assert compat.calling_revision() == ("?", "?"), "no revision module on the stack"


def test_free_sequences_lists_a_metadata_level_sequence() -> None:
    metadata = sa.MetaData()
    sa.Sequence("free_seq", metadata=metadata)
    sa.Table("t", metadata, sa.Column("id", sa.Integer, sa.Sequence("t_seq"), primary_key=True))
    assert sorted(s.name for s in compat.free_sequences(metadata)) == ["free_seq", "t_seq"]


def test_identity_options_render_as_postgresql_words_them() -> None:
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    seq = sa.Sequence("s", start=5, increment=2, minvalue=1, cycle=True)
    assert compat.identity_options(seq, dialect) == "INCREMENT BY 2 START WITH 5 MINVALUE 1 CYCLE"
    assert compat.identity_options(sa.Sequence("plain"), dialect) == ""


def test_copy_column_keeps_type_and_arguments_detached() -> None:
    table = sa.Table(
        "t",
        sa.MetaData(),
        sa.Column(
            "code",
            sa.String(20),
            nullable=False,
            server_default="x",
            comment="the code",
            info={"k": 1},
        ),
    )
    copy = compat.copy_column(table.c.code)
    assert copy is not table.c.code and copy.table is None  # type: ignore[comparison-overlap]
    assert isinstance(copy.type, sa.String) and copy.type.length == 20
    assert (copy.name, copy.nullable, copy.comment, copy.info) == (
        "code",
        False,
        "the code",
        {"k": 1},
    )
    assert isinstance(copy.server_default, sa.DefaultClause)
    assert str(copy.server_default.arg) == "x"


def test_upgrade_steps_are_alembics_steps_in_order(script: ScriptDirectory) -> None:
    steps = compat.upgrade_steps(script, "heads", ())
    assert [(s.revision.revision, s.is_upgrade) for s in steps] == [
        ("a", True),
        ("b", True),
        ("c", True),
    ]
    assert [s.revision.revision for s in compat.upgrade_steps(script, "heads", ("b",))] == ["c"]


def test_head_maintainer_writes_the_version_rows_of_each_step(script: ScriptDirectory) -> None:
    ctx, out = _offline_context()
    versions = compat.head_maintainer(ctx, ())
    for step in compat.upgrade_steps(script, "b", ()):
        versions.update_to_step(step)
    written = out.getvalue()
    assert "INSERT INTO alembic_version (version_num) VALUES ('a')" in written
    assert "UPDATE alembic_version SET version_num='b' WHERE" in written
    assert versions.heads == {"b"}


def test_move_head_writes_alembics_own_insert_or_update(script: ScriptDirectory) -> None:
    ctx, out = _offline_context()
    steps = compat.upgrade_steps(script, "c", ())
    versions = compat.head_maintainer(ctx, ())
    versions.update_to_step(steps[0])  # Alembic's statements for base -> a, then a -> b
    versions.update_to_step(steps[1])
    ctx2, out2 = _offline_context()
    compat.move_head(ctx2, (), "a")
    compat.move_head(ctx2, ("a",), "b")
    assert out2.getvalue() == out.getvalue()
    assert "INSERT INTO alembic_version" in out.getvalue()
    assert "UPDATE alembic_version SET version_num='b'" in out.getvalue()
    with pytest.raises(ValueError, match="one head at most"):
        compat.move_head(ctx2, ("a", "b"), "c")


def test_defer_version_writes_skips_alembics_version_rows_only_while_asked(
    script: ScriptDirectory,
) -> None:
    ctx, out = _offline_context()
    deferring = [True]
    compat.defer_version_writes(ctx, lambda: deferring[0])
    steps = compat.upgrade_steps(script, "c", ())
    versions = compat.head_maintainer(ctx, ())
    versions.update_to_step(steps[0])  # base -> a: its INSERT left to the caller
    ctx.impl._exec("SELECT 'not a version row'")  # everything else goes through
    assert "alembic_version" not in out.getvalue()
    assert "SELECT 'not a version row'" in out.getvalue()
    assert versions.heads == {"a"}  # Alembic's own bookkeeping went on
    deferring[0] = False
    versions.update_to_step(steps[1])
    assert "UPDATE alembic_version SET version_num='b'" in out.getvalue()
    assert versions.heads == {"b"}


def test_share_version_table_gives_every_context_one_schemaless_table() -> None:
    def online(schema: str) -> MigrationContext:
        ctx = MigrationContext.configure(
            dialect_name="postgresql", opts={"version_table_schema": schema}
        )
        compat.share_version_table(ctx)
        return ctx

    a, b = online("tenant_a"), online("tenant_b")
    assert a._version is b._version
    assert a._version.schema is None and a._version.name == "alembic_version"
    assert a.version_table_schema == "tenant_a"  # what revisions read is left alone
    statement = a._version.update().values(version_num="x")
    translated = statement.compile(
        dialect=postgresql.dialect(),
        schema_translate_map={None: "tenant_b"},
        render_schema_translate=True,
    )
    assert "tenant_b.alembic_version" in str(translated).replace('"', "")


def test_run_alembic_runs_env_py_on_the_loaded_script(
    script: ScriptDirectory, tmp_path: Path
) -> None:
    config = Config()
    compat.run_alembic(config, script, "upgrade", "b")
    written = (tmp_path / "out.sql").read_text(encoding="utf-8")
    assert "-- Running upgrade  -> a" in written and "-- Running upgrade a -> b" in written
    assert "SELECT 'c'" not in written
    compat.run_alembic(config, script, "stamp", "c")
    assert "INSERT INTO alembic_version (version_num) VALUES ('c')" in (
        (tmp_path / "out.sql").read_text(encoding="utf-8")
    )
    with pytest.raises(CommandError, match="Range revision not allowed"):
        compat.run_alembic(config, script, "upgrade", "a:b")


def test_operations_binds_alembic_op_with_overrides_for_the_block() -> None:
    from alembic import op

    ctx, out = _offline_context()
    with compat.operations(ctx, get_bind=lambda: "the tenant's connection"):
        assert op.get_bind() == "the tenant's connection"  # type: ignore[comparison-overlap]
        op.execute("SELECT 1")
    assert "SELECT 1;" in out.getvalue()
    with pytest.raises(AttributeError):
        op.get_bind()  # unbound again once the block ends: no context behind alembic.op


def test_revision_files_lists_every_version_location_without_importing(tmp_path: Path) -> None:
    (tmp_path / "versions").mkdir()
    (tmp_path / "versions" / "a.py").write_text("raise SystemExit('imported')\n")
    extra = tmp_path / "elsewhere"
    (extra / "nested").mkdir(parents=True)
    (extra / "b.py").write_text("")
    (extra / "nested" / "c.py").write_text("")
    script = ScriptDirectory(
        str(tmp_path),
        version_locations=[str(tmp_path / "versions"), str(extra)],
        recursive_version_locations=True,
    )
    assert compat.revision_files(script) == sorted(
        [tmp_path / "versions" / "a.py", extra / "b.py", extra / "nested" / "c.py"]
    )
    flat = ScriptDirectory(str(tmp_path))  # Alembic's default: versions/ alone
    assert compat.revision_files(flat) == [tmp_path / "versions" / "a.py"]


def test_assume_heads_answers_the_first_read_then_reads_the_table_again() -> None:
    class Counting(MigrationContext):
        reads = 0

        def get_current_heads(self) -> tuple[str, ...]:
            Counting.reads += 1
            return ("from_table",)

    ctx = Counting(postgresql.dialect(), None, {"as_sql": True, "output_buffer": io.StringIO()})
    compat.assume_heads(ctx, ("a", "b"))
    assert ctx.get_current_heads() == ("a", "b")
    assert Counting.reads == 0
    assert ctx.get_current_heads() == ("from_table",)
    assert Counting.reads == 1
