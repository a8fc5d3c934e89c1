"""How a parallel run's workers take turns on Citus, so that an ``autocommit_block`` never
waits for the run's own sessions.

On Citus, ``CREATE INDEX CONCURRENTLY`` waits (on every worker) for the transactions whose
worker-side snapshots are older, and the run's other sessions hold such transactions. A
worker that opened its tenant's transaction and then waited for its turn to run Alembic (one
Alembic run at a time per process) waited for the very block that waited for it: a hang.
So, with a :class:`~alembic_schemas.citus.Gate` (Citus, ``jobs`` >= 2):

* every schema transaction holds the gate shared; a block takes it exclusive
  (:mod:`alembic_schemas.runtime.autocommit`);
* a schema whose path needs Alembic takes Alembic's turn *before* its transaction begins;
* a schema that turns out to need Alembic only once inside its transaction (the plan was
  stale) never waits for the turn there: its transaction is rolled back and run again, turn
  first.

Without a gate (not Citus, or one worker) nothing changes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TypeVar

from ..citus import Gate
from .replay import ALEMBIC_LOCK

T = TypeVar("T")


class _TurnFirst(Exception):
    """Alembic's turn is needed but another worker has it: start again, turn first."""


class Turns:
    def __init__(self, gate: Gate | None = None) -> None:
        self.gate = gate

    def run(self, needs_alembic: Callable[[], bool], attempt: Callable[[], T]) -> T:
        """``attempt()`` (one transaction), holding Alembic's turn first when the plan says
        it needs one."""
        if self.gate is None:
            return attempt()
        if needs_alembic():
            with ALEMBIC_LOCK:
                return attempt()
        try:
            return attempt()
        except _TurnFirst:  # rolled back already: nothing of it stays
            with ALEMBIC_LOCK:
                return attempt()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Around each schema transaction."""
        with self.gate.shared() if self.gate is not None else contextlib.nullcontext():
            yield

    @contextlib.contextmanager
    def alembic(self) -> Iterator[None]:
        """Alembic's turn, inside a schema transaction (re-entrant)."""
        if self.gate is not None and not ALEMBIC_LOCK.acquire(blocking=False):
            raise _TurnFirst
        if self.gate is not None:
            try:
                yield
            finally:
                ALEMBIC_LOCK.release()
            return
        with ALEMBIC_LOCK:
            yield
