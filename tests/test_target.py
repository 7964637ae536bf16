"""Table-driven tests of the target policy: sshscale.target (pure) and its dispatch in decide().

The demand estimate is also checked against the replay's kernel load-average model: loads
computed by kernel_step for a known demand must give that demand back."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Optional

import pytest

from idcf_api import Account
from sshscale import target as tg
from sshscale.decide import decide
from sshscale.facts import NOISY as NOISY_TAG
from sshscale.facts import PROTECT, UNHEALTHY, history_from_tags, time_value
from sshscale.model import (
    Action,
    Backoff,
    Check,
    History,
    HostLoad,
    Measurement,
    Pool,
    Settings,
    Vm,
)
from sshscale.replay import kernel_step, warmed_loads

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=timezone.utc)
BASE = Settings(
    source="test", account=Account("http://127.0.0.1:1/client/api", "k", "s"),
    hosts=("web1",), user="u", private_key_path="/k", pass_phrase="", launch={"zoneid": "z"},
    min_size=2, max_size=5, load_balancer="lb-1", threshold_out=3.0, threshold_in=1.0,
    policy="target",
)
A = Action
OUT, IN, NONE = A.SCALE_OUT, A.SCALE_IN, A.NONE


def vm(name: str, *, age_min: float = 100, managed: bool = True, in_lb: bool = True,
       state: str = "Running", monitored: bool = False, jobid: Optional[str] = None) -> Vm:
    return Vm(id=f"id-{name}", name=name, state=state, created=NOW - timedelta(minutes=age_min),
              ip="127.0.1.1", in_lb=in_lb, managed=managed, monitored=monitored, jobid=jobid)


def booting(name: str, age_min: float = 1) -> Vm:
    """A VM whose deploy is under way, as listVirtualMachines shows it to a target run."""
    return vm(name, age_min=age_min, in_lb=False, state="Starting", jobid=f"job-{name}")


def pool(serving: int, *extra: Vm, newest_age_min: float = 100) -> Pool:
    """The monitored unmanaged VM plus serving-1 managed members, plus extras."""
    members = [vm("web1", managed=False, monitored=True)]
    members += [vm(f"m{i}", age_min=newest_age_min + serving - i) for i in range(1, serving)]
    return Pool(tuple(members) + extra)


def load(one: float, five: Optional[float] = None, fifteen: Optional[float] = None,
         cpus: Optional[int] = None) -> Measurement:
    """The monitored VM's loads; the 5-minute one defaults to the 1-minute one, the 15-minute
    one to the 5-minute one."""
    five = one if five is None else five
    fifteen = five if fifteen is None else fifteen
    return Measurement((HostLoad("web1", loads=(one, five, fifteen), cpus=cpus),))


UNKNOWN = Measurement((HostLoad("web1", error="refused"),))


def plan(measurement: Measurement, machines: Pool, settings: Settings = BASE,
         history: Optional[History] = None) -> tg.Plan:
    """target.plan() with the loads decide() would give it."""
    one, five, fifteen = ([h.value(period, settings.per_cpu) for h in measurement.hosts] + [None]
                          for period in (1, 5, 15))
    return tg.plan(one[0], five[0], machines, settings, NOW, history or History(),
                   fifteen=fifteen[0])


# --- targets and booting VMs ------------------------------------------------------------------


@pytest.mark.parametrize("out, inn, target_out, target_in, expected", [
    (3.0, 1.0, None, None, (3.0, 2.5)),   # the example's 2013 thresholds
    (3.0, 0.0, None, None, (3.0, 2.25)),
    (0.8, 0.3, None, None, (0.8, 0.675)),  # per-CPU style thresholds
    (3.0, 1.0, 2.0, None, (2.0, 2.0 * 10 / 12)),  # derived in proportion to the target
    (3.0, 1.0, None, 2.0, (3.0, 2.0)),
    (3.0, 1.0, 2.4, 1.5, (2.4, 1.5)),
])
def test_targets_derive_from_the_thresholds_unless_set(out, inn, target_out, target_in,
                                                       expected):
    settings = replace(BASE, threshold_out=out, threshold_in=inn, target_out=target_out,
                       target_in=target_in)
    assert tg.targets(settings) == pytest.approx(expected)


@pytest.mark.parametrize("machine, expected", [
    (booting("b"), True),
    (vm("b", age_min=1, state="Stopped", in_lb=False, jobid="j"), True),  # deploy: Stopped first
    (vm("b", age_min=1, state="Starting", in_lb=False), False),  # no pending job: the repairs'
    (vm("b", age_min=1, state="Stopped", in_lb=False), False),  # broken, not booting
    (vm("b", age_min=1, state="Running", in_lb=False, jobid="j"), False),  # deployed
    (vm("b", age_min=1, state="Starting", jobid="j"), False),  # a member already
    (vm("b", age_min=1, state="Starting", managed=False, in_lb=False, jobid="j"), False),
    (vm("b", age_min=1, state="Starting", monitored=True, in_lb=False, jobid="j"), False),
    (booting("b", age_min=14.9), True),  # job_timeout 900 s
    (booting("b", age_min=15), False),  # older than any deploy of ours may take
])
def test_booting_vms(machine, expected):
    assert tg.booting_vms(Pool((machine,)), BASE, NOW) == ((machine,) if expected else ())


# --- the demand estimate -------------------------------------------------------------------------


E1, E5 = math.exp(-1), math.exp(-60 / 300)


@pytest.mark.parametrize("count, changes, tau, expected", [
    (4, [], 60, 1 / 4),
    (4, [(0, 1)], 60, 1 / 3),  # joined just now: the average still shows the old pool
    (4, [(60, 1)], 60, (1 - E1) / 4 + E1 / 3),
    (4, [(60, 1)], 300, (1 - E5) / 4 + E5 / 3),
    (4, [(60, -1)], 60, (1 - E1) / 4 + E1 / 5),  # a VM left a minute ago
    (4, [(60, 1), (60, 1)], 60, (1 - E1) / 4 + E1 / 2),
    (4, [(240, 1)], 60, 1 / 4),  # 4 time constants ago: no longer shows
    (1, [(0, 1)], 60, 1.0),  # never divides by fewer than one VM
])
def test_inverse_average(count, changes, tau, expected):
    assert tg.inverse_average(count, changes, tau) == pytest.approx(expected)


def kernel_loads(shares: list[float]) -> tuple[float, float, float]:
    """The replay's kernel model fed one per-VM share per 5-s tick."""
    loads = warmed_loads(shares[0])
    for share in shares[1:]:
        loads = kernel_step(loads, share)
    return loads


def test_estimate_of_a_steady_ramp_recovers_the_demand_now_and_ahead():
    # demand rising 0.5 load units a minute for 30 minutes, shared by 4 VMs
    demands = [4 + 0.5 * tick * 5 / 60 for tick in range(361)]
    one, five, fifteen = kernel_loads([d / 4 for d in demands])
    estimate = tg.estimate(one, five, 4, [], forecast=240, fifteen=fifteen)
    assert one * 4 == pytest.approx(demands[-1] - 0.5, abs=0.05)  # the 1-min trails by 60 s
    assert estimate.trend == "rise"
    assert estimate.now == pytest.approx(demands[-1], abs=0.05)
    assert estimate.ahead == pytest.approx(demands[-1] + 0.5 * 4, abs=0.1)


@pytest.mark.parametrize("one, five, fifteen, trend, now, ahead", [
    # noise lifts the 1-minute average alone: no trend, the 1-minute estimate as is
    (2.2, 2.0, 2.0, "unconfirmed rise", 8.8, 8.8),
    (2.2, 2.0, 2.1, "unconfirmed rise", 8.8, 8.8),  # the 15-min above the 5-min: no rise
    # a slow rise counts as far as the 15-minute average confirms it: 5 x 0.04 / 600 s
    (2.2, 2.0, 1.99, "rise", 8.8 + 60 * 5 * 0.04 / 600, 8.8 + 300 * 5 * 0.04 / 600),
    # confirmed in full: the 1- and 5-minute slope (0.8 / 240 s) is what counts
    (2.2, 2.0, 1.5, "rise", 8.8 + 60 * 0.8 / 240, 8.8 + 300 * 0.8 / 240),
    # a step (D1 over D5 by more than 40 % of the load) counts at once, at the level the step
    # explains (at least a minute old: the 1-minute average has e^-1 of it still to go); the
    # 15-minute average does not confirm a rise: none beyond
    (3.0, 2.0, 2.0, "step", 12 + 4 * E1 / (E5 - E1), 12 + 4 * E1 / (E5 - E1)),
    (1.8, 2.0, 2.1, "fall", 7.2 - 60 * 0.8 / 240, 7.2 - 60 * 0.8 / 240),
    (2.0, 2.0, 2.0, "steady", 8.0, 8.0),
])
def test_estimate_trend(one, five, fifteen, trend, now, ahead):
    estimate = tg.estimate(one, five, 4, [], forecast=240, fifteen=fifteen, target=3.0)
    assert estimate.trend == trend
    assert (estimate.now, estimate.ahead) == (pytest.approx(now), pytest.approx(ahead))


def step_loads(before: float, after: float, age: float) -> tuple[float, float, float]:
    """The averages `age` seconds after a step from `before` to `after` (one VM)."""
    return kernel_loads([before] * 720 + [after] * round(age / 5))


@pytest.mark.parametrize("age, level", [
    (60, 10.0), (120, 10.0), (300, 10.0), (900, 10.0),  # a step's level, however old
    (30, 7.1), (5, 3.05),  # younger than a minute: taken for a minute old, short of the level
])
def test_step_level_solves_a_step_from_the_three_averages(age, level):
    one, five, fifteen = step_loads(2.0, 10.0, age)
    assert tg.step_level(one, five, fifteen) == pytest.approx(level, abs=0.05)


def test_estimate_of_a_step_takes_the_level_not_the_averages_catching_up():
    # two minutes after a step from 2 to 10: the averages still rise, the demand does not
    one, five, fifteen = step_loads(2.0, 10.0, 120)
    estimate = tg.estimate(one, five, 1, [], forecast=240, fifteen=fifteen, target=3.0)
    assert estimate.trend == "step"
    assert estimate.now == pytest.approx(10.0, abs=0.05)
    assert estimate.ahead < 10.0 + 240 * (one - five) / 240  # far less than D1 - D5 ahead


@pytest.mark.parametrize("one, five, fifteen, expected", [
    (8.0, 8.0, 8.0, 0.0),
    (8.4, 8.0, 7.0, 0.0),  # a steady rise: D1 - D5 = 0.4 x (D5 - D15)
    (7.6, 8.0, 9.0, 0.0),  # a steady fall
    (8.2, 8.0, 7.0, 0.0),  # between D5 and where the trend puts D1: explained
    (9.0, 8.0, 8.0, 1.0),  # noise lifts D1 alone
    (7.0, 8.0, 8.0, 1.0),  # ... or lowers it
    (9.0, 8.0, 7.0, 0.6),  # beyond the trend: a rise too young for the slower averages
    (7.0, 8.0, 9.0, 0.6),
])
def test_spread_is_what_a_steady_trend_does_not_explain(one, five, fifteen, expected):
    assert tg.spread(one, five, fifteen) == pytest.approx(expected)


def test_estimate_without_the_15_minute_load_counts_only_steps():
    assert tg.estimate(2.2, 2.0, 4, [], forecast=240).trend == "unconfirmed rise"
    assert tg.estimate(3.0, 2.0, 4, [], forecast=240).trend == "step"


def test_estimate_after_vms_joined_corrects_for_the_old_per_vm_load():
    # demand 12 on 2 VMs for an hour, then 2 more VMs joined 30 s ago
    one, five, fifteen = kernel_loads([6.0] * 720 + [3.0] * 6)
    estimate = tg.estimate(one, five, 4, [(30, 1), (30, 1)], forecast=0, fifteen=fifteen)
    assert one * 4 > 18  # the old per-VM load times the new pool: 50 % too high
    assert estimate.now == pytest.approx(12.0, rel=0.01)


def test_estimate_after_a_vm_left_corrects_for_the_old_per_vm_load():
    # demand 6 on 4 VMs for an hour, then one left 90 s ago
    one, five, fifteen = kernel_loads([1.5] * 720 + [2.0] * 18)
    estimate = tg.estimate(one, five, 3, [(90, -1)], forecast=240, fifteen=fifteen)
    assert one * 3 < 5.7  # the old per-VM load times the new pool: too low
    assert estimate.one == pytest.approx(6.0, rel=0.01)
    assert estimate.fifteen == pytest.approx(6.0, rel=0.01)
    assert estimate.ahead == pytest.approx(6.0, rel=0.01)  # no false trend either


def test_estimate_without_forecast_is_the_corrected_one_minute_load():
    estimate = tg.estimate(2.0, 1.0, 4, [], forecast=0)
    assert (estimate.one, estimate.five, estimate.now, estimate.ahead) == (8.0, 4.0, 8.0, 8.0)
    assert estimate.high == 8.0


@pytest.mark.parametrize("history, expected", [
    (History(), [(100 * 60, 1)]),
    # the recorded deploy time (150 s) applies to every member
    (History(last_scale_out=NOW - timedelta(minutes=100) + timedelta(seconds=150),
             deploy_seconds=150.0), [(100 * 60 - 150, 1)]),
    # a scale-out time alone (an adopt of an old VM, an earlier version's tag) says nothing of
    # how long a deploy takes: no phantom delay, hence no phantom upward trend
    (History(last_scale_out=NOW - timedelta(minutes=2)), [(100 * 60, 1)]),
    (History(last_scale_out=NOW - timedelta(minutes=90),
             last_scale_in=NOW - timedelta(minutes=5)), [(300, -1), (100 * 60, 1)]),
])
def test_pool_changes(history, expected):
    serving = [vm("web1", managed=False), vm("m1", age_min=100)]
    assert tg.pool_changes(serving, history, NOW) == expected


# --- the plan ------------------------------------------------------------------------------------


NOISY = History(noisy=NOW - timedelta(hours=23))  # a scale-out marked the pool noisy

PLANS = [
    # (id, pool, measurement, action, count, reason part); min 2, max 5, target 3, target_in
    # 2.5: a calm pool scales in at 2.75, with a noise margin of 7.5 %
    ("idle-at-min", pool(2), load(1.0), NONE, 0, "2 in service, 0 booting"),
    ("at-target", pool(2), load(3.0), NONE, 0, "demand 6.00 now"),
    ("above-target", pool(2), load(3.01), OUT, 1, "3 VMs at target 3"),
    ("several-at-once", pool(2), load(6.0), OUT, 2, "demand 12.00 now"),
    ("capped-by-max", pool(2), load(9.0), OUT, 3, "5 VMs at target 3"),
    ("booting-count", pool(2, booting("b1"), booting("b2")), load(6.0), NONE, 0,
     "2 in service, 2 booting"),
    ("booting-short", pool(2, booting("b1")), load(6.0), OUT, 1, "1 booting"),
    ("step", pool(4), load(2.0, 1.0), OUT, 1,
     "demand 11.26 now, 11.26 in 240 s (step; 1-min load 2.00) + 0.75 x spread 4.00: 5 VMs"),
    ("hedged", pool(2), load(2.8, 2.4, 2.4), OUT, 1, "+ 0.75 x spread 0.80: 3 VMs at target 3"),
    ("fits-one-fewer", pool(4), load(1.5), IN, 1,
     "demand 6.00 (highest estimate) fits 3 VMs at target_in 2.75, 15-min 6.00 within the "
     "noise margin 7.63"),
    ("fits-but-noise", pool(4), load(2.0), NONE, 0,
     "fits 3 VMs at target_in 2.75, but the 15-min 8.00 is above the noise margin 7.63"),
    ("fits-falling", pool(4), load(1.75, 1.75, 2.2), IN, 1,
     "fits 3 VMs at target_in 2.75, falling (5-min 7.00 at least 20% below 15-min 8.80)"),
    ("fits-falling-steadily", pool(4), load(1.75, 1.75, 2.0), IN, 1,
     "falling steadily (5-min 7.00 at least 6% below 15-min 8.00, spread 0.00)"),
    ("falling-with-spread", pool(4), load(1.4, 1.75, 2.0), NONE, 0,
     "but the 15-min 8.00 is above the noise margin 7.63"),
    ("fits-rise-stopped", pool(4), load(1.5, 1.5, 1.2), IN, 1, "within the noise margin"),
    ("fits-still-rising", pool(4), load(1.6, 1.5, 1.2), NONE, 0,
     "but still rising (5-min 6.00 above 15-min 4.80)"),
    ("just-too-much", pool(4), load(2.1), NONE, 0, "demand 8.40 now"),
    ("five-minute-holds", pool(4), load(1.0, 2.0), NONE, 0, "4 in service"),
    ("no-in-while-booting", pool(4, booting("b1")), load(0.5), NONE, 0, "1 booting"),
    ("stabilization", pool(4, newest_age_min=5), load(0.5), NONE, 0,
     "no scale-in within 600 s of the last scale-out"),
    # (young members: their joins still weigh on the 15-minute average, which reads higher)
    ("after-stabilization", pool(4, newest_age_min=10.1), load(0.5, 0.5, 0.9), IN, 1,
     "fits 3 VMs"),
    ("at-min-no-in", pool(2), load(0.1), NONE, 0, "2 in service"),
    ("above-max", pool(6), load(9.0), IN, 1, "pool has 6 VMs, above max_size 5"),
    ("below-min", pool(1), UNKNOWN, OUT, 1, "pool has 1 VM (1 in service, 0 booting), "
     "below min_size 2"),
    ("below-min-booting", pool(1, booting("b1")), UNKNOWN, NONE, 0, "load unknown"),
    ("unknown", pool(3), UNKNOWN, NONE, 0, "load unknown (fewer than 1 host(s) answered)"),
    ("broken-counts-against-max", pool(4, vm("x1", state="Error", in_lb=False)), load(6.0),
     NONE, 0, "but 1 other managed VM(s) outside the pool count against max_size 5"),
    ("broken-room-left", pool(2, vm("x1", state="Error", in_lb=False)), load(6.0), OUT, 2,
     "4 VMs at target 3"),
    ("starting-member-counts", pool(2, vm("s1", state="Starting")), load(4.0), NONE, 0,
     "2 in service"),
]


NOISY_PLANS = [
    # the pool is noisy: target_in 2.5, a noise margin of 15 %, no scale-in on a steady fall
    # alone, half the spread added to a scale-out's demand
    ("fits-one-fewer", pool(4), load(1.5), IN, 1,
     "fits 3 VMs at target_in 2.5, 15-min 6.00 within the noise margin 6.38 (noisy pool)"),
    ("fits-but-noise", pool(4), load(1.875), NONE, 0,
     "fits 3 VMs at target_in 2.5, but the 15-min 7.50 is above the noise margin 6.38"),
    ("fits-falling", pool(4), load(1.75, 1.75, 2.2), IN, 1, "target_in 2.5, falling (5-min"),
    ("no-steady-fall", pool(4), load(1.75, 1.75, 2.0), NONE, 0,
     "but the 15-min 8.00 is above the noise margin 6.38"),
    ("just-too-much", pool(4), load(1.9), NONE, 0, "demand 7.60 now"),
    ("hedged-less", pool(2), load(2.8, 2.4, 2.4), NONE, 0,
     "+ 0.5 x spread 0.80; 2 in service, 0 booting, noisy pool"),
]


@pytest.mark.parametrize("machines, measurement, action, count, reason_part, history",
                         [(*p[1:], History()) for p in PLANS]
                         + [(*p[1:], NOISY) for p in NOISY_PLANS],
                         ids=[p[0] for p in PLANS] + [f"noisy-{p[0]}" for p in NOISY_PLANS])
def test_plan(machines, measurement, action, count, reason_part, history):
    result = plan(measurement, machines, history=history)
    assert (result.action, result.count) == (action, count)
    assert reason_part in result.reason


def test_the_noisy_mark_reads_from_the_rule_tags():
    assert history_from_tags({NOISY_TAG: time_value(NOW)}).noisy == NOW
    assert history_from_tags({NOISY_TAG: "garbage"}).noisy is None
    assert history_from_tags({}).noisy is None


@pytest.mark.parametrize("mark, noisy", [
    (None, False),
    (NOW - timedelta(hours=23, minutes=59), True),
    (NOW - timedelta(hours=24), False),  # a day after the last mark: calm again
])
def test_noisy_for_a_day_after_a_mark(mark, noisy):
    assert tg.noisy(History(noisy=mark), NOW) is noisy


LAST_OUT = NOW - timedelta(hours=1)


@pytest.mark.parametrize("machines, measurement, history, noisy, reason_part", [
    # a scale-out 12 minutes after a scale-in takes it back: the noise reached further
    (pool(3), load(3.4, 3.0, 3.0), History(last_scale_out=LAST_OUT,
                                            last_scale_in=NOW - timedelta(minutes=12)),
     True, "; the pool is noisy: it takes back the scale-in of 720 s ago"),
    (pool(3), load(3.4, 3.0, 3.0), History(last_scale_out=LAST_OUT,
                                            last_scale_in=NOW - timedelta(minutes=16)),
     False, "4 VMs at target 3 (3 in service, 0 booting)"),  # past 1.5 x stabilization
    # D1 2.4 above a steady D5 and D15: a spread above 20 % of the demand drove it
    (pool(3), load(3.6, 2.8, 2.8), History(), True,
     "; the pool is noisy: a spread above 20% of the demand"),
    (pool(2), load(5.0, 2.5, 2.5), History(), False, "(step;"),  # a step is no noise
    (pool(3), load(2.8, 2.5, 2.0), History(), False, "(rise;"),  # a steady rise neither
])
def test_plan_marks_the_pool_noisy(machines, measurement, history, noisy, reason_part):
    result = plan(measurement, machines, history=history)
    assert result.action is OUT and result.noisy is noisy
    assert reason_part in result.reason and ("the pool is noisy" in result.reason) is noisy


@pytest.mark.parametrize("overrides, measurement, action, count", [
    ({"per_cpu": True}, load(8.0, cpus=4), NONE, 0),  # 2 per CPU on 2 VMs: 4 < 2 x 3
    ({"per_cpu": False}, load(8.0, cpus=4), OUT, 3),  # 16 load units: 6 VMs, max 5
    ({"target_out": 2.0}, load(2.5), OUT, 1),  # demand 5 at target 2: 3 VMs
    ({"forecast": 0.0}, load(2.0, 1.6, 1.2), NONE, 0),  # no trend: demand 4 (+ 0.36) fits 2
    ({"forecast": 600.0}, load(2.0, 1.6, 1.2), OUT, 1),  # 4.2 now, 6.2 ahead: 3 VMs
    ({"min_size": 3}, load(0.1), OUT, 1),  # min_size before any load rule
])
def test_plan_keys(overrides, measurement, action, count):
    result = plan(measurement, pool(2), replace(BASE, **overrides))
    assert (result.action, result.count) == (action, count)


def test_plan_scale_in_respects_the_target_in_and_stabilization_keys():
    settings = replace(BASE, target_in=2.0)
    assert plan(load(1.875), pool(4), settings, NOISY).action is NONE  # 7.5 > 3 x 2
    assert plan(load(1.5, 1.5, 1.25), pool(4), settings, NOISY).action is IN  # 6 <= 6, 5 <= 5.1
    # calm: halfway between target_in and the target, 2.5
    assert "fits 3 VMs at target_in 2.5" in plan(load(1.875), pool(4), settings).reason
    young = pool(4, newest_age_min=2)
    assert "within 600 s" in plan(load(0.5), young).reason
    assert plan(load(0.5, 0.5, 0.7), young, replace(BASE, stabilization=60.0)).action is IN


@pytest.mark.parametrize("machines, measurement, scale_in_min_ago, action, count, reason_part", [
    # 5 minutes after a scale-in, the 1-minute load alone (noise) asks for a 4th VM: held
    (pool(3), load(3.4, 2.5, 2.5), 5, NONE, 0, "the last scale-in was 300 s ago and the 5-min "
     "8.26 asks for 3 (flip guard)"),
    (pool(3), load(3.4, 3.0, 3.0), 5, OUT, 1, "4 VMs at target 3"),  # the 5-minute asks too
    (pool(3), load(5.0, 2.5, 2.5), 5, OUT, 2, "(step;"),  # a step is no noise
    # past stabilization (600 s), within 1.5 x stabilization: D1 alone, 2.7 above D5, asks
    # for 5 VMs with 0.75 x that spread; it takes back the scale-in's VM, and the demand
    # without the hedge (the spread is the noise that fooled the scale-in) asks for no more
    (pool(3), load(3.4, 2.5, 2.5), 10.1, OUT, 1, "4 VMs at target 3 (3 in service, 0 "
     "booting), not 5 (take-back guard: taking the scale-in back restores 4 VMs, 10.20 "
     "without the hedge asks for 4); the pool is noisy: it takes back the scale-in of 606 s "
     "ago"),
    (pool(3), load(3.4, 2.5, 2.5), 15, OUT, 1, "not 5 (take-back guard"),  # 900 s: still
    # the take-back's VM is booting: the next run's peak adds nothing
    (pool(3, booting("b1")), load(3.4, 2.5, 2.5), 12, NONE, 0, "5 VMs at target 3, but the last "
     "scale-in was 720 s ago and taking the scale-in back restores 4 VMs, 10.20 without the "
     "hedge asks for 4 (take-back guard); 3 in service, 1 booting"),
    # the demand without the hedge asks for more than the scale-in's VM: it has its way
    (pool(2), load(5.5, 4.5, 4.5), 10.1, OUT, 2, "4 VMs at target 3 (2 in service, 0 booting), "
     "not 5 (take-back guard: taking the scale-in back restores 3 VMs, 11.00 without the hedge "
     "asks for 4)"),
    (pool(2), load(7.0, 5.5, 5.5), 10.1, OUT, 3, "5 VMs at target 3 (2 in service, 0 booting); "
     "the pool is noisy"),  # 14.00 without the hedge asks for 5: no guard holds it back
    (pool(3), load(5.0, 2.5, 2.5), 12, OUT, 2, "(step;"),  # a step is no noise
    # past 1.5 x stabilization, no guard: the spread's hedge asks for a 5th VM
    (pool(3), load(3.4, 2.5, 2.5), 16, OUT, 2, "5 VMs at target 3 (3 in service, 0 booting); "
     "the pool is noisy: a spread above 20% of the demand"),
])
def test_plan_after_a_scale_in_only_the_five_minute_average_or_a_step_adds_vms(
        machines, measurement, scale_in_min_ago, action, count, reason_part):
    history = History(last_scale_out=NOW - timedelta(hours=1),
                      last_scale_in=NOW - timedelta(minutes=scale_in_min_ago))
    result = plan(measurement, machines, history=history)
    assert (result.action, result.count) == (action, count) and reason_part in result.reason


def test_plan_the_flip_guard_ends_with_a_later_scale_out():
    history = History(last_scale_in=NOW - timedelta(minutes=5),
                      last_scale_out=NOW - timedelta(minutes=2))
    assert plan(load(3.4, 2.5, 2.5), pool(3), history=history).action is OUT


def test_plan_a_recent_scale_in_raises_the_estimate():
    # loads 2.0 on 3 VMs; a VM left 60 s ago: the averages still weigh the old pool of 4
    left = History(last_scale_in=NOW - timedelta(seconds=60))
    assert "demand 6.00 now" in plan(load(2.0), pool(3)).reason
    assert "demand 6.37 now" in plan(load(2.0), pool(3), history=left).reason


# --- the dispatch in decide() --------------------------------------------------------------------


def test_decide_target_reads_the_history_first():
    decision = decide(load(1.0), pool(2), BASE, NOW)
    assert decision.action is A.NONE and decision.needs_history and decision.rule == "target"


def test_decide_target_maps_the_plan():
    out = decide(load(6.0), pool(2), BASE, NOW, History())
    assert (out.action, out.count, out.rule) == (A.SCALE_OUT, 2, "target")
    scale_in = decide(load(0.5), pool(4), BASE, NOW, History())
    assert (scale_in.action, scale_in.count, scale_in.rule) == (A.SCALE_IN, 1, "target")
    assert scale_in.vms[0].name == "m3"  # the newest managed member, as for threshold
    steady = decide(load(2.0), pool(2), BASE, NOW, History())
    assert (steady.action, steady.rule) == (A.NONE, "target")
    taken_back = decide(load(3.4, 3.0, 3.0), pool(3), BASE, NOW,
                        History(last_scale_out=LAST_OUT, last_scale_in=NOW - timedelta(minutes=12)))
    assert taken_back.action is A.SCALE_OUT and taken_back.noisy and not out.noisy


def test_decide_target_deploys_respect_the_failed_deploy_backoff():
    held = History(backoff=Backoff(2, NOW + timedelta(minutes=1)))
    decision = decide(load(6.0), pool(2), BASE, NOW, held)
    assert (decision.action, decision.rule) == (A.NONE, "backoff")
    assert decide(load(6.0), pool(2), BASE, NOW + timedelta(minutes=2), held).count == 2


def test_decide_target_counts_a_booting_vm_instead_of_adopting_it():
    decision = decide(load(4.0), pool(2, booting("b1")), BASE, NOW, History())
    assert decision.action is A.NONE and "1 booting" in decision.reason


def test_decide_target_still_adopts_a_deployed_vm_outside_the_load_balancer():
    orphan = vm("o1", age_min=1, in_lb=False)
    decision = decide(load(1.0), pool(2, orphan), BASE, NOW, History())
    assert decision.action is A.ADOPT and decision.vms == (orphan,)


def test_decide_target_adopts_a_deploy_older_than_job_timeout():
    stale = booting("b1", age_min=20)
    decision = decide(load(1.0), pool(2, stale), BASE, NOW, History())
    assert decision.action is A.ADOPT and decision.vms == (stale,)


def test_decide_target_fills_min_size_before_destroying_a_broken_vm():
    broken = vm("x1", state="Error", in_lb=False)
    assert decide(UNKNOWN, pool(1, broken), BASE, NOW, History()).action is A.SCALE_OUT
    # ... but a VM on its way counts: then the broken one is destroyed
    decision = decide(UNKNOWN, pool(1, broken, booting("b1")), BASE, NOW, History())
    assert decision.action is A.DESTROY and decision.vms == (broken,)


def test_decide_threshold_policy_ignores_the_target_keys():
    settings = replace(BASE, policy="threshold", cooldown_out=0, cooldown_in=0)
    decision = decide(load(6.0), pool(2), settings, NOW, History())
    assert (decision.action, decision.count, decision.rule) == (A.SCALE_OUT, 1, "threshold_out")


def test_decide_target_keeps_the_fleet_rules():
    spared = replace(vm("m9", age_min=50), tags=((PROTECT, "true"),))
    scale_in = decide(load(0.5), pool(4, spared), BASE, NOW, History())
    assert (scale_in.action, scale_in.vms[0].name) == (A.SCALE_IN, "m3")  # not the protected
    oldest = decide(load(0.5), pool(4, spared), replace(BASE, termination_policy="oldest"), NOW,
                    History())
    assert oldest.vms[0].name == "m1"
    failing = replace(vm("m1", age_min=103), check=Check(False, "refused"),
                      tags=((UNHEALTHY, "3"),))
    machines = Pool(tuple(failing if v.name == "m1" else v for v in pool(3).vms))
    replacing = decide(load(1.0), machines, BASE, NOW, History())
    assert (replacing.action, replacing.rule, replacing.vms) == (A.REPLACE, "health", (failing,))
