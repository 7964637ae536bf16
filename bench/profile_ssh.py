"""Where the SSH side of a run spends its time: timelines of the real command under a small
harness (evidence for BENCHMARKS.md; not part of `make bench`, about 40 s).

The harness runs `ssh_scale.main` in a child process and wraps ssh_scale.read_load (start and
end of each host's measurement), paramiko.SSHClient.connect, ssh_scale._exec and
paramiko.HostKeys.load (calls, time summed over threads, GIL waits included). With NODELAY set
it also tries the change suggested in BENCHMARKS.md without editing the product: it hands
paramiko a socket with TCP_NODELAY set (paramiko leaves Nagle's algorithm on).

    .venv/bin/python bench/profile_ssh.py [--runs 5] [--only noop|fanout]

noop: one host (the real sshd, then LoadServer), load between the thresholds.
fanout: 50 hosts answering after 200 ms (LoadServer in its own process), as in bench_fanout.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_fanout import DELAY, HOSTS, PREFIX  # noqa: E402
from bench.common import (  # noqa: E402
    MID_LOAD, Home, LoadServerProcess, config_sections, loopback_range, median, run_child, say,
    simulator, start_ssh_server, temp_home,
)

FANOUT_SETTINGS = (("32", "accept-new"), ("50", "accept-new"), ("50", "off"))
HARNESS = r'''
import json, os, resource, socket, sys, threading, time
t0 = time.perf_counter()
import paramiko
import ssh_scale
imported = time.perf_counter() - t0
lock = threading.Lock()
report = {"spans": [], "loads": [], "connects": [], "execs": []}

def timed(owner, name, key, span=False):
    original = getattr(owner, name)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            end = time.perf_counter()
            with lock:
                report[key].append([start - t0, end - t0] if span else end - start)
    setattr(owner, name, wrapper)

if os.environ.get("NODELAY"):
    connect = paramiko.SSHClient.connect
    def connect_nodelay(self, hostname, port=22, *args, **kwargs):
        sock = socket.create_connection((hostname, port), timeout=kwargs.get("timeout"))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connect(self, hostname, port, *args, sock=sock, **kwargs)
    paramiko.SSHClient.connect = connect_nodelay
timed(ssh_scale, "read_load", "spans", span=True)
timed(paramiko.HostKeys, "load", "loads")
timed(paramiko.SSHClient, "connect", "connects")
timed(ssh_scale, "_exec", "execs")
status = ssh_scale.main(sys.argv[1:])
usage = resource.getrusage(resource.RUSAGE_SELF)
report.update(status=status, imported=imported, end=time.perf_counter() - t0,
              cpu=usage.ru_utime + usage.ru_stime)
print(json.dumps(report))
'''


def timeline(home: Home, config: Path, nodelay: bool) -> dict[str, Any]:
    """One instrumented run of the real command: its JSON report plus the child's wall time."""
    env = dict(home.env, NODELAY="1") if nodelay else home.env
    done = run_child([sys.executable, "-c", HARNESS, "-c", str(config), "-q"], env)
    report = dict(json.loads(done.stdout.strip().splitlines()[-1]))
    report["wall"] = done.wall
    return report


def timelines(home: Home, config: Path, nodelay: bool, runs: int) -> list[dict[str, Any]]:
    """runs instrumented runs after one warm-up."""
    return [timeline(home, config, nodelay) for _ in range(runs + 1)][1:]


def summarize(reports: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Medians over runs of the interesting instants, durations and sums."""
    rows = [{
        "wall": r["wall"], "imported": r["imported"], "end": r["end"], "cpu": r["cpu"],
        "first_start": min(s for s, _ in r["spans"]),
        "last_start": max(s for s, _ in r["spans"]),
        "last_end": max(e for _, e in r["spans"]),
        "connect": median(r["connects"]), "exec": median(r["execs"]),
        "load_calls": len(r["loads"]), "load_sum": sum(r["loads"]),
    } for r in reports]
    return {k: median([row[k] for row in rows]) for k in rows[0]}


def profile_noop(runs: int) -> None:
    """One host, real sshd then LoadServer, with and without TCP_NODELAY."""
    for prefer_openssh in (True, False):
        with temp_home() as home, simulator() as sim:
            server = start_ssh_server(home, ["127.0.0.1"], MID_LOAD,
                                      prefer_openssh=prefer_openssh)
            try:
                config = home.write_config("noop.idcfrc", config_sections(
                    sim, home.key, ["127.0.0.1"], server.port))
                for nodelay in (False, True):
                    s = summarize(timelines(home, config, nodelay, runs))
                    say(f"no-op, {server.kind.split(' (')[0]:<22} TCP_NODELAY "
                        f"{'on ' if nodelay else 'off'}: wall {s['wall']:.3f} s; connect "
                        f"{s['connect'] * 1000:5.1f} ms, exec {s['exec'] * 1000:5.1f} ms "
                        f"(medians of {runs})")
            finally:
                server.stop()


def profile_fanout(runs: int) -> None:
    """50 hosts x 200 ms, three settings, with and without TCP_NODELAY."""
    hosts = loopback_range(PREFIX, HOSTS)
    with temp_home() as home, simulator(monitored_ip=hosts[0]) as sim:
        server = LoadServerProcess(home.key, hosts, MID_LOAD, delay=DELAY)
        try:
            home.trust(server.known_hosts_lines())
            for parallel, policy in FANOUT_SETTINGS:
                config = home.write_config("fanout.idcfrc", config_sections(
                    sim, home.key, hosts, server.port, max_parallel=parallel,
                    host_key_policy=policy))
                for nodelay in (False, True):
                    s = summarize(timelines(home, config, nodelay, runs))
                    say(f"50 hosts, max_parallel {parallel}, host_key_policy {policy:<10} "
                        f"TCP_NODELAY {'on ' if nodelay else 'off'}: wall {s['wall']:.3f} s; "
                        f"imports done {s['imported']:.3f}, host threads start "
                        f"{s['first_start']:.3f}-{s['last_start']:.3f}, last ends "
                        f"{s['last_end']:.3f}; CPU {s['cpu']:.2f} s; HostKeys.load "
                        f"x{s['load_calls']:.0f} = {s['load_sum']:.3f} s summed over threads")
        finally:
            server.stop()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Print the timelines."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", choices=("noop", "fanout"))
    args = parser.parse_args(argv)
    say(f"medians of {args.runs} runs after 1 warm-up; instants in seconds since the harness "
        "started (after interpreter start-up)")
    if args.only in (None, "noop"):
        profile_noop(args.runs)
    if args.only in (None, "fanout"):
        profile_fanout(args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
