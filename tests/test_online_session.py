"""A tenant's revisions that Alembic runs share one run of the stream's env.py
(tests/fixtures/online_session): replayed revisions between them, revisions asking
``alembic.context`` where they run, an ``autocommit_block`` after which a new run starts.

* env.py runs once per tenant (as with plain Alembic), not once per revision Alembic runs;
  again after an autocommit_block, whose commits end the run it configured;
* each revision Alembic runs sees the version rows the revisions before it wrote (replayed
  ones, and those Alembic ran, whose rows the executor sends itself), and ``alembic.context``
  set up for it;
* every tenant ends exactly as one schema migrated by plain Alembic, rows included;
* a version-row write that does not match one row fails the tenant, as Alembic refuses it.
"""

from __future__ import annotations

from collections import Counter

import pytest
import sqlalchemy as sa
from alembic.util import CommandError

import alembic_schemas
from alembic_schemas import identifiers
from alembic_schemas.errors import MigrationFailed

from alembic_reference import catalog as reference_catalog
from alembic_reference import plain_alembic
from helpers import ProjectDir, create_schemas

TENANTS = [f"s_{i:02d}" for i in range(6)]
HEAD = "s8_last"


@pytest.fixture
def pd(project_dir: ProjectDir, db: sa.Engine) -> ProjectDir:
    project_dir.copy_project("online_session")
    create_schemas(db, TENANTS)
    return project_dir


@pytest.mark.parametrize("jobs", [1, 3])
def test_env_py_runs_once_per_tenant_and_again_after_an_autocommit_block(
    pd: ProjectDir, monkeypatch: pytest.MonkeyPatch, jobs: int
) -> None:
    runs = pd.root / "env_runs.txt"
    monkeypatch.setenv("ENV_RUNS_FILE", str(runs))
    report = alembic_schemas.upgrade(streams=["tenant"], jobs=jobs, config=pd.root)
    assert sorted((r.schema, r.after, r.error) for r in report) == [
        (t, (HEAD,), None) for t in TENANTS
    ]
    # Alembic runs s2, s4, s5 (its block commits: the run ends), then s7, s8: two runs of env.py
    assert Counter(runs.read_text().split()) == {t: 2 for t in TENANTS}


def test_revisions_alembic_runs_see_the_replayed_version_rows_and_match_plain_alembic(
    pd: ProjectDir, db: sa.Engine
) -> None:
    alembic_schemas.upgrade(streams=["tenant"], jobs=2, config=pd.root)
    plain = "plain_ref"
    plain_alembic(db, pd.root / "migrations" / "tenant" / "versions", plain, tenant=True)
    expected = reference_catalog(db, plain, ("where_ran",))
    assert expected["rows"]["alembic_version"] == [f'{{"version_num": "{HEAD}"}}']
    notes = [row for row in expected["rows"]["item"] if "s2 after" in row]
    assert len(notes) == 1 and "s2 after s1_item / s7 after s6_more" in notes[0]
    # s8 reads the version row s7 (also run by Alembic, just before it) left
    assert len([row for row in expected["rows"]["item"] if "s8 after s7_after_block" in row]) == 1
    for tenant in TENANTS:
        assert reference_catalog(db, tenant, ("where_ran",)) == expected, tenant
    with db.connect() as conn:
        for tenant in TENANTS:  # s2 ran in its own tenant, found through alembic.context
            table = f"{identifiers.quote(tenant)}.item"
            where = conn.exec_driver_sql(
                f"SELECT where_ran FROM {table} WHERE where_ran IS NOT NULL"
            ).scalars()
            assert list(where) == [tenant]


def test_a_version_row_write_matching_no_row_fails_the_tenant_as_alembic_refuses_it(
    project_dir: ProjectDir, db: sa.Engine
) -> None:
    project_dir.tenant_history("version_row_taken")
    create_schemas(db, ["t_one", "t_two"])
    with pytest.raises(MigrationFailed) as caught:
        alembic_schemas.upgrade(streams=["tenant"], jobs=2, config=project_dir.root)
    failed = caught.value.report.failed  # type: ignore[attr-defined]
    assert sorted((r.schema, r.after) for r in failed) == [("t_one", ()), ("t_two", ())]
    assert "revision w2_takes_row (" in failed[0].error
    assert "matched 0 rows, not one: UPDATE alembic_version" in failed[0].error
    with db.connect() as conn:  # rolled back: nothing of the way is left
        tables = conn.exec_driver_sql(
            "SELECT count(*) FROM pg_tables WHERE schemaname IN ('t_one', 't_two')"
            " AND tablename <> 'alembic_version'"
        ).scalar()
    assert tables == 0
    with pytest.raises(CommandError, match="expected to match one row"):
        plain_alembic(db, project_dir.versions("tenant")[0].parent, "plain_ref", tenant=True)
