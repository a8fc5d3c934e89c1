"""The unit layer: pure logic, no PostgreSQL. ``python -m pytest tests/unit`` runs in seconds.

The database fixtures of ``tests/conftest.py`` are shadowed here, so that a unit test asking for
one fails at once instead of starting the session's embedded server."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def server_url() -> str:
    pytest.fail("tests/unit must not use PostgreSQL (server_url, admin_engine, db_url, db)")
