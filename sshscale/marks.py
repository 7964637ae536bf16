"""The VM tags a run brings up to date from what it saw, pure: which tags change, and the pool
as it reads once they are written. No I/O: sshscale/upkeep.py writes them.

  * ssh-scale:pool on a VM an earlier version deployed, recognised as the pool's (once);
  * ssh-scale:unhealthy, each checked member's count of failed runs in a row;
  * ssh-scale:tries (and ssh-scale:given-up) go from a new VM that passed its check (with
    check = none: once it runs past [health] grace); ssh-scale:given-up comes on one that
    failed as the MAX_TRIES-th replacement in a row of its member (told once, by the run that
    creates it);
  * ssh-scale:stuck holds when a managed VM was first seen Starting or Stopping without a job
    (gone again once it is not).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Optional

from sshscale.facts import GIVEN_UP, POOL, STUCK, TRIES, UNHEALTHY, time_value
from sshscale.fleet import MAX_TRIES, count_changes, failures, tries_of
from sshscale.model import TRANSITIONAL, Notice, Pool, Settings, Vm

__all__ = ["Mark", "marks_due", "with_marks"]


@dataclass(frozen=True)
class Mark:
    """One VM tag to set (value) or remove (None), and what to tell once it is written."""

    vm_id: str
    key: str
    value: Optional[str]
    notice: Optional[Notice] = None


def marks_due(pool: Pool, settings: Settings, now: datetime) -> tuple[Mark, ...]:
    """The tags this run's observations change (the health checks attached to the pool)."""
    marks = [Mark(vm_id, UNHEALTHY, str(count) if count else None)
             for vm_id, count in count_changes(pool, settings).items()]
    counted = with_marks(pool, marks)
    for vm in counted.vms:
        if vm.legacy and vm.tag(POOL) is None:
            marks.append(Mark(vm.id, POOL, settings.load_balancer))
        if vm.managed:
            marks += _tries_marks(vm, settings, now) + _stuck_marks(vm, now)
    return tuple(marks)


def _tries_marks(vm: Vm, settings: Settings, now: datetime) -> list[Mark]:
    tries = tries_of(vm)
    if not tries.on_trial:
        return []
    if _proven(vm, settings, now):  # healthy at last: no longer on trial, nor given up
        return [Mark(vm.id, TRIES, None)] + ([Mark(vm.id, GIVEN_UP, None)]
                                             if tries.given_up else [])
    if not tries.given_up and tries.count >= MAX_TRIES and \
            failures(vm) >= settings.unhealthy_runs:
        text = (f"{vm.name} is the {tries.count}th replacement in a row that never passed its "
                "health check: not replacing it again (check the template, then delete its "
                f"{GIVEN_UP} tag)")
        value = time_value(now)
        return [Mark(vm.id, GIVEN_UP, value, Notice(GIVEN_UP, value, text, vm.id))]
    return []


def _proven(vm: Vm, settings: Settings, now: datetime) -> bool:
    """A replacement passed its check (with no check: it has run past [health] grace)."""
    if vm.check is not None:
        return vm.check.ok
    old = vm.created is not None and (now - vm.created).total_seconds() >= settings.health_grace
    return settings.health_check == "none" and vm.state == "Running" and old


def _stuck_marks(vm: Vm, now: datetime) -> list[Mark]:
    stuck = vm.state in TRANSITIONAL and not vm.jobid
    if stuck and vm.tag(STUCK) is None:
        return [Mark(vm.id, STUCK, time_value(now))]
    if not stuck and vm.tag(STUCK) is not None:
        return [Mark(vm.id, STUCK, None)]
    return []


def with_marks(pool: Pool, marks: Sequence[Mark]) -> Pool:
    """The pool with the marks applied (as the tags will read once written)."""
    by_vm: dict[str, list[Mark]] = {}
    for mark in marks:
        by_vm.setdefault(mark.vm_id, []).append(mark)

    def marked(vm: Vm) -> Vm:
        tags = list(vm.tags)
        for mark in by_vm[vm.id]:
            tags = [(k, v) for k, v in tags if k.lower() != mark.key]
            if mark.value is not None:
                tags.append((mark.key, mark.value))
        legacy = vm.legacy and not any(m.key == POOL for m in by_vm[vm.id])
        return replace(vm, tags=tuple(tags), legacy=legacy)

    return Pool(tuple(marked(v) if v.id in by_vm else v for v in pool.vms))
