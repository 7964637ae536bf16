"""Where the SSH side of a run spends its time: timelines of the real command under a small
harness (evidence for BENCHMARKS.md; not part of `make bench`, about 50 s).

The harness runs `sshscale.cli.main` in a child process and wraps sshscale.measure.read_load
(start and end of each host's measurement), paramiko.SSHClient.connect,
sshscale.measure.run_remote and
paramiko.HostKeys.load (calls, time summed over threads, GIL waits included). To measure what
commit 1804ce6 changed, it can also undo two of its changes without editing the product:
NAGLE clears TCP_NODELAY on the socket the product hands to paramiko (as before: paramiko
leaves Nagle's algorithm on), and PER_HOST_KNOWN_HOSTS makes every host's thread parse
known_hosts itself (as before: once per host instead of once per run). The third change, the
max_parallel default 64 (was 32), is measured by running both settings.

    .venv/bin/python bench/profile_ssh.py [--runs 5] [--only noop|fanout]

noop: one host (the real sshd, then LoadServer), load between the thresholds.
fanout: 50 hosts answering after 200 ms (LoadServer in its own process), as in bench_fanout;
max_parallel unset (default 64) and 32 (the old default).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_fanout import DELAY, HOSTS, PREFIX  # noqa: E402
from bench.common import (  # noqa: E402
    MID_LOAD, Home, LoadServerProcess, config_sections, loopback_range, median, run_child, say,
    simulator, start_ssh_server, temp_home,
)
from sshscale.model import Settings  # noqa: E402

# (label, max_parallel in the config or None for the default)
FANOUT_SETTINGS = ((f"{Settings.max_parallel} (default)", None), ("32 (old default)", "32"))
# (label, environment of the harness): the product as shipped, then with changes undone
VARIANTS = (
    ("as shipped", {}),
    ("Nagle on (as before)", {"NAGLE": "1"}),
    ("known_hosts per host (as before)", {"PER_HOST_KNOWN_HOSTS": "1"}),
    ("both undone (as before 1804ce6)", {"NAGLE": "1", "PER_HOST_KNOWN_HOSTS": "1"}),
)
HARNESS = r'''
import json, os, resource, socket, sys, threading, time
t0 = time.perf_counter()
import paramiko
import sshscale.measure
from sshscale.cli import main
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

if os.environ.get("NAGLE"):
    connect = paramiko.SSHClient.connect
    def connect_nagle(self, *args, **kwargs):
        sock = kwargs.get("sock")
        if sock is None:
            raise SystemExit("harness: ssh_scale no longer passes sock= to connect")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
        return connect(self, *args, **kwargs)
    paramiko.SSHClient.connect = connect_nagle
if os.environ.get("PER_HOST_KNOWN_HOSTS"):
    read_load = sshscale.measure.read_load
    def read_load_parsing(target, settings, pkey, known):
        return read_load(target, settings, pkey,
                         sshscale.measure.load_known_hosts(target.known_hosts))
    sshscale.measure.read_load = read_load_parsing
timed(sshscale.measure, "read_load", "spans", span=True)
timed(paramiko.HostKeys, "load", "loads")
timed(paramiko.SSHClient, "connect", "connects")
timed(sshscale.measure, "run_remote", "execs")
status = main(sys.argv[1:])
usage = resource.getrusage(resource.RUSAGE_SELF)
report.update(status=status, imported=imported, end=time.perf_counter() - t0,
              cpu=usage.ru_utime + usage.ru_stime)
print(json.dumps(report))
'''


def timeline(home: Home, config: Path, undo: Mapping[str, str]) -> dict[str, Any]:
    """One instrumented run of the real command: its JSON report plus the child's wall time."""
    done = run_child([sys.executable, "-c", HARNESS, "-c", str(config), "-q"],
                     dict(home.env, **undo))
    report = dict(json.loads(done.stdout.strip().splitlines()[-1]))
    report["wall"], report["rss"] = done.wall, done.maxrss_kb / 1024
    return report


def timelines(home: Home, config: Path, undo: Mapping[str, str],
              runs: int) -> list[dict[str, Any]]:
    """runs instrumented runs after one warm-up."""
    return [timeline(home, config, undo) for _ in range(runs + 1)][1:]


def summarize(reports: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Medians over runs of the interesting instants, durations and sums."""
    rows = [{
        "wall": r["wall"], "rss": r["rss"], "imported": r["imported"], "end": r["end"],
        "cpu": r["cpu"],
        "first_start": min(s for s, _ in r["spans"]),
        "last_start": max(s for s, _ in r["spans"]),
        "last_end": max(e for _, e in r["spans"]),
        "connect": median(r["connects"]), "exec": median(r["execs"]),
        "load_calls": len(r["loads"]), "load_sum": sum(r["loads"]),
    } for r in reports]
    return {k: median([row[k] for row in rows]) for k in rows[0]}


def profile_noop(runs: int) -> None:
    """One host, real sshd then LoadServer, as shipped and with Nagle's algorithm on."""
    for prefer_openssh in (True, False):
        with temp_home() as home, simulator() as sim:
            server = start_ssh_server(home, ["127.0.0.1"], MID_LOAD,
                                      prefer_openssh=prefer_openssh)
            try:
                config = home.write_config("noop.idcfrc", config_sections(
                    sim, home.key, ["127.0.0.1"], server.port))
                for label, undo in VARIANTS[:2]:  # one host: known_hosts is parsed once
                    s = summarize(timelines(home, config, undo, runs))
                    say(f"no-op, {server.kind.split(' (')[0]:<22} {label:<22}: "
                        f"wall {s['wall']:.3f} s; connect "
                        f"{s['connect'] * 1000:5.1f} ms, exec {s['exec'] * 1000:5.1f} ms "
                        f"(medians of {runs})")
            finally:
                server.stop()


def profile_fanout(runs: int) -> None:
    """50 hosts x 200 ms, both max_parallel settings, as shipped and with changes undone."""
    hosts = loopback_range(PREFIX, HOSTS)
    with temp_home() as home, simulator(monitored_ip=hosts[0]) as sim:
        server = LoadServerProcess(home.key, hosts, MID_LOAD, delay=DELAY)
        try:
            home.trust(server.known_hosts_lines())
            for parallel, value in FANOUT_SETTINGS:
                extra = {"max_parallel": value} if value else {}
                config = home.write_config("fanout.idcfrc", config_sections(
                    sim, home.key, hosts, server.port, **extra))
                for label, undo in VARIANTS:
                    s = summarize(timelines(home, config, undo, runs))
                    say(f"50 hosts, max_parallel {parallel:<16}, {label:<32}: "
                        f"wall {s['wall']:.3f} s; "
                        f"imports done {s['imported']:.3f}, host threads start "
                        f"{s['first_start']:.3f}-{s['last_start']:.3f}, last ends "
                        f"{s['last_end']:.3f}; CPU {s['cpu']:.2f} s; peak RSS "
                        f"{s['rss']:.1f} MiB; HostKeys.load "
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
