"""Benchmarks 1, 2 and 5 (no-op part): the cost of a run that has nothing to do.

The real command (`ssh_scale.py -c CFG -q`, a fresh process each time, load between the
thresholds) and bench/minimal_noop.py (one SSH exec, one signed GET) run alternately against
the same simulator and SSH server; each child is reaped with os.wait4 for its wall time, peak
RSS and CPU time. The simulator's call log and the SSH server's exec count give the API calls
and SSH execs of every run. A last run with a high load scales out, for information.

    .venv/bin/python bench/bench_noop.py [--runs 15] [--warmups 2] [--loadserver]
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    BENCH, HIGH_LOAD, LOW_LOAD, MID_LOAD, ChildRun, Home, OpenSshBackend, Result,
    config_sections, median, ratio, run_child, say, simulator, spread, start_ssh_server,
    summary_table, temp_home, tool_argv,
)

WALL_GOAL = 1.15
RSS_GOAL = 1.10
HOST = "127.0.0.1"
LEGACY_CALLS = 2  # the 2013 tool: listVirtualMachines-style list calls per run
LEGACY_SESSIONS = 2  # the 2013 tool: SSH sessions per run


@dataclass
class Samples:
    """What the alternating runs of one program measured."""

    runs: list[ChildRun] = field(default_factory=list)
    calls: list[list[str]] = field(default_factory=list)
    execs: list[int] = field(default_factory=list)

    @property
    def walls(self) -> list[float]:
        return [r.wall for r in self.runs]

    @property
    def rss_mib(self) -> list[float]:
        return [r.maxrss_kb / 1024 for r in self.runs]

    @property
    def cpus(self) -> list[float]:
        return [r.cpu for r in self.runs]


@dataclass(frozen=True)
class Probe:
    """Counts what one child caused: API calls (by command) and SSH execs."""

    sim: Any
    server: Any

    def run(self, argv: Sequence[str], home: Home) -> tuple[ChildRun, list[str], int]:
        calls_before = len(self.sim.calls)
        execs_before = sum(self.server.exec_counts().values())
        run = run_child(argv, home.env)
        commands = [c.command for c in self.sim.calls[calls_before:]]
        execs = sum(self.server.exec_counts().values()) - execs_before
        return run, commands, execs


def alternate(programs: dict[str, list[str]], probe: Probe, home: Home, runs: int,
              warmups: int) -> dict[str, Samples]:
    """Run the programs in turn (the first one changing every round); warm-ups not kept."""
    samples = {name: Samples() for name in programs}
    names = list(programs)
    for index in range(warmups + runs):
        order = names if index % 2 == 0 else names[::-1]
        for name in order:
            run, commands, execs = probe.run(programs[name], home)
            if index >= warmups:
                samples[name].runs.append(run)
                samples[name].calls.append(commands)
                samples[name].execs.append(execs)
    return samples


def describe_calls(calls: Sequence[str]) -> str:
    """'3: listA, listB x2' style text."""
    counted = Counter(calls)
    parts = [name + (f" x{n}" if n > 1 else "") for name, n in counted.items()]
    return f"{len(calls)} ({', '.join(parts)})"


def print_side_by_side(label: str, tool: float, reference: float, unit: str,
                       extra: str = "") -> None:
    """One benchmark line: figure, reference, ratio."""
    say(f"  {label:<28} ssh_scale.py {tool:8.3f} {unit}   minimal {reference:8.3f} {unit}"
        f"   ratio {ratio(tool, reference):.2f}x{extra}")


def cost_results(tool: Samples, minimal: Samples, server: str = "",
                 judged: bool = True, number: str = "1") -> list[Result]:
    """Benchmark 1 (and the no-op half of 5): wall time and peak RSS; rows for information
    only (no goal verdict) unless judged."""
    wall_t, wall_m = median(tool.walls), median(minimal.walls)
    rss_t, rss_m = median(tool.rss_mib), median(minimal.rss_mib)
    n = len(tool.runs)
    wall_met = ratio(wall_t, wall_m) <= WALL_GOAL if judged else None
    rss_met = ratio(rss_t, rss_m) <= RSS_GOAL if judged else None
    against = f", {server}" if server else ""
    print_side_by_side("wall time (median)", wall_t, wall_m, "s",
                       f"   (spread {spread(tool.walls)} vs {spread(minimal.walls)} s)")
    print_side_by_side("peak RSS (median)", rss_t, rss_m, "MiB",
                       f"   (spread {spread(tool.rss_mib)} vs {spread(minimal.rss_mib)} MiB)")
    print_side_by_side("CPU user+sys (median)", median(tool.cpus), median(minimal.cpus), "s")
    return [
        Result(f"{number}. no-op run{against}, wall time (median of {n})", f"{wall_t:.3f} s",
               f"{wall_m:.3f} s (minimal_noop.py)", f"{ratio(wall_t, wall_m):.2f}x",
               f"<= {WALL_GOAL}x" if judged else "info", wall_met),
        Result(f"{number}/5. no-op run{against}, peak RSS (median of {n})", f"{rss_t:.1f} MiB",
               f"{rss_m:.1f} MiB (minimal_noop.py)", f"{ratio(rss_t, rss_m):.2f}x",
               f"<= {RSS_GOAL}x" if judged else "info", rss_met),
    ]


def count_results(tool: Samples, minimal: Samples) -> list[Result]:
    """Benchmark 2: API calls and SSH execs per no-op run (the worst run counts)."""
    api = max(len(c) for c in tool.calls)
    execs = max(tool.execs)
    say(f"  API calls per run            ssh_scale.py {describe_calls(tool.calls[-1])}   "
        f"minimal {describe_calls(minimal.calls[-1])}   2013 tool {LEGACY_CALLS} list calls")
    say(f"  SSH execs per host per run   ssh_scale.py {execs} (max over runs)   "
        f"minimal {max(minimal.execs)}   2013 tool {LEGACY_SESSIONS} sessions")
    return [
        Result("2. API calls per no-op run", describe_calls(tool.calls[-1]),
               f"2013 tool: {LEGACY_CALLS} list calls", f"{ratio(api, LEGACY_CALLS):.2f}x",
               "<= 2", api <= 2),
        Result("2. SSH execs per host per no-op run", f"{execs} (1 connection)",
               f"2013 tool: {LEGACY_SESSIONS} sessions", f"{ratio(execs, LEGACY_SESSIONS):.2f}x",
               "<= 1", execs <= 1),
    ]


def action_results(probe: Probe, server: Any, home: Home, config: Path) -> list[Result]:
    """One run above threshold_out, then one below threshold_in (for information): what an
    action costs in API calls (tags and the lease included) and wall time."""
    rows = []
    for label, load in (("scale-out", HIGH_LOAD), ("scale-in", LOW_LOAD)):
        server.set_output(load)
        run, calls, execs = probe.run(tool_argv(config), home)
        say(f"  {label} run (info)  {describe_calls(calls)}; {execs} SSH exec; "
            f"{run.wall:.2f} s with {probe.sim.job_seconds:g}-s jobs")
        rows.append(Result(f"2. a {label} run (info): API calls, wall time with "
                           f"{probe.sim.job_seconds:g}-s jobs",
                           f"{describe_calls(calls)}; {run.wall:.2f} s", "-", "-", "info", None))
    server.set_output(MID_LOAD)
    return rows


def programs_for(config: Path) -> dict[str, list[str]]:
    """The real command and the minimal script, both reading config."""
    return {"tool": tool_argv(config),
            "minimal": [sys.executable, str(BENCH / "minimal_noop.py"), str(config)]}


def run(runs: int = 15, warmups: int = 2, prefer_openssh: bool = True) -> list[Result]:
    """Benchmarks 1, 2 and the no-op half of 5; returns their summary rows. The SSH server is
    the real sshd when installed (and preferred), else LoadServer in a separate process."""
    say(f"== 1/2/5. no-op run: ssh_scale.py vs minimal_noop.py, {runs} runs each after "
        f"{warmups} warm-ups, alternating")
    with temp_home() as home, simulator(monitored_ip=HOST) as sim:
        server = start_ssh_server(home, [HOST], MID_LOAD, prefer_openssh=prefer_openssh)
        try:
            say(f"  SSH server: {server.kind} on {HOST}:{server.port}")
            config = home.write_config("noop.idcfrc",
                                       config_sections(sim, home.key, [HOST], server.port))
            probe = Probe(sim, server)
            samples = alternate(programs_for(config), probe, home, runs, warmups)
            kind = "real sshd" if isinstance(server, OpenSshBackend) else "LoadServer"
            results = cost_results(samples["tool"], samples["minimal"], kind)
            results += count_results(samples["tool"], samples["minimal"])
            results += action_results(probe, server, home, config)
        finally:
            server.stop()
    return results


def run_loadserver(runs: int = 9, warmups: int = 2) -> list[Result]:
    """Benchmark 1 again against the paramiko LoadServer (a much faster SSH server than the
    forking sshd, so the clients' own costs show more), for information."""
    say(f"== 1b. no-op run against load_sshd.LoadServer (info): {runs} runs each after "
        f"{warmups} warm-ups, alternating")
    with temp_home() as home, simulator(monitored_ip=HOST) as sim:
        server = start_ssh_server(home, [HOST], MID_LOAD, prefer_openssh=False)
        try:
            say(f"  SSH server: {server.kind} on {HOST}:{server.port}")
            config = home.write_config("noop.idcfrc",
                                       config_sections(sim, home.key, [HOST], server.port))
            samples = alternate(programs_for(config), Probe(sim, server), home, runs, warmups)
            return cost_results(samples["tool"], samples["minimal"], "LoadServer",
                                judged=False, number="1b")
        finally:
            server.stop()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the no-op benchmarks alone and print their summary."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--warmups", type=int, default=2)
    parser.add_argument("--loadserver", action="store_true",
                        help="use load_sshd.LoadServer even when sshd is installed")
    args = parser.parse_args(argv)
    say(summary_table(run(args.runs, args.warmups, not args.loadserver)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
