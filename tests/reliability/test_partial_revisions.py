"""Revisions that write before their ``autocommit_block``, run as Alembic runs them in streams
that set ``commit_before_autocommit_block`` (fixture: tests/fixtures/write_before_block).

Plain Alembic commits such a revision's first statements before the block; so does the tool
under the opt-in, and it records the revision as partially applied from that commit until its
version row commits. ``status`` shows it, and the next run, after a failure or a kill at any
point, either completes the revision (nothing was committed yet) or stops with one line
naming the schema, the revision and what was committed. Every CLI run is a real process."""

from __future__ import annotations

import json
import os
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

import alembic_schemas
from alembic_schemas import identifiers

from alembic_reference import assert_same_schema, plain_alembic
from helpers import Catalog, ProjectDir, create_schemas, kill, wait_for

FIXTURE = Path(__file__).parent.parent / "fixtures" / "write_before_block"
COMMITTED = (
    "2 statement(s) before its autocommit_block (ALTER TABLE item ADD COLUMN early TEXT;"
    " UPDATE item SET early = 'e' || code)"
)


@pytest.fixture
def fleet(project_dir: ProjectDir, catalog: Catalog) -> Fleet:
    shutil.copy(FIXTURE / "pyproject.toml", project_dir.root)
    alembic_schemas.init(project_dir.root)
    for stream in ("core", "tenant"):
        versions = project_dir.root / "migrations" / stream / "versions"
        for path in sorted((FIXTURE / "versions").glob("*.py")):
            shutil.copy(path, versions)
    return Fleet(project_dir, catalog)


@dataclass
class Fleet:
    """The fixture's project and what its database holds."""

    project: ProjectDir
    catalog: Catalog

    @property
    def root(self) -> Path:
        return self.project.root

    @property
    def db(self) -> sa.Engine:
        return self.catalog.db


def _unfinished(fleet: Fleet) -> list[tuple[object, ...]]:
    with fleet.db.connect() as conn:
        if conn.scalar(sa.text("SELECT to_regclass('alembic_schemas.unfinished')")) is None:
            return []
        rows = conn.execute(
            sa.text(
                "SELECT stream, schema_name, revision, partial, committed"
                " FROM alembic_schemas.unfinished ORDER BY 1, 2"
            )
        )
        return [tuple(r) for r in rows]


def _run(fleet: Fleet, *args: str) -> tuple[int, str, str]:
    proc = fleet.project.cli(*args)
    return proc.returncode, proc.stdout, proc.stderr.strip()


def test_writes_before_a_block_commit_first_and_every_schema_matches_plain_alembic(
    fleet: Fleet,
) -> None:
    create_schemas(fleet.db, ["t_a", "t_b"])
    code, _, err = _run(fleet, "upgrade", "r2")
    assert code == 0, err
    for how in ([], ["--replay"]):
        code, _, err = _run(fleet, "tenants", "create", *how, f"t_new{len(how)}")
        assert code == 0, err
    code, _, err = _run(fleet, "upgrade")
    assert code == 0, err

    versions = fleet.root / "migrations" / "tenant" / "versions"
    plain_alembic(fleet.db, versions, "reference", tenant=True)
    for schema in ("core", "t_a", "t_b", "t_new0", "t_new1"):
        assert_same_schema(fleet.db, schema, "reference")
    assert _unfinished(fleet) == []
    assert fleet.catalog.advisory_locks() == 0


def _repeat_codes(fleet: Fleet, schema: str) -> None:
    with fleet.db.connect() as conn:
        conn.exec_driver_sql(f"UPDATE {identifiers.qualified(schema, 'item')} SET code = 1")


def test_a_failed_block_leaves_the_revision_partial_and_the_next_run_names_it(
    fleet: Fleet,
) -> None:
    create_schemas(fleet.db, ["t_a", "t_b"])
    assert _run(fleet, "upgrade", "r1")[0] == 0
    _repeat_codes(fleet, "t_b")

    code, out, err = _run(fleet, "upgrade", "-s", "tenant", "--json", "--max-failures", "1")
    assert code == 1
    results = {r["schema"]: r for r in json.loads(out)["results"]}
    assert results["t_a"]["status"] == "applied"
    error = results["t_b"]["error"]
    print(f"\nfailed block after committed writes: {error}")
    assert "could not create unique index" in error
    assert error.endswith(
        "revision r2 is partially applied (its statements before the autocommit_block were"
        " committed, its version row was not): the next run stops on it until it is settled"
        " by hand and stamped"
    ), error
    assert results["t_b"]["to"] == ["r1"]
    assert _unfinished(fleet) == [("tenant", "t_b", "r2", True, COMMITTED)]

    # status names it, in text and JSON
    code, out, _ = _run(fleet, "status", "-s", "tenant", "--no-drift")
    (line,) = [x for x in out.splitlines() if "PARTIALLY APPLIED" in x]
    assert "tenant/t_b: revision r2 (" in line and COMMITTED in line
    code, out, _ = _run(fleet, "status", "-s", "tenant", "--no-drift", "--json")
    (partial,) = json.loads(out)["partial"]
    assert (partial["schema"], partial["revision"], partial["committed"]) == (
        "t_b",
        "r2",
        COMMITTED,
    )

    # the next run stops on it, in one line, even once the data is fixed
    with fleet.db.connect() as conn:
        conn.exec_driver_sql('UPDATE "t_b".item SET code = id')
    code, _, err = _run(fleet, "upgrade", "-s", "tenant")
    assert code == 1
    path = fleet.root / "migrations" / "tenant" / "versions" / "r2_early_then_index.py"
    assert err.startswith(f"alembic-schemas: error: tenant/t_b: revision r2 ({path}) is"), err
    assert f" committed {COMMITTED}, but not its version row; finish it by hand" in err
    assert err.endswith(
        "and run 'alembic-schemas stamp -s tenant --tenant t_b r2', or undo it by hand and run"
        " 'alembic-schemas stamp -s tenant --tenant t_b r1'"
    ), err
    assert len(err.splitlines()) == 1
    assert fleet.catalog.version_rows("t_b") == {"t_b": ["r1"]}

    # settled by hand (the rest of r2 done), stamped: the next run goes on from there
    with fleet.db.connect() as conn:
        conn.exec_driver_sql('CREATE UNIQUE INDEX item_code ON "t_b".item (code)')
        conn.exec_driver_sql("""ALTER TABLE "t_b".item ADD COLUMN note TEXT DEFAULT 'after'""")
    assert _run(fleet, "stamp", "-s", "tenant", "--tenant", "t_b", "r2")[0] == 0
    assert _unfinished(fleet) == []
    code, _, err = _run(fleet, "upgrade", "-s", "tenant")
    assert code == 0, err
    assert fleet.catalog.version_rows() == {"t_a": ["r3"], "t_b": ["r3"]}
    assert fleet.catalog.advisory_locks() == 0


def _waiting_on(fleet: Fleet, app: str, gate: int) -> int | None:
    """The pid of ``app``'s backend waiting for advisory lock ``gate``."""
    pid = fleet.catalog.scalar(
        "SELECT a.pid FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid"
        " WHERE a.application_name = :app AND l.locktype = 'advisory' AND NOT l.granted"
        " AND l.objid = :gate",
        app=app,
        gate=gate,
    )
    return pid if isinstance(pid, int) else None


@pytest.mark.parametrize(
    ("gate", "committed"),
    [
        (4201, None),  # before the commit: nothing of r2 committed
        (4202, COMMITTED),  # inside the block
        (4203, COMMITTED + " and its autocommit_block"),  # after the block, before the version row
    ],
    ids=["before-the-commit", "inside-the-block", "after-the-block"],
)
def test_a_run_killed_anywhere_in_a_partial_revision_is_completed_or_named_by_the_next_run(
    fleet: Fleet, gate: int, committed: str | None
) -> None:
    create_schemas(fleet.db, ["t_a"])
    assert _run(fleet, "upgrade", "-s", "tenant", "r1")[0] == 0
    app = f"as_killed_{gate}"
    with fleet.db.connect() as holder:
        holder.execute(sa.text("SELECT pg_advisory_lock(:g)"), {"g": gate})
        proc = fleet.project.spawn("upgrade", "-s", "tenant", app=app)
        try:
            wait_for(f"the run to reach gate {gate}", lambda: bool(_waiting_on(fleet, app, gate)))
            pid = _waiting_on(fleet, app, gate)
            os.kill(proc.pid, signal.SIGKILL)  # the host dies: process and backend go
            proc.communicate(timeout=10)
            holder.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        finally:
            kill(proc)
            holder.execute(sa.text("SELECT pg_advisory_unlock(:g)"), {"g": gate})
    wait_for("the killed run's backends to end", lambda: fleet.catalog.backends(app) == 0)
    assert fleet.catalog.version_rows() == {"t_a": ["r1"]}

    code, _, err = _run(fleet, "upgrade", "-s", "tenant")
    print(f"\nkilled at gate {gate}: next run exit {code}: {err}")
    if committed is None:
        assert code == 0, err
        assert fleet.catalog.version_rows() == {"t_a": ["r3"]}
        assert _unfinished(fleet) == []
    else:
        assert code == 1
        assert len(err.splitlines()) == 1
        assert err.startswith("alembic-schemas: error: tenant/t_a: revision r2 (")
        assert f" committed {committed}, but not its version row;" in err, err
        assert _unfinished(fleet) == [("tenant", "t_a", "r2", True, committed)]
        assert fleet.catalog.version_rows() == {"t_a": ["r1"]}
    assert fleet.catalog.advisory_locks() == 0
