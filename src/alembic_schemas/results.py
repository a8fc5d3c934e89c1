"""What the operations return: per-schema states, results and check findings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class SchemaState:
    """Where one schema of one stream stands."""

    stream: str
    schema: str
    tenant: bool
    current: tuple[str, ...]
    heads: tuple[str, ...]
    pending: int
    drift: list[str] | None = None
    # Applied revisions whose file changed since (filled by status; not in as_dict, whose
    # keys are documented: status --json lists them under a top-level "edited").
    edited: list[EditedRevision] = field(default_factory=list)
    # Revisions partially applied (statements before an autocommit_block committed, version
    # row not): filled by status, listed under status --json's top-level "partial".
    partial: list[PartialRevision] = field(default_factory=list)
    # Citus: INVALID indexes of the schema, on the coordinator or a worker ('"s"."i" on
    # host:port'); status --json lists them under a top-level "invalid_indexes".
    invalid_indexes: list[str] = field(default_factory=list)

    @property
    def at_head(self) -> bool:
        return self.pending == 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "schema": self.schema,
            "kind": "tenant" if self.tenant else "schema",
            "current": list(self.current),
            "heads": list(self.heads),
            "pending": self.pending,
            "drift": self.drift,
        }


@dataclass
class SchemaResult:
    """The outcome of applying one command to one schema."""

    stream: str
    schema: str
    tenant: bool
    before: tuple[str, ...]
    after: tuple[str, ...]
    seconds: float
    error: str | None = None
    statement: str | None = None  # the SQL statement that failed, when one did

    def __post_init__(self) -> None:
        if self.statement is None:  # a described database error carries its statement
            self.statement = getattr(self.error, "statement", None)

    @property
    def changed(self) -> bool:
        return self.before != self.after

    @property
    def status(self) -> str:
        return "failed" if self.error else ("applied" if self.changed else "unchanged")

    def as_dict(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "schema": self.schema,
            "kind": "tenant" if self.tenant else "schema",
            "from": list(self.before),
            "to": list(self.after),
            "seconds": round(self.seconds, 4),
            "status": self.status,
            "error": self.error,
            "statement": self.statement,
        }


@dataclass
class CheckResult:
    stream: str
    schema: str
    tenant: bool
    pending: int
    differences: list[str] = field(default_factory=list)
    # False when the stream has no metadata: no models were compared with the schema.
    compared: bool = True

    @property
    def clean(self) -> bool:
        return self.pending == 0 and not self.differences

    def as_dict(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "schema": self.schema,
            "pending": self.pending,
            "differences": self.differences,
            "compared": self.compared,
        }


class UpgradeReport(list[SchemaResult]):
    """The results of an upgrade (one per schema attempted), plus run-wide figures."""

    def __init__(self, run_id: str = "") -> None:
        super().__init__()
        self.run_id = run_id
        self.at_target: dict[str, int] = {}
        self.seconds = 0.0

    @property
    def failed(self) -> list[SchemaResult]:
        return [r for r in self if r.error]

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "seconds": round(self.seconds, 3),
            "applied": sum(1 for r in self if r.status == "applied"),
            "unchanged": sum(1 for r in self if r.status == "unchanged")
            + sum(self.at_target.values()),
            "failed": len(self.failed),
            "results": [r.as_dict() for r in self],
        }


@dataclass
class EditedRevision:
    """An applied revision whose file no longer has the checksum recorded when it was applied."""

    stream: str
    schema: str
    tenant: bool
    revision: str
    path: str | None  # None: the file no longer exists
    recorded: str
    current: str | None

    @property
    def message(self) -> str:
        if self.path is None or self.current is None:
            where = self.path or "file not found"
            return (
                f"{self.stream}/{self.schema}: revision {self.revision} ({where}) "
                "was removed after it was applied"
            )
        return (
            f"{self.stream}/{self.schema}: revision {self.revision} ({self.path}) "
            "was edited after it was applied"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "schema": self.schema,
            "revision": self.revision,
            "path": self.path,
            "recorded": self.recorded,
            "current": self.current,
            "message": self.message,
        }


@dataclass
class PartialRevision:
    """A revision whose statements before its autocommit_block were committed and whose
    version row was not (``commit_before_autocommit_block``)."""

    stream: str
    schema: str
    revision: str
    committed: str
    since: str  # ISO time the run that committed them started the block
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "schema": self.schema,
            "revision": self.revision,
            "committed": self.committed,
            "since": self.since,
            "message": self.message,
        }
