"""Fleet rules, pure: protected and outdated members, which member a scale-in removes
([scalling] termination_policy), the health checks' verdicts and their counts, and when to
replace a member (unhealthy, or outdated with refresh = yes) or finish a replacement that a
dead run left half done. No I/O: decide() and the views call it; the live run writes the
counts it computes (health.py)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Optional

from sshscale.facts import PROTECT, REPLACE, UNHEALTHY, parse_count
from sshscale.model import Action, Check, Decision, Measurement, Pool, Settings, Vm

__all__ = ["HEALTH_CHECKS", "TERMINATION_POLICIES", "Health", "assess", "checked_members",
           "count_changes", "failures", "finish_replacement", "health_lines", "is_replacement",
           "outdated", "parse_limit", "pick_victim", "plan_refresh", "plan_replacement",
           "protected", "removable", "replacement_of", "ssh_checks", "vm_notes", "with_checks",
           "with_counts"]

HEALTH_CHECKS = ("none", "ssh", "http")
TERMINATION_POLICIES = ("newest", "oldest", "outdated-first")
LAUNCH_IDS = ("templateid", "serviceofferingid")
_LIMIT = re.compile(r"(\d+(?:\.\d+)?)(%?)")
_EARLIEST = datetime.min.replace(tzinfo=timezone.utc)


# --- members ----------------------------------------------------------------------------------


def protected(vm: Vm) -> bool:
    """The user tagged the VM ssh-scale:protect=true: never scaled in, replaced or repaired
    away."""
    return (vm.tag(PROTECT) or "").strip().lower() == "true"


def outdated(data: Mapping[str, Any], launch: Mapping[str, str]) -> bool:
    """A VM (a list answer's object) whose templateid or serviceofferingid is not
    [launch_config]'s (UUIDs compare case-insensitively); a field the answer lacks counts as
    current."""
    return any(data.get(key) is not None and
               str(data[key]).lower() != launch.get(key, "").strip().lower()
               for key in LAUNCH_IDS)


def failures(vm: Vm) -> int:
    """How many runs in a row the VM's health check failed (its ssh-scale:unhealthy tag)."""
    return parse_count(vm.tag(UNHEALTHY))


def removable(vm: Vm) -> bool:
    """A member ssh-scale may take away: its own, neither the monitored VM nor protected."""
    return vm.managed and not vm.monitored and not protected(vm)


def _age(vm: Vm) -> tuple[datetime, str]:
    return vm.created or _EARLIEST, vm.name


def pick_victim(candidates: Sequence[Vm], policy: str) -> Vm:
    """The member a scale-in removes: the newest (default), the oldest, or with
    outdated-first the newest outdated one (else the newest)."""
    if policy == "oldest":
        return min(candidates, key=_age)
    if policy == "outdated-first":
        candidates = [v for v in candidates if v.outdated] or candidates
    return max(candidates, key=_age)


def vm_notes(vm: Vm) -> str:
    """What --status says about a member beyond its state: protected, outdated, its health,
    a replacement under way."""
    notes = []
    if protected(vm):
        notes.append("protected")
    if vm.outdated:
        notes.append("outdated")
    if vm.check is not None:
        count = failures(vm)
        notes.append("healthy" if vm.check.ok else
                     f"failing ({count} in a row)" if count else "failing")
    if vm.tag(REPLACE):
        notes.append(f"being replaced by {vm.tag(REPLACE)}")
    return ", ".join(notes)


# --- health checks ----------------------------------------------------------------------------


def parse_limit(text: str) -> tuple[float, bool]:
    """[health] max_unhealthy: a count ("2") or a percentage ("50%") -> (amount, is it a
    percentage); raises ValueError for anything else."""
    match = _LIMIT.fullmatch(text.strip())
    if match is None or (not match.group(2) and "." in match.group(1)) or \
            (match.group(2) and float(match.group(1)) > 100):
        raise ValueError(f"expected a count (e.g. 1) or a percentage (e.g. 50%), got {text!r}")
    return float(match.group(1)), bool(match.group(2))


def checked_members(pool: Pool, settings: Settings, now: datetime) -> list[Vm]:
    """The members a health check looks at: Running, with an address, and created at least
    [health] grace seconds ago (a VM joins the load balancer right after its deploy)."""
    return [v for v in pool.members if v.state == "Running" and v.ip and
            (v.created is None or (now - v.created).total_seconds() >= settings.health_grace)]


def ssh_checks(pool: Pool, measurement: Measurement, settings: Settings,
               now: datetime) -> dict[str, Check]:
    """check = ssh: each checked member measured this run (by its address) passes when it
    gave a load; by VM id."""
    hosts = {h.host: h for h in measurement.hosts}
    return {vm.id: Check(hosts[vm.ip].loads is not None, hosts[vm.ip].error or "")
            for vm in checked_members(pool, settings, now) if vm.ip in hosts}


def with_checks(pool: Pool, checks: Mapping[str, Check]) -> Pool:
    """The pool with each member's check (by VM id) attached."""
    return Pool(tuple(replace(v, check=checks[v.id]) if v.id in checks else v
                      for v in pool.vms))


def count_changes(pool: Pool, settings: Settings) -> dict[str, int]:
    """The failure counts this run's checks change, by VM id (0: the tag goes): a failure adds
    one, up to unhealthy_runs; a success resets. Managed VMs only: an unmanaged member is
    reported, never touched, not even tagged."""
    changes = {}
    for vm in pool.vms:
        if vm.check is None or not vm.managed:
            continue
        old = failures(vm)
        new = 0 if vm.check.ok else min(old + 1, settings.unhealthy_runs)
        if new != old:
            changes[vm.id] = new
    return changes


def with_counts(pool: Pool, changes: Mapping[str, int]) -> Pool:
    """The pool with the failure counts changed (as the tags will read once written)."""
    def retagged(vm: Vm, count: int) -> Vm:
        kept = tuple((k, v) for k, v in vm.tags if k.lower() != UNHEALTHY)
        return replace(vm, tags=kept + (((UNHEALTHY, str(count)),) if count else ()))

    return Pool(tuple(retagged(v, changes[v.id]) if v.id in changes else v for v in pool.vms))


@dataclass(frozen=True)
class Health:
    """What this run's checks say: the members that failed, those that failed unhealthy_runs
    runs in a row (managed ones: only they keep a count), those of them ssh-scale may
    replace, and whether more failed than max_unhealthy allows."""

    failing: tuple[Vm, ...]
    unhealthy: tuple[Vm, ...]
    replaceable: tuple[Vm, ...]
    too_many: bool


def assess(pool: Pool, settings: Settings) -> Health:
    """The pool's health after this run's checks (and their counts)."""
    failing = tuple(v for v in pool.in_service if v.check is not None and not v.check.ok)
    unhealthy = tuple(v for v in failing
                      if v.managed and failures(v) >= settings.unhealthy_runs)
    amount, percent = parse_limit(settings.max_unhealthy)
    allowed = pool.count * amount / 100 if percent else amount
    return Health(failing, unhealthy, tuple(v for v in unhealthy if removable(v)),
                  len(failing) > allowed)


def health_lines(pool: Pool, settings: Settings) -> list[str]:
    """What the log says about this run's checks: nothing when every member passed."""
    health = assess(pool, settings)
    lines = []
    for vm in health.failing:
        detail = vm.check.detail if vm.check else ""
        if not vm.managed:
            lines.append(f"{vm.name} failed its check (not managed: reported, never "
                         f"replaced): {detail}")
            continue
        why = (" (protected: never replaced)" if protected(vm) else
               " (the monitored VM: never replaced)" if vm.monitored else "")
        lines.append(f"{vm.name} failed its check {failures(vm)} of {settings.unhealthy_runs} "
                     f"runs in a row{why}: {detail}")
    if health.unhealthy and health.too_many:
        lines.append(f"{len(health.failing)} of {pool.count} members fail their check, more "
                     f"than max_unhealthy {settings.max_unhealthy}: replacing nothing (the "
                     "network or the check itself is the likelier fault)")
    elif health.replaceable and pool.committed > settings.max_size:
        lines.append(f"replacing waits: {pool.committed} VMs count against max_size "
                     f"{settings.max_size} (a replacement may exceed it by one only)")
    return lines


# --- replacements -------------------------------------------------------------------------------


def plan_replacement(pool: Pool, settings: Settings) -> Optional[Decision]:
    """Replace the oldest unhealthy member ssh-scale may remove, unless more members fail than
    max_unhealthy allows or the new VM would take the managed VMs past max_size + 1."""
    health = assess(pool, settings)
    if not health.replaceable or health.too_many or pool.committed > settings.max_size:
        return None
    vm = min(health.replaceable, key=_age)
    detail = vm.check.detail if vm.check else ""
    return Decision(Action.REPLACE, f"{vm.name} failed its health check {failures(vm)} run(s) "
                    f"in a row ({detail})", vms=(vm,), count=1, rule="health")


def plan_refresh(pool: Pool, settings: Settings, load_out: Optional[float]) -> Optional[Decision]:
    """refresh = yes, the load known and below threshold_out, room for one more VM: replace
    the oldest outdated member ssh-scale may remove."""
    if not settings.refresh or load_out is None or load_out >= settings.threshold_out or \
            pool.committed > settings.max_size:
        return None
    stale = [v for v in pool.in_service if v.outdated and removable(v)]
    if not stale:
        return None
    vm = min(stale, key=_age)
    return Decision(Action.REPLACE, f"refresh: {vm.name} runs an outdated template or service "
                    f"offering ({len(stale)} outdated), load {load_out:.2f} < threshold_out "
                    f"{settings.threshold_out:g}", vms=(vm,), count=1, rule="refresh")


def replacement_of(vm: Vm, pool: Pool) -> Optional[Vm]:
    """The member in service that replaces vm (named by vm's ssh-scale:replace tag), if any."""
    new_id = vm.tag(REPLACE)
    return next((v for v in pool.in_service if v.id == new_id and v.id != vm.id), None)


def is_replacement(vm: Vm, pool: Pool) -> bool:
    """Some member's ssh-scale:replace tag names vm: a replacement a dead run deployed."""
    return any(m.tag(REPLACE) == vm.id for m in pool.members)


def finish_replacement(pool: Pool) -> Optional[Decision]:
    """A member whose replacement already serves (a run died before taking it away): the
    replacement is finished (drain and destroy)."""
    for vm in pool.in_service:
        new = replacement_of(vm, pool)
        if new is not None and removable(vm):
            return Decision(Action.REPLACE, f"repair: {new.name} replaced {vm.name}, which is "
                            "still in the load balancer", vms=(vm,), count=1, rule="repair")
    return None
