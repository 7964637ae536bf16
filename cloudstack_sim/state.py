"""The simulated cloud's state and its state machine: VMs, load-balancer rules, async jobs, the
events they write, resource tags, guest addresses and the clock they share. Every object has an
internal numeric id next to its UUID, as in the server's database; the API shows only UUIDs,
event texts only the numbers. No HTTP here; JSON comes from views."""

from __future__ import annotations

import ipaddress
import itertools
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timezone
from typing import Any, Optional, Union

from . import tags, views
from .faults import JOB_FAULTS, FaultBook
from .params import ApiError

__all__ = ["CLOUDSTACK_VERSIONS", "DEFAULT_IPS", "HIDDEN_STATES", "LB_HIDDEN_STATES",
           "MAX_PAGE_SIZE", "VM_STATES", "AddressPool", "Cloud", "Event", "Job", "Rule",
           "Template", "Vm", "check_loopback", "new_id"]

VM_STATES = ("Starting", "Running", "Stopping", "Stopped", "Destroyed", "Expunging", "Migrating",
             "Error", "Unknown", "Shutdown")
HIDDEN_STATES = frozenset({"Destroyed", "Expunging"})          # listVirtualMachines, normal user
LB_HIDDEN_STATES = frozenset({"Destroyed", "Expunging", "Error", "Unknown"})
MAX_PAGE_SIZE = 500
DEFAULT_IPS = tuple(f"127.0.1.{n}" for n in range(1, 255))
#: Server versions whose answers the simulator reproduces; 4.17 added resourceid/resourcetype
#: to events, so 4.15 stands for the servers before and 4.19 for those after.
CLOUDSTACK_VERSIONS = ("4.15", "4.19")
# Each table's first internal id: far apart, so that a rule's number in an event text is never
# a VM's number too.
_FIRST_IDS = {"vm": 1, "rule": 42, "job": 1, "event": 1, "tag": 1}

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

_LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


def new_id() -> str:
    """A fresh UUID string, as the API shows ids."""
    return str(uuid.uuid4())


def check_loopback(address: str, what: str) -> str:
    """address normalised; ValueError unless it is an IP address inside 127.0.0.0/8."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise ValueError(f"{what} {address!r} is not an IP address") from None
    if ip not in _LOOPBACK:
        raise ValueError(f"{what} {address} is outside 127.0.0.0/8 (the simulator stays on "
                         "loopback)")
    return str(ip)


@dataclass
class Template:
    id: str
    name: str
    featured: bool
    account: str


@dataclass
class Vm:
    id: str
    seq: int
    name: str
    displayname: str
    state: str
    ip: str
    created: float
    group: Optional[str]
    groupid: Optional[str]
    nic_id: str
    template_id: str
    extra: dict[str, str] = field(default_factory=dict)
    job_id: Optional[str] = None
    removed: bool = False

    @property
    def instancename(self) -> str:
        return f"i-2-{self.seq}-VM"


@dataclass
class Rule:
    id: str
    seq: int
    name: str
    publicipid: str
    publicip: str
    members: list[str] = field(default_factory=list)
    #: The LB<->VM map's state column (a health check's verdict); none without health checks.
    service_states: dict[str, str] = field(default_factory=dict)


@dataclass
class Job:
    id: str
    seq: int
    command: str
    created: float
    due: float
    hang: bool = False
    fail: Optional[str] = None
    vm_id: Optional[str] = None
    rule_id: Optional[str] = None
    vm_ids: list[str] = field(default_factory=list)
    start: bool = True
    expunge: bool = False
    prev_state: str = ""
    tags: Optional[tags.TagRequest] = None
    start_event: Optional[str] = None
    status: int = 0
    result_code: int = 0
    result: Optional[dict[str, Any]] = None
    completed: Optional[float] = None


@dataclass
class Event:
    id: str
    seq: int
    type: str
    description: str
    state: str
    level: str
    time: float
    parent_id: Optional[str] = None
    resource_id: Optional[str] = None
    resource_type: Optional[str] = None


class AddressPool:
    """Guest addresses: fresh ones first, expunged ones again only when no fresh one is left."""

    def __init__(self, addresses: Sequence[str]) -> None:
        self._fresh = deque(check_loopback(ip, "VM address") for ip in addresses)
        self._freed: deque[str] = deque()
        self._used: set[str] = set()

    def allocate(self) -> Optional[str]:
        """A free address, now in use; None when every address is taken."""
        for pool in (self._fresh, self._freed):
            while pool:
                ip = pool.popleft()
                if ip not in self._used:
                    self._used.add(ip)
                    return ip
        return None

    def claim(self, ip: str) -> None:
        """Mark ip as in use (a seeded VM chose it)."""
        self._used.add(ip)

    def release(self, ip: str) -> None:
        """Give ip back (its VM was expunged)."""
        self._used.discard(ip)
        self._freed.append(ip)


class Cloud:
    """One zone, one offering, a featured and an own template, LB rules, VMs, jobs and events."""

    def __init__(self, *, job_seconds: float, ip_addresses: Sequence[str], tz: timezone,
                 admin: bool, faults: FaultBook, version: str,
                 untaggable: frozenset[str]) -> None:
        self.job_seconds = job_seconds
        self.tz = tz
        self.admin = admin
        self.faults = faults
        self.version = version
        self.untaggable = tags.UNTAGGABLE_TYPES | untaggable
        self.page_size = MAX_PAGE_SIZE
        self.addresses = AddressPool(ip_addresses)
        self.vms: dict[str, Vm] = {}
        self.jobs: dict[str, Job] = {}
        self.pending: dict[str, Job] = {}
        self.events: list[Event] = []
        self.groups: dict[str, str] = {}
        self.rules: dict[str, Rule] = {}
        self.tags: list[tags.Tag] = []
        self.denied: set[str] = set()  # API names this account's role may not call
        self._ids = {table: itertools.count(first) for table, first in _FIRST_IDS.items()}
        self.account_id, self.user_id, self.domain_id = (new_id() for _ in range(3))
        self.network_id, self.ostype_id = new_id(), new_id()
        self.zone_id, self.zone_token, self.offering_id = new_id(), new_id(), new_id()
        self.created = time.time()
        featured = Template(new_id(), "CentOS 7", featured=True, account="system")
        own = Template(new_id(), "web-base", featured=False, account="sim")
        self.templates = {featured.id: featured, own.id: own}
        self.template_id, self.own_template_id = featured.id, own.id

    def next_id(self, table: str) -> int:
        """The next internal id of table (vm, rule, job, event, tag)."""
        return next(self._ids[table])

    def add_rule(self, name: str) -> Rule:
        """A new load-balancer rule with no members."""
        rule = Rule(id=new_id(), seq=self.next_id("rule"), name=name, publicipid=new_id(),
                    publicip=f"203.0.113.{10 + len(self.rules)}")
        self.rules[rule.id] = rule
        return rule

    def new_vm(self, *, name: Optional[str], displayname: Optional[str], state: str, ip: str,
               group: Optional[str], created: float, template_id: str,
               extra: Optional[dict[str, str]] = None) -> Vm:
        """Store a VM (hostname and display name default to its instance name)."""
        seq = self.next_id("vm")
        instancename = f"i-2-{seq}-VM"
        groupid = self.groups.setdefault(group, new_id()) if group is not None else None
        vm = Vm(id=new_id(), seq=seq, name=name or instancename,
                displayname=displayname or name or instancename, state=state, ip=ip,
                created=created, group=group, groupid=groupid, nic_id=new_id(),
                template_id=template_id, extra=dict(extra or {}))
        self.vms[vm.id] = vm
        return vm

    def listed_vms(self) -> list[Vm]:
        """The VMs a normal user lists: neither expunged nor Destroyed/Expunging."""
        return [vm for vm in self.vms.values()
                if not vm.removed and vm.state not in HIDDEN_STATES]

    def visible_members(self, rule_id: str) -> list[Vm]:
        """The members listLoadBalancerRuleInstances shows, in assignment order. KeyError."""
        return [self.vms[one] for one in self.rules[rule_id].members
                if not self.vms[one].removed and self.vms[one].state not in LB_HIDDEN_STATES]

    def find_resource(self, kind: str, given: str) -> Optional[str]:
        """The UUID of the live VM or rule that given (a UUID or an internal id) names, if any;
        the simulator keeps no other taggable resources."""
        candidates: list[Union[Vm, Rule]] = (
            [vm for vm in self.vms.values() if not vm.removed] if kind == "UserVm"
            else list(self.rules.values()) if kind == "LoadBalancer" else [])
        found = [one.id for one in candidates if given in (one.id, str(one.seq))]
        return found[0] if found else None

    def tags_of(self, resource_id: str) -> list[tags.Tag]:
        """The tags on one resource, oldest first."""
        return [tag for tag in self.tags if tag.resource_id == resource_id]

    def new_job(self, command: str, *, vm: Optional[Vm] = None, rule_id: Optional[str] = None,
                vm_ids: Optional[list[str]] = None, start: bool = True, expunge: bool = False,
                tag_request: Optional[tags.TagRequest] = None) -> Job:
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
        job.status, job.result_code = 2, error.code
        job.result = {"errorcode": error.code, "errortext": error.text}
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
                      state=state, level=level, time=when,
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
