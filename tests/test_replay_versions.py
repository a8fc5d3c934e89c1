"""The version rows of a replayed run of revisions: Alembic's own statement, written once from
the run's first revision to its last (the rows between live and die inside the tenant's one
transaction), unless a revision of the run names the version table: then every row is
written where Alembic writes it, and the revision reads what it would read under Alembic.
"""

from __future__ import annotations

import sqlalchemy as sa

import alembic_schemas
from alembic_schemas.executor import replay
from alembic_schemas.streams import Stream

from alembic_reference import catalog as reference_catalog
from alembic_reference import plain_alembic
from helpers import ProjectDir, create_schemas

TENANTS = ["t_one", "t_two"]


def _replayer(pd: ProjectDir) -> replay.Replayer:
    project = alembic_schemas.load(pd.root)
    dialect = sa.create_mock_engine("postgresql+psycopg://", None).dialect
    return replay.Replayer(Stream(project, project.stream("tenant")), dialect)


def _version_statements(segment: replay.Segment) -> list[str]:
    assert isinstance(segment, replay.Replay)
    writes = (
        "INSERT INTO alembic_version ",
        "UPDATE alembic_version ",
        "DELETE FROM alembic_version ",
    )
    return [sql for sql in segment.statements if sql.startswith(writes)]


def test_a_replayed_run_moves_the_version_row_once_from_its_first_to_its_last_revision(
    project_dir: ProjectDir,
) -> None:
    project_dir.copy_project("online_history")
    way = _replayer(project_dir).segments((), "heads")
    # base -> r1 (then Alembic runs r2), and r4 -> r8 over two branches and their merge
    (first,) = _version_statements(way[0])
    assert first.startswith("INSERT INTO alembic_version (version_num) VALUES ('r1_item')")
    last = way[-1]
    assert isinstance(last, replay.Replay) and len(last.revisions) == 5
    assert _version_statements(last) == [
        "UPDATE alembic_version SET version_num='r8_after' "
        "WHERE alembic_version.version_num = 'r4_helper';"
    ]
    assert last.statements[-1] == _version_statements(last)[0]


def test_a_revision_reading_the_version_table_reads_what_it_would_under_alembic(
    project_dir: ProjectDir, db: sa.Engine
) -> None:
    project_dir.tenant_history("reads_version_table")
    (way,) = _replayer(project_dir).segments((), "heads")
    assert len(_version_statements(way)) == 3  # one per revision, where Alembic writes it
    create_schemas(db, TENANTS)
    report = alembic_schemas.upgrade(streams=["tenant"], config=project_dir.root)
    assert sorted((r.schema, r.after, r.error) for r in report) == [
        (t, ("v3_note",), None) for t in TENANTS
    ]
    plain_alembic(db, project_dir.versions("tenant")[0].parent, "plain_ref", tenant=True)
    expected = reference_catalog(db, "plain_ref")
    assert expected["rows"]["audit"] == ['{"note": null, "seen": "v1_audit"}']
    for tenant in TENANTS:
        assert reference_catalog(db, tenant) == expected, tenant
