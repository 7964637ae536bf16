"""Scheduled capacity, pure: when a [schedule NAME] window is open (DST included), the bounds
overlapping windows give, the schedule named in decide()'s reason, and the replay's --start."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional
from zoneinfo import ZoneInfo

import pytest

from sshscale import replay as rp
from sshscale.cli import main
from sshscale.decide import decide
from sshscale.model import Action, Bounds, History, Schedule
from sshscale.schedule import check_cron, effective_bounds, last_fire, name_schedules, \
    open_windows
from tests.test_decide import BASE, load, pool

TOKYO, BERLIN = ZoneInfo("Asia/Tokyo"), ZoneInfo("Europe/Berlin")
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def window(name: str = "business-hours", cron: str = "0 8 * * 1-5", hours: float = 11,
           zone: ZoneInfo = TOKYO, min_size: Optional[int] = 4,
           max_size: Optional[int] = 12) -> Schedule:
    return Schedule(name, cron, hours * 3600, zone, min_size, max_size)


def tokyo(text: str) -> datetime:
    """A Tokyo wall time as the cloud's clock gives it (UTC)."""
    return datetime.fromisoformat(text).replace(tzinfo=TOKYO).astimezone(timezone.utc)


# --- windows ---------------------------------------------------------------------------------

@pytest.mark.parametrize("when, is_open", [
    ("2026-12-01 07:59:59", False),   # a Tuesday, before the fire time
    ("2026-12-01 08:00:00", True),    # the fire time itself counts
    ("2026-12-01 08:00:30", True),
    ("2026-12-01 18:59:59", True),
    ("2026-12-01 19:00:00", False),   # open for exactly 11 h
    ("2026-12-05 09:00:00", False),   # Saturday: no fire on 1-5
    ("2026-12-07 12:00:00", True),    # Monday
])
def test_window_open_from_the_last_fire_for_its_duration(when, is_open):
    assert bool(open_windows((window(),), tokyo(when))) is is_open


def test_window_opened_and_closes_in_its_own_zone():
    (opened,) = open_windows((window(),), tokyo("2026-12-01 10:00"))
    assert opened.opened == tokyo("2026-12-01 08:00")
    assert opened.closes == tokyo("2026-12-01 19:00")


@pytest.mark.parametrize("utc, is_open", [
    # Berlin moves from UTC+1 to UTC+2 on 2026-03-29: the 08:00 window opens at 06:00 UTC.
    ("2026-03-28 06:59", False), ("2026-03-28 07:00", True),
    ("2026-03-29 05:59", False), ("2026-03-29 06:00", True), ("2026-03-29 08:59", True),
    ("2026-03-29 09:00", False),
])
def test_window_follows_daylight_saving_time(utc, is_open):
    schedule = window(cron="0 8 * * *", hours=3, zone=BERLIN)
    now = datetime.fromisoformat(utc).replace(tzinfo=timezone.utc)
    assert bool(open_windows((schedule,), now)) is is_open


@pytest.mark.parametrize("utc, is_open", [
    # Berlin's clocks go forward at 01:00 UTC on 2026-03-29 and back on 2026-10-25: a 7h
    # window from 22:00 local is open 7 real hours either way (not 6 or 8 wall-clock ones).
    ("2026-03-28 21:00", True), ("2026-03-29 03:59", True), ("2026-03-29 04:00", False),
    ("2026-10-24 20:00", True), ("2026-10-25 02:59", True), ("2026-10-25 03:00", False),
])
def test_window_duration_is_elapsed_time_across_a_change_of_the_clocks(utc, is_open):
    schedule = window(cron="0 22 * * *", hours=7, zone=BERLIN)
    now = datetime.fromisoformat(utc).replace(tzinfo=timezone.utc)
    assert bool(open_windows((schedule,), now)) is is_open


def test_window_longer_than_its_period_stays_open():
    schedule = window(cron="0 * * * *", hours=2)
    assert open_windows((schedule,), tokyo("2026-12-05 03:17"))


def test_last_fire_of_a_rare_expression():
    schedule = window(cron="0 0 29 2 *", zone=ZoneInfo("UTC"))
    now = datetime(2026, 12, 1, tzinfo=timezone.utc)
    assert last_fire(schedule, now) == datetime(2024, 2, 29, tzinfo=timezone.utc)


# --- bounds ----------------------------------------------------------------------------------

ALWAYS = "* * * * *"   # fires every minute: open with any duration of a minute or more
NEVER_NOW = "0 0 1 1 *"  # 1 January only: closed on the test's date


@pytest.mark.parametrize("schedules, expected", [
    ((), Bounds(2, 5)),
    ((window("a", NEVER_NOW),), Bounds(2, 5, closed=("a",))),
    ((window("a", ALWAYS, min_size=4, max_size=None),), Bounds(4, 5, min_from="a")),
    ((window("a", ALWAYS, min_size=None, max_size=9),), Bounds(2, 9, max_from="a")),
    # a window's max_size replaces [scaling]'s, also downwards (a cap at night)
    ((window("night", ALWAYS, min_size=None, max_size=3),), Bounds(2, 3, max_from="night")),
    # overlapping: the largest of each wins, each named after its schedule
    ((window("a", ALWAYS, min_size=4, max_size=12), window("b", ALWAYS, min_size=6,
                                                           max_size=8)),
     Bounds(6, 12, min_from="b", max_from="a")),
    # a tie: the first in the file is named
    ((window("a", ALWAYS, min_size=4, max_size=8), window("b", ALWAYS, min_size=4, max_size=8)),
     Bounds(4, 8, min_from="a", max_from="a")),
    # min above max after overlapping: min_size lowered to max_size (max_size caps the bill)
    ((window("a", ALWAYS, min_size=5, max_size=None), window("b", ALWAYS, min_size=None,
                                                             max_size=3)),
     Bounds(3, 3, min_from="b", max_from="b", clamped=True)),
    ((window("a", ALWAYS, min_size=4, max_size=12), window("c", NEVER_NOW, min_size=9,
                                                           max_size=20)),
     Bounds(4, 12, min_from="a", max_from="a", closed=("c",))),
], ids=["none", "closed", "min", "max", "max-down", "overlap", "tie", "clamped",
        "open-and-closed"])
def test_effective_bounds(schedules, expected):
    bounds = effective_bounds(replace(BASE, schedules=schedules), tokyo("2026-12-01 10:00"))
    assert replace(bounds, windows=()) == expected
    assert [w.schedule.name for w in bounds.windows] == [
        s.name for s in schedules if s.name not in expected.closed]


@pytest.mark.parametrize("reason, bounds, expected", [
    ("pool has 2 VMs, below min_size 4", Bounds(4, 5, min_from="bh"),
     "pool has 2 VMs, below min_size 4 (schedule bh)"),
    ("pool has 6 VMs, above max_size 5", Bounds(4, 5, min_from="bh"),
     "pool has 6 VMs, above max_size 5"),
    ("load 9.00 is high but the pool is at max_size 9", Bounds(4, 9, min_from="a", max_from="b"),
     "load 9.00 is high but the pool is at max_size 9 (schedule b)"),
    ("min_size and max_size", Bounds(4, 9, min_from="a", max_from="b"),
     "min_size and max_size (schedules a, b)"),
    ("min_size and max_size", Bounds(4, 9, min_from="a", max_from="a"),
     "min_size and max_size (schedule a)"),
    ("load between thresholds", Bounds(4, 9, min_from="a", max_from="a"),
     "load between thresholds"),
])
def test_name_schedules(reason, bounds, expected):
    assert name_schedules(reason, bounds) == expected


@pytest.mark.parametrize("expression, message", [
    ("0 8 * * 1-5", None),
    ("*/15 * * * *", None),
    ("0 8 * * MON-FRI", None),
    ("0 8 * *", "expected 5 fields"),
    ("0 0 8 * * 1-5", "expected 5 fields"),
    ("@daily", "expected 5 fields"),
    ("61 8 * * *", "Bad minute"),
    ("0 8 * * MON-FRX", "Bad day-of-week"),
    ("0 0 31 2 *", "Bad day-of-month"),
])
def test_check_cron(expression, message):
    if message is None:
        check_cron(expression)
    else:
        with pytest.raises(ValueError, match=message):
            check_cron(expression)


# --- decide() within the bounds in force --------------------------------------------------------

@pytest.mark.parametrize("when, action, reason", [
    ("2026-12-01 10:00", Action.SCALE_OUT,
     "pool has 2 VMs, below min_size 4 (schedule business-hours)"),
    ("2026-12-01 20:00", Action.NONE, "load 0.50 is low but the pool is at min_size 2"),
])
def test_decide_open_window_raises_min_size_closed_does_not(when, action, reason):
    settings = replace(BASE, schedules=(window(),))
    decision = decide(load(0.5), pool(2), settings, tokyo(when), History())
    assert (decision.action, decision.reason) == (action, reason)


def test_decide_window_max_size_caps_the_load_rule():
    settings = replace(BASE, schedules=(window("night", ALWAYS, min_size=None, max_size=3),))
    decision = decide(load(9.0), pool(3), settings, tokyo("2026-12-01 23:00"), History())
    assert decision.action is Action.NONE
    assert decision.reason == ("load 9.00 is high but the pool is at max_size 3 "
                               "(schedule night)")
    closing = decide(load(2.0), pool(5), settings, tokyo("2026-12-01 23:00"), History())
    assert (closing.action, closing.rule) == (Action.SCALE_IN, "max_size")
    assert closing.reason.endswith("above max_size 3 (schedule night)")


# --- the replay ----------------------------------------------------------------------------------

def test_replay_honours_schedules_from_start(tmp_path):
    trace = rp.parse_trace(["0,1.0", "600,1.0"], "flat.csv")
    settings = replace(BASE, min_size=1, max_size=8, cooldown_out=0, cooldown_in=0,
                       drain_seconds=0, schedules=(window(),))
    # Monday 00:00 Tokyo: the window opens at minute 480 and closes at minute 1140 (> trace)
    result = rp.replay(trace, settings, start=tokyo("2026-11-30 00:00"), boot_seconds=60)
    outs = [c for c in result.changes if c.action is Action.SCALE_OUT]
    assert [c.minute for c in outs] == [480, 481, 482]  # each boot of 60 s ends by the next run
    assert all(c.reason.endswith("(schedule business-hours)") for c in outs)
    assert result.summary.peak_vms == 4
    weekend = rp.replay(trace, settings, start=tokyo("2026-12-05 00:00"), boot_seconds=60)
    assert not [c for c in weekend.changes if c.action is Action.SCALE_OUT]


def test_replay_starts_with_the_min_size_in_force():
    trace = rp.parse_trace(["0,1.0", "10,1.0"], "flat.csv")
    settings = replace(BASE, min_size=1, max_size=8, schedules=(window(),))
    result = rp.replay(trace, settings, start=tokyo("2026-12-01 10:00"))
    assert result.samples[0].serving == 4 and not result.changes


def test_replay_classic_policy_ignores_schedules():
    trace = rp.parse_trace(["0,1.0", "10,1.0"], "flat.csv")
    settings = replace(BASE, min_size=1, max_size=8, schedules=(window(),))
    result = rp.replay(trace, settings, "classic", start=tokyo("2026-12-01 10:00"))
    assert result.samples[0].serving == 1 and not result.changes


def schedule_config(tmp_path: Path, home: Path) -> Path:
    (home / ".ssh" / "id_rsa").write_text("not a key: replays never connect\n")
    text = (EXAMPLES / "replay.idcfrc").read_text()
    text += ("\n[schedule business-hours]\ncron = 0 8 * * 1-5\nduration = 11h\n"
             "timezone = Asia/Tokyo\nmin_size = 4\n")
    path = tmp_path / "rc"
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_main_replay_start_option(tmp_path, home, capsys):
    path = schedule_config(tmp_path, home)
    trace = tmp_path / "flat.csv"
    trace.write_text("0,2.0\n720,2.0\n")
    assert main(["-c", str(path), "--replay", str(trace), "--start",
                 "2026-12-01 00:00+09:00", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["start"] == "2026-12-01T00:00:00+09:00"
    assert data["changes"][0]["minute"] == 480
    assert data["changes"][0]["reason"].endswith("(schedule business-hours)")
    assert main(["-c", str(path), "--replay", str(trace), "--start", "2026-12-01 00:00"]) == 0
    assert "minute 0 at 2026-12-01 00:00" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--replay", "x.csv", "--start", "tomorrow"], "--start: expected a time like"),
    (["--start", "2026-12-01 00:00"], "go with --replay"),
])
def test_main_replay_start_errors_exit_2(tmp_path, home, capsys, argv, message):
    path = schedule_config(tmp_path, home)
    (tmp_path / "x.csv").write_text("0,1\n")
    argv = [a.replace("x.csv", str(tmp_path / "x.csv")) for a in argv]
    assert main(["-c", str(path), *argv]) == 2
    assert message in capsys.readouterr().err
