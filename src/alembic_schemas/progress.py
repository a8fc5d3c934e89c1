"""Progress of long runs: a rich progress bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import threading
import time
from typing import IO, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from .results import SchemaResult
from .summary import PER_LINE_LIMIT

READ_DELAY = 0.5  # seconds a read runs before its progress shows


def eta(done: int, total: int, elapsed: float) -> str:
    """Time left at the rate so far, like ``1m05s``; ``-`` before anything is done."""
    if done <= 0 or elapsed <= 0:
        return "-"
    left = round((total - done) * elapsed / done)
    minutes, seconds = divmod(left, 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


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
        self._shown = 0  # schemas done when the last plain line was printed

    def plan(self, stream: str, total: int, todo: int) -> None:
        self.close()
        self._stream, self._todo, self._done, self._failed = stream, todo, 0, 0
        self._shown = 0
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
                TextColumn("ETA"),
                TimeRemainingColumn(),
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
                self._line()

    def _line(self) -> None:
        elapsed = max(time.monotonic() - self._started, 1e-6)
        self._last_line, self._shown = time.monotonic(), self._done
        self._print(
            f"{self._stream}: {self._done}/{self._todo} done, {self._failed} failed, "
            f"{self._todo - self._done} remaining, {self._done / elapsed:.0f}/s, "
            f"ETA {eta(self._done, self._todo, elapsed)}"
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        elif self._shown != self._done and not self.quiet and self._todo > PER_LINE_LIMIT:
            self._line()  # where a stopped run ended, not only where the last line was

    def note(self, text: str) -> None:
        """A line on a fresh line (after a ``^C`` the terminal echoed), above any bar.
        Safe in a signal handler: takes no lock."""
        bar = self._bar
        if bar is not None:
            bar.console.print(f"\nalembic-schemas: {text}")
        else:
            lead = "\n" if self.tty else ""
            print(f"{lead}alembic-schemas: {text}", file=self.out, flush=True)

    def _print(self, text: str) -> None:
        print(f"alembic-schemas: {text}", file=self.out, flush=True)


class ReadProgress:
    """``on_progress(phase, done, total)`` of long reads (status, check): a transient bar on
    a terminal once a read takes longer than READ_DELAY; nothing otherwise."""

    def __init__(
        self, stream: IO[str] | None = None, quiet: bool = False, delay: float = READ_DELAY
    ) -> None:
        self.out = stream or sys.stderr
        self.enabled = not quiet and self.out.isatty()
        self.delay = delay
        self._started = time.monotonic()
        self._bar: Progress | None = None
        self._task: Any = None

    def __call__(self, phase: str, done: int, total: int) -> None:
        if not self.enabled or time.monotonic() - self._started < self.delay:
            return
        if self._bar is None:
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(file=self.out),
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(phase, total=total)
        self._bar.update(self._task, description=phase, completed=done, total=max(total, 1))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
