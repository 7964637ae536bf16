"""The target policy (`[scalling] policy = target`), pure: size the pool so that the demand it
must absorb, estimated from the load averages, stays at a target load per VM, follow smooth
declines closely, and stay calm when that demand is noisy.

decide() calls plan() after the repairs of crash leftovers and turns the Plan into a Decision
(the failed-deploy backoff, the scale-in victim); the live run and the replay call it alike.

The estimate, each run:
  * demand = load average x VMs in service, where "VMs in service" is the load average's own
    weighting of 1/N over the recent past: a VM that joined 30 s ago has only moved the
    1-minute average 40 % of the way to the new per-VM share (joins: the creation of each
    member plus the recorded deploy time; leaves: the last scale-in); so for the 1-, 5- and
    15-minute averages (D1, D5, D15);
  * trend: on a steady ramp the 1-minute average trails the demand by 60 s of slope, the
    5-minute one by 300 s and the 15-minute one by 900 s. A rise counts as far as the slower
    averages confirm it: slope = min((D1 - D5) / 240 s, CONFIRM x (D5 - D15) / 600 s), none
    when D15 does not trail D5 (noise moves D1 alone); a fall counts as D1 and D5 show it.
    Demand now = D1 + 60 s x slope. A step (D1 above D5 by more than STEP_RISE of the load, a
    flash crowd) counts at once: demand now is at least the level a step explains (its age
    and height solved from the three averages, so that the averages' catching up is not
    taken for a rise);
  * spread: how far D1 lies outside what a steady trend explains (between D5 and D5 +
    TREND_LAG x (D5 - D15)): noise, or a rise too young for the slower averages to show;
  * the pool is noisy for NOISY_SECONDS after a scale-out that took back a scale-in (within
    TAKE_BACK x `stabilization` of it) or that a spread of more than NOISY_SPREAD of the
    demand drove: the cloud keeps the time (ssh-scale:noisy, written with the scale-out by
    the run that acts), so no quiet run writes anything. A calm pool halves the margins;
  * wanted VMs = ceil((max(D1, demand `forecast` seconds ahead) + HEDGE of the spread
    (NOISY_HEDGE when noisy)) / target), within min/max; VMs still booting (managed, outside
    the load balancer, deploy job pending) count as capacity on the way, so several VMs may
    be added in one run and none twice. Within `stabilization` seconds of a scale-in (a
    flip), only the 5-minute average or a step may add VMs (flip guard); until TAKE_BACK x
    `stabilization`, a scale-out takes the scale-in back, which shows that the scale-in
    misread noise, so the spread that asks for it is read as that noise: it restores the VM
    the scale-in removed, and beyond that sizes for the demand without the spread's hedge
    (take-back guard; a step is no noise);
  * scale in one VM only when no VM is booting, the newest VM is older than `stabilization`
    seconds, the highest estimate (D1, D5, now, ahead) fits one VM fewer at target_in (calm:
    halfway between target_in and the target), and the fit is not noise: the demand is
    clearly falling (D5 at least FALL below D15, D1 not above D5), or, calm, falling
    steadily (D5 at least STEADY_FALL below D15, D1 not above D5, the spread at most
    STEADY_SPREAD of that fall), or the 15-minute average fits with the noise margin (D15 <=
    (1 - NOISE_MARGIN, half that when calm) x target_in x VMs left) and the demand is not
    still rising (D5 above D15 by more than RISING, unless D1 has caught up with D5: the rise
    stopped).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Optional

from sshscale.model import Action, History, Pool, Settings, Vm, vm_count

__all__ = ["RULE", "Estimate", "Plan", "booting_vms", "estimate", "inverse_average", "noisy",
           "plan", "pool_changes", "scale_in_check", "spread", "step_level", "targets"]

RULE = "target"
SERVING = ("Running", "Migrating")
TAU_1, TAU_5, TAU_15 = 60.0, 300.0, 900.0  # time constants of the load averages (s)
VISIBLE_TAUS = 4.0  # a pool change older than 4 time constants no longer shows (e^-4 = 2 %)
IN_MARGIN = 4.0  # target_in keeps a quarter of the thresholds' band below the target
# Noise: the 1-minute average of a minute-to-minute noise of 27 % moves by 13 % around D5,
# D5 by 5 % around D15; a real change moves them in order and further.
STEP_RISE = 0.4  # D1 above D5 by more than 40 % of the load (at least one VM's target): a step
CONFIRM = 5.0  # a rise counts up to 5 times the slope the 5- and 15-minute averages show
TREND_LAG = (TAU_5 - TAU_1) / (TAU_15 - TAU_5)  # a steady trend: D1 - D5 = 0.4 x (D5 - D15)
STEP_AGE = TAU_1  # a step is taken to be at least a minute old (a run sees it a minute late)
FALL = 0.2  # D5 20 % below D15: clearly falling
STEADY_FALL = 0.06  # calm: D5 6 % below D15 ...
STEADY_SPREAD = 0.6  # ... with a spread of at most 60 % of that fall: falling steadily
NOISE_MARGIN = 0.15  # otherwise D15 must fit the VMs left 15 % below target_in (calm: 7.5 %)
RISING = 0.05  # D5 more than 5 % above D15: still rising ...
STOPPED = 0.2  # ... unless D1 is within 20 % of that rise from D5: the rise stopped
HEDGE = 0.75  # a scale-out adds 3/4 of the spread to the demand it sizes for ...
NOISY_HEDGE = 0.5  # ... half of it when the pool is noisy (the spread is then mostly noise)
NOISY_SPREAD = 0.2  # a scale-out (no step) the spread drove by more than 20 % of the demand, ...
TAKE_BACK = 1.5  # ... or one within 1.5 x stabilization of a scale-in, marks the pool noisy ...
NOISY_SECONDS = 86400.0  # ... for a day


@dataclass(frozen=True)
class Plan:
    """What the target policy wants: SCALE_OUT count VMs, SCALE_IN one, or NONE; and why;
    noisy: a scale-out that marks the pool noisy (recorded with it)."""

    action: Action
    count: int
    reason: str
    noisy: bool = False


@dataclass(frozen=True)
class Estimate:
    """The pool's demand in load units (per-CPU load units with per_cpu): from the 1-, 5- and
    15-minute averages, now (lag corrected) and `forecast` seconds ahead, the trend that
    took it there ("step", "rise", "unconfirmed rise", "fall" or "steady"), and the spread
    (how far D1 lies outside what a steady trend explains)."""

    one: float
    five: float
    now: float
    ahead: float
    fifteen: float = 0.0
    trend: str = "steady"
    spread: float = 0.0

    @property
    def high(self) -> float:
        """The highest estimate: what a scale-in must still carry."""
        return max(self.one, self.five, self.now, self.ahead)

    @property
    def wanted(self) -> float:
        """What a scale-out sizes for: the demand ahead, at least the 1-minute estimate."""
        return max(self.one, self.ahead)


def targets(settings: Settings) -> tuple[float, float]:
    """(target, target_in): the configured ones, else derived from the thresholds:
    target = threshold_out; target_in = target x (1 - (threshold_out - threshold_in) /
    (4 x threshold_out)), i.e. 2.5 for thresholds 3 and 1."""
    target = settings.target_out if settings.target_out is not None else settings.threshold_out
    if settings.target_in is not None:
        return target, settings.target_in
    band = (settings.threshold_out - settings.threshold_in) / settings.threshold_out
    return target, target * (1.0 - band / IN_MARGIN)


def noisy(history: Optional[History], now: datetime) -> bool:
    """Whether the pool is noisy: a scale-out marked it so less than NOISY_SECONDS ago."""
    mark = history.noisy if history is not None else None
    return mark is not None and now - mark < timedelta(seconds=NOISY_SECONDS)


def booting_vms(pool: Pool, settings: Settings, now: datetime) -> tuple[Vm, ...]:
    """Managed VMs outside the load balancer whose deploy job is still pending (listed
    Stopped, then Starting, with the job's ID), younger than job_timeout: capacity on the
    way, which the run that deployed them assigns when their jobs end. Without a pending job,
    or older, a VM is a leftover for the repairs, so none passes for capacity forever."""
    return tuple(v for v in pool.vms
                 if v.managed and not v.monitored and not v.in_lb and v.jobid
                 and v.state in ("Stopped", "Starting") and v.created is not None
                 and (now - v.created).total_seconds() < settings.job_timeout)


def pool_changes(serving: Sequence[Vm], history: Optional[History],
                 now: datetime) -> list[tuple[float, int]]:
    """(seconds ago, VMs joined (+1) or left (-1)) of the changes to the VMs in service that
    can be known: each managed member joined the recorded deploy duration after its creation
    (the ssh-scale:scale-out tag keeps it; an adopt of an old VM changes nothing there), and
    one VM left at the last scale-in. Newest first."""
    created = [v.created for v in serving if v.managed and v.created is not None]
    delay = history.deploy_seconds if history is not None and \
        history.deploy_seconds is not None else 0.0
    changes = [(max(0.0, (now - when).total_seconds() - delay), 1) for when in created]
    if history is not None and history.last_scale_in is not None:
        changes.append((max(0.0, (now - history.last_scale_in).total_seconds()), -1))
    return sorted(changes)


def inverse_average(count: int, changes: Sequence[tuple[float, int]], tau: float) -> float:
    """The weight a load average with time constant tau gives 1/N over the past, N being
    `count` VMs now and undoing each (seconds ago, change) going back; changes older than
    VISIBLE_TAUS time constants are ignored. Per-VM load / this = the pool's demand."""
    total, start, vms = 0.0, 0.0, count
    for age, change in changes:
        if age >= VISIBLE_TAUS * tau:
            break
        total += (math.exp(-start / tau) - math.exp(-age / tau)) / max(vms, 1)
        start, vms = age, vms - change
    return total + math.exp(-start / tau) / max(vms, 1)


def estimate(one: float, five: float, count: int, changes: Sequence[tuple[float, int]],
             forecast: float, fifteen: Optional[float] = None,
             target: float = 0.0) -> Estimate:
    """The demand from the per-VM 1-, 5- and 15-minute loads of `count` VMs in service (no
    15-minute load: taken as the 5-minute one, so that only a step counts as a rise); a step
    is a rise of D1 over D5 by more than STEP_RISE of max(D5, D15, target)."""
    d1 = one / inverse_average(count, changes, TAU_1)
    d5 = five / inverse_average(count, changes, TAU_5)
    d15 = d5 if fifteen is None else fifteen / inverse_average(count, changes, TAU_15)
    unexplained = spread(d1, d5, d15)
    if forecast <= 0:
        return Estimate(d1, d5, d1, d1, d15, spread=unexplained)
    fast, slow = (d1 - d5) / (TAU_5 - TAU_1), (d5 - d15) / (TAU_15 - TAU_5)
    step = d1 - d5 > STEP_RISE * max(d5, d15, target)
    if step or fast > 0:
        slope = max(0.0, min(fast, CONFIRM * slow))
        trend = "step" if step else "rise" if slope > 0 else "unconfirmed rise"
    else:
        slope, trend = fast, "fall" if fast < 0 else "steady"
    now = max(0.0, d1 + TAU_1 * slope)
    if step:
        now = max(now, step_level(d1, d5, d15))
    return Estimate(d1, d5, now, now + max(0.0, slope) * forecast, d15, trend, unexplained)


def spread(d1: float, d5: float, d15: float) -> float:
    """How far D1 lies outside what a steady trend explains: between D5 and D5 + TREND_LAG x
    (D5 - D15) (load units, >= 0)."""
    low, high = sorted((d5, d5 + TREND_LAG * (d5 - d15)))
    return max(low - d1, d1 - high, 0.0)


def _step_gaps(age: float) -> tuple[float, float]:
    """(D1 - D5, D5 - D15) per unit of a step `age` seconds old."""
    e1, e5, e15 = (math.exp(-age / tau) for tau in (TAU_1, TAU_5, TAU_15))
    return e5 - e1, e15 - e5


def step_level(d1: float, d5: float, d15: float) -> float:
    """The level a step explains: the step's age from the ratio of (D1 - D5) to (D5 - D15)
    (which falls as the step ages), at least STEP_AGE; its height from D1 - D5; and D1 plus
    what the 1-minute average has still to catch up."""
    rise, trail = d1 - d5, d5 - d15
    young, old = STEP_AGE, 3600.0
    first, second = _step_gaps(young)
    if trail > 0 and rise / trail < first / second:
        for _ in range(40):  # the ratio falls with the age: bisect
            mid = (young + old) / 2
            first, second = _step_gaps(mid)
            young, old = (mid, old) if first / second > rise / trail else (young, mid)
    return d1 + rise / _step_gaps(young)[0] * math.exp(-young / TAU_1)


def scale_in_check(demand: Estimate, vms_left: int, target_in: float,
                   calm: bool = False) -> Optional[tuple[bool, str]]:
    """None when the highest estimate does not fit `vms_left` VMs at target_in; else whether
    the fit is not noise, so that a scale-in may go ahead, and the estimate and margin that
    decided, in words (see the module docstring; calm: a pool that is not noisy)."""
    fits = target_in * vms_left
    if demand.high > fits:
        return None
    d1, d5, d15 = demand.one, demand.five, demand.fifteen
    head = f"fits {vm_count(vms_left)} at target_in {target_in:g}"
    if d15 - d5 >= FALL * d15 and d1 <= d5:
        return True, f"{head}, falling (5-min {d5:.2f} at least {FALL:.0%} below 15-min {d15:.2f})"
    if calm and d15 - d5 >= STEADY_FALL * d15 and d1 <= d5 and \
            demand.spread <= STEADY_SPREAD * (d15 - d5):
        return True, (f"{head}, falling steadily (5-min {d5:.2f} at least {STEADY_FALL:.0%} "
                      f"below 15-min {d15:.2f}, spread {demand.spread:.2f})")
    margin = (1.0 - NOISE_MARGIN * (0.5 if calm else 1.0)) * fits
    if d15 > margin:
        return False, f"{head}, but the 15-min {d15:.2f} is above the noise margin {margin:.2f}"
    if d5 > (1.0 + RISING) * d15 and abs(d1 - d5) > STOPPED * (d5 - d15):
        return False, f"{head}, but still rising (5-min {d5:.2f} above 15-min {d15:.2f})"
    return True, f"{head}, 15-min {d15:.2f} within the noise margin {margin:.2f}"


def plan(one: Optional[float], five: Optional[float], pool: Pool, settings: Settings,
         now: datetime, history: Optional[History], fifteen: Optional[float] = None) -> Plan:
    """The target policy's answer for this run, from the pool's per-VM 1-, 5- and 15-minute
    loads (None: unknown); see the module docstring. Bounds: managed VMs outside the pool
    count against max_size, as for the threshold policy."""
    calm = not noisy(history, now)
    target, target_in = targets(settings)
    if calm:
        target_in = (target + target_in) / 2
    serving = [v for v in pool.members if v.state in SERVING]
    booting = booting_vms(pool, settings, now)
    count, have = len(serving), pool.count + len(booting)
    room = settings.max_size - pool.committed
    where = f"{count} in service, {len(booting)} booting" + ("" if calm else ", noisy pool")
    if have < settings.min_size and room > 0:
        return Plan(Action.SCALE_OUT, min(settings.min_size - have, room),
                    f"pool has {vm_count(have)} ({where}), below min_size "
                    f"{settings.min_size}")
    if pool.count > settings.max_size:
        return Plan(Action.SCALE_IN, 1, f"pool has {vm_count(pool.count)}, above "
                    f"max_size {settings.max_size}")
    if one is None or five is None or count == 0:
        return Plan(Action.NONE, 0, "load unknown (fewer than "
                    f"{settings.min_reporting} host(s) answered): only min/max may act")
    demand = estimate(one, five, count, pool_changes(serving, history, now), settings.forecast,
                      fifteen, target)
    share = HEDGE if calm else NOISY_HEDGE
    hedge = share * demand.spread
    seen = (f"demand {demand.now:.2f} now, {demand.ahead:.2f} in {settings.forecast:g} s "
            f"({demand.trend}; 1-min load {one:.2f}) + {share:g} x spread {demand.spread:.2f}")
    wanted = _vms_for(demand.wanted + hedge, target, settings)
    since_in = _since_scale_in(history, now)
    guard, held_back = _guard(wanted, have, count, since_in, demand, target, settings), ""
    if guard is not None:
        allowed, name, words = guard
        if allowed <= have:
            return Plan(Action.NONE, 0, f"{seen}: {vm_count(wanted)} at target {target:g}, but the "
                        f"last scale-in was {since_in:.0f} s ago and {words} ({name}); {where}")
        wanted, held_back = allowed, f", not {wanted} ({name}: {words})"
    if wanted > have:
        if room <= 0:  # wanted <= max_size: VMs that are neither in service nor booting
            return Plan(Action.NONE, 0, f"{seen}: {vm_count(wanted)} at target {target:g}, "
                        f"but {pool.committed - have} other managed VM(s) outside the pool "
                        f"count against max_size {settings.max_size}")
        mark = _noise_mark(demand, since_in, target, settings)
        return Plan(Action.SCALE_OUT, min(wanted - have, room),
                    f"{seen}: {vm_count(wanted)} at target {target:g} ({where}){held_back}"
                    + (f"; the pool is noisy: {mark}" if mark else ""), noisy=mark is not None)
    steady = f"{seen}; {where}"
    if booting or count <= settings.min_size:
        return Plan(Action.NONE, 0, steady)
    newest = max((v.created for v in serving if v.managed and v.created), default=None)
    if newest is not None and (now - newest).total_seconds() <= settings.stabilization:
        return Plan(Action.NONE, 0, f"{steady}; no scale-in within {settings.stabilization:g} s "
                    "of the last scale-out")
    check = scale_in_check(demand, count - 1, target_in, calm)
    if check is None:
        return Plan(Action.NONE, 0, steady)
    go, why = check
    if not go:
        return Plan(Action.NONE, 0, f"{steady}; {why}")
    return Plan(Action.SCALE_IN, 1, f"demand {demand.high:.2f} (highest estimate) {why}"
                + ("" if calm else " (noisy pool)"))


def _guard(wanted: int, have: int, count: int, since_in: float, demand: Estimate, target: float,
           settings: Settings) -> Optional[tuple[int, str, str]]:
    """(VMs allowed, the guard's name, what it allows in words) when a scale-out to `wanted`
    VMs (no step) follows a scale-in closely: within `stabilization`, only the 5-minute
    average may ask for VMs (flip guard); within TAKE_BACK x `stabilization`, the scale-out
    takes the scale-in back: it restores the VM the scale-in removed (`count` + 1 VMs), and
    beyond that sizes for the demand without the spread's hedge (take-back guard). None when
    no guard holds the scale-out back."""
    if wanted <= have or demand.trend == "step" or \
            since_in > TAKE_BACK * settings.stabilization:
        return None
    if since_in <= settings.stabilization:
        held = _vms_for(demand.five, target, settings)
        allowed, name = held, "flip guard"
        words = f"the 5-min {demand.five:.2f} asks for {held}"
    else:
        bare = _vms_for(demand.wanted, target, settings)
        allowed, name = max(count + 1, bare), "take-back guard"
        words = (f"taking the scale-in back restores {vm_count(count + 1)}, "
                 f"{demand.wanted:.2f} without the hedge asks for {bare}")
    return (allowed, name, words) if allowed < wanted else None


def _noise_mark(demand: Estimate, since_in: float, target: float,
                settings: Settings) -> Optional[str]:
    """Why a scale-out marks the pool noisy: it takes back a recent scale-in, or the spread
    (not a step's) drove it; None when neither."""
    if since_in <= TAKE_BACK * settings.stabilization:
        return f"it takes back the scale-in of {since_in:.0f} s ago"
    if demand.trend != "step" and demand.spread > NOISY_SPREAD * max(demand.five, target):
        return f"a spread above {NOISY_SPREAD:.0%} of the demand"
    return None


def _vms_for(demand: float, target: float, settings: Settings) -> int:
    return max(settings.min_size, min(settings.max_size, math.ceil(demand / target - 1e-9)))


def _since_scale_in(history: Optional[History], now: datetime) -> float:
    """Seconds since the last scale-in when it was the last change (a scale-out now would be
    a flip), else infinity."""
    if history is None or history.last_scale_in is None or (
            history.last_scale_out is not None and history.last_scale_out > history.last_scale_in):
        return math.inf
    return (now - history.last_scale_in).total_seconds()
