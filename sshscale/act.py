"""One Decision -> cloud calls: deploy and assign, mark, remove, drain and destroy, adopt,
replace (the first half of a scale-out, then the second half of a scale-in), and the repairs
of crash leftovers; every step is logged, every job awaited within job_timeout, and the pool's
facts (scale times, the failed-deploy backoff, drained VMs, replacements) kept in tags."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Callable, Optional

import idcf_api
from idcf_api import Client, JobFailed, JobTimeout
from sshscale.errors import LeaseExpired, ScaleError
from sshscale.facts import (
    BACKOFF,
    DRAIN,
    REPLACE,
    SCALE_IN,
    SCALE_OUT,
    backoff_after_failure,
    backoff_value,
    time_value,
)
from sshscale.fleet import LAUNCH_IDS, outdated, replacement_of
from sshscale.interrupts import step
from sshscale.logs import ACTION, note
from sshscale.model import (
    GONE,
    IN_SERVICE,
    Action,
    Decision,
    Deploy,
    History,
    Pool,
    Settings,
    Vm,
    shown_time,
    vm_count,
)
from sshscale.tags import LOAD_BALANCER, USER_VM, TagWriter

__all__ = ["Actor"]


class Actor:
    """Carries out a Decision against the cloud, logging every step, keeping the pool's facts
    in tags, and stopping before any change once its lease on the pool has expired."""

    def __init__(self, client: Client, settings: Settings, history: History,
                 clock: Callable[[], datetime], deadline: Optional[datetime] = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        """`clock` tells the cloud's time; no change is started from `deadline` on (when the
        run's lease on the pool is about to end)."""
        self.client, self.settings, self.history = client, settings, history
        self.clock, self.deadline, self.sleep = clock, deadline, sleep
        self.tags = TagWriter(client, settings)
        # What the action touched, for the run's report (also when it fails half way): the
        # decision's VMs and those deployed; the pool's size afterwards, once known.
        self.vm_ids: list[str] = []
        self.count_after: Optional[int] = None

    def run(self, decision: Decision, pool: Pool) -> str:
        self.vm_ids = [vm.id for vm in decision.vms]
        handlers = {
            Action.SCALE_OUT: lambda: self.scale_out(decision.count, pool),
            Action.SCALE_IN: lambda: self.scale_in(decision.vms[0], pool),
            Action.ADOPT: lambda: self.adopt(decision.vms[0], pool),
            Action.READD: lambda: self.adopt(decision.vms[0], pool),
            Action.DESTROY: lambda: self.destroy(decision.vms[0]),
            Action.REPLACE: lambda: self.replace(decision.vms[0], pool),
        }
        return handlers[decision.action]()

    def wait(self, jobid: str, what: str) -> dict:
        last = {"status": None}

        def on_poll(answer: dict) -> None:
            status = answer.get("jobstatus")
            if status != last["status"]:
                note("query job", f"jobid: {jobid}, jobstatus: {status} ({what})")
                last["status"] = status

        return self.client.wait(jobid, timeout=self.settings.job_timeout, on_poll=on_poll)

    def _check_lease(self) -> None:
        """Change nothing once the lease is (almost) over: another monitor may take over."""
        if self.deadline is not None and self.clock() >= self.deadline:
            raise LeaseExpired("the pool's lease ran out during the action; stopped before "
                               "the next change (the next run repairs what is left)")

    def _change(self, command: str, **params: Any) -> dict:
        self._check_lease()
        return self.client.call(command, **params)

    def scale_out(self, count: int, pool: Pool) -> str:
        return self.finish_deploys(self.start_scale_out(count), pool.count)

    def start_scale_out(self, count: int) -> tuple[Deploy, ...]:
        """The deploy calls of a scale-out (each accepted with its VM's ID and its job)."""
        note("scale out", f"+{count}", ACTION)
        with step(f"while starting the deploy of {vm_count(count)}"):
            return self._start_deploys(count)

    def finish_deploys(self, deploys: Sequence[Deploy], pool_count: Optional[int]) -> str:
        """Wait for a scale-out's deploys, then add their VMs to the load balancer. The new
        count is pool_count plus the new VMs, or, when other runs may have changed the pool
        meanwhile (None), the members in service read again."""
        with step(f"during the deploy of {vm_count(len(deploys))}"):
            new_ids = self._await_deploys(deploys)
        self._assign(new_ids)
        self._joined(deployed=True)
        if pool_count is None:
            members = self.client.list("listLoadBalancerRuleInstances",
                                       id=self.settings.load_balancer)
            return self._new_count(sum(m.get("state") in IN_SERVICE for m in members))
        return self._new_count(pool_count + len(new_ids))

    def _start_deploys(self, count: int, replacing: Optional[Vm] = None) -> tuple[Deploy, ...]:
        """Deploy VMs with [launch_config]. A replacement's id is marked on the VM it replaces
        as soon as the cloud names it."""
        params = dict(self.settings.launch)
        params.setdefault("group", self.settings.group)
        started = []
        for _ in range(count):
            answer = self._change("deployVirtualMachine", **params)
            started.append(Deploy(str(answer.get("id", "")), str(answer["jobid"])))
            if started[-1].vm_id:
                self.vm_ids.append(started[-1].vm_id)
        if replacing is not None:
            self._mark_replaced(replacing, started[0].vm_id)
        return tuple(started)

    def _await_deploys(self, deploys: Sequence[Deploy]) -> list[str]:
        """Wait for the deploys' jobs; their VMs' ids. A failed deploy destroys the VM it left
        in Error, grows the backoff and raises."""
        new_ids = []
        try:
            for deploy in deploys:
                try:
                    result = self.wait(deploy.jobid, f"deploy {deploy.vm_id}")
                except JobFailed as exc:
                    self._destroy_failed(exc.instance_id or deploy.vm_id)
                    raise
                self._check_current(deploy.vm_id, result.get("virtualmachine") or {})
                new_ids.append(deploy.vm_id)
        except (JobFailed, JobTimeout, ScaleError):
            self._back_off()
            raise
        return new_ids

    def _check_current(self, vm_id: str, data: dict) -> None:
        """With refresh = yes, a new VM must match [launch_config] as the cloud names it, or
        each refresh would replace it again: such a VM is destroyed, and the deploy fails."""
        if not self.settings.refresh or not outdated(data, self.settings.launch):
            return
        self._destroy_failed(vm_id)
        found = ", ".join(f"{key} {data.get(key)}" for key in LAUNCH_IDS)
        raise ScaleError(f"the new VM {vm_id} has {found}, not [launch_config]'s: with refresh "
                         "= yes it would be replaced again and again (give [launch_config] the "
                         "IDs the cloud lists: idcf-compute-api listTemplates / "
                         "listServiceOfferings)")

    def _destroy_failed(self, vm_id: str) -> None:
        if not vm_id:
            return
        note("destroy", f"{vm_id} (left by the failed deploy)", ACTION)
        try:
            self._destroy_and_wait(vm_id, vm_id)
        except idcf_api.CloudStackError as exc:
            note("destroy", f"could not destroy {vm_id}: {exc} (the next run retries)",
                 logging.ERROR)

    def _back_off(self) -> None:
        """One more failed deploy: the next one waits (1 min, then 2, 4, ... max_backoff)."""
        backoff = backoff_after_failure(self.history.backoff, self.clock(),
                                        self.settings.max_backoff)
        until = shown_time(backoff.until, self.settings.zone)
        note("backoff", f"{backoff.failures} failed deploy(s) in a row: the next deploy waits "
                        f"until {until}", logging.WARNING)
        self._record({BACKOFF: backoff_value(backoff)}, "the failed-deploy backoff")

    def _joined(self, deployed: bool) -> None:
        """VMs joined the pool: the scale-out cooldown starts; a good deploy ends the backoff."""
        self._record({SCALE_OUT: time_value(self.clock())}, "the scale-out time",
                     also_delete=(BACKOFF,) if deployed else ())

    def _record(self, facts: dict[str, str], what: str, also_delete: tuple[str, ...] = ()) -> None:
        """Keep facts on the load-balancer rule; a failure is a warning, not the run's end
        (the action itself is done; the event log stands in for a missing time)."""
        try:
            self._check_lease()
            self.tags.replace(LOAD_BALANCER, self.settings.load_balancer, facts, also_delete)
        except (idcf_api.CloudStackError, LeaseExpired) as exc:
            note("tags", f"could not record {what} on the load balancer: {exc}",
                 logging.WARNING)

    def _assign(self, vm_ids: Sequence[str]) -> None:
        """Add the VMs to the load balancer. CloudStack fails the whole job when one of them
        is mapped already (530 "Failed to assign load balancer rule"), as a VM another run
        adopted is: then the members are read, and only the missing ones assigned again."""
        note("assign to lb", f"{','.join(vm_ids)} -> {self.settings.load_balancer}")
        with step(f"while adding {', '.join(vm_ids)} to the load balancer"):
            try:
                self._assign_job(vm_ids)
            except JobFailed:
                members = {str(m.get("id")) for m in self.client.list(
                    "listLoadBalancerRuleInstances", id=self.settings.load_balancer)}
                missing = [v for v in vm_ids if v not in members]
                if len(missing) == len(vm_ids):
                    raise
                note("assign to lb", f"{len(vm_ids) - len(missing)} of them already in the "
                                     "load balancer (another run adopted them)")
                if missing:
                    self._assign_job(missing)

    def _assign_job(self, vm_ids: Sequence[str]) -> None:
        answer = self._change("assignToLoadBalancerRule", id=self.settings.load_balancer,
                              virtualmachineids=",".join(vm_ids))
        self.wait(str(answer["jobid"]), "assign")

    def _state_after_pending_job(self, vm: Vm) -> str:
        """Wait for a job a dead run left on the VM; its state afterwards ("gone" if none).
        The job may be a deploy or a destroy: a VM listed Stopped can be either."""
        self.wait(str(vm.jobid), f"pending job on {vm.name}")
        found = self.client.list("listVirtualMachines", id=vm.id)
        return str(found[0].get("state")) if found else "gone"

    def adopt(self, vm: Vm, pool: Pool) -> str:
        """Add a managed VM outside the pool: one a dead run deployed (after its job), or a
        drained one the pool needs again (its drain mark removed first)."""
        if vm.jobid:
            state = self._state_after_pending_job(vm)
            if state != "Running":
                note("repair", f"{vm.name} is {state} after its job: not adopted", ACTION)
                return f"{vm.name} is {state}: not adopted"
        drained = vm.tag(DRAIN) is not None
        if drained:
            self._check_lease()
            self.tags.delete(USER_VM, vm.id, {DRAIN: None})
        self._assign([vm.id])
        self._joined(deployed=not drained)
        return self._new_count(pool.count + 1)

    def scale_in(self, vm: Vm, pool: Pool) -> str:
        note("scale in", f"-1 ({vm.name}, {vm.ip or 'no ip'})", ACTION)
        self._retire(vm, scale_time=True)
        return self._new_count(pool.count - 1)

    def _retire(self, vm: Vm, scale_time: bool) -> None:
        """Mark the VM drained, take it out of the load balancer, (record the scale-in time,)
        drain, destroy: a run that dies after the mark leaves a VM the next run destroys,
        never one it adopts back."""
        with step(f"while taking {vm.name} out of the load balancer"):
            if vm.tag(DRAIN) is None:
                self._check_lease()
                self.tags.create(USER_VM, vm.id, {DRAIN: time_value(self.clock())})
            answer = self._change("removeFromLoadBalancerRule", id=self.settings.load_balancer,
                                  virtualmachineids=vm.id)
            self.wait(str(answer["jobid"]), "remove from lb")
            if scale_time:
                self._record({SCALE_IN: time_value(self.clock())}, "the scale-in time")
        if self.settings.drain_seconds > 0:
            with step(f"during the drain of {vm.name}"):
                note("drain", f"{self.settings.drain_seconds:g} s")
                self.sleep(self.settings.drain_seconds)
        self.destroy(vm)

    def replace(self, vm: Vm, pool: Pool) -> str:
        """Deploy and assign a VM in vm's place, then take vm away as a scale-in does; the pool
        keeps its size, so no scale time is recorded. When vm's mark names a replacement that
        serves already (a run died halfway), only the second half is left to do. A failed
        deploy leaves vm in place."""
        new = replacement_of(vm, pool)
        if new is not None:
            note("replace", f"{vm.name} ({vm.ip or 'no ip'}): {new.name} serves in its place",
                 ACTION)
        else:
            note("replace", f"{vm.name} ({vm.ip or 'no ip'}): deploying its replacement", ACTION)
            try:
                with step(f"during the deploy of {vm.name}'s replacement"):
                    new_ids = self._await_deploys(self._start_deploys(1, replacing=vm))
            except (JobFailed, ScaleError):  # the new VM is gone; on a timeout it may come
                self._mark_replaced(vm, None)
                raise
            self._assign(new_ids)
            if self.history.backoff is not None:
                self._record({}, "the end of the backoff", also_delete=(BACKOFF,))
        self._retire(vm, scale_time=False)
        return self._new_count(pool.count - 1 if new is not None else pool.count)

    def _mark_replaced(self, vm: Vm, new_id: Optional[str]) -> None:
        """Name the replacement on the VM it replaces, so that a later run finishes the
        replacement from there (None: remove the mark, the replacement failed); a failure is
        a warning: this run goes on."""
        try:
            if new_id is None:
                self.tags.delete(USER_VM, vm.id, {REPLACE: None})
                return
            self._check_lease()
            if vm.tag(REPLACE) is None:
                self.tags.create(USER_VM, vm.id, {REPLACE: new_id})
            else:
                self.tags.replace(USER_VM, vm.id, {REPLACE: new_id})
        except idcf_api.CloudStackError as exc:
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
            self._destroy_and_wait(vm.id, vm.name)
        return f"destroyed {vm.name}"

    def _destroy_and_wait(self, vm_id: str, label: str) -> None:
        answer = self._change("destroyVirtualMachine", id=vm_id,
                              expunge=self.settings.expunge or None)
        self.wait(str(answer["jobid"]), f"destroy {label}")

    def _new_count(self, count: int) -> str:
        self.count_after = count
        note("now vm count", str(count), ACTION)
        return f"pool has {vm_count(count)}"
