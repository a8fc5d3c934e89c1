"""Worker processes for runs in which Alembic itself migrates tenants.

Alembic keeps the running migration in module globals (``alembic.op``, ``alembic.context``),
so two threads cannot run it at once in one process. Each worker process has its own: the
parent hands out tenant names, a bounded number at a time (so that a stop, or too many
failures, starts no more), and collects the outcomes in order of completion.

Processes are forked where the platform allows it (they start at once, with the parent's
imported models and ``sys.path``) and spawned elsewhere.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, TypeVar

R = TypeVar("R")


def ignore_interrupts() -> None:
    """In a worker: Ctrl-C reaches the whole process group; the parent decides."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def mp_context() -> Any:
    """The multiprocessing context of the worker processes (for what they share)."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def run(
    items: Sequence[str],
    *,
    jobs: int,
    initializer: Callable[..., None],
    initargs: tuple[Any, ...],
    task: Callable[[str, bool], R | None],
    on_outcome: Callable[[R], None],
    stopped: Callable[[], bool],
) -> list[R]:
    """``task(item, wait)`` for every item on ``jobs`` processes. An item whose task returns
    None (held by a concurrent run) is tried again at the end with ``wait=True``."""
    outcomes: list[R] = []
    deferred: list[str] = []
    window = jobs * 2
    with ProcessPoolExecutor(
        jobs, mp_context=mp_context(), initializer=initializer, initargs=initargs
    ) as pool:
        for wait_lock, todo in ((False, list(items)), (True, deferred)):
            pending: dict[Future[R | None], str] = {}
            queue = list(reversed(todo)) if not wait_lock else list(reversed(deferred))
            while (queue and not stopped()) or pending:
                while queue and len(pending) < window and not stopped():
                    item = queue.pop()
                    pending[pool.submit(task, item, wait_lock)] = item
                if not pending:
                    break
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    item = pending.pop(future)
                    outcome = future.result()  # a usage error raised in the worker: stop
                    if outcome is None:
                        deferred.append(item)
                        continue
                    outcomes.append(outcome)
                    on_outcome(outcome)
            if stopped():
                break
    return outcomes
