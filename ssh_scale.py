"""Scale a CloudStack load-balancer pool by the load average read over SSH.

Run it from cron every minute. Each run reads ~/.idcfrc, measures the load of the
monitored web VM (or of every pool member) over SSH, reads the pool from the
CloudStack API, decides with one pure function, and makes at most one change:
deploy a VM and add it to the load balancer, or take one out and destroy it.
Crash leftovers of earlier runs are repaired from what the cloud knows.

  * * * * * ssh_scale.py >> /var/log/ssh_scale.log 2>&1
"""

from __future__ import annotations

import argparse
import configparser
import contextlib
import enum
import fcntl
import getpass
import hashlib
import json
import logging
import math
import os
import re
import socket
import stat
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import MISSING, dataclass, field, fields, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Optional

import idcf_api
from idcf_api import Account, Client, ConfigError, JobFailed, JobTimeout

__version__ = idcf_api.__version__

log = logging.getLogger("ssh_scale")

PROG = "ssh_scale.py"
ALIASES = {
    "scaling": ("scalling", "scaling"),
    "policy_out": ("scalling_policy_out", "scaling_policy_out"),
    "policy_in": ("scalling_policy_in", "scaling_policy_in"),
}
KNOWN_KEYS = {
    "monitoring": ("host", "user", "private_key_path", "pass_phrase", "port", "connect_timeout",
                   "command_timeout", "command", "host_key_policy", "monitor_members",
                   "boot_grace", "min_reporting", "aggregate", "per_cpu", "max_parallel"),
    "scaling": ("min_size", "max_size", "load_balancer", "job_timeout", "expunge",
                "drain_seconds", "protect_unmanaged"),
    "policy_out": ("threshold", "cooldown", "period", "step"),
    "policy_in": ("threshold", "cooldown", "period"),
}
REQUIRED_LAUNCH_KEYS = ("serviceofferingid", "templateid", "zoneid")
HOST_KEY_POLICIES = ("accept-new", "strict", "off")
IN_SERVICE = ("Running", "Starting", "Migrating")
# Not "Unknown": a VM on a disconnected host may come back; it is left alone.
BROKEN = ("Error", "Stopped", "Shutdown")
PERIODS = (1, 5, 15)
CPU_COMMAND = "getconf _NPROCESSORS_ONLN"
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
IGNORED_SKEW = 5.0  # seconds: the Date header's resolution plus the answer's latency


class ScaleError(Exception):
    """Base of this module's operational errors."""


class SshError(ScaleError):
    """The monitored host could not be measured."""


class LockBusy(ScaleError):
    """Another run holds the lock for this config."""


class CommandFailed(Exception):
    """The monitoring command failed, or did not finish within command_timeout."""


# --- data -----------------------------------------------------------------------------------


class Action(enum.Enum):
    """What one run does."""

    NONE = "none"
    SCALE_OUT = "scale out"
    SCALE_IN = "scale in"
    ADOPT = "adopt"
    READD = "re-add"
    DESTROY = "destroy"


@dataclass(frozen=True)
class Settings:
    """Everything one run needs, validated."""

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
    aggregate: str = "mean"
    per_cpu: bool = False
    max_parallel: int = 64
    job_timeout: float = 900.0
    expunge: bool = False
    drain_seconds: float = 30.0
    protect_unmanaged: bool = True
    cooldown_out: float = 120.0
    cooldown_in: float = 300.0
    period_out: int = 1
    period_in: int = 1
    step_out: str = "1"

    @property
    def group(self) -> str:
        """The instance group that marks the VMs this tool created for this pool."""
        return self.launch.get("group") or f"ssh_scale-{self.load_balancer}"


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
        return tuple(h for h in self.hosts if h.loads is not None)


@dataclass(frozen=True)
class Vm:
    """A VM as far as scaling cares."""

    id: str
    name: str
    state: str
    created: Optional[datetime] = None
    ip: Optional[str] = None
    displayname: str = ""
    instancename: str = ""
    group: Optional[str] = None
    in_lb: bool = False
    managed: bool = False
    monitored: bool = False
    jobid: Optional[str] = None


@dataclass(frozen=True)
class Pool:
    """The load balancer's members and every managed VM (in the pool or not)."""

    vms: tuple[Vm, ...] = ()

    @property
    def members(self) -> tuple[Vm, ...]:
        return tuple(v for v in self.vms if v.in_lb)

    @property
    def in_service(self) -> tuple[Vm, ...]:
        return tuple(v for v in self.members if v.state in IN_SERVICE)

    @property
    def count(self) -> int:
        """Pool size: members that are Running, Starting or Migrating."""
        return len(self.in_service)


@dataclass(frozen=True)
class History:
    """What the cloud's event log says about earlier changes to this pool."""

    last_scale_out: Optional[datetime] = None
    last_scale_in: Optional[datetime] = None
    drained: frozenset[str] = frozenset()


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


# --- configuration ----------------------------------------------------------------------------


_DEFAULTS = {f.name: f.default for f in fields(Settings) if f.default is not MISSING}


class _Section:
    """Typed, validated access to one INI section; errors name file, section and key."""

    def __init__(self, source: str, name: str, values: Mapping[str, str]) -> None:
        self.source, self.name, self.values = source, name, values

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: [{self.name}] {key}: {message}")

    def text(self, key: str, default: Optional[str] = None) -> str:
        value = self.values.get(key, "").strip()
        if value:
            return value
        if default is None:
            raise self.error(key, "missing" if key not in self.values else "empty")
        return default

    def number(self, key: str, default: Optional[float] = None, minimum: float = 0.0,
               above: bool = False) -> float:
        raw = self.text(key, None if default is None else repr(default))
        try:
            value = float(raw)
        except ValueError:
            raise self.error(key, f"expected a number, got {raw!r}") from None
        if not math.isfinite(value) or value < minimum or (above and value == minimum):
            relation = "greater than" if above else "at least"
            raise self.error(key, f"expected a number {relation} {minimum:g}, got {raw!r}")
        return value

    def integer(self, key: str, default: Optional[int] = None, minimum: int = 0) -> int:
        raw = self.text(key, None if default is None else str(default))
        if not re.fullmatch(r"[+-]?\d+", raw):
            raise self.error(key, f"expected an integer, got {raw!r}")
        if int(raw) < minimum:
            raise self.error(key, f"expected an integer of at least {minimum}, got {raw!r}")
        return int(raw)

    def boolean(self, key: str, default: bool) -> bool:
        raw = self.text(key, "yes" if default else "no").lower()
        if raw in ("yes", "true", "on", "1"):
            return True
        if raw in ("no", "false", "off", "0"):
            return False
        raise self.error(key, f"expected yes or no, got {raw!r}")

    def choice(self, key: str, default: str, choices: Sequence[str]) -> str:
        raw = self.text(key, default).lower()
        if raw not in choices:
            raise self.error(key, f"expected one of {', '.join(choices)}, got {raw!r}")
        return raw

    def check_known(self, known: Sequence[str]) -> None:
        for key in self.values:
            if key not in known:
                raise self.error(key, "unknown key" + idcf_api.did_you_mean(key, known))


def display_path(path: str) -> str:
    """The path with the home directory shown as ~."""
    home = os.path.expanduser("~")
    return "~" + path[len(home):] if home != "/" and path.startswith(home + "/") else path


def _section(parser: configparser.ConfigParser, source: str, logical: str,
             required: bool = True) -> _Section:
    names = ALIASES.get(logical, (logical,))
    present = [n for n in names if parser.has_section(n)]
    if len(present) > 1:
        raise ConfigError(f"{source}: both [{present[0]}] and [{present[1]}]: "
                          "keep one spelling of the section")
    if not present:
        if required:
            raise ConfigError(f"{source}: [{names[0]}]: missing section")
        return _Section(source, names[0], {})
    section = _Section(source, present[0], dict(parser[present[0]]))
    if logical in KNOWN_KEYS:
        section.check_known(KNOWN_KEYS[logical])
    return section


def settings_from_config(parser: configparser.ConfigParser, source: str,
                         environ: Optional[Mapping[str, str]] = None,
                         ssh_config: Optional[Any] = None, check_key: bool = True) -> Settings:
    """Validate a parsed config into Settings; raises ConfigError naming section and key.
    Absent optional keys take the defaults declared on Settings."""
    default = _DEFAULTS
    account = idcf_api.account_from_config(parser, source, environ)
    mon = _section(parser, source, "monitoring")
    launch = _section(parser, source, "launch_config")
    scaling = _section(parser, source, "scaling")
    out = _section(parser, source, "policy_out")
    inn = _section(parser, source, "policy_in")
    for key in REQUIRED_LAUNCH_KEYS:
        launch.text(key)
    if launch.values.get("startvm", "true").strip().lower() != "true":
        raise launch.error("startvm", "must be true (or absent): the pool needs running VMs")
    monitor_members = mon.boolean("monitor_members", default["monitor_members"])
    hosts = tuple(h.strip() for h in mon.text("host", "" if monitor_members else None)
                  .split(",") if h.strip())
    min_size = scaling.integer("min_size", minimum=1)
    max_size = scaling.integer("max_size", minimum=1)
    if min_size > max_size:
        raise scaling.error("min_size", f"{min_size} is greater than max_size {max_size}")
    threshold_out = out.number("threshold", above=True)
    threshold_in = inn.number("threshold")
    if threshold_in >= threshold_out:
        raise inn.error("threshold", f"{threshold_in:g} must be below "
                        f"[{out.name}] threshold {threshold_out:g}")
    port = mon.integer("port", 0, minimum=1) if mon.values.get("port") else None
    if port is not None and port > 65535:
        raise mon.error("port", f"expected a port number (1-65535), got {port}")
    settings = Settings(
        source=source, account=account, hosts=hosts,
        user=mon.values.get("user", "").strip() or None,
        private_key_path=_expand(mon.values.get("private_key_path", "").strip()) or None,
        pass_phrase=mon.values.get("pass_phrase", ""),
        launch=dict(launch.values),
        min_size=min_size, max_size=max_size,
        load_balancer=scaling.text("load_balancer"),
        threshold_out=threshold_out, threshold_in=threshold_in,
        port=port,
        connect_timeout=mon.number("connect_timeout", default["connect_timeout"], above=True),
        command_timeout=mon.number("command_timeout", default["command_timeout"], above=True),
        command=mon.text("command", default["command"]),
        host_key_policy=mon.choice("host_key_policy", default["host_key_policy"],
                                   HOST_KEY_POLICIES),
        monitor_members=monitor_members,
        boot_grace=mon.number("boot_grace", default["boot_grace"]),
        min_reporting=mon.integer("min_reporting", default["min_reporting"], minimum=1),
        aggregate=mon.choice("aggregate", default["aggregate"], ("mean", "max")),
        per_cpu=mon.boolean("per_cpu", default["per_cpu"]),
        max_parallel=mon.integer("max_parallel", default["max_parallel"], minimum=1),
        job_timeout=scaling.number("job_timeout", default["job_timeout"], above=True),
        expunge=scaling.boolean("expunge", default["expunge"]),
        drain_seconds=scaling.number("drain_seconds", default["drain_seconds"]),
        protect_unmanaged=scaling.boolean("protect_unmanaged", default["protect_unmanaged"]),
        cooldown_out=out.number("cooldown", default["cooldown_out"]),
        cooldown_in=inn.number("cooldown", default["cooldown_in"]),
        period_out=_period(out, default["period_out"]),
        period_in=_period(inn, default["period_in"]),
        step_out=out.choice("step", default["step_out"], ("1", "proportional")),
    )
    if check_key:
        _check_key_file(settings, mon, ssh_config)
    return settings


def _period(section: _Section, default: int) -> int:
    period = section.integer("period", default, minimum=1)
    if period not in PERIODS:
        raise section.error("period", f"expected 1, 5 or 15 (minutes), got {period}")
    return period


def _expand(path: str) -> str:
    return os.path.expanduser(path) if path else ""


def _check_key_file(settings: Settings, mon: _Section, ssh_config: Optional[Any]) -> None:
    names = settings.hosts or ("*",)
    for host in names:
        path = key_path_for(settings, lookup_ssh_config(ssh_config, host))
        if path is None:
            raise mon.error("private_key_path", "missing (and no IdentityFile in ~/.ssh/config "
                                                f"for {host})")
        if not os.path.isfile(path):
            raise mon.error("private_key_path", f"{path}: no such file")
        if not os.access(path, os.R_OK):
            raise mon.error("private_key_path", f"{path}: not readable")


def load_settings(path: Optional[str] = None, environ: Optional[Mapping[str, str]] = None,
                  ssh_config: Optional[Any] = None, check_key: bool = True) -> Settings:
    """Read and validate the config file (-c, else $IDCFRC, else ~/.idcfrc); the key file
    is not needed (nor checked) for an offline replay."""
    resolved = idcf_api.config_path(path, environ)
    parser = idcf_api.read_config(resolved)
    return settings_from_config(parser, display_path(resolved), environ, ssh_config, check_key)


def insecure_permissions(path: str) -> bool:
    """True when the file (which holds secrets) is readable or writable by group or others."""
    try:
        return bool(os.stat(path).st_mode & (stat.S_IRWXG | stat.S_IRWXO))
    except OSError:
        return False


# --- measuring (pure parsing) ---------------------------------------------------------------


_NUMBER = re.compile(r"-?\d+(?:[.,]\d+)?")


def parse_load(text: str, per_cpu: bool = False) -> tuple[tuple[float, float, float],
                                                            Optional[int]]:
    """Load averages from /proc/loadavg, any common `uptime` output, or a custom command
    (its first number is the metric); with per_cpu, the last line is the CPU count.

    Raises ValueError for output without a usable number."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    cpus = None
    if per_cpu:
        if len(lines) < 2 or not lines[-1].strip().isdigit() or int(lines[-1]) < 1:
            raise ValueError("no CPU count on the last line of the output")
        cpus = int(lines.pop().strip())
    if not lines:
        raise ValueError("empty output")
    body = " ".join(lines)
    marker = re.search(r"load averages?:", body, re.IGNORECASE)
    numbers = _NUMBER.findall(body[marker.end():] if marker else lines[0])
    values = [float(n.replace(",", ".")) for n in numbers]
    if marker and len(values) >= 3:
        loads = (values[0], values[1], values[2])
    elif not marker and re.match(r"\s*[\d.]+\s+[\d.]+\s+[\d.]+\s+\d+/\d+", lines[0]):
        loads = (values[0], values[1], values[2])
    elif values and not marker:
        loads = (values[0],) * 3
    else:
        raise ValueError(f"no load average in {text.strip()[:60]!r}")
    if any(v < 0 or not math.isfinite(v) for v in loads):
        raise ValueError(f"negative load in {text.strip()[:60]!r}")
    return loads, cpus


def aggregate_load(measurement: Measurement, period: int, settings: Settings) -> Optional[float]:
    """The pool's load for a period, or None when fewer than min_reporting hosts answered."""
    values = [v for v in (h.value(period, settings.per_cpu) for h in measurement.hosts)
              if v is not None]
    if len(values) < settings.min_reporting or not values:
        return None
    return max(values) if settings.aggregate == "max" else sum(values) / len(values)


# --- the decision (pure) ---------------------------------------------------------------------


def decide(measurement: Measurement, pool: Pool, settings: Settings, now: datetime,
           history: Optional[History] = None) -> Decision:
    """The one change to make now, first matching rule wins.

    Repairs of crash leftovers come first (those that give the pool a VM back before min_size,
    so that a destroy the cloud keeps refusing never blocks filling the pool), then
    min/max, then the load rules, which respect the cooldowns. ``history=None`` means the
    event log was not read: when an answer depends on it, the Decision says
    ``needs_history`` and the caller asks again with it."""
    repair = _plan_repair(pool, settings, history)
    count = pool.count
    if repair is not None and (repair.action is not Action.DESTROY
                               or count >= settings.min_size or repair.needs_history):
        return repair
    if count < settings.min_size:
        return Decision(Action.SCALE_OUT, f"pool has {count} VMs, below min_size "
                        f"{settings.min_size}", count=1, rule="min_size")
    if repair is not None:
        return repair
    if count > settings.max_size:
        return _scale_in(pool, settings, "max_size",
                         f"pool has {count} VMs, above max_size {settings.max_size}")
    load_out = aggregate_load(measurement, settings.period_out, settings)
    load_in = aggregate_load(measurement, settings.period_in, settings)
    if load_out is None or load_in is None:
        return Decision(Action.NONE, "load unknown (fewer than "
                        f"{settings.min_reporting} host(s) answered): only min/max may act")
    if load_out > settings.threshold_out and count < settings.max_size:
        reason = (f"load {load_out:.2f} > threshold_out {settings.threshold_out:g} "
                  f"({_load_label(measurement, settings.period_out, settings)})")
        step = _step_size(load_out, count, settings)
        held = _cooldown_hold(history, now, settings, Action.SCALE_OUT)
        if held is not None:
            return held
        return Decision(Action.SCALE_OUT, reason, count=step, rule="threshold_out")
    if load_in < settings.threshold_in and count > settings.min_size:
        held = _cooldown_hold(history, now, settings, Action.SCALE_IN)
        if held is not None:
            return held
        return _scale_in(pool, settings, "threshold_in",
                         f"load {load_in:.2f} < threshold_in {settings.threshold_in:g} "
                         f"({_load_label(measurement, settings.period_in, settings)})")
    return Decision(Action.NONE, _steady_reason(load_out, load_in, count, settings))


def _plan_repair(pool: Pool, settings: Settings, history: Optional[History]) -> Optional[Decision]:
    ours = [v for v in pool.vms if v.managed and not v.monitored]
    # A VM listed Stopped with a pending job is a deploy still under way (Stopped, Starting,
    # Running): it is adopted after its job, like a Starting one.
    building = [v for v in ours if v.state == "Stopped" and v.jobid]
    broken = [v for v in ours if v.state in BROKEN and v not in building]
    orphans = [v for v in ours if not v.in_lb and (v.state in IN_SERVICE or v in building)]
    if broken and not (orphans and pool.count < settings.min_size):
        vm = broken[0]
        return Decision(Action.DESTROY, f"repair: managed VM {vm.name} is {vm.state}",
                        vms=(vm,), count=1, rule="repair")
    if not orphans:
        return None
    if history is None:
        return Decision(Action.NONE, "repair pending: reading the event log",
                        needs_history=True, rule="repair")
    vm = orphans[0]
    count = pool.count
    if vm.id in history.drained:
        if count < settings.min_size:
            return Decision(Action.READD, f"repair: drained VM {vm.name} re-added, pool has "
                            f"{count} VMs, below min_size {settings.min_size}",
                            vms=(vm,), count=1, rule="repair")
        return Decision(Action.DESTROY, f"repair: VM {vm.name} was taken out of the load "
                        "balancer but not destroyed", vms=(vm,), count=1, rule="repair")
    if count < settings.max_size:
        return Decision(Action.ADOPT, f"repair: managed VM {vm.name} ({vm.state}) is not in the "
                        f"load balancer; adopting it (pool {count} < max_size "
                        f"{settings.max_size})", vms=(vm,), count=1, rule="repair")
    return Decision(Action.DESTROY, f"repair: managed VM {vm.name} is not in the load "
                    f"balancer and the pool is full ({count} = max_size)",
                    vms=(vm,), count=1, rule="repair")


def _scale_in(pool: Pool, settings: Settings, rule: str, reason: str) -> Decision:
    candidates = [v for v in pool.in_service if not v.monitored
                  and (v.managed or not settings.protect_unmanaged)]
    if not settings.protect_unmanaged and settings.hosts and not any(
            v.monitored for v in pool.members):
        return Decision(Action.NONE, f"{reason}, but no member is recognised as the monitored "
                        "VM and protect_unmanaged = no: not scaling in", rule=rule)
    if not candidates:
        kind = "managed " if settings.protect_unmanaged else ""
        return Decision(Action.NONE, f"{reason}, but no {kind}VM other than the monitored one "
                        "may be removed", rule=rule)
    victim = max(candidates, key=lambda v: (v.created or datetime.min.replace(
        tzinfo=timezone.utc), v.name))
    return Decision(Action.SCALE_IN, reason, vms=(victim,), count=1, rule=rule)


def _step_size(load: float, count: int, settings: Settings) -> int:
    if settings.step_out != "proportional" or count == 0:
        return 1
    wanted = math.ceil(count * load / settings.threshold_out) - count
    return max(1, min(wanted, settings.max_size - count))


def _cooldown_hold(history: Optional[History], now: datetime, settings: Settings,
                   action: Action) -> Optional[Decision]:
    if action is Action.SCALE_OUT:
        cooldown, name = settings.cooldown_out, "scale-out cooldown"
    else:
        cooldown, name = settings.cooldown_in, "scale-in cooldown"
    if cooldown <= 0:
        return None
    if history is None:
        return Decision(Action.NONE, f"{action.value} considered: reading the event log",
                        needs_history=True, rule="cooldown")
    if action is Action.SCALE_OUT:
        last = history.last_scale_out
    else:
        last = max((t for t in (history.last_scale_in, history.last_scale_out) if t),
                   default=None)
    if last is None or now >= last + timedelta(seconds=cooldown):
        return None
    until = last + timedelta(seconds=cooldown)
    return Decision(Action.NONE, f"{action.value} held back by the {name} ({cooldown:g} s) "
                    f"until {until.astimezone().strftime(TIME_FORMAT)}",
                    rule="cooldown", held_until=until)


def _load_label(measurement: Measurement, period: int, settings: Settings) -> str:
    answered = len(measurement.answered)
    per_cpu = " per CPU" if settings.per_cpu else ""
    how = f"{settings.aggregate} of {answered} hosts" if answered > 1 else "1 host"
    return f"{period}-min{per_cpu}, {how}"


def _steady_reason(load_out: float, load_in: float, count: int, settings: Settings) -> str:
    if load_out > settings.threshold_out:
        return f"load {load_out:.2f} is high but the pool is at max_size {settings.max_size}"
    if load_in < settings.threshold_in:
        return f"load {load_in:.2f} is low but the pool is at min_size {settings.min_size}"
    return (f"load between thresholds ({settings.threshold_in:g} <= {load_in:.2f}, "
            f"{load_out:.2f} <= {settings.threshold_out:g}); pool has {count} VMs")


# --- the cloud's view (parsing is pure) -------------------------------------------------------


def parse_time(text: Optional[str]) -> Optional[datetime]:
    """A CloudStack date (2013-05-10T17:27:52+0900) as an aware datetime, or None."""
    if not text:
        return None
    for fmt in ("%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S.%f%z"):
        try:
            return datetime.strptime(text.replace("Z", "+0000"), fmt)
        except ValueError:
            continue
    return None


def vm_from_api(data: Mapping[str, Any], settings: Settings, *, in_lb: bool,
                ips: Sequence[str] = (), monitored_names: Sequence[str] = ()) -> Vm:
    """A Vm from a listVirtualMachines / listLoadBalancerRuleInstances object."""
    nic_ips = [n.get("ipaddress") for n in data.get("nic") or [] if n.get("ipaddress")]
    all_ips = list(ips) + [ip for ip in nic_ips if ip not in ips]
    names = {data.get("name"), data.get("displayname"), data.get("instancename"), *all_ips}
    return Vm(
        id=str(data.get("id")), name=str(data.get("name", "")), state=str(data.get("state", "")),
        created=parse_time(data.get("created")), ip=all_ips[0] if all_ips else None,
        displayname=str(data.get("displayname", "")),
        instancename=str(data.get("instancename", "")),
        group=data.get("group"), in_lb=in_lb, managed=data.get("group") == settings.group,
        monitored=any(n in names for n in monitored_names if n),
        jobid=data.get("jobid"))


def build_pool(members: Sequence[Mapping[str, Any]], managed: Sequence[Mapping[str, Any]],
               settings: Settings, monitored_names: Sequence[str]) -> Pool:
    """Merge the LB member list (lbvmips form) and the account's VMs into a Pool."""
    vms: dict[str, Vm] = {}
    for item in members:
        data = item.get("loadbalancerruleinstance", item)
        vm = vm_from_api(data, settings, in_lb=True, ips=item.get("lbvmipaddresses") or (),
                         monitored_names=monitored_names)
        vms[vm.id] = vm
    for data in managed:
        if data.get("group") == settings.group and str(data.get("id")) not in vms:
            vm = vm_from_api(data, settings, in_lb=False, monitored_names=monitored_names)
            if vm.state not in ("Destroyed", "Expunging"):
                vms[vm.id] = vm
    return Pool(tuple(vms.values()))


def history_from_events(events: Sequence[Mapping[str, Any]], settings: Settings,
                        pool: Pool) -> History:
    """Last scale-out end, last scale-in, and drained VMs, from listEvents objects.

    An LB event belongs to this pool when its resourceid is the rule, or its description
    names the rule's ID as a whole word; the managed VMs it names (whole words) were assigned
    or drained. Without an assign event, the newest managed member's creation time stands in
    for the last scale-out (a lower bound)."""
    managed_ids = {v.id for v in pool.vms if v.managed}
    last_out = last_in = None
    drained: set[str] = set()
    for event in sorted(events, key=lambda e: parse_time(e.get("created")) or _EPOCH):
        when = parse_time(event.get("created"))
        kind = str(event.get("type", ""))
        if when is None or event.get("state", "Completed") != "Completed" or \
                kind not in ("LB.ASSIGN.TO.RULE", "LB.REMOVE.FROM.RULE"):
            continue
        words = set(_ID_WORD.findall(str(event.get("description", ""))))
        if event.get("resourceid") != settings.load_balancer and \
                settings.load_balancer not in words:
            continue
        named = managed_ids & words
        if kind == "LB.ASSIGN.TO.RULE":
            last_out = when
            drained -= named
        else:
            last_in = when
            drained |= named
    if last_out is None:
        created = [v.created for v in pool.members if v.managed and v.created]
        last_out = max(created, default=None)
    return History(last_out, last_in, frozenset(drained))


_ID_WORD = re.compile(r"[A-Za-z0-9_-]+")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


# --- SSH (I/O) ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where and how to connect for one measurement, after ~/.ssh/config."""

    label: str
    hostname: str
    port: int
    user: str
    key_path: str
    known_hosts: str


def read_ssh_config(path: str = "~/.ssh/config") -> Optional[Any]:
    """The user's OpenSSH client config (paramiko.SSHConfig), or None when absent."""
    import paramiko

    expanded = os.path.expanduser(path)
    if not os.path.isfile(expanded):
        return None
    try:
        return paramiko.SSHConfig.from_path(expanded)
    except Exception as exc:  # paramiko raises assorted errors for a malformed file
        raise ConfigError(f"{display_path(expanded)}: cannot parse: {exc}") from None


def lookup_ssh_config(ssh_config: Optional[Any], host: str) -> dict[str, Any]:
    """OpenSSH options for a host from ~/.ssh/config ({} when there is none)."""
    if ssh_config is None:
        return {}
    try:
        return dict(ssh_config.lookup(host))
    except Exception as exc:
        raise ConfigError(f"~/.ssh/config: cannot resolve {host}: {exc}") from None


def key_path_for(settings: Settings, options: Mapping[str, Any]) -> Optional[str]:
    """[monitoring] private_key_path, else the first IdentityFile of ~/.ssh/config."""
    if settings.private_key_path:
        return settings.private_key_path
    files = options.get("identityfile") or []
    return os.path.expanduser(files[0]) if files else None


def make_target(host: str, settings: Settings, ssh_config: Optional[Any],
                default_key: str = "") -> Target:
    """Resolve a host name, alias or address like OpenSSH: ~/.ssh/config, then defaults
    (a member reached at its IP uses the configured host's key unless one matches it)."""
    options = lookup_ssh_config(ssh_config, host)
    port = settings.port or int(options.get("port", 22))
    user = settings.user or options.get("user") or getpass.getuser()
    known = (options.get("userknownhostsfile") or "~/.ssh/known_hosts").split()[0]
    return Target(label=host, hostname=options.get("hostname", host), port=port, user=user,
                  key_path=key_path_for(settings, options) or default_key,
                  known_hosts=os.path.expanduser(known))


def load_private_key(path: str, pass_phrase: str) -> Any:
    """Load an RSA, ECDSA or Ed25519 key (PEM or OpenSSH format); raises SshError."""
    import paramiko

    try:
        return paramiko.PKey.from_path(path, password=pass_phrase.encode() or None)
    except paramiko.PasswordRequiredException:
        raise SshError(f"{path}: the key is encrypted; set [monitoring] pass_phrase") from None
    except (paramiko.SSHException, ValueError, TypeError) as exc:
        hint = "wrong [monitoring] pass_phrase?" if pass_phrase else "not a private key?"
        raise SshError(f"{path}: cannot load the private key ({_first_line(exc)}; "
                       f"{hint})") from None
    except OSError as exc:
        raise SshError(f"{path}: {exc.strerror}") from None


_known_hosts_lock = threading.Lock()


def _accept_new_policy(known_hosts: str) -> Any:
    import paramiko

    class AcceptNew(paramiko.MissingHostKeyPolicy):
        """OpenSSH's StrictHostKeyChecking=accept-new: record unknown keys, refuse changed."""

        def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
            line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
            with _known_hosts_lock:
                os.makedirs(os.path.dirname(known_hosts) or ".", mode=0o700, exist_ok=True)
                with open(known_hosts, "a", encoding="utf-8") as handle:
                    fcntl.flock(handle, fcntl.LOCK_EX)
                    handle.write(line)
            log.info("%-17s: %s: new host key %s recorded in %s", "ssh", hostname,
                     key.get_name(), display_path(known_hosts))

    return AcceptNew()


def remote_command(settings: Settings) -> str:
    """The one command executed per host; with per_cpu it also prints the CPU count.

    "{ cmd<newline>} && getconf ...": the command's own exit status counts, and a trailing
    comment in it cannot swallow getconf."""
    if not settings.per_cpu:
        return settings.command
    return f"{{ {settings.command}\n}} && {CPU_COMMAND}"


def load_known_hosts(path: str) -> Any:
    """The parsed known_hosts file, read once per run for all hosts; empty when absent or
    unreadable. Lines paramiko cannot use (@cert-authority, @revoked, unknown key types)
    are skipped instead of failing the run, as OpenSSH skips what it does not know."""
    import paramiko
    from paramiko.hostkeys import HostKeyEntry

    keys = paramiko.HostKeys()
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return keys
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith(("#", "@")):
            continue
        try:
            entry = HostKeyEntry.from_line(line, number)
        except Exception:  # paramiko raises assorted errors for lines it cannot read
            entry = None
        if entry is not None and entry.key is not None:
            for name in entry.hostnames:
                keys.add(name, entry.key.get_name(), entry.key)
    return keys


def read_load(target: Target, settings: Settings, pkey: Any, known: Any) -> HostLoad:
    """One SSH connection, one exec; never raises (the error goes into the HostLoad).

    ``known`` is the parsed known_hosts (paramiko.HostKeys); only this host's entries are
    handed to the client."""
    import paramiko

    client = paramiko.SSHClient()
    started = time.monotonic()
    try:
        name = target.hostname if target.port == 22 else f"[{target.hostname}]:{target.port}"
        if settings.host_key_policy != "off":
            for keytype, key in (known.lookup(name) or {}).items():
                client.get_host_keys().add(name, keytype, key)
        if settings.host_key_policy == "accept-new":
            client.set_missing_host_key_policy(_accept_new_policy(target.known_hosts))
        elif settings.host_key_policy == "off":
            client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        else:
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
        sock = socket.create_connection((target.hostname, target.port),
                                        timeout=settings.connect_timeout)
        # SSH sends small packets back and forth: without this each may wait ~40 ms for a
        # delayed ACK (paramiko does not set it).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.connect(target.hostname, port=target.port, username=target.user, pkey=pkey,
                       timeout=settings.connect_timeout, banner_timeout=settings.connect_timeout,
                       auth_timeout=settings.connect_timeout, allow_agent=False,
                       look_for_keys=False, sock=sock)
        transport = client.get_transport()
        address = transport.getpeername()[0] if transport else None
        output = _exec(client, remote_command(settings), settings.command_timeout)
        loads, cpus = parse_load(output, settings.per_cpu)
        log.debug("%s: %s in %.3f s", target.label, output.strip()[:80],
                  time.monotonic() - started)
        return HostLoad(target.label, address, loads, cpus)
    except Exception as exc:  # every failure of one host is data, not a crash
        return HostLoad(target.label, error=_ssh_error_text(exc, target, settings))
    finally:
        client.close()


def _exec(client: Any, command: str, timeout: float) -> str:
    stdin, stdout, _ = client.exec_command(command, timeout=timeout)
    stdin.close()
    channel = stdout.channel
    late = CommandFailed(f"the command did not finish within {timeout:g} s "
                         "(check [monitoring] command / command_timeout)")
    try:
        data = stdout.read(65536)
    except socket.timeout:
        raise late from None
    if not channel.status_event.wait(timeout):
        raise late
    status = channel.recv_exit_status()
    if status != 0:
        raise CommandFailed(f"the command exited with status {status} "
                            "(check [monitoring] command)")
    return data.decode("utf-8", "replace")


def _ssh_error_text(exc: BaseException, target: Target, settings: Settings) -> str:
    import paramiko

    where = f"{target.hostname}:{target.port}"
    if isinstance(exc, CommandFailed):
        return f"{where}: {exc}"
    if isinstance(exc, paramiko.BadHostKeyException):
        return (f"{where}: host key changed ({exc.key.get_name()}); refusing to connect "
                f"(check {display_path(target.known_hosts)})")
    if isinstance(exc, paramiko.AuthenticationException):
        return f"{where}: authentication failed as {target.user} (check [monitoring] user/key)"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return (f"{where}: timed out after {settings.connect_timeout:g} s "
                "(check [monitoring] host/port)")
    if isinstance(exc, (ConnectionRefusedError, paramiko.ssh_exception.NoValidConnectionsError)):
        return f"{where}: connection refused (check [monitoring] host/port)"
    if isinstance(exc, socket.gaierror):
        return f"{where}: cannot resolve host name (check [monitoring] host)"
    if isinstance(exc, paramiko.SSHException) and "not found in known_hosts" in str(exc):
        return (f"{where}: unknown host key and host_key_policy = strict "
                f"(add it to {display_path(target.known_hosts)})")
    if isinstance(exc, ValueError):
        return f"{where}: unusable command output: {exc}"
    return f"{where}: {_first_line(exc) or exc.__class__.__name__}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


def measure(hosts: Sequence[str], settings: Settings,
            ssh_config: Optional[Any]) -> Measurement:
    """Measure every host in parallel (bounded workers, per-host timeouts); each host with
    its own key (~/.ssh/config IdentityFile), each key loaded once; a key that cannot be
    loaded fails the hosts that use it."""
    if not hosts:
        return Measurement()
    configured = settings.hosts[0] if settings.hosts else "*"
    default_key = key_path_for(settings, lookup_ssh_config(ssh_config, configured)) or ""
    targets = [make_target(h, settings, ssh_config, default_key) for h in hosts]
    keys = {path: _key_or_error(path, settings.pass_phrase)
            for path in {t.key_path for t in targets}}
    known = {path: load_known_hosts(path) if settings.host_key_policy != "off" else None
             for path in {t.known_hosts for t in targets}}

    def one(target: Target) -> HostLoad:
        key = keys[target.key_path]
        if isinstance(key, SshError):
            return HostLoad(target.label, error=str(key))
        return read_load(target, settings, key, known[target.known_hosts])

    workers = min(settings.max_parallel, len(targets))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return Measurement(tuple(pool.map(one, targets)))


def _key_or_error(path: str, pass_phrase: str) -> Any:
    """The loaded key, or the SshError saying why not (it then fails each host using it)."""
    try:
        return load_private_key(path, pass_phrase)
    except SshError as exc:
        return exc


# --- the cloud (I/O) --------------------------------------------------------------------------


def read_pool(client: Client, settings: Settings, monitored_names: Sequence[str]) -> Pool:
    """Two list calls: the rule's members (with their LB IPs) and the managed VMs."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        members = pool.submit(client.list, "listLoadBalancerRuleInstances",
                              id=settings.load_balancer, lbvmips="true")
        managed = pool.submit(client.list, "listVirtualMachines",
                              zoneid=settings.launch.get("zoneid"))
        return build_pool(members.result(), managed.result(), settings, monitored_names)


def read_history(client: Client, settings: Settings, pool: Pool, now: datetime) -> History:
    """The event log since the longest cooldown (a day more, as the filter takes a date)."""
    horizon = max(settings.cooldown_in, settings.cooldown_out, settings.job_timeout)
    since = (now - timedelta(seconds=horizon) - timedelta(days=1)).strftime("%Y-%m-%d")
    return history_from_events(client.list("listEvents", startdate=since), settings, pool)


# --- acting (I/O) -----------------------------------------------------------------------------


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
                log.info("%-17s: jobid: %s, jobstatus: %s (%s)", "query job", jobid, status,
                         what)
                last["status"] = status

        return self.client.wait(jobid, timeout=self.settings.job_timeout, on_poll=on_poll)

    def scale_out(self, count: int, pool: Pool) -> str:
        log.info("%-17s: +%d", "scale out", count)
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
        log.info("%-17s: %s (left in Error by the failed deploy)", "destroy", vm_id)
        try:
            self._destroy_and_wait(vm_id, vm_id)
        except idcf_api.CloudStackError as exc:
            log.error("%-17s: could not destroy %s: %s (the next run retries)", "destroy",
                      vm_id, exc)

    def _assign(self, vm_ids: Sequence[str]) -> None:
        log.info("%-17s: %s -> %s", "assign to lb", ",".join(vm_ids), self.settings.load_balancer)
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
                log.info("%-17s: %s is %s after its job: not adopted", "repair", vm.name, state)
                return f"{vm.name} is {state}: not adopted"
        self._assign([vm.id])
        return self._new_count(pool.count + 1)

    def scale_in(self, vm: Vm, pool: Pool) -> str:
        log.info("%-17s: -1 (%s, %s)", "scale in", vm.name, vm.ip or "no ip")
        answer = self.client.call("removeFromLoadBalancerRule", id=self.settings.load_balancer,
                                  virtualmachineids=vm.id)
        self.wait(str(answer["jobid"]), "remove from lb")
        if self.settings.drain_seconds > 0:
            log.info("%-17s: %g s", "drain", self.settings.drain_seconds)
            self.sleep(self.settings.drain_seconds)
        self.destroy(vm)
        return self._new_count(pool.count - 1)

    def destroy(self, vm: Vm) -> str:
        # A Stopped VM with a job may be half destroyed already (by a run that died): wait
        # for that job rather than destroy twice. (An Error VM's job is moot.)
        if vm.jobid and vm.state == "Stopped" and \
                self._state_after_pending_job(vm) in ("gone", "Destroyed", "Expunging"):
            log.info("%-17s: %s was destroyed by its pending job", "repair", vm.name)
            return f"{vm.name} already destroyed"
        log.info("%-17s: %s (%s)", "destroy", vm.name, vm.id)
        self._destroy_and_wait(vm.id, vm.name)
        return f"destroyed {vm.name}"

    def _destroy_and_wait(self, vm_id: str, label: str) -> None:
        answer = self.client.call("destroyVirtualMachine", id=vm_id,
                                  expunge=self.settings.expunge or None)
        self.wait(str(answer["jobid"]), f"destroy {label}")

    def _new_count(self, count: int) -> str:
        log.info("%-17s: %d", "now vm count", count)
        return f"pool has {count} VMs"


# --- one run ----------------------------------------------------------------------------------


@dataclass
class Report:
    """What one run saw, decided and did (printed by --json)."""

    time: str
    measurement: Measurement = field(default_factory=Measurement)
    pool: Pool = field(default_factory=Pool)
    decision: Optional[Decision] = None
    load_out: Optional[float] = None
    load_in: Optional[float] = None
    result: str = ""
    dry_run: bool = False

    def as_json(self) -> dict:
        decision = self.decision or Decision(Action.NONE, "")
        return {
            "time": self.time,
            "hosts": [{"host": h.host, "address": h.address,
                       "load": list(h.loads) if h.loads else None, "cpus": h.cpus,
                       "error": h.error} for h in self.measurement.hosts],
            "aggregate": {"out": self.load_out, "in": self.load_in},
            "pool": [{"id": v.id, "name": v.name, "ip": v.ip, "state": v.state,
                      "in_lb": v.in_lb, "managed": v.managed, "monitored": v.monitored,
                      "created": v.created.isoformat() if v.created else None}
                     for v in self.pool.vms],
            "decision": {"action": decision.action.value, "count": decision.count,
                         "rule": decision.rule, "reason": decision.reason,
                         "vms": [v.name for v in decision.vms]},
            "dry_run": self.dry_run,
            "result": self.result,
        }


def lock_path(config: str) -> str:
    """The lock file of a config: ~/.cache/ssh_scale/<hash of its real path>.lock, the same
    for cron, systemd and a login shell, and across an editor replacing the config."""
    digest = hashlib.sha1(os.path.realpath(config).encode()).hexdigest()[:16]
    return os.path.join(os.path.expanduser("~/.cache"), "ssh_scale", f"{digest}.lock")


@contextlib.contextmanager
def run_lock(config: str) -> Iterator[None]:
    """Hold the config's flock for the run; raises LockBusy when another run holds it."""
    path = lock_path(config)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockBusy(f"another run holds the lock for {display_path(config)}") from None
        yield


def monitored_names(settings: Settings, ssh_config: Optional[Any]) -> list[str]:
    """Names and addresses from the config that identify the monitored VM among the pool
    members: [monitoring] host and its ~/.ssh/config HostName."""
    names = list(settings.hosts)
    names += [lookup_ssh_config(ssh_config, h).get("hostname", h) for h in settings.hosts]
    return names


def member_hosts(pool: Pool, settings: Settings, now: datetime) -> list[str]:
    """Running members old enough to report a meaningful load (monitor_members = yes)."""
    hosts = []
    for vm in pool.members:
        age = (now - vm.created).total_seconds() if vm.created else math.inf
        if vm.state != "Running" or not vm.ip:
            log.info("%-17s: %s skipped (%s)", "measure", vm.name, vm.state)
        elif age < settings.boot_grace:
            log.info("%-17s: %s skipped (%.0f s old, boot_grace %g s)", "measure", vm.name,
                     age, settings.boot_grace)
        else:
            hosts.append(vm.ip)
    return hosts


def cloud_time(local: datetime, client: Client) -> datetime:
    """The cloud's time: the local time corrected by the skew seen in the API's Date
    headers, so cooldowns and boot_grace compare like with like on a monitor VM whose clock
    is off."""
    skew = client.clock_skew
    return local + timedelta(seconds=skew) if abs(skew) > IGNORED_SKEW else local


def observe(settings: Settings, client: Client, ssh_config: Optional[Any],
            now: datetime) -> tuple[Measurement, Pool]:
    """Measure and read the pool; in parallel when the hosts are known up front. With
    monitor_members the members are measured instead of [monitoring] host, which then only
    identifies the monitored VM."""
    names = monitored_names(settings, ssh_config)
    if settings.monitor_members:
        pool = read_pool(client, settings, names)
        measurement = measure(member_hosts(pool, settings, cloud_time(now, client)), settings,
                              ssh_config)
    else:
        with ThreadPoolExecutor(max_workers=1) as executor:
            measuring = executor.submit(measure, settings.hosts, settings, ssh_config)
            pool = read_pool(client, settings, names)
            measurement = measuring.result()
    # The address an SSH connection to [monitoring] host reached names the monitored VM too.
    reached = {h.address for h in measurement.hosts if h.address and h.host in settings.hosts}
    pool = Pool(tuple(replace(v, monitored=v.monitored or v.ip in reached) for v in pool.vms))
    for host in measurement.hosts:
        if host.error:
            log.warning("%-17s: %s", "ssh", host.error)
    return measurement, pool


def log_checks(report: Report, settings: Settings) -> None:
    """The 2013 tool's check lines, with real decimals."""
    count = report.pool.count
    load_out = "unknown" if report.load_out is None else f"{report.load_out:.2f}"
    load_in = "unknown" if report.load_in is None else f"{report.load_in:.2f}"
    lines = [
        "*** scale out check ***",
        f"{'la_threshold_out':<17}: {settings.threshold_out!r}",
        f"{'now_la':<17}: {load_out}",
        f"{'now_vm_count':<17}: {count}",
        f"{'vm count':<17}: now {count}, max {settings.max_size}",
        "*** scale in check ***",
        f"{'la_threshold_in':<17}: {settings.threshold_in!r}",
        f"{'now_la':<17}: {load_in}",
        f"{'vm count':<17}: now {count}, min {settings.min_size}",
    ]
    for line in lines:
        log.info(line)


def decide_with_history(measurement: Measurement, pool: Pool, settings: Settings,
                        now: datetime, client: Client) -> Decision:
    """decide(), reading the event log only when the answer depends on it."""
    decision = decide(measurement, pool, settings, now)
    if decision.needs_history:
        history = read_history(client, settings, pool, now)
        decision = decide(measurement, pool, settings, now, history)
    return decision


def run_once(settings: Settings, client: Client, report: Report, *,
             ssh_config: Optional[Any] = None, sleep: Callable[[float], None] = time.sleep,
             clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> Report:
    """Observe, decide and (unless report.dry_run) act once, filling the report as it goes
    (so a failing run still reports what it saw); raises on operational failure."""
    now = clock()
    dry_run = report.dry_run
    report.time = now.isoformat(timespec="seconds")
    report.measurement, report.pool = observe(settings, client, ssh_config, now)
    if abs(client.clock_skew) > IGNORED_SKEW:
        log.warning("%-17s: this machine's clock is %.0f s %s the cloud's; cooldowns use the "
                    "cloud's", "clock", abs(client.clock_skew),
                    "behind" if client.clock_skew > 0 else "ahead of")
        now = cloud_time(now, client)
    report.load_out = aggregate_load(report.measurement, settings.period_out, settings)
    report.load_in = aggregate_load(report.measurement, settings.period_in, settings)
    log_checks(report, settings)
    report.decision = decide_with_history(report.measurement, report.pool, settings, now,
                                          client)
    decision = report.decision
    if decision.action is Action.NONE:
        log.info("%-17s: none: %s", "decision", decision.reason)
        report.result = "nothing to do"
    elif dry_run:
        log.warning("%-17s: would %s%s: %s", "dry run", decision.action.value,
                    f" {decision.count}" if decision.count > 1 else "", decision.reason)
        report.result = "dry run: no change made"
    else:
        log.warning("%-17s: %s", "decision", f"{decision.action.value}: {decision.reason}")
        report.result = Actor(client, settings, sleep).run(decision, report.pool)
    if not any(h.loads for h in report.measurement.hosts) and report.measurement.hosts:
        raise SshError("; ".join(h.error or "" for h in report.measurement.hosts))
    return report


# --- views --------------------------------------------------------------------------------------


def status_table(report: Report) -> str:
    """The pool as a table, each member with its load, and the decision that would be taken."""
    loads = {h.address: h for h in report.measurement.hosts if h.address}
    rows = []
    for vm in report.pool.vms:
        host = loads.get(vm.ip)
        rows.append({
            "name": vm.name, "ip": vm.ip or "", "state": vm.state,
            "in lb": "yes" if vm.in_lb else "no",
            "managed": "yes" if vm.managed else ("monitored" if vm.monitored else "no"),
            "created": vm.created.astimezone().strftime(TIME_FORMAT) if vm.created else "",
            "load (1/5/15)": " ".join(f"{x:.2f}" for x in host.loads)
            if host and host.loads else "",
        })
    columns = ["name", "ip", "state", "in lb", "managed", "created", "load (1/5/15)"]
    if rows:
        table = idcf_api.format_table(rows, columns)
    elif report.result.startswith("error"):
        table = "(the pool was not read)"
    else:
        table = "(the pool is empty)"
    decision = report.decision or Decision(Action.NONE, "")
    verb = decision.action.value + (f" {decision.count}" if decision.count > 1 else "")
    return f"{table}\ndecision now: {verb}: {decision.reason}"


# --- main -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ssh_scale.py argument parser."""
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exit codes: 0 acted, nothing to do, or another run busy; 1 SSH, API or job "
               "failure; 2 usage or configuration error; 130 interrupted.")
    parser.add_argument("-c", "--config", metavar="PATH",
                        help="config file (default: $IDCFRC, else ~/.idcfrc)")
    parser.add_argument("-n", "--dry-run", action="store_true",
                        help="measure and decide, but send no mutating API call")
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="store_true",
                           help="debug lines: SSH and API traffic (secrets redacted)")
    verbosity.add_argument("-q", "--quiet", action="store_true",
                           help="print only actions and errors")
    views = parser.add_mutually_exclusive_group()
    views.add_argument("--status", action="store_true",
                       help="show the pool and the decision that would be taken; change nothing")
    views.add_argument("--json", action="store_true",
                       help="one JSON object per run on stdout; log lines go to stderr")
    parser.add_argument("--replay", metavar="TRACE.csv",
                       help="what-if: replay a minute,demand trace through the decision code")
    parser.add_argument("--policy", choices=("current", "classic"),
                        help="with --replay: this config's policy (default) or the 2013 tool's")
    parser.add_argument("--plot", metavar="PNG", help="with --replay: draw the replay")
    parser.add_argument("--boot-seconds", type=float, metavar="S",
                        help="with --replay: seconds before a new VM serves (default 150)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def configure_logging(verbose: bool, quiet: bool, stream: Any) -> idcf_api.RedactingFilter:
    """The 2013 tool's line format on the given stream, secrets redacted."""
    redactor = idcf_api.install_redacting_handler(
        stream, logging.Formatter("%(asctime)s %(message)s", TIME_FORMAT), verbose)
    log.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    for noisy in ("paramiko", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.CRITICAL)
    return redactor


def execute(args: argparse.Namespace, redactor: idcf_api.RedactingFilter) -> int:
    """One invocation after argument parsing; raises the module's errors."""
    ssh_config = read_ssh_config()
    if args.replay and (args.status or args.dry_run):
        raise ConfigError("--replay runs offline: it cannot be combined with --status or -n")
    if not args.replay and (args.policy or args.plot or args.boot_seconds is not None):
        raise ConfigError("--policy, --plot and --boot-seconds go with --replay")
    settings = load_settings(args.config, ssh_config=ssh_config, check_key=not args.replay)
    redactor.add(settings.account.api_key, settings.account.secret_key, settings.pass_phrase)
    if args.replay:
        import ssh_scale_replay

        return ssh_scale_replay.run_cli(settings, args)
    path = idcf_api.config_path(args.config)
    if insecure_permissions(path):
        log.warning("%-17s: %s is readable by group or others; it holds secrets "
                    "(chmod 600 it)", "warning", display_path(path))
    client = Client(settings.account)
    read_only = args.dry_run or args.status
    report = Report(time=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    dry_run=read_only)
    try:
        # A read-only look needs no lock: it must work while a scale-out is under way.
        with contextlib.nullcontext() if read_only else run_lock(path):
            run_once(settings, client, report, ssh_config=ssh_config)
    except LockBusy as exc:
        log.warning("%-17s: %s; exiting", "lock", exc)
        report.result = f"skipped: {exc}"
        return emit(report, args)
    except Exception as exc:  # report what was seen, then let main() map the error
        report.result = f"error: {idcf_api.redact(str(exc), redactor.secrets)}"
        emit(report, args)
        raise
    return emit(report, args)


def emit(report: Report, args: argparse.Namespace) -> int:
    """Print the --status table or the --json object (if asked); returns 0."""
    if args.status:
        print(status_table(report))
    if args.json:
        print(json.dumps(report.as_json()))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point: one run; returns the exit status (0, 1, 2 or 130)."""
    args = build_parser().parse_args(argv)
    redactor = configure_logging(args.verbose, args.quiet,
                                 sys.stderr if args.json or args.status else sys.stdout)
    try:
        return execute(args, redactor)
    except ConfigError as exc:
        _fail(str(exc), redactor)
        return 2
    except (ScaleError, idcf_api.CloudStackError) as exc:
        message = str(exc)
        if isinstance(exc, JobTimeout):
            message += "; the next run repairs what it left"
        _fail(message, redactor)
        return 1
    except BrokenPipeError:  # e.g. --json piped into head
        return idcf_api.closed_pipe()
    except OSError as exc:
        _fail(f"{exc.filename or 'I/O'}: {exc.strerror or exc}", redactor)
        return 1
    except KeyboardInterrupt:
        _fail("interrupted", redactor)
        return 130
    except Exception as exc:  # a bug or an answer we do not understand: still one line
        log.debug("unexpected error", exc_info=True)
        _fail(f"unexpected {exc.__class__.__name__}: {exc} (run with -v for details; "
              "please report it)", redactor)
        return 1


def _fail(message: str, redactor: idcf_api.RedactingFilter) -> None:
    print(f"{PROG}: error: {idcf_api.redact(message, redactor.secrets)}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
