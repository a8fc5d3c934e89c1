"""What the operations return: per-schema states, results and check findings."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
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
    pending: int | None  # None: not known (see error)
    drift: list[str] | None = None
    # Applied revisions whose file changed since (filled by status; not in as_dict, whose
    # keys are documented: status --json lists them under a top-level "edited").
    edited: list[EditedRevision] = field(default_factory=list)
    # Why this schema could not be read (its version table) or compared (its structure).
    error: str | None = None
    # The tenant's structure group (tenants of one group have the same drift).
    drift_group: str | None = None
    # Revisions partially applied (statements before an autocommit_block committed, version
    # row not): filled by status, listed under status --json's top-level "partial".
    partial: list[PartialRevision] = field(default_factory=list)
    # Citus: INVALID indexes of the schema, on the coordinator or a worker ('"s"."i" on
    # host:port'); status --json lists them under a top-level "invalid_indexes".
    invalid_indexes: list[str] = field(default_factory=list)

    @property
    def at_head(self) -> bool:
        return self.pending == 0

    @property
    def needs_attention(self) -> bool:
        return bool(self.pending or self.error or self.drift or self.edited or self.invalid_indexes)

    def as_dict(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "schema": self.schema,
            "kind": "tenant" if self.tenant else "schema",
            "current": list(self.current),
            "heads": list(self.heads),
            "pending": self.pending,
            "drift": self.drift,
            "error": self.error,
            "drift_group": self.drift_group,
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
    pending: int | None  # None: not known (see error)
    differences: list[str] = field(default_factory=list)
    error: str | None = None
    current: tuple[str, ...] = ()
    heads: tuple[str, ...] = ()
    drift_group: str | None = None
    # False when the stream has no metadata: no models were compared with the schema.
    compared: bool = True

    @property
    def clean(self) -> bool:
        return self.pending == 0 and not self.differences and self.error is None

    def as_dict(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "schema": self.schema,
            "pending": self.pending,
            "differences": self.differences,
            "kind": "tenant" if self.tenant else "schema",
            "current": list(self.current),
            "heads": list(self.heads),
            "error": self.error,
            "drift_group": self.drift_group,
            "compared": self.compared,
        }


class UpgradeReport(list[SchemaResult]):
    """The results of an upgrade or downgrade (one per schema attempted), plus run-wide
    figures: per stream, the schemas already at the target (never attempted) and those
    planned but never started (after too many failures, or an interrupt)."""

    def __init__(self, run_id: str = "") -> None:
        super().__init__()
        self.run_id = run_id
        self.streams: dict[str, bool] = {}  # every stream of the run: is it a tenant stream
        self.at_target: dict[str, int] = {}
        self.not_started: dict[str, int] = {}
        self.interrupted = False
        self.seconds = 0.0

    @property
    def failed(self) -> list[SchemaResult]:
        return [r for r in self if r.error]

    def counts(self, stream: str | None = None) -> dict[str, int]:
        """applied, unchanged (at the target already included), failed, not_started."""
        mine = [r for r in self if stream is None or r.stream == stream]
        found = Counter(r.status for r in mine)

        def of(figures: dict[str, int]) -> int:
            return sum(n for s, n in figures.items() if stream is None or s == stream)

        return {
            "applied": found["applied"],
            "unchanged": found["unchanged"] + of(self.at_target),
            "failed": found["failed"],
            "not_started": of(self.not_started),
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "seconds": round(self.seconds, 3),
            **self.counts(),
            "interrupted": self.interrupted,
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
class DriftGroup:
    """Schemas of one stream with the same structure, compared once with the models."""

    stream: str
    id: str  # a hash of the structure ("" for a named stream's one schema)
    schemas: list[str]
    differences: list[str] | None  # None: not compared (see error)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "id": self.id,
            "schemas": self.schemas,
            "differences": self.differences,
            "error": self.error,
        }


@dataclass
class Orphan:
    """A schema holding a tenant stream's version table that the stream's source does not
    list: ``upgrade``, ``status`` and ``tenants list`` never see it."""

    stream: str
    schema: str
    current: tuple[str, ...]
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "schema": self.schema,
            "current": list(self.current),
            "error": self.error,
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


@dataclass
class StreamSummary:
    """The counts ``status`` and ``check`` open with, for one stream."""

    stream: str
    tenant: bool
    schemas: int
    heads: tuple[str, ...]
    at: list[tuple[tuple[str, ...], int]]  # (current revisions, schemas), most schemas first
    pending: int  # schemas with revisions to apply
    drift_groups: int | None  # groups that differ from the models (None: not compared)
    drifted: int | None  # schemas in those groups
    errors: int  # schemas that could not be read or compared
    failed: int  # schemas whose last attempt failed and are not at its target since
    orphans: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "kind": "tenant" if self.tenant else "schema",
            "schemas": self.schemas,
            "heads": list(self.heads),
            "at": [{"current": list(cur), "schemas": n} for cur, n in self.at],
            "pending": self.pending,
            "drift_groups": self.drift_groups,
            "drifted": self.drifted,
            "errors": self.errors,
            "failed": self.failed,
            "orphans": self.orphans,
        }


def summarise(
    stream: str,
    tenant: bool,
    heads: tuple[str, ...],
    states: Iterable[SchemaState],
    *,
    groups: Iterable[DriftGroup] = (),
    drift: bool = False,
    failed: int = 0,
    orphans: int = 0,
) -> StreamSummary:
    """One stream's counts from its schemas' states and drift groups."""
    mine = list(states)
    differing = [g for g in groups if g.differences]
    # A version table that could not be read has no revision to count (an unknown one has).
    at = Counter(s.current for s in mine if s.pending is not None or s.current)
    return StreamSummary(
        stream=stream,
        tenant=tenant,
        schemas=len(mine),
        heads=heads,
        at=sorted(at.items(), key=lambda kv: (-kv[1], kv[0])),
        pending=sum(1 for s in mine if s.pending),
        drift_groups=len(differing) if drift else None,
        drifted=sum(len(g.schemas) for g in differing) if drift else None,
        errors=sum(1 for s in mine if s.error),
        failed=failed,
        orphans=orphans,
    )


class StatusReport(list[SchemaState]):
    """What ``status`` returns: every schema's state (a list, as before), plus the drift
    groups, orphans, unresolved last failures and the last run, and per-stream counts."""

    def __init__(self, states: Iterable[SchemaState] = ()) -> None:
        super().__init__(states)
        self.streams: list[tuple[str, bool, tuple[str, ...]]] = []  # (name, tenant, heads)
        self.drift = False  # whether drift was compared
        self.without_models: set[str] = set()  # streams with no metadata: nothing compared
        self.groups: list[DriftGroup] = []
        self.orphans: list[Orphan] = []
        self.failures: list[dict[str, Any]] = []
        self.last_run: dict[str, Any] | None = None

    @property
    def edited(self) -> list[EditedRevision]:
        return [e for s in self for e in s.edited]

    @property
    def partial(self) -> list[PartialRevision]:
        return [p for s in self for p in s.partial]

    def summaries(self) -> list[StreamSummary]:
        out = []
        for name, tenant, heads in self.streams:
            out.append(
                summarise(
                    name,
                    tenant,
                    heads,
                    (s for s in self if s.stream == name),
                    groups=(g for g in self.groups if g.stream == name),
                    drift=self.drift and name not in self.without_models,
                    failed=sum(1 for f in self.failures if f["stream"] == name),
                    orphans=sum(1 for o in self.orphans if o.stream == name),
                )
            )
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "schemas": [s.as_dict() for s in self],
            "last_failures": self.failures,
            "edited": [e.as_dict() for e in self.edited],
            "partial": [p.as_dict() for p in self.partial],
            "summary": [s.as_dict() for s in self.summaries()],
            "drift_groups": [g.as_dict() for g in self.groups if g.differences or g.error],
            "orphans": [o.as_dict() for o in self.orphans],
            "last_run": self.last_run,
            **({"invalid_indexes": invalid} if (invalid := self.invalid_indexes) else {}),
        }

    @property
    def invalid_indexes(self) -> list[dict[str, str]]:
        """Citus: INVALID indexes on the coordinator or a worker, per schema."""
        return [
            {"stream": s.stream, "schema": s.schema, "index": i}
            for s in self
            for i in s.invalid_indexes
        ]


class CheckReport(list[CheckResult]):
    """What ``check`` returns: one result per schema (a list, as before) and the status it
    was made from (``.status``: counts, drift groups, orphans)."""

    def __init__(self, status: StatusReport) -> None:
        super().__init__(
            CheckResult(
                st.stream,
                st.schema,
                st.tenant,
                st.pending,
                [*(st.drift or []), *(f"INVALID index {i}" for i in st.invalid_indexes)],
                st.error,
                st.current,
                st.heads,
                st.drift_group,
                st.drift is not None,
            )
            for st in status
        )
        self.status = status

    @property
    def dirty(self) -> list[CheckResult]:
        return [r for r in self if not r.clean]
