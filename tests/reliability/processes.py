"""Real CLI processes on a test database, for the reliability tests: a project, its tenants,
and ``python -m alembic_schemas`` runs whose server backends can be found by
``application_name``. Every subprocess and wait is bounded."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from alembic_schemas import identifiers

from conftest import ProjectDir

REVISION = '''
"""{rev}"""
import sqlalchemy as sa
from alembic import op

revision = "{rev}"
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade() -> None:
{body}


def downgrade() -> None:
    pass
'''


def revision_text(rev: str, down: str | None, body: str) -> str:
    """A revision file whose upgrade() runs ``body`` (lines after the first indented by 4)."""
    text = body.strip("\n")
    if not text.startswith("    "):
        text = "    " + text
    return REVISION.format(rev=rev, down=down, body=text).lstrip()


def tenant_names(n: int) -> list[str]:
    return [f"t_{i:03d}" for i in range(n)]


def with_app_name(url: str, app: str) -> str:
    """The URL with ``application_name`` set, so this process's backends can be found."""
    u = make_url(url)
    return u.update_query_dict({"application_name": app}).render_as_string(hide_password=False)


@dataclass
class Fleet:
    """A project on the test's database, and the CLI run as real processes."""

    project: ProjectDir
    db: sa.Engine

    @property
    def root(self) -> Path:
        return self.project.root

    def write_revision(self, stream: str, filename: str, text: str) -> None:
        path = self.root / "migrations" / stream / "versions" / filename
        path.write_text(text.lstrip(), encoding="utf-8")

    def make_tenants(self, names: Iterable[str], *, at: str | None = None) -> None:
        """Create tenant schemas in one batch: bare, or as if at ``at`` (``r1`` only)."""
        sql: list[str] = []
        for name in names:
            sql.append(f"CREATE SCHEMA {identifiers.quote(name)}")
            if at is None:
                continue
            assert at == "r1"
            table = identifiers.qualified
            sql.append(f"CREATE TABLE {table(name, 'item')} (id serial PRIMARY KEY)")
            sql.append(
                f"CREATE TABLE {table(name, 'alembic_version')} (version_num varchar(32) NOT NULL,"
                " CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
            )
            sql.append(f"INSERT INTO {table(name, 'alembic_version')} VALUES ('{at}')")
        with self.db.connect() as conn:
            conn.exec_driver_sql(";\n".join(sql))

    def version_rows(self, schema_like: str = "t\\_%") -> dict[str, list[str]]:
        """Every version row of each matching schema (a schema without one maps to [])."""
        out: dict[str, list[str]] = {}
        with self.db.connect() as conn:
            schemas = conn.scalars(
                sa.text("SELECT nspname FROM pg_namespace WHERE nspname LIKE :p"),
                {"p": schema_like},
            ).all()
            for s in schemas:
                vt = identifiers.qualified(s, "alembic_version")
                if conn.scalar(sa.text("SELECT to_regclass(:vt)"), {"vt": vt}) is None:
                    out[s] = []
                else:
                    out[s] = list(conn.exec_driver_sql(f"SELECT version_num FROM {vt}").scalars())
        return out

    def tables(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        with self.db.connect() as conn:
            for schema, table in conn.execute(
                sa.text("SELECT schemaname, tablename FROM pg_tables WHERE schemaname LIKE 't\\_%'")
            ):
                out.setdefault(schema, set()).add(table)
        return out

    def env(self, app: str) -> dict[str, str]:
        return {**os.environ, "ALEMBIC_SCHEMAS_URL": with_app_name(self.project.url, app)}

    def cli(
        self, *args: str, app: str = "as_cli", timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "alembic_schemas", *args],
            cwd=self.root,
            env=self.env(app),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def spawn(self, *args: str, app: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "alembic_schemas", *args],
            cwd=self.root,
            env=self.env(app),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def scalar(self, sql: str, **params: object) -> object:
        with self.db.connect() as conn:
            return conn.scalar(sa.text(sql), params)

    def no_backends(self, app: str) -> bool:
        """No server backend is left for the client named ``app``."""
        n = self.scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = :app", app=app
        )
        return n == 0

    def migrating(self, app: str) -> bool:
        return self.sleeping_backend(app) is not None

    def sleeping_backend(self, app: str) -> int | None:
        """The pid of a backend of ``app`` inside a revision's ``pg_sleep`` (a tenant
        transaction under way), if any."""
        pid = self.scalar(
            "SELECT pid FROM pg_stat_activity WHERE application_name = :app"
            " AND state = 'active' AND query LIKE '%pg_sleep%' LIMIT 1",
            app=app,
        )
        return pid if isinstance(pid, int) else None

    def advisory_locks(self) -> int:
        n = self.scalar(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        assert isinstance(n, int)
        return n


def wait_for(what: str, check: Callable[[], bool], timeout: float = 20.0) -> float:
    """Poll ``check`` until true; returns the seconds it took. Fails after ``timeout``."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)
    return time.monotonic() - started


def kill(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=10)
