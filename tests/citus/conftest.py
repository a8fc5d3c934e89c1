"""A real Citus cluster for the tests of this folder, named by $ALEMBIC_SCHEMAS_CITUS_URL (a
coordinator); without it every test here is skipped. (This folder is a package, so that this
conftest does not take the place of tests/conftest.py as module ``conftest``.)

Each test gets a database of its own on the whole cluster: created on the coordinator with
database propagation (Citus 12+), the citus extension created on every node, and the
coordinator and workers registered in it as they are in the URL's database. It is dropped
afterwards, on every node.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from alembic_schemas import database, identifiers

from helpers import ProjectDir

CITUS_URL_ENV = "ALEMBIC_SCHEMAS_CITUS_URL"
SAAS = Path(__file__).resolve().parents[2] / "examples" / "saas"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "citus"


@dataclass
class Cluster:
    """The test's database on the coordinator and on each worker."""

    url: str  # the coordinator
    coordinator: tuple[str, int]
    workers: list[tuple[str, int]]

    def node_url(self, host: str, port: int, database: str | None = None) -> str:
        url = make_url(self.url).set(host=host, port=port)
        if database is not None:
            url = url.set(database=database)
        return url.render_as_string(hide_password=False)

    def engine(self, host: str | None = None, port: int | None = None) -> sa.Engine:
        """Autocommit, on the coordinator or a node (the tool's own engines refuse workers)."""
        url = self.url if host is None or port is None else self.node_url(host, port)
        return sa.create_engine(url, isolation_level="AUTOCOMMIT")

    def sql(self, statement: str, **params: object) -> list[sa.Row[tuple[object, ...]]]:
        """Run one statement on the coordinator; its rows."""
        engine = self.engine()
        try:
            with engine.connect() as conn:
                result = conn.execute(sa.text(statement), params)
                return list(result) if result.returns_rows else []
        finally:
            engine.dispose()


@pytest.fixture(scope="session")
def citus_url() -> str:
    url = os.environ.get(CITUS_URL_ENV)
    if not url:
        pytest.skip(f"${CITUS_URL_ENV} names no Citus coordinator")
    return url


def _nodes(admin: sa.Connection) -> tuple[tuple[str, int], list[tuple[str, int]]]:
    rows = admin.exec_driver_sql(
        "SELECT groupid, nodename, nodeport FROM pg_dist_node"
        " WHERE noderole = 'primary' AND isactive ORDER BY groupid"
    ).all()
    coordinator = [(h, p) for g, h, p in rows if g == 0]
    workers = [(h, p) for g, h, p in rows if g != 0]
    if not coordinator or not workers:
        pytest.fail(f"${CITUS_URL_ENV} must name a coordinator with registered workers")
    return coordinator[0], workers


@pytest.fixture
def cluster(citus_url: str) -> Iterator[Cluster]:
    name = "citus_t_" + uuid.uuid4().hex[:10]
    quoted = identifiers.quote_object(name, "database name")
    admin = database.create_engine(citus_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        coordinator, workers = _nodes(conn)
        conn.exec_driver_sql("SET citus.enable_create_database_propagation = on")
        conn.exec_driver_sql(f"CREATE DATABASE {quoted}")
    url = make_url(citus_url).set(database=name)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    found = Cluster(url.render_as_string(hide_password=False), coordinator, workers)
    try:
        for host, port in [coordinator, *workers]:
            node = found.engine(host, port)
            with node.connect() as conn:
                conn.exec_driver_sql("CREATE EXTENSION citus")
            node.dispose()
        found.sql("SELECT citus_set_coordinator_host(:h, :p)", h=coordinator[0], p=coordinator[1])
        for host, port in workers:
            found.sql("SELECT citus_add_node(:h, :p)", h=host, p=port)
        yield found
    finally:
        _drop(admin, found, name)
        admin.dispose()


def _drop(admin: sa.Engine, found: Cluster, name: str) -> None:
    """DROP DATABASE on every node. WITH (FORCE) ends the coordinator's sessions only; a
    worker may still have one (Citus's own, between nodes) for a moment."""
    quoted = identifiers.quote_object(name, "database name")
    for attempt in range(10):
        for host, port in found.workers:
            node = sa.create_engine(found.node_url(host, port, "postgres"))
            with node.connect() as conn:
                conn.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = :d AND pid <> pg_backend_pid()"
                    ),
                    {"d": name},
                )
                conn.commit()
            node.dispose()
        try:
            with admin.connect() as conn:
                conn.exec_driver_sql("SET citus.enable_create_database_propagation = on")
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
            return
        except sa.exc.OperationalError:
            if attempt == 9:
                raise
            time.sleep(0.5)


@pytest.fixture
def saas(cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ProjectDir:
    """examples/saas (whose `shared` tables are made reference tables on Citus) on the
    test's Citus database."""
    shutil.copytree(
        SAAS, tmp_path, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", ".*")
    )
    monkeypatch.setenv("ALEMBIC_SCHEMAS_URL", cluster.url)
    monkeypatch.chdir(tmp_path)
    return ProjectDir(tmp_path, cluster.url)


def add_revisions(project: ProjectDir, *names: str, folder: str = "tenant") -> None:
    """Copy tenant revisions from tests/fixtures/citus/<folder> into the project."""
    versions = project.root / "migrations" / "tenant" / "versions"
    for name in names:
        shutil.copy(FIXTURES / folder / name, versions / name)


def register(cluster: Cluster, *tenants: str) -> None:
    """A plan, and ``tenants`` in shared.tenant (as the app does on sign-up)."""
    cluster.sql("INSERT INTO shared.plan VALUES (1, 'free') ON CONFLICT DO NOTHING")
    for tenant in tenants:
        cluster.sql("INSERT INTO shared.tenant VALUES (:t, 1)", t=tenant)


def migrated(project: ProjectDir, cluster: Cluster, *tenants: str) -> None:
    """`shared` upgraded, ``tenants`` registered, and upgraded too."""
    project.cli("upgrade", check=True)
    register(cluster, *tenants)
    project.cli("upgrade", check=True)
