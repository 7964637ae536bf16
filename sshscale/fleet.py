"""Fleet rules, pure: protected and outdated members, which member a scale-in removes
([scalling] termination_policy), the health checks' verdicts and their counts, and when to
replace a member (unhealthy, or outdated with refresh = yes) or finish a replacement that a
dead run left half done. No I/O: decide() and the views call it; the live run writes the
counts it computes (health.py)."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Optional

from sshscale.facts import (
    PROTECT,
    REFRESH_HALTED,
    REPAIR,
    REPLACE,
    STUCK,
    UNHEALTHY,
    Tries,
    latest_backoff,
    parse_count,
    parse_time_value,
    time_value,
    tries_of_tags,
)
from sshscale.model import (
    Action,
    Backoff,
    Check,
    Decision,
    History,
    Measurement,
    Notice,
    Pool,
    Settings,
    Vm,
)

__all__ = ["HEALTH_CHECKS", "MAX_TRIES", "TERMINATION_POLICIES", "Health", "assess",
           "checked_members", "count_changes", "failures", "finish_replacement", "health_lines",
           "in_flight", "is_replacement", "launch_fingerprint", "outdated", "parse_limit",
           "pick_victim", "plan_refresh", "plan_replacement", "protected", "removable",
           "repair_backoff", "replacement_of", "replacement_room", "ssh_checks", "tries_of",
           "vm_notes", "with_checks"]

HEALTH_CHECKS = ("none", "ssh", "http")
TERMINATION_POLICIES = ("newest", "oldest", "outdated-first")
LAUNCH_IDS = ("templateid", "serviceofferingid")
MAX_TRIES = 3  # replacements in a row of one member that never became healthy, then give up
MAX_REPLACING_SHARE = 0.1  # replacements under way at once: a tenth of the pool (at least 1)
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
    """What --status says about a VM beyond its state: why it is not taken as the pool's,
    protected, outdated, its health, a replacement under way or on trial, a repair backing
    off, a transitional state without a job."""
    notes = [f"not this pool's: {vm.doubt}"] if vm.doubt else []
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
    tries = tries_of(vm)
    if tries.on_trial:
        what = f"replacement #{tries.count}" if tries.count else "new"
        notes.append(f"{what}, " + ("replacing it again given up" if tries.given_up
                                    else "on trial until it passes its check"))
    repair = repair_backoff(vm)
    if repair is not None:
        notes.append(f"repair refused {repair.failures} time(s), retried after "
                     f"{repair.until.astimezone():%H:%M:%S}")
    if vm.tag(STUCK):
        notes.append("no job since " + _local_time(vm.tag(STUCK)))
    return ", ".join(notes)


def repair_backoff(vm: Vm) -> Optional[Backoff]:
    """How long repairs of the VM the cloud refused back off (its ssh-scale:repair tags)."""
    return latest_backoff({k.lower(): v for k, v in vm.tags}, REPAIR)


def _local_time(value: Optional[str]) -> str:
    when = parse_time_value(value)
    return f"{when.astimezone():%H:%M:%S}" if when else str(value)


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


def in_flight(pool: Pool) -> tuple[Vm, ...]:
    """Replacements under way: VMs on trial (new, not yet healthy) that have not been given up,
    and members whose replacement is being deployed (their ssh-scale:replace mark)."""
    return tuple(v for v in pool.in_service if v.managed and (
        (tries_of(v).on_trial and not tries_of(v).given_up) or v.tag(REPLACE)))


def tries_of(vm: Vm) -> Tries:
    """The VM's trial (ssh-scale:tries, ssh-scale:given-up)."""
    return tries_of_tags({k.lower(): v for k, v in vm.tags})


def replacement_room(pool: Pool) -> int:
    """How many replacements may be under way at once: a tenth of the pool, at least one."""
    return max(1, math.floor(pool.count * MAX_REPLACING_SHARE))


def plan_replacement(pool: Pool, settings: Settings) -> Optional[Decision]:
    """Replace the oldest unhealthy member ssh-scale may remove, unless more members fail than
    max_unhealthy allows, the new VM would take the managed VMs past max_size + 1, replacing
    it was given up (MAX_TRIES replacements in a row never became healthy), or the
    replacements under way fill their share of the pool (a failing one suspends the others:
    only it is replaced again)."""
    health = assess(pool, settings)
    candidates = [v for v in health.replaceable if not tries_of(v).given_up]
    if not candidates or health.too_many or pool.committed > settings.max_size:
        return None
    flying = in_flight(pool)
    # a new VM that fails (given up or not) suspends the other replacements
    failing = [v for v in health.failing if tries_of(v).on_trial]
    allowed = [v for v in candidates if v in flying or (
        not failing and len(flying) < replacement_room(pool))]
    if not allowed:
        return Decision(Action.NONE, f"replacing {candidates[0].name} waits: "
                        f"{len(flying)} replacement(s) not yet healthy"
                        f"{' and failing' if failing else ''} (at most "
                        f"{replacement_room(pool)} at once)", rule="health")
    vm = min(allowed, key=_age)
    detail = vm.check.detail if vm.check else ""
    return Decision(Action.REPLACE, f"{vm.name} failed its health check {failures(vm)} run(s) "
                    f"in a row ({detail})", vms=(vm,), count=1, rule="health")


def launch_fingerprint(launch: Mapping[str, str]) -> str:
    """What a refresh halt is tied to: [launch_config]'s template and offering (a changed
    one lifts the halt)."""
    ids = "/".join(launch.get(key, "").strip().lower() for key in LAUNCH_IDS)
    return hashlib.sha256(ids.encode()).hexdigest()[:12]


def plan_refresh(pool: Pool, settings: Settings, load_out: Optional[float], now: datetime,
                 history: Optional[History]) -> Optional[Decision]:
    """refresh = yes, the load known and below threshold_out, room for one more VM: replace
    the oldest outdated member ssh-scale may remove, but only while every member passes its
    check and every earlier replacement has proven itself (past [health] grace, checked
    healthy); a VM of the current template and offering that fails its check halts the
    refresh (once noticed, in the rule's ssh-scale:refresh-halted) until [launch_config]'s
    template or offering changes. A hold is a NONE Decision saying why."""
    if not settings.refresh or load_out is None or load_out >= settings.threshold_out or \
            pool.committed > settings.max_size:
        return None
    stale = [v for v in pool.in_service if v.outdated and removable(v)]
    if not stale:
        return None
    fingerprint = launch_fingerprint(settings.launch)
    current_failing = [v for v in pool.in_service if v.managed and not v.outdated
                       and v.check is not None and not v.check.ok]
    if current_failing or (history is not None and history.refresh_halted == fingerprint):
        return _refresh_halted(current_failing, fingerprint, history, now)
    waiting = _refresh_waits(pool, settings, now)
    if waiting:
        return Decision(Action.NONE, f"refresh waits: {waiting}", rule="refresh")
    vm = min(stale, key=_age)
    return Decision(Action.REPLACE, f"refresh: {vm.name} runs an outdated template or service "
                    f"offering ({len(stale)} outdated), load {load_out:.2f} < threshold_out "
                    f"{settings.threshold_out:g}", vms=(vm,), count=1, rule="refresh")


def _refresh_halted(failing: Sequence[Vm], fingerprint: str, history: Optional[History],
                    now: datetime) -> Decision:
    if history is None:
        return Decision(Action.NONE, "refresh halted: reading the pool's history",
                        needs_history=True, rule="refresh")
    if history.refresh_halted == fingerprint:
        return Decision(Action.NONE, "refresh halted: a VM of [launch_config]'s template and "
                        "offering failed its health check (change the template or offering "
                        "to refresh again)", rule="refresh")
    text = (f"refresh halted: {failing[0].name}, of [launch_config]'s template and offering, "
            f"fails its health check ({failing[0].check.detail if failing[0].check else ''}); "
            "no more outdated members are replaced until the template or offering changes")
    return Decision(Action.NONE, text, rule="refresh",
                    notice=Notice(REFRESH_HALTED, f"{fingerprint} {time_value(now)}", text))


def _refresh_waits(pool: Pool, settings: Settings, now: datetime) -> str:
    """Why the next refresh step must wait, or "": a member fails its check, a replacement
    has not proven itself yet."""
    failing = [v for v in pool.in_service if v.check is not None and not v.check.ok]
    if failing:
        return f"{failing[0].name} fails its health check"
    young = [v for v in in_flight(pool) if v.created is None or
             (now - v.created).total_seconds() < settings.health_grace or
             (settings.health_check != "none" and (v.check is None or not v.check.ok))]
    if young:
        return f"{young[0].name} has not passed its health check yet"
    return ""


def replacement_of(vm: Vm, pool: Pool) -> Optional[Vm]:
    """The member in service that replaces vm (named by vm's ssh-scale:replace tag), if any."""
    new_id = vm.tag(REPLACE)
    return next((v for v in pool.in_service if v.id == new_id and v.id != vm.id), None)


def is_replacement(vm: Vm, pool: Pool) -> bool:
    """Some member's ssh-scale:replace tag names vm: a replacement a dead run deployed."""
    return any(m.tag(REPLACE) == vm.id for m in pool.members)


def finish_replacement(pool: Pool, now: datetime) -> Optional[Decision]:
    """A member whose replacement already serves (a run died before taking it away): the
    replacement is finished (drain and destroy), unless finishing it was refused lately (its
    repair backs off)."""
    for vm in pool.in_service:
        new = replacement_of(vm, pool)
        held = repair_backoff(vm)
        if new is not None and removable(vm) and (held is None or now >= held.until):
            return Decision(Action.REPLACE, f"repair: {new.name} replaced {vm.name}, which is "
                            "still in the load balancer", vms=(vm,), count=1, rule="repair")
    return None
