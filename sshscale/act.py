"""One Decision -> cloud calls: deploy and assign, remove, drain and destroy, adopt, and the
repairs of crash leftovers; every step is logged, every job awaited within job_timeout."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Callable

import idcf_api
from idcf_api import Client, JobFailed
from sshscale.logs import note
from sshscale.model import Action, Decision, Pool, Settings, Vm

__all__ = ["Actor"]


class Actor:
    """Carries out a Decision against the cloud, logging every step."""

    def __init__(self, client: Client, settings: Settings,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.client, self.settings, self.sleep = client, settings, sleep

    def run(self, decision: Decision, pool: Pool) -> str:
        handlers = {
            Action.SCALE_OUT: lambda: self.scale_out(decision.count, pool),
            Action.SCALE_IN: lambda: self.scale_in(decision.vms[0], pool),
            Action.ADOPT: lambda: self.adopt(decision.vms[0], pool),
            Action.READD: lambda: self.adopt(decision.vms[0], pool),
            Action.DESTROY: lambda: self.destroy(decision.vms[0]),
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

    def scale_out(self, count: int, pool: Pool) -> str:
        note("scale out", f"+{count}")
        params = dict(self.settings.launch)
        params.setdefault("group", self.settings.group)
        started = [self.client.call("deployVirtualMachine", **params) for _ in range(count)]
        new_ids = []
        for answer in started:
            vm_id = str(answer.get("id", ""))
            try:
                self.wait(str(answer["jobid"]), f"deploy {vm_id}")
            except JobFailed as exc:
                self._destroy_failed(exc.instance_id or vm_id)
                raise
            new_ids.append(vm_id)
        self._assign(new_ids)
        return self._new_count(pool.count + len(new_ids))

    def _destroy_failed(self, vm_id: str) -> None:
        if not vm_id:
            return
        note("destroy", f"{vm_id} (left in Error by the failed deploy)")
        try:
            self._destroy_and_wait(vm_id, vm_id)
        except idcf_api.CloudStackError as exc:
            note("destroy", f"could not destroy {vm_id}: {exc} (the next run retries)",
                 logging.ERROR)

    def _assign(self, vm_ids: Sequence[str]) -> None:
        note("assign to lb", f"{','.join(vm_ids)} -> {self.settings.load_balancer}")
        answer = self.client.call("assignToLoadBalancerRule", id=self.settings.load_balancer,
                                  virtualmachineids=",".join(vm_ids))
        self.wait(str(answer["jobid"]), "assign")

    def _state_after_pending_job(self, vm: Vm) -> str:
        """Wait for a job a dead run left on the VM; its state afterwards ("gone" if none).
        The job may be a deploy or a destroy: a VM listed Stopped can be either."""
        self.wait(str(vm.jobid), f"pending job on {vm.name}")
        found = self.client.list("listVirtualMachines", id=vm.id)
        return str(found[0].get("state")) if found else "gone"

    def adopt(self, vm: Vm, pool: Pool) -> str:
        if vm.jobid:
            state = self._state_after_pending_job(vm)
            if state != "Running":
                note("repair", f"{vm.name} is {state} after its job: not adopted")
                return f"{vm.name} is {state}: not adopted"
        self._assign([vm.id])
        return self._new_count(pool.count + 1)

    def scale_in(self, vm: Vm, pool: Pool) -> str:
        note("scale in", f"-1 ({vm.name}, {vm.ip or 'no ip'})")
        answer = self.client.call("removeFromLoadBalancerRule", id=self.settings.load_balancer,
                                  virtualmachineids=vm.id)
        self.wait(str(answer["jobid"]), "remove from lb")
        if self.settings.drain_seconds > 0:
            note("drain", f"{self.settings.drain_seconds:g} s")
            self.sleep(self.settings.drain_seconds)
        self.destroy(vm)
        return self._new_count(pool.count - 1)

    def destroy(self, vm: Vm) -> str:
        # A Stopped VM with a job may be half destroyed already (by a run that died): wait
        # for that job rather than destroy twice. (An Error VM's job is moot.)
        if vm.jobid and vm.state == "Stopped" and \
                self._state_after_pending_job(vm) in ("gone", "Destroyed", "Expunging"):
            note("repair", f"{vm.name} was destroyed by its pending job")
            return f"{vm.name} already destroyed"
        note("destroy", f"{vm.name} ({vm.id})")
        self._destroy_and_wait(vm.id, vm.name)
        return f"destroyed {vm.name}"

    def _destroy_and_wait(self, vm_id: str, label: str) -> None:
        answer = self.client.call("destroyVirtualMachine", id=vm_id,
                                  expunge=self.settings.expunge or None)
        self.wait(str(answer["jobid"]), f"destroy {label}")

    def _new_count(self, count: int) -> str:
        note("now vm count", str(count))
        return f"pool has {count} VMs"
