"""alembic-schemas: PostgreSQL schema-level migrations on Alembic.

The public API: one function per verb (see :mod:`alembic_schemas.command`), the tenant
lifecycle in :mod:`alembic_schemas.tenants`, the result types and the errors.
"""

from . import aio, tenants
from .command import (
    InitResult,
    add_stream,
    alembic_config,
    check,
    current,
    downgrade,
    heads,
    history,
    init,
    last_failures,
    merge,
    revision,
    show,
    stamp,
    status,
    upgrade,
    verify,
)
from .config import Project, load, load_project
from .errors import (
    AlembicSchemasError,
    CheckFailed,
    ConfigError,
    DatabaseError,
    MigrationFailed,
    RevisionError,
)
from .results import CheckResult, EditedRevision, SchemaResult, SchemaState, UpgradeReport

__all__ = [
    "AlembicSchemasError",
    "CheckFailed",
    "CheckResult",
    "ConfigError",
    "DatabaseError",
    "EditedRevision",
    "InitResult",
    "MigrationFailed",
    "Project",
    "RevisionError",
    "SchemaResult",
    "SchemaState",
    "UpgradeReport",
    "add_stream",
    "aio",
    "alembic_config",
    "check",
    "current",
    "downgrade",
    "heads",
    "history",
    "init",
    "last_failures",
    "load",
    "load_project",
    "merge",
    "revision",
    "show",
    "stamp",
    "status",
    "tenants",
    "upgrade",
    "verify",
]
