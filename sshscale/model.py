"""The data one run passes along its path: Settings, what SSH measured, what the cloud holds,
what its history says, the Decision and the Report. Data only: no I/O, no clock."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from datetime import datetime, timezone, tzinfo
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from idcf_api import Account

__all__ = ["BROKEN", "GONE", "IN_SERVICE", "PERIODS", "SCOPE_KEYS", "TRANSITIONAL", "Action",
           "Backoff", "Bounds", "Check", "Decision", "Deploy", "History", "HostLoad", "Lease",
           "Measurement", "Notice", "Notify", "Observation", "Pending", "Pool", "Report",
           "Schedule", "Settings", "Vm", "Window", "shown_time", "vm_count"]

PERIODS = (1, 5, 15)
IN_SERVICE = ("Running", "Starting", "Migrating")
# Not "Unknown": a VM on a disconnected host may come back; it is left alone.
BROKEN = ("Error", "Stopped", "Shutdown")
GONE = ("Destroyed", "Expunging")
# States a VM passes through on its way somewhere: stuck there without a job, it is broken.
TRANSITIONAL = ("Starting", "Stopping")
SCOPE_KEYS = ("projectid", "account", "domainid")


def vm_count(count: int) -> str:
    """"1 VM", "3 VMs": a number of VMs as the lines say it."""
    return f"{count} VM{'' if count == 1 else 's'}"


def shown_time(when: datetime, zone: tzinfo) -> str:
    """A time as the lines show it: in the monitor's zone (the log lines' own), with its name."""
    return when.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z")


class Action(enum.Enum):
    """What one run does."""

    NONE = "none"
    SCALE_OUT = "scale out"
    SCALE_IN = "scale in"
    ADOPT = "adopt"
    READD = "re-add"
    DESTROY = "destroy"
    REPLACE = "replace"


@dataclass(frozen=True)
class Settings:
    """Everything one run needs, validated (config.py builds it; defaults are declared here
    once)."""

    source: str
    account: Account
    hosts: tuple[str, ...]
    user: Optional[str]
    private_key_path: Optional[str]
    pass_phrase: str = field(repr=False)
    launch: Mapping[str, str]
    min_size: int
    max_size: int
    load_balancer: str
    threshold_out: float
    threshold_in: float
    port: Optional[int] = None
    connect_timeout: float = 10.0
    command_timeout: float = 10.0
    command: str = "cat /proc/loadavg"
    host_key_policy: str = "accept-new"
    monitor_members: bool = False
    boot_grace: float = 300.0
    min_reporting: int = 1
    quorum: str = "75%"  # a count or a percentage of the measured hosts (see fleet.parse_limit)
    aggregate: str = "mean"
    per_cpu: bool = False
    max_parallel: int = 64
    job_timeout: float = 900.0
    expunge: bool = False
    drain_seconds: float = 30.0
    protect_unmanaged: bool = True
    max_backoff: float = 3600.0
    launch_budget: Optional[int] = None  # VMs per hour; None: 2 x max_size (budget())
    cooldown_out: float = 120.0
    cooldown_in: float = 300.0
    period_out: int = 1
    period_in: int = 1
    step_out: str = "1"
    health_check: str = "none"
    health_url: str = "http://{ip}:80/healthz"
    health_timeout: float = 5.0
    unhealthy_runs: int = 3
    health_grace: float = 300.0
    max_unhealthy: str = "50%"
    termination_policy: str = "newest"
    refresh: bool = False
    schedules: tuple[Schedule, ...] = ()
    notify: Optional[Notify] = None
    metrics_textfile: Optional[str] = None
    policy: str = "threshold"
    target_out: Optional[float] = None  # None: target.targets() derives it from the thresholds
    target_in: Optional[float] = None
    forecast: float = 240.0
    stabilization: float = 600.0
    zone: tzinfo = timezone.utc  # the monitor's, for the times the lines show (config sets it)

    @property
    def group(self) -> str:
        """The instance group that marks the VMs this tool created for this pool."""
        return self.launch.get("group") or f"ssh_scale-{self.load_balancer}"

    @property
    def scope(self) -> dict[str, str]:
        """Whose resources the pool's list calls read: the project or account [launch_config]
        deploys into (projectid, or account and domainid), else the caller's own."""
        return {key: self.launch[key] for key in SCOPE_KEYS if self.launch.get(key)}

    def budget(self) -> int:
        """VMs this pool may create per hour (launch_budget, else twice max_size)."""
        return self.launch_budget if self.launch_budget is not None else 2 * self.max_size


@dataclass(frozen=True)
class HostLoad:
    """One host's answer: load averages (1, 5, 15 min) and CPU count, or why there is none."""

    host: str
    address: Optional[str] = None
    loads: Optional[tuple[float, float, float]] = None
    cpus: Optional[int] = None
    error: Optional[str] = None

    def value(self, period: int, per_cpu: bool) -> Optional[float]:
        """The load for a period (1, 5 or 15 minutes), per CPU when asked."""
        if self.loads is None:
            return None
        load = self.loads[PERIODS.index(period)]
        return load / self.cpus if per_cpu and self.cpus else load


@dataclass(frozen=True)
class Measurement:
    """What the SSH side saw this run."""

    hosts: tuple[HostLoad, ...] = ()

    @property
    def answered(self) -> tuple[HostLoad, ...]:
        """The hosts that gave a load."""
        return tuple(h for h in self.hosts if h.loads is not None)


@dataclass(frozen=True)
class Check:
    """One member's health check this run: passed or not, and what failed."""

    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class Vm:
    """A VM as far as scaling cares; `managed`: proven the pool's (sshscale/ownership.py);
    `outdated`: managed, and its template or service offering is not [launch_config]'s;
    `check`: this run's health check (None: not checked)."""

    id: str
    name: str
    state: str
    created: Optional[datetime] = None
    ip: Optional[str] = None
    in_lb: bool = False
    managed: bool = False
    monitored: bool = False
    jobid: Optional[str] = None
    tags: tuple[tuple[str, str], ...] = ()
    outdated: bool = False
    check: Optional[Check] = None
    legacy: bool = False  # ours by an earlier version's evidence, not yet tagged as ours
    doubt: str = ""  # why a VM carrying part of the pool's identity is not taken as ours

    def tag(self, key: str) -> Optional[str]:
        """The value of a resource tag (keys compare case-insensitively, as CloudStack's do)."""
        return next((v for k, v in self.tags if k.lower() == key.lower()), None)


@dataclass(frozen=True)
class Pool:
    """The load balancer's members and every managed VM (in the pool or not)."""

    vms: tuple[Vm, ...] = ()

    # Cached: a pool never changes, and decide() and the replay ask for these many times.
    @cached_property
    def members(self) -> tuple[Vm, ...]:
        """The VMs the load-balancer rule lists."""
        return tuple(v for v in self.vms if v.in_lb)

    @cached_property
    def in_service(self) -> tuple[Vm, ...]:
        """Members that are Running, Starting or Migrating."""
        return tuple(v for v in self.members if v.state in IN_SERVICE)

    @property
    def count(self) -> int:
        """Pool size: members that are Running, Starting or Migrating."""
        return len(self.in_service)

    @property
    def committed(self) -> int:
        """What max_size bounds: the pool plus every managed VM that exists outside it (booting,
        drained, Stopped, Error), so that nothing can run away."""
        extra = [v for v in self.vms if v.managed and v not in self.in_service
                 and v.state not in GONE]
        return self.count + len(extra)


@dataclass(frozen=True)
class Backoff:
    """Deploys held back after failed ones: how many failed in a row, and until when."""

    failures: int
    until: datetime


@dataclass(frozen=True)
class Lease:
    """Who acts on the pool now (one run of one monitor), and until when at the latest."""

    holder: str
    expires: datetime


@dataclass(frozen=True)
class History:
    """What the cloud keeps about earlier changes to this pool (the load-balancer rule's tags,
    the event log where they are missing)."""

    last_scale_out: Optional[datetime] = None
    last_scale_in: Optional[datetime] = None
    backoff: Optional[Backoff] = None
    lease: Optional[Lease] = None
    backoff_keys: tuple[str, ...] = ()  # the tags that hold the backoff (to remove it)
    deploy_seconds: Optional[float] = None  # how long the last scale-out's deploy took
    launches: tuple[tuple[str, datetime], ...] = ()  # (tag key, time) of each launch record
    budget_notice: Optional[datetime] = None  # when the launch budget first held a deploy
    refresh_halted: Optional[str] = None  # the launch fingerprint the refresh halted on
    upgraded: bool = False  # this version has acted on the pool (ssh-scale:upgraded)
    noisy: Optional[datetime] = None  # when a target scale-out last marked the pool noisy


@dataclass(frozen=True)
class Observation:
    """What one run saw: the measurement, the pool, and the time on the cloud's clock."""

    measurement: Measurement
    pool: Pool
    now: datetime


@dataclass(frozen=True)
class Notice:
    """A brake that engaged (the launch budget, a halted refresh, a replacement given up):
    recorded once in a tag (key, value) on the load-balancer rule or a VM, and told once
    (text) by the run that records it."""

    key: str
    value: str
    text: str
    vm_id: Optional[str] = None  # None: on the load-balancer rule


@dataclass(frozen=True)
class Decision:
    """The one change this run makes (or none), and why."""

    action: Action
    reason: str
    vms: tuple[Vm, ...] = ()
    count: int = 0
    rule: str = "none"
    needs_history: bool = False
    held_until: Optional[datetime] = None
    notice: Optional[Notice] = None  # a brake this decision engages, to record and tell once
    noisy: bool = False  # a target scale-out that marks the pool noisy (recorded with it)


@dataclass(frozen=True)
class Deploy:
    """A deployVirtualMachine call the cloud accepted: the new VM and its job."""

    vm_id: str
    jobid: str  # empty for a deploy whose call failed but whose VM the cloud lists
    name: str = ""


@dataclass(frozen=True)
class Pending:
    """Deploys a run started and waits for after giving back the lock and the lease (policy
    = target), and the cloud's clock (its offset from this machine's, in seconds)."""

    deploys: tuple[Deploy, ...]
    skew: float = 0.0
    noisy: bool = False  # the scale-out marks the pool noisy: recorded when its VMs join


@dataclass
class Report:
    """What one run saw, decided and did, filled as the run goes (so that a failing run still
    reports what it saw): `result` says what the action did, `error` why the run failed."""

    time: str
    measurement: Measurement = field(default_factory=Measurement)
    pool: Pool = field(default_factory=Pool)
    decision: Optional[Decision] = None
    load_out: Optional[float] = None
    load_in: Optional[float] = None
    result: str = ""
    error: Optional[str] = None
    dry_run: bool = False
    pool_read: bool = False
    history: Optional[History] = None
    bounds: Optional[Bounds] = None
    vm_ids: tuple[str, ...] = ()  # the VMs the action touched (deployed, removed, repaired)
    pool_after: Optional[int] = None  # the pool's size after the action, once known
    pending: Optional[Pending] = None  # a target scale-out's deploys, finished after the lock
    notices: list[str] = field(default_factory=list)  # brakes this run engaged (told once)


@dataclass(frozen=True)
class Schedule:
    """A [schedule NAME] window: open for `duration` seconds from each time `cron` fires (in
    `zone`), with the pool bounds it sets (either or both)."""

    name: str
    cron: str
    duration: float
    zone: tzinfo
    min_size: Optional[int] = None
    max_size: Optional[int] = None


@dataclass(frozen=True)
class Notify:
    """[notify]: where to tell about actions and failures, which ones, and how long to try."""

    webhook: Optional[str] = field(default=None, repr=False)  # the URL holds a token
    command: tuple[str, ...] = ()
    events: tuple[str, ...] = ()
    timeout: float = 5.0


@dataclass(frozen=True)
class Window:
    """A schedule's window that is open now: when it opened (its cron's last fire) and when
    it closes."""

    schedule: Schedule
    opened: datetime
    closes: datetime


@dataclass(frozen=True)
class Bounds:
    """The pool bounds in force at one time: [scaling] min_size/max_size, or those of the open
    schedule windows (the largest of each; min_size lowered to max_size if above it), with
    the names of the schedules that set them."""

    min_size: int
    max_size: int
    windows: tuple[Window, ...] = ()
    min_from: Optional[str] = None
    max_from: Optional[str] = None
    clamped: bool = False
    closed: tuple[str, ...] = ()  # the configured schedules whose windows are closed
