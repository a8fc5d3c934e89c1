"""Stream: one Alembic script directory plus one MetaData, targeting one schema or every tenant."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic.config import Config
from alembic.script import ScriptDirectory

from . import identifiers
from .config import Project, StreamConfig
from .errors import ConfigError

PROJECT_KEY = "alembic_schemas.project"
STREAM_KEY = "alembic_schemas.stream"
SCHEMA_KEY = "alembic_schemas.schema"
SCRATCH_KEY = "alembic_schemas.scratch"
# The caller has set up the schema's transaction already (runtime.schema.begin).
PREPARED_KEY = "alembic_schemas.prepared"
# With PREPARED_KEY: the schema's version rows, known to the caller (it holds the schema's lock
# and wrote them in this transaction), so Alembic need not read them again.
HEADS_KEY = "alembic_schemas.heads"
# With PREPARED_KEY: an environment.Session that keeps the configured run for the caller's later
# revisions in the same transaction (env.py then runs once per schema, as with plain Alembic).
SESSION_KEY = "alembic_schemas.session"


def prepend_sys_path(root: Path) -> None:
    """The project's folder first on ``sys.path``, as Alembic's ``prepend_sys_path = .``:
    models and the app helpers revisions import are found from there."""
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))


def resolve_attr(path: str, root: Path, what: str) -> Any:
    """Import ``module:attr.attr`` with ``root`` first on sys.path (Alembic's prepend_sys_path)."""
    module_name, sep, attrs = path.partition(":")
    if not sep or not module_name or not attrs:
        raise ConfigError(f"{what} {path!r} must look like 'package.module:attribute'")
    prepend_sys_path(root)
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise ConfigError(
            f"{what} {path!r} could not be imported: {type(exc).__name__}: {exc}"
        ) from None
    for part in attrs.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(
                f"{what} {path!r}: {module_name} has no attribute {attrs!r}"
            ) from None
    return obj


class Stream:
    """A configured stream of a project, with lazy access to its scripts and models."""

    def __init__(self, project: Project, config: StreamConfig) -> None:
        self.project = project
        self.config = config

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def schema(self) -> str | None:
        return self.config.schema

    @property
    def is_tenant(self) -> bool:
        return self.config.is_tenant

    @property
    def version_table(self) -> str:
        return self.config.version_table

    @property
    def path(self) -> Path:
        return self.project.script_location / self.name

    def __repr__(self) -> str:
        return f"<Stream {self.name}>"

    @cached_property
    def script(self) -> ScriptDirectory:
        if not (self.path / "env.py").is_file():
            raise ConfigError(
                f"stream {self.name!r} has no script directory at {self.path} "
                "(run 'alembic-schemas init')"
            )
        prepend_sys_path(self.project.root)  # revisions may import the app's helpers
        return ScriptDirectory.from_config(self.alembic_config())

    @cached_property
    def metadata(self) -> sa.MetaData | None:
        if self.config.metadata is None:
            return None
        md = resolve_attr(
            self.config.metadata, self.project.root, f"metadata of stream {self.name!r}"
        )
        if not isinstance(md, sa.MetaData):
            raise ConfigError(
                f"metadata of stream {self.name!r} ({self.config.metadata}) is a "
                f"{type(md).__name__}, not a sqlalchemy MetaData"
            )
        return md

    @cached_property
    def baseline_metadata(self) -> sa.MetaData:
        """The models a new schema is built from at ``baseline``: ``baseline_metadata`` when
        set (a frozen copy of the models as they were at that revision), else ``metadata``."""
        if self.config.baseline_metadata is None:
            return self.require_metadata()
        md = resolve_attr(
            self.config.baseline_metadata,
            self.project.root,
            f"baseline_metadata of stream {self.name!r}",
        )
        if not isinstance(md, sa.MetaData):
            raise ConfigError(
                f"baseline_metadata of stream {self.name!r} ({self.config.baseline_metadata})"
                f" is a {type(md).__name__}, not a sqlalchemy MetaData"
            )
        return md

    def require_metadata(self) -> sa.MetaData:
        if self.metadata is None:
            raise ConfigError(f"stream {self.name!r} has no 'metadata' configured")
        return self.metadata

    def target_metadata(self, schema: str | None) -> sa.MetaData:
        """The stream's models with ``schema=None`` tables placed in ``schema``.

        Tables already naming a schema keep it; tables in other schemas are left to the
        include filters (they are references, e.g. a tenant FK to a shared table).

        A named stream owns the schema-less tables only when *all* its models are schema-less:
        when some name a schema, the MetaData is shared (one ``SQLModel.metadata`` for a named
        and a tenant stream) and the schema-less tables are the tenant stream's, so the named
        stream owns just the tables that name its schema.
        """
        md = self.require_metadata()
        tables = md.tables.values()
        schemaless = [t for t in tables if t.schema is None]
        if schema is None or not schemaless:
            return md
        if not self.is_tenant and len(schemaless) < len(tables):
            return md  # the include filters compare only the tables naming `schema`
        target = sa.MetaData(naming_convention=md.naming_convention)
        for table in md.sorted_tables:
            copy = table.to_metadata(
                target, schema=identifiers.sa_name(schema) if table.schema is None else table.schema
            )
            _keep_names(table, copy)
        return target

    @property
    def ini_path(self) -> Path:
        return self.path / "alembic.ini"

    def alembic_config(self, **attributes: Any) -> Config:
        """A plain ``alembic.config.Config`` for this stream, usable with ``alembic.command``.

        It is read from the stream's ``alembic.ini`` when there is one, so ``file_template``,
        ``truncate_slug_length``, ``post_write_hooks`` and the rest apply as they do for plain
        ``alembic -c migrations/<stream>/alembic.ini``; the project's ``-x`` arguments reach
        env.py as ``context.get_x_argument()``."""
        ini = self.ini_path
        cfg = Config(
            str(ini) if ini.is_file() else None,
            cmd_opts=argparse.Namespace(x=list(self.project.x_arguments)),
        )
        # The stream's folder, wherever the ini's script_location points (%% for ConfigParser).
        cfg.set_main_option("script_location", str(self.path).replace("%", "%%"))
        cfg.attributes[PROJECT_KEY] = self.project
        cfg.attributes[STREAM_KEY] = self.name
        cfg.attributes.update(attributes)
        return cfg


def _keep_names(original: sa.Table, copy: sa.Table) -> None:
    """Give the copy's indexes and constraints exactly the original's names.

    ``to_metadata`` keeps the name of every item it copies. Only the items a column makes
    for itself (``index=True``, ``unique=True``) are made anew in the copy, and a naming
    convention using ``column_0_label`` then puts the schema into their names. Those, and
    only those, get their original's name back: an item whose name the copy kept is never
    touched, so two indexes on the same columns, expression indexes and table-level CHECK
    constraints (which have no columns) each keep their own name."""
    originals: list[Any] = [*original.indexes, *original.constraints]
    copies: list[Any] = [*copy.indexes, *copy.constraints]
    kept = {item.name for item in copies if isinstance(item.name, str)}
    lost: dict[tuple[Any, ...], list[str]] = {}
    for item in originals:
        if isinstance(item.name, str) and item.name not in kept:
            lost.setdefault(_made_by_column(item), []).append(item.name)
    names = {item.name for item in originals if isinstance(item.name, str)}
    for item in copies:
        if isinstance(item.name, str) and item.name not in names:
            found = lost.get(_made_by_column(item))
            if found:
                item.name = found.pop(0)


def _made_by_column(item: Any) -> tuple[Any, ...]:
    """What tells apart the items columns make: one index and one unique constraint per
    column at most."""
    return (
        type(item).__name__,
        tuple(c.name for c in item.columns),
        bool(getattr(item, "unique", False)),
    )


def streams_of(project: Project, names: Sequence[str] | None = None) -> list[Stream]:
    return [Stream(project, c) for c in project.select(names)]
