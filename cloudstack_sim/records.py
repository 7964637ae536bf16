"""The simulated cloud's records (VMs, load-balancer rules, async jobs, events, resource tags,
guest addresses) and the queries every other module reads them with. Every object has an
internal numeric id next to its UUID, as in the server's database; the API shows only UUIDs,
event texts only the numbers. The lowest layer but one: it imports only versions and params."""

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

from .versions import Server

__all__ = ["DEFAULT_IPS", "HIDDEN_STATES", "LB_HIDDEN_STATES", "MAX_PAGE_SIZE", "VM_STATES",
           "AddressPool", "Event", "Job", "Rule", "Tag", "TagRequest", "Template", "Vm", "World",
           "check_loopback", "new_id"]

VM_STATES = ("Starting", "Running", "Stopping", "Stopped", "Destroyed", "Expunging", "Migrating",
             "Error", "Unknown", "Shutdown")
HIDDEN_STATES = frozenset({"Destroyed", "Expunging"})          # listVirtualMachines, normal user
LB_HIDDEN_STATES = frozenset({"Destroyed", "Expunging", "Error", "Unknown"})
MAX_PAGE_SIZE = 500
DEFAULT_IPS = tuple(f"127.0.1.{n}" for n in range(1, 255))
# Each table's first internal id: far apart, so that a rule's number in an event text is never
# a VM's number too.
_FIRST_IDS = {"vm": 1, "rule": 42, "job": 1, "event": 1, "tag": 1}

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
    tags: Optional[TagRequest] = None
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


@dataclass
class Tag:
    seq: int
    key: str
    value: str
    resource_type: str
    resource_id: str


@dataclass
class TagRequest:
    """What a createTags or deleteTags job was asked: the names as the caller spelled them."""

    resource_type: str
    resource_ids: list[str]
    pairs: list[tuple[str, Optional[str]]]


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

class World:
    """The cloud's records and the queries over them: one zone, one offering, a featured and an
    own template, LB rules, VMs, jobs, events and tags, as the server version `server` keeps
    them. state.Cloud adds what changes them over time."""

    def __init__(self, *, job_seconds: float, ip_addresses: Sequence[str], tz: timezone,
                 admin: bool, server: Server, untaggable: frozenset[str]) -> None:
        self.job_seconds = job_seconds
        self.tz = tz
        self.admin = admin
        self.server = server
        self.untaggable = untaggable
        self.page_size = MAX_PAGE_SIZE
        self.addresses = AddressPool(ip_addresses)
        self.vms: dict[str, Vm] = {}
        self.jobs: dict[str, Job] = {}
        self.pending: dict[str, Job] = {}
        self.events: list[Event] = []
        self.groups: dict[str, str] = {}
        self.rules: dict[str, Rule] = {}
        self.tags: list[Tag] = []
        self._ids = {table: itertools.count(first) for table, first in _FIRST_IDS.items()}
        self.account_id, self.user_id, self.domain_id = (new_id() for _ in range(3))
        self.network_id, self.ostype_id = new_id(), new_id()
        self.zone_id, self.zone_token, self.offering_id = new_id(), new_id(), new_id()
        self.created = time.time()
        #: Seconds the cloud's clock is ahead of the real one when it stamps a record.
        self.record_skew = 0.0
        featured = Template(new_id(), "CentOS 7", featured=True, account="system")
        own = Template(new_id(), "web-base", featured=False, account="sim")
        self.templates = {featured.id: featured, own.id: own}
        self.template_id, self.own_template_id = featured.id, own.id

    def stamp(self, when: float) -> float:
        """The cloud's time for a record made at real time `when` (epoch seconds)."""
        return when + self.record_skew

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

    def tags_of(self, resource_id: str) -> list[Tag]:
        """The tags on one resource, oldest first."""
        return [tag for tag in self.tags if tag.resource_id == resource_id]
