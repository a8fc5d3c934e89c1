"""Engines and connections: the URL to use, the pinned search_path, and errors worded for users."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url

from . import embedded, identifiers
from .config import Project
from .errors import ConfigError, DatabaseError, ErrorText, revision_prefix

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack is 3.11+

T = TypeVar("T")

# Sessions start with nothing but pg_catalog on their search_path: no user schema is the
# "default" one, so reflection always reports explicit schema names (no phantom diffs from
# `"$user"` or `public`), and nothing planted in `public` can shadow what a migration uses.
BASE_SEARCH_PATH = "pg_catalog"


def resolve_url(project: Project) -> str:
    """``$ALEMBIC_SCHEMAS_URL``, else ``url`` from the config, else the embedded server."""
    return project.url or embedded.ensure_running(project.root)


def _normalise(url: str) -> URL:
    try:
        u = make_url(url)
    except Exception:
        raise ConfigError(f"invalid database URL {url!r}") from None
    if u.get_backend_name() != "postgresql":
        raise ConfigError(f"database URL must be PostgreSQL, got {u.get_backend_name()!r}")
    if u.drivername == "postgresql":
        u = u.set(drivername="postgresql+psycopg")
    return u


def create_engine(url: str, **kwargs: Any) -> Engine:
    """An engine whose every connection starts with ``search_path = pg_catalog``."""
    engine = sa.create_engine(_normalise(url), **kwargs)

    # insert=True: run before SQLAlchemy's first-connect initialize(), so the dialect's
    # default_schema_name is read with the pinned search_path.
    @event.listens_for(engine.pool, "connect", insert=True)
    def _pin_search_path(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("SET search_path TO " + BASE_SEARCH_PATH)
        cursor.close()
        dbapi_connection.commit()

    return engine


def project_engine(project: Project, **kwargs: Any) -> Engine:
    return create_engine(resolve_url(project), **kwargs)


class Session:
    """A project plus one engine, for the length of one API call."""

    def __init__(self, project: Project, pool_size: int = 5) -> None:
        self.project = project
        self.engine: Engine = project_engine(project, pool_size=pool_size)

    def close(self) -> None:
        self.engine.dispose()

    def connect(self) -> contextlib.AbstractContextManager[Connection]:
        return connect(self.engine)


@contextlib.contextmanager
def session(project: Project, pool_size: int = 5) -> Iterator[Session]:
    s = Session(project, pool_size)
    try:
        yield s
    finally:
        s.close()


def describe(exc: BaseException, *, revision: bool = True) -> ErrorText:
    """A one-line message for a database error: the revision it was raised in (unless
    ``revision`` is false), PostgreSQL's message, DETAIL and HINT, and what was done about it.
    The failing statement and the SQLSTATE come along on the returned text."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    first = text[0] if text else type(orig).__name__
    # psycopg prefixes connect errors with these; the rest already says what failed.
    for prefix in ("connection failed: ", "connection is bad: ", "consuming input failed: "):
        first = first.removeprefix(prefix)
    if getattr(orig, "sqlstate", None) is None and len(text) > 1:
        # libpq's own explanation of a lost connection follows on indented lines
        more = " ".join(line.strip() for line in text[1:] if line.strip())
        first = f"{first} ({more})" if more else first
    parts = [first.strip()]
    diag = getattr(orig, "diag", None)
    for label, value in (
        ("DETAIL", getattr(diag, "message_detail", None)),
        ("HINT", getattr(diag, "message_hint", None)),
    ):
        if value:
            parts.append(f"{label}: {' '.join(str(value).split()).removesuffix('.')}")
    # what was done about it, e.g. an INVALID index dropped after a failed autocommit_block
    notes = getattr(exc, "__notes__", None) or getattr(orig, "__notes__", None) or []
    lead = revision_prefix(exc) if revision else ""
    return ErrorText.of(lead + "; ".join([*parts, *notes]), failing_statement(exc), sqlstate(exc))


# A failing statement longer than this is cut (a replayed revision is sent as one script).
STATEMENT_LIMIT = 2000


def failing_statement(exc: BaseException) -> str | None:
    """The SQL statement ``exc`` was raised by. When several were sent as one script and
    PostgreSQL says where the error is, only the statement around that position."""
    statement = getattr(exc, "statement", None)
    if not isinstance(statement, str) or not statement.strip():
        return None
    diag = getattr(getattr(exc, "orig", None), "diag", None)
    position = getattr(diag, "statement_position", None)
    if position and str(position).isdigit():
        at = int(position) - 1  # 1-based, in characters
        start = statement.rfind(";\n", 0, at)
        end = statement.find(";\n", at)
        statement = statement[start + 2 if start >= 0 else 0 : end + 1 if end >= 0 else None]
    statement = statement.strip()
    if len(statement) > STATEMENT_LIMIT:
        statement = statement[:STATEMENT_LIMIT] + " ..."
    return statement


def read_after_failure(conn: Connection, read: Callable[[], T], fallback: T) -> T:
    """``read()`` on a connection whose transaction just failed, rolled back before and after;
    ``fallback`` when the connection is gone. After a failed run an ``autocommit_block`` may
    have committed earlier revisions, so where a schema stopped must be read, not assumed."""
    try:
        if conn.in_transaction() or conn.invalidated:
            conn.rollback()
        return read()
    except sa.exc.DBAPIError:
        return fallback
    finally:
        if conn.in_transaction() or conn.invalidated:
            conn.rollback()


@contextlib.contextmanager
def transaction(conn: Connection) -> Iterator[None]:
    """``conn.begin()`` that commits whichever transaction is open at the end: an
    ``autocommit_block`` inside commits the first one and begins another."""
    conn.begin()
    try:
        yield
    except BaseException:
        if conn.in_transaction():
            conn.rollback()
        raise
    if conn.in_transaction():
        conn.commit()


@contextlib.contextmanager
def connect(engine: Engine) -> Iterator[Connection]:
    """``engine.connect()`` with connection failures turned into a one-line DatabaseError."""
    try:
        conn = engine.connect()
    except sa.exc.OperationalError as exc:
        where = engine.url.render_as_string(hide_password=True)
        raise DatabaseError(f"cannot connect to {where}: {describe(exc)}") from None
    with conn:
        yield conn


LOCK_NOT_AVAILABLE = "55P03"


def sqlstate(exc: BaseException) -> str | None:
    orig = getattr(exc, "orig", None)
    return getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)


def schema_created_concurrently(exc: BaseException) -> bool:
    """``CREATE SCHEMA IF NOT EXISTS`` hit the unique index: another run created the schema
    after this transaction cached it as missing (the advisory lock does not refresh the
    backend's catalog cache). A new transaction sees it, so the attempt is retried."""
    constraint = getattr(getattr(getattr(exc, "orig", None), "diag", None), "constraint_name", None)
    return sqlstate(exc) == "23505" and constraint == "pg_namespace_nspname_index"


def with_retries(
    conn: Connection, attempts: int, lock_timeout: str, fn: Callable[[], T]
) -> tuple[T | None, str | None]:
    """``(fn(), None)``, retrying (with back-off) while it fails on a lock timeout or a
    concurrently created schema; after the last attempt, or on any other database error,
    ``(None, one-line message)``. Each attempt must be one transaction on ``conn``."""
    attempts = max(1, attempts)
    for attempt in range(1, attempts + 1):
        try:
            return fn(), None
        except sa.exc.DBAPIError as exc:
            if conn.in_transaction() or conn.invalidated:
                conn.rollback()  # an invalidated connection reconnects on next use
            code = sqlstate(exc)
            if (
                code == LOCK_NOT_AVAILABLE or schema_created_concurrently(exc)
            ) and attempt < attempts:
                time.sleep(min(0.1 * 2**attempt, 5.0))
                continue
            message = describe(exc)
            if code == LOCK_NOT_AVAILABLE:
                message = ErrorText.of(
                    f"{revision_prefix(exc)}lock timeout ({lock_timeout}) after {attempts}"
                    f" attempts: {describe(exc, revision=False)}",
                    message.statement,
                    code,
                )
            return None, message
    raise AssertionError("unreachable")


def run_sql(conn: Connection, sql: str) -> sa.CursorResult[Unpack[tuple[Any, ...]]]:
    """Execute SQL text exactly as written. ``exec_driver_sql`` alone hands psycopg an empty
    parameter set, and psycopg then reads ``%`` as placeholders: a tenant named ``100%s``
    became schema ``100$1``, and replayed SQL containing ``LIKE 'a%'`` failed."""
    return conn.exec_driver_sql(sql, execution_options={"no_parameters": True})


def set_local(
    conn: Connection, settings: Mapping[str, str] = {}, *, search_path: tuple[str, ...] = ()
) -> None:
    """Settings for the current transaction only (one round trip for all of ``settings``);
    schema names go through identifiers."""
    if search_path:
        run_sql(conn, "SET LOCAL search_path TO " + identifiers.search_path(*search_path))
    if settings:
        conn.execute(sa.select(*(sa.func.set_config(k, v, True) for k, v in settings.items())))


Statement = tuple[str, Sequence[Any] | None]
"""SQL text and its parameters; None: sent as written (a ``%`` is text). Rendered SQL, in
which SQLAlchemy's pyformat dialect doubled every ``%``, is sent with ``()`` to undo that."""


def send(conn: Connection, statements: Sequence[Statement]) -> list[tuple[Any, ...]]:
    """Send ``statements`` one per query, pipelined: one network wait for all of them (a
    distributed PostgreSQL such as Citus refuses several statements in one query string).
    Returns the rows of the last statement. Runs in the connection's current transaction;
    errors come as SQLAlchemy's DBAPIError, as from ``conn.execute``."""
    if not statements:
        return []
    raw: Any = conn.connection.driver_connection
    error: psycopg.Error | None = None
    cursors: list[Any] = []
    try:
        with raw.pipeline():
            # An error raised inside the block would make psycopg log one of its own when
            # the pipeline ends: keep the first and let the pipeline end quietly.
            try:
                for sql, params in statements:
                    cursors.append(raw.cursor())  # one each: its result says if it ran
                    cursors[-1].execute(sql, params, prepare=False)
            except psycopg.Error as exc:
                error = exc
    except psycopg.Error as exc:
        error = error or exc
    if error is None:
        last = cursors[-1]
        return list(last.fetchall()) if last.description is not None else []
    if raw.broken or raw.closed:
        conn.invalidate(error)
    # The statement that failed is the first without a result (those after it were not run).
    failed = next((i for i, c in enumerate(cursors) if c.pgresult is None), len(cursors) - 1)
    sql, params = statements[max(failed, 0)]
    raised = sa.exc.DBAPIError.instance(sql, params, error, psycopg.Error, dialect=conn.dialect)
    raised.statement_index = failed  # type: ignore[attr-defined]
    raise raised
