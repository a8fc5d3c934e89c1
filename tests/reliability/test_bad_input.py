"""Bad input and hostile conditions at run time (issue 5, promises 4 and 10).

* A table held in ACCESS EXCLUSIVE by another session: that tenant fails by lock timeout
  after its bounded retries, every other tenant completes, and the run's wall time stays
  within attempts x lock_timeout + back-off + slack.
* A read-only database, a full disk (a tablespace on a 1 MB filesystem, and PostgreSQL's
  ``temp_file_limit``), a statement timeout, a refused ``--tenant`` name and an unknown tenant:
  one line naming what failed, the documented exit code, nothing half-applied, no data lost,
  no advisory lock left, and a corrected run succeeds.

Every CLI run is a real ``python -m alembic_schemas`` process with a timeout. Run with ``-s``
to see the figures.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

import alembic_schemas
from alembic_schemas import identifiers

from processes import revision_text

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
            revision_text(rev, down, body),
        )

    def cli(
        self, *args: str, url: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "alembic_schemas", *args],
            cwd=self.root,
            env={**os.environ, "ALEMBIC_SCHEMAS_URL": url or self.url},
            stdin=subprocess.DEVNULL,  # as from a deploy script: not a terminal
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

    def schemas(self) -> set[str]:
        with self.db.connect() as conn:
            return set(conn.scalars(sa.text("SELECT nspname FROM pg_namespace")))

    def indexes(self, schema: str) -> set[str]:
        with self.db.connect() as conn:
            return set(
                conn.scalars(
                    sa.text("SELECT indexname FROM pg_indexes WHERE schemaname = :s"), {"s": schema}
                )
            )

    def count(self, schema: str, table: str) -> int:
        with self.db.connect() as conn:
            query = f"SELECT count(*) FROM {identifiers.qualified(schema, table)}"
            return int(conn.exec_driver_sql(query).scalar_one())

    def applied(self, stream: str, schema: str) -> list[str]:
        """Revisions the run record holds as applied to ``schema`` (with their checksums)."""
        with self.db.connect() as conn:
            return list(
                conn.scalars(
                    sa.text(
                        "SELECT revision FROM alembic_schemas.applied"
                        " WHERE stream = :st AND schema_name = :s ORDER BY revision"
                    ),
                    {"st": stream, "s": schema},
                )
            )

    def run_record(self, run_id: str) -> list[tuple[str, str, str, str, str, str | None]]:
        """(stream, schema, from, to, status, error) of each attempt of one run."""
        with self.db.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT stream, schema_name, from_rev, to_rev, status, error"
                    " FROM alembic_schemas.attempt WHERE run_id = :r ORDER BY schema_name"
                ),
                {"r": run_id},
            )
            return [tuple(r) for r in rows]  # type: ignore[misc]

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
    r2 = project.root / "migrations" / "tenant" / "versions" / "r2.py"
    assert _one_error_line(proc, 1) == (
        f"tenant/{held}: revision r2 ({r2}): lock timeout (200ms) after {retries} attempts:"
        " canceling statement due to lock timeout"
    )
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
    # The stream's own failure first; then that the run record could not say so either (so
    # neither `status` nor `--retry-failed` will know about this run).
    assert message == (
        "core: cannot execute CREATE SCHEMA in a read-only transaction"
        " (run record not written: cannot execute INSERT in a read-only transaction)"
    )
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


def test_a_read_only_database_without_a_run_record_says_nothing_was_migrated(
    project: Project, admin_engine: sa.Engine, read_only: str
) -> None:
    project.write("pyproject.toml", NAMED_CONFIG.format(statement_timeout="0"))
    alembic_schemas.init(project.root)
    project.revision("core", "r1", None, R1_BODY)
    with admin_engine.connect() as conn:
        conn.exec_driver_sql(
            f"ALTER DATABASE {identifiers.quote(read_only)} SET default_transaction_read_only = on"
        )

    for args in (("upgrade",), ("stamp", "head")):
        message = _one_error_line(project.cli(*args), 1)
        assert message == (
            "cannot create the run record (schema alembic_schemas), nothing was migrated:"
            " cannot execute CREATE SCHEMA in a read-only transaction"
        ), args
    assert {"core", "alembic_schemas"}.isdisjoint(project.schemas())
    project.assert_no_advisory_lock()

    with admin_engine.connect() as conn:
        conn.exec_driver_sql(
            f"ALTER DATABASE {identifiers.quote(read_only)} RESET default_transaction_read_only"
        )
    proc = project.cli("upgrade")
    assert proc.returncode == 0, proc.stderr
    assert project.version("core") == "r1"


def test_a_statement_timeout_fails_in_one_line_and_leaves_the_old_revision(
    project: Project,
) -> None:
    _named_project(project)
    project.write("pyproject.toml", NAMED_CONFIG.format(statement_timeout="50ms"))
    # The slow statement comes after DDL, so a half-applied revision would show.
    project.revision("core", "r2", "r1", R2_BODY + '\n    op.execute("SELECT pg_sleep(1)")')

    message = _one_error_line(project.cli("upgrade"), 1)
    print(f"\nstatement timeout: {message}")
    assert re.fullmatch(
        r"core: revision r2 \(.*/r2\.py:\d+\): canceling statement due to statement timeout",
        message,
    ), message
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


# --- promise 10: a full disk ------------------------------------------------------------------

# r1 adds ``big`` (the test fills it); r2 changes ``item`` and then builds an index on ``big``:
# the index build is what needs disk, so a half-applied r2 would show as a ``note`` column.
DISK_R1_BODY = (
    R1_BODY
    + '\n    op.create_table("big", sa.Column("id", sa.Integer), sa.Column("payload", sa.Text))'
)
DISK_R2_BODY = R2_BODY + '\n    op.create_index("big_payload", "big", ["payload"])'
# About 3.5 MB of rows and a 3 MB index: well past the 1 MB allowed, and quick to write.
DISK_ROWS = 50_000
DISK_MESSAGES = {
    # PostgreSQL 16+ quotes the setting's name; 15 does not.
    "temp_file_limit": r'temporary file size exceeds "?temp_file_limit"? \(1024kB\)',
    # mdextend/mdzeroextend; a short write says how much it wrote.
    "tablespace": r'could not extend file "pg_tblspc/\d+/PG_[^"/]+/\d+/\d+"(?: with FileFallocate\(\))?'
    r": (?:No space left on device|wrote only \d+ of \d+ bytes at block \d+)"
    r"(?:; HINT: Check free disk space)?",  # PostgreSQL's HINT, kept
}


@dataclass
class Disk:
    """Makes the test database's disk too small for r2's index build, then frees it."""

    kind: str
    admin: sa.Engine
    database: str
    mount: Path | None = None
    tablespace: str | None = None

    def _alter(self, *settings: str) -> None:
        # Settings of the test database only, picked up by every new session: the CLI's.
        with self.admin.connect() as conn:
            for setting in settings:
                conn.exec_driver_sql(f"ALTER DATABASE {identifiers.quote(self.database)} {setting}")

    def fill(self) -> None:
        # 1 MB of sort memory and no parallel workers: the index build spills to disk at once.
        self._alter("SET maintenance_work_mem = '1MB'", "SET max_parallel_maintenance_workers = 0")
        if self.kind == "temp_file_limit":
            self._alter("SET temp_file_limit = '1MB'")
        else:
            assert self.tablespace is not None
            self._alter(f"SET default_tablespace = {identifiers.quote(self.tablespace)}")

    def free(self) -> None:
        """What an operator does at 3 a.m.: make room, then run again."""
        if self.kind == "temp_file_limit":
            self._alter("RESET temp_file_limit")
        else:
            _run(["mount", "-o", "remount,size=64m", str(self.mount)])

    def assert_message(self, message: str, where: str) -> None:
        # the revision it failed in (its line too when Alembic ran it), then PostgreSQL's words
        revision = r"revision r2 \(.*/r2\.py(?::\d+)?\): "
        pattern = f"{re.escape(where)}: {revision}{DISK_MESSAGES[self.kind]}"
        assert re.fullmatch(pattern, message), message


def _fill_big(project: Project, schema: str) -> None:
    with project.db.connect() as conn:
        conn.exec_driver_sql(
            f"INSERT INTO {identifiers.qualified(schema, 'big')}"
            f" SELECT g, md5(g::text) FROM generate_series(1, {DISK_ROWS}) AS g"
        )


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"{args}: {proc.stderr}"
    return proc


@contextlib.contextmanager
def _tiny_tablespace(admin: sa.Engine) -> Iterator[tuple[Path, str]]:
    """A 1 MB tmpfs mounted for the server's user, as a tablespace. Skips where that cannot
    be done: not root, a server on another machine, or mounting not allowed."""
    if os.geteuid() != 0:
        pytest.skip("mounting a 1 MB filesystem needs root (CI runs as root)")
    with admin.connect() as conn:
        data_directory = Path(conn.exec_driver_sql("SHOW data_directory").scalar_one())
    if not data_directory.is_dir():
        pytest.skip(f"the test server's data directory {data_directory} is not on this machine")
    owner = data_directory.stat()
    folder = Path(tempfile.mkdtemp(prefix="alembic-schemas-disk-"))
    folder.chmod(0o755)  # the server's user must reach the mount point
    mount = folder / "tiny"
    mount.mkdir()
    options = f"size=1m,uid={owner.st_uid},gid={owner.st_gid},mode=0700"
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    name = "tiny_" + uuid.uuid4().hex[:12]
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE TABLESPACE {name} LOCATION '{mount}'")
        yield mount, name
    finally:
        try:
            with admin.connect() as conn:
                conn.exec_driver_sql(f"DROP TABLESPACE IF EXISTS {name}")
        finally:
            if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(mount)], capture_output=True)
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(params=["tablespace", "temp_file_limit"])
def disk(
    request: pytest.FixtureRequest, project: Project, admin_engine: sa.Engine
) -> Iterator[Disk]:
    """``tablespace``: a real full filesystem (ENOSPC), where root may mount one.
    ``temp_file_limit``: PostgreSQL's per-session disk quota, everywhere."""
    name = make_url(project.url).database
    assert name
    if request.param == "temp_file_limit":
        yield Disk("temp_file_limit", admin_engine, name)
        return
    with _tiny_tablespace(admin_engine) as (mount, tablespace):
        try:
            yield Disk("tablespace", admin_engine, name, mount, tablespace)
        finally:
            # The corrected run built its index in the tablespace: the database goes first.
            project.db.dispose()
            with admin_engine.connect() as conn:
                conn.exec_driver_sql(
                    f"DROP DATABASE IF EXISTS {identifiers.quote(name)} WITH (FORCE)"
                )


def test_a_full_disk_fails_a_named_stream_in_one_line_and_leaves_the_old_revision(
    project: Project, disk: Disk
) -> None:
    """A full disk, twice over: ``tablespace`` puts what r2 builds on a 1 MB tmpfs, so the
    filesystem itself refuses (ENOSPC, as a full data disk does); ``temp_file_limit`` is
    PostgreSQL's own per-session disk quota, which a test can set wherever it runs, and which
    fails the same statement at the same point. A statement_timeout would only stand for a
    disk too slow to finish (test_a_statement_timeout_...)."""
    project.write("pyproject.toml", NAMED_CONFIG.format(statement_timeout="0"))
    alembic_schemas.init(project.root)
    project.revision("core", "r1", None, DISK_R1_BODY)
    project.cli("upgrade").check_returncode()
    _fill_big(project, "core")
    project.revision("core", "r2", "r1", DISK_R2_BODY)
    disk.fill()

    proc = project.cli("upgrade", "--json")
    message = _one_error_line(proc, 1)
    print(f"\nfull disk ({disk.kind}), named stream: {message}")
    disk.assert_message(message, "core")
    assert project.version("core") == "r1"
    assert "note" not in project.columns("core", "item"), "r2's first step rolled back"
    assert "big_payload" not in project.indexes("core")
    assert project.count("core", "big") == DISK_ROWS, "no data lost"
    assert project.applied("core", "core") == ["r1"]
    run_id = json.loads(proc.stdout)["run_id"]
    (record,) = project.run_record(run_id)  # one attempt, recorded as failed, nothing more
    assert record == ("core", "core", "r1", "r1", "failed", message.removeprefix("core: "))
    project.assert_no_advisory_lock()

    disk.free()
    proc = project.cli("upgrade")
    assert proc.returncode == 0, proc.stderr
    assert project.version("core") == "r2"
    assert "note" in project.columns("core", "item")
    assert "big_payload" in project.indexes("core")
    assert project.count("core", "big") == DISK_ROWS
    assert project.applied("core", "core") == ["r1", "r2"]
    project.assert_no_advisory_lock()


def test_a_full_disk_fails_only_its_tenant_and_the_others_finish(
    project: Project, disk: Disk
) -> None:
    """As the named-stream case, in a fleet run: only ``t_003`` holds enough rows to need the
    disk. One worker: a full filesystem fails whatever writes at that moment, and the test
    wants only t_003 to meet it."""
    tenants, full = [f"t_{i:03d}" for i in range(8)], "t_003"
    project.write("pyproject.toml", TENANT_CONFIG.format(lock_timeout="5s", lock_retries=3))
    alembic_schemas.init(project.root)
    project.revision("tenant", "r1", None, DISK_R1_BODY)
    with project.db.connect() as conn:
        conn.exec_driver_sql(";".join(f"CREATE SCHEMA {identifiers.quote(n)}" for n in tenants))
    project.cli("upgrade").check_returncode()
    _fill_big(project, full)
    project.revision("tenant", "r2", "r1", DISK_R2_BODY)
    disk.fill()

    proc = project.cli("upgrade", "--jobs", "1", "--max-failures", "5", "--json")
    message = _one_error_line(proc, 1)
    print(f"\nfull disk ({disk.kind}), {len(tenants)} tenants: {message}")
    disk.assert_message(message, f"tenant/{full}")
    summary = json.loads(proc.stdout)
    status = {r["schema"]: r["status"] for r in summary["results"]}
    assert status == {n: ("failed" if n == full else "applied") for n in tenants}
    assert {n: project.version(n) for n in tenants} == {
        n: ("r1" if n == full else "r2") for n in tenants
    }
    assert "note" not in project.columns(full, "item")
    assert "big_payload" not in project.indexes(full)
    assert project.count(full, "big") == DISK_ROWS, "no data lost"
    assert project.applied("tenant", full) == ["r1"]
    record = project.run_record(summary["run_id"])
    assert [r[1] for r in record] == tenants, "one attempt per tenant"
    assert [r for r in record if r[4] == "failed"] == [
        ("tenant", full, "r1", "r1", "failed", message.removeprefix(f"tenant/{full}: "))
    ]
    project.assert_no_advisory_lock()

    disk.free()
    proc = project.cli("upgrade", "--retry-failed", "--json")
    assert proc.returncode == 0, proc.stderr
    retried = json.loads(proc.stdout)["results"]
    assert [(r["schema"], r["status"]) for r in retried] == [(full, "applied")]
    assert {project.version(n) for n in tenants} == {"r2"}
    assert "big_payload" in project.indexes(full)
    assert project.count(full, "big") == DISK_ROWS
    project.assert_no_advisory_lock()


# --- promise 10: a tenant that does not exist -------------------------------------------------

UNKNOWN_TENANT = (
    "unknown tenant 't_nosuch' of stream 'tenant' (no such schema, and not listed by like:t_%)"
)


@pytest.mark.parametrize(
    "args",
    [
        ("downgrade", "-s", "tenant", "--tenant", "t_nosuch", "base"),
        ("stamp", "-s", "tenant", "--tenant", "t_nosuch", "head"),
        ("stamp", "--tenant", "t_a", "--tenant", "t_nosuch", "head"),
        ("check", "--tenant", "t_nosuch"),
        ("current", "--tenant", "t_nosuch"),
        ("status", "--tenant", "t_nosuch"),
        ("verify", "--tenant", "t_nosuch"),
    ],
    ids=lambda a: " ".join(a),
)
def test_an_unknown_tenant_is_a_usage_error_and_nothing_is_created(
    project: Project, args: tuple[str, ...]
) -> None:
    """A typo must not read as a tenant at base (current, status, check), pass as a no-op
    (downgrade) or create a schema (stamp): a tenant named to a command that reads or changes
    an existing one must exist or be listed by the source. Only ``upgrade`` creates."""
    project.write("pyproject.toml", TENANT_CONFIG.format(lock_timeout="5s", lock_retries=3))
    alembic_schemas.init(project.root)
    project.revision("tenant", "r1", None, R1_BODY)
    project.revision("tenant", "r2", "r1", R2_BODY)
    project.cli("upgrade", "--tenant", "t_a", "r1").check_returncode()
    with project.db.connect() as conn:
        conn.exec_driver_sql("INSERT INTO t_a.item VALUES (1), (2)")
        conn.commit()

    message = _one_error_line(project.cli(*args), 2)
    assert message == UNKNOWN_TENANT
    assert "t_nosuch" not in project.schemas()
    assert project.version("t_a") == "r1", "the known tenant given alongside was not touched"
    assert project.count("t_a", "item") == 2
    project.assert_no_advisory_lock()


def test_tenants_drop_refuses_an_unknown_tenant_and_upgrade_still_creates_a_new_one(
    project: Project,
) -> None:
    project.write("pyproject.toml", TENANT_CONFIG.format(lock_timeout="5s", lock_retries=3))
    alembic_schemas.init(project.root)
    project.revision("tenant", "r1", None, R1_BODY)
    project.cli("upgrade", "--tenant", "t_a").check_returncode()

    assert _one_error_line(project.cli("tenants", "drop", "t_nosuch"), 2) == (
        "refusing to drop without --yes when not on a terminal"
    )
    assert _one_error_line(project.cli("tenants", "drop", "t_nosuch", "--yes"), 2) == (
        "'t_nosuch' is not a tenant of stream 'tenant' (use --force to drop it anyway)"
    )
    assert _one_error_line(project.cli("tenants", "drop", "t_nosuch", "--yes", "--force"), 1) == (
        "schema 't_nosuch' does not exist"
    )
    assert project.version("t_a") == "r1"
    project.assert_no_advisory_lock()

    # A listed tenant without a schema yet is known: at base, nothing pending is hidden.
    listed = "query:SELECT n FROM (VALUES ('t_a'), ('t_listed')) AS v(n)"
    project.write("pyproject.toml", TENANT_CONFIG.format(lock_timeout="5s", lock_retries=3))
    config = project.root / "pyproject.toml"
    config.write_text(config.read_text().replace('"like:t_%"', repr(listed)))
    proc = project.cli("current", "--tenant", "t_listed")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "tenant/t_listed: <base> (1 pending)"
    assert "t_listed" not in project.schemas(), "reading does not create it"

    # upgrade --tenant is how a new tenant is made: it creates and migrates the schema.
    proc = project.cli("upgrade", "--tenant", "t_new")
    assert proc.returncode == 0, proc.stderr
    assert project.version("t_new") == "r1"
