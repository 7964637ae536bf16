"""Benchmarks 4 and 5 (50-host part): 50 monitored hosts that each answer after 200 ms.

load_sshd.LoadServer listens on 127.0.2.1-127.0.2.50 (one port, delay 0.2 s) in a separate
process (bench/load_server_proc.py), so its CPU time is not charged to the measured clients;
it still shares the machine's cores with them. The real command (max_parallel left unset, i.e.
the default 64: all 50 hosts at once; and max_parallel 32, the default before commit 1804ce6:
two waves) and bench/minimal_fanout.py (50 threads at once) run in turn, each a fresh process
reaped with os.wait4; the minimal serial loop runs once.

    .venv/bin/python bench/bench_fanout.py [--runs 3]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    BENCH, MID_LOAD, ChildRun, Home, LoadServerProcess, Result, config_sections, loopback_range,
    median, ratio, rotating_rounds, run_child, say, simulator, spread, summary_table, temp_home,
    tool_argv,
)
from sshscale.model import Settings  # noqa: E402
from tests.sshd_support import current_user  # noqa: E402

HOSTS = 50
PREFIX = "127.0.2"
DELAY = 0.2
GOAL = 1.2


DEFAULT = f"ssh_scale.py, default (max_parallel {Settings.max_parallel})"
OLD_DEFAULT = "ssh_scale.py, max_parallel 32 (old default)"


def programs(home: Home, sim: Any, server: LoadServerProcess,
             hosts: Sequence[str]) -> dict[str, list[str]]:
    """The measured command lines by label; the reference (minimal, 50 threads) comes last."""
    configs = {
        # max_parallel not set in the config: the product's default
        DEFAULT: config_sections(sim, home.key, hosts, server.port),
        # the default before commit 1804ce6, for comparison: 32 hosts, then the other 18
        OLD_DEFAULT: config_sections(sim, home.key, hosts, server.port, max_parallel="32"),
    }
    out = {label: tool_argv(home.write_config(f"fanout{i}.idcfrc", sections))
           for i, (label, sections) in enumerate(configs.items())}
    out["minimal, 50 threads"] = minimal_argv(home, server, hosts)
    return out


def minimal_argv(home: Home, server: LoadServerProcess, hosts: Sequence[str],
                 serial: bool = False) -> list[str]:
    """bench/minimal_fanout.py for these hosts."""
    return [sys.executable, str(BENCH / "minimal_fanout.py"), "--port", str(server.port),
            "--user", current_user(), "--key", str(home.key),
            *(["--serial"] if serial else []), *hosts]


def measured(argv: Sequence[str], home: Home, server: LoadServerProcess,
             hosts: Sequence[str]) -> tuple[ChildRun, float]:
    """One run; checks every host got exactly one exec; returns it and the server's CPU s."""
    before, cpu_before = server.exec_counts(), server.server_cpu() or 0.0
    run = run_child(argv, home.env)
    after, cpu_after = server.exec_counts(), server.server_cpu() or 0.0
    wrong = [h for h in hosts if after[h] - before[h] != 1]
    if wrong:
        say(f"  warning: {len(wrong)} host(s) did not get exactly one exec: {wrong[:3]}")
    return run, cpu_after - cpu_before


def import_floor(home: Home, runs: int = 3) -> list[Result]:
    """Peak RSS of a Python that only imports paramiko, and paramiko + requests (the minimal
    fan-out script needs no HTTP client; the real command does)."""
    rows = []
    for modules in ("paramiko", "paramiko, requests"):
        rss = median([run_child([sys.executable, "-c", f"import {modules}"], home.env)
                      .maxrss_kb / 1024 for _ in range(runs)])
        label = f"python -c 'import {modules}'"
        say(f"  {label:<52} peak RSS {rss:5.1f} MiB")
        rows.append(Result(f"5. peak RSS floor: import {modules} (info)", f"{rss:.1f} MiB",
                           "-", "-", "info", None))
    return rows


def show(label: str, samples: Sequence[tuple[ChildRun, float]]) -> None:
    """One program's medians."""
    walls = [r.wall for r, _ in samples]
    say(f"  {label:<52} wall {median(walls):6.3f} s (spread {spread(walls)})   "
        f"peak RSS {median([r.maxrss_kb for r, _ in samples]) / 1024:5.1f} MiB   "
        f"client CPU {median([r.cpu for r, _ in samples]):5.2f} s   "
        f"server CPU {median([c for _, c in samples]):5.2f} s")


def results(kept: Mapping[str, Sequence[tuple[ChildRun, float]]],
            serial: ChildRun) -> list[Result]:
    """Summary rows of benchmarks 4 and 5 (50 hosts)."""
    labels = list(kept)
    wall = {label: median([r.wall for r, _ in kept[label]]) for label in labels}
    rss = {label: median([r.maxrss_kb for r, _ in kept[label]]) / 1024 for label in labels}
    reference = labels[-1]
    rows = []
    for label in labels[:-1]:
        share = ratio(wall[label], wall[reference])
        # the goal is judged on the default; the old default is shown for comparison
        comparison = label == OLD_DEFAULT
        goal = "comparison" if comparison else f"<= {GOAL}x"
        met = None if comparison else share <= GOAL
        say(f"  {label:<52} {wall[label]:.3f} s vs minimal {wall[reference]:.3f} s: "
            f"{share:.2f}x; vs serial loop {serial.wall:.3f} s: "
            f"{ratio(wall[label], serial.wall):.2f}x")
        rows.append(Result(f"4. 50 hosts x 200 ms, {label} (median of {len(kept[label])})",
                           f"{wall[label]:.3f} s",
                           f"{wall[reference]:.3f} s (minimal, 50 threads); serial loop "
                           f"{serial.wall:.2f} s", f"{share:.2f}x", goal, met))
    for label in labels[:-1]:
        rows.append(Result(f"5. peak RSS, 50 hosts, {label}", f"{rss[label]:.1f} MiB",
                           f"{rss[reference]:.1f} MiB (minimal, 50 threads)",
                           f"{ratio(rss[label], rss[reference]):.2f}x", "info", None))
    return rows


def run(runs: int = 3) -> list[Result]:
    """Benchmarks 4 and the 50-host half of 5; returns their summary rows."""
    say(f"== 4/5. {HOSTS} hosts each answering after {DELAY * 1000:.0f} ms: ssh_scale.py vs "
        f"minimal_fanout.py, {runs} runs each after 1 warm-up round")
    hosts = loopback_range(PREFIX, HOSTS)
    with temp_home() as home, simulator(monitored_ip=hosts[0]) as sim:
        server = LoadServerProcess(home.key, hosts, MID_LOAD, delay=DELAY)
        try:
            home.trust(server.known_hosts_lines())
            say(f"  SSH server: {server.kind} on {hosts[0]}-{hosts[-1]}:{server.port} "
                "(shares the 2 cores with the client)")
            kept = rotating_rounds(programs(home, sim, server, hosts), runs,
                                   lambda argv: measured(argv, home, server, hosts))
            serial, serial_cpu = measured(minimal_argv(home, server, hosts, serial=True), home,
                                          server, hosts)
            for label, samples in kept.items():
                show(label, samples)
            show("minimal, serial loop (1 run)", [(serial, serial_cpu)])
            return results(kept, serial) + import_floor(home)
        finally:
            server.stop()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run benchmarks 4/5 alone and print their summary."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    say(summary_table(run(args.runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
