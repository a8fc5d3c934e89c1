"""With no URL anywhere, commands use an embedded PostgreSQL kept beside the config."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

SEED = Path(__file__).resolve().parent.parent / "examples" / "seed"


def _cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "ALEMBIC_SCHEMAS_URL"}
    return subprocess.run(
        [sys.executable, "-m", "alembic_schemas", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def seed_copy(tmp_path: Path) -> Iterator[Path]:
    # Short path: the server's Unix socket lives in its data folder.
    root = tmp_path / "seed"
    shutil.copytree(SEED, root, ignore=shutil.ignore_patterns("__pycache__", ".alembic-schemas"))
    yield root
    _cli(root, "embedded", "stop")


def test_without_a_url_an_embedded_server_is_started_once_and_reused(seed_copy: Path) -> None:
    first = _cli(seed_copy, "upgrade")
    assert first.returncode == 0, first.stderr
    pgdata = seed_copy / ".alembic-schemas" / "pgdata"
    assert f"using embedded PostgreSQL in {pgdata}" in first.stderr
    assert (pgdata / "PG_VERSION").is_file()
    assert "myschema: <base> -> 0002_myschema_marks" in first.stdout
    pid = (pgdata / "postmaster.pid").read_text().split()[0]

    again = _cli(seed_copy, "check")
    assert again.returncode == 0, again.stderr
    assert (pgdata / "postmaster.pid").read_text().split()[0] == pid, "the server was reused"

    stopped = _cli(seed_copy, "embedded", "stop")
    assert stopped.stdout.strip() == "stopped", stopped.stderr
    assert not (pgdata / "postmaster.pid").exists()
    # Data survives a restart: the next command finds the schemas at head.
    current = _cli(seed_copy, "current")
    assert current.returncode == 0, current.stderr
    assert "myschema: 0002_myschema_marks (head)" in current.stdout
