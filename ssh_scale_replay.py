"""What-if replays: a minute,demand trace through ssh_scale's own decision code.

`ssh_scale.py --replay TRACE.csv` reads the same config as a live run and calls the same pure
`ssh_scale.decide`, but measures simulated VMs on a virtual clock instead of SSH and the cloud.

The model, in 5-second steps (the kernel's LOAD_FREQ):
  * demand (load units, from the trace) is shared evenly among the VMs in service;
  * each VM's 1/5/15-minute load averages follow the kernel's calc_load, every 5 s
    load = load*e + n*(1-e) with e = exp(-5/60), exp(-5/300), exp(-5/900) and n = that VM's
    share.  The exact exponential is used, not the kernel's 11-bit fixed point (FIXED_1 = 2048,
    EXP_1 = 1884, rounding up while rising); for step loads of up to 16 tasks the two agree
    within 0.02 load units for the 1-minute average and 0.2 for the 15-minute one;
  * a cron run every 60 s builds a Measurement, a Pool and a History from the simulated VMs and
    calls decide(); a scale-out's VMs serve after --boot-seconds, a scale-in's VM leaves service
    at once and is destroyed after [scaling] drain_seconds;
  * policy "current" holds the per-config lock while it waits for the deploy (or the drain), so
    cron runs inside that window are skipped; policy "classic" replays the 2013 tool: 1-minute
    load of one VM, no cooldown, no lock, one VM per run, booting VMs counted against max_size.

Trace format: `minute,demand` lines; an optional `minute,demand` header; `#` starts a comment.
Minutes are integers >= 0 and strictly increasing; demand (>= 0) holds from its minute until the
next row.  The replay covers minute 0 through the last row's minute; before the first row, the
first row's demand applies.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

import idcf_api
from ssh_scale import (
    PERIODS,
    Action,
    Decision,
    History,
    HostLoad,
    Measurement,
    Pool,
    Settings,
    Vm,
    aggregate_load,
    decide,
)

TICK_SECONDS = 5
RUN_SECONDS = 60
DECAY = tuple(math.exp(-TICK_SECONDS / (60.0 * p)) for p in PERIODS)
FLIP_SECONDS = 600
MAX_MINUTES = 31 * 24 * 60
POLICIES = ("current", "classic")
VIRTUAL_EPOCH = datetime(2013, 5, 10, tzinfo=timezone.utc)
PREHISTORY_SECONDS = -86400.0  # the starting VMs were created a day before the replay
PLOT_HINT = "--plot needs matplotlib: pip install 'ssh-scale[plot]'"
HEADER = ("minute", "demand")

BOOTING, SERVING, DRAINING, GONE = "booting", "serving", "draining", "gone"
DEFAULT_BOOT_SECONDS = 150.0  # the deploy time observed in the 2013 walk-through


class ReplayError(idcf_api.ConfigError):
    """A replay input (trace file, option) is unusable; main() exits 2 with this line."""


# --- the trace -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TracePoint:
    """From this minute on, the pool must absorb this much load (load-average units)."""

    minute: int
    demand: float


@dataclass(frozen=True)
class Trace:
    """A parsed trace: rows in increasing minute order."""

    source: str
    points: tuple[TracePoint, ...]

    @property
    def minutes(self) -> int:
        """Length of the replay: minute 0 through the last row's minute."""
        return self.points[-1].minute + 1

    def per_minute(self) -> list[float]:
        """The demand of every minute of the replay: each row holds until the next, and the
        first row's demand also covers the minutes before it."""
        demands: list[float] = []
        for point, following in zip(self.points, self.points[1:] + (None,)):
            end = following.minute if following else self.minutes
            demands += [point.demand] * (end - len(demands))
        return demands


def parse_trace(lines: Iterable[str], source: str) -> Trace:
    """A Trace from minute,demand lines; raises ReplayError naming source and line."""
    points: list[TracePoint] = []
    first_row = True
    for number, raw in enumerate(lines, start=1):
        text = raw.split("#", 1)[0].strip()
        if not text:
            continue
        fields = [f.strip() for f in text.split(",")]
        if first_row and tuple(f.lower() for f in fields) == HEADER:
            first_row = False
            continue
        where = f"{source}:{number}"
        previous = points[-1] if points else None
        points.append(_parse_row(fields, where, previous, header_allowed=first_row))
        first_row = False
    if not points:
        raise ReplayError(f"{source}: no rows (expected minute,demand lines)")
    return Trace(source, tuple(points))


def _parse_row(fields: Sequence[str], where: str, previous: Optional[TracePoint],
               header_allowed: bool) -> TracePoint:
    if len(fields) != 2:
        raise ReplayError(f"{where}: expected 2 fields (minute,demand), got {len(fields)}")
    minute_text, demand_text = fields
    if not re.fullmatch(r"\d+", minute_text):
        hint = " (a header line must read minute,demand)" if header_allowed else ""
        raise ReplayError(f"{where}: minute: expected an integer of at least 0, "
                          f"got {minute_text!r}{hint}")
    minute = int(minute_text)
    if previous is not None and minute <= previous.minute:
        raise ReplayError(f"{where}: minute: {minute} is not after the previous row's "
                          f"{previous.minute} (minutes must increase)")
    if minute >= MAX_MINUTES:
        raise ReplayError(f"{where}: minute: {minute} is beyond the replay limit of "
                          f"{MAX_MINUTES} minutes (31 days)")
    return TracePoint(minute, _parse_demand(demand_text, where))


def _parse_demand(text: str, where: str) -> float:
    try:
        demand = float(text)
    except ValueError:
        raise ReplayError(f"{where}: demand: expected a number, got {text!r}") from None
    if not math.isfinite(demand) or demand < 0:
        raise ReplayError(f"{where}: demand: expected a number of at least 0, got {text!r}")
    return demand


def read_trace(path: str) -> Trace:
    """Read and parse a trace file; raises ConfigError (ReplayError for its content)."""
    text = idcf_api.read_text(path, "UTF-8 minute,demand lines", encoding="utf-8-sig")
    return parse_trace(text.splitlines(), path)


# --- the load-average model (pure) ---------------------------------------------------------------


def kernel_step(loads: tuple[float, float, float], running: float) -> tuple[float, float, float]:
    """One 5-second calc_load step: each average decays toward `running` tasks."""
    one, five, fifteen = (load * e + running * (1.0 - e) for load, e in zip(loads, DECAY))
    return one, five, fifteen


def warmed_loads(running: float) -> tuple[float, float, float]:
    """Load averages of a VM that has run `running` tasks for a long time."""
    return running, running, running


# --- the policies --------------------------------------------------------------------------------


def classic_settings(settings: Settings) -> Settings:
    """The 2013 tool's rules expressed as Settings: 1-min load of the monitored VM, no
    cooldowns, one VM per run; thresholds and min/max stay as configured.  It destroyed a VM
    right after taking it out of the load balancer, so there is no drain either."""
    return replace(settings, cooldown_out=0.0, cooldown_in=0.0, period_out=1, period_in=1,
                   step_out="1", monitor_members=False, aggregate="mean", min_reporting=1,
                   drain_seconds=0.0)


# --- results -------------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class Summary:
    """The replay's score: cost, pain and churn."""

    minutes: int
    vm_minutes: int
    overload_minutes: int
    scale_outs: int
    scale_ins: int
    flips: int
    peak_vms: int


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


# --- the simulation ------------------------------------------------------------------------------


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


def _latest(known: Optional[float], second: float) -> float:
    return second if known is None else max(known, second)


@dataclass
class _Simulation:
    """The mutable state of one replay, advanced by `run()` in 5-second ticks."""

    trace: Trace
    settings: Settings
    policy: str
    boot_seconds: float
    vms: list[_SimVm] = field(default_factory=list)
    gone: list[_SimVm] = field(default_factory=list)  # destroyed: kept only for the bill
    lock_until: float = -math.inf
    last_out: Optional[float] = None
    last_in: Optional[float] = None
    samples: list[Sample] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    demand: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.demand = self.trace.per_minute()
        share = self.demand[0] / self.settings.min_size
        for index in range(self.settings.min_size):
            self.vms.append(_SimVm(id=f"vm-{index}", created=PREHISTORY_SECONDS,
                                   joins=PREHISTORY_SECONDS, managed=index > 0, state=SERVING,
                                   loads=warmed_loads(share)))

    def run(self) -> list[Sample]:
        """Every tick: the kernel's load step, due joins and destroys, then cron each minute."""
        for second in range(0, self.trace.minutes * RUN_SECONDS, TICK_SECONDS):
            if second:
                self.advance_loads(second)
            self.apply_due_events(second)
            if second % RUN_SECONDS == 0:
                self.cron_run(second)
                self.apply_due_events(second)  # a zero boot or drain takes effect at once
            self.samples.append(self.sample(second))
        return self.samples

    # the clock

    def in_state(self, state: str) -> list[_SimVm]:
        return [vm for vm in self.vms if vm.state == state]

    def advance_loads(self, second: int) -> None:
        """The kernel's 5-s step for the interval that ends at `second`."""
        serving = self.in_state(SERVING)
        demand = self.demand[(second - TICK_SECONDS) // RUN_SECONDS]
        share = demand / len(serving) if serving else 0.0
        for vm in serving:
            vm.loads = kernel_step(vm.loads, share)
        for vm in self.in_state(BOOTING):
            vm.loads = kernel_step(vm.loads, 0.0)

    def apply_due_events(self, second: float) -> None:
        """Booted VMs join the load balancer; drained VMs are destroyed. (The scale-in
        cooldown counts from leaving the load balancer, as live runs read it from the
        LB.REMOVE.FROM.RULE event, not from the destroy.)"""
        for vm in self.in_state(BOOTING):
            if vm.joins <= second:
                vm.state = SERVING
                self.last_out = _latest(self.last_out, vm.joins)
        destroyed = [vm for vm in self.in_state(DRAINING)
                     if vm.destroyed is not None and vm.destroyed <= second]
        if destroyed:
            for vm in destroyed:
                vm.state = GONE
            self.gone += destroyed
            self.vms = [vm for vm in self.vms if vm.state != GONE]

    def sample(self, second: int) -> Sample:
        return Sample(second, self.demand[second // RUN_SECONDS],
                      len(self.in_state(SERVING)), len(self.in_state(BOOTING)),
                      self.vms[0].loads[0])

    # one cron run

    def cron_run(self, second: int) -> None:
        if self.policy == "current" and second < self.lock_until:
            self.runs.append(Run(second, skipped=True))
            return
        now = VIRTUAL_EPOCH + timedelta(seconds=second)
        measurement = self.measurement(now)
        history = History(self.virtual_time(self.last_out), self.virtual_time(self.last_in))
        decision = decide(measurement, self.pool(), self.settings, now, history)
        load_out = aggregate_load(measurement, self.settings.period_out, self.settings)
        self.runs.append(Run(second, skipped=False, hosts=len(measurement.hosts),
                             load_out=load_out, decision=decision))
        if decision.action is Action.SCALE_OUT:
            self.scale_out(second, decision)
        elif decision.action is Action.SCALE_IN:
            self.scale_in(second, decision)
        # repairs (adopt, re-add, destroy) cannot arise: the replay leaves no crash leftovers

    def virtual_time(self, second: Optional[float]) -> Optional[datetime]:
        return None if second is None else VIRTUAL_EPOCH + timedelta(seconds=second)

    def measurement(self, now: datetime) -> Measurement:
        """The monitored VM's loads, or every in-service VM past boot_grace (monitor_members)."""
        if not self.settings.monitor_members:
            monitored = self.vms[0]
            return Measurement((HostLoad(self.host_name(monitored), loads=monitored.loads),))
        hosts = []
        for vm in self.in_state(SERVING):
            age = (now - VIRTUAL_EPOCH).total_seconds() - vm.created
            if not vm.managed or age >= self.settings.boot_grace:
                hosts.append(HostLoad(self.host_name(vm), loads=vm.loads))
        return Measurement(tuple(hosts))

    def host_name(self, vm: _SimVm) -> str:
        if not vm.managed and self.settings.hosts:
            return self.settings.hosts[0]
        return vm.id

    def pool(self) -> Pool:
        """Members as the cloud would list them; booting VMs as Starting members, which only
        the classic policy ever sees (the current one waits for the boot under the lock)."""
        vms = []
        for vm in self.vms:
            if vm.state not in (SERVING, BOOTING):
                continue
            vms.append(Vm(id=vm.id, name=self.host_name(vm),
                          state="Running" if vm.state == SERVING else "Starting",
                          created=self.virtual_time(vm.created) if vm.managed else None,
                          in_lb=True, managed=vm.managed, monitored=not vm.managed))
        return Pool(tuple(vms))

    def scale_out(self, second: int, decision: Decision) -> None:
        joins = second + self.boot_seconds
        for _ in range(decision.count):
            number = len(self.vms) + len(self.gone)
            self.vms.append(_SimVm(id=f"vm-{number}", created=second, joins=joins))
        if self.policy == "current":
            self.lock_until = joins
        self.record(second, decision)

    def scale_in(self, second: int, decision: Decision) -> None:
        victim = next(vm for vm in self.vms if vm.id == decision.vms[0].id)
        victim.state = DRAINING  # out of the load balancer (a booting victim never joins)
        victim.destroyed = second + self.settings.drain_seconds
        self.last_in = second
        if self.policy == "current":
            self.lock_until = victim.destroyed
        self.record(second, decision)

    def record(self, second: int, decision: Decision) -> None:
        alive = len(self.in_state(SERVING)) + len(self.in_state(BOOTING))
        self.changes.append(Change(second, decision.action, decision.count, alive,
                                   decision.reason))


def replay(trace: Trace, settings: Settings, policy: str = "current",
           boot_seconds: float = DEFAULT_BOOT_SECONDS) -> ReplayResult:
    """Replay a trace through decide() on a virtual clock (pure: no I/O, no real clock)."""
    if policy not in POLICIES:
        raise ReplayError(f"--policy: expected one of {', '.join(POLICIES)}, got {policy!r}")
    decision_settings = classic_settings(settings) if policy == "classic" else settings
    simulation = _Simulation(trace, decision_settings, policy, boot_seconds)
    samples = simulation.run()
    lifetimes = [(vm.created, vm.destroyed) for vm in simulation.vms + simulation.gone]
    summary = summarize(trace.minutes, samples, simulation.changes, lifetimes,
                        settings.threshold_out)
    return ReplayResult(trace.source, policy, boot_seconds, decision_settings, tuple(samples),
                        tuple(simulation.runs), tuple(simulation.changes), summary)


# --- scoring (pure) ------------------------------------------------------------------------------


def summarize(minutes: int, samples: Sequence[Sample], changes: Sequence[Change],
              lifetimes: Sequence[tuple[float, Optional[float]]],
              threshold_out: float) -> Summary:
    """Cost, overload and churn of a finished replay; lifetimes are every VM's (created,
    destroyed or None) in seconds of the virtual clock."""
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
    )


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


# --- views ---------------------------------------------------------------------------------------


SUMMARY_COLUMNS = ("trace", "policy", "minutes", "VM-minutes", "overload minutes", "scale-outs",
                   "scale-ins", "flips", "peak VMs")


def summary_row(result: ReplayResult) -> dict[str, Any]:
    """The summary as one table row keyed by SUMMARY_COLUMNS."""
    summary = result.summary
    return {"trace": os.path.basename(result.source), "policy": policy_label(result),
            "minutes": summary.minutes, "VM-minutes": summary.vm_minutes,
            "overload minutes": summary.overload_minutes, "scale-outs": summary.scale_outs,
            "scale-ins": summary.scale_ins, "flips": summary.flips,
            "peak VMs": summary.peak_vms}


def policy_label(result: ReplayResult) -> str:
    """'classic', or 'current' with the step when it is not 1."""
    if result.policy == "current" and result.settings.step_out != "1":
        return f"current (step {result.settings.step_out})"
    return result.policy


def clock_label(second: int) -> str:
    """Virtual time as hours:minutes since the replay's start."""
    minutes = second // RUN_SECONDS
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def changes_table(result: ReplayResult) -> str:
    """Every scale-out and scale-in, with decide()'s reason."""
    rows = [{"time": clock_label(c.second), "action": c.action.value,
             "VMs": f"{'+' if c.action is Action.SCALE_OUT else '-'}{c.count} -> {c.vms_after}",
             "reason": c.reason} for c in result.changes]
    if not rows:
        return "(no scale-out or scale-in)"
    return idcf_api.format_table(rows, ["time", "action", "VMs", "reason"])


def text_report(result: ReplayResult) -> str:
    """The changes and the summary, as printed without --json."""
    title = (f"replay of {result.source}: {result.summary.minutes} minutes, policy "
             f"{policy_label(result)}, boot {result.boot_seconds:g} s")
    summary = idcf_api.format_table([summary_row(result)], SUMMARY_COLUMNS)
    return f"{title}\n{changes_table(result)}\n{summary}"


def result_json(result: ReplayResult) -> dict[str, Any]:
    """The replay as one JSON-ready object."""
    summary = result.summary
    return {
        "trace": result.source, "policy": result.policy,
        "step": result.settings.step_out, "boot_seconds": result.boot_seconds,
        "minutes": summary.minutes, "vm_minutes": summary.vm_minutes,
        "overload_minutes": summary.overload_minutes, "scale_outs": summary.scale_outs,
        "scale_ins": summary.scale_ins, "flips": summary.flips, "peak_vms": summary.peak_vms,
        "skipped_runs": sum(1 for r in result.runs if r.skipped),
        "changes": [{"minute": c.minute, "action": c.action.value, "count": c.count,
                     "vms_after": c.vms_after, "reason": c.reason} for c in result.changes],
    }


# --- the plot (optional matplotlib) --------------------------------------------------------------


def require_matplotlib() -> Any:
    """A maker of matplotlib Figures on the Agg canvas (no pyplot, no global backend
    switch); raises ReplayError with the install hint when matplotlib is missing."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ReplayError(PLOT_HINT) from None

    def new_figure(**kwargs: Any) -> Any:
        figure = Figure(**kwargs)
        FigureCanvasAgg(figure)
        return figure

    return new_figure


def plot_replay(result: ReplayResult, path: str) -> None:
    """Draw demand, per-VM load, thresholds and VM count to a PNG; raises ReplayError."""
    figure = require_matplotlib()(figsize=(11, 7.5), constrained_layout=True)
    demand_axes, load_axes, count_axes = figure.subplots(
        3, 1, sharex=True, gridspec_kw={"height_ratios": (2, 3, 2)})
    hours = [s.second / 3600 for s in result.samples]
    _plot_demand(demand_axes, hours, result)
    _plot_loads(load_axes, hours, result)
    _plot_counts(count_axes, hours, result)
    count_axes.set_xlabel("hours since the start of the trace")
    summary = result.summary
    figure.suptitle(f"{os.path.basename(result.source)}: policy {policy_label(result)}, boot "
                    f"{result.boot_seconds:g} s: {summary.overload_minutes} overload min, "
                    f"{summary.vm_minutes} VM-min, +{summary.scale_outs}/-{summary.scale_ins}, "
                    f"{summary.flips} flips")
    try:
        figure.savefig(path, dpi=100)
    except OSError as exc:
        raise ReplayError(f"{path}: cannot write the plot: {exc.strerror or exc}") from None


def _plot_demand(axes: Any, hours: Sequence[float], result: ReplayResult) -> None:
    axes.plot(hours, [s.demand for s in result.samples], color="black", drawstyle="steps-post",
              label="demand (whole pool)")
    axes.set_ylabel("load units")
    axes.set_ylim(bottom=0)
    _legend(axes)
    axes.grid(alpha=0.3)


def _plot_loads(axes: Any, hours: Sequence[float], result: ReplayResult) -> None:
    settings = result.settings
    axes.plot(hours, [s.share for s in result.samples], color="tab:gray", linewidth=1,
              drawstyle="steps-post", label="demand per VM in service")
    axes.plot(hours, [s.load1 for s in result.samples], color="tab:orange",
              label="1-min load of the monitored VM")
    runs = [r for r in result.runs if r.load_out is not None]
    axes.plot([r.second / 3600 for r in runs], [r.load_out for r in runs], ".",
              color="tab:purple", markersize=3,
              label=f"load decide() saw ({settings.period_out}-min, {_seen_hosts(settings)})")
    axes.axhline(settings.threshold_out, color="tab:red", linestyle="--",
                 label=f"threshold_out {settings.threshold_out:g}")
    axes.axhline(settings.threshold_in, color="tab:blue", linestyle="--",
                 label=f"threshold_in {settings.threshold_in:g}")
    overloaded = [s.share > settings.threshold_out for s in result.samples]
    axes.fill_between(hours, 0, 1, where=overloaded, step="post", color="tab:red", alpha=0.1,
                      transform=axes.get_xaxis_transform(), label="overloaded")
    axes.set_ylabel("load per VM")
    axes.set_ylim(bottom=0)
    _legend(axes)
    axes.grid(alpha=0.3)


def _legend(axes: Any) -> None:
    """Beside the panel, so it never hides a curve."""
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)


def _seen_hosts(settings: Settings) -> str:
    return f"{settings.aggregate} of members" if settings.monitor_members else "monitored VM"


def _plot_counts(axes: Any, hours: Sequence[float], result: ReplayResult) -> None:
    settings = result.settings
    axes.plot(hours, [s.serving + s.booting for s in result.samples], color="tab:green",
              linestyle=":", drawstyle="steps-post", label="VMs booting + in service")
    axes.plot(hours, [s.serving for s in result.samples], color="tab:green",
              drawstyle="steps-post", label="VMs in service")
    for action, marker, color in ((Action.SCALE_OUT, "^", "tab:red"),
                                  (Action.SCALE_IN, "v", "tab:blue")):
        changes = [c for c in result.changes if c.action is action]
        axes.plot([c.second / 3600 for c in changes], [c.vms_after for c in changes], marker,
                  color=color, linestyle="none", label=action.value)
    axes.set_ylim(0, settings.max_size + 1)
    axes.set_ylabel("VMs")
    _legend(axes)
    axes.grid(alpha=0.3)


# --- the CLI -------------------------------------------------------------------------------------


def checked_boot_seconds(value: Any) -> float:
    """--boot-seconds as a finite number of seconds >= 0; raises ReplayError."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ReplayError(f"--boot-seconds: expected a number of seconds, got {value!r}") \
            from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ReplayError(f"--boot-seconds: expected a number of seconds of at least 0, "
                          f"got {value!r}")
    return seconds


def run_cli(settings: Settings, args: argparse.Namespace) -> int:
    """`ssh_scale.py --replay`: replay, print the table (or JSON), draw the plot; returns 0.

    Raises ReplayError (a ConfigError: exit 2) for a bad trace, option or plot path."""
    policy = getattr(args, "policy", None) or "current"
    boot = getattr(args, "boot_seconds", None)
    boot_seconds = checked_boot_seconds(DEFAULT_BOOT_SECONDS if boot is None else boot)
    plot_path = getattr(args, "plot", None)
    if plot_path:
        require_matplotlib()
    result = replay(read_trace(args.replay), settings, policy, boot_seconds)
    if plot_path:
        plot_replay(result, plot_path)
    if getattr(args, "json", False):
        print(json.dumps({**result_json(result), "plot": plot_path}))
    else:
        print(text_report(result) + (f"\nplot: {plot_path}" if plot_path else ""))
    return 0
