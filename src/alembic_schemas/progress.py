"""Progress of long runs: a rich progress bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import threading
import time
from typing import IO, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .results import SchemaResult

PER_LINE_LIMIT = 20  # at most this many schemas: one line each instead of a bar


class RunProgress:
    """Receives ``on_plan`` / ``on_result`` callbacks from ``api.upgrade``."""

    def __init__(self, stream: IO[str] | None = None, quiet: bool = False) -> None:
        self.out = stream or sys.stderr
        self.quiet = quiet
        self.tty = self.out.isatty()
        self._lock = threading.Lock()
        self._bar: Progress | None = None
        self._task: Any = None
        self._stream = ""
        self._todo = 0
        self._done = 0
        self._failed = 0
        self._started = 0.0
        self._last_line = 0.0

    def plan(self, stream: str, total: int, todo: int) -> None:
        self.close()
        self._stream, self._todo, self._done, self._failed = stream, todo, 0, 0
        self._started = self._last_line = time.monotonic()
        if self.quiet or todo <= PER_LINE_LIMIT:
            return
        if total != todo:
            self._print(f"{stream}: {total - todo} of {total} already at target")
        if self.tty:
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("failed {task.fields[failed]}"),
                TextColumn("{task.remaining:.0f} remaining"),
                TextColumn("{task.fields[rate]}/s"),
                TimeElapsedColumn(),
                console=Console(file=self.out),
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(stream, total=todo, failed=0, rate="-")

    def result(self, r: SchemaResult) -> None:
        with self._lock:
            self._done += 1
            self._failed += 1 if r.error else 0
            elapsed = max(time.monotonic() - self._started, 1e-6)
            rate = f"{self._done / elapsed:.0f}"
            if self.quiet:
                return
            if self._todo <= PER_LINE_LIMIT:
                return  # the caller prints one line per schema at the end
            if self._bar is not None:
                self._bar.update(self._task, advance=1, failed=self._failed, rate=rate)
            elif time.monotonic() - self._last_line >= 1.0 or self._done == self._todo:
                self._last_line = time.monotonic()
                self._print(
                    f"{self._stream}: {self._done}/{self._todo} done, {self._failed} failed, "
                    f"{self._todo - self._done} remaining, {rate}/s"
                )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def _print(self, text: str) -> None:
        print(f"alembic-schemas: {text}", file=self.out, flush=True)
