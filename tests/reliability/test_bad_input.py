"""Bad input and hostile conditions at run time (issue 5, promises 4 and 10).

* A table held in ACCESS EXCLUSIVE by another session: that tenant fails by lock timeout
  after its bounded retries, every other tenant completes, and the run's wall time stays
  within attempts x lock_timeout + back-off + slack.
* A read-only database, a statement timeout (standing in for a full disk: a statement the
  server will not finish) and a refused ``--tenant`` name: one line, the documented exit code,
  nothing half-applied, no advisory lock left, and a corrected run succeeds.

Every CLI run is a real ``python -m alembic_schemas`` process with a timeout. Run with ``-s``
to see the figures.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

import alembic_schemas
from alembic_schemas import identifiers

PREFIX = "alembic-schemas: error: "

TENANT_CONFIG = """
[tool.alembic-schemas]
script_location = "migrations"
lock_timeout = "{lock_timeout}"
lock_retries = {lock_retries}

[tool.alembic-schemas.streams.tenant]
tenants = "like:t_%"
"""

NAMED_CONFIG = """
[tool.alembic-schemas]
script_location = "migrations"
statement_timeout = "{statement_timeout}"

[tool.alembic-schemas.streams.core]
schema = "core"
"""

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

# r1 creates ``item``; r2 alters it, so r2 needs ACCESS EXCLUSIVE on ``item``.
R1_BODY = 'op.create_table("item", sa.Column("id", sa.Integer, primary_key=True))'
R2_BODY = 'op.add_column("item", sa.Column("note", sa.Text))'


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Project:
    root: Path
    url: str
    db: sa.Engine

    def write(self, relpath: str, text: str) -> None:
        path = self.root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.lstrip(), encoding="utf-8")

    def revision(self, stream: str, rev: str, down: str | None, body: str) -> None:
        self.write(
            f"migrations/{stream}/versions/{rev}.py",
            REVISION.format(rev=rev, down=down, body=body),
        )

    def cli(
        self, *args: str, url: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "alembic_schemas", *args],
            cwd=self.root,
            env={**os.environ, "ALEMBIC_SCHEMAS_URL": url or self.url},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def version(self, schema: str) -> str | None:
        with self.db.connect() as conn:
            vt = identifiers.qualified(schema, "alembic_version")
            if conn.scalar(sa.text("SELECT to_regclass(:vt)"), {"vt": vt}) is None:
                return None
            return conn.exec_driver_sql(f"SELECT version_num FROM {vt}").scalar_one()  # type: ignore[no-any-return]

    def columns(self, schema: str, table: str) -> set[str]:
        with self.db.connect() as conn:
            return set(
                conn.scalars(
                    sa.text(
                        "SELECT column_name FROM information_schema.columns"
                        " WHERE table_schema = :s AND table_name = :t"
                    ),
                    {"s": schema, "t": table},
                )
            )

    def tables(self, schema: str) -> set[str]:
        with self.db.connect() as conn:
            return set(
                conn.scalars(
                    sa.text("SELECT tablename FROM pg_tables WHERE schemaname = :s"), {"s": schema}
                )
            )

    def attempts(self) -> int:
        with self.db.connect() as conn:
            if conn.scalar(sa.text("SELECT to_regclass('alembic_schemas.attempt')")) is None:
                return 0
            return int(conn.scalar(sa.text("SELECT count(*) FROM alembic_schemas.attempt")) or 0)

    def assert_no_advisory_lock(self) -> None:
        """Bounded poll: a just-exited process's backend may take a moment to go away."""
        deadline = time.monotonic() + 10
        while True:
            with self.db.connect() as conn:
                held = conn.scalar(
                    sa.text(
                        "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
                        " WHERE l.locktype = 'advisory' AND d.datname = current_database()"
                    )
                )
            if held == 0:
                return
            assert time.monotonic() < deadline, f"{held} advisory lock(s) left behind"
            time.sleep(0.1)


@pytest.fixture
def project(tmp_path: Path, db_url: str, db: sa.Engine) -> Project:
    return Project(tmp_path, db_url, db)


def _one_error_line(proc: subprocess.CompletedProcess[str], code: int) -> str:
    rc, out, err = proc.returncode, proc.stdout, proc.stderr
    assert rc == code, f"exit {rc}\nstdout:\n{out}\nstderr:\n{err}"
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(PREFIX), err
    return lines[0][len(PREFIX) :]


# --- promise 4: a held lock --------------------------------------------------------------


def test_a_table_held_in_access_exclusive_fails_only_its_tenant_within_the_time_bound(
    project: Project,
) -> None:
    lock_timeout_s, retries, tenants, held = 0.2, 3, 20, "t_007"
    project.write(
        "pyproject.toml", TENANT_CONFIG.format(lock_timeout="200ms", lock_retries=retries)
    )
    alembic_schemas.init(project.root)
    project.revision("tenant", "r1", None, R1_BODY)
    project.revision("tenant", "r2", "r1", R2_BODY)
    names = [f"t_{i:03d}" for i in range(tenants)]
    with project.db.connect() as conn:
        conn.exec_driver_sql(";".join(f"CREATE SCHEMA {identifiers.quote(n)}" for n in names))
    project.cli("upgrade", "r1").check_returncode()

    with project.db.connect() as holder:
        holder.exec_driver_sql("BEGIN")
        holder.exec_driver_sql(
            f"LOCK TABLE {identifiers.qualified(held, 'item')} IN ACCESS EXCLUSIVE MODE"
        )
        started = time.monotonic()
        proc = project.cli("upgrade", "--max-failures", "5", "--json", timeout=60)
        wall = time.monotonic() - started
        # The run returned while the lock was still held: its waiting is bounded by itself.
        still_held = holder.exec_driver_sql(
            "SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid()"
            " AND mode = 'AccessExclusiveLock' AND granted"
        ).scalar_one()
        holder.exec_driver_sql("ROLLBACK")

    # Each attempt waits at most lock_timeout; between attempts the tool backs off
    # 0.1 x 2^attempt s (database.with_retries). The slack covers interpreter start-up, the plan
    # and 19 ordinary tenants on a loaded 2-core machine.
    waiting = retries * lock_timeout_s + sum(min(0.1 * 2**a, 5.0) for a in range(1, retries))
    slack = 12.0
    bound = waiting + slack
    print(
        f"\nheld lock: {tenants} tenants, failed {held}, wall {wall:.2f} s,"
        f" bound {bound:.1f} s ({retries} x 200ms + back-off {waiting - retries * lock_timeout_s:.1f} s"
        f" + slack {slack:.0f} s)"
    )
    assert still_held >= 1
    assert proc.returncode == 1, proc.stderr
    summary = json.loads(proc.stdout)
    status = {r["schema"]: r["status"] for r in summary["results"]}
    assert status == {n: ("failed" if n == held else "applied") for n in names}
    (failure,) = [r for r in summary["results"] if r["status"] == "failed"]
    assert f"lock timeout (200ms) after {retries} attempts" in failure["error"]
    assert f"{held}: lock timeout" in proc.stderr
    assert {n: project.version(n) for n in names} == {
        n: ("r1" if n == held else "r2") for n in names
    }
    assert "note" not in project.columns(held, "item")
    assert wall < bound, f"wall {wall:.2f} s exceeds the bound {bound:.1f} s"
    project.assert_no_advisory_lock()

    proc = project.cli("upgrade")
    assert proc.returncode == 0, proc.stderr
    assert project.version(held) == "r2"


# --- promise 10: runtime failures --------------------------------------------------------


def _named_project(project: Project) -> None:
    """Stream ``core`` at r1 (``item``), with r2 pending."""
    project.write("pyproject.toml", NAMED_CONFIG.format(statement_timeout="0"))
    alembic_schemas.init(project.root)
    project.revision("core", "r1", None, R1_BODY)
    project.cli("upgrade").check_returncode()
    project.revision("core", "r2", "r1", R2_BODY)


@pytest.fixture
def read_only(project: Project, admin_engine: sa.Engine) -> Iterator[str]:
    """The test database's name; the test turns it read-only, and this turns it back."""
    name = make_url(project.url).database
    assert name
    yield name
    with admin_engine.connect() as conn:
        conn.exec_driver_sql(
            f"ALTER DATABASE {identifiers.quote(name)} RESET default_transaction_read_only"
        )


def test_a_read_only_database_fails_in_one_line_and_changes_nothing(
    project: Project, admin_engine: sa.Engine, read_only: str
) -> None:
    _named_project(project)
    attempts_before = project.attempts()
    with admin_engine.connect() as conn:
        conn.exec_driver_sql(
            f"ALTER DATABASE {identifiers.quote(read_only)} SET default_transaction_read_only = on"
        )

    message = _one_error_line(project.cli("upgrade"), 1)  # a fresh connection: read-only
    print(f"\nread-only database: {message}")
    assert "read-only transaction" in message
    assert project.version("core") == "r1"
    assert "note" not in project.columns("core", "item")
    assert project.attempts() == attempts_before, "no partial run record"
    project.assert_no_advisory_lock()

    with admin_engine.connect() as conn:
        conn.exec_driver_sql(
            f"ALTER DATABASE {identifiers.quote(read_only)} RESET default_transaction_read_only"
        )
    proc = project.cli("upgrade")
    assert proc.returncode == 0, proc.stderr
    assert project.version("core") == "r2"
    assert "note" in project.columns("core", "item")


def test_a_statement_timeout_fails_in_one_line_and_leaves_the_old_revision(
    project: Project,
) -> None:
    _named_project(project)
    project.write("pyproject.toml", NAMED_CONFIG.format(statement_timeout="50ms"))
    # The slow statement comes after DDL, so a half-applied revision would show.
    project.revision("core", "r2", "r1", R2_BODY + '\n    op.execute("SELECT pg_sleep(1)")')

    message = _one_error_line(project.cli("upgrade"), 1)
    print(f"\nstatement timeout: {message}")
    assert message.startswith("core")
    assert "canceling statement due to statement timeout" in message
    assert project.version("core") == "r1"
    assert "note" not in project.columns("core", "item"), "the revision's DDL rolled back"
    project.assert_no_advisory_lock()

    project.write("pyproject.toml", NAMED_CONFIG.format(statement_timeout="5s"))
    proc = project.cli("upgrade")
    assert proc.returncode == 0, proc.stderr
    assert project.version("core") == "r2"
    assert "note" in project.columns("core", "item")


def test_a_refused_tenant_name_is_a_usage_error_before_connecting(project: Project) -> None:
    project.write("pyproject.toml", TENANT_CONFIG.format(lock_timeout="5s", lock_retries=3))
    alembic_schemas.init(project.root)
    project.revision("tenant", "r1", None, R1_BODY)
    nowhere = f"postgresql+psycopg://nobody@127.0.0.1:{_closed_port()}/nowhere"

    # Exit 2 with the name's reason, not exit 1 "cannot connect": refused before any SQL.
    message = _one_error_line(
        project.cli("upgrade", "--tenant", "t_ok", "--tenant", "pg_x", url=nowhere), 2
    )
    assert message == "invalid tenant name 'pg_x': the pg_ prefix is reserved"
    assert project.tables("t_ok") == set()
    project.assert_no_advisory_lock()

    proc = project.cli("upgrade", "--tenant", "t_ok")
    assert proc.returncode == 0, proc.stderr
    assert project.version("t_ok") == "r1"
