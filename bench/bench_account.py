"""Benchmark 7: what a quiet run costs in a busy account: a pool of 200 members, each measured
over SSH (monitor_members = yes), beside 1,000 VMs of other pools and people (other instance
groups, other load-balancer rules; tests.configs.add_bystanders).

The simulator (a thread of this process) holds the account; load_sshd.LoadServer answers for
the 200 members on 127.0.4.1-127.0.4.200 (one port, a separate process: bench/
load_server_proc.py). The real command with `policy = threshold` and with `policy = target`
(max_parallel left at its default), and bench/minimal_fanout.py (one thread per member: the
parallel SSH floor, which reads no API at all) run in turn, each a fresh process reaped with
os.wait4, after one warm-up round. API calls come from the simulator's call log, SSH execs
from the server's counts. Goals: 2 API calls (3 with `policy = target`), 1 exec per member,
wall time within 1.2x of the floor.

    .venv/bin/python bench/bench_account.py [--runs 5] [--members 200] [--bystanders 1000]
                                            [--delay 0]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_fanout import minimal_argv  # noqa: E402
from bench.common import (  # noqa: E402
    ChildRun, Home, LoadServerProcess, Result, config_sections, loopback_range, median, ratio,
    rotating_rounds, run_child, say, spread, summary_table, temp_home, tool_argv,
)
from cloudstack_sim import Simulator  # noqa: E402
from sshscale.measure import vm_key_name  # noqa: E402
from tests.configs import add_bystanders, add_owned  # noqa: E402

MEMBERS = 200
BYSTANDERS = 1000
PREFIX = "127.0.4"
# Between the thresholds (1 and 3); for the target policy (target 3, target_in 2.75 on a calm
# pool), one VM fewer could not carry it (200 x 2.8 = 560 > 2.75 x 199). Nothing to do.
LOAD = "2.80 2.80 2.80 1/100 1234\n"
POLICIES = {"threshold": 2, "target": 3}  # the policy and its quiet run's API calls (goal)
GOAL = 1.2
FLOOR = "minimal_fanout.py, one thread per member"


@dataclass(frozen=True)
class Sample:
    """One measured run: the child, the API commands it sent, the execs each member got and
    the SSH server's CPU seconds meanwhile."""

    run: ChildRun
    calls: tuple[str, ...]
    execs: tuple[int, ...]
    server_cpu: float


def seed(sim: Simulator, hosts: Sequence[str], bystanders: int) -> list[dict]:
    """The pool's members (this version's VMs, two hours old) at hosts, and the bystanders."""
    created = datetime.now(timezone.utc) - timedelta(hours=2)
    members = [add_owned(sim, f"m{n:03d}", ip=ip, created=created)
               for n, ip in enumerate(hosts)]
    add_bystanders(sim, bystanders)
    return members


def trust(home: Home, server: LoadServerProcess, members: Sequence[Mapping[str, Any]]) -> None:
    """known_hosts as the tool and the floor find it after a first run: each member's key by
    its VM id (the tool's record) and by its address (the floor's), so no run writes it."""
    lines = server.known_hosts_lines()
    by_id = []
    for vm, line in zip(members, lines):
        _name, kind, key = line.split()
        address = vm["nic"][0]["ipaddress"]
        by_id.append(f"{vm_key_name(vm['id'])} {kind} {key} {address}")
    home.trust(lines + by_id)


def programs(home: Home, sim: Simulator, server: LoadServerProcess,
             hosts: Sequence[str]) -> dict[str, list[str]]:
    """The measured command lines by label; the floor comes last."""
    out = {}
    for policy in POLICIES:
        sections = config_sections(sim, home.key, [], server.port, monitor_members="yes")
        sections["scalling"].update(min_size="1", max_size=str(len(hosts) + 50), policy=policy)
        if policy == "target":  # a key only the threshold policy reads is an error
            for name in ("scalling_policy_out", "scalling_policy_in"):
                del sections[name]["cooldown"]
        out[label(policy)] = tool_argv(home.write_config(f"account-{policy}.idcfrc", sections))
    out[FLOOR] = minimal_argv(home, server, hosts)
    return out


def label(policy: str) -> str:
    """A tool run's label."""
    return f"ssh_scale.py, policy = {policy}"


def measured(argv: Sequence[str], home: Home, sim: Simulator, server: LoadServerProcess,
             hosts: Sequence[str]) -> Sample:
    """One run with the calls it made, the execs each member got, the server's CPU time."""
    first_call, before, cpu = len(sim.calls), server.exec_counts(), server.server_cpu() or 0.0
    run = run_child(argv, home.env)
    after, server_cpu = server.exec_counts(), (server.server_cpu() or 0.0) - cpu
    calls = tuple(sorted(call.command for call in sim.calls[first_call:]))
    return Sample(run, calls, tuple(after[h] - before[h] for h in hosts), server_cpu)


def commands(calls: Sequence[str]) -> str:
    """The commands of one run, "listVirtualMachines x2" for repeats."""
    counted = {name: calls.count(name) for name in sorted(set(calls))}
    return ", ".join(name + (f" x{n}" if n > 1 else "") for name, n in counted.items())


def show(name: str, samples: Sequence[Sample]) -> None:
    """One program's figures."""
    walls = [s.run.wall for s in samples]
    execs = sorted({e for s in samples for e in s.execs})
    calls = sorted({len(s.calls) for s in samples})
    say(f"  {name:<44} wall {median(walls):6.3f} s (spread {spread(walls)})   "
        f"CPU {median([s.run.cpu for s in samples]):5.2f} s (server "
        f"{median([s.server_cpu for s in samples]):4.2f} s)   "
        f"peak RSS {median([s.run.maxrss_kb for s in samples]) / 1024:5.1f} MiB   "
        f"API calls {calls}   execs per member {execs}")


def results(kept: Mapping[str, Sequence[Sample]], members: int, bystanders: int,
            delay: float) -> list[Result]:
    """The summary rows: per policy, its API calls, its execs and its wall against the floor
    (the ratio of the medians; the ratios within each round are printed beside it)."""
    floor = median([s.run.wall for s in kept[FLOOR]])
    where = f"{bystanders:,} other VMs, {members} members" + \
        (f" answering after {delay * 1000:.0f} ms" if delay else "")
    rows = []
    for policy, goal in POLICIES.items():
        samples = kept[label(policy)]
        calls = {s.calls for s in samples}
        most = max(len(c) for c in calls)
        figure = " / ".join(f"{len(c)} ({commands(c)})" for c in sorted(calls))
        rows.append(Result(f"7. quiet run, {where}, policy = {policy}: API calls "
                           f"(all {len(samples)} runs)", figure, "-", "-", f"<= {goal}",
                           most <= goal))
        execs = {e for s in samples for e in s.execs}
        rows.append(Result(f"7. quiet run, {where}, policy = {policy}: SSH execs per member",
                           "/".join(map(str, sorted(execs))), "-", "-", "<= 1",
                           execs == {1}))
        wall = median([s.run.wall for s in samples])
        share = ratio(wall, floor)
        paired = [ratio(s.run.wall, f.run.wall) for s, f in zip(samples, kept[FLOOR])]
        say(f"  policy = {policy}: wall {share:.2f}x the floor (medians); within each round "
            f"{median(paired):.2f}x (spread {spread(paired)})")
        rows.append(Result(f"7. quiet run, {where}, policy = {policy}: wall time (median of "
                           f"{len(samples)})", f"{wall:.3f} s",
                           f"{floor:.3f} s ({FLOOR})", f"{share:.2f}x", f"<= {GOAL}x",
                           share <= GOAL))
    return rows


def run(runs: int = 5, members: int = MEMBERS, bystanders: int = BYSTANDERS,
        delay: float = 0.0) -> list[Result]:
    """Benchmark 7 (members answering after `delay` seconds); returns its summary rows."""
    say(f"== 7. a quiet run in a busy account: {members} members over SSH (answering after "
        f"{delay * 1000:.0f} ms) beside {bystanders} other VMs, ssh_scale.py (threshold, "
        f"target) vs {FLOOR}, {runs} runs each after 1 warm-up round")
    hosts = loopback_range(PREFIX, members)
    with temp_home() as home, Simulator(job_seconds=0.5) as sim:
        vms = seed(sim, hosts, bystanders)
        server = LoadServerProcess(home.key, hosts, LOAD, delay=delay)
        try:
            trust(home, server, vms)
            say(f"  SSH server: {server.kind} on {hosts[0]}-{hosts[-1]}:{server.port}; "
                f"{len(sim.vms())} VMs in the account (shares the 2 cores with the client)")
            kept = rotating_rounds(programs(home, sim, server, hosts), runs,
                                   lambda argv: measured(argv, home, sim, server, hosts))
        finally:
            server.stop()
    for name, samples in kept.items():
        show(name, samples)
    return results(kept, members, bystanders, delay)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run benchmark 7 alone and print its summary."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="runs per program (5)")
    parser.add_argument("--members", type=int, default=MEMBERS, help="pool members (200)")
    parser.add_argument("--bystanders", type=int, default=BYSTANDERS,
                        help="other VMs in the account (1000)")
    parser.add_argument("--delay", type=float, default=0.0,
                        help="seconds each member takes to answer (0)")
    args = parser.parse_args(argv)
    say(summary_table(run(args.runs, args.members, args.bystanders, args.delay)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
