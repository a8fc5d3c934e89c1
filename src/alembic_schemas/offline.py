"""``--sql``: each schema's migration SQL written out by Alembic's offline mode, touching no
database and starting no server."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import IO, Any

from alembic.config import Config
from alembic.script.revision import RevisionError as AlembicRevisionError
from alembic.util import CommandError

from . import environment, identifiers, sources
from .config import Project
from .errors import AlembicSchemasError, ConfigError, MigrationFailed, describe_python_error
from .streams import SCHEMA_KEY, Stream, streams_of


def write(
    project: Project,
    streams: Sequence[str] | None,
    tenants: Sequence[str] | None,
    run: Callable[[Config], Any],
    output: IO[str] | None,
) -> None:
    """Run ``run`` (an Alembic command with ``sql=True``) for every selected schema; every
    refusal comes before any output."""
    sources.refuse_bad(tenants, project)
    out = output or sys.stdout
    todo: list[tuple[Stream, str]] = []
    for stream in streams_of(project, streams):
        if stream.is_tenant and not tenants:
            raise ConfigError(f"--sql for tenant stream {stream.name!r} needs --tenant NAME")
        schemas = tenants if stream.is_tenant else [stream.schema]
        for schema in schemas or ():
            assert schema is not None
            identifiers.validate(schema)
            environment.refuse_offline_tabs(stream, schema)
            todo.append((stream, schema))
    for stream, schema in todo:
        # A newline in the name would end this comment and start a statement of its own.
        shown = schema if schema.isprintable() else repr(schema)
        out.write(f"-- stream {stream.name}, schema {shown}\n")
        cfg = stream.alembic_config(**{SCHEMA_KEY: schema})
        cfg.output_buffer = out  # type: ignore[assignment]
        try:
            run(cfg)
        except (AlembicSchemasError, CommandError, AlembicRevisionError):
            raise
        except Exception as exc:  # a revision's own error: name it, its file and line
            where = f"{stream.name}/{schema}" if stream.is_tenant else stream.name
            raise MigrationFailed(f"{where}: {describe_python_error(exc)}") from exc
