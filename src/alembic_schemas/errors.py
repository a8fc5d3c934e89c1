"""Errors a user can cause. The CLI prints their message on one line and exits with ``exit_code``."""

from __future__ import annotations

import os
import traceback

import alembic
import sqlalchemy


class AlembicSchemasError(Exception):
    """Base class: an error with a one-line message meant for the user."""

    exit_code = 1


class ConfigError(AlembicSchemasError):
    """Bad or missing configuration, unknown stream, bad name: a usage error (exit 2)."""

    exit_code = 2


class RevisionError(AlembicSchemasError):
    """An unknown or ambiguous revision (exit 2)."""

    exit_code = 2


class DatabaseError(AlembicSchemasError):
    """The database could not be reached or refused us (exit 1)."""


class MigrationFailed(AlembicSchemasError):
    """A migration ran and failed (exit 1)."""


class Interrupted(AlembicSchemasError):
    """A run stopped on request (Ctrl-C): no new schema started, those in flight finished or
    rolled back (exit 130, as a shell reports SIGINT)."""

    exit_code = 130


class CheckFailed(AlembicSchemasError):
    """``check`` found differences between the models and the database (exit 1)."""


def _library_folders() -> tuple[str, ...]:
    own = os.path.dirname(os.path.abspath(__file__))
    return tuple(
        os.path.dirname(os.path.abspath(m.__file__ or "")) + os.sep for m in (alembic, sqlalchemy)
    ) + (own + os.sep,)


# What Alembic's op.run_async raises on a sync connection, and what the user is told instead.
RUN_ASYNC_REFUSED = "Cannot call run_async with a sync engine"
RUN_ASYNC_HINT = (
    "op.run_async is not supported: alembic-schemas runs every migration on psycopg 3 (sync), "
    "also for postgresql+asyncpg URLs; write the step with op.get_bind() or op.execute()"
)


def describe_python_error(exc: BaseException) -> str:
    """One line for a Python error raised by user code (a revision, env.py, a helper it
    imports): the exception, and the innermost frame outside Alembic, SQLAlchemy and this
    package, which is where the user's code went wrong."""
    text = str(exc).strip()
    line = f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")
    if isinstance(exc, ValueError) and text == RUN_ASYNC_REFUSED:
        line = RUN_ASYNC_HINT
    if isinstance(exc, SyntaxError):  # names its file already
        return line
    frames = traceback.extract_tb(exc.__traceback__)
    libraries = _library_folders()
    # "<string>": code Alembic generates for its op/context proxies
    users = [
        f
        for f in frames
        if not (f.filename.startswith("<") or os.path.abspath(f.filename).startswith(libraries))
    ]
    frame = (users or frames)[-1] if frames else None
    if frame is not None:
        line += f" (at {frame.filename}:{frame.lineno}; --verbose shows the traceback)"
    return line
