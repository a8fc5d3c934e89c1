"""Schema-per-tenant on Citus schema-based sharding (issue 14), with examples/saas on a real
cluster: tenants become distributed schemas, the shared schema and the tool's own stay on the
coordinator, and every observed failure of the first trial stays fixed."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

import alembic_schemas
from alembic_schemas import citus, identifiers, tenants

from .conftest import Cluster, add_revisions, migrated, register
from helpers import CLI_APP, ProjectDir, with_app_name


def distributed_schemas(cluster: Cluster) -> set[str]:
    rows = cluster.sql(
        "SELECT n.nspname FROM pg_dist_schema d JOIN pg_namespace n ON n.oid = d.schemaid"
    )
    return {r[0] for r in rows}


def table_types(cluster: Cluster, schema: str) -> dict[str, str]:
    """table -> Citus table type ('schema', 'reference', ...) of the schema's Citus tables."""
    rows = cluster.sql(
        "SELECT c.relname, t.citus_table_type FROM public.citus_tables t"
        " JOIN pg_class c ON c.oid = t.table_name"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = :s",
        s=schema,
    )
    return {r[0]: r[1] for r in rows}


def nodes_of(cluster: Cluster, schema: str) -> set[tuple[str, int]]:
    """Where the shards of the schema's tables are placed."""
    rows = cluster.sql(
        "SELECT DISTINCT s.nodename, s.nodeport FROM citus_shards s"
        " JOIN pg_class c ON c.oid = s.table_name"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = :s",
        s=schema,
    )
    return {(r[0], r[1]) for r in rows}


def versions(cluster: Cluster, *schemas: str) -> dict[str, str]:
    return {
        s: cluster.sql(f"SELECT version_num FROM {identifiers.qualified(s, 'alembic_version')}")[0][
            0
        ]
        for s in schemas
    }


def configure(project: ProjectDir, **settings: str) -> None:
    """Top-level settings added to the project's [tool.alembic-schemas]."""
    config = project.root / "pyproject.toml"
    lines = "".join(f'{k} = "{v}"\n' for k, v in settings.items())
    text = config.read_text(encoding="utf-8")
    config.write_text(
        text.replace(
            'script_location = "migrations"\n', f'script_location = "migrations"\n{lines}'
        ),
        encoding="utf-8",
    )


def shard_of(cluster: Cluster, schema: str, table: str) -> tuple[str, str, int]:
    """(shard table name, node host, node port) of a tenant table's one shard."""
    row = cluster.sql(
        "SELECT s.shardid, s.nodename, s.nodeport FROM citus_shards s"
        " WHERE s.table_name = CAST(:t AS regclass)",
        t=identifiers.qualified(schema, table),
    )[0]
    return f"{table}_{row[0]}", row[1], row[2]


def test_tenants_are_distributed_schemas_and_shared_tables_reference_tables(
    saas: ProjectDir, cluster: Cluster
) -> None:
    # Sharding on for the whole database, as a Citus guide has it: the named stream and the
    # tool's own schema must still stay on the coordinator.
    name = identifiers.quote_object(cluster.url.rsplit("/", 1)[1], "database name")
    cluster.sql(f"ALTER DATABASE {name} SET citus.enable_schema_based_sharding = on")
    saas.cli("upgrade", check=True)
    register(cluster, "acme", "Globex Corp")
    out = saas.cli("upgrade", check=True).stdout
    assert "tenant/acme: <base> -> 0001_tenant_init" in out

    assert distributed_schemas(cluster) == {"acme", "Globex Corp"}
    assert table_types(cluster, "shared") == {"plan": "reference", "tenant": "reference"}
    assert table_types(cluster, "alembic_schemas") == {}  # plain coordinator tables
    for tenant in ("acme", "Globex Corp"):
        assert table_types(cluster, tenant) == {
            "account": "schema",
            "project": "schema",
            "alembic_version": "schema",
        }
        (node,) = nodes_of(cluster, tenant)  # colocated: one worker holds them all
        assert node in cluster.workers
    cluster.sql("INSERT INTO acme.account (email, role, plan_id) VALUES ('a@x', 'owner', 1)")
    with pytest.raises(sa.exc.IntegrityError, match="foreign key"):
        cluster.sql("INSERT INTO acme.account (email, role, plan_id) VALUES ('b@x', 'owner', 2)")
    saas.cli("check", check=True)
    assert saas.cli("verify", check=True).returncode == 0


def test_an_existing_schema_is_never_created_again_nor_redistributed(
    saas: ProjectDir, cluster: Cluster
) -> None:
    saas.cli("upgrade", check=True)
    register(cluster, "acme", "beta", "kept_local")
    # A tenant schema made before the move to Citus: plain, and to stay so.
    cluster.sql('CREATE SCHEMA "kept_local"')
    saas.cli("upgrade", check=True)
    cluster.sql("SELECT citus_schema_undistribute('acme')")
    assert distributed_schemas(cluster) == {"beta"}

    # The revision replays an ALTER TABLE and a CREATE INDEX: one statement per query.
    add_revisions(saas, "0002_tenant_note.py")
    out = saas.cli("upgrade", check=True).stdout
    assert "tenant/acme: 0001_tenant_init -> 0002_tenant_note" in out
    assert distributed_schemas(cluster) == {"beta"}  # shared, acme, kept_local: untouched
    assert versions(cluster, "acme", "beta", "kept_local") == dict.fromkeys(
        ("acme", "beta", "kept_local"), "0002_tenant_note"
    )
    indexes = cluster.sql(
        "SELECT result FROM run_command_on_placements('beta.project',"
        " $$SELECT count(*) FROM pg_index WHERE indrelid = '%s'::regclass$$)"
    )
    assert [r[0] for r in indexes] == ["3"]  # pkey, ix_project_account_id, ix_project_title


def test_a_tenant_table_referencing_a_plain_table_is_refused_before_any_tenant(
    saas: ProjectDir, cluster: Cluster
) -> None:
    config = saas.root / "pyproject.toml"
    config.write_text(
        config.read_text(encoding="utf-8").replace("reference_tables = true\n", ""),
        encoding="utf-8",
    )
    saas.cli("upgrade", check=True)
    register(cluster, "acme")
    failed = saas.cli("upgrade")
    assert failed.returncode == 2
    assert failed.stderr.strip().splitlines() == [
        'alembic-schemas: error: tenant stream \'tenant\' references "shared"."plan", which'
        " is not a Citus reference table (tables of a distributed tenant schema may reference"
        " only their own schema and reference tables): set reference_tables = true on stream"
        " 'shared' and run 'alembic-schemas upgrade -s shared', or run SELECT"
        ' create_reference_table(\'"shared"."plan"\')'
    ]
    assert not cluster.sql("SELECT 1 FROM pg_namespace WHERE nspname = 'acme'")
    provisioned = saas.cli("tenants", "create", "acme")  # from the snapshot: the same refusal
    assert provisioned.returncode == 2
    assert provisioned.stderr.splitlines()[-1] == failed.stderr.strip()
    assert not cluster.sql(  # neither the tenant nor the snapshot's staging schema
        "SELECT 1 FROM pg_namespace WHERE nspname = 'acme' OR nspname LIKE 'alembic_schemas_new%'"
    )

    config.write_text(
        config.read_text(encoding="utf-8").replace(
            'schema = "shared"\n', 'schema = "shared"\nreference_tables = ["plan"]\n'
        ),
        encoding="utf-8",
    )
    saas.cli("upgrade", check=True)
    assert table_types(cluster, "shared")["plan"] == "reference"
    assert distributed_schemas(cluster) == {"acme"}


def test_a_lock_held_on_a_worker_shard_fails_the_tenant_by_lock_timeout(
    saas: ProjectDir, cluster: Cluster
) -> None:
    # Were lock_timeout set on the coordinator only, the worker would wait into the
    # statement timeout instead: the message tells which one fired.
    configure(saas, lock_timeout="200ms", statement_timeout="60s")
    migrated(saas, cluster, "acme", "beta")
    shard, host, port = shard_of(cluster, "acme", "account")
    worker = cluster.engine(host, port)
    add_revisions(saas, "0002_tenant_note.py")
    with worker.connect() as held:
        held.exec_driver_sql("SET citus.enable_manual_changes_to_shards = on")
        held.exec_driver_sql("BEGIN")
        held.exec_driver_sql(
            f"LOCK TABLE {identifiers.qualified('acme', shard)} IN ACCESS EXCLUSIVE MODE"
        )
        failed = saas.cli("upgrade")
        held.exec_driver_sql("ROLLBACK")
    worker.dispose()
    assert failed.returncode == 1
    assert "tenant/acme: FAILED: revision 0002_tenant_note (" in failed.stdout
    assert "lock timeout (200ms) after 3 attempts: canceling statement" in failed.stdout
    assert "due to lock timeout" in failed.stdout
    assert versions(cluster, "acme", "beta") == {
        "acme": "0001_tenant_init",
        "beta": "0002_tenant_note",
    }
    saas.cli("upgrade", "--retry-failed", check=True)
    assert versions(cluster, "acme")["acme"] == "0002_tenant_note"


def test_autocommit_blocks_with_several_jobs_finish_and_leave_valid_indexes_everywhere(
    saas: ProjectDir, cluster: Cluster
) -> None:
    fleet = [f"t_{i}" for i in range(6)]
    migrated(saas, cluster, *fleet)
    add_revisions(saas, "0002_tenant_note.py", "0003_tenant_concurrent.py")
    # Hung for over 10 minutes before: a worker's CREATE INDEX CONCURRENTLY waited for the
    # run's other transactions, which waited for the block (the CLI call times out at 300 s).
    saas.cli("upgrade", "--jobs", "3", check=True)
    assert set(versions(cluster, *fleet).values()) == {"0003_tenant_concurrent"}
    engine = cluster.engine()
    with engine.connect() as conn:
        assert citus.invalid_indexes(conn, fleet) == []
    engine.dispose()
    for tenant in fleet:
        built = cluster.sql(
            "SELECT result FROM run_command_on_placements(CAST(:t AS regclass),"
            " $$SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " WHERE i.indrelid = '%s'::regclass AND c.relname LIKE 'ix_account_plan%%'"
            " AND i.indisvalid$$)",
            t=identifiers.qualified(tenant, "account"),
        )
        assert [r[0] for r in built] == ["1"]


def test_an_index_invalid_on_a_worker_is_reported_by_status_and_check_and_stops_a_block(
    saas: ProjectDir, cluster: Cluster
) -> None:
    migrated(saas, cluster, "acme", "beta")
    saas.cli("check", check=True)
    shard, host, port = shard_of(cluster, "acme", "account")
    worker = cluster.engine(host, port)
    with worker.connect() as conn:  # as an interrupted build on that worker leaves it
        conn.exec_driver_sql(
            "UPDATE pg_index SET indisvalid = false"
            f' WHERE indexrelid = \'"acme"."{shard.replace("account", "account_email_key")}"\''
            "::regclass"
        )
    worker.dispose()
    where = f'"acme"."account_email_key" on {host}:{port}'

    status = saas.cli("status", check=True).stdout
    assert f"  INVALID index {where}" in status.splitlines()
    report = json.loads(saas.cli("status", "--json", check=True).stdout)
    assert report["invalid_indexes"] == [{"stream": "tenant", "schema": "acme", "index": where}]
    check = saas.cli("check")
    assert check.returncode == 1
    assert f"tenant/acme: INVALID index {where}" in check.stdout
    assert "beta" not in check.stdout.replace("tenant/beta: models match the database", "")

    add_revisions(saas, "0002_tenant_note.py", "0003_tenant_concurrent.py")
    failed = saas.cli("upgrade")
    assert failed.returncode == 1
    assert (
        'tenant/acme: FAILED: INVALID index(es) "acme"."account_email_key" (left by an'
        " interrupted CREATE INDEX CONCURRENTLY?) would break revision 0003_tenant_concurrent's"
        ' autocommit_block; drop them and run again: DROP INDEX CONCURRENTLY "acme".'
        '"account_email_key"'
    ) in failed.stdout
    assert versions(cluster, "acme", "beta") == {  # acme's transaction rolled back whole
        "acme": "0001_tenant_init",
        "beta": "0003_tenant_concurrent",
    }


def test_a_block_that_leaves_an_index_invalid_on_a_worker_fails_and_drops_it(
    saas: ProjectDir, cluster: Cluster
) -> None:
    migrated(saas, cluster, "acme")
    # the shard's worker, and the other with its copy of the table (Citus metadata)
    left = ", ".join(f'"acme"."ix_account_plan" on {h}:{p}' for h, p in cluster.workers)
    add_revisions(saas, "0002_tenant_note.py")
    add_revisions(saas, "0003_tenant_concurrent.py", folder="tenant_left_invalid")
    failed = saas.cli("upgrade")
    assert failed.returncode == 1
    assert (
        "tenant/acme: FAILED: revision 0003_tenant_concurrent's autocommit_block completed but"
        f' left INVALID index(es) {left}; dropped the INVALID index "acme"."ix_account_plan"'
        " it left"
    ) in failed.stdout
    assert versions(cluster, "acme") == {"acme": "0002_tenant_note"}
    engine = cluster.engine()
    with engine.connect() as conn:
        assert citus.invalid_indexes(conn, ["acme"]) == []
    engine.dispose()
    assert not cluster.sql("SELECT 1 FROM pg_class WHERE relname = 'ix_account_plan'")


def test_tenants_are_provisioned_from_a_snapshot_as_distributed_schemas(
    saas: ProjectDir, cluster: Cluster
) -> None:
    saas.cli("upgrade", check=True)
    register(cluster, "newco", "apico")
    out = saas.cli("tenants", "create", "newco", check=True).stdout
    assert "created tenant newco at 0001_tenant_init" in out

    engine = sa.create_engine(cluster.url)
    with engine.begin() as conn:  # in the sign-up request's own transaction
        tenants.create("apico", connection=conn, config=saas.root)
    engine.dispose()

    assert distributed_schemas(cluster) == {"newco", "apico"}
    for tenant in ("newco", "apico"):
        (node,) = nodes_of(cluster, tenant)
        assert node in cluster.workers
        saas.cli("check", "--tenant", tenant, check=True)
    created = cluster.sql(
        "INSERT INTO newco.account (email, role, plan_id) VALUES ('a@x', 'owner', 1) RETURNING id"
    )
    assert created[0][0] == 1
    add_revisions(saas, "0002_tenant_note.py")
    saas.cli("upgrade", check=True)
    assert versions(cluster, "newco", "apico") == dict.fromkeys(
        ("newco", "apico"), "0002_tenant_note"
    )


def test_a_tenant_moved_to_another_worker_keeps_migrating(
    saas: ProjectDir, cluster: Cluster
) -> None:
    migrated(saas, cluster, "acme")
    cluster.sql("INSERT INTO acme.account (email, role, plan_id) VALUES ('a@x', 'owner', 1)")
    (before,) = nodes_of(cluster, "acme")
    (target,) = [w for w in cluster.workers if w != before]

    # The README's recipe
    cluster.sql("SELECT citus_schema_move('acme', :host, :port)", host=target[0], port=target[1])

    assert nodes_of(cluster, "acme") == {target}
    add_revisions(saas, "0002_tenant_note.py", "0003_tenant_concurrent.py")
    out = saas.cli("upgrade", check=True).stdout
    assert "tenant/acme: 0001_tenant_init -> 0003_tenant_concurrent" in out
    assert cluster.sql("SELECT email FROM acme.account")[0][0] == "a@x"
    assert nodes_of(cluster, "acme") == {target}


@pytest.mark.parametrize("verb", [["current"], ["status"], ["upgrade"], ["tenants", "list"]])
def test_a_worker_node_is_refused_in_one_line(
    saas: ProjectDir, cluster: Cluster, verb: list[str]
) -> None:
    (host, port) = cluster.workers[0]
    worker = ProjectDir(saas.root, cluster.node_url(host, port))
    refused = worker.cli(*verb)
    assert refused.returncode == 2
    engine = cluster.engine(host, port)
    with engine.connect() as conn:
        group = conn.exec_driver_sql("SELECT groupid FROM pg_dist_local_group").scalar()
        created = conn.exec_driver_sql(
            "SELECT 1 FROM pg_namespace WHERE nspname IN ('shared', 'alembic_schemas')"
        ).all()
    engine.dispose()
    coordinator = f"{cluster.coordinator[0]}:{cluster.coordinator[1]}"
    # the URL as the CLI was given it (the tests' helpers add an application_name)
    url = with_app_name(cluster.node_url(host, port), CLI_APP)
    assert refused.stderr.splitlines() == [
        f"alembic-schemas: error: {url} is a Citus worker node"
        f" (group {group}): run alembic-schemas against the coordinator ({coordinator})"
    ]
    assert not created


def test_the_api_refuses_a_worker_connection_brought_by_the_caller(
    saas: ProjectDir, cluster: Cluster
) -> None:
    saas.cli("upgrade", check=True)
    (host, port) = cluster.workers[0]
    engine = sa.create_engine(cluster.node_url(host, port))
    with engine.begin() as conn, pytest.raises(alembic_schemas.ConfigError, match="worker node"):
        tenants.create("acme", connection=conn, config=saas.root)
    engine.dispose()
