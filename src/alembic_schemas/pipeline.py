"""Statements sent through libpq's pipeline mode directly (``psycopg.pq``), for a transaction
psycopg has already begun.

A fleet sends a hundred statements or more per tenant. Through psycopg's cursors each costs
about 17 µs of the tool's CPU (query conversion, prepared-statement bookkeeping, result
dispatch), through ``psycopg.pq`` about 1.5 µs: with many tenants per core that is a large
part of the tool's own work. Statements with parameters are merged client-side by psycopg's
``ClientCursor.mogrify``, as that cursor would run them; rows are read with the connection's
own loaders.
"""

from __future__ import annotations

import select
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import pq

Statement = tuple[str, Sequence[Any] | None]
"""SQL text and its parameters; None: sent as written (a ``%`` is text)."""

_RESULT_DONE = (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK, pq.ExecStatus.EMPTY_QUERY)


class Failed(Exception):
    """Statement ``index`` failed with ``error`` (those after it were not run)."""

    def __init__(self, index: int, error: psycopg.Error) -> None:
        super().__init__(str(error))
        self.index, self.error = index, error


def usable(raw: psycopg.Connection[Any]) -> bool:
    """Whether ``raw`` is in a transaction psycopg began (or the caller did), with nothing of
    psycopg's own pipeline open: then statements can go to libpq directly."""
    pg = raw.pgconn
    return (
        pg.transaction_status == pq.TransactionStatus.INTRANS
        and pg.pipeline_status == pq.PipelineStatus.OFF
    )


def queries(raw: psycopg.Connection[Any], statements: Sequence[Statement]) -> list[bytes]:
    """The text of each statement: as written when its parameters are None, else merged by
    psycopg (``()`` turns ``%%`` into ``%``)."""
    encoding = raw.info.encoding
    merge = None
    texts = []
    for sql, params in statements:
        if params is not None:
            merge = merge or psycopg.ClientCursor(raw)
            sql = merge.mogrify(sql, params)
        texts.append(sql.encode(encoding))
    return texts


def run(raw: psycopg.Connection[Any], queries: Sequence[bytes]) -> list[pq.abc.PGresult]:
    """Send ``queries`` in one pipeline and return their results, one each. Raises
    :class:`Failed` for the first that failed (the transaction is then aborted), psycopg's
    OperationalError when the connection broke; after any other exception (an interrupt) the
    connection is in an unknown state and must be discarded."""
    pg = raw.pgconn
    pg.enter_pipeline_mode()
    for sql in queries:
        pg.send_query_params(sql, None)
    pg.pipeline_sync()
    results = _collect(pg)
    pg.exit_pipeline_mode()
    for i, result in enumerate(results):
        if result.status not in _RESULT_DONE:
            raise Failed(i, _error(raw, result))
    return results


def _collect(pg: pq.abc.PGconn) -> list[pq.abc.PGresult]:
    """Every result up to the pipeline's sync, sending what libpq still holds meanwhile (a
    non-blocking connection may not take a long pipeline at once, and the server's answers
    must be read while it does, or both sides wait)."""
    results: list[pq.abc.PGresult] = []
    sending = True
    while True:
        if sending:
            sending = pg.flush() == 1
        pg.consume_input()
        while not pg.is_busy():
            result = pg.get_result()
            if result is None:  # the end of one statement's results
                continue
            if result.status == pq.ExecStatus.PIPELINE_SYNC:
                return results
            results.append(result)
        _wait(pg.socket, write=sending)


def _wait(fd: int, *, write: bool) -> None:
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN | (select.POLLOUT if write else 0))
        poller.poll()
    else:  # Windows
        select.select([fd], [fd] if write else [], [])


def _error(raw: psycopg.Connection[Any], result: pq.abc.PGresult) -> psycopg.Error:
    if result.status == pq.ExecStatus.FATAL_ERROR:
        # psycopg's own constructor of the error a cursor would raise: its class follows
        # the SQLSTATE, its diag the result's fields (DETAIL, HINT, ...)
        return psycopg.errors.error_from_result(result, encoding=raw.info.encoding)
    return psycopg.OperationalError(
        f"unexpected result in a pipeline: {pq.ExecStatus(result.status).name}"
    )


def rows(raw: psycopg.Connection[Any], result: pq.abc.PGresult) -> list[tuple[Any, ...]]:
    """``result``'s rows as a cursor would return them (the connection's text loaders)."""
    if result.status != pq.ExecStatus.TUPLES_OK:
        return []
    adapters = raw.adapters
    loaders = []
    for column in range(result.nfields):
        oid = result.ftype(column)
        cls = adapters.get_loader(oid, pq.Format.TEXT) or adapters.get_loader(0, pq.Format.TEXT)
        assert cls is not None  # psycopg always has the text loader for unknown types
        loaders.append(cls(oid, raw).load)
    return [
        tuple(
            None if (value := result.get_value(row, column)) is None else load(value)
            for column, load in enumerate(loaders)
        )
        for row in range(result.ntuples)
    ]


def row_count(result: pq.abc.PGresult) -> int:
    """The rows a statement changed (or returned), as ``cursor.rowcount``."""
    count = result.command_tuples
    return -1 if count is None else count
