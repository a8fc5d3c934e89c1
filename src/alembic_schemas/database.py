"""Engines and connections: the URL to use, the pinned search_path, and errors worded for users."""

from __future__ import annotations

import contextlib
import functools
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url

from . import citus, embedded, identifiers, pipeline
from .config import EMBEDDED, HOW_TO_CHOOSE, Project, expand
from .errors import ConfigError, DatabaseError, ErrorText, revision_prefix

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack is 3.11+

T = TypeVar("T")

# Sessions start with nothing but pg_catalog on their search_path: no user schema is the
# "default" one, so reflection always reports explicit schema names (no phantom diffs from
# `"$user"` or `public`), and nothing planted in `public` can shadow what a migration uses.
BASE_SEARCH_PATH = "pg_catalog"


def resolve_url(project: Project) -> str:
    """The database to migrate: ``$ALEMBIC_SCHEMAS_URL``, else ``url`` (``${VAR}`` expanded),
    as a psycopg 3 URL; ``url = "embedded"`` starts (or reuses) the embedded server. Nothing
    configured is an error: a deploy must never migrate a throw-away database by accident."""
    if project.url is None:
        raise ConfigError(f"no database configured in {project.config_path}: {HOW_TO_CHOOSE}")
    url = expand(project.url, project.url_source)
    if url == EMBEDDED:
        return embedded.ensure_running(project.root)
    return render(normalise(url, project.url_source))


def resolve_direct_url(project: Project) -> str | None:
    """``direct_url`` (see :mod:`alembic_schemas.pooling`) expanded and normalised, or None."""
    if project.direct_url is None:
        return None
    source = f"direct_url in {project.config_path}"
    url = expand(project.direct_url, source)
    if url == EMBEDDED:
        return embedded.ensure_running(project.root)
    return render(normalise(url, source))


OFFLINE_URL = "postgresql+psycopg://"
"""``--sql`` needs PostgreSQL's dialect, never a server: no URL is resolved for it."""

# Drivers whose URLs are accepted and migrated through psycopg 3 (the tool's own driver): an
# application keeps one URL, sync or async. asyncpg's query keys that libpq does not know are
# translated or dropped.
_DRIVERS = ("psycopg", "psycopg_async", "asyncpg", "psycopg2", "psycopg2cffi")
_ASYNCPG_ONLY = ("prepared_statement_cache_size", "prepared_statement_name_func", "command_timeout")
_ASYNCPG_SSL = {"true": "require", "false": "disable"}


def normalise(url: str | URL, source: str = "database URL") -> URL:
    """``url`` as a psycopg 3 URL: ``postgres://``, ``postgresql://`` and the asyncpg and
    psycopg2 drivers are converted; anything else that is not PostgreSQL is refused."""
    try:
        u = make_url(url)
    except Exception:
        raise ConfigError(f"{source}: invalid database URL {str(url)!r}") from None
    backend, _, driver = u.drivername.partition("+")
    if backend not in ("postgresql", "postgres"):
        raise ConfigError(f"{source}: database URL must be PostgreSQL, got {backend!r}")
    if driver and driver not in _DRIVERS:
        raise ConfigError(
            f"{source}: driver {driver!r} is not supported; alembic-schemas migrates through "
            "psycopg 3 and converts postgresql://, postgres://, +psycopg, +asyncpg and "
            "+psycopg2 URLs"
        )
    u = u.set(drivername="postgresql+psycopg")
    if driver == "asyncpg":
        query = {k: v for k, v in u.query.items() if k not in _ASYNCPG_ONLY}
        if "ssl" in query:
            ssl = query.pop("ssl")
            ssl = ssl[-1] if isinstance(ssl, tuple) else ssl
            query.setdefault("sslmode", _ASYNCPG_SSL.get(ssl.lower(), ssl))
        u = u.set(query=query)
    return u


def render(url: URL) -> str:
    return url.render_as_string(hide_password=False)


def create_engine(url: str | URL, *, pooled: bool = False, **kwargs: Any) -> Engine:
    """An engine whose every connection starts with ``search_path = pg_catalog``.

    The path is a startup parameter (libpq's ``options``), not a ``SET`` after connecting:
    a connection pooler in transaction mode that nobody told the tool about refuses it
    (PgBouncer: "unsupported startup parameter: options") instead of keeping the setting on
    a server connection that the application then gets.

    ``pooled``: the URL goes through such a pooler (``direct_url`` is set): no session
    setting at all (every migration transaction pins its own search_path with ``SET
    LOCAL``) and no prepared statements (psycopg prepares a statement run often, and the
    next transaction may reach another server connection)."""
    u = normalise(url)
    connect_args = dict(kwargs.pop("connect_args", {}))
    if pooled:
        connect_args["prepare_threshold"] = None
    else:
        given = u.query.get("options")
        given = given[-1] if isinstance(given, tuple) else given
        pin = f"-c search_path={BASE_SEARCH_PATH}"
        connect_args["options"] = f"{given} {pin}" if given else pin
    engine = sa.create_engine(u, connect_args=connect_args, **kwargs)

    # insert=True: run before SQLAlchemy's first-connect initialize(). One query tells whether
    # this is a Citus database, and whether a worker node (refused: see citus.refuse_worker).
    @event.listens_for(engine.pool, "connect", insert=True)
    def _read_citus_mode(dbapi_connection: Any, record: Any) -> None:
        cursor = dbapi_connection.cursor()
        version = cursor.execute("SELECT " + citus.VERSION_SQL).fetchone()[0]
        mode = citus.read_mode(version, lambda sql: cursor.execute(sql).fetchone())
        cursor.close()
        dbapi_connection.commit()
        record.info[citus.KEY] = mode
        try:
            citus.refuse_worker(mode, engine.url.render_as_string(hide_password=True))
        except ConfigError:
            dbapi_connection.close()
            raise

    return engine


def session_url(project: Project) -> str:
    """The URL for one session's work: ``direct_url`` when set, else ``url``."""
    return resolve_direct_url(project) or resolve_url(project)


def project_engine(project: Project, **kwargs: Any) -> Engine:
    return create_engine(session_url(project), **kwargs)


class Session:
    """A project plus its engines, for the length of one API call. The engines (and so the
    URL, and the embedded server) are only resolved on first use: a misspelt stream or
    tenant is refused before any server starts."""

    def __init__(self, project: Project, pool_size: int = 5) -> None:
        self.project = project
        self.pool_size = pool_size

    @functools.cached_property
    def engine(self) -> Engine:
        """Catalog reads, the run record, and every step that needs one session: through
        ``direct_url`` when the config names one, else ``url``."""
        return project_engine(self.project, pool_size=self.pool_size)

    @functools.cached_property
    def pooled(self) -> Engine:
        """Short migration transactions: ``url``, which may go through a transaction pooler
        when ``direct_url`` is set (see :func:`create_engine`); else the same as ``engine``."""
        if self.project.direct_url is None:
            return self.engine
        return create_engine(resolve_url(self.project), pooled=True, pool_size=self.pool_size)

    def close(self) -> None:
        for name in ("pooled", "engine"):
            if name in self.__dict__:
                self.__dict__[name].dispose()

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
    if (sqlstate(exc) in _PREPARED_STATEMENT_ERRORS and '"_pg3_' in first) or (
        "unsupported startup parameter: options" in first
    ):
        first += f" ({POOLER_HINT})"
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


# psycopg's own prepared statements ("_pg3_0") gone or doubled: another server connection
# answered, which only a connection pooler in transaction mode does; or a pooler refused the
# search_path the tool sets at connection start.
_PREPARED_STATEMENT_ERRORS = ("26000", "42P05", "08P01")
POOLER_HINT = (
    "a connection pooler (PgBouncer?) is between alembic-schemas and PostgreSQL: set "
    "direct_url to a direct connection, see 'Connection poolers' in the README"
)


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


Statement = pipeline.Statement
"""SQL text and its parameters; None: sent as written (a ``%`` is text). Rendered SQL, in
which SQLAlchemy's pyformat dialect doubled every ``%``, is sent with ``()`` to undo that."""


def rendered(sql: str) -> Statement:
    """A statement SQLAlchemy rendered (every ``%`` doubled), to send: the ``%%`` undone here,
    once, when nothing else in it is a ``%`` (then it is sent as written, and psycopg need not
    parse it for placeholders on every send); otherwise psycopg undoes them."""
    if "%" not in sql.replace("%%", ""):
        return sql.replace("%%", "%"), None
    return sql, ()


_CURSORS_KEY = "alembic_schemas.cursors"


def _cursors(conn: Connection, raw: Any, n: int) -> list[Any]:
    """``n`` cursors of the psycopg connection ``raw``, kept with it (SQLAlchemy's ``info``
    of the connection, which lives as long as it does) for its next sends: a fleet sends a
    hundred statements or more per tenant, and making a cursor costs as much as sending."""
    info = conn.connection.info
    kept: list[Any] = info.get(_CURSORS_KEY) or []
    if kept and kept[0].connection is not raw:  # a new connection behind the same record
        kept = []
    kept += [raw.cursor() for _ in range(n - len(kept))]
    info[_CURSORS_KEY] = kept
    return kept[:n]


def _as_dbapi_error(
    conn: Connection, raw: Any, sql: str, params: Any, error: psycopg.Error
) -> sa.exc.StatementError:
    """``error``, raised by the psycopg connection ``raw`` behind ``conn`` on ``sql``, as
    SQLAlchemy's DBAPIError (as ``conn.execute`` raises it); a connection it broke is
    invalidated, so that SQLAlchemy reconnects on next use."""
    if raw.broken or raw.closed:
        conn.invalidate(error)
    return sa.exc.DBAPIError.instance(
        sql,
        params,
        error,
        psycopg.Error,
        connection_invalidated=conn.invalidated,
        dialect=conn.dialect,
    )


def scalar_outside_transaction(conn: Connection, sql: str, params: Sequence[Any]) -> Any:
    """The first value of ``sql`` run as a statement of its own (autocommit), on a connection
    with no transaction open, which it leaves as it found it; errors come as SQLAlchemy's
    DBAPIError. The session is never idle in a transaction around it, and its last query
    (what ``pg_stat_activity`` shows) stays ``sql`` afterwards."""
    if conn.in_transaction():
        raise RuntimeError("scalar_outside_transaction needs a connection with no transaction")
    raw: Any = conn.connection.driver_connection
    previous = raw.autocommit
    raw.autocommit = True
    try:
        row = raw.execute(sql, params, prepare=False).fetchone()
    except psycopg.Error as exc:
        raise _as_dbapi_error(conn, raw, sql, params, exc) from None
    finally:
        if not (raw.broken or raw.closed):
            raw.autocommit = previous
    return None if row is None else row[0]


class RowCountError(Exception):
    """A statement :func:`send` was told changes one row changed ``found``."""

    def __init__(self, index: int, sql: str, found: int) -> None:
        super().__init__(f"{sql!r} changed {found} rows, not one")
        self.index, self.sql, self.found = index, sql, found


def send(
    conn: Connection, statements: Sequence[Statement], *, one_row: Collection[int] = ()
) -> list[tuple[Any, ...]]:
    """Send ``statements`` one per query, pipelined: one network wait for all of them (a
    distributed PostgreSQL such as Citus refuses several statements in one query string).
    Returns the rows of the last statement. Runs in the connection's current transaction
    (begun if none is, as ``conn.execute`` would); errors come as SQLAlchemy's DBAPIError, as
    from ``conn.execute``. The statements at the indexes ``one_row`` must each change exactly
    one row, else RowCountError (for the first that did not)."""
    if not statements:
        return []
    if not conn.in_transaction():  # autobegin, as conn.execute would: SQLAlchemy commits it
        conn.begin()
    raw: Any = conn.connection.driver_connection
    if pipeline.usable(raw):
        return _send_direct(conn, raw, statements, one_row)
    # psycopg is yet to begin the transaction (as it would, with the isolation level set on
    # the connection): its own pipeline, with a cursor per statement
    return _send_on_cursors(conn, raw, statements, one_row)


def _send_direct(
    conn: Connection, raw: Any, statements: Sequence[Statement], one_row: Collection[int]
) -> list[tuple[Any, ...]]:
    try:
        results = pipeline.run(raw, pipeline.queries(raw, statements))
    except pipeline.Failed as failed:
        raise _failed_at(conn, raw, statements, failed.index, failed.error) from None
    except BaseException as exc:
        # broken, or interrupted with results unread: the connection cannot be used again
        # (its transaction ends on the server with it)
        conn.invalidate(exc if isinstance(exc, Exception) else None)
        if isinstance(exc, psycopg.Error):
            raise _as_dbapi_error(conn, raw, statements[0][0], statements[0][1], exc) from None
        raise
    for i in sorted(one_row):
        if (found := pipeline.row_count(results[i])) != 1:
            raise RowCountError(i, statements[i][0], found)
    return pipeline.rows(raw, results[-1])


def _send_on_cursors(
    conn: Connection, raw: Any, statements: Sequence[Statement], one_row: Collection[int]
) -> list[tuple[Any, ...]]:
    error: psycopg.Error | None = None
    cursors = _cursors(conn, raw, len(statements))  # one each: its result says if it ran
    try:
        with raw.pipeline():
            # An error raised inside the block would make psycopg log one of its own when
            # the pipeline ends: keep the first and let the pipeline end quietly.
            try:
                for cursor, (sql, params) in zip(cursors, statements, strict=True):
                    cursor.execute(sql, params, prepare=False)  # resets what it held
            except psycopg.Error as exc:
                error = exc
    except psycopg.Error as exc:
        error = error or exc
    if error is None:
        for i in sorted(one_row):
            if cursors[i].rowcount != 1:
                raise RowCountError(i, statements[i][0], cursors[i].rowcount)
        last = cursors[-1]
        return list(last.fetchall()) if last.description is not None else []
    # The statement that failed is the first without a result (those after it were not run).
    failed = next((i for i, c in enumerate(cursors) if c.pgresult is None), len(cursors) - 1)
    raise _failed_at(conn, raw, statements, failed, error)


def _failed_at(
    conn: Connection, raw: Any, statements: Sequence[Statement], index: int, error: psycopg.Error
) -> sa.exc.StatementError:
    """The error of a send whose statement ``index`` failed: it names that statement, and
    carries its index (``statement_index``) for callers that map it to a revision."""
    sql, params = statements[index]
    raised = _as_dbapi_error(conn, raw, sql, params, error)
    raised.statement_index = index  # type: ignore[attr-defined]
    return raised


@contextlib.contextmanager
def scratch_database(url: str, prefix: str = "alembic_schemas_test") -> Iterator[str]:
    """Create an empty database on the server of ``url`` (the role needs CREATEDB); yield its
    URL; drop it afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    quoted = identifiers.quote(name, "database name")
    admin = create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    try:
        with connect(admin) as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {quoted}")
        try:
            yield render(make_url(url).set(database=name))
        finally:
            with connect(admin) as conn:
                # WITH (FORCE): a failed step may have left a connection open.
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
    finally:
        admin.dispose()
