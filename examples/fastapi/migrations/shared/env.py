"""Alembic environment of an alembic-schemas stream.

The behaviour lives in the library, so `alembic-schemas` and plain
`alembic -c <this folder>/alembic.ini ...` run this stream the same way.
"""

from alembic_schemas.environment import run_env

run_env()
