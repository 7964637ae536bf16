"""The replay's virtual clock: simulated VMs, the kernel's load averages, cron runs that call
decide() unchanged, and the score of the result. Pure: no I/O, no real clock.

The model, in 5-second steps (the kernel's LOAD_FREQ):
  * demand (load units, from the trace) is shared evenly among the VMs in service;
  * each VM's 1/5/15-minute load averages follow the kernel's calc_load, every 5 s
    load = load*e + n*(1-e) with e = exp(-5/60), exp(-5/300), exp(-5/900) and n = that VM's
    share.  The exact exponential is used, not the kernel's 11-bit fixed point (FIXED_1 = 2048,
    EXP_1 = 1884, rounding up while rising); for step loads of up to 16 tasks the two agree
    within 0.02 load units for the 1-minute average and 0.2 for the 15-minute one;
  * a cron run every 60 s builds a Measurement, a Pool and a History from the simulated VMs and
    calls decide() at the trace minute's time (from `start`: schedules apply); a scale-out's
    VMs serve after the boot time, a scale-in's VM leaves service at once and is destroyed
    after [scaling] drain_seconds;
  * policy "current" replays the config's [scalling] policy ("threshold" or "target" force
    one). With policy = threshold a run holds the per-config lock while it waits for the
    deploy (or the drain), so cron runs inside that window are skipped. With policy = target
    a scale-out run gives the lock back once its deploy calls are accepted and waits for the
    jobs (then assigns the VMs) without it, as the live run does: later runs see the booting
    VMs as the cloud lists them (managed, Starting, a pending job, outside the load
    balancer); a scale-in still holds the lock through the drain. Policy "classic" replays the
    2013 tool: 1-minute load of one VM, no cooldown, no lock, one VM per run, booting VMs
    counted against max_size;
  * a Peer (another autoscaler, for comparisons: bench/peers.py) decides instead of decide()
    every `run_seconds`, without the lock, and sees booting VMs as target runs do.

The score: cost (VM-minutes), overload minutes, flips, and the SPEC Research Group's
elasticity metrics (Herbst, Kounev, Reussner, ICAC 2013; the BUNGEE benchmark) over the 5-s
steps, with d = VMs needed = ceil(demand / threshold_out) and s = VMs in service:
under-/over-provisioning accuracy = mean of (d - s)+ / (s - d)+ in VMs, time share under-/over-
provisioned = fraction of the time with s < d / s > d, jitter = (changes of s - changes of d)
per hour.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Optional, Protocol

from sshscale.decide import aggregate_load, decide
from sshscale.model import PERIODS, Action, Decision, History, HostLoad, Measurement, Pool, \
    Settings, Vm
from sshscale.replay.trace import ReplayError, Trace
from sshscale.schedule import effective_bounds

__all__ = ["DEFAULT_BOOT_SECONDS", "POLICIES", "RUN_SECONDS", "VIRTUAL_EPOCH", "Change", "Peer",
           "ReplayResult", "Run", "Sample", "Summary", "billed_minutes", "classic_settings",
           "count_flips", "elasticity", "kernel_step", "needed_vms", "replay",
           "replay_settings", "summarize", "warmed_loads"]

TICK_SECONDS = 5
RUN_SECONDS = 60
DECAY = tuple(math.exp(-TICK_SECONDS / (60.0 * p)) for p in PERIODS)
FLIP_SECONDS = 600
POLICIES = ("current", "classic", "threshold", "target")
VIRTUAL_EPOCH = datetime(2013, 5, 10, tzinfo=timezone.utc)  # minute 0 without --start
PREHISTORY_SECONDS = -86400.0  # the starting VMs were created a day before the replay
BOOTING, SERVING, DRAINING, GONE = "booting", "serving", "draining", "gone"
DEFAULT_BOOT_SECONDS = 150.0  # the deploy time observed in the 2013 walk-through


# --- the load-average model ----------------------------------------------------------------------


def kernel_step(loads: tuple[float, float, float], running: float) -> tuple[float, float, float]:
    """One 5-second calc_load step: each average decays toward `running` tasks."""
    (one, five, fifteen), (e1, e5, e15) = loads, DECAY
    return (one * e1 + running * (1.0 - e1), five * e5 + running * (1.0 - e5),
            fifteen * e15 + running * (1.0 - e15))


def warmed_loads(running: float) -> tuple[float, float, float]:
    """Load averages of a VM that has run `running` tasks for a long time."""
    return running, running, running


# --- the policies --------------------------------------------------------------------------------


def classic_settings(settings: Settings) -> Settings:
    """The 2013 tool's rules expressed as Settings: 1-min load of the monitored VM, no
    cooldowns, one VM per run, no schedules; thresholds and min/max stay as configured.  It
    destroyed a VM right after taking it out of the load balancer, so there is no drain either."""
    return replace(settings, policy="threshold", cooldown_out=0.0, cooldown_in=0.0,
                   period_out=1, period_in=1, step_out="1", monitor_members=False,
                   aggregate="mean", min_reporting=1, drain_seconds=0.0, schedules=())


def replay_settings(settings: Settings, policy: str) -> Settings:
    """The Settings a replay decides with: the 2013 rules for "classic", the config's for
    "current", the config with its [scalling] policy replaced for "threshold" or "target"."""
    if policy == "classic":
        return classic_settings(settings)
    return settings if policy == "current" else replace(settings, policy=policy)


# --- results -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """The simulated pool at one 5-second tick (after that tick's events and cron run)."""

    second: int
    demand: float
    serving: int
    booting: int
    load1: float  # the monitored VM's 1-minute load average

    @property
    def share(self) -> float:
        """Demand per VM in service."""
        return self.demand / self.serving if self.serving else math.inf


@dataclass(frozen=True)
class Run:
    """One cron run: skipped (lock busy), or what it measured and decided."""

    second: int
    skipped: bool
    hosts: int = 0  # VMs measured
    load_out: Optional[float] = None
    decision: Optional[Decision] = None


@dataclass(frozen=True)
class Change:
    """A scale-out or scale-in the replay carried out."""

    second: int
    action: Action
    count: int
    vms_after: int
    reason: str

    @property
    def minute(self) -> int:
        return self.second // RUN_SECONDS


class Peer(Protocol):
    """Another autoscaler replayed for comparison: its name, how often it decides, and its
    decision, with decide()'s arguments (it may keep state between calls)."""

    name: str
    run_seconds: int

    def decide(self, measurement: Measurement, pool: Pool, settings: Settings, now: datetime,
               history: Optional[History]) -> Decision:
        """The one change to make now (SCALE_IN names its VM in `vms`)."""


@dataclass(frozen=True)
class Summary:
    """The replay's score: cost, pain, churn, and the SPEC RG elasticity metrics (see the
    module docstring): accuracy in VMs, time shares as fractions, jitter per hour."""

    minutes: int
    vm_minutes: int
    overload_minutes: int
    scale_outs: int
    scale_ins: int
    flips: int
    peak_vms: int
    accuracy_under: float = 0.0
    accuracy_over: float = 0.0
    timeshare_under: float = 0.0
    timeshare_over: float = 0.0
    jitter: float = 0.0


@dataclass(frozen=True)
class ReplayResult:
    """Everything a replay produced."""

    source: str
    policy: str
    boot_seconds: float
    settings: Settings
    samples: tuple[Sample, ...]
    runs: tuple[Run, ...]
    changes: tuple[Change, ...]
    summary: Summary
    start: datetime = VIRTUAL_EPOCH


# --- the simulation ------------------------------------------------------------------------


@dataclass
class _SimVm:
    """A simulated VM on the virtual clock (seconds from the replay's start)."""

    id: str
    created: float
    joins: float
    managed: bool = True
    state: str = BOOTING
    destroyed: Optional[float] = None
    loads: tuple[float, float, float] = (0.0, 0.0, 0.0)
    listing: Optional[Vm] = None  # how pool() lists it in its current state
    noisy: bool = False  # deployed by a scale-out that marks the pool noisy when it joins


def _latest(known: Optional[float], second: float) -> float:
    return second if known is None else max(known, second)


@dataclass
class _Simulation:
    """The mutable state of one replay, advanced by `run()` in 5-second ticks."""

    trace: Trace
    settings: Settings
    policy: str
    boot_seconds: float
    start: datetime = VIRTUAL_EPOCH
    boot_lock: bool = False  # a target scale-out holds the lock through the boot (threshold's)
    peer: Optional[Peer] = None
    vms: list[_SimVm] = field(default_factory=list)
    gone: list[_SimVm] = field(default_factory=list)  # destroyed: kept only for the bill
    lock_until: float = -math.inf
    last_out: Optional[float] = None
    last_in: Optional[float] = None
    noisy: Optional[float] = None  # when a noisy scale-out's VMs joined (ssh-scale:noisy)
    samples: list[Sample] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    demand: list[float] = field(default_factory=list)
    states: Optional[dict[str, list[_SimVm]]] = None

    def __post_init__(self) -> None:
        self.demand = self.trace.per_minute()
        # The pool as it stood before the trace: min_size VMs (the bound in force at the start).
        size = effective_bounds(self.settings, self.start).min_size
        share = self.demand[0] / size
        for index in range(size):
            self.vms.append(_SimVm(id=f"vm-{index}", created=PREHISTORY_SECONDS,
                                   joins=PREHISTORY_SECONDS, managed=index > 0, state=SERVING,
                                   loads=warmed_loads(share)))

    @property
    def run_seconds(self) -> int:
        """How often a run decides: cron's minute, or the peer's own period."""
        return RUN_SECONDS if self.peer is None else self.peer.run_seconds

    def run(self) -> list[Sample]:
        """Every tick: the kernel's load step, due joins and destroys, then a run when due."""
        for second in range(0, self.trace.minutes * RUN_SECONDS, TICK_SECONDS):
            if second:
                self.advance_loads(second)
            self.apply_due_events(second)
            if second % self.run_seconds == 0:
                self.cron_run(second)
                self.apply_due_events(second)  # a zero boot or drain takes effect at once
            self.samples.append(self.sample(second))
        return self.samples

    # the clock

    def in_state(self, state: str) -> list[_SimVm]:
        """The VMs in a state (listed once per change of any VM's state: the replay asks for
        them several times every 5-s step)."""
        if self.states is None:
            self.states = {key: [] for key in (BOOTING, SERVING, DRAINING, GONE)}
            for vm in self.vms:
                self.states[vm.state].append(vm)
        return self.states[state]

    def set_state(self, vm: _SimVm, state: str) -> None:
        vm.state = state
        self.states = None

    def advance_loads(self, second: int) -> None:
        """The kernel's 5-s step for the interval that ends at `second`, for the VMs whose
        loads are read: the monitored one, or every VM in service with monitor_members (a
        booting VM runs nothing: its loads stay 0 until it serves)."""
        serving = self.in_state(SERVING)
        demand = self.demand[(second - TICK_SECONDS) // RUN_SECONDS]
        share = demand / len(serving) if serving else 0.0
        stepped: dict[tuple[float, float, float], tuple[float, float, float]] = {}
        for vm in serving if self.settings.monitor_members else serving[:1]:
            if vm.loads not in stepped:  # VMs that joined together have the same loads
                stepped[vm.loads] = kernel_step(vm.loads, share)
            vm.loads = stepped[vm.loads]

    def apply_due_events(self, second: float) -> None:
        """Booted VMs join the load balancer; drained VMs are destroyed. (The scale-in
        cooldown counts from leaving the load balancer, as live runs read it from the
        LB.REMOVE.FROM.RULE event, not from the destroy.)"""
        if not self.in_state(BOOTING) and not self.in_state(DRAINING):
            return
        for vm in [vm for vm in self.in_state(BOOTING) if vm.joins <= second]:
            self.set_state(vm, SERVING)
            self.last_out = _latest(self.last_out, vm.joins)
            if vm.noisy:
                self.noisy = _latest(self.noisy, vm.joins)
        destroyed = [vm for vm in self.in_state(DRAINING)
                     if vm.destroyed is not None and vm.destroyed <= second]
        if destroyed:
            for vm in destroyed:
                self.set_state(vm, GONE)
            self.gone += destroyed
            self.vms = [vm for vm in self.vms if vm.state != GONE]

    def sample(self, second: int) -> Sample:
        return Sample(second, self.demand[second // RUN_SECONDS],
                      len(self.in_state(SERVING)), len(self.in_state(BOOTING)),
                      self.vms[0].loads[0])

    # one cron run

    @property
    def locks(self) -> bool:
        """Whether runs take the per-config lock (the 2013 tool and the peers have none)."""
        return self.policy != "classic" and self.peer is None

    @property
    def unlocked_boots(self) -> bool:
        """Whether runs see booting VMs: policy = target, whose scale-out gives the lock back
        once its deploys are accepted (unless boot_lock asks for the threshold policy's way),
        and the peers."""
        if self.peer is not None:
            return True
        return self.locks and self.settings.policy == "target" and not self.boot_lock

    def cron_run(self, second: int) -> None:
        if self.locks and second < self.lock_until:
            self.runs.append(Run(second, skipped=True))
            return
        now = self.start + timedelta(seconds=second)
        measurement = self.measurement(now)
        # As the live run's tags record them: when VMs last joined and their deploy time, and
        # when a noisy scale-out's VMs joined.
        history = History(self.virtual_time(self.last_out), self.virtual_time(self.last_in),
                          deploy_seconds=None if self.last_out is None else self.boot_seconds,
                          noisy=self.virtual_time(self.noisy))
        decider = decide if self.peer is None else self.peer.decide
        decision = decider(measurement, self.pool(), self.settings, now, history)
        load_out = aggregate_load(measurement, self.settings.period_out, self.settings)
        self.runs.append(Run(second, skipped=False, hosts=len(measurement.hosts),
                             load_out=load_out, decision=decision))
        if decision.action is Action.SCALE_OUT:
            self.scale_out(second, decision)
        elif decision.action is Action.SCALE_IN:
            self.scale_in(second, decision)
        # repairs (adopt, re-add, destroy) cannot arise: the replay leaves no crash leftovers

    def virtual_time(self, second: Optional[float]) -> Optional[datetime]:
        return None if second is None else self.start + timedelta(seconds=second)

    def measurement(self, now: datetime) -> Measurement:
        """The monitored VM's loads, or every in-service VM past boot_grace (monitor_members)."""
        if not self.settings.monitor_members:
            monitored = self.vms[0]
            return Measurement((HostLoad(self.host_name(monitored), loads=monitored.loads),))
        hosts = []
        for vm in self.in_state(SERVING):
            age = (now - self.start).total_seconds() - vm.created
            if not vm.managed or age >= self.settings.boot_grace:
                hosts.append(HostLoad(self.host_name(vm), loads=vm.loads))
        return Measurement(tuple(hosts))

    def host_name(self, vm: _SimVm) -> str:
        if not vm.managed and self.settings.hosts:
            return self.settings.hosts[0]
        return vm.id

    def pool(self) -> Pool:
        """Members as the cloud would list them. Booting VMs: for policy = target, managed VMs
        outside the load balancer, Starting, with their deploy job pending (their run assigns
        them when it ends); for classic, Starting members (the threshold policy never sees
        them: it waits for the boot under the lock)."""
        return Pool(tuple(self.listed(vm) for vm in self.vms if vm.state in (SERVING, BOOTING)))

    def listed(self, vm: _SimVm) -> Vm:
        """A VM as the cloud lists it (kept until its state changes: runs list them often)."""
        outside = self.unlocked_boots and vm.state == BOOTING
        if vm.listing is None or vm.listing.in_lb == outside or \
                (vm.listing.state == "Running") != (vm.state == SERVING):
            vm.listing = Vm(id=vm.id, name=self.host_name(vm),
                            state="Running" if vm.state == SERVING else "Starting",
                            created=self.virtual_time(vm.created) if vm.managed else None,
                            in_lb=not outside, managed=vm.managed, monitored=not vm.managed,
                            jobid=f"deploy-{vm.id}" if outside else None)
        return vm.listing

    def scale_out(self, second: int, decision: Decision) -> None:
        joins = second + self.boot_seconds
        for _ in range(decision.count):
            number = len(self.vms) + len(self.gone)
            self.vms.append(_SimVm(id=f"vm-{number}", created=second, joins=joins,
                                   noisy=decision.noisy))
        self.states = None
        if self.locks and not self.unlocked_boots:
            self.lock_until = joins
        self.record(second, decision)

    def scale_in(self, second: int, decision: Decision) -> None:
        """The decision's VMs (decide() names one; a peer may name several) leave at once."""
        victims = {vm.id for vm in decision.vms}
        for victim in [vm for vm in self.vms if vm.id in victims]:
            # out of the load balancer now (a booting one never joins), destroyed after the drain
            self.set_state(victim, DRAINING)
            victim.destroyed = second + self.settings.drain_seconds
        self.last_in = second
        if self.locks:
            self.lock_until = second + self.settings.drain_seconds
        self.record(second, decision)

    def record(self, second: int, decision: Decision) -> None:
        alive = len(self.in_state(SERVING)) + len(self.in_state(BOOTING))
        self.changes.append(Change(second, decision.action, decision.count, alive,
                                   decision.reason))


def replay(trace: Trace, settings: Settings, policy: str = "current",
           boot_seconds: float = DEFAULT_BOOT_SECONDS, start: datetime = VIRTUAL_EPOCH, *,
           overload_threshold: Optional[float] = None, boot_lock: bool = False,
           peer: Optional[Peer] = None) -> ReplayResult:
    """Replay a trace through decide() on a virtual clock whose minute 0 is `start` (aware)
    (pure: no I/O, no real clock). Overload is demand per VM above threshold_out, or above
    overload_threshold when given (to score variants of the thresholds against one line);
    so are the VMs needed of the elasticity metrics. boot_lock=True makes a target scale-out
    hold the lock through the boot, as a threshold one does (for comparison). A peer decides
    instead of decide() (`policy` is then its name)."""
    if peer is None and policy not in POLICIES:
        raise ReplayError(f"--policy: expected one of {', '.join(POLICIES)}, got {policy!r}")
    decision_settings = settings if peer is not None else replay_settings(settings, policy)
    label = policy if peer is None else peer.name
    simulation = _Simulation(trace, decision_settings, label, boot_seconds, start, boot_lock,
                             peer)
    samples = simulation.run()
    lifetimes = [(vm.created, vm.destroyed) for vm in simulation.vms + simulation.gone]
    line = settings.threshold_out if overload_threshold is None else overload_threshold
    summary = summarize(trace.minutes, samples, simulation.changes, lifetimes, line)
    return ReplayResult(trace.source, label, boot_seconds, decision_settings, tuple(samples),
                        tuple(simulation.runs), tuple(simulation.changes), summary, start)


# --- scoring -------------------------------------------------------------------------------------


def summarize(minutes: int, samples: Sequence[Sample], changes: Sequence[Change],
              lifetimes: Sequence[tuple[float, Optional[float]]],
              threshold_out: float) -> Summary:
    """Cost, overload, churn and elasticity of a finished replay; lifetimes are every VM's
    (created, destroyed or None) in seconds of the virtual clock."""
    return Summary(
        minutes=minutes,
        vm_minutes=sum(billed_minutes(created, destroyed, minutes)
                       for created, destroyed in lifetimes),
        overload_minutes=len({s.second // RUN_SECONDS for s in samples
                              if s.share > threshold_out}),
        scale_outs=sum(c.count for c in changes if c.action is Action.SCALE_OUT),
        scale_ins=sum(c.count for c in changes if c.action is Action.SCALE_IN),
        flips=count_flips(changes),
        peak_vms=max(s.serving + s.booting for s in samples),
        **elasticity(samples, threshold_out),
    )


def needed_vms(demand: float, threshold_out: float) -> int:
    """d: the VMs a demand needs, each carrying at most threshold_out."""
    return math.ceil(demand / threshold_out - 1e-9)


def elasticity(samples: Sequence[Sample], threshold_out: float) -> dict[str, float]:
    """The SPEC RG elasticity metrics over the samples (equal 5-s steps), as Summary fields:
    accuracy_under/over = mean (d - s)+ / (s - d)+ in VMs, timeshare_under/over = fraction of
    the steps with s < d / s > d, jitter = (changes of s - changes of d) per hour."""
    needed = [needed_vms(s.demand, threshold_out) for s in samples]
    serving = [s.serving for s in samples]
    steps = len(samples)
    hours = steps * TICK_SECONDS / 3600.0

    def changes(series: list[int]) -> int:
        return sum(1 for a, b in zip(series, series[1:]) if a != b)

    return {
        "accuracy_under": sum(max(d - s, 0) for d, s in zip(needed, serving)) / steps,
        "accuracy_over": sum(max(s - d, 0) for d, s in zip(needed, serving)) / steps,
        "timeshare_under": sum(1 for d, s in zip(needed, serving) if s < d) / steps,
        "timeshare_over": sum(1 for d, s in zip(needed, serving) if s > d) / steps,
        "jitter": (changes(serving) - changes(needed)) / hours,
    }


def billed_minutes(created: float, destroyed: Optional[float], minutes: int) -> int:
    """Minutes of the replay in which a VM existed (booting, serving or draining) for any time."""
    first = max(0, math.floor(created / RUN_SECONDS))
    end = minutes if destroyed is None else min(minutes, math.ceil(destroyed / RUN_SECONDS))
    return max(0, end - first)


def count_flips(changes: Sequence[Change]) -> int:
    """Direction changes that come within FLIP_SECONDS of the previous change."""
    flips = 0
    for previous, change in zip(changes, changes[1:]):
        if change.action is not previous.action and \
                change.second - previous.second <= FLIP_SECONDS:
            flips += 1
    return flips
