"""The soak's invariants, pure: what one step left in the cloud and its runs' outputs ->
violations. Per step: the runs (no traceback, no bug line, exit codes from README's list, one
error line, no secret, no run that never ends), the bounds (never above max_size + 1), no VM the
tool did not create touched (an earlier version's VM, seeded before the upgrade, is the pool's),
no garbled or late SSH answer taken for a load, no load-based scale-in below the quorum of
answering hosts. Across steps (Tracker): never below min_size for longer than a deploy unless
the backoff or the launch budget holds, nor above max_size for longer than a replacement,
failed deploys spaced by the failed-deploy backoff (per virtual hour), no more deploys per hour
than the launch budget, a refresh to a template whose VMs fail their check stopped after the
first, and at the end nothing left over: every VM of the tool Running in the load balancer,
none stuck, the pool within bounds."""

from __future__ import annotations

import math
import re
import signal
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Optional

from bench.soak_world import CallRecord, CloudVm, RunRecord, Scenario
from cloudstack_sim import DEFAULT_API_KEY, DEFAULT_SECRET_KEY

IN_SERVICE = ("Running", "Starting", "Migrating")
GONE = ("Destroyed", "Expunging")
LOADAVG = re.compile(r"\d+\.\d+ \d+\.\d+ \d+\.\d+ \d+/\d+ \d+\n?")
LOAD_RULES = ("threshold_in", "target")
ERROR_LINE = "ssh_scale.py: error: "
QUIET_STEPS = 2  # a deploy takes one run; one more for the job and a lost race
BACKOFF_SLACK = 2  # failed deploys beyond the backoff's count per hour: detection, kills
FIRST_BACKOFF, HOUR = 60.0, 3600.0
BUDGET_SLACK = 60.0  # seconds: a launch's record is written a little before its deploy call
DRAIN = "ssh-scale:drain"
REPLACING = "deploying its replacement"  # the replace line of a run that acts on its decision
QUORUM = 0.75  # [monitoring] quorum's default (the soak's config leaves it): answering hosts


@dataclass(frozen=True)
class Violation:
    """One broken invariant: its name, what happened, the step and the runs involved."""

    invariant: str
    detail: str
    step: int
    runs: tuple[int, ...] = ()


@dataclass(frozen=True)
class StepRecord:
    """What one step did and left behind, as the checks need it."""

    index: int
    vtime: float  # the virtual time at the step's start (epoch seconds)
    skew: float  # virtual minus real time during the step
    disturbed: bool  # something was broken this step (a fault, a kill, a stuck VM, ...)
    runs: tuple[RunRecord, ...]
    calls: tuple[CallRecord, ...]
    vms: tuple[CloudVm, ...]
    seeded: Mapping[str, str]
    legacy: Collection[str]  # seeded before the upgrade as an earlier version's: the pool's
    failed_vms: Collection[str]
    broken_template: Optional[str]  # VMs of this template fail their check (health on)
    config_broken: bool  # the config deploys the broken template this step
    answers: Mapping[str, str]
    silent: Collection[str]


def run_violations(step: StepRecord, exit_codes: Collection[int]) -> list[Violation]:
    """No traceback, no unexpected error, a listed exit code, one error line, no secret."""
    found = []
    for run in step.runs:
        text = run.stdout + run.stderr

        def add(invariant: str, detail: str, run: RunRecord = run) -> None:
            found.append(Violation(invariant, detail, step.index, (run.number,)))

        if "Traceback (most recent call last)" in text:
            add("traceback", "a traceback in the output")
        if "please report it" in run.stderr:
            add("unexpected error", _error_line(run.stderr))
        killed = _died_of_signal(run)
        if run.overran:
            add("run never ends", f"still running after {run.seconds:.0f} s"
                + (" and a SIGTERM" if run.signalled else ""))
        elif not killed and run.returncode not in exit_codes:
            add("exit code", f"exit {run.returncode}, not one README lists")
        elif run.returncode == 2:
            add("exit code", f"exit 2 (usage or config) on a valid config: "
                             f"{_error_line(run.stderr)}")
        if run.returncode != 0 and not (killed or run.overran) and ERROR_LINE not in run.stderr:
            add("error line", f"exit {run.returncode} without an '{ERROR_LINE}...' line")
        if DEFAULT_API_KEY in text or DEFAULT_SECRET_KEY in text:
            add("secret", "the API key or secret in the output")
    return found


def bound_violations(step: StepRecord, scenario: Scenario) -> list[Violation]:
    """Never more than max_size + 1 VMs in service or of the tool's."""
    if _excess(step, scenario.max_size) > 1:
        return [Violation("above max_size + 1", f"{_committed(step)} VMs in service or "
                          f"deployed, max_size {scenario.max_size}", step.index,
                          _numbers(step))]
    return []


def foreign_violations(step: StepRecord) -> list[Violation]:
    """No call changes, adds, removes or tags a VM the tool did not create."""
    found = []
    names = {vm.id: vm.name for vm in step.vms}
    for call in step.calls:
        for vm_id in _vms_changed(call):
            if vm_id in step.seeded:
                found.append(Violation(
                    "foreign VM touched", f"{call.command} on {names.get(vm_id, vm_id)} "
                    f"({step.seeded[vm_id]})", step.index, _numbers(step)))
    return found


def measurement_violations(step: StepRecord) -> list[Violation]:
    """A load comes only from a well-formed answer, as it was; no scale-in by the load while
    fewer measured hosts answered than the quorum."""
    found = []
    for run in step.runs:
        report = run.report or {}
        hosts = report.get("hosts") or []
        for host in hosts:
            address = host.get("address") or host.get("host")
            load = host.get("load")
            if load is None:
                continue
            answer = step.answers.get(address, "")
            if address in step.silent:
                found.append(Violation("late answer read", f"{address} answered after the "
                             f"command timeout, read as {load[0]}", step.index, (run.number,)))
            elif not LOADAVG.fullmatch(answer):
                found.append(Violation("garbled answer read", f"{address} answered "
                             f"{answer!r}, read as load {load[0]}", step.index, (run.number,)))
            elif abs(float(answer.split()[0]) - load[0]) > 0.005:
                found.append(Violation("load misread", f"{address} answered {answer!r}, read "
                             f"as {load[0]}", step.index, (run.number,)))
        decision = report.get("decision") or {}
        answered = sum(h.get("load") is not None for h in hosts)
        if decision.get("action") == "scale in" and decision.get("rule") in LOAD_RULES and \
                answered < math.ceil(QUORUM * len(hosts) - 1e-9):
            found.append(Violation("scale-in below the quorum", f"{decision.get('reason')} "
                         f"while only {answered} of {len(hosts)} measured hosts answered "
                         f"(quorum {QUORUM:.0%})", step.index, (run.number,)))
    return found


@dataclass
class Attempt:
    """One deploy the cloud saw: when (virtual), whether it failed, what it was."""

    vtime: float
    failed: Optional[str]  # why it failed: refused, job failed, unhealthy (None: it did not)
    what: str


@dataclass
class Tracker:
    """The invariants that span steps."""

    scenario: Scenario
    known: set[str] = field(default_factory=set)  # the tool's VMs seen so far
    fresh: list[CloudVm] = field(default_factory=list)  # the tool's VMs new in this step
    chain: list[Attempt] = field(default_factory=list)  # failed deploys since the last good
    chain_reported: bool = False
    below: int = 0  # unexcused steps in a row below min_size
    above: int = 0  # unexcused steps in a row above max_size
    refreshes: int = 0  # refresh replacements while the config deploys the broken template
    launches: list[float] = field(default_factory=list)  # deploy calls, virtual times
    budget_reported: bool = False

    def after(self, step: StepRecord) -> list[Violation]:
        found = self._attempts(step)
        found += self._launches(step)
        found += self._below_min(step)
        found += self._above_max(step)
        found += self._refresh(step)
        return found

    def _attempts(self, step: StepRecord) -> list[Violation]:
        attempts = [Attempt(call.time + step.skew, "refused", f"refused (HTTP {call.status})")
                    for call in step.calls
                    if call.command == "deployvirtualmachine" and call.status != 200]
        self.fresh = []
        for vm in step.vms:
            if vm.id in step.seeded or vm.id in step.legacy or vm.id in self.known:
                continue
            self.known.add(vm.id)
            self.fresh.append(vm)
            if vm.id in step.failed_vms:
                attempts.append(Attempt(vm.created, "job failed",
                                        f"{vm.name}: job failed"))
            elif step.broken_template and vm.template == step.broken_template:
                attempts.append(Attempt(vm.created, "unhealthy",
                                        f"{vm.name}: fails its health check"))
            else:
                attempts.append(Attempt(vm.created, None, vm.name))
        found = []
        merge = False  # one deploy decision per step: its failed VMs are one failed deploy
        for attempt in sorted(attempts, key=lambda a: a.vtime):
            if not attempt.failed:
                self.chain, self.chain_reported, merge = [], False, False
                continue
            if merge:
                self.chain[-1].what += f" and {attempt.what}"
                continue
            self.chain.append(attempt)
            merge = True
            recent = [a for a in self.chain if a.vtime > attempt.vtime - HOUR]
            allowed = allowed_failures(self.scenario.max_backoff) + BACKOFF_SLACK
            if len(recent) > allowed and not self.chain_reported:
                self.chain_reported = True
                first = recent[0].vtime
                kinds = ", ".join(sorted({str(a.failed) for a in recent}))
                found.append(Violation(
                    f"failed deploys beyond the backoff ({kinds})",
                    f"{len(recent)} failed deploys within {attempt.vtime - first:.0f} virtual "
                    f"s (the backoff allows {allowed - BACKOFF_SLACK} per hour, max_backoff "
                    f"{self.scenario.max_backoff}): " + ", ".join(
                        f"+{a.vtime - first:.0f}s {a.what}" for a in recent),
                    step.index, _numbers(step)))
        return found

    def _launches(self, step: StepRecord) -> list[Violation]:
        """No more deploy calls within an hour than the launch budget: the tool records each
        launch before its call, whatever becomes of it (refused, failed, killed)."""
        found = []
        budget = launch_budget(self.scenario)
        for call in step.calls:
            if call.command != "deployvirtualmachine":
                continue
            when = call.time + step.skew
            self.launches.append(when)
            recent = [t for t in self.launches if t > when - HOUR + BUDGET_SLACK]
            if len(recent) <= budget:
                self.budget_reported = False
            elif not self.budget_reported:
                self.budget_reported = True
                found.append(Violation(
                    "launches beyond the budget", f"{len(recent)} deploys within "
                    f"{when - recent[0]:.0f} virtual s, launch budget {budget} per hour",
                    step.index, _numbers(step)))
        return found

    def budget_holds(self, vtime: float) -> bool:
        """Whether the launch budget may hold deploys at vtime."""
        return sum(t > vtime - HOUR for t in self.launches) >= launch_budget(self.scenario)

    def backoff_holds(self, vtime: float) -> bool:
        """Whether the failed-deploy backoff may still hold deploys at vtime (with a step's
        and a health verdict's latency)."""
        if not self.chain:
            return False
        delay = min(FIRST_BACKOFF * 2 ** min(len(self.chain) - 1, 30),
                    self.scenario.max_backoff)
        latency = (self.scenario.unhealthy_runs + 2) * FIRST_BACKOFF
        return vtime < self.chain[-1].vtime + delay + latency

    def _below_min(self, step: StepRecord) -> list[Violation]:
        serving = _serving(step)
        if serving >= self.scenario.min_size:
            self.below = 0
            return []
        if step.disturbed or self.backoff_holds(step.vtime) or self.budget_holds(step.vtime):
            return []
        self.below += 1
        if self.below != QUIET_STEPS + 1:
            return []
        return [Violation("below min_size", f"{serving} VMs Running in the load balancer, "
                          f"min_size {self.scenario.min_size}, for {self.below} undisturbed "
                          "steps with neither the backoff nor the launch budget holding",
                          step.index, _numbers(step))]

    def _above_max(self, step: StepRecord) -> list[Violation]:
        if _excess(step, self.scenario.max_size) <= 0:
            self.above = 0
            return []
        if step.disturbed:
            return []
        self.above += 1
        if self.above != QUIET_STEPS + 1:
            return []
        return [Violation("above max_size", f"{_committed(step)} VMs in service or deployed, "
                          f"max_size {self.scenario.max_size}, for {self.above} undisturbed "
                          "steps", step.index, _numbers(step))]

    def _refresh(self, step: StepRecord) -> list[Violation]:
        if not (step.config_broken and step.broken_template):
            self.refreshes = 0
            return []
        found = []
        # A replacement counts once its run acted (a run that found the other monitor's
        # lease did not) and deployed a VM of that template: one whose deploy the cloud
        # refused replaced nothing, and the backoff spaces its retries.
        deployed = any(vm.template == step.broken_template for vm in self.fresh)
        for run in step.runs:
            decision = (run.report or {}).get("decision") or {}
            if decision.get("rule") == "refresh" and decision.get("action") == "replace" and \
                    deployed and REPLACING in run.stdout + run.stderr:
                self.refreshes += 1
                if self.refreshes == 2:
                    found.append(Violation(
                        "refresh to a failing template", "a second refresh replacement "
                        f"({decision.get('vms')}) while the new template's VMs fail their "
                        "check", step.index, (run.number,)))
        return found


def end_violations(step: StepRecord, scenario: Scenario) -> list[Violation]:
    """After the faults stopped and quiet runs: nothing left over, nothing stuck, in bounds."""
    found = []
    for vm in step.vms:
        if vm.id in step.seeded or vm.state in GONE:
            continue
        if vm.state in ("Starting", "Stopping") and not vm.jobid:
            found.append(Violation("stuck VM kept", f"{vm.name} is still {vm.state}",
                                   step.index))
        elif vm.state != "Running" or not vm.in_lb or DRAIN in vm.tags:
            where = "in" if vm.in_lb else "outside"
            found.append(Violation("leftover at the end", f"{vm.name} {vm.state} {where} the "
                                   f"load balancer, tags {dict(vm.tags)}", step.index))
    serving, committed = _serving(step), _committed(step)
    if serving < scenario.min_size or _excess(step, scenario.max_size) > 0:
        found.append(Violation("out of bounds at the end", f"{serving} serving, {committed} "
                               f"committed, bounds {scenario.min_size}-{scenario.max_size}",
                               step.index))
    return found


def launch_budget(scenario: Scenario) -> int:
    """VMs the pool may launch per hour: [scalling] launch_budget's default, twice max_size
    (the soak's config leaves the key out)."""
    return 2 * scenario.max_size


def allowed_failures(max_backoff: float, window: float = HOUR) -> int:
    """Failed deploys in a row the backoff lets through within `window` seconds: at 0, then
    after 1, 2, 4 ... minutes (at most max_backoff) each."""
    count, elapsed = 1, 0.0
    while True:
        elapsed += min(FIRST_BACKOFF * 2 ** (count - 1), max_backoff)
        if elapsed >= window:
            return count
        count += 1


def _serving(step: StepRecord) -> int:
    return sum(vm.in_lb and vm.state == "Running" for vm in step.vms)


def _excess(step: StepRecord, max_size: int) -> int:
    """How far what max_size bounds exceeds it, beyond what the unmanaged members in
    service alone make (the tool may not remove those)."""
    unmanaged = sum(vm.in_lb and vm.state in IN_SERVICE and vm.id in step.seeded
                    for vm in step.vms)
    return _committed(step) - max(max_size, unmanaged)


def _committed(step: StepRecord) -> int:
    """As the README defines what max_size bounds: the members in service and every VM of
    the tool's outside them that still exists."""
    in_service = [vm for vm in step.vms if vm.in_lb and vm.state in IN_SERVICE]
    outside = [vm for vm in step.vms if vm.id not in step.seeded and vm not in in_service
               and vm.state not in GONE]
    return len(in_service) + len(outside)


def _vms_changed(call: CallRecord) -> list[str]:
    params = call.params
    if call.command == "destroyvirtualmachine":
        return [params.get("id", "")]
    if call.command in ("assigntoloadbalancerrule", "removefromloadbalancerrule"):
        ids = params.get("virtualmachineids", "").split(",")
        return ids + [v for k, v in params.items() if re.fullmatch(r"vmidipmap\[\d+\]\.vmid", k)]
    if call.command in ("createtags", "deletetags") and \
            params.get("resourcetype", "").lower() == "uservm":
        return params.get("resourceids", "").split(",")
    return []


def _died_of_signal(run: RunRecord) -> bool:
    """Ended by the harness's signal itself: SIGKILL, or a SIGTERM sent at a time (not at an
    API call) that may have come before Python started and the tool set its handler."""
    kill = run.kill
    return kill is not None and run.signalled and run.returncode == -kill.signal and (
        kill.signal == signal.SIGKILL or not kill.after_calls)


def _numbers(step: StepRecord) -> tuple[int, ...]:
    return tuple(run.number for run in step.runs)


def _error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith(ERROR_LINE)]
    return lines[-1] if lines else stderr.strip()[-200:]


def distinct(violations: Sequence[Violation]) -> dict[str, list[Violation]]:
    """Violations by invariant, in the order first seen."""
    grouped: dict[str, list[Violation]] = {}
    for violation in violations:
        grouped.setdefault(violation.invariant, []).append(violation)
    return grouped
