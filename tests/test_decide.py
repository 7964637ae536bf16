"""Table-driven tests of the pure core: decide(), parse_load(), history_from_events()."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from idcf_api import Account
from sshscale.decide import aggregate_load, decide
from sshscale.measure import parse_load, remote_command
from sshscale.facts import DRAIN
from sshscale.model import Action, Backoff, History, HostLoad, Measurement, Pool, Settings, Vm
from sshscale.observe import history_from_events, parse_time

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=timezone.utc)
BASE = Settings(
    source="test", account=Account("http://127.0.0.1:1/client/api", "k", "s"),
    hosts=("web1",), user="u", private_key_path="/k", pass_phrase="", launch={"zoneid": "z"},
    min_size=2, max_size=5, load_balancer="lb-1", threshold_out=3.0, threshold_in=1.0,
    cooldown_out=0, cooldown_in=0,
)


def vm(name: str, *, managed: bool = True, in_lb: bool = True, state: str = "Running",
       age_min: float = 60, monitored: bool = False) -> Vm:
    return Vm(id=f"id-{name}", name=name, state=state, created=NOW - timedelta(minutes=age_min),
                ip="127.0.1.1", in_lb=in_lb, managed=managed, monitored=monitored)


def pool(n: int, *extra: Vm) -> Pool:
    """The monitored unmanaged VM plus n-1 managed members (ages decreasing), plus extras."""
    members = [vm("web1", managed=False, monitored=True, age_min=1000)]
    members += [vm(f"m{i}", age_min=100 - i) for i in range(1, n)]
    return Pool(tuple(members) + extra)


def load(*values: float) -> Measurement:
    return Measurement(tuple(HostLoad(f"h{i}", loads=(v, v, v)) for i, v in enumerate(values)))


UNKNOWN = Measurement((HostLoad("web1", error="refused"),))
A = Action


@pytest.mark.parametrize("count, measurement, action, rule, reason_part", [
    # min/max rules first, with or without a load
    (1, load(0.0), A.SCALE_OUT, "min_size", "pool has 1 VM, below min_size 2"),
    (1, UNKNOWN, A.SCALE_OUT, "min_size", "below min_size"),
    (6, load(9.0), A.SCALE_IN, "max_size", "above max_size 5"),
    (6, UNKNOWN, A.SCALE_IN, "max_size", "above max_size"),
    # load rules, boundaries are strict
    (2, load(3.01), A.SCALE_OUT, "threshold_out", "3.01 > threshold_out 3"),
    (2, load(3.0), A.NONE, "none", "between thresholds"),
    (5, load(9.0), A.NONE, "none", "at max_size 5"),
    (4, load(4.0), A.SCALE_OUT, "threshold_out", "> threshold_out"),
    (3, load(0.99), A.SCALE_IN, "threshold_in", "0.99 < threshold_in 1"),
    (3, load(1.0), A.NONE, "none", "between thresholds"),
    (2, load(0.0), A.NONE, "none", "at min_size 2"),
    # unknown load: only min/max may act
    (3, UNKNOWN, A.NONE, "none", "load unknown"),
    (3, Measurement(), A.NONE, "none", "load unknown"),
])
def test_decide_rules(count, measurement, action, rule, reason_part):
    d = decide(measurement, pool(count), BASE, NOW, History())
    assert (d.action, d.rule) == (action, rule)
    assert reason_part in d.reason


def test_decide_writes_a_held_time_in_the_settings_zone_whatever_the_process_zone(monkeypatch):
    # The log lines are local: a held time printed in UTC was hours off the line it was on.
    # decide() stays pure: the zone comes with the settings (the config's monitor zone).
    import time
    reasons = []
    for zone in ("UTC", "Asia/Tokyo", "America/Los_Angeles"):
        monkeypatch.setenv("TZ", zone)
        time.tzset()
        for shown in (timezone.utc, ZoneInfo("Asia/Tokyo")):
            held = decide(load(9.0), pool(2), replace(BASE, cooldown_out=120, zone=shown), NOW,
                          History(last_scale_out=NOW - timedelta(seconds=30)))
            reasons.append(held.reason)
    monkeypatch.undo()
    time.tzset()
    assert reasons[0::2] == [reasons[0]] * 3 and reasons[1::2] == [reasons[1]] * 3
    assert reasons[0].endswith("until 2026-11-28 12:01:30 UTC")
    assert reasons[1].endswith("until 2026-11-28 21:01:30 JST")


def test_decide_backoff_end_in_the_settings_zone():
    backoff = Backoff(2, NOW + timedelta(minutes=3))
    held = decide(load(9.0), pool(1), replace(BASE, zone=ZoneInfo("Asia/Tokyo")), NOW,
                  History(backoff=backoff))
    assert held.rule == "backoff" and held.reason.endswith("until 2026-11-28 21:03:00 JST")


def test_decide_scale_in_picks_newest_managed_not_monitored():
    p = pool(4)
    d = decide(load(0.1), p, BASE, NOW, History())
    assert d.vms[0].name == "m3"  # the youngest managed member


def test_decide_never_picks_unmanaged_or_monitored_by_default():
    p = Pool((vm("web1", managed=False, monitored=True), vm("other", managed=False),
                vm("web3", managed=False)))
    d = decide(load(0.1), p, BASE, NOW, History())
    assert d.action is A.NONE and "no managed VM" in d.reason


def test_decide_protect_unmanaged_no_allows_unmanaged_but_not_monitored():
    settings = replace(BASE, protect_unmanaged=False)
    p = Pool((vm("web1", managed=False, monitored=True, age_min=1),
                vm("old", managed=False, age_min=50)))
    p = Pool(p.vms + (vm("older", managed=False, age_min=90),))
    d = decide(load(0.1), p, settings, NOW, History())
    assert d.action is A.SCALE_IN and d.vms[0].name == "old"


def test_decide_protect_unmanaged_no_refuses_without_known_monitored_vm():
    settings = replace(BASE, protect_unmanaged=False)
    p = Pool((vm("a", managed=False), vm("b", managed=False), vm("c", managed=False)))
    d = decide(load(0.1), p, settings, NOW, History())
    assert d.action is A.NONE and "monitored" in d.reason


def test_decide_counts_only_running_or_starting_members():
    p = pool(2, vm("booting", state="Starting"))
    assert p.count == 3
    p = pool(2, vm("stopped-unmanaged", managed=False, state="Stopped"))
    assert p.count == 2


@pytest.mark.parametrize("step, count, value, expected", [
    ("1", 2, 16.0, 1),
    ("proportional", 2, 6.1, 3),      # ceil(2*6.1/3)=5 -> +3
    ("proportional", 2, 3.1, 1),      # ceil(2.07)=3 -> +1
    ("proportional", 4, 30.0, 1),     # capped by max_size 5
    ("proportional", 2, 60.0, 3),     # capped: 5-2
])
def test_decide_step(step, count, value, expected):
    d = decide(load(value), pool(count), replace(BASE, step_out=step), NOW, History())
    assert d.action is A.SCALE_OUT and d.count == expected


@pytest.mark.parametrize("values, aggregate, expected", [
    ((1.0, 5.0), "mean", 3.0),
    ((1.0, 5.0), "max", 5.0),
    ((2.0,), "mean", 2.0),
])
def test_aggregate_load(values, aggregate, expected):
    assert aggregate_load(load(*values), 1, replace(BASE, aggregate=aggregate)) == expected


def test_aggregate_min_reporting_and_per_cpu_and_period():
    m = Measurement((HostLoad("a", loads=(4.0, 2.0, 1.0), cpus=4), HostLoad("b", error="x")))
    assert aggregate_load(m, 1, replace(BASE, min_reporting=2)) is None
    assert aggregate_load(m, 1, replace(BASE, per_cpu=True)) == 1.0
    assert aggregate_load(m, 5, BASE) == 2.0
    assert aggregate_load(m, 15, BASE) == 1.0


def test_decide_periods_per_policy():
    m = Measurement((HostLoad("a", loads=(0.5, 2.0, 2.0)),))
    settings = replace(BASE, period_in=5)
    assert decide(m, pool(3), settings, NOW, History()).action is A.NONE
    assert decide(m, pool(3), BASE, NOW, History()).action is A.SCALE_IN


# --- cooldowns ----------------------------------------------------------------------------

COOL = replace(BASE, cooldown_out=120, cooldown_in=300)


@pytest.mark.parametrize("value, last_out_s, last_in_s, action, held", [
    (4.0, None, None, A.SCALE_OUT, False),
    (4.0, 119, None, A.NONE, True),
    (4.0, 120, None, A.SCALE_OUT, False),
    (4.0, 500, 10, A.SCALE_OUT, False),      # scale-in does not hold scale-out
    (0.1, None, 299, A.NONE, True),
    (0.1, None, 300, A.SCALE_IN, False),
    (0.1, 200, 400, A.NONE, True),           # scale-in counts from the later of both
    (0.1, 301, 400, A.SCALE_IN, False),
])
def test_decide_cooldowns(value, last_out_s, last_in_s, action, held):
    def ago(sec):
        return None if sec is None else NOW - timedelta(seconds=sec)
    history = History(ago(last_out_s), ago(last_in_s))
    d = decide(load(value), pool(3), COOL, NOW, history)
    assert d.action is action
    assert (d.held_until is not None) is held
    if held:
        assert "held back by the" in d.reason and "until" in d.reason


def test_decide_asks_for_history_only_when_it_would_act_on_the_load_or_deploy():
    assert decide(load(2.0), pool(3), COOL, NOW).needs_history is False  # quiet: 2 API calls
    assert decide(load(4.0), pool(3), COOL, NOW).needs_history is True
    assert decide(load(0.1), pool(3), COOL, NOW).needs_history is True
    assert decide(load(0.1), pool(3), BASE, NOW).needs_history is False  # cooldown 0
    assert decide(load(4.0), pool(3), BASE, NOW).needs_history is True  # every deploy: backoff
    # min/max ignore cooldowns
    d = decide(load(0.1), pool(1), COOL, NOW, History(NOW, NOW))
    assert d.action is A.SCALE_OUT and not d.needs_history


@pytest.mark.parametrize("count, value, backoff_s, action, rule", [
    (1, 0.0, 30, A.NONE, "backoff"),            # min fill waits for the backoff too
    (1, 0.0, -1, A.SCALE_OUT, "min_size"),       # ... and goes once it is over
    (3, 9.0, 30, A.NONE, "backoff"),
    (3, 9.0, -1, A.SCALE_OUT, "threshold_out"),
    (3, 0.1, 30, A.SCALE_IN, "threshold_in"),     # only deploys back off
])
def test_decide_failed_deploy_backoff(count, value, backoff_s, action, rule):
    until = NOW + timedelta(seconds=backoff_s)
    d = decide(load(value), pool(count), BASE, NOW, History(backoff=Backoff(2, until)))
    assert (d.action, d.rule) == (action, rule)
    if rule == "backoff":
        assert "failed-deploy backoff (2 failed in a row)" in d.reason
        assert d.held_until == until


def test_decide_counts_vms_outside_the_pool_against_max_size():
    lost = vm("lost", in_lb=False, state="Unknown")  # its host is away: left alone, but paid
    d = decide(load(9.0), pool(4, lost), BASE, NOW, History())
    assert d.action is A.NONE and "outside the pool count against max_size 5" in d.reason
    d = decide(load(0.0), pool(1, lost, vm("err", in_lb=False, state="Error")),
               replace(BASE, max_size=3), NOW, History())
    assert d.action is A.DESTROY  # min fill blocked by max_size: the broken VM goes first


# --- repairs ------------------------------------------------------------------------------

DRAINED = ((DRAIN, "1764460800"),)


@pytest.mark.parametrize("extra, count, drained, action", [
    (vm("x", in_lb=False, state="Error"), 3, False, A.DESTROY),
    (vm("x", in_lb=False, state="Stopped"), 3, False, A.DESTROY),
    (vm("x", in_lb=True, state="Stopped"), 3, False, A.DESTROY),
    (vm("x", in_lb=False), 3, False, A.ADOPT),
    (vm("x", in_lb=False, state="Starting"), 3, False, A.ADOPT),
    (vm("x", in_lb=False), 5, False, A.DESTROY),       # pool full
    (vm("x", in_lb=False), 3, True, A.DESTROY),        # drained
    (vm("x", in_lb=False), 1, True, A.READD),          # drained, pool below min
])
def test_decide_repairs(extra, count, drained, action):
    extra = replace(extra, tags=DRAINED) if drained else extra
    d = decide(load(2.0), pool(count, extra), COOL, NOW, History())
    assert d.action is action and d.vms == (extra,) and d.rule == "repair"


def test_decide_repair_ignores_unmanaged_and_needs_no_history_for_orphans():
    unmanaged = vm("y", managed=False, in_lb=False, state="Error")
    assert decide(load(2.0), pool(3, unmanaged), COOL, NOW, History()).action is A.NONE
    orphan = decide(load(2.0), pool(3, vm("x", in_lb=False)), COOL, NOW)
    assert orphan.action is A.ADOPT and not orphan.needs_history


# --- parsing --------------------------------------------------------------------------------

@pytest.mark.parametrize("text, loads", [
    ("0.42 0.30 0.25 1/123 4567\n", (0.42, 0.30, 0.25)),
    (" 17:27:52 up 3 days,  2:01,  2 users,  load average: 0.42, 0.30, 0.25",
     (0.42, 0.30, 0.25)),
    ("17:27:52 up 12 min,  1 user,  load average: 1,50, 0,75, 0,10", (1.5, 0.75, 0.1)),
    ("10:00  up 2 days, 3:04, 1 user, load averages: 2.10 1.90 1.80", (2.1, 1.9, 1.8)),
    ("12:00:01 up 1 day, 10:00, 0 users, LOAD AVERAGE: 3.00, 2.00, 1.00", (3.0, 2.0, 1.0)),
    ("queue=17\n", (17.0, 17.0, 17.0)),
    ("42", (42.0, 42.0, 42.0)),
])
def test_parse_load_formats(text, loads):
    assert parse_load(text) == (loads, None)


@pytest.mark.parametrize("command, text, loads", [
    ("cat /proc/loadavg", "0.42 0.30 0.25 1/123 4567\n", (0.42, 0.30, 0.25)),
    ("uptime", " 17:27:52 up 3 days,  2:01,  2 users,  load average: 0.42, 0.30, 0.25",
     (0.42, 0.30, 0.25)),
    ("uptime", "17:27:52 up 12 min,  1 user,  load average: 1,50, 0,75, 0,10", (1.5, 0.75, 0.1)),
    ("/usr/bin/uptime", "10:00  up 2 days, 3:04, 1 user, load averages: 2.10 1.90 1.80",
     (2.1, 1.9, 1.8)),
    ("uptime", "10:00  up 2 days, 3:04, 1 user, load averages: 2,10 1,90 1,80", (2.1, 1.9, 1.8)),
    ("uptime", " 17:27:52 up 3 days,  2:01,  load average: 0.00, 0.01, 0.05", (0.0, 0.01, 0.05)),
])
def test_parse_load_default_commands_exact_formats(command, text, loads):
    assert parse_load(text, command=command) == (loads, None)


@pytest.mark.parametrize("command, text", [
    ("cat /proc/loadavg", "not a number 2/123 4567"),
    ("cat /proc/loadavg", "Welcome to Ubuntu 22.04.3 LTS"),
    ("cat /proc/loadavg", "Welcome to Ubuntu 22.04.3 LTS\n0.42 0.30 0.25 1/123 4567"),
    ("cat /proc/loadavg", "0.42 0.30 0.25 1/123 4567 extra"),
    ("cat /proc/loadavg", "0.42 0.30 0.25"),
    ("cat /proc/loadavg", " 17:27:52 up 3 days,  load average: 0.42, 0.30, 0.25"),
    ("uptime", "0.42 0.30 0.25 1/123 4567"),
    ("uptime", "load average: 0.42, 0.30, 0.25"),
    ("uptime", " 17:27:52 up 3 days,  load average: 0.42, 0.30"),
    ("uptime", "up 3 days\n load average: 0.42, 0.30, 0.25"),
    ("uptime", " 17:27:52 up 3 days, 2 users, load average: 1, 2, 3"),
])
def test_parse_load_default_commands_refuse_anything_else(command, text):
    with pytest.raises(ValueError, match=re.escape(f"{text.strip()[:60]!r} is not what "
                                                   f"{command} prints")):
        parse_load(text, command=command)


def test_parse_load_per_cpu():
    assert parse_load("4.00 2.00 1.00 1/99 5\n4\n", per_cpu=True) == ((4.0, 2.0, 1.0), 4)


@pytest.mark.parametrize("text, per_cpu", [
    ("", False), ("   \n", False), ("no numbers here", False),
    ("load average: n/a", False), ("1.0 2.0 3.0 1/2 3", True), ("-1.0", False),
])
def test_parse_load_rejects(text, per_cpu):
    with pytest.raises(ValueError):
        parse_load(text, per_cpu)


# --- event history --------------------------------------------------------------------------

def event(kind: str, minutes_ago: float, text: str) -> dict:
    when = (NOW - timedelta(minutes=minutes_ago)).strftime("%Y-%m-%dT%H:%M:%S+0000")
    return {"type": kind, "created": when, "description": text, "state": "Completed"}


def test_history_from_events_filters_by_rule_and_managed_vm():
    p = pool(3)
    events = [
        event("LB.ASSIGN.TO.RULE", 10, "assigning. Load balancer Id: lb-1, Vm Ids: id-m2"),
        event("LB.ASSIGN.TO.RULE", 2, "assigning. Load balancer Id: other-lb, Vm Ids: zz"),
        event("LB.REMOVE.FROM.RULE", 5, "removing. Load balancer Id: lb-1, Vm Ids: id-m1"),
        event("VM.DESTROY", 1, "destroying Vm. Vm Id: unrelated"),
    ]
    h = history_from_events(events, BASE, p)
    assert h.last_scale_out == NOW - timedelta(minutes=10)
    assert h.last_scale_in == NOW - timedelta(minutes=5)


def test_history_falls_back_to_newest_managed_creation():
    p = pool(3)
    h = history_from_events([], BASE, p)
    assert h.last_scale_out == NOW - timedelta(minutes=98)
    assert h.last_scale_in is None


def test_history_ignores_failed_actions():
    failed = event("LB.REMOVE.FROM.RULE", 1, "Error while removing from load balancer. Load "
                   "balancer Id: lb-1 VmIds: 7")
    failed["level"] = "ERROR"
    error_text = event("LB.ASSIGN.TO.RULE", 1, "Error while assigning to load balancer. Load "
                       "balancer Id: lb-1 VmIds: 7")
    h = history_from_events([failed, error_text], BASE, pool(1))
    assert h.last_scale_in is None and h.last_scale_out is None


def test_parse_time_formats():
    assert parse_time("2013-05-10T17:27:52+0900") == datetime(
        2013, 5, 10, 8, 27, 52, tzinfo=timezone.utc)
    assert parse_time("garbage") is None and parse_time(None) is None


def test_repair_never_touches_the_monitored_vm():
    monitored = replace(vm("web1", in_lb=False, state="Stopped"), monitored=True)
    d = decide(load(2.0), pool(3, monitored), COOL, NOW, History())
    assert d.action is A.NONE


@pytest.mark.parametrize("state", ["Stopped", "Starting", "Running"])
def test_repair_adopts_a_vm_whose_deploy_job_is_pending(state):
    building = replace(vm("x", in_lb=False, state=state), jobid="job-1")
    d = decide(load(2.0), pool(3, building), COOL, NOW, History())
    assert d.action is A.ADOPT and d.vms == (building,)


@pytest.mark.parametrize("state, action", [("Shutdown", A.DESTROY), ("Unknown", A.NONE)])
def test_repair_of_other_states(state, action):
    # Unknown: a VM on a disconnected host may come back, so it is left alone.
    odd = vm("x", in_lb=False, state=state)
    assert decide(load(2.0), pool(3, odd), COOL, NOW, History()).action is action


def test_min_fill_comes_before_destroying_a_broken_vm():
    broken = vm("x", in_lb=False, state="Error")
    d = decide(load(2.0), pool(1, broken), COOL, NOW, History())
    assert d.action is A.SCALE_OUT and d.rule == "min_size"
    orphan = vm("y", in_lb=False)  # but an orphan that fills the pool is adopted first
    d = decide(load(2.0), pool(1, broken, orphan), COOL, NOW, History())
    assert d.action is A.ADOPT and d.vms == (orphan,)


def test_migrating_member_counts_as_in_service():
    p = Pool((vm("web1", managed=False, monitored=True), vm("m", state="Migrating")))
    d = decide(load(2.0), p, replace(BASE, min_size=2, max_size=2), NOW, History())
    assert p.count == 2 and d.action is A.NONE


def test_history_matches_whole_ids_and_resourceid():
    settings = replace(BASE, load_balancer="5")
    events = [event("LB.ASSIGN.TO.RULE", 1, "Load balancer Id: 15 Instance IDs: 7"),
              event("LB.REMOVE.FROM.RULE", 2, "no ids here")]
    events[1]["resourceid"] = "5"
    h = history_from_events(events, settings, Pool())
    assert h.last_scale_out is None and h.last_scale_in == NOW - timedelta(minutes=2)


@pytest.mark.parametrize("command, status, last_line", [
    ("echo '8.0 8.0 8.0 1/1 1'", 0, True),
    ("echo 'error 7'; exit 3", 3, False),
    ("echo '1 1 1 1/1 1' # a comment", 0, True),
])
def test_per_cpu_command_keeps_the_commands_exit_status(command, status, last_line):
    import subprocess
    settings = replace(BASE, per_cpu=True, command=command)
    done = subprocess.run(["sh", "-c", remote_command(settings)], capture_output=True,
                          text=True, check=False)
    assert done.returncode == status
    assert done.stdout.strip().splitlines()[-1].isdigit() is last_line
    assert remote_command(BASE) == "cat /proc/loadavg"
