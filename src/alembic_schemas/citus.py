"""Citus mode: what changes when the connected database has the ``citus`` extension.

With Citus schema-based sharding each tenant schema is a *distributed schema*: its tables live
together on one worker node and every DDL statement goes through the coordinator. Elsewhere
nothing here runs. On Citus:

* the tool runs against the coordinator only: a worker is refused in one line (:func:`refuse_worker`);
* every schema transaction starts with ``SET LOCAL citus.propagate_set_commands = 'local'``
  and sends its timeouts as ``SET LOCAL`` statements, which Citus then sends to every worker
  the transaction touches (``set_config()`` stays on the coordinator);
* a schema is created only when ``pg_namespace`` says it is missing, with
  ``citus.enable_schema_based_sharding`` on for tenants and off for named streams and the
  tool's own schemas (``CREATE SCHEMA IF NOT EXISTS`` of an undistributed schema would register
  it as distributed again);
* tables of a named schema that tenant tables reference become reference tables
  (``reference_tables``), or the run is refused before any tenant is touched;
* ``autocommit_block`` runs while no other transaction of the run is open (:class:`Gate`), and
  INVALID indexes are looked for on the workers too.

Every Citus-specific query is here. The module sits just above :mod:`alembic_schemas.database`,
whose connect hook records the :class:`Mode` of each new connection.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from . import identifiers
from .config import Project, StreamConfig
from .errors import ConfigError, DatabaseError

KEY = "alembic_schemas.citus"  # the Mode of a DBAPI connection, in its pool record's info

# One sub-select, so that the connect hook learns whether this is Citus in the round trip
# that pins search_path.
# Citus' own extensions: a scratch database (the snapshot build) stays plain PostgreSQL.
EXTENSIONS = frozenset({"citus", "citus_columnar"})
VERSION_SQL = "(SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'citus')"
_NODE_SQL = (
    "SELECT (SELECT groupid FROM pg_catalog.pg_dist_local_group),"
    " (SELECT nodename || ':' || nodeport FROM pg_catalog.pg_dist_node"
    "  WHERE groupid = 0 AND noderole = 'primary' ORDER BY nodeid LIMIT 1)"
)


@dataclass(frozen=True)
class Mode:
    """What the connected database says about Citus."""

    version: str | None = None  # the citus extension's version; None: not Citus
    group: int = 0  # pg_dist_local_group: 0 on the coordinator, the worker's group otherwise
    coordinator: str | None = None  # host:port of the coordinator, when the node knows it

    @property
    def citus(self) -> bool:
        return self.version is not None

    @property
    def worker(self) -> bool:
        return self.citus and self.group != 0


PLAIN = Mode()


def read_mode(version: str | None, fetch: Callable[[str], Sequence[Any]]) -> Mode:
    """The Mode of a node whose citus version is ``version``; ``fetch(sql)`` returns one row."""
    if version is None:
        return PLAIN
    group, coordinator = fetch(_NODE_SQL)
    return Mode(str(version), int(group or 0), coordinator)


def _raw(conn: Connection, sql: str) -> sa.CursorResult[Any]:
    # Fixed text (names quoted by identifiers): no parameter set, so a % stays a %.
    return conn.exec_driver_sql(sql, execution_options={"no_parameters": True})


def mode(conn: Connection) -> Mode:
    """The connection's Mode: recorded when the tool's engine connected, detected (once per
    DBAPI connection) on a connection the caller brought."""
    found = conn.info.get(KEY)
    if not isinstance(found, Mode):
        version = _raw(conn, "SELECT " + VERSION_SQL).scalar()
        found = read_mode(version, lambda sql: _raw(conn, sql).one())
        conn.info[KEY] = found
    return found


def is_citus(conn: Connection) -> bool:
    return mode(conn).citus


def refuse_worker(found: Mode, where: str) -> None:
    """One line when ``where`` is a Citus worker: DDL and the tool's records go through the
    coordinator, and a worker's view of a tenant (its shard tables) is not the tenant."""
    if found.worker:
        at = f" ({found.coordinator})" if found.coordinator else ""
        raise ConfigError(
            f"{where} is a Citus worker node (group {found.group}): run alembic-schemas"
            f" against the coordinator{at}"
        )


def check_connection(conn: Connection) -> None:
    """:func:`refuse_worker` for a connection the caller brought."""
    refuse_worker(mode(conn), conn.engine.url.render_as_string(hide_password=True))


# --- the schema transaction --------------------------------------------------------------

PROPAGATE = "SET LOCAL citus.propagate_set_commands = 'local'"
_EXISTS = "EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s)"

Statement = tuple[str, Sequence[Any] | None]  # as database.Statement


def with_schema_exists(statements: list[Statement], schema: str) -> list[Statement]:
    """``statements`` (a schema transaction's first batch, ending with its advisory lock)
    made to end with a query of ``(lock taken, schema exists)``: read under the lock, so a
    schema is created only when ``pg_namespace`` lacks it."""
    *before, (sql, params) = statements
    if sql.startswith("SELECT ") and params is not None:  # the lock itself: one query
        return [*before, (f"{sql}, {_EXISTS}", (*params, schema))]
    return [*statements, (f"SELECT true, {_EXISTS}", (schema,))]


def sharding_statement(distributed: bool) -> str:
    return f"SET LOCAL citus.enable_schema_based_sharding = {'on' if distributed else 'off'}"


def create_schema_sql(
    statements: Sequence[str], exists: bool, distributed: bool
) -> list[Statement]:
    """``statements`` (``CREATE SCHEMA``, then grants) as a schema transaction sends them on
    Citus: an existing schema gets its grants only (``CREATE SCHEMA IF NOT EXISTS`` of a
    schema that is not distributed would distribute it); a missing one is created with
    schema-based sharding on for a tenant, off for a named stream's schema."""
    if exists:
        return [(sql, None) for sql in statements[1:]]
    return [(sharding_statement(distributed), None), *((sql, None) for sql in statements)]


def create_schema(conn: Connection, statement: str, *, distributed: bool) -> None:
    """Create a schema that ``pg_namespace`` says is missing (the caller checked, under its
    lock), one statement per query."""
    for sql, _ in create_schema_sql([statement], False, distributed):
        _raw(conn, sql)


# --- reference tables --------------------------------------------------------------------

_TABLES = sa.text(
    """
    SELECT c.oid, c.relname,
           EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition p WHERE p.logicalrelid = c.oid)
    FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = :schema AND c.relkind IN ('r', 'p') AND NOT c.relispartition
    """
)
_FOREIGN_KEYS = sa.text(
    """
    SELECT conrelid, confrelid FROM pg_catalog.pg_constraint
    WHERE contype = 'f' AND conrelid = ANY(:oids) AND confrelid = ANY(:oids)
    """
)


def make_reference_tables(
    conn: Connection, schema: str, wanted: bool | tuple[str, ...], version_table: str
) -> list[str]:
    """Make the ``wanted`` tables of ``schema`` (True: all but the version table) reference
    tables, those referenced by others first; tables that are Citus tables already, or do
    not exist yet, are left alone. Returns the tables converted."""
    if wanted is False:
        return []
    rows = conn.execute(_TABLES, {"schema": schema}).all()
    names = {oid: name for oid, name, _ in rows}
    todo = {
        oid
        for oid, name, distributed in rows
        if not distributed
        and (name in wanted if isinstance(wanted, tuple) else name != version_table)
    }
    if not todo:
        return []
    edges = conn.execute(_FOREIGN_KEYS, {"oids": list(names)}).all()
    done: list[str] = []
    for oid in _referenced_first(todo, edges):
        qualified = identifiers.qualified(schema, names[oid], "table name")
        conn.execute(
            sa.text("SELECT pg_catalog.create_reference_table(CAST(:t AS pg_catalog.regclass))"),
            {"t": qualified},
        )
        done.append(qualified)
    return done


def _referenced_first(todo: set[int], edges: Sequence[Any]) -> list[int]:
    """``todo`` ordered so that a table comes after the tables it references."""
    refs: dict[int, set[int]] = {oid: set() for oid in todo}
    for child, parent in edges:
        if child in refs and parent in todo and parent != child:
            refs[child].add(parent)
    out: list[int] = []
    placed: set[int] = set()
    while refs:
        ready = sorted(oid for oid, parents in refs.items() if parents <= placed) or sorted(refs)
        for oid in ready:
            out.append(oid)
            placed.add(oid)
            del refs[oid]
    return out


_IDENT = r'("(?:[^"]|"")+"|[^\s."(),]+)'
_REFERENCES = re.compile(r"\bREFERENCES\s+" + _IDENT + r"\s*\.\s*" + _IDENT, re.IGNORECASE)


def _unquote(token: str) -> str:
    if token.startswith('"'):
        return token[1:-1].replace('""', '"')
    return token.lower()


def referenced_tables(metadata: sa.MetaData | None, sqls: Iterable[str]) -> set[tuple[str, str]]:
    """(schema, table) of the schema-qualified tables that tenant tables reference: foreign
    keys of the stream's models, and ``REFERENCES schema.table`` in its rendered revisions."""
    found: set[tuple[str, str]] = set()
    for table in metadata.tables.values() if metadata is not None else ():
        if table.schema is not None:
            continue  # a named schema's table, copied into the tenant metadata
        for fk in table.foreign_keys:
            parts = fk.target_fullname.split(".")
            if len(parts) == 3:
                found.add((parts[0], parts[1]))
    for sql in sqls:
        for schema, table in _REFERENCES.findall(sql):
            found.add((_unquote(schema), _unquote(table)))
    return found


_NOT_REFERENCE = sa.text(
    """
    SELECT n.nspname, c.relname FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    JOIN unnest(CAST(:schemas AS text[]), CAST(:tables AS text[])) AS t(s, r)
      ON n.nspname = t.s AND c.relname = t.r
    WHERE NOT EXISTS (
        SELECT 1 FROM pg_catalog.pg_dist_partition p
        WHERE p.logicalrelid = c.oid AND p.partmethod = 'n' AND p.repmodel = 't')
    ORDER BY 1, 2
    """
)


def refuse_unreferenceable(
    conn: Connection,
    stream: StreamConfig,
    metadata: sa.MetaData | None,
    sqls: Iterable[str],
    project: Project,
) -> None:
    """Refuse, before any tenant is touched, a tenant stream whose tables reference an
    existing table that is not a reference table (see :func:`referenced_tables`): Citus
    allows a distributed schema's tables to reference only their own schema and reference
    tables. The message names the table and the fix."""
    pairs = sorted(referenced_tables(metadata, sqls))
    if not pairs:
        return
    params = {"schemas": [s for s, _ in pairs], "tables": [t for _, t in pairs]}
    bad = conn.execute(_NOT_REFERENCE, params).all()
    if not bad:
        return
    schema, table = bad[0]
    qualified = identifiers.qualified(schema, table, "table name")
    sql = "SELECT create_reference_table('" + qualified.replace("'", "''") + "')"
    owners = {c.schema: c.name for c in project.streams.values() if c.schema}
    owner = owners.get(schema)
    fix = (
        f"set reference_tables = true on stream {owner!r} and run"
        f" 'alembic-schemas upgrade -s {owner}', or run {sql}"
        if owner is not None
        else f"run {sql}"
    )
    more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
    raise ConfigError(
        f"tenant stream {stream.name!r} references {qualified}{more}, which is not a Citus"
        f" reference table (tables of a distributed tenant schema may reference only their"
        f" own schema and reference tables): {fix}"
    )


# --- snapshots -----------------------------------------------------------------------------


def distribute_schema(conn: Connection, schema: str) -> None:
    """Make a plain schema, built on the coordinator, a distributed schema (its tables move
    to a worker as one colocated group)."""
    conn.execute(
        sa.text("SELECT pg_catalog.citus_schema_distribute(CAST(:s AS pg_catalog.regnamespace))"),
        {"s": identifiers.quote(schema)},
    )


# --- INVALID indexes ---------------------------------------------------------------------


@dataclass(frozen=True)
class InvalidIndex:
    schema: str
    name: str  # the coordinator's index name (a shard's suffix removed)
    node: str  # host:port where it is INVALID

    @property
    def qualified(self) -> str:
        return identifiers.qualified(self.schema, self.name, "index name")

    def __str__(self) -> str:
        return f"{self.qualified} on {self.node}"


# Run on each worker by run_command_on_workers; the schema list is quoted by the server (%L).
_WORKER_INVALID = (
    "SELECT coalesce(pg_catalog.json_agg(pg_catalog.json_build_array(n.nspname, c.relname)),"
    " '[]') FROM pg_catalog.pg_index i"
    " JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid"
    " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
    " WHERE NOT i.indisvalid AND n.nspname = ANY(CAST(%L AS pg_catalog.text[]))"
)
_ON_WORKERS = sa.text(
    "SELECT nodename, nodeport, success, result FROM pg_catalog.run_command_on_workers("
    "pg_catalog.format(:command, CAST(:schemas AS pg_catalog.text[])))"
)
_INDEXES = sa.text(
    """
    SELECT n.nspname, c.relname, i.indisvalid FROM pg_catalog.pg_index i
    JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = ANY(:schemas)
    """
)
_SHARD_SUFFIX = re.compile(r"_\d+\Z")


def invalid_indexes(conn: Connection, schemas: Sequence[str]) -> list[InvalidIndex]:
    """INVALID indexes of ``schemas`` on the coordinator and on every worker (a shard's index
    is named by its coordinator index), in two queries."""
    if not schemas:
        return []
    coordinator: dict[str, set[str]] = {}
    found: list[InvalidIndex] = []
    here = mode(conn).coordinator or "coordinator"
    for schema, name, valid in conn.execute(_INDEXES, {"schemas": list(schemas)}):
        coordinator.setdefault(schema, set()).add(name)
        if not valid:
            found.append(InvalidIndex(schema, name, here))
    rows = conn.execute(_ON_WORKERS, {"command": _WORKER_INVALID, "schemas": list(schemas)})
    for host, port, success, result in rows:
        node = f"{host}:{port}"
        if not success:
            raise DatabaseError(f"cannot look for INVALID indexes on {node}: {result}")
        for schema, name in json.loads(result):
            known = coordinator.get(schema, set())
            if name not in known and _SHARD_SUFFIX.sub("", name) in known:
                name = _SHARD_SUFFIX.sub("", name)
            found.append(InvalidIndex(schema, name, node))
    return sorted(set(found), key=lambda i: (i.schema, i.name, i.node))


# --- autocommit blocks in a parallel run ----------------------------------------------------


class Gate:
    """Lets a parallel run's ``autocommit_block`` start only once no other transaction of the
    run is open, and no new one opens until it ends. On Citus ``CREATE INDEX CONCURRENTLY``
    waits, on every worker, for the older transactions whose worker-side snapshots are
    still open, the run's other sessions' among them; with the gate it never waits for the
    run's own sessions, and two blocks of a run never build indexes at the same time.

    Shared by the run's worker processes (built from their multiprocessing context, handed
    to each at start): every schema transaction holds it :meth:`shared`, a block takes it
    :meth:`exclusive`. Each worker process runs one schema at a time."""

    def __init__(self, context: Any) -> None:
        self._cond = context.Condition()
        self._open = context.Value("i", 0, lock=False)  # transactions open in the run
        self._owner = context.Value("q", 0, lock=False)  # pid of the running block, or 0
        self._wanted = context.Value("i", 0, lock=False)  # blocks waiting to start
        self._mine = 0  # this process's own holds (per process: not shared)

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        """Around a schema transaction (and the transactions that follow its blocks)."""
        me = os.getpid()
        with self._cond:
            self._cond.wait_for(
                lambda: self._owner.value == me or not (self._owner.value or self._wanted.value)
            )
            self._open.value += 1
            self._mine += 1
        try:
            yield
        finally:
            with self._cond:
                self._open.value -= 1
                self._mine -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Around a block: its own transaction is committed, so it does not count while it
        waits for the others' to end; it counts again for the transaction after the block."""
        me = os.getpid()
        with self._cond:
            self._open.value -= self._mine
            self._wanted.value += 1
            self._cond.notify_all()
            self._cond.wait_for(lambda: not self._owner.value and not self._open.value)
            self._wanted.value -= 1
            self._owner.value = me
        try:
            yield
        finally:
            with self._cond:
                self._owner.value = 0
                self._open.value += self._mine
                self._cond.notify_all()


_gate: Gate | None = None  # the run's, in a worker process of a parallel run on Citus


def use_gate(gate: Gate | None) -> None:
    """In a worker process: the gate its schema transactions and blocks use."""
    global _gate
    _gate = gate


def shared() -> contextlib.AbstractContextManager[None]:
    return _gate.shared() if _gate is not None else contextlib.nullcontext()


def exclusive() -> contextlib.AbstractContextManager[None]:
    return _gate.exclusive() if _gate is not None else contextlib.nullcontext()
