"""The decision, pure: Measurement + Pool + History + Settings + now -> the one Decision of
this run, with the reason the log prints. No I/O, no clock, no logging: the live run and the
replay call it alike, and its tests are tables."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Optional

from sshscale import target
from sshscale.facts import DRAIN
from sshscale.fleet import (
    finish_replacement,
    is_replacement,
    pick_victim,
    plan_refresh,
    plan_replacement,
    protected,
    removable,
)
from sshscale.model import (
    BROKEN,
    IN_SERVICE,
    Action,
    Decision,
    History,
    Measurement,
    Pool,
    Settings,
)
from sshscale.schedule import effective_bounds, name_schedules, with_bounds

__all__ = ["aggregate_load", "decide"]

UNTIL_FORMAT = "%Y-%m-%d %H:%M:%S UTC"
GIVES_BACK = (Action.ADOPT, Action.READD)


def aggregate_load(measurement: Measurement, period: int, settings: Settings) -> Optional[float]:
    """The pool's load for a period, or None when fewer than min_reporting hosts answered."""
    values = [v for v in (h.value(period, settings.per_cpu) for h in measurement.hosts)
              if v is not None]
    if len(values) < settings.min_reporting or not values:
        return None
    return max(values) if settings.aggregate == "max" else sum(values) / len(values)


def decide(measurement: Measurement, pool: Pool, settings: Settings, now: datetime,
           history: Optional[History] = None) -> Decision:
    """The one change to make now, within the bounds in force at `now` (those of the open
    [schedule NAME] windows, else [scaling]'s); the reason names the schedule that set a
    bound it mentions."""
    bounds = effective_bounds(settings, now)
    decision = _decide_rules(measurement, pool, with_bounds(settings, bounds), now, history)
    reason = name_schedules(decision.reason, bounds)
    return decision if reason == decision.reason else replace(decision, reason=reason)


def _decide_rules(measurement: Measurement, pool: Pool, settings: Settings, now: datetime,
                  history: Optional[History] = None) -> Decision:
    """The one change to make now, first matching rule wins.

    Repairs of crash leftovers come first (those that give the pool a VM back before min_size,
    so that a destroy the cloud keeps refusing never blocks filling the pool), then
    min/max, then the replacement of an unhealthy member, then the load rules, which respect
    the cooldowns, and last the rolling refresh of an outdated member. Every deploy (a
    replacement's too) respects the failed-deploy backoff. ``history=None`` means the pool's
    history (the load balancer's tags, the event log) was not read: when an answer depends on
    it, the Decision says ``needs_history`` and the caller asks again with it. ``policy =
    target`` sizes the pool with sshscale.target instead of the load rules."""
    if settings.policy == "target":
        return _decide_target(measurement, pool, settings, now, history)
    repair = _plan_repair(pool, settings) or finish_replacement(pool)
    count = pool.count
    if repair is not None and (repair.action in GIVES_BACK or count >= settings.min_size):
        return repair
    if count < settings.min_size and pool.committed < settings.max_size:
        return _deploy(Decision(Action.SCALE_OUT, f"pool has {count} VMs, below min_size "
                                f"{settings.min_size}", count=1, rule="min_size"), history, now)
    if repair is not None:
        return repair
    if count > settings.max_size:
        return _scale_in(pool, settings, "max_size",
                         f"pool has {count} VMs, above max_size {settings.max_size}")
    replacement = plan_replacement(pool, settings)
    if replacement is not None:
        return _deploy(replacement, history, now)
    load_out = aggregate_load(measurement, settings.period_out, settings)
    load_in = aggregate_load(measurement, settings.period_in, settings)
    if load_out is None or load_in is None:
        return Decision(Action.NONE, "load unknown (fewer than "
                        f"{settings.min_reporting} host(s) answered): only min/max may act")
    if load_out > settings.threshold_out and pool.committed < settings.max_size:
        reason = (f"load {load_out:.2f} > threshold_out {settings.threshold_out:g} "
                  f"({_load_label(measurement, settings.period_out, settings)})")
        step = _step_size(load_out, pool, settings)
        held = _cooldown_hold(history, now, settings, Action.SCALE_OUT)
        if held is not None:
            return held
        return _deploy(Decision(Action.SCALE_OUT, reason, count=step, rule="threshold_out"),
                       history, now)
    if load_in < settings.threshold_in and count > settings.min_size:
        held = _cooldown_hold(history, now, settings, Action.SCALE_IN)
        if held is not None:
            return held
        return _scale_in(pool, settings, "threshold_in",
                         f"load {load_in:.2f} < threshold_in {settings.threshold_in:g} "
                         f"({_load_label(measurement, settings.period_in, settings)})")
    refresh = plan_refresh(pool, settings, load_out)
    if refresh is not None:
        return _deploy(refresh, history, now)
    return Decision(Action.NONE, _steady_reason(load_out, load_in, pool, settings))


def _decide_target(measurement: Measurement, pool: Pool, settings: Settings, now: datetime,
                   history: Optional[History]) -> Decision:
    """decide() for policy = target: the same repairs (except that a VM whose deploy is under
    way is capacity on the way: its run assigns it) and replacements, then target.plan(),
    whose estimate reads the pool's history (the scale times) on every run, and last the
    rolling refresh."""
    booting = target.booting_vms(pool, settings, now)
    have = pool.count + len(booting)
    repair = _plan_repair(Pool(tuple(v for v in pool.vms if v not in booting)), settings) \
        or finish_replacement(pool)
    if repair is not None and (repair.action in GIVES_BACK or have >= settings.min_size):
        return repair
    if history is None:
        return Decision(Action.NONE, "target policy: reading the pool's history",
                        needs_history=True, rule=target.RULE)
    within = settings.min_size <= have and pool.count <= settings.max_size
    replacement = plan_replacement(pool, settings) if within else None
    if replacement is not None:
        return _deploy(replacement, history, now)
    plan = target.plan(aggregate_load(measurement, 1, settings),
                       aggregate_load(measurement, 5, settings), pool, settings, now, history,
                       fifteen=aggregate_load(measurement, 15, settings))
    if plan.action is Action.SCALE_OUT:
        return _deploy(Decision(Action.SCALE_OUT, plan.reason, count=plan.count,
                                rule=target.RULE), history, now)
    if plan.action is Action.SCALE_IN:
        return _scale_in(pool, settings, target.RULE, plan.reason)
    refresh = None if booting else plan_refresh(
        pool, settings, aggregate_load(measurement, settings.period_out, settings))
    if refresh is not None:
        return _deploy(refresh, history, now)
    return repair or Decision(Action.NONE, plan.reason, rule=target.RULE)


def _plan_repair(pool: Pool, settings: Settings) -> Optional[Decision]:
    ours = [v for v in pool.vms if removable(v)]
    # A VM listed Stopped with a pending job is a deploy still under way (Stopped, Starting,
    # Running): it is adopted after its job, like a Starting one.
    building = [v for v in ours if v.state == "Stopped" and v.jobid]
    broken = [v for v in ours if v.state in BROKEN and v not in building]
    orphans = [v for v in ours if not v.in_lb and (v.state in IN_SERVICE or v in building)]
    if broken and not (orphans and pool.count < settings.min_size):
        vm = broken[0]
        return Decision(Action.DESTROY, f"repair: managed VM {vm.name} is {vm.state}",
                        vms=(vm,), count=1, rule="repair")
    if not orphans:
        return None
    vm = orphans[0]
    count = pool.count
    if vm.tag(DRAIN) is not None:
        if count < settings.min_size:
            return Decision(Action.READD, f"repair: drained VM {vm.name} re-added, pool has "
                            f"{count} VMs, below min_size {settings.min_size}",
                            vms=(vm,), count=1, rule="repair")
        return Decision(Action.DESTROY, f"repair: VM {vm.name} was taken out of the load "
                        "balancer but not destroyed", vms=(vm,), count=1, rule="repair")
    replacing = is_replacement(vm, pool)  # a replacement may take the pool to max_size + 1
    if count < settings.max_size or (replacing and count == settings.max_size):
        why = "it replaces a member" if replacing else \
            f"pool {count} < max_size {settings.max_size}"
        return Decision(Action.ADOPT, f"repair: managed VM {vm.name} ({vm.state}) is not in the "
                        f"load balancer; adopting it ({why})", vms=(vm,), count=1, rule="repair")
    return Decision(Action.DESTROY, f"repair: managed VM {vm.name} is not in the load "
                    f"balancer and the pool is full ({count} = max_size)",
                    vms=(vm,), count=1, rule="repair")


def _deploy(decision: Decision, history: Optional[History], now: datetime) -> Decision:
    """A scale-out, unless the failed-deploy backoff holds it (which needs the history)."""
    if history is None:
        return Decision(Action.NONE, f"{decision.action.value} considered: reading the pool's "
                        "history", needs_history=True, rule=decision.rule)
    backoff = history.backoff
    if backoff is None or now >= backoff.until:
        return decision
    return Decision(Action.NONE, f"{decision.action.value} ({decision.reason}) held back by "
                    f"the failed-deploy backoff ({backoff.failures} failed in a row) until "
                    f"{_utc(backoff.until)}", rule="backoff", held_until=backoff.until)


def _scale_in(pool: Pool, settings: Settings, rule: str, reason: str) -> Decision:
    candidates = [v for v in pool.in_service if not v.monitored and not protected(v)
                  and (v.managed or not settings.protect_unmanaged)]
    if not settings.protect_unmanaged and settings.hosts and not any(
            v.monitored for v in pool.members):
        return Decision(Action.NONE, f"{reason}, but no member is recognised as the monitored "
                        "VM and protect_unmanaged = no: not scaling in", rule=rule)
    if not candidates:
        kind = "managed " if settings.protect_unmanaged else ""
        spared = " (the others are protected)" if any(map(protected, pool.in_service)) else ""
        return Decision(Action.NONE, f"{reason}, but no {kind}VM other than the monitored one "
                        f"may be removed{spared}", rule=rule)
    victim = pick_victim(candidates, settings.termination_policy)
    return Decision(Action.SCALE_IN, reason, vms=(victim,), count=1, rule=rule)


def _step_size(load: float, pool: Pool, settings: Settings) -> int:
    count = pool.count
    if settings.step_out != "proportional" or count == 0:
        return 1
    wanted = math.ceil(count * load / settings.threshold_out) - count
    return max(1, min(wanted, settings.max_size - pool.committed))


def _cooldown_hold(history: Optional[History], now: datetime, settings: Settings,
                   action: Action) -> Optional[Decision]:
    if action is Action.SCALE_OUT:
        cooldown, name = settings.cooldown_out, "scale-out cooldown"
    else:
        cooldown, name = settings.cooldown_in, "scale-in cooldown"
    if cooldown <= 0:
        return None
    if history is None:
        return Decision(Action.NONE, f"{action.value} considered: reading the pool's history",
                        needs_history=True, rule="cooldown")
    if action is Action.SCALE_OUT:
        last = history.last_scale_out
    else:
        last = max((t for t in (history.last_scale_in, history.last_scale_out) if t),
                   default=None)
    if last is None or now >= last + timedelta(seconds=cooldown):
        return None
    until = last + timedelta(seconds=cooldown)
    return Decision(Action.NONE, f"{action.value} held back by the {name} ({cooldown:g} s) "
                    f"until {_utc(until)}",
                    rule="cooldown", held_until=until)


def _utc(when: datetime) -> str:
    return f"{when.astimezone(timezone.utc):{UNTIL_FORMAT}}"


def _load_label(measurement: Measurement, period: int, settings: Settings) -> str:
    answered = len(measurement.answered)
    per_cpu = " per CPU" if settings.per_cpu else ""
    how = f"{settings.aggregate} of {answered} hosts" if answered > 1 else "1 host"
    return f"{period}-min{per_cpu}, {how}"


def _steady_reason(load_out: float, load_in: float, pool: Pool, settings: Settings) -> str:
    count = pool.count
    if load_out > settings.threshold_out:
        outside = pool.committed - count
        if outside and count < settings.max_size:
            return (f"load {load_out:.2f} is high but {outside} managed VM(s) outside the pool "
                    f"count against max_size {settings.max_size}")
        return f"load {load_out:.2f} is high but the pool is at max_size {settings.max_size}"
    if load_in < settings.threshold_in:
        return f"load {load_in:.2f} is low but the pool is at min_size {settings.min_size}"
    return (f"load between thresholds ({settings.threshold_in:g} <= {load_in:.2f}, "
            f"{load_out:.2f} <= {settings.threshold_out:g}); pool has {count} VMs")
