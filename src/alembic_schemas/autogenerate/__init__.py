"""Scoped comparison of a stream's models with one schema, readable descriptions of diffs, and
what Alembic's autogenerate leaves out on PostgreSQL.

Alembic compares tables, columns, indexes and constraints, but not the schema objects around
them. Two of those break real projects, so a stream's autogenerate also handles:

* **named enum types** (``sa.Enum`` / ``postgresql.ENUM``): ``op.create_table`` creates them,
  but nothing drops them, so downgrade-then-upgrade fails with "type already exists"; a new
  table reusing an existing type fails the same way; ``op.add_column`` never creates one.
  :func:`process_revision_directives` rewrites the generated operations: a ``CREATE TYPE``
  before a column that needs a type not yet there, ``create_type=False`` on a new table whose
  type exists, and a ``DROP TYPE`` after the last table or column that used a type the
  revision created (downgrade) or orphaned (upgrade).
* **sequences** (``sa.Sequence`` on a column or in the MetaData): Alembic neither creates nor
  compares them. A comparator plugin adds ``CREATE SEQUENCE`` for missing ones (before the
  tables, whose defaults may call them) and ``DROP SEQUENCE`` for ones no longer modelled
  (after the tables); sequences owned by a SERIAL or IDENTITY column are the column's business.
  ``nextval('seq')`` server defaults are compared by qualified name, not by running them.
* **enums in arrays**: ``ARRAY(Enum)`` without a schema is compared as the type the stream
  created, not as a different type (SQLAlchemy 2.1 enums do not inherit the table's schema).

Everything is rendered as ``op.execute("...")`` with names quoted by :mod:`identifiers`, so
revision files stay plain Alembic that needs nothing from this package to run. A tenant
stream's objects are named without a schema (``DROP TYPE IF EXISTS "account_role"``): they
resolve through the search_path pinned to whichever tenant the revision is applied to.
"""

from __future__ import annotations

from . import comparators  # noqa: F401  (registers the autogenerate plugin with Alembic)
from .compare import compare, describe
from .scope import context_options, schemaless_options

__all__ = ["compare", "context_options", "describe", "schemaless_options"]
