"""The target policy (`[scalling] policy = target`), pure: size the pool so that the demand it
must absorb, estimated from the load averages, stays at a target load per VM.

decide() calls plan() after the repairs of crash leftovers and turns the Plan into a Decision
(the failed-deploy backoff, the scale-in victim); the live run and the replay call it alike.

The estimate, each run:
  * demand = load average x VMs in service, where "VMs in service" is the load average's own
    weighting of 1/N over the recent past: a VM that joined 30 s ago has only moved the
    1-minute average 40 % of the way to the new per-VM share (joins: the creation of each
    member plus the deploy time seen for the newest; leaves: the last scale-in);
  * trend: on a steady ramp the 1-minute average trails the demand by 60 s of slope and the
    5-minute one by 300 s, so slope = (D1 - D5) / 240 s and demand now = D1 + 60 s x slope;
  * wanted VMs = ceil(demand `forecast` seconds ahead / target), within min/max; VMs still
    booting (managed, outside the load balancer, deploy job pending) count as capacity on the
    way, so several VMs may be added in one run and none twice;
  * scale in one VM only when the highest of the estimates (now, ahead, 1- and 5-minute)
    fits one VM fewer at target_in, no VM is booting, and the newest VM is older than
    `stabilization` seconds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Optional

from sshscale.model import Action, History, Pool, Settings, Vm, vm_count

__all__ = ["RULE", "Estimate", "Plan", "booting_vms", "estimate", "inverse_average", "plan",
           "pool_changes", "targets"]

RULE = "target"
SERVING = ("Running", "Migrating")
TAU_1, TAU_5 = 60.0, 300.0  # time constants of the 1- and 5-minute load averages (s)
VISIBLE_TAUS = 4.0  # a pool change older than 4 time constants no longer shows (e^-4 = 2 %)
IN_MARGIN = 4.0  # target_in keeps a quarter of the thresholds' band below the target


@dataclass(frozen=True)
class Plan:
    """What the target policy wants: SCALE_OUT count VMs, SCALE_IN one, or NONE; and why."""

    action: Action
    count: int
    reason: str


@dataclass(frozen=True)
class Estimate:
    """The pool's demand in load units (per-CPU load units with per_cpu): from the 1- and
    5-minute averages, now (lag corrected) and `forecast` seconds ahead."""

    one: float
    five: float
    now: float
    ahead: float

    @property
    def high(self) -> float:
        """The highest estimate: what a scale-in must still carry."""
        return max(self.one, self.five, self.now, self.ahead)


def targets(settings: Settings) -> tuple[float, float]:
    """(target, target_in): the configured ones, else derived from the thresholds:
    target = threshold_out; target_in = target x (1 - (threshold_out - threshold_in) /
    (4 x threshold_out)), i.e. 2.5 for thresholds 3 and 1."""
    target = settings.target_out if settings.target_out is not None else settings.threshold_out
    if settings.target_in is not None:
        return target, settings.target_in
    band = (settings.threshold_out - settings.threshold_in) / settings.threshold_out
    return target, target * (1.0 - band / IN_MARGIN)


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
             forecast: float) -> Estimate:
    """The demand from the per-VM 1- and 5-minute loads of `count` VMs in service."""
    d1 = one / inverse_average(count, changes, TAU_1)
    d5 = five / inverse_average(count, changes, TAU_5)
    if forecast <= 0:
        return Estimate(d1, d5, d1, d1)
    slope = (d1 - d5) / (TAU_5 - TAU_1)
    now = max(0.0, d1 + TAU_1 * slope)
    return Estimate(d1, d5, now, now + max(0.0, slope) * forecast)


def plan(one: Optional[float], five: Optional[float], pool: Pool, settings: Settings,
         now: datetime, history: Optional[History]) -> Plan:
    """The target policy's answer for this run, from the pool's per-VM 1- and 5-minute loads
    (None: unknown); see the module docstring. Bounds: managed VMs outside the pool count
    against max_size, as for the threshold policy."""
    target, target_in = targets(settings)
    serving = [v for v in pool.members if v.state in SERVING]
    booting = booting_vms(pool, settings, now)
    count, have = len(serving), pool.count + len(booting)
    room = settings.max_size - pool.committed
    where = f"{count} in service, {len(booting)} booting"
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
    demand = estimate(one, five, count, pool_changes(serving, history, now), settings.forecast)
    wanted = max(settings.min_size, min(settings.max_size,
                                        math.ceil(demand.ahead / target - 1e-9)))
    seen = (f"demand {demand.now:.2f} now, {demand.ahead:.2f} in {settings.forecast:g} s "
            f"(1-min load {one:.2f})")
    if wanted > have:
        if room <= 0:  # wanted <= max_size: VMs that are neither in service nor booting
            return Plan(Action.NONE, 0, f"{seen}: {vm_count(wanted)} at target {target:g}, "
                        f"but {pool.committed - have} other managed VM(s) outside the pool "
                        f"count against max_size {settings.max_size}")
        return Plan(Action.SCALE_OUT, min(wanted - have, room),
                    f"{seen}: {vm_count(wanted)} at target {target:g} ({where})")
    steady = f"{seen}; {where}"
    if booting or count <= settings.min_size:
        return Plan(Action.NONE, 0, steady)
    newest = max((v.created for v in serving if v.managed and v.created), default=None)
    if newest is not None and (now - newest).total_seconds() <= settings.stabilization:
        return Plan(Action.NONE, 0, f"{steady}; no scale-in within {settings.stabilization:g} s "
                    "of the last scale-out")
    if demand.high <= target_in * (count - 1):
        return Plan(Action.SCALE_IN, 1, f"demand {demand.high:.2f} (highest estimate) fits "
                    f"{vm_count(count - 1)} at target_in {target_in:g}")
    return Plan(Action.NONE, 0, steady)
