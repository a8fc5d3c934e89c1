"""The text of ``status``, ``check``, ``current`` and run summaries: counts first, then only
what needs attention (everything with ``all_schemas``). Pure: reports in, lines out."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .results import (
    CheckReport,
    CheckResult,
    DriftGroup,
    SchemaResult,
    SchemaState,
    StatusReport,
    StreamSummary,
    UpgradeReport,
)

NAMES_SHOWN = 10  # tenants named on one line before "and N more"
FAILURES_SHOWN = 20
PER_LINE_LIMIT = 20  # at most this many results of a run: one line each


def where(stream: str, schema: str, tenant: bool) -> str:
    return f"{stream}/{schema}" if tenant else stream


def revs(revisions: Sequence[str]) -> str:
    return ", ".join(revisions) if revisions else "<base>"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _names(names: Sequence[str], limit: int = NAMES_SHOWN) -> str:
    shown = ", ".join(names[:limit])
    more = len(names) - limit
    return f"{shown} and {more} more" if more > 0 else shown


# --- status -----------------------------------------------------------------------------


def summary_line(s: StreamSummary) -> str:
    """``tenant: 1000 tenants: 990 at r3 (head), 10 at r2; 10 pending, 2 drift groups
    (5 tenants), 1 error, 1 failed, 2 orphans``."""
    at = ", ".join(f"{n} at {revs(cur)}{' (head)' if cur == s.heads else ''}" for cur, n in s.at)
    unreadable = s.schemas - sum(n for _cur, n in s.at)
    if unreadable:
        at = ", ".join(p for p in (at, f"{unreadable} unreadable") if p)
    if s.drift_groups is None:
        drift = "drift not compared"
    else:
        drift = _plural(s.drift_groups, "drift group")
        if s.drifted:
            drift += f" ({_plural(s.drifted, 'tenant')})"
    counts = [
        f"{s.pending} pending",
        drift,
        _plural(s.errors, "error"),
        f"{s.failed} failed",
        _plural(s.orphans, "orphan"),
    ]
    return f"{s.stream}: {_plural(s.schemas, 'tenant')}: {at or 'none'}; {', '.join(counts)}"


def state_line(s: SchemaState) -> str:
    """One schema: ``tenant/t_1: at r2, head r3, 1 pending, drift: add column item.x``."""
    parts = [] if s.pending is None else [f"at {revs(s.current)}"]
    parts.append(f"head {revs(s.heads)}")
    if s.pending is not None:
        parts.append(f"{s.pending} pending")
    if s.drift is not None:
        parts.append("drift: " + "; ".join(s.drift) if s.drift else "no drift")
    if s.error:
        parts.append(f"ERROR: {s.error}")
    return f"{where(s.stream, s.schema, s.tenant)}: {', '.join(parts)}"


def _behind(states: Sequence[SchemaState]) -> list[str]:
    """Tenants with revisions to apply, one line per revision they are at."""
    by_rev: dict[tuple[tuple[str, ...], int], list[str]] = {}
    for s in states:
        if s.pending and not s.error:
            by_rev.setdefault((s.current, s.pending), []).append(s.schema)
    return [
        f"{states[0].stream}: {_plural(len(names), 'tenant')} at {revs(cur)} "
        f"({pending} pending): {_names(names)}"
        for (cur, pending), names in by_rev.items()
    ]


def group_lines(g: DriftGroup, all_schemas: bool = False) -> list[str]:
    names = _names(g.schemas, len(g.schemas) if all_schemas else NAMES_SHOWN)
    head = f"{g.stream}: drift group {g.id}, {_plural(len(g.schemas), 'tenant')} ({names})"
    if g.error:
        return [f"{head}: ERROR: {g.error}"]
    return [f"{head}:", *(f"  {d}" for d in g.differences or [])]


def _attention(report: StatusReport, tenant_stream: str, all_schemas: bool) -> list[str]:
    """A tenant stream's schemas needing attention: behind, unreadable, drifted (by group)."""
    mine = [s for s in report if s.stream == tenant_stream]
    if all_schemas:
        return [state_line(s) for s in mine]
    lines = _behind(mine)
    lines += [state_line(s) for s in mine if s.error]
    groups = [g for g in report.groups if g.stream == tenant_stream and g.differences]
    for g in groups:
        lines += group_lines(g)
    return lines


def _orphan_lines(report: StatusReport) -> list[str]:
    lines = []
    for o in report.orphans:
        lines.append(
            f"{o.stream}/{o.schema}: ORPHAN at {revs(o.current)}: holds the stream's version "
            "table but its source does not list it (upgrade, status and tenants list skip it)"
        )
    return lines


def _failure_lines(failures: Sequence[dict[str, Any]]) -> list[str]:
    if not failures:
        return []
    lines = ["last failures (not succeeded since):"]
    for f in failures[:FAILURES_SHOWN]:
        lines.append(
            f"  {f['stream']}/{f['schema']} at {f['at']} (run {f['run_id']}): {f['error']}"
        )
    if len(failures) > FAILURES_SHOWN:
        lines.append(f"  and {len(failures) - FAILURES_SHOWN} more (status --json lists them all)")
    return lines


def run_line(run: dict[str, Any] | None) -> list[str]:
    """The last run, when it did not end normally."""
    if run is None or run["outcome"] in ("done", "failed"):
        return []
    what = (
        f"last run {run['run_id']} ({run['verb']} {run['revision']}, started {run['started_at']})"
    )
    if run["outcome"] == "running":
        return [f"{what} has not finished: still running, or killed"]
    counts = ", ".join(
        f"{run[k] or 0} {k.replace('_', ' ')}"
        for k in ("applied", "failed", "unchanged", "not_started")
    )
    return [f"{what} was interrupted at {run['finished_at']}: {counts}"]


def _opening(
    report: StatusReport, named_lines: Callable[[str], list[str]]
) -> tuple[list[str], list[str]]:
    """Each tenant stream's counts, or a named stream's own lines; and the tenant streams."""
    lines: list[str] = []
    tenant_streams = []
    for s in report.summaries():
        if s.tenant:
            lines.append(summary_line(s))
            tenant_streams.append(s.stream)
        else:
            lines += named_lines(s.stream)
    return lines, tenant_streams


def status_lines(report: StatusReport, *, all_schemas: bool = False) -> list[str]:
    """Counts per stream (a named stream's one line is its count), then what needs
    attention, orphans, edited revisions, last failures and an interrupted last run."""
    lines, tenant_streams = _opening(
        report, lambda stream: [state_line(st) for st in report if st.stream == stream]
    )
    for stream in tenant_streams:
        lines += _attention(report, stream, all_schemas)
    lines += _orphan_lines(report)
    lines += [f"  EDITED: {e.message}" for e in report.edited]
    lines += [f"  PARTIALLY APPLIED: {p.message}" for p in report.partial]
    lines += [f"  INVALID index {i['index']}" for i in report.invalid_indexes]
    lines += _failure_lines(report.failures)
    lines += run_line(report.last_run)
    return lines


# --- check ------------------------------------------------------------------------------


def check_result_lines(r: CheckResult) -> list[str]:
    at = where(r.stream, r.schema, r.tenant)
    lines = []
    if r.error:
        lines.append(f"{at}: ERROR: {r.error}")
    elif not r.compared:
        lines.append(f"{at}: nothing compared: stream {r.stream!r} has no 'metadata'")
    elif r.clean:
        lines.append(f"{at}: models match the database")
    if r.pending:
        lines.append(f"{at}: {r.pending} revision(s) not applied (run upgrade)")
    lines += [f"{at}: {d}" for d in r.differences]
    return lines


def check_lines(report: CheckReport, *, all_schemas: bool = False) -> list[str]:
    """Named streams: their lines. Tenant streams: counts, then (unless ``all_schemas``)
    tenants behind or unreadable, and each drift group once with its tenants."""
    status = report.status
    lines, tenant_streams = _opening(
        status,
        lambda stream: [x for r in report if r.stream == stream for x in check_result_lines(r)],
    )
    for stream in tenant_streams:
        mine = [r for r in report if r.stream == stream]
        if all_schemas:
            lines += [x for r in mine for x in check_result_lines(r)]
            continue
        if stream in status.without_models:
            lines.append(f"{stream}: nothing compared: stream {stream!r} has no 'metadata'")
        lines += _behind([st for st in status if st.stream == stream])
        lines += [f"{where(r.stream, r.schema, True)}: ERROR: {r.error}" for r in mine if r.error]
        lines += [
            f"{where(i['stream'], i['schema'], True)}: INVALID index {i['index']}"
            for i in status.invalid_indexes
            if i["stream"] == stream
        ]
        for g in status.groups:
            if g.stream == stream and g.differences:
                lines += group_lines(g)
    lines += _orphan_lines(status)
    return lines


def check_failure(report: CheckReport) -> str | None:
    """The one-line error of a check that found something, or None."""
    dirty = report.dirty
    if not dirty:
        return None
    errors = [r for r in dirty if r.error]
    note = ""
    if errors:
        first = errors[0]
        note = (
            f" ({len(errors)} could not be checked; "
            f"{where(first.stream, first.schema, first.tenant)}: {first.error})"
        )
    return f"{len(dirty)} schema(s) differ from their models{note}"


def read_failure(states: Sequence[SchemaState]) -> str | None:
    """The one-line error of a read (status, current) in which some schemas could not be
    read or compared, or None; everything else was reported."""
    errors = [s for s in states if s.error]
    if not errors:
        return None
    first = errors[0]
    return (
        f"{len(errors)} schema(s) could not be read or compared "
        f"(reported on their lines; {where(first.stream, first.schema, first.tenant)}: "
        f"{first.error})"
    )


# --- current ------------------------------------------------------------------------------


def current_line(s: SchemaState) -> str:
    at = where(s.stream, s.schema, s.tenant)
    if s.error and s.pending is None:
        return f"{at}: ERROR: {s.error}"
    mark = " (head)" if s.at_head else f" ({s.pending} pending)"
    return f"{at}: {revs(s.current)}{mark}"


# --- upgrade / downgrade -----------------------------------------------------------------


def result_lines(r: SchemaResult, verbose: bool = False) -> list[str]:
    """A schema's result line; with ``verbose``, a failure's SQL statement under it."""
    lines = [result_line(r)]
    if verbose and r.error and r.statement:
        lines.append(textwrap.indent(f"failing statement:\n{r.statement}", "    "))
    return lines


def result_line(r: SchemaResult) -> str:
    at = where(r.stream, r.schema, r.tenant)
    if r.error:
        return f"{at}: FAILED: {r.error}"
    if r.changed:
        return f"{at}: {revs(r.before)} -> {revs(r.after)} ({r.seconds:.2f}s)"
    return f"{at}: unchanged at {revs(r.after)}"


def counts_line(stream: str, c: dict[str, int]) -> str:
    """``tenant: 61 applied, 1 failed, 7 unchanged, 288 not started``."""
    return (
        f"{stream}: {c['applied']} applied, {c['failed']} failed, {c['unchanged']} unchanged, "
        f"{c['not_started']} not started"
    )


def _streams_of(report: UpgradeReport) -> Iterable[tuple[str, bool]]:
    seen = dict(report.streams)
    for r in report:
        seen.setdefault(r.stream, r.tenant)
    return seen.items()


def run_lines(report: UpgradeReport, *, verbose: bool = False) -> list[str]:
    """Per stream: each result (up to PER_LINE_LIMIT, else only the failed ones), and for
    tenant streams the counts; a named stream that never started says so."""
    lines: list[str] = []
    for stream, tenant in _streams_of(report):
        results = [r for r in report if r.stream == stream]
        c = report.counts(stream)
        if not tenant:
            lines += [x for r in results for x in result_lines(r, verbose)]
            if not results and c["not_started"]:
                lines.append(f"{stream}: not started")
            continue
        shown = results if len(results) <= PER_LINE_LIMIT else [r for r in results if r.error]
        lines += [x for r in shown for x in result_lines(r, verbose)]
        lines.append(counts_line(stream, c))
    return lines
