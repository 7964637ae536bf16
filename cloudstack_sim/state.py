"""The simulated cloud's state and its state machine: VMs, load-balancer rules, async jobs, events,
guest addresses and the clock they share. No HTTP here; JSON comes from views."""

from __future__ import annotations

import ipaddress
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timezone
from typing import Any, Optional

from . import views
from .faults import JOB_FAULTS, FaultBook

__all__ = ["DEFAULT_IPS", "HIDDEN_STATES", "LB_HIDDEN_STATES", "MAX_PAGE_SIZE", "VM_STATES",
           "AddressPool", "Cloud", "Event", "Job", "Rule", "Template", "Vm", "check_loopback",
           "new_id"]

VM_STATES = ("Starting", "Running", "Stopping", "Stopped", "Destroyed", "Expunging", "Migrating",
             "Error", "Unknown", "Shutdown")
HIDDEN_STATES = frozenset({"Destroyed", "Expunging"})          # listVirtualMachines, normal user
LB_HIDDEN_STATES = frozenset({"Destroyed", "Expunging", "Error", "Unknown"})
MAX_PAGE_SIZE = 500
DEFAULT_IPS = tuple(f"127.0.1.{n}" for n in range(1, 255))

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
    name: str
    publicipid: str
    publicip: str
    members: list[str] = field(default_factory=list)


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
    resource_id: str
    resource_type: str
    time: float


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
                 admin: bool, faults: FaultBook) -> None:
        self.job_seconds = job_seconds
        self.tz = tz
        self.admin = admin
        self.faults = faults
        self.page_size = MAX_PAGE_SIZE
        self.addresses = AddressPool(ip_addresses)
        self.vms: dict[str, Vm] = {}
        self.jobs: dict[str, Job] = {}
        self.pending: dict[str, Job] = {}
        self.events: list[Event] = []
        self.groups: dict[str, str] = {}
        self.rules: dict[str, Rule] = {}
        self._seq = 0
        self.account_id, self.user_id, self.domain_id = (new_id() for _ in range(3))
        self.network_id, self.ostype_id = new_id(), new_id()
        self.zone_id, self.zone_token, self.offering_id = new_id(), new_id(), new_id()
        self.created = time.time()
        featured = Template(new_id(), "CentOS 7", featured=True, account="system")
        own = Template(new_id(), "web-base", featured=False, account="sim")
        self.templates = {featured.id: featured, own.id: own}
        self.template_id, self.own_template_id = featured.id, own.id

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def add_rule(self, name: str) -> Rule:
        """A new load-balancer rule with no members."""
        rule = Rule(id=new_id(), name=name, publicipid=new_id(),
                    publicip=f"203.0.113.{10 + len(self.rules)}")
        self.rules[rule.id] = rule
        return rule

    def new_vm(self, *, name: Optional[str], displayname: Optional[str], state: str, ip: str,
               group: Optional[str], created: float, template_id: str,
               extra: Optional[dict[str, str]] = None) -> Vm:
        """Store a VM (hostname and display name default to its instance name)."""
        seq = self._next_seq()
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

    def new_job(self, command: str, *, vm: Optional[Vm] = None, rule_id: Optional[str] = None,
                vm_ids: Optional[list[str]] = None, start: bool = True,
                expunge: bool = False) -> Job:
        """Start an async job due in job_seconds; a matching job fault makes it fail or hang."""
        fault = self.faults.take(command, JOB_FAULTS)
        now = time.time()
        job = Job(id=new_id(), seq=self._next_seq(), command=command, created=now,
                  due=now + self.job_seconds,
                  hang=fault is not None and fault.kind == "job_hang",
                  fail=fault.errortext if fault is not None and fault.kind == "job_fail" else None,
                  vm_id=vm.id if vm is not None else None, rule_id=rule_id,
                  vm_ids=vm_ids or [], start=start, expunge=expunge,
                  prev_state=vm.state if vm is not None else "")
        if vm is not None:
            vm.job_id = job.id
        self.jobs[job.id] = job
        self.pending[job.id] = job
        return job

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
        if job.fail is not None:
            self._fail(job, vm)
        elif job.command == "deployvirtualmachine" and vm is not None:
            self._finish_deploy(job, vm)
        elif job.command == "destroyvirtualmachine" and vm is not None:
            self._finish_destroy(job, vm)
        elif job.rule_id is not None:
            self._finish_lb_change(job)

    def _fail(self, job: Job, vm: Optional[Vm]) -> None:
        job.status, job.result_code = 2, 533
        job.result = {"errorcode": 533, "errortext": job.fail}
        if vm is not None and job.command == "deployvirtualmachine" and \
                vm.state in ("Stopped", "Starting"):
            vm.state = "Error"
        if vm is not None and job.command == "destroyvirtualmachine" and \
                vm.state in ("Stopping", "Stopped"):
            vm.state = job.prev_state

    def _finish_deploy(self, job: Job, vm: Vm) -> None:
        job.status = 1
        if vm.state in ("Stopped", "Starting"):
            vm.state = "Running" if job.start else "Stopped"
        job.result = {"virtualmachine": views.vm_json(self, vm)}
        self._emit("VM.CREATE", f"Successfully completed starting Vm. Vm Id: {vm.id}",
                   vm.id, "VirtualMachine", job.due)

    def _finish_destroy(self, job: Job, vm: Vm) -> None:
        job.status = 1
        vm.state = "Destroyed"
        for rule in self.rules.values():
            if vm.id in rule.members:
                rule.members.remove(vm.id)
        job.result = {"virtualmachine": views.vm_json(self, vm)}
        if job.expunge and not vm.removed:
            vm.removed, vm.state = True, "Expunging"
            self.addresses.release(vm.ip)
        self._emit("VM.DESTROY", f"Successfully completed destroying Vm. Vm Id: {vm.id}",
                   vm.id, "VirtualMachine", job.due)

    def _finish_lb_change(self, job: Job) -> None:
        assert job.rule_id is not None
        members = self.rules[job.rule_id].members
        present = [one for one in job.vm_ids if one in self.vms and not self.vms[one].removed]
        if job.command == "assigntoloadbalancerrule":
            members.extend(one for one in present if one not in members)
            event, verb = "LB.ASSIGN.TO.RULE", "assigning to"
        else:
            members[:] = [one for one in members if one not in present]
            event, verb = "LB.REMOVE.FROM.RULE", "removing from"
        job.status = 1
        job.result = {"success": True}
        self._emit(event, f"Successfully completed {verb} load balancer. Load balancer Id: "
                          f"{job.rule_id}, Vm Ids: {','.join(job.vm_ids)}",
                   job.rule_id, "LoadBalancerRule", job.due)

    def _emit(self, kind: str, description: str, resource_id: str, resource_type: str,
              when: float) -> None:
        self.events.append(Event(id=new_id(), seq=self._next_seq(), type=kind,
                                 description=description, resource_id=resource_id,
                                 resource_type=resource_type, time=when))

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
