"""Peer autoscalers for the replay comparison, written from their public documentation: what a
user would run instead of ssh-scale. Bench only, not part of the product.

Both replay on the same engine as ssh-scale's policies (sshscale.replay.simulate: the kernel's
load averages, the boot time, the drain) and read the same measurement: each VM's 1-minute
load average (`monitor_members`), standing in for Kubernetes' CPU metric and for the
hypervisor's CPU counter. Neither holds a lock; both see the VMs still booting.

Hpa: Kubernetes' HorizontalPodAutoscaler, autoscaling/v2 with the default behaviour
(kubernetes.io "Horizontal Pod Autoscaling", algorithm details and the default behaviour):
  * every sync (15 s), desired = ceil(ready pods x mean metric / target), unchanged while the
    ratio mean metric / target is within the tolerance (10 %);
  * pods not yet ready (VMs booting, and VMs in service for less than METRIC_SETTLE seconds,
    whose 1-minute average has not caught up yet: Kubernetes' CPU initialization period) are
    left out of the ratio, and count as 0 for a scale-up: a recomputed ratio below 1 or within
    the tolerance then means no change;
  * scale-up at once (stabilization window 0, at most double or +4 pods per 15 s), scale-down
    to the highest recommendation of the last 300 s; the unready pods and then the newest
    go first.
CloudStackAutoScale: an AutoScale VM group of CloudStack 4.18+ with the virtual router
(docs.cloudstack.apache.org "Configuring AutoScale with using CloudStack Virtual Router"; the
createAutoScalePolicy API; AutoScaleManagerImpl):
  * every `interval` (30 s) the group's counter (here the VMs' mean 1-minute load) is
    sampled; a scale-up policy acts when the average over its `duration` (120 s) is above
    threshold_out, a scale-down one when it is below threshold_in: +1 or -1 VM (the newest),
    then the policy waits its `quiettime` (300 s);
  * a scale-up deploys, starts and assigns the VM before the group is evaluated again (the
    group is in state SCALING), and statistics older than a scale action are not used (the
    manager's inactive records), so a policy decides on a full `duration` of statistics, after
    each change as after the group's first evaluation (the conditions must hold "for the
    entire duration").
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Optional

from sshscale.model import Action, Decision, History, Measurement, Pool, Settings, Vm

__all__ = ["HPA_TARGETS", "METRIC_SETTLE", "CloudStackAutoScale", "Hpa",
           "peer_settings"]

HPA_TARGETS = (2.0, 2.5, 3.0)  # the HPA table's targets; the curve adds others
HPA_SYNC_SECONDS = 15
HPA_TOLERANCE = 0.1
HPA_DOWN_WINDOW = 300.0
HPA_UP_PODS, HPA_UP_PERCENT = 4, 100
METRIC_SETTLE = 180.0  # 3 min after a VM joined, its 1-minute average is within 5 % of its share


def peer_settings(settings: Settings) -> Settings:
    """Settings a peer replays with: every VM in service measured once its load average has
    settled, no schedules."""
    return replace(settings, monitor_members=True, boot_grace=METRIC_SETTLE, schedules=())


def _booting(pool: Pool) -> list[Vm]:
    """VMs deployed but not yet in service (as the replay lists them to a lockless run)."""
    return [v for v in pool.vms if v.managed and not v.in_lb and v.jobid]


def _newest_first(vms: Sequence[Vm]) -> list[Vm]:
    return sorted(vms, key=lambda v: (v.created is None, v.created), reverse=True)


def _victims(pool: Pool, count: int) -> tuple[Vm, ...]:
    """The VMs a scale-in of `count` removes: VMs still booting, then the newest in service;
    never the unmanaged monitored VM."""
    booting = _newest_first(_booting(pool))
    serving = _newest_first([v for v in pool.in_service if v.managed])
    return tuple((booting + serving)[:count])


def _change(pool: Pool, settings: Settings, wanted: int, reason: str, rule: str) -> Decision:
    """The Decision that takes the pool (in service and booting) to `wanted` VMs."""
    have = pool.count + len(_booting(pool))
    if wanted > have:
        count = min(wanted - have, settings.max_size - pool.committed)
        if count > 0:
            return Decision(Action.SCALE_OUT, reason, count=count, rule=rule)
    elif wanted < have:
        victims = _victims(pool, have - wanted)
        if victims:
            return Decision(Action.SCALE_IN, reason, vms=victims, count=len(victims), rule=rule)
    return Decision(Action.NONE, reason, rule=rule)


@dataclass
class Hpa:
    """Kubernetes' HorizontalPodAutoscaler with the autoscaling/v2 defaults at a target load
    per VM (see the module docstring)."""

    target: float
    run_seconds: int = HPA_SYNC_SECONDS
    recommendations: deque[tuple[datetime, int]] = field(default_factory=deque)

    @property
    def name(self) -> str:
        return f"HPA {self.target:g}"

    def decide(self, measurement: Measurement, pool: Pool, settings: Settings, now: datetime,
               history: Optional[History]) -> Decision:
        current = pool.count + len(_booting(pool))
        desired = self.desired(measurement, current)
        if desired is None:
            return Decision(Action.NONE, "HPA: no metric", rule="hpa")
        window = now - timedelta(seconds=HPA_DOWN_WINDOW)
        while self.recommendations and self.recommendations[0][0] <= window:
            self.recommendations.popleft()
        highest = max([desired] + [r for _, r in self.recommendations])
        self.recommendations.append((now, desired))
        wanted = current
        if wanted < desired:  # scale-up stabilization window 0: the recommendation itself
            wanted = min(desired, max(current * (100 + HPA_UP_PERCENT) // 100,
                                      current + HPA_UP_PODS))
        wanted = max(settings.min_size, min(settings.max_size, wanted, highest))
        return _change(pool, settings, wanted, f"HPA target {self.target:g}: desired {desired}, "
                       f"highest of 300 s {highest}, {current} pods", "hpa")

    def desired(self, measurement: Measurement, current: int) -> Optional[int]:
        """The replica calculator: ceil(ready pods x ratio) within the tolerance, recounted
        with the pods not yet ready at 0 before a scale-up."""
        metrics = [h.loads[0] for h in measurement.hosts if h.loads is not None]
        if not metrics:
            return None
        unready = current - len(metrics)
        ratio = sum(metrics) / len(metrics) / self.target
        if not (unready and ratio > 1.0):
            return current if abs(1.0 - ratio) <= HPA_TOLERANCE else math.ceil(ratio * len(metrics))
        recount = sum(metrics) / current / self.target
        if recount <= 1.0 + HPA_TOLERANCE:  # back within the tolerance, or reversed
            return current
        return max(current, math.ceil(recount * current))


@dataclass
class CloudStackAutoScale:
    """A CloudStack 4.18+ AutoScale VM group: a scale-up and a scale-down policy on the VMs'
    mean load (see the module docstring)."""

    interval: int = 30
    duration: float = 120.0
    quiettime: float = 300.0
    name: str = "CloudStack AutoScale"
    samples: list[tuple[datetime, float]] = field(default_factory=list)
    last_change: Optional[datetime] = None  # or the first evaluation: statistics start there
    quiet_until: dict[Action, datetime] = field(default_factory=dict)

    @property
    def run_seconds(self) -> int:
        return self.interval

    def decide(self, measurement: Measurement, pool: Pool, settings: Settings, now: datetime,
               history: Optional[History]) -> Decision:
        if _booting(pool):
            return Decision(Action.NONE, "group SCALING: a VM is deploying", rule="cloudstack")
        if pool.count < settings.min_size or pool.count > settings.max_size:
            wanted = max(settings.min_size, min(settings.max_size, pool.count))
            return self.act(pool, settings, now, wanted, "min/max members")
        loads = [h.loads[0] for h in measurement.hosts if h.loads is not None]
        if loads:
            self.samples.append((now, sum(loads) / len(loads)))
        cutoff = now - timedelta(seconds=self.duration)
        self.last_change = self.last_change or now
        if self.last_change > cutoff:
            return Decision(Action.NONE, "statistics since the last change cover less than "
                            "the duration", rule="cloudstack")
        self.samples = [(t, v) for t, v in self.samples if t > cutoff]
        if not self.samples:
            return Decision(Action.NONE, "no statistics", rule="cloudstack")
        average = sum(v for _, v in self.samples) / len(self.samples)
        for action, holds, wanted in (
                (Action.SCALE_OUT, average > settings.threshold_out, pool.count + 1),
                (Action.SCALE_IN, average < settings.threshold_in, pool.count - 1)):
            if holds and now >= self.quiet_until.get(action, now):
                self.quiet_until[action] = now + timedelta(seconds=self.quiettime)
                return self.act(pool, settings, now, wanted, f"average {average:.2f} over "
                                f"{self.duration:g} s")
        return Decision(Action.NONE, f"average {average:.2f}", rule="cloudstack")

    def act(self, pool: Pool, settings: Settings, now: datetime, wanted: int,
            reason: str) -> Decision:
        wanted = max(settings.min_size, min(settings.max_size, wanted))
        decision = _change(pool, settings, wanted, reason, "cloudstack")
        if decision.action is not Action.NONE:
            self.last_change = now
            self.samples = []
        return decision

