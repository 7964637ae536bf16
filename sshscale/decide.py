"""The decision, pure: Measurement + Pool + History + Settings + now -> the one Decision of
this run, with the reason the log prints. No I/O, no clock, no logging: the live run and the
replay call it alike, and its tests are tables."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Optional

from sshscale import target
from sshscale.facts import (
    BUDGET,
    DRAIN,
    LAUNCH_WINDOW,
    STUCK,
    parse_time_value,
    time_value,
)
from sshscale.fleet import (
    finish_replacement,
    is_replacement,
    parse_limit,
    pick_victim,
    plan_refresh,
    plan_replacement,
    protected,
    removable,
    repair_backoff,
)
from sshscale.model import (
    BROKEN,
    IN_SERVICE,
    TRANSITIONAL,
    Action,
    Decision,
    History,
    Measurement,
    Notice,
    Pool,
    Settings,
    Vm,
    shown_time,
    vm_count,
)
from sshscale.schedule import effective_bounds, name_schedules, with_bounds

__all__ = ["aggregate_load", "decide", "quorum_shortfall", "scale_in_load"]

GIVES_BACK = (Action.ADOPT, Action.READD)


def aggregate_load(measurement: Measurement, period: int, settings: Settings) -> Optional[float]:
    """The pool's load for a period, or None when fewer than min_reporting hosts answered."""
    values = _answers(measurement, period, settings)
    if len(values) < settings.min_reporting or not values:
        return None
    return _combine(values, settings)


def scale_in_load(measurement: Measurement, period: int, settings: Settings) -> Optional[float]:
    """The load a scale-in is judged by: a host that gave no load (silent, or garbage) counts
    as busy as the busiest one that did; None when fewer than min_reporting answered."""
    values = _answers(measurement, period, settings)
    if len(values) < settings.min_reporting or not values:
        return None
    silent = len(measurement.hosts) - len(values)
    return _combine(values + [max(values)] * silent, settings)


def quorum_shortfall(measurement: Measurement, settings: Settings) -> Optional[str]:
    """Why too few hosts answered for a scale-in ([monitoring] quorum), or None."""
    total, answered = len(measurement.hosts), len(measurement.answered)
    amount, percent = parse_limit(settings.quorum)
    needed = math.ceil(total * amount / 100 - 1e-9) if percent else min(int(amount), total)
    if answered >= needed:
        return None
    return f"only {answered} of {total} hosts answered (quorum {settings.quorum})"


def _answers(measurement: Measurement, period: int, settings: Settings) -> list[float]:
    return [v for v in (h.value(period, settings.per_cpu) for h in measurement.hosts)
            if v is not None]


def _combine(values: list[float], settings: Settings) -> float:
    return max(values) if settings.aggregate == "max" else sum(values) / len(values)


def decide(measurement: Measurement, pool: Pool, settings: Settings, now: datetime,
           history: Optional[History] = None) -> Decision:
    """The one change to make now, within the bounds in force at `now` (those of the open
    [schedule NAME] windows, else [scaling]'s); the reason names the schedule that set a
    bound it mentions."""
    now = now.astimezone(settings.zone)  # so that the held times the reasons show are local
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
    repair = _plan_repair(pool, settings, now) or finish_replacement(pool, now)
    count = pool.count
    if repair is not None and (repair.action in GIVES_BACK or count >= settings.min_size):
        return repair
    if count < settings.min_size and pool.committed < settings.max_size:
        return _deploy(Decision(Action.SCALE_OUT, f"pool has {vm_count(count)}, below min_size "
                                f"{settings.min_size}", count=1, rule="min_size"), history, now,
                       settings)
    if repair is not None:
        return repair
    if count > settings.max_size:
        return _scale_in(pool, settings, "max_size",
                         f"pool has {vm_count(count)}, above max_size {settings.max_size}")
    replacement = plan_replacement(pool, settings)
    if replacement is not None and replacement.action is Action.REPLACE:
        return _deploy(replacement, history, now, settings)
    load_out = aggregate_load(measurement, settings.period_out, settings)
    load_in = scale_in_load(measurement, settings.period_in, settings)
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
                       history, now, settings)
    if load_in < settings.threshold_in and count > settings.min_size:
        reason = (f"load {load_in:.2f} < threshold_in {settings.threshold_in:g} "
                  f"({_load_label(measurement, settings.period_in, settings, silent=True)})")
        shortfall = quorum_shortfall(measurement, settings)
        if shortfall is not None:
            return Decision(Action.NONE, f"{reason}, but {shortfall}: not scaling in",
                            rule="quorum")
        held = _cooldown_hold(history, now, settings, Action.SCALE_IN)
        if held is not None:
            return held
        return _scale_in(pool, settings, "threshold_in", reason)
    refresh = plan_refresh(pool, settings, load_out, now, history)
    if refresh is not None:
        return _deploy(refresh, history, now, settings)
    return replacement or Decision(Action.NONE,
                                   _steady_reason(load_out, load_in, pool, settings))


def _decide_target(measurement: Measurement, pool: Pool, settings: Settings, now: datetime,
                   history: Optional[History]) -> Decision:
    """decide() for policy = target: the same repairs (except that a VM whose deploy is under
    way is capacity on the way: its run assigns it) and replacements, then target.plan(),
    whose estimate reads the pool's history (the scale times) on every run, and last the
    rolling refresh. A scale-in needs the quorum of answering hosts, and must still be
    planned when every silent host counts as busy as the busiest that answered."""
    booting = target.booting_vms(pool, settings, now)
    have = pool.count + len(booting)
    repair = _plan_repair(Pool(tuple(v for v in pool.vms if v not in booting)), settings,
                          now) or finish_replacement(pool, now)
    if repair is not None and (repair.action in GIVES_BACK or have >= settings.min_size):
        return repair
    if history is None:
        return Decision(Action.NONE, "target policy: reading the pool's history",
                        needs_history=True, rule=target.RULE)
    within = settings.min_size <= have and pool.count <= settings.max_size
    replacement = plan_replacement(pool, settings) if within else None
    if replacement is not None and replacement.action is Action.REPLACE:
        return _deploy(replacement, history, now, settings)
    plan = target.plan(aggregate_load(measurement, 1, settings),
                       aggregate_load(measurement, 5, settings), pool, settings, now, history,
                       fifteen=aggregate_load(measurement, 15, settings))
    if plan.action is Action.SCALE_OUT:
        return _deploy(Decision(Action.SCALE_OUT, plan.reason, count=plan.count,
                                rule=target.RULE, noisy=plan.noisy), history, now, settings)
    if plan.action is Action.SCALE_IN:
        return _target_scale_in(measurement, pool, settings, now, history, plan.reason)
    refresh = None if booting else plan_refresh(
        pool, settings, aggregate_load(measurement, settings.period_out, settings), now, history)
    if refresh is not None:
        return _deploy(refresh, history, now, settings)
    return repair or replacement or Decision(Action.NONE, plan.reason, rule=target.RULE)


def _target_scale_in(measurement: Measurement, pool: Pool, settings: Settings, now: datetime,
                     history: Optional[History], reason: str) -> Decision:
    shortfall = quorum_shortfall(measurement, settings)
    if shortfall is not None:
        return Decision(Action.NONE, f"{reason}, but {shortfall}: not scaling in",
                        rule="quorum")
    if len(measurement.answered) < len(measurement.hosts):
        busy = target.plan(scale_in_load(measurement, 1, settings),
                           scale_in_load(measurement, 5, settings), pool, settings, now,
                           history, fifteen=scale_in_load(measurement, 15, settings))
        if busy.action is not Action.SCALE_IN:
            return Decision(Action.NONE, f"{busy.reason} (silent hosts counted as busy as the "
                            "busiest that answered)", rule=target.RULE)
    return _scale_in(pool, settings, target.RULE, reason)


def _repair_held(vm: Vm, now: datetime) -> bool:
    """A repair of the VM the cloud refused recently still backs off (its ssh-scale:repair)."""
    backoff = repair_backoff(vm)
    return backoff is not None and now < backoff.until


def _stuck(vm: Vm, settings: Settings, now: datetime) -> bool:
    """In a transitional state without a job for longer than job_timeout: broken."""
    since = parse_time_value(vm.tag(STUCK))
    return vm.state in TRANSITIONAL and not vm.jobid and since is not None and \
        (now - since).total_seconds() > settings.job_timeout


def _plan_repair(pool: Pool, settings: Settings, now: datetime) -> Optional[Decision]:
    """The next repair of a crash leftover; VMs whose repair backs off are left alone (the
    other rules act meanwhile)."""
    ours = [v for v in pool.vms if removable(v) and not _repair_held(v, now)]
    # A VM listed Stopped with a pending job is a deploy still under way (Stopped, Starting,
    # Running): it is adopted after its job, like a Starting one.
    building = [v for v in ours if v.state == "Stopped" and v.jobid]
    broken = [v for v in ours if (v.state in BROKEN and v not in building)
              or _stuck(v, settings, now)]
    orphans = [v for v in ours if not v.in_lb and v not in broken
               and (v.state in IN_SERVICE or v in building)]
    if broken and not (orphans and pool.count < settings.min_size):
        vm = broken[0]
        stuck = f" without a job for more than {settings.job_timeout:g} s" \
            if _stuck(vm, settings, now) else ""
        return Decision(Action.DESTROY, f"repair: managed VM {vm.name} is {vm.state}{stuck}",
                        vms=(vm,), count=1, rule="repair")
    if not orphans:
        return None
    vm = orphans[0]
    count = pool.count
    if vm.tag(DRAIN) is not None:
        if count < settings.min_size:
            return Decision(Action.READD, f"repair: drained VM {vm.name} re-added, pool has "
                            f"{vm_count(count)}, below min_size {settings.min_size}",
                            vms=(vm,), count=1, rule="repair")
        return Decision(Action.DESTROY, f"repair: VM {vm.name} was taken out of the load "
                        "balancer but not destroyed", vms=(vm,), count=1, rule="repair")
    if is_replacement(vm, pool):  # a replacement may take the pool to max_size + 1
        if count <= settings.max_size:
            return Decision(Action.ADOPT, f"repair: managed VM {vm.name} ({vm.state}) is not in "
                            "the load balancer; adopting it (it replaces a member)",
                            vms=(vm,), count=1, rule="repair")
    elif count < settings.max_size:
        # Every leftover the pool has room for joins at once (a scale-out whose run died, or
        # whose assign failed, leaves several).
        plain = [v for v in orphans if v.tag(DRAIN) is None and not is_replacement(v, pool)]
        taken = tuple(plain[:settings.max_size - count])
        what = f"VM {vm.name} ({vm.state}) is not in the load balancer; adopting it" \
            if len(taken) == 1 else (f"VMs {', '.join(v.name for v in taken)} are not in the "
                                     "load balancer; adopting them")
        return Decision(Action.ADOPT, f"repair: managed {what} (pool {count} < max_size "
                        f"{settings.max_size})", vms=taken, count=len(taken), rule="repair")
    return Decision(Action.DESTROY, f"repair: managed VM {vm.name} is not in the load "
                    f"balancer and the pool is full ({count} = max_size)",
                    vms=(vm,), count=1, rule="repair")


def _deploy(decision: Decision, history: Optional[History], now: datetime,
            settings: Settings) -> Decision:
    """A scale-out or replacement, unless the failed-deploy backoff or the launch budget holds
    it (both need the history); a scale-out of several VMs shrinks to the budget left."""
    if decision.action is Action.NONE:
        return decision
    if history is None:
        return Decision(Action.NONE, f"{decision.action.value} considered: reading the pool's "
                        "history", needs_history=True, rule=decision.rule)
    backoff = history.backoff
    if backoff is not None and now < backoff.until:
        return Decision(Action.NONE, f"{decision.action.value} ({decision.reason}) held back "
                        f"by the failed-deploy backoff ({backoff.failures} failed in a row) "
                        f"until {_shown(backoff.until, now)}", rule="backoff",
                        held_until=backoff.until)
    recent = sorted(when for _, when in history.launches if when > now - LAUNCH_WINDOW)
    left = settings.budget() - len(recent)
    if left >= decision.count:
        return decision
    if left > 0:
        return replace(decision, count=left, reason=f"{decision.reason}; {left} of "
                       f"{decision.count} within the launch budget")
    until = recent[0] + LAUNCH_WINDOW
    text = (f"{decision.action.value} ({decision.reason}) held back by the launch budget: "
            f"{vm_count(len(recent))} created in the last hour, at most {settings.budget()} "
            f"([scalling] launch_budget); the next one may start at {_shown(until, now)}")
    notice = None if history.budget_notice is not None else \
        Notice(BUDGET, time_value(now), text)
    return Decision(Action.NONE, text, rule="budget", held_until=until, notice=notice)


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
                    f"until {_shown(until, now)}",
                    rule="cooldown", held_until=until)


def _shown(when: datetime, now: datetime) -> str:
    """A time as the reason shows it: in now's zone (the monitor's: decide() puts it there)."""
    return shown_time(when, now.tzinfo or timezone.utc)


def _load_label(measurement: Measurement, period: int, settings: Settings,
                silent: bool = False) -> str:
    """"1-min, mean of 3 hosts": which load decided; for a scale-in (silent) also how many of
    the measured hosts answered ("1 of 4 answered; silent ones as busy as the busiest")."""
    answered, total = len(measurement.answered), len(measurement.hosts)
    per_cpu = " per CPU" if settings.per_cpu else ""
    how = f"{settings.aggregate} of {answered} hosts" if answered > 1 else "1 host"
    if silent and answered < total:
        how = (f"{settings.aggregate} of {total} hosts, {answered} answered; the silent ones "
               "counted as busy as the busiest")
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
            f"{load_out:.2f} <= {settings.threshold_out:g}); pool has {vm_count(count)}")
