"""A real PgBouncer in transaction pooling mode in front of the test server, for tests.

``.ci/run`` starts one in front of its PostgreSQL 15 and names it in
``$ALEMBIC_SCHEMAS_TEST_PGBOUNCER`` (``host:port``); otherwise tests start their own process
(Debian's ``pgbouncer`` binary), pointed at the test server, and skip only when the binary
is absent.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

PGBOUNCER_ENV = "ALEMBIC_SCHEMAS_TEST_PGBOUNCER"


def binary() -> str | None:
    return shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.path.exists(p)), None
    )


@dataclass(frozen=True)
class Bouncer:
    host: str
    port: int

    def pooled(self, db_url: str) -> str:
        """``db_url`` (a database on the test server) reached through this PgBouncer."""
        url = make_url(db_url)
        query = {k: v for k, v in url.query.items() if k not in ("host", "port")}
        pooled = url.set(host=self.host, port=self.port, query=query)
        return pooled.render_as_string(hide_password=False)

    def admin_scalar(self, db_url: str, sql: str, column: str, database: str) -> int:
        """One number from PgBouncer's admin console (``SHOW STATS`` and friends), which
        speaks only its own commands: plain psycopg, no SQLAlchemy start-up queries."""
        url = make_url(db_url)
        with psycopg.connect(
            host=self.host, port=self.port, user=url.username, dbname="pgbouncer", autocommit=True
        ) as conn:
            cursor = conn.execute(sql)
            names = [d.name for d in cursor.description or ()]
            rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        return sum(int(r[column]) for r in rows if r["database"] == database)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server_address(server_url: str) -> tuple[str, int, str]:
    url = make_url(server_url)
    host = url.query.get("host") or url.host or "localhost"
    host = host[-1] if isinstance(host, tuple) else host
    port = url.query.get("port") or url.port or 5432
    port = port[-1] if isinstance(port, tuple) else port
    return str(host), int(port), str(url.username or "postgres")


def _run_as(host: str) -> str | None:
    """PgBouncer refuses to run as root: run as the owner of the server's socket folder
    (who can reach it), or nobody for a TCP server."""
    if os.geteuid() != 0:
        return None
    if host.startswith("/"):
        return pwd.getpwuid(os.stat(host).st_uid).pw_name
    return "nobody"


@contextlib.contextmanager
def start(server_url: str, **settings: str) -> Iterator[Bouncer]:
    """A PgBouncer process (transaction pooling, trust auth, every database name) in front of
    the server of ``server_url``, stopped afterwards. ``settings`` go to [pgbouncer]."""
    exe = binary()
    assert exe is not None
    host, port, user = _server_address(server_url)
    listen = _free_port()
    folder = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
    password = make_url(server_url).password
    secret = f" password={password}" if password else ""
    options = {
        "listen_addr": "127.0.0.1",
        "listen_port": str(listen),
        "unix_socket_dir": "",
        "auth_type": "trust",
        "auth_file": str(folder / "users.txt"),
        "admin_users": user,
        "pool_mode": "transaction",
        "default_pool_size": "20",
        "max_client_conn": "500",
        "logfile": str(folder / "pgbouncer.log"),
        **settings,
    }
    (folder / "users.txt").write_text(f'"{user}" ""\n')
    (folder / "pgbouncer.ini").write_text(
        f"[databases]\n* = host={host} port={port} user={user}{secret}\n\n[pgbouncer]\n"
        + "".join(f"{k} = {v}\n" for k, v in options.items())
    )
    owner = _run_as(host)
    if owner is not None:
        uid = pwd.getpwnam(owner).pw_uid
        for path in (folder, *folder.iterdir()):
            os.chown(path, uid, -1)
    args = [exe, *(["-u", owner] if owner else []), str(folder / "pgbouncer.ini")]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", listen)):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                log = (
                    (folder / "pgbouncer.log").read_text()
                    if (folder / "pgbouncer.log").exists()
                    else ""
                )
                raise RuntimeError(
                    f"pgbouncer did not start: {proc.stderr.read() if proc.stderr else ''}{log}"
                )
            time.sleep(0.05)
        yield Bouncer("127.0.0.1", listen)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)
