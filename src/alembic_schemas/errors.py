"""Errors a user can cause. The CLI prints their message on one line and exits with ``exit_code``."""

from __future__ import annotations


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


class CheckFailed(AlembicSchemasError):
    """``check`` found differences between the models and the database (exit 1)."""
