"""The text of status, check and run summaries (no database): counts first, then only what
needs attention; and the progress ETA."""

from __future__ import annotations

import io

from alembic_schemas import summary
from alembic_schemas.progress import ReadProgress, eta
from alembic_schemas.results import (
    CheckReport,
    DriftGroup,
    Orphan,
    SchemaResult,
    SchemaState,
    StatusReport,
    UpgradeReport,
)

HEAD = ("r3",)


def _state(schema: str, current: tuple[str, ...] = HEAD, **kw: object) -> SchemaState:
    pending = kw.pop("pending", 0 if current == HEAD else 1)
    st = SchemaState("tenant", schema, True, current, HEAD, pending)  # type: ignore[arg-type]
    for key, value in kw.items():
        setattr(st, key, value)
    return st


def _fleet() -> StatusReport:
    report = StatusReport(
        [
            _state("t_1", drift=[], drift_group="aaa"),
            _state("t_2", drift=["remove column item.extra"], drift_group="bbb"),
            _state("t_3", drift=["remove column item.extra"], drift_group="bbb"),
            _state("t_4", ("r2",), drift=[], drift_group="aaa"),
            _state("t_5", ("deadbeef",), pending=None, error="unknown revision", drift=[]),
            _state("t_6", (), pending=None, error="cannot read", drift=[]),
        ]
    )
    report.streams = [("tenant", True, HEAD)]
    report.drift = True
    report.groups = [
        DriftGroup("tenant", "aaa", ["t_1", "t_4", "t_5", "t_6"], []),
        DriftGroup("tenant", "bbb", ["t_2", "t_3"], ["remove column item.extra"]),
    ]
    report.orphans = [Orphan("tenant", "acme", HEAD)]
    report.failures = [
        {"run_id": "run1", "stream": "tenant", "schema": "t_4", "error": "boom", "at": "now"}
    ]
    return report


def test_status_opens_with_the_counts_then_lists_only_what_needs_attention() -> None:
    lines = summary.status_lines(_fleet())
    assert lines[0] == (
        "tenant: 6 tenants: 3 at r3 (head), 1 at deadbeef, 1 at r2, 1 unreadable; "
        "1 pending, 1 drift group (2 tenants), 2 errors, 1 failed, 1 orphan"
    )
    assert lines[1:] == [
        "tenant: 1 tenant at r2 (1 pending): t_4",
        "tenant/t_5: head r3, no drift, ERROR: unknown revision",
        "tenant/t_6: head r3, no drift, ERROR: cannot read",
        "tenant: drift group bbb, 2 tenants (t_2, t_3):",
        "  remove column item.extra",
        "tenant/acme: ORPHAN at r3: holds the stream's version table but its source does not "
        "list it (upgrade, status and tenants list skip it)",
        "last failures (not succeeded since):",
        "  tenant/t_4 at now (run run1): boom",
    ]


def test_status_all_lists_every_schema_without_a_trailing_comma() -> None:
    report = _fleet()
    for st in report:
        st.drift = None
    report.drift = False
    lines = summary.status_lines(report, all_schemas=True)
    assert "drift not compared" in lines[0]
    assert lines[1:7] == [
        "tenant/t_1: at r3, head r3, 0 pending",
        "tenant/t_2: at r3, head r3, 0 pending",
        "tenant/t_3: at r3, head r3, 0 pending",
        "tenant/t_4: at r2, head r3, 1 pending",
        "tenant/t_5: head r3, ERROR: unknown revision",
        "tenant/t_6: head r3, ERROR: cannot read",
    ]


def test_a_long_list_of_tenants_is_cut_after_ten_names() -> None:
    group = DriftGroup("tenant", "ccc", [f"t_{i}" for i in range(25)], ["add index item.ix"])
    head = summary.group_lines(group)[0]
    assert head.endswith("(t_0, t_1, t_2, t_3, t_4, t_5, t_6, t_7, t_8, t_9 and 15 more):")
    assert "t_24" in summary.group_lines(group, all_schemas=True)[0]


def test_an_interrupted_or_unfinished_last_run_is_shown() -> None:
    run = {
        "run_id": "r",
        "verb": "upgrade",
        "revision": "head",
        "outcome": "interrupted",
        "started_at": "t0",
        "finished_at": "t1",
        "applied": 3,
        "failed": 0,
        "unchanged": 1,
        "not_started": 5,
    }
    assert summary.run_line(run) == [
        "last run r (upgrade head, started t0) was interrupted at t1: "
        "3 applied, 0 failed, 1 unchanged, 5 not started"
    ]
    assert "has not finished" in summary.run_line({**run, "outcome": "running"})[0]
    assert summary.run_line({**run, "outcome": "done"}) == []


def test_check_lists_groups_once_and_fails_naming_the_first_error() -> None:
    report = CheckReport(_fleet())
    lines = summary.check_lines(report)
    assert lines[0].startswith("tenant: 6 tenants:")
    assert "tenant: drift group bbb, 2 tenants (t_2, t_3):" in lines
    assert "tenant/t_5: ERROR: unknown revision" in lines
    assert not [line for line in lines if "models match" in line]
    assert summary.check_failure(report) == (
        "5 schema(s) differ from their models (2 could not be checked; "
        "tenant/t_5: unknown revision)"
    )
    every = summary.check_lines(report, all_schemas=True)
    assert "tenant/t_1: models match the database" in every


def test_a_run_summary_counts_applied_failed_unchanged_and_not_started() -> None:
    report = UpgradeReport("run1")
    report.streams = {"core": False, "tenant": True, "late": False}
    report.append(SchemaResult("core", "core", False, ("a",), ("b",), 0.5))
    for i in range(30):
        error = "division by zero" if i == 7 else None
        after = ("r1",) if error else ("r2",)
        report.append(SchemaResult("tenant", f"t_{i:02d}", True, ("r1",), after, 0.1, error))
    report.at_target = {"tenant": 4}
    report.not_started = {"tenant": 60, "late": 1}
    lines = summary.run_lines(report)
    assert lines == [
        "core: a -> b (0.50s)",
        "tenant/t_07: FAILED: division by zero",
        "tenant: 29 applied, 1 failed, 4 unchanged, 60 not started",
        "late: not started",
    ]
    assert report.as_dict()["not_started"] == 61
    assert report.counts("tenant") == {
        "applied": 29,
        "unchanged": 4,
        "failed": 1,
        "not_started": 60,
    }


def test_eta_is_the_time_left_at_the_rate_so_far() -> None:
    assert eta(0, 100, 5.0) == "-"
    assert eta(50, 100, 10.0) == "10s"
    assert eta(10, 100, 10.0) == "1m30s"
    assert eta(100, 100, 3.0) == "0s"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_long_reads_show_a_progress_bar_on_a_terminal_only() -> None:
    terminal = _Terminal()
    progress = ReadProgress(terminal, delay=0)
    progress("tenant: reading structure", 2000, 10000)
    progress("tenant: comparing with the models", 1, 3)
    progress.close()
    assert "comparing with the models" in terminal.getvalue()

    plain = io.StringIO()
    progress = ReadProgress(plain, delay=0)
    progress("tenant: reading structure", 2000, 10000)
    progress.close()
    assert plain.getvalue() == "", "no bar when stderr is not a terminal"
    quiet = _Terminal()
    ReadProgress(quiet, quiet=True, delay=0)("tenant: reading structure", 1, 2)
    assert quiet.getvalue() == "", "--json: nothing"
