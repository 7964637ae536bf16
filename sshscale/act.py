"""One Decision -> cloud calls: deploy and assign (sshscale/launch.py), mark, remove, drain and
destroy, adopt, replace (the first half of a scale-out, then the second half of a scale-in), and
the repairs of crash leftovers, each of which backs off per VM when the cloud refuses it; every
step is logged, every job awaited within job_timeout, and the pool's facts (scale times, the
failed-deploy backoff, drained VMs, replacements) kept in tags."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Optional

import idcf_api
from sshscale.errors import LeaseExpired, ScaleError
from sshscale.facts import (
    DRAIN,
    POOL,
    REPAIR,
    REPLACE,
    SCALE_IN,
    TRIES,
    backoff_after_failure,
    backoff_keys,
    latest_backoff,
    time_value,
)
from sshscale.fleet import replacement_of, tries_of
from sshscale.interrupts import step
from sshscale.launch import Launcher
from sshscale.logs import ACTION, note
from sshscale.model import GONE, Action, Decision, Deploy, Pool, Vm, shown_time, vm_count
from sshscale.tags import USER_VM

__all__ = ["Actor"]

class Actor(Launcher):
    """Carries out a Decision against the cloud, logging every step, keeping the pool's facts
    in tags, and stopping before any change once its lease on the pool has expired."""

    def run(self, decision: Decision, pool: Pool) -> str:
        self.vm_ids = [vm.id for vm in decision.vms]
        handlers = {
            Action.SCALE_OUT: lambda: self.scale_out(decision.count, pool, decision.noisy),
            Action.SCALE_IN: lambda: self.scale_in(decision.vms[0], pool),
            Action.ADOPT: lambda: self.adopt(decision.vms, pool),
            Action.READD: lambda: self.adopt(decision.vms, pool),
            Action.DESTROY: lambda: self.destroy(decision.vms[0]),
            Action.REPLACE: lambda: self.replace(decision.vms[0], pool),
        }
        if decision.rule != "repair":  # (a half-done replacement's end is a repair too)
            return handlers[decision.action]()
        try:
            return handlers[decision.action]()
        except (idcf_api.CloudStackError, ScaleError) as exc:
            if not isinstance(exc, LeaseExpired):
                self._repair_refused(decision.vms)
            raise

    def _repair_refused(self, vms: Sequence[Vm]) -> None:
        """A repair the cloud refused backs off per VM (1 min, doubling up to max_backoff),
        so that the other rules act meanwhile: its tag says until when."""
        now = self.clock()
        for vm in vms:
            tags = {k.lower(): v for k, v in vm.tags}
            backoff = backoff_after_failure(latest_backoff(tags, REPAIR), now,
                                            self.settings.max_backoff)
            note("repair", f"{vm.name}: {backoff.failures} failed repair(s) in a row; the next "
                           f"waits until {shown_time(backoff.until, self.settings.zone)}",
                 logging.WARNING)
            try:
                self.tags.write_backoff(USER_VM, vm.id, REPAIR, backoff,
                                        backoff_keys(tags, REPAIR))
            except (idcf_api.CloudStackError, ScaleError) as exc:
                note("tags", f"could not record the repair backoff on {vm.name}: {exc}",
                     logging.WARNING)

    def scale_out(self, count: int, pool: Pool, noisy: bool = False) -> str:
        return self.finish_deploys(self.start_scale_out(count), pool.count, noisy)

    def start_scale_out(self, count: int) -> tuple[Deploy, ...]:
        """The deploy calls of a scale-out (each accepted with its VM's ID and its job)."""
        note("scale out", f"+{count}", ACTION)
        with step(f"while starting the deploy of {vm_count(count)}"):
            return self.start_deploys(count)

    def _state_after_pending_job(self, vm: Vm) -> str:
        """Wait for a job a dead run left on the VM; its state afterwards ("gone" if none).
        The job may be a deploy or a destroy: a VM listed Stopped can be either."""
        self.wait(str(vm.jobid), f"pending job on {vm.name}")
        found = self.client.list("listVirtualMachines", id=vm.id, **self.settings.scope)
        return str(found[0].get("state")) if found else "gone"

    def adopt(self, vms: Sequence[Vm], pool: Pool) -> str:
        """Add managed VMs outside the pool: those a dead run deployed (after their jobs), or a
        drained one the pool needs again (its drain mark removed first); each gets the pool's
        tag if its deploy did not live to write it."""
        ready = []
        for vm in vms:
            state = self._state_after_pending_job(vm) if vm.jobid else vm.state
            if state == "Running":
                ready.append(vm)
            else:
                note("repair", f"{vm.name} is {state} after its job: not adopted", ACTION)
        if not ready:
            return f"{', '.join(v.name for v in vms)}: not adopted"
        drained = any(vm.tag(DRAIN) is not None for vm in ready)
        for vm in ready:
            tags = {k.lower(): v for k, v in vm.tags}
            marks = [key for key in (DRAIN, *backoff_keys(tags, REPAIR)) if key in tags]
            if marks:
                self.check_lease()
                self.tags.delete(USER_VM, vm.id, dict.fromkeys(marks))
        untagged = [vm.id for vm in ready if vm.tag(POOL) is None]  # a dead run's deploys
        if untagged:
            self.tag_new(untagged, {TRIES: "0"})
        self.assign([vm.id for vm in ready])
        self.joined(deploy_seconds=None,
                    ends_backoff=not drained and self.settings.health_check == "none")
        return self.new_count(pool.count + len(ready))

    def scale_in(self, vm: Vm, pool: Pool) -> str:
        note("scale in", f"-1 ({vm.name}, {vm.ip or 'no ip'})", ACTION)
        self._retire(vm, scale_time=True)
        return self.new_count(pool.count - 1)

    def _retire(self, vm: Vm, scale_time: bool) -> None:
        """Mark the VM drained, take it out of the load balancer, (record the scale-in time,)
        drain, destroy: a run that dies after the mark leaves a VM the next run destroys,
        never one it adopts back."""
        with step(f"while taking {vm.name} out of the load balancer"):
            if vm.tag(DRAIN) is None:
                self.check_lease()
                self.tags.create(USER_VM, vm.id, {DRAIN: time_value(self.clock())})
            answer = self.change("removeFromLoadBalancerRule", id=self.settings.load_balancer,
                                 virtualmachineids=vm.id)
            self.wait(str(answer["jobid"]), "remove from lb")
            if scale_time:
                self.record({SCALE_IN: time_value(self.clock())}, "the scale-in time")
        if self.settings.drain_seconds > 0:
            with step(f"during the drain of {vm.name}"):
                note("drain", f"{self.settings.drain_seconds:g} s")
                self.sleep(self.settings.drain_seconds)
        self.destroy(vm)

    def replace(self, vm: Vm, pool: Pool) -> str:
        """Deploy and assign a VM in vm's place, then take vm away as a scale-in does; the pool
        keeps its size, so no scale time is recorded. When vm's mark names a replacement that
        serves already (a run died halfway), only the second half is left to do. A failed
        deploy leaves vm in place. Replacing a VM that never passed its check (still on
        trial) counts as a failed deploy (the backoff grows); the new VM carries its
        generation (ssh-scale:tries) until it passes."""
        new = replacement_of(vm, pool)
        if new is not None:
            note("replace", f"{vm.name} ({vm.ip or 'no ip'}): {new.name} serves in its place",
                 ACTION)
        else:
            tries = tries_of(vm)
            if tries.on_trial:
                note("replace", f"{vm.name} never passed its health check: counted as a failed "
                                "deploy", logging.WARNING)
                self.back_off()
            note("replace", f"{vm.name} ({vm.ip or 'no ip'}): deploying its replacement", ACTION)
            self._replace_first_half(vm, tries.count + 1 if tries.on_trial else 1)
        self._retire(vm, scale_time=False)
        return self.new_count(pool.count - 1 if new is not None else pool.count)

    def _replace_first_half(self, vm: Vm, generation: int) -> None:
        with step(f"during the deploy of {vm.name}'s replacement"):
            deploys = self.start_deploys(1)
        self._mark_replaced(vm, deploys[0].vm_id)
        with step(f"during the deploy of {vm.name}'s replacement"):
            awaited = self.await_deploys(deploys)
        if awaited.failure is not None:  # the new VM is gone; on a timeout it may come
            self.back_off()
            self._mark_replaced(vm, None)
            raise awaited.failure
        self.tag_new(awaited.vm_ids, {TRIES: str(generation)})
        self.assign(awaited.vm_ids)

    def _mark_replaced(self, vm: Vm, new_id: Optional[str]) -> None:
        """Name the replacement on the VM it replaces, so that a later run finishes the
        replacement from there (None: remove the mark, the replacement failed); a failure is
        a warning: this run goes on."""
        try:
            if new_id is None:
                self.tags.delete(USER_VM, vm.id, {REPLACE: None})
                return
            self.check_lease()
            self.tags.replace(USER_VM, vm.id, {REPLACE: new_id})
        except (idcf_api.CloudStackError, ScaleError) as exc:
            if isinstance(exc, LeaseExpired):
                raise
            note("tags", f"could not {'un' if new_id is None else ''}mark {vm.name} as being "
                         f"replaced: {exc}", logging.WARNING)

    def destroy(self, vm: Vm) -> str:
        # A Stopped VM with a job may be half destroyed already (by a run that died): wait
        # for that job rather than destroy twice. (An Error VM's job is moot.)
        if vm.jobid and vm.state == "Stopped" and \
                self._state_after_pending_job(vm) in ("gone", *GONE):
            note("repair", f"{vm.name} was destroyed by its pending job", ACTION)
            return f"{vm.name} already destroyed"
        note("destroy", f"{vm.name} ({vm.id})", ACTION)
        with step(f"during the destroy of {vm.name}"):
            self.destroy_and_wait(vm.id, vm.name)
        return f"destroyed {vm.name}"
