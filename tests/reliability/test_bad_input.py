"""Bad input and hostile conditions at run time (issue 5, promises 4 and 10).

* A table held in ACCESS EXCLUSIVE by another session: that tenant fails by lock timeout
  after its bounded retries, every other tenant completes, and the run returns while the lock
  is still held.
* A read-only database, a full disk (a tablespace on a 1 MB filesystem, and PostgreSQL's
  ``temp_file_limit``), a statement timeout, a refused ``--tenant`` name and an unknown tenant:
  one line naming what failed, the documented exit code, nothing half-applied, no data lost,
  no advisory lock left, and a corrected run succeeds.

Every CLI run is a real ``python -m alembic_schemas`` process. Run with ``-s`` to see the
messages.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

import alembic_schemas
from alembic_schemas import identifiers, locks

from helpers import (
    HANG,
    TENANT_STREAM,
    Catalog,
    ProjectDir,
    closed_port,
    config_toml,
    create_schemas,
    one_error_line,
    tenant_names,
)

CORE = {"core": {"schema": "core"}}

# r1 creates ``item``; r2 alters it, so r2 needs ACCESS EXCLUSIVE on ``item``.
R1_BODY = 'op.create_table("item", sa.Column("id", sa.Integer, primary_key=True))'
R2_BODY = 'op.add_column("item", sa.Column("note", sa.Text))'


def _tenants(project: ProjectDir, *revisions: str) -> None:
    """The tenant stream (``like:t_%``, lock_timeout 5s) with the given revisions."""
    project.write("pyproject.toml", config_toml(TENANT_STREAM, lock_timeout="5s", lock_retries=3))
    alembic_schemas.init(project.root)
    _revisions(project, "tenant", *revisions)


def _revisions(project: ProjectDir, stream: str, *revisions: str, disk: bool = False) -> None:
    """r1 and r2 of the history above (with ``disk``, of the full-disk history below)."""
    bodies = {"r1": DISK_R1_BODY, "r2": DISK_R2_BODY} if disk else {"r1": R1_BODY, "r2": R2_BODY}
    for rev in revisions:
        project.revision(stream, rev, "r1" if rev == "r2" else None, bodies[rev])


def _run_record(catalog: Catalog, run_id: str) -> list[tuple[object, ...]]:
    """(stream, schema, from, to, status, error) of each attempt of one run."""
    return catalog.rows(
        "SELECT stream, schema_name, from_rev, to_rev, status, error"
        " FROM alembic_schemas.attempt WHERE run_id = :r ORDER BY schema_name",
        r=run_id,
    )


# --- promise 4: a held lock --------------------------------------------------------------


def test_a_table_held_in_access_exclusive_fails_only_its_tenant_and_the_run_returns(
    project: ProjectDir, catalog: Catalog
) -> None:
    retries, held = 3, "t_007"
    project.write(
        "pyproject.toml", config_toml(TENANT_STREAM, lock_timeout="200ms", lock_retries=retries)
    )
    alembic_schemas.init(project.root)
    _revisions(project, "tenant", "r1", "r2")
    names = tenant_names(20)
    create_schemas(catalog.db, names)
    project.cli("upgrade", "r1", check=True)

    with catalog.db.connect() as holder:
        holder.exec_driver_sql("BEGIN")
        holder.exec_driver_sql(
            f"LOCK TABLE {identifiers.qualified(held, 'item')} IN ACCESS EXCLUSIVE MODE"
        )
        proc = project.cli("upgrade", "--max-failures", "5", "--json")
        # The run returned while the lock was still held: its waiting is bounded by itself
        # (attempts x lock_timeout), not by the other session letting go.
        still_held = holder.exec_driver_sql(
            "SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid()"
            " AND mode = 'AccessExclusiveLock' AND granted"
        ).scalar_one()
        holder.exec_driver_sql("ROLLBACK")

    message = one_error_line(proc, 1)
    print(f"\nheld lock: {len(names)} tenants, {message}")
    assert still_held == 1
    # the revision (replayed: its file, no line), then what happened
    assert re.fullmatch(
        rf"tenant/{held}: revision r2 \(\S+/r2\.py\): lock timeout \(200ms\) after {retries}"
        " attempts: canceling statement due to lock timeout",
        message,
    ), message
    summary = json.loads(proc.stdout)
    status = {r["schema"]: r["status"] for r in summary["results"]}
    assert status == {n: ("failed" if n == held else "applied") for n in names}
    record = _run_record(catalog, summary["run_id"])
    assert [r[1] for r in record] == names, "one attempt per tenant, retries included"
    assert [r for r in record if r[4] == "failed"] == [
        ("tenant", held, "r1", "r1", "failed", message.removeprefix(f"tenant/{held}: "))
    ]
    assert {n: catalog.version(n) for n in names} == {
        n: ("r1" if n == held else "r2") for n in names
    }
    assert "note" not in catalog.columns(held, "item")
    catalog.assert_no_advisory_lock()

    proc = project.cli("upgrade")
    assert proc.returncode == 0, proc.stderr
    assert catalog.version(held) == "r2"


# --- promise 10: runtime failures --------------------------------------------------------


def _named(project: ProjectDir, *revisions: str, statement_timeout: str = "0") -> None:
    """The named stream ``core`` with the given revisions."""
    project.write("pyproject.toml", config_toml(CORE, statement_timeout=statement_timeout))
    alembic_schemas.init(project.root)
    _revisions(project, "core", *revisions)


def _named_project(project: ProjectDir) -> None:
    """Stream ``core`` at r1 (``item``), with r2 pending."""
    _named(project, "r1")
    project.cli("upgrade", check=True)
    _revisions(project, "core", "r2")


@pytest.fixture
def read_only(project: ProjectDir, admin_engine: sa.Engine) -> Iterator[Callable[[bool], None]]:
    """Turns the test database read-only for new sessions (the CLI's), and back; back at the
    end in any case."""
    name = identifiers.quote(make_url(project.url).database or "")

    def turn(on: bool) -> None:
        setting = (
            "SET default_transaction_read_only = on"
            if on
            else "RESET default_transaction_read_only"
        )
        with admin_engine.connect() as conn:
            conn.exec_driver_sql(f"ALTER DATABASE {name} {setting}")

    yield turn
    turn(False)


def test_a_read_only_database_fails_in_one_line_and_changes_nothing(
    project: ProjectDir, catalog: Catalog, read_only: Callable[[bool], None]
) -> None:
    _named_project(project)
    attempts_before = catalog.attempts()
    read_only(True)

    message = one_error_line(project.cli("upgrade"), 1)  # a fresh connection: read-only
    print(f"\nread-only database: {message}")
    # The stream's own failure first; then that the run record could not say so either (so
    # neither `status` nor `--retry-failed` will know about this run).
    assert message == (
        "core: cannot execute CREATE SCHEMA in a read-only transaction"
        " (run record not written: cannot execute INSERT in a read-only transaction)"
    )
    assert catalog.version("core") == "r1"
    assert "note" not in catalog.columns("core", "item")
    assert catalog.attempts() == attempts_before, "no partial run record"
    catalog.assert_no_advisory_lock()

    read_only(False)
    proc = project.cli("upgrade")
    assert proc.returncode == 0, proc.stderr
    assert catalog.version("core") == "r2"
    assert "note" in catalog.columns("core", "item")


def test_a_read_only_database_without_a_run_record_says_nothing_was_migrated(
    project: ProjectDir, catalog: Catalog, read_only: Callable[[bool], None]
) -> None:
    _named(project, "r1")
    read_only(True)

    for args in (("upgrade",), ("stamp", "head")):
        message = one_error_line(project.cli(*args), 1)
        assert message == (
            "cannot create the run record (schema alembic_schemas), nothing was migrated:"
            " cannot execute CREATE SCHEMA in a read-only transaction"
        ), args
    assert {"core", "alembic_schemas"}.isdisjoint(catalog.schemas())
    catalog.assert_no_advisory_lock()

    read_only(False)
    proc = project.cli("upgrade")
    assert proc.returncode == 0, proc.stderr
    assert catalog.version("core") == "r1"


def test_a_statement_timeout_fails_in_one_line_and_leaves_the_old_revision(
    project: ProjectDir, catalog: Catalog
) -> None:
    _named_project(project)
    project.write("pyproject.toml", config_toml(CORE, statement_timeout="50ms"))
    # The slow statement comes after DDL, so a half-applied revision would show.
    project.revision("core", "r2", "r1", R2_BODY + '\nop.execute("SELECT pg_sleep(1)")')

    message = one_error_line(project.cli("upgrade"), 1)
    print(f"\nstatement timeout: {message}")
    assert re.fullmatch(
        r"core: revision r2 \(\S+/r2\.py:\d+\): canceling statement due to statement timeout",
        message,
    ), message
    assert catalog.version("core") == "r1"
    assert "note" not in catalog.columns("core", "item"), "the revision's DDL rolled back"
    catalog.assert_no_advisory_lock()

    project.write("pyproject.toml", config_toml(CORE, statement_timeout="5s"))
    proc = project.cli("upgrade")
    assert proc.returncode == 0, proc.stderr
    assert catalog.version("core") == "r2"
    assert "note" in catalog.columns("core", "item")


def test_a_schema_held_by_another_run_past_statement_timeout_fails_in_one_line(
    project: ProjectDir, catalog: Catalog
) -> None:
    _named(project, "r1", statement_timeout="300ms")
    with catalog.db.connect() as other_run:
        other_run.exec_driver_sql("BEGIN")
        locks.lock(other_run, "core", "core")  # as another run migrating core would
        proc = project.cli("upgrade")
        held = catalog.advisory_locks()
        other_run.exec_driver_sql("ROLLBACK")

    message = one_error_line(proc, 1)
    assert message == "core: another run held the schema for longer than statement_timeout (300ms)"
    assert held == 1, "the other run still held it when this one gave up"
    assert catalog.version("core") is None
    catalog.assert_no_advisory_lock()

    proc = project.cli("upgrade")
    assert proc.returncode == 0, proc.stderr
    assert catalog.version("core") == "r1"


def test_a_refused_tenant_name_is_a_usage_error_before_connecting(
    project: ProjectDir, catalog: Catalog
) -> None:
    _tenants(project, "r1")
    nowhere = f"postgresql+psycopg://nobody@127.0.0.1:{closed_port()}/nowhere"

    # Exit 2 with the name's reason, not exit 1 "cannot connect": refused before any SQL.
    message = one_error_line(
        project.cli("upgrade", "--tenant", "t_ok", "--tenant", "pg_x", url=nowhere), 2
    )
    assert message == "invalid tenant name 'pg_x': the pg_ prefix is reserved"
    assert catalog.tables("t_ok") == set()
    catalog.assert_no_advisory_lock()

    proc = project.cli("upgrade", "--tenant", "t_ok")
    assert proc.returncode == 0, proc.stderr
    assert catalog.version("t_ok") == "r1"


# --- promise 10: a full disk ------------------------------------------------------------------

# r1 adds ``big`` (the test fills it); r2 changes ``item`` and then builds an index on ``big``:
# the index build is what needs disk, so a half-applied r2 would show as a ``note`` column.
DISK_R1_BODY = (
    R1_BODY + '\nop.create_table("big", sa.Column("id", sa.Integer), sa.Column("payload", sa.Text))'
)
DISK_R2_BODY = R2_BODY + '\nop.create_index("big_payload", "big", ["payload"])'
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
        revision = r"revision r2 \(\S+/r2\.py(?::\d+)?\): "
        pattern = f"{re.escape(where)}: {revision}{DISK_MESSAGES[self.kind]}"
        assert re.fullmatch(pattern, message), message


def _fill_big(catalog: Catalog, schema: str) -> None:
    with catalog.db.connect() as conn:
        conn.exec_driver_sql(
            f"INSERT INTO {identifiers.qualified(schema, 'big')}"
            f" SELECT g, md5(g::text) FROM generate_series(1, {DISK_ROWS}) AS g"
        )


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=HANG)
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
        timeout=HANG,
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
    request: pytest.FixtureRequest, project: ProjectDir, db: sa.Engine, admin_engine: sa.Engine
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
            db.dispose()
            with admin_engine.connect() as conn:
                conn.exec_driver_sql(
                    f"DROP DATABASE IF EXISTS {identifiers.quote(name)} WITH (FORCE)"
                )


def test_a_full_disk_fails_a_named_stream_in_one_line_and_leaves_the_old_revision(
    project: ProjectDir, catalog: Catalog, disk: Disk
) -> None:
    """A full disk, twice over: ``tablespace`` puts what r2 builds on a 1 MB tmpfs, so the
    filesystem itself refuses (ENOSPC, as a full data disk does); ``temp_file_limit`` is
    PostgreSQL's own per-session disk quota, which a test can set wherever it runs, and which
    fails the same statement at the same point. A statement_timeout would only stand for a
    disk too slow to finish (test_a_statement_timeout_...)."""
    _named(project)
    _revisions(project, "core", "r1", disk=True)
    project.cli("upgrade", check=True)
    _fill_big(catalog, "core")
    _revisions(project, "core", "r2", disk=True)
    disk.fill()

    proc = project.cli("upgrade", "--json")
    message = one_error_line(proc, 1)
    print(f"\nfull disk ({disk.kind}), named stream: {message}")
    disk.assert_message(message, "core")
    assert catalog.version("core") == "r1"
    assert "note" not in catalog.columns("core", "item"), "r2's first step rolled back"
    assert "big_payload" not in catalog.indexes("core")
    assert catalog.count("core", "big") == DISK_ROWS, "no data lost"
    assert catalog.applied("core", "core") == ["r1"]
    run_id = json.loads(proc.stdout)["run_id"]
    (record,) = _run_record(catalog, run_id)  # one attempt, recorded as failed, nothing more
    assert record == ("core", "core", "r1", "r1", "failed", message.removeprefix("core: "))
    catalog.assert_no_advisory_lock()

    disk.free()
    proc = project.cli("upgrade")
    assert proc.returncode == 0, proc.stderr
    assert catalog.version("core") == "r2"
    assert "note" in catalog.columns("core", "item")
    assert "big_payload" in catalog.indexes("core")
    assert catalog.count("core", "big") == DISK_ROWS
    assert catalog.applied("core", "core") == ["r1", "r2"]
    catalog.assert_no_advisory_lock()


def test_a_full_disk_fails_only_its_tenant_and_the_others_finish(
    project: ProjectDir, catalog: Catalog, disk: Disk
) -> None:
    """As the named-stream case, in a fleet run: only ``t_003`` holds enough rows to need the
    disk. One worker: a full filesystem fails whatever writes at that moment, and the test
    wants only t_003 to meet it."""
    tenants, full = tenant_names(8), "t_003"
    _tenants(project)
    _revisions(project, "tenant", "r1", disk=True)
    create_schemas(catalog.db, tenants)
    project.cli("upgrade", check=True)
    _fill_big(catalog, full)
    _revisions(project, "tenant", "r2", disk=True)
    disk.fill()

    proc = project.cli("upgrade", "--jobs", "1", "--max-failures", "5", "--json")
    message = one_error_line(proc, 1)
    print(f"\nfull disk ({disk.kind}), {len(tenants)} tenants: {message}")
    disk.assert_message(message, f"tenant/{full}")
    summary = json.loads(proc.stdout)
    status = {r["schema"]: r["status"] for r in summary["results"]}
    assert status == {n: ("failed" if n == full else "applied") for n in tenants}
    assert {n: catalog.version(n) for n in tenants} == {
        n: ("r1" if n == full else "r2") for n in tenants
    }
    assert "note" not in catalog.columns(full, "item")
    assert "big_payload" not in catalog.indexes(full)
    assert catalog.count(full, "big") == DISK_ROWS, "no data lost"
    assert catalog.applied(full, "tenant") == ["r1"]
    record = _run_record(catalog, summary["run_id"])
    assert [r[1] for r in record] == tenants, "one attempt per tenant"
    assert [r for r in record if r[4] == "failed"] == [
        ("tenant", full, "r1", "r1", "failed", message.removeprefix(f"tenant/{full}: "))
    ]
    catalog.assert_no_advisory_lock()

    disk.free()
    proc = project.cli("upgrade", "--retry-failed", "--json")
    assert proc.returncode == 0, proc.stderr
    retried = json.loads(proc.stdout)["results"]
    assert [(r["schema"], r["status"]) for r in retried] == [(full, "applied")]
    assert {catalog.version(n) for n in tenants} == {"r2"}
    assert "big_payload" in catalog.indexes(full)
    assert catalog.count(full, "big") == DISK_ROWS
    catalog.assert_no_advisory_lock()


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
    project: ProjectDir, catalog: Catalog, args: tuple[str, ...]
) -> None:
    """A typo must not read as a tenant at base (current, status, check), pass as a no-op
    (downgrade) or create a schema (stamp): a tenant named to a command that reads or changes
    an existing one must exist or be listed by the source. Only ``upgrade`` creates."""
    _tenants(project, "r1", "r2")
    project.cli("upgrade", "--tenant", "t_a", "r1", check=True)
    with catalog.db.connect() as conn:
        conn.exec_driver_sql("INSERT INTO t_a.item VALUES (1), (2)")
        conn.commit()

    message = one_error_line(project.cli(*args), 2)
    assert message == UNKNOWN_TENANT
    assert "t_nosuch" not in catalog.schemas()
    assert catalog.version("t_a") == "r1", "the known tenant given alongside was not touched"
    assert catalog.count("t_a", "item") == 2
    catalog.assert_no_advisory_lock()


def test_tenants_drop_refuses_an_unknown_tenant_and_upgrade_still_creates_a_new_one(
    project: ProjectDir, catalog: Catalog
) -> None:
    _tenants(project, "r1")
    project.cli("upgrade", "--tenant", "t_a", check=True)

    assert one_error_line(project.cli("tenants", "drop", "t_nosuch"), 2) == (
        "refusing to drop without --yes when not on a terminal"
    )
    assert one_error_line(project.cli("tenants", "drop", "t_nosuch", "--yes"), 2) == (
        "'t_nosuch' is not a tenant of stream 'tenant' (use --force to drop it anyway)"
    )
    assert one_error_line(project.cli("tenants", "drop", "t_nosuch", "--yes", "--force"), 1) == (
        "schema 't_nosuch' does not exist"
    )
    assert catalog.version("t_a") == "r1"
    catalog.assert_no_advisory_lock()

    # A listed tenant without a schema yet is known: at base, nothing pending is hidden.
    listed = "query:SELECT n FROM (VALUES ('t_a'), ('t_listed')) AS v(n)"
    project.write("pyproject.toml", config_toml(TENANT_STREAM, lock_timeout="5s", lock_retries=3))
    config = project.root / "pyproject.toml"
    config.write_text(config.read_text().replace('"like:t_%"', repr(listed)))
    proc = project.cli("current", "--tenant", "t_listed")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "tenant/t_listed: <base> (1 pending)"
    assert "t_listed" not in catalog.schemas(), "reading does not create it"

    # upgrade --tenant is how a new tenant is made: it creates and migrates the schema.
    proc = project.cli("upgrade", "--tenant", "t_new")
    assert proc.returncode == 0, proc.stderr
    assert catalog.version("t_new") == "r1"
