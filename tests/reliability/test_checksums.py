"""Edited history (issue 5, promise 6): each applied revision's file checksum is recorded in
``alembic_schemas.applied`` in the migration's own transaction; ``verify`` and ``status``
name every applied revision whose file changed afterwards.

A named stream ``core`` (c1, c2) and a tenant stream ``tenant`` over three tenants: ``r1`` is
replayed as SQL, ``r2`` reads the database (``op.get_bind()``) so runs through Alembic, and
``r3`` exists but is not applied in the first test.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

import alembic_schemas
from alembic_schemas import command

from helpers import TENANT_STREAM, ProjectDir, config_toml, create_schemas, revision_text

TENANTS = ("t_a", "t_b", "t_c")

CORE = {
    "c1": revision_text("c1", None, '    op.execute("CREATE TABLE account (id int)")'),
    "c2": revision_text("c2", "c1", '    op.execute("CREATE TABLE account2 (id int)")'),
}
TENANT = {
    "r1": revision_text("r1", None, '    op.execute("CREATE TABLE item (id int)")'),
    # reads the tenant through a live connection: runs through Alembic, not replay
    "r2": revision_text(
        "r2",
        "r1",
        '    op.get_bind().execute(sa.text("SELECT count(*) FROM item"))\n'
        '    op.execute("CREATE TABLE audit (id int)")',
    ),
    "r3": revision_text("r3", "r2", '    op.execute("CREATE TABLE later (id int)")'),
}


@dataclass
class History:
    project: ProjectDir
    db: sa.Engine

    def path(self, stream: str, rev: str) -> Path:
        return Path(self.project.root, "migrations", stream, "versions", f"{rev}.py")

    def write(self, stream: str, rev: str, text: str) -> None:
        self.path(stream, rev).write_text(text, encoding="utf-8")

    def edit(self, stream: str, rev: str) -> None:
        with self.path(stream, rev).open("a", encoding="utf-8") as f:
            f.write("# edited after it was applied\n")

    def sha(self, stream: str, rev: str) -> str:
        return hashlib.sha256(self.path(stream, rev).read_bytes()).hexdigest()

    def rows(self) -> dict[tuple[str, str, str], str]:
        with self.db.connect() as conn:
            found = conn.execute(
                sa.text(
                    "SELECT stream, schema_name, revision, checksum FROM alembic_schemas.applied"
                )
            )
            return {(s, n, r): c for s, n, r, c in found}

    def message(self, stream: str, schema: str, rev: str) -> str:
        path = self.path(stream, rev)
        return f"{stream}/{schema}: revision {rev} ({path}) was edited after it was applied"

    def verify(self, *args: str) -> tuple[int, list[str]]:
        proc = self.project.cli("verify", *args)
        assert proc.returncode in (0, 1), proc.stderr
        return proc.returncode, [line for line in proc.stdout.splitlines() if line]


@pytest.fixture
def history(project_dir: ProjectDir, db: sa.Engine) -> History:
    project_dir.write("pyproject.toml", config_toml({"core": {"schema": "core"}, **TENANT_STREAM}))
    alembic_schemas.init(project_dir.root)
    h = History(project_dir, db)
    for rev, text in CORE.items():
        h.write("core", rev, text)
    for rev, text in TENANT.items():
        h.write("tenant", rev, text)
    create_schemas(db, TENANTS)
    return h


def _applied(
    h: History, core: tuple[str, ...], tenant: tuple[str, ...], tenants: tuple[str, ...]
) -> dict[tuple[str, str, str], str]:
    expected = {("core", "core", rev): h.sha("core", rev) for rev in core}
    for t in tenants:
        expected.update({("tenant", t, rev): h.sha("tenant", rev) for rev in tenant})
    return expected


def test_verify_names_each_edited_applied_revision_and_its_file(history: History) -> None:
    h = history
    h.project.cli("upgrade", "-s", "core", check=True)
    h.project.cli("upgrade", "-s", "tenant", "r2", check=True)
    # r1 went through the SQL replay path, r2 through Alembic: both recorded with the hash
    # of the file's bytes; r3 is not applied, so not recorded.
    assert h.rows() == _applied(h, ("c1", "c2"), ("r1", "r2"), TENANTS)
    assert h.verify() == (0, ["every applied revision matches its file"])

    h.edit("tenant", "r3")  # not applied yet: editing it is fine
    assert h.verify()[0] == 0

    h.edit("core", "c1")
    h.edit("tenant", "r1")
    h.edit("tenant", "r2")
    code, lines = h.verify()
    assert code == 1
    expected = [h.message("core", "core", "c1")] + [
        h.message("tenant", t, rev) for t in TENANTS for rev in ("r1", "r2")
    ]
    assert sorted(lines) == sorted(expected)

    proc = h.project.cli("verify", "-s", "tenant", "--tenant", "t_b", "--json")
    assert proc.returncode == 1
    found = json.loads(proc.stdout)
    assert {(e["schema"], e["revision"], e["path"]) for e in found} == {
        ("t_b", rev, str(h.path("tenant", rev))) for rev in ("r1", "r2")
    }
    assert all(e["current"] == h.sha("tenant", e["revision"]) != e["recorded"] for e in found)

    status = json.loads(h.project.cli("status", "--no-drift", "--json", check=True).stdout)
    assert sorted(e["message"] for e in status["edited"]) == sorted(expected)
    assert {"schemas", "last_failures"} <= set(status)
    text = h.project.cli("status", "--no-drift", check=True).stdout
    assert sorted(
        line.strip().removeprefix("EDITED: ") for line in text.splitlines() if "EDITED" in line
    ) == sorted(expected)

    # The in-process API sees the same, and a later upgrade does not launder an edit.
    h.project.cli("upgrade", check=True)
    edited = command.verify(config=h.project.root)
    assert sorted(e.message for e in edited) == sorted(expected)
    assert h.rows()[("tenant", "t_a", "r3")] == h.sha("tenant", "r3")


def test_downgrade_and_stamp_remove_rows_of_revisions_no_longer_applied(history: History) -> None:
    h = history
    h.project.cli("upgrade", check=True)
    assert h.rows() == _applied(h, ("c1", "c2"), ("r1", "r2", "r3"), TENANTS)

    h.project.cli("downgrade", "-s", "tenant", "--tenant", "t_a", "r1", check=True)
    h.project.cli("downgrade", "-s", "core", "base", check=True)
    h.project.cli("stamp", "-s", "tenant", "--tenant", "t_b", "r2", check=True)
    expected = _applied(h, (), ("r1", "r2", "r3"), ("t_c",))
    expected |= _applied(h, (), ("r1", "r2"), ("t_b",))
    expected |= _applied(h, (), ("r1",), ("t_a",))
    assert h.rows() == expected

    # Edits of revisions no longer applied are not reported; the applied ones are.
    h.edit("core", "c1")
    h.edit("tenant", "r3")
    code, lines = h.verify()
    assert code == 1
    assert lines == [h.message("tenant", "t_c", "r3")]


def test_failed_upgrade_records_no_applied_row_for_its_revisions(history: History) -> None:
    h = history
    h.project.cli("upgrade", "-s", "core", check=True)
    h.project.cli("upgrade", "-s", "tenant", "r1", check=True)
    before = h.rows()
    assert before == _applied(h, ("c1", "c2"), ("r1",), TENANTS)

    h.write("core", "c3", revision_text("c3", "c2", '    op.execute("SELECT 1 / 0")'))
    # r2 (Alembic path) and r3 succeed, r4 fails: all in each tenant's one transaction.
    h.write("tenant", "r4", revision_text("r4", "r3", '    op.execute("SELECT 1 / 0")'))
    assert h.project.cli("upgrade", "-s", "core").returncode == 1
    assert h.project.cli("upgrade", "-s", "tenant", "--max-failures", "9").returncode == 1
    assert h.rows() == before

    # Replay path alone: r2 is made replayable, so r2..r4 replay as SQL and r4 fails.
    h.write(
        "tenant", "r2", revision_text("r2", "r1", '    op.execute("CREATE TABLE audit (id int)")')
    )
    assert h.project.cli("upgrade", "-s", "tenant", "--max-failures", "9").returncode == 1
    assert h.rows() == before
    assert h.verify() == (0, ["every applied revision matches its file"])

    # Fixed, the same pure replay records every replayed step with its file's hash.
    h.write(
        "tenant", "r4", revision_text("r4", "r3", '    op.execute("CREATE TABLE fixed (id int)")')
    )
    h.project.cli("upgrade", "-s", "tenant", check=True)
    assert h.rows() == before | _applied(h, (), ("r2", "r3", "r4"), TENANTS)
