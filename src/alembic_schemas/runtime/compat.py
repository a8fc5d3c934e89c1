"""Every use of a private Alembic or SQLAlchemy name, in one place, each with a test
(``tests/unit/test_compat.py``) that fails loudly when an upgrade of either library moves it.

Where a public hook exists it is used instead, elsewhere: ``on_version_apply`` (commits after
a block), ``DropTableOp.to_table()``, ``static_output`` (``--sql`` text).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import alembic
import sqlalchemy as sa
from alembic import context as alembic_context
from alembic.config import Config
from alembic.operations import Operations
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import HeadMaintainer, MigrationContext
from alembic.script import Script, ScriptDirectory
from alembic.util import CommandError, to_tuple

ALEMBIC_VERSION = tuple(int(p) for p in alembic.__version__.split(".")[:2])
SQLALCHEMY_VERSION = tuple(int(p) for p in sa.__version__.split(".")[:2])

# The oldest versions these hooks were checked against (pyproject.toml says the same).
if ALEMBIC_VERSION < (1, 18):  # pragma: no cover - refused at import, see pyproject.toml
    raise ImportError(
        f"alembic-schemas needs Alembic 1.18 or newer (its autogenerate plugin API); "
        f"found {alembic.__version__}"
    )


def running_environment() -> EnvironmentContext:
    """The EnvironmentContext an ``env.py`` runs in. ``alembic.context`` is a module proxy for
    it; the object itself is needed to pass it on."""
    env = getattr(alembic_context, "_proxy", None)
    if not isinstance(env, EnvironmentContext):
        raise RuntimeError("alembic_schemas.environment.run_env() must be called from env.py")
    return env


def wrap_exec(ctx: MigrationContext, check: Callable[[Any], None]) -> None:
    """Call ``check(construct)`` before each statement the context's impl executes or, offline,
    writes. Offline output turns tabs into spaces after this point, which is what
    ``check`` may need to see first (``DefaultImpl._exec``)."""
    impl = ctx.impl
    original = impl._exec

    def exec_checked(construct: Any, *args: Any, **kwargs: Any) -> Any:
        check(construct)
        return original(construct, *args, **kwargs)

    impl._exec = exec_checked  # type: ignore[method-assign]


def replace_autocommit_block(
    ctx: MigrationContext, block: Callable[[], AbstractContextManager[None]]
) -> Callable[[], AbstractContextManager[None]]:
    """Give ``ctx`` another ``autocommit_block`` (the one revisions call through
    ``op.get_context()``); returns the original."""
    original = ctx.autocommit_block
    ctx.autocommit_block = block  # type: ignore[method-assign,assignment]
    return original


def calling_revision() -> tuple[str, str]:
    """(revision id, file) of the revision module whose upgrade()/downgrade() is running:
    Alembic does not tell the context which revision it runs until its version row is
    written. Found by walking the stack to a module with ``revision`` and ``down_revision``."""
    frame = sys._getframe(1)
    while frame is not None:
        found = frame.f_globals
        if "revision" in found and "down_revision" in found:
            return str(found["revision"]), str(found.get("__file__", "?"))
        frame = frame.f_back  # type: ignore[assignment]
    return "?", "?"


def free_sequences(metadata: sa.MetaData) -> Iterator[sa.Sequence]:
    """Every Sequence of a MetaData, also those attached to no column (``MetaData._sequences``:
    SQLAlchemy has no public accessor)."""
    yield from metadata._sequences.values()


def identity_options(sequence: sa.Sequence, dialect: sa.engine.Dialect) -> str:
    """``START WITH ... INCREMENT BY ...`` of a sequence, as PostgreSQL's DDL compiler words
    it (the name is quoted by the caller, through identifiers)."""
    compiler = dialect.ddl_compiler(dialect, None)  # type: ignore[arg-type]
    return str(compiler.get_identity_options(sequence))


def copy_column(column: sa.Column[Any]) -> sa.Column[Any]:
    """A detached copy of a Column, keeping every argument (``Column._copy``)."""
    return column._copy()


def upgrade_steps(script: ScriptDirectory, destination: str, current: tuple[str, ...]) -> list[Any]:
    """The RevisionSteps Alembic's ``upgrade`` would run from ``current`` to ``destination``,
    in its order (``ScriptDirectory._upgrade_revs``)."""
    return list(script._upgrade_revs(destination, current))  # type: ignore[arg-type]


def head_maintainer(ctx: MigrationContext, heads: tuple[str, ...]) -> Any:
    """Alembic's bookkeeping of version rows (``HeadMaintainer``): ``update_to_step(step)``
    writes, through ``ctx``, the INSERT/UPDATE/DELETE a step makes to the version table."""
    return HeadMaintainer(ctx, heads)


_VERSION_TABLES: dict[tuple[Any, ...], sa.Table] = {}


def share_version_table(ctx: MigrationContext) -> None:
    """Give ``ctx`` one version Table (``MigrationContext._version``) named without a schema,
    the same for every context with the same table: the connection's
    ``schema_translate_map`` must name the schema (``ctx.version_table_schema`` still does,
    for revisions that read it). SQLAlchemy caches a compiled statement by its Table's
    identity: Alembic's UPDATE of the version row then compiles once per revision in this
    process, not once per revision and schema (a third of the CPU of a revision Alembic
    runs for a tenant)."""
    mine = ctx._version
    pk = bool(mine.primary_key.columns)
    key = (type(ctx.impl), mine.name, pk)
    if key not in _VERSION_TABLES:
        _VERSION_TABLES[key] = ctx.impl.version_table_impl(
            version_table=mine.name, version_table_schema=None, version_table_pk=pk
        )
    ctx._version = _VERSION_TABLES[key]


class _OneRow:
    """What Alembic reads of the result of a version-row write it was spared: the count it
    checks (the caller that sends the write checks the real one)."""

    rowcount = 1


def defer_version_writes(ctx: MigrationContext, deferring: Callable[[], bool]) -> None:
    """Let ``ctx`` skip the INSERT/UPDATE/DELETE of version rows Alembic writes after each
    revision (``HeadMaintainer`` executes them through ``DefaultImpl._exec`` on
    ``ctx._version``) whenever ``deferring()`` says the caller sends them itself. Its own
    bookkeeping of the heads goes on as if they were written."""
    impl = ctx.impl
    original = impl._exec
    writes = (sa.Insert, sa.Update, sa.Delete)

    def exec_or_defer(construct: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(construct, writes) and construct.table is ctx._version and deferring():
            return _OneRow()
        return original(construct, *args, **kwargs)

    impl._exec = exec_or_defer  # type: ignore[method-assign]


def move_head(ctx: MigrationContext, before: tuple[str, ...], after: str) -> None:
    """Write, through ``ctx``, the one statement Alembic uses to take the version table from
    ``before`` (no row, or one) to the single head ``after``: its INSERT, or its UPDATE
    (``HeadMaintainer._insert_version`` / ``_update_version``)."""
    if len(before) > 1:
        raise ValueError(f"one head at most, not {before!r}")
    versions = HeadMaintainer(ctx, before)
    if before:
        versions._update_version(before[0], after)
    else:
        versions._insert_version(after)


def revision_files(script: ScriptDirectory) -> list[Path]:
    """Every file Alembic reads revisions from, in every version location (``version_locations``
    of the stream's alembic.ini, subfolders with ``recursive_version_locations``, ``.pyc`` files
    when ``sourceless``), without importing any (``ScriptDirectory._version_locations``,
    ``Script._list_py_dir``)."""
    found: list[Path] = []
    for location in script._version_locations:
        if location.exists():
            found += Script._list_py_dir(script, location)
    return sorted(found)


def assume_heads(ctx: MigrationContext, heads: tuple[str, ...]) -> None:
    """Let ``ctx.run_migrations()`` start from ``heads`` instead of reading the version table
    (``has_table`` and a SELECT: two round trips), for a caller that wrote those rows itself
    in the same transaction under the schema's lock. Once only: a later read (the commit
    before an ``autocommit_block``) sees the table as the revisions left it."""

    def once() -> tuple[str, ...]:
        vars(ctx).pop("get_current_heads", None)  # the class's method again
        return tuple(heads)

    ctx.get_current_heads = once  # type: ignore[method-assign]


def run_alembic(
    config: Config, script: ScriptDirectory, verb: str, revision: str, *, purge: bool = False
) -> None:
    """``alembic.command.upgrade/downgrade/stamp`` on an already loaded ScriptDirectory: the
    commands build a new one each time, which imports every revision file again."""
    if ":" in revision:
        raise CommandError("Range revision not allowed")

    def upgrade(rev: Any, context: Any) -> Any:
        return script._upgrade_revs(revision, rev)

    def downgrade(rev: Any, context: Any) -> Any:
        return script._downgrade_revs(revision, rev)

    def stamp(rev: Any, context: Any) -> Any:
        return script._stamp_revs(to_tuple(revision), rev)

    fn = {"upgrade": upgrade, "downgrade": downgrade, "stamp": stamp}[verb]
    destination: Any = to_tuple(revision) if verb == "stamp" else revision
    with EnvironmentContext(
        config, script, fn=fn, as_sql=False, destination_rev=destination, purge=purge
    ):
        script.run_env()


@contextlib.contextmanager
def operations(ctx: MigrationContext, **overrides: Callable[..., Any]) -> Iterator[Operations]:
    """``Operations.context(ctx)`` (``alembic.op`` bound to ``ctx``) with some of its methods
    replaced for the revision being run, e.g. ``get_bind`` (``ModuleClsProxy._install_proxy``
    binds the module's names to the instance's attributes)."""
    op = Operations(ctx)
    for name, fn in overrides.items():
        setattr(op, name, fn)
    op._install_proxy()
    try:
        yield op
    finally:
        op._remove_proxy()
