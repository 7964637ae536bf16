"""What people read, as tables: the 2013 check lines (labelled by period when it is not the
1-minute one) and the --status view's decision line."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime, timezone

import pytest

from sshscale.model import Action, Decision, History, Pool, Report, Vm
from sshscale.logs import TIME_FORMAT
from sshscale.views import log_checks, report_json, status_table
from tests.test_decide import BASE


def check_lines(caplog: pytest.LogCaptureFixture, period_out: int, period_in: int) -> list[str]:
    report = Report(time="t", pool=Pool((Vm("1", "web1", "Running", in_lb=True),)),
                    load_out=0.83, load_in=1.85)
    with caplog.at_level(logging.INFO, logger="ssh_scale"):
        log_checks(report, replace(BASE, period_out=period_out, period_in=period_in))
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("now_la")]


@pytest.mark.parametrize("period_out, period_in, lines", [
    (1, 1, ["now_la           : 0.83", "now_la           : 1.85"]),  # the 2013 lines
    (1, 5, ["now_la (1-min)   : 0.83", "now_la (5-min)   : 1.85"]),
    (5, 1, ["now_la (5-min)   : 0.83", "now_la (1-min)   : 1.85"]),
    (15, 15, ["now_la (15-min)  : 0.83", "now_la (15-min)  : 1.85"]),
])
def test_log_checks_label_the_period_unless_both_are_1(caplog, period_out, period_in, lines):
    assert check_lines(caplog, period_out, period_in) == lines


@pytest.mark.parametrize("report, line", [
    # a run that failed before deciding (a bad api_key) said "decision now: none: "
    (Report(time="t"), "decision now: unknown: the run stopped before deciding (the error "
                       "line says why)"),
    (Report(time="t", pool_read=True, decision=Decision(Action.NONE, "load between thresholds")),
     "decision now: none: load between thresholds"),
    (Report(time="t", pool_read=True, decision=Decision(Action.SCALE_OUT, "load 4 > 3", count=2)),
     "decision now: scale out 2: load 4 > 3"),
])
def test_status_table_decision_line(report, line):
    assert status_table(report).splitlines()[-1] == line


def test_status_table_tells_the_noisy_mark():
    noisy = datetime(2026, 11, 28, 10, 42, tzinfo=timezone.utc)
    report = Report(time="t", pool_read=True, history=History(noisy=noisy),
                    decision=Decision(Action.NONE, "demand 6.00 now"))
    assert (f"noisy: a target scale-out found the load noisy at "
            f"{noisy.astimezone().strftime(TIME_FORMAT)} (the wider scale-in margins last a day "
            "from then)") in status_table(report).splitlines()
    assert report_json(report)["history"]["noisy"] == noisy.isoformat()
