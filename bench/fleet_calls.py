"""What the fleet operations add to a run: API calls (by command), SSH execs, health GETs and
wall time of the real command against the simulator, the real sshd on four loopback addresses
and an HTTP server on each, per scenario: every feature off, on with nothing to do, a member
failing (its count written), a member answering again (its count removed), a replacement, a
refresh step. The figures for BENCHMARKS.md ("Fleet operations").

    .venv/bin/python bench/fleet_calls.py [--runs 5]
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections import Counter
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    MID_LOAD, Home, OpenSshBackend, config_sections, markdown_table, median, run_child, say,
    temp_home, tool_argv,
)
from cloudstack_sim import Simulator  # noqa: E402
from tests import sshd_support  # noqa: E402
from tests.configs import add_owned  # noqa: E402

ADDRESSES = ["127.0.3.1", "127.0.3.2", "127.0.3.3", "127.0.3.4"]
SPARE = ["127.0.3.20", "127.0.3.21"]
GARBAGE = "not a load average\n"


class HealthServer:
    """An HTTP server on every address that answers 200 to anything, and counts."""

    def __init__(self, addresses: list[str]) -> None:
        self.gets = 0
        self.port = sshd_support.free_port(addresses[0])
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the http.server name)
                owner.gets += 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.servers = [ThreadingHTTPServer((a, self.port), Handler) for a in addresses]
        for server in self.servers:
            threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()


def seed(sim: Simulator) -> None:
    """web1 (unmanaged, monitored) and two managed members, two hours old; m1 protected."""
    created = datetime.now(timezone.utc) - timedelta(hours=2)
    sim.add_vm("web1", ip=ADDRESSES[0], created=created)
    vms = [add_owned(sim, f"m{n}", ip=ADDRESSES[n],
                      created=created) for n in (1, 2)]
    sim.set_tag(vms[0]["id"], "ssh-scale:protect", "true")


def write(home: Home, sim: Simulator, port: int, http_port: int, fleet: bool,
          check: str = "none", launch: Optional[dict[str, str]] = None,
          monitor_members: bool = False) -> Path:
    members = monitor_members or check == "ssh"
    sections = config_sections(sim, home.key, [ADDRESSES[0]], port,
                               monitor_members="yes" if members else "no")
    sections["scalling"].update(max_size="4", job_timeout="20")
    if fleet:
        sections["scalling"].update(refresh="yes", termination_policy="oldest")
        sections["health"] = {"check": check, "url": f"http://{{ip}}:{http_port}/healthz"}
    sections["launch_config"].update(launch or {})
    return home.write_config("idcfrc", sections)


def measure(home: Home, sim: Simulator, ssh: OpenSshBackend, http: HealthServer,
            config: Path, runs: int = 1) -> tuple[Counter, int, int, float]:
    """Run the command `runs` times; calls, execs and GETs of the last run, median wall."""
    walls = []
    for _ in range(runs):
        sim.settle()
        sim.calls.clear()
        execs = sum(ssh.server.exec_count(a) for a in ADDRESSES)
        gets = http.gets
        child = run_child(tool_argv(config), home.env)
        if child.returncode != 0:
            raise SystemExit(f"{config}: exit {child.returncode}: {child.stderr.strip()}")
        walls.append(child.wall)
    calls = Counter(c.command for c in sim.calls)
    return calls, sum(ssh.server.exec_count(a) for a in ADDRESSES) - execs, \
        http.gets - gets, median(walls)


def calls_text(calls: Counter) -> str:
    return ", ".join(f"{name} x{n}" if n > 1 else name for name, n in sorted(calls.items()))


def scenarios(runs: int) -> list[list[str]]:
    rows = []
    with temp_home() as home:
        ssh = OpenSshBackend(home.root / "sshd", home.key, ADDRESSES, MID_LOAD)
        home.trust(ssh.known_hosts_lines())
        http = HealthServer(ADDRESSES)
        try:
            def row(name: str, sim: Simulator, config: Path, n: int = 1) -> None:
                calls, execs, gets, wall = measure(home, sim, ssh, http, config, n)
                rows.append([name, str(sum(calls.values())), calls_text(calls), str(execs),
                             str(gets), f"{wall:.2f} s" + (f" (median of {n})" if n > 1
                                                           else "")])
                say(f"{name}: {rows[-1][1:]}")

            with Simulator(job_seconds=0.2, ip_addresses=ADDRESSES + SPARE) as sim:
                seed(sim)
                row("every feature off, nothing to do", sim,
                    write(home, sim, ssh.port, http.port, False), runs)
                row("refresh, termination_policy, a protected VM; nothing to do", sim,
                    write(home, sim, ssh.port, http.port, True), runs)
                row("check = http, all healthy", sim,
                    write(home, sim, ssh.port, http.port, True, "http"), runs)
                row("monitor_members = yes, no check (the next rows' reference)", sim,
                    write(home, sim, ssh.port, http.port, True, "none", monitor_members=True),
                    runs)
                ssh_config = write(home, sim, ssh.port, http.port, True, "ssh")
                row("check = ssh, all healthy", sim, ssh_config, runs)
                ssh.server.set_output(GARBAGE, ADDRESSES[2])
                row("check = ssh, m2 fails (its count 0 -> 1)", sim, ssh_config)
                ssh.server.set_output(MID_LOAD, ADDRESSES[2])
                row("check = ssh, m2 answers again (1 -> 0)", sim, ssh_config)
                ssh.server.set_output(GARBAGE, ADDRESSES[2])
                row("check = ssh, m2 fails (0 -> 1)", sim, ssh_config)
                row("check = ssh, m2 fails (1 -> 2)", sim, ssh_config)
                row("check = ssh, m2 fails (2 -> 3): replaced", sim, ssh_config)
            with Simulator(job_seconds=0.2, ip_addresses=ADDRESSES + SPARE) as sim:
                seed(sim)
                outdated = write(home, sim, ssh.port, http.port, True, "none",
                                 {"templateid": sim.own_template_id})
                row("refresh = yes, one outdated member replaced", sim, outdated)
        finally:
            http.close()
            ssh.stop()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of each quiet scenario")
    args = parser.parse_args()
    rows = scenarios(args.runs)
    say()
    say(markdown_table(["scenario", "API calls", "by command", "SSH execs", "health GETs",
                        "wall"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
