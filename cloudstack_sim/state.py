"""The simulated cloud's state machine: async jobs that move VMs through their states, change
load-balancer members and tags, and write the events real servers write. The records and the
queries over them are records.World; no HTTP here, JSON comes from views."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timezone
from typing import Any, Optional

from . import tags, views
from .faults import JOB_FAULTS, FaultBook
from .params import ApiError
from .records import Event, Job, TagRequest, Vm, World, new_id
from .versions import Server

__all__ = ["Cloud"]

# The event wording (apache/cloudstack, 4.15-4.19 sources). The Scheduled row (ApiServer, when
# the job is queued) carries the command's getEventDescription(): DeployVMCmd "starting Vm. Vm
# Id: " + getEntityId(), DestroyVMCmd "destroying vm: " + getId(), AssignToLoadBalancerRuleCmd
# "applying instances for load balancer: " + id + " (ids: " + join(vmIds) + ")", RemoveFrom...
# "removing instances from load balancer: ...", CreateTagsCmd "creating tags", DeleteTagsCmd
# "Deleting tags". The Started and Completed rows (ActionEventInterceptor) carry the manager's
# @ActionEvent eventDescription + ". " + the command's setEventDetails(): UserVmManagerImpl
# "starting Vm" / "destroying Vm" with "Vm Id: " + id, LoadBalancingRulesManagerImpl
# "assigning to load balancer" / "removing from load balancer" with "Load balancer Id: " + id +
# " VmIds: " + join(vmIds); completed as "Successfully completed " + it, failed as "Error
# while " + it. TaggedResourceManagerImpl's createTags/deleteTags events ("creating resource
# tags", "deleting resource tags") are not async: no Started row. Ids are the internal numbers.
# The older versions get the same words: the manager's tag descriptions are the same in the
# 4.2-4.10 TaggedResourceManagerImpl; the VM and LB ones were not checked against 4.5-4.12.
_WORDING = {
    "deployvirtualmachine": ("VM.CREATE", "starting Vm. Vm Id: {vm}", "starting Vm. Vm Id: {vm}"),
    "destroyvirtualmachine": ("VM.DESTROY", "destroying vm: {vm}",
                              "destroying Vm. Vm Id: {vm}"),
    "assigntoloadbalancerrule": (
        "LB.ASSIGN.TO.RULE", "applying instances for load balancer: {rule} (ids: {vms})",
        "assigning to load balancer. Load balancer Id: {rule} VmIds: {vms}"),
    "removefromloadbalancerrule": (
        "LB.REMOVE.FROM.RULE", "removing instances from load balancer: {rule} (ids: {vms})",
        "removing from load balancer. Load balancer Id: {rule} VmIds: {vms}"),
    "createtags": ("CREATE_TAGS", "creating tags", "creating resource tags"),
    "deletetags": ("DELETE_TAGS", "Deleting tags", "deleting resource tags"),
}


class Cloud(World):
    """The cloud and its clock: async jobs, the faults that break them, the events they write."""

    def __init__(self, *, job_seconds: float, ip_addresses: Sequence[str], tz: timezone,
                 admin: bool, faults: FaultBook, server: Server,
                 untaggable: frozenset[str]) -> None:
        super().__init__(job_seconds=job_seconds, ip_addresses=ip_addresses, tz=tz, admin=admin,
                         server=server, untaggable=tags.UNTAGGABLE_TYPES | untaggable)
        self.faults = faults
        self.denied: set[str] = set()  # API names this account's role may not call

    def new_job(self, command: str, *, vm: Optional[Vm] = None, rule_id: Optional[str] = None,
                vm_ids: Optional[list[str]] = None, start: bool = True, expunge: bool = False,
                tag_request: Optional[TagRequest] = None) -> Job:
        """Start an async job due in job_seconds and write its Scheduled (and Started) events;
        a matching job fault makes it fail or hang."""
        fault = self.faults.take(command, JOB_FAULTS)
        now = time.time()
        job = Job(id=new_id(), seq=self.next_id("job"), command=command, created=now,
                  due=now + self.job_seconds,
                  hang=fault is not None and fault.kind == "job_hang",
                  fail=fault.errortext if fault is not None and fault.kind == "job_fail" else None,
                  vm_id=vm.id if vm is not None else None, rule_id=rule_id,
                  vm_ids=vm_ids or [], start=start, expunge=expunge,
                  prev_state=vm.state if vm is not None else "", tags=tag_request)
        if vm is not None:
            vm.job_id = job.id
        self.jobs[job.id] = job
        self.pending[job.id] = job
        kind, scheduled, action = self._wording(job)
        job.start_event = self._emit(job, kind, scheduled, "Scheduled", "INFO", now)
        if tag_request is None:
            self._emit(job, kind, action, "Started", "INFO", now)
        return job

    def _wording(self, job: Job) -> tuple[str, str, str]:
        kind, scheduled, action = _WORDING[job.command]
        names = {
            "vm": self.vms[job.vm_id].seq if job.vm_id is not None else "",
            "rule": self.rules[job.rule_id].seq if job.rule_id is not None else "",
            "vms": ",".join(str(self.vms[one].seq) for one in job.vm_ids),
        }
        return kind, scheduled.format(**names), action.format(**names)

    def advance(self, now: float) -> None:
        """Move VMs through their jobs' middle states (a deploy: Stopped, then Starting from a
        third of the job; a destroy: Stopping, then Stopped from half of it), then finish
        every job whose time has come, in the order they fall due."""
        for job in self.pending.values():
            vm = self.vms.get(job.vm_id) if job.vm_id is not None else None
            if vm is None:
                continue
            elapsed = (now - job.created) / max(job.due - job.created, 1e-9)
            if job.command == "deployvirtualmachine" and vm.state == "Stopped" and elapsed >= 1 / 3:
                vm.state = "Starting"
            if job.command == "destroyvirtualmachine" and vm.state == "Stopping" and elapsed >= .5:
                vm.state = "Stopped"
        due = [job for job in self.pending.values() if not job.hang and job.due <= now]
        for job in sorted(due, key=lambda j: (j.due, j.seq)):
            self._finish(job)

    def _finish(self, job: Job) -> None:
        del self.pending[job.id]
        job.completed = job.due
        vm = self.vms.get(job.vm_id) if job.vm_id is not None else None
        if vm is not None and vm.job_id == job.id:
            vm.job_id = None
        try:
            if job.fail is not None:            # a job fault fails the job before it acts
                raise ApiError(533, job.fail)
            job.result = self._act(job, vm)
        except ApiError as error:
            self._fail(job, vm, error)
            return
        job.status = 1
        kind, _, action = self._wording(job)
        self._emit(job, kind, f"Successfully completed {action}", "Completed", "INFO", job.due)

    def _act(self, job: Job, vm: Optional[Vm]) -> dict[str, Any]:
        """Do what job was asked; its result. ApiError when a tag job's checks fail."""
        if job.tags is not None:
            (tags.create_tags if job.command == "createtags" else tags.delete_tags)(self, job.tags)
            return {"success": True}
        if vm is None:
            self._finish_lb_change(job)
            return {"success": True}
        if job.command == "deployvirtualmachine":
            if vm.state in ("Stopped", "Starting"):
                vm.state = "Running" if job.start else "Stopped"
            return {"virtualmachine": views.vm_json(self, vm)}
        return self._finish_destroy(job, vm)

    def _fail(self, job: Job, vm: Optional[Vm], error: ApiError) -> None:
        code, job.result_code = self.server.job_failure(error)
        job.status, job.result = 2, {"errorcode": code, "errortext": error.text}
        if vm is not None and job.command == "deployvirtualmachine" and \
                vm.state in ("Stopped", "Starting"):
            vm.state = "Error"
        if vm is not None and job.command == "destroyvirtualmachine" and \
                vm.state in ("Stopping", "Stopped"):
            vm.state = job.prev_state
        kind, _, action = self._wording(job)
        self._emit(job, kind, f"Error while {action}", "Completed", "ERROR", job.due)

    def _finish_destroy(self, job: Job, vm: Vm) -> dict[str, Any]:
        vm.state = "Destroyed"
        for rule in self.rules.values():
            if vm.id in rule.members:
                rule.members.remove(vm.id)
                rule.service_states.pop(vm.id, None)
        result = {"virtualmachine": views.vm_json(self, vm)}
        if job.expunge and not vm.removed:
            vm.removed, vm.state = True, "Expunging"
            self.addresses.release(vm.ip)
            self.tags[:] = [tag for tag in self.tags if tag.resource_id != vm.id]
        return result

    def _finish_lb_change(self, job: Job) -> None:
        """ApiError when an assign names a VM the rule has already: the server checks every
        VM before it maps any, and AssignToLoadBalancerRuleCmd turns the manager's "VM <id>
        with <ip> is already mapped to load balancer." into a plain 530."""
        assert job.rule_id is not None
        rule = self.rules[job.rule_id]
        present = [one for one in job.vm_ids if one in self.vms and not self.vms[one].removed]
        if job.command == "assigntoloadbalancerrule":
            if any(one in rule.members for one in present):
                raise ApiError(530, "Failed to assign load balancer rule")
            rule.members.extend(present)
        else:
            rule.members[:] = [one for one in rule.members if one not in present]
            for one in present:
                rule.service_states.pop(one, None)

    def _emit(self, job: Job, kind: str, description: str, state: str, level: str,
              when: float) -> str:
        resource_id, resource_type = (
            (job.vm_id, "VirtualMachine") if job.vm_id is not None
            else (job.rule_id, "LoadBalancerRule") if job.rule_id is not None else (None, None))
        event = Event(id=new_id(), seq=self.next_id("event"), type=kind, description=description,
                      state=state, level=level, time=self.stamp(when),
                      parent_id=job.start_event if state != "Scheduled" else None,
                      resource_id=resource_id, resource_type=resource_type)
        self.events.append(event)
        return event.id

    def age(self, seconds: float) -> None:
        """Move every stored timestamp (VMs, events, jobs) seconds into the past."""
        for vm in self.vms.values():
            vm.created -= seconds
        for event in self.events:
            event.time -= seconds
        for job in self.jobs.values():
            job.created -= seconds
            job.due -= seconds
            if job.completed is not None:
                job.completed -= seconds
