"""The soak: hundreds of cron-like runs of the real ssh_scale.py against the CloudStack simulator
in every --cloudstack mode and the real OpenSSH sshd, while a seeded plan attacks them, and the
invariants checked after every step (bench/soak_checks.py). Figures and violations go to
stdout (and, with --out, one JSON line per violation, with everything needed to reproduce it).

    .venv/bin/python bench/soak.py --seed 1 --runs 500            # every mode, 500+ runs each
    .venv/bin/python bench/soak.py --seed 1 --runs 40 --modes 4.19 --out soak.jsonl
    .venv/bin/python bench/soak.py --seed 1 --modes 4.15 --segment 3   # one segment again

A mode's runs come in segments of 100 (--segment-runs), each a world of its own with a scenario
drawn from (seed, mode, segment): min_size 2-3 and max_size 1-3 above, policy threshold or
target, every member measured or only web1, `[health] check = http` or none, refresh or not,
cooldowns, unhealthy_runs, max_backoff, which template is the broken one.

A step is one cron minute of virtual time: the plan (bench/soak_plan.py) sets the load each
member reports, arms API faults (5xx, HTML pages, slow answers, failing and hanging jobs, deploys
refused with 431/432/530/532/533/5xx or timing out, for one step or an episode of several),
switches the config to a template whose VMs fail `[health] check = http`, makes members sick,
garbles or silences SSH answers, sticks a VM in Starting or Stopping, adds strangers to the
pool's instance group; then monitor a runs, often monitor b too (its own HOME and
$SSH_SCALE_MONITOR, overlapping), either killed with SIGKILL or SIGTERM at a random API call.
The seeded VMs (the monitored web1, an unmanaged member, another pool's VMs, strangers) are the
ones the tool did not create; a stranger put Running into the load balancer and the group
before the pool's first launch is, by README's upgrade rule, an earlier version's VM: the
pool's to manage from then on. At the end the faults stop and a few calm steps run (the first
after a gap longer than max_backoff and the launch budget's hour), then the end state is
checked.

Time passes without waiting: before each step the simulator's Date header is moved ahead by the
virtual time elapsed so far (Simulator.skew_clock, cumulative: 60 s per step, sometimes a gap
of 5-30 minutes). Beyond 5 s of skew ssh_scale.py takes the cloud's clock for its own (it logs
`clock : this machine's clock is N s behind the cloud's`), so every time it compares or writes
(cooldowns, the backoff, the launch budget, the lease, the scale times in tags) is virtual
time. The simulator stamps what it records (VMs' creation, events) on the same virtual clock
(skew_clock's `records`), so a VM is as old to the tool as the steps since its deploy: health
`grace`, `boot_grace` and the target policy's booting window run as on a real cloud. The soak
checks the clock itself: a segment whose runs never print that `clock` line fails (the
harness is broken), and tests/test_soak.py checks that a scale-out time written at a skew of
an hour is an hour ahead.

A violation names the seed, the mode, the segment, the step and the runs, the faults injected
in that step and the two before, and the runs' output (--out: one JSON line each): `--seed S
--modes M --segment K` draws the same plan again (the timing of kills and overlaps may
differ, and with them what the cloud holds)."""

from __future__ import annotations

import argparse
import json
import random
import re
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

BENCH = Path(__file__).resolve().parent
if str(BENCH.parent) not in sys.path:
    sys.path.insert(0, str(BENCH.parent))

from bench.soak_checks import (  # noqa: E402
    HOUR,
    StepRecord,
    Tracker,
    Violation,
    bound_violations,
    distinct,
    end_violations,
    foreign_violations,
    measurement_violations,
    run_violations,
)
from bench.soak_plan import Episode, StepPlan, draw_scenario, draw_step  # noqa: E402
from bench.soak_world import WEB1, RunRecord, Scenario, World, open_world  # noqa: E402
from cloudstack_sim import CLOUDSTACK_VERSIONS  # noqa: E402

README = BENCH.parent / "README.md"
CALM_STEPS = 5
CONTEXT_STEPS = 3  # the steps whose injections a violation lists (its own and the two before)
OUTPUT_LINES = 40
CLOCK_LINE = "behind the cloud's"
PROGRESS_RUNS = 50
SEGMENT_RUNS = 100  # runs per scenario: a mode's soak covers several configs


class SoakError(RuntimeError):
    """The harness itself does not work (the virtual clock does not reach the tool)."""


@dataclass
class Segment:
    """One scenario's part of a server mode's soak: what it did, injected and found."""

    mode: str
    seed: int
    index: int
    scenario: Scenario
    runs: int = 0
    steps: int = 0
    seconds: float = 0.0
    injected: Counter = field(default_factory=Counter)
    violations: list[Violation] = field(default_factory=list)
    reports: list[dict[str, Any]] = field(default_factory=list)  # one per violation
    run_seconds: list[float] = field(default_factory=list)


def loadavg(load: float) -> str:
    return f"{load:.2f} {load:.2f} {load:.2f} 1/200 999\n"


def readme_exit_codes(readme: Path = README) -> frozenset[int]:
    """The exit codes README's "Exit codes" table lists for ssh_scale.py."""
    section = readme.read_text().split("### Exit codes", 1)[1].split("\n#", 1)[0]
    return frozenset(int(code) for code in re.findall(r"^\| (\d+) \|", section, re.M))


class Injections:
    """What one step broke: a line each (a violation lists them), counted by kind."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.kinds: Counter = Counter()

    def add(self, kind: str, line: str) -> None:
        self.lines.append(line)
        self.kinds[kind] += 1


class Driver:
    """Runs one segment's steps (one world, one scenario) and checks each."""

    def __init__(self, world: World, rng: random.Random, result: Segment) -> None:
        self.world, self.rng, self.result = world, rng, result
        self.exit_codes = readme_exit_codes()
        self.tracker = Tracker(world.scenario)
        self.skew = 0.0
        self.demand = 2.0 * world.scenario.min_size
        self.episodes: list[tuple[Episode, int]] = []
        self.broken_left = 0
        self.sick: dict[str, int] = {}
        self.strangers = 0
        self.history: list[Injections] = []  # what each step broke
        self.clock_seen = False
        world.write_config(world.good_template)

    def soak(self, runs: int, calm_steps: int = CALM_STEPS,
             progress: Optional[Callable[[Segment], None]] = None) -> None:
        """At least `runs` runs under attack, then calm_steps (at least 1) calm ones;
        progress() is told after every PROGRESS_RUNS runs."""
        told = 0
        while self.result.runs < runs:
            self.step(draw_step(self.rng, self.world.scenario, self.demand, self.strangers))
            if progress is not None and self.result.runs >= told + PROGRESS_RUNS:
                told = self.result.runs
                progress(self.result)
        self._calm_down()
        for index in range(max(1, calm_steps)):
            plan = draw_step(self.rng, self.world.scenario, self.demand, self.strangers, True)
            if index == 0:
                # longer than both brakes on deploys: the backoff and the launch budget
                gap = max(self.world.scenario.max_backoff, HOUR) + 120.0
                plan = StepPlan(gap, plan.demand,
                                release_hung=True, runs=plan.runs)
            record = self.step(plan)
        self._record(end_violations(record, self.world.scenario), record)
        if not self.clock_seen:
            raise SoakError(f"cloudstack {self.world.mode}: no run logged the clock line: the "
                            "virtual clock (the Date header) does not reach ssh_scale.py")

    def _calm_down(self) -> None:
        """The faults stop: no episode, the good template, no sick member, hung jobs end."""
        self.episodes, self.sick, self.broken_left = [], {}, 0
        self.world.sick = set()
        self.world.write_config(self.world.good_template)

    def step(self, plan: StepPlan) -> StepRecord:
        world, sim = self.world, self.world.sim
        index = self.result.steps
        injected = Injections()
        self.skew += plan.delta
        sim.skew_clock(self.skew, records=True)
        if plan.delta > 60:
            injected.add("virtual gap", f"virtual gap of {plan.delta:.0f} s")
        self._template(plan, injected)
        self._faults(plan, injected)
        if plan.release_hung and sim.release_hung():
            injected.add("hung jobs released", "hung jobs released")
        self._sick(plan, injected)
        stuck = self._stick(plan, injected)
        self._stranger(plan, injected)
        answers, silent = self._answers(plan, injected)
        world.set_answers(answers, silent)
        start = len(sim.calls)
        vtime = time.time() + self.skew
        runs = self._runs(plan)
        for run in runs:
            if run.signalled:
                injected.add(signal.Signals(run.kill.signal).name,
                             f"{run.monitor} run {run.number}: {run.kill.describe()}")
        try:
            sim.settle(timeout=10)
        except TimeoutError:
            injected.add("left pending", "requests or jobs still pending after the step")
        disturbed = bool(plan.faults or self.episodes or stuck or sim.pending_jobs()
                         or any(run.signalled for run in runs))
        record = StepRecord(
            index=index, vtime=vtime, skew=self.skew, disturbed=disturbed, runs=tuple(runs),
            calls=tuple(world.calls_since(start)), vms=tuple(world.cloud_vms()),
            seeded=dict(world.seeded), legacy=frozenset(world.legacy),
            failed_vms=world.failed_deploys(),
            broken_template=world.broken_template if world.scenario.health else None,
            config_broken=self.broken_left > 0, answers=answers, silent=frozenset(silent))
        sim.clear_faults()
        self.demand = plan.demand
        self._advance(injected)
        self._record(run_violations(record, self.exit_codes) + bound_violations(
            record, world.scenario) + foreign_violations(record) + measurement_violations(
            record) + self.tracker.after(record), record)
        return record

    # --- what a step breaks ----------------------------------------------------------------

    def _template(self, plan: StepPlan, injected: Injections) -> None:
        world = self.world
        if plan.broken_steps and not self.broken_left:
            self.broken_left = plan.broken_steps
            world.write_config(world.broken_template)
            verdict = "fail their health check" if world.scenario.health else "are unchecked"
            injected.add("new template", f"config deploys template {world.broken_template} "
                         f"(its VMs {verdict}) for {plan.broken_steps} steps")

    def _faults(self, plan: StepPlan, injected: Injections) -> None:
        sim = self.world.sim
        sim.clear_faults()
        if plan.episode is not None:
            self.episodes.append((plan.episode, plan.episode.steps))
        for episode, left in self.episodes:
            sim.inject(episode.fault)
            injected.add(f"{episode.kind} (steps)", f"episode: {episode.label} ({left} left)")
        for kind, label, fault in plan.faults:
            sim.inject(fault)
            injected.add(kind, f"fault: {label}")

    def _sick(self, plan: StepPlan, injected: Injections) -> None:
        members = [vm for vm in self.world.cloud_vms() if vm.id not in self.world.seeded
                   and vm.in_lb and vm.state == "Running" and vm.ip]
        if plan.sick is not None and members:
            vm = members[int(plan.sick[0] * len(members))]
            self.sick[str(vm.ip)] = plan.sick[1]
            injected.add("sick member", f"{vm.name} ({vm.ip}) fails its health check for "
                         f"{plan.sick[1]} steps")
        self.world.sick = set(self.sick)

    def _stick(self, plan: StepPlan, injected: Injections) -> bool:
        ours = [vm for vm in self.world.cloud_vms() if vm.id not in self.world.seeded
                and vm.state == "Running"]
        if plan.stick is None or not ours:
            return False
        state, pick = plan.stick
        vm = ours[int(pick * len(ours))]
        self.world.sim.set_state(vm.id, state)
        injected.add(f"stuck {state}", f"{vm.name} stuck in {state}")
        return True

    def _stranger(self, plan: StepPlan, injected: Injections) -> None:
        if plan.stranger is None:
            return
        state, in_lb = plan.stranger
        self.strangers += 1
        where = "in" if in_lb else "outside"
        kind = f"a stranger in the pool's instance group ({state}, {where} the load balancer)"
        # Before the pool's first launch, a Running member of the group is an earlier
        # version's VM by README's rule: the pool's to tag and manage, not a stranger.
        legacy = in_lb and state == "Running" and self.world.upgrading()
        if legacy:
            kind += ", before the upgrade: an earlier version's VM"
        self.world.seed_vm(f"stranger{self.strangers}", kind, group=self.world.group,
                           in_lb=in_lb, state=state, legacy=legacy)
        injected.add("legacy VM in the group" if legacy else "stranger in the group", kind)

    def _answers(self, plan: StepPlan, injected: Injections
                 ) -> tuple[dict[str, str], set[str]]:
        """Every member reports an equal share of the demand; some answers garbled or late."""
        world = self.world
        serving = [vm for vm in world.cloud_vms() if vm.in_lb and vm.state == "Running"]
        share = loadavg(plan.demand / max(1, len(serving)))
        answers = dict.fromkeys(world.addresses, share)
        measured = sorted(str(vm.ip) for vm in serving if vm.ip) \
            if world.scenario.monitor_members else [WEB1]
        silent: set[str] = set()
        if plan.garble is not None and measured:
            text, fraction = plan.garble
            chosen = measured[:max(1, round(fraction * len(measured)))]
            answers.update(dict.fromkeys(chosen, text))
            injected.add("garbled SSH answer", f"SSH answer {text!r} from {', '.join(chosen)}")
        if plan.silence and measured:
            silent = set(measured[1:] or measured)
            answers.update(dict.fromkeys(silent, loadavg(8.0)))
            if len(measured) > 1:
                answers[measured[0]] = loadavg(0.4)
            injected.add("silent hosts", f"busy and too late to answer: "
                                         f"{', '.join(sorted(silent))}")
        return answers, silent

    # --- runs ------------------------------------------------------------------------------

    def _runs(self, plan: StepPlan) -> list[RunRecord]:
        results: dict[int, RunRecord] = {}
        numbers = [self.result.runs + n for n in range(len(plan.runs))]
        self.result.runs += len(plan.runs)

        def one(slot: int) -> None:
            run = plan.runs[slot]
            results[slot] = self.world.run(numbers[slot], self.world.monitors[run.monitor],
                                           run.args, run.kill, run.delay)

        threads = [threading.Thread(target=one, args=(slot,)) for slot in range(len(plan.runs))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        done = [results[slot] for slot in sorted(results)]
        self.result.run_seconds += [run.seconds for run in done]
        self.clock_seen = self.clock_seen or any(CLOCK_LINE in r.stdout + r.stderr
                                                 for r in done)
        return done

    def _advance(self, injected: Injections) -> None:
        """Count down the episodes, the broken template and the sick members."""
        self.result.steps += 1
        self.history.append(injected)
        self.result.injected.update(injected.kinds)
        self.episodes = [(e, left - 1) for e, left in self.episodes if left > 1]
        self.sick = {ip: left - 1 for ip, left in self.sick.items() if left > 1}
        if self.broken_left:
            self.broken_left -= 1
            if not self.broken_left:
                self.world.write_config(self.world.good_template)

    def _record(self, violations: list[Violation], record: StepRecord) -> None:
        for violation in violations:
            self.result.violations.append(violation)
            self.result.reports.append(self._context(violation, record))

    def _context(self, violation: Violation, record: StepRecord) -> dict[str, Any]:
        first = max(0, violation.step - CONTEXT_STEPS + 1)
        return {
            "mode": self.world.mode, "seed": self.result.seed, "segment": self.result.index,
            **asdict(violation),
            "scenario": asdict(self.world.scenario),
            "injected": {str(n): self.history[n].lines
                         for n in range(first, violation.step + 1)
                         if n < len(self.history)},
            "vms": [f"{vm.name} {vm.state} {'in' if vm.in_lb else 'out'} {vm.ip}"
                    for vm in record.vms if vm.state not in ("Destroyed", "Expunging")],
            "runs": [_run_json(run) for run in record.runs
                     if not violation.runs or run.number in violation.runs],
        }


def _run_json(run: RunRecord) -> dict[str, Any]:
    stdout = [line for line in run.stdout.splitlines() if not line.startswith("{")]
    report = run.report or {}
    return {"number": run.number, "monitor": run.monitor, "args": list(run.args),
            "kill": run.kill.describe() if run.kill else None, "signalled": run.signalled,
            "exit": run.returncode, "seconds": round(run.seconds, 2),
            "decision": report.get("decision"), "result": report.get("result"),
            "stdout": stdout[-OUTPUT_LINES:], "stderr": run.stderr.splitlines()[-OUTPUT_LINES:]}


def soak_segment(mode: str, seed: int, index: int, runs: int, calm_steps: int = CALM_STEPS,
                 progress: Optional[Callable[[Segment], None]] = None) -> Segment:
    """One scenario of a server mode (drawn from the seed, the mode and the segment's index):
    at least `runs` runs, then calm_steps calm ones."""
    rng = random.Random(f"{seed}:{mode}:{index}")
    result = Segment(mode, seed, index, draw_scenario(rng))
    started = time.monotonic()
    with open_world(mode, result.scenario) as world:
        Driver(world, rng, result).soak(runs, calm_steps, progress)
    result.seconds = time.monotonic() - started
    return result


def soak_mode(mode: str, seed: int, runs: int, segment_runs: int = SEGMENT_RUNS,
              calm_steps: int = CALM_STEPS, only: Optional[int] = None,
              progress: Optional[Callable[[Segment], None]] = None) -> list[Segment]:
    """A server mode's soak: `runs` runs in segments of segment_runs, each its own scenario
    (or only the segment numbered `only`)."""
    count = max(1, -(-runs // segment_runs))
    indexes = [only] if only is not None else range(count)
    return [soak_segment(mode, seed, index, min(segment_runs, runs), calm_steps, progress)
            for index in indexes]


def say_progress(result: Segment) -> None:
    """One line on stderr: how far a segment is."""
    print(f"cloudstack {result.mode} segment {result.index}: {result.runs} runs, "
          f"{result.steps} steps, {len(result.violations)} violations so far",
          file=sys.stderr, flush=True)


def summary(segments: Sequence[Segment]) -> str:
    """A mode's figures, and per segment its scenario, what it injected and each distinct
    violation with its first occurrence."""
    head = segments[0]
    violations = [v for s in segments for v in s.violations]
    lines = [f"cloudstack {head.mode}, seed {head.seed}: {sum(s.runs for s in segments)} runs "
             f"in {sum(s.steps for s in segments)} steps, {len(segments)} segment(s), "
             f"{sum(s.seconds for s in segments):.0f} s, {len(violations)} violations "
             f"({len(distinct(violations))} distinct)"]
    for segment in segments:
        lines += _segment_lines(segment)
    return "\n".join(lines)


def _segment_lines(segment: Segment) -> list[str]:
    lines = [f"  segment {segment.index}: {segment.runs} runs in {segment.steps} steps "
             f"({segment.seconds:.0f} s), {len(segment.violations)} violations",
             f"    scenario: {_scenario_text(segment.scenario)}",
             "    injected: " + ", ".join(f"{kind} {count}" for kind, count in
                                          sorted(segment.injected.items()))]
    for invariant, found in distinct(segment.violations).items():
        first = found[0]
        lines.append(f"    VIOLATION {invariant} x{len(found)}: first at step {first.step} "
                     f"(runs {', '.join(map(str, first.runs)) or '-'}): {first.detail}")
        context = segment.reports[segment.violations.index(first)]["injected"]
        lines += [f"      step {step} injected: {'; '.join(what)}"
                  for step, what in context.items() if what]
    return lines


def _scenario_text(scenario: Scenario) -> str:
    return ", ".join(f"{k} {v}" for k, v in asdict(scenario).items())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=1, help="the plan's seed (default 1)")
    parser.add_argument("--runs", type=int, default=500,
                        help="runs per server mode (default 500)")
    parser.add_argument("--segment-runs", type=int, default=SEGMENT_RUNS,
                        help=f"runs per scenario (default {SEGMENT_RUNS}), each followed by "
                             "the calm steps")
    parser.add_argument("--segment", type=int, metavar="K",
                        help="only segment K (to reproduce one)")
    parser.add_argument("--calm", type=int, default=CALM_STEPS,
                        help=f"calm steps at the end of a segment (default {CALM_STEPS})")
    parser.add_argument("--modes", nargs="+", default=list(CLOUDSTACK_VERSIONS),
                        choices=CLOUDSTACK_VERSIONS, help="server modes (default: all)")
    parser.add_argument("--out", type=Path, help="one JSON line per violation, with context")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Soak every mode asked; exit 1 when a violation was found."""
    args = build_parser().parse_args(argv)
    found = False
    for mode in args.modes:
        segments = soak_mode(mode, args.seed, args.runs, args.segment_runs, args.calm,
                             args.segment, say_progress)
        print(summary(segments), flush=True)
        found = found or any(s.violations for s in segments)
        if args.out:
            with args.out.open("a") as out:
                for report in (r for s in segments for r in s.reports):
                    out.write(json.dumps(report) + "\n")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
