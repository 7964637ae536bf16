"""A one-command demo of ssh_scale.py: the real command, a CloudStack simulator and an SSH
server on loopback, in a closed loop.

The SSH server reports a load equal to a scripted demand divided by the number of running
pool members, so every VM the autoscaler adds lowers the load it reads next. The demo runs
ssh_scale.py repeatedly (short jobs stand in for VM boots) through: below min_size, a load
spike, and the spike's end. Nothing outside a temporary directory is touched; nothing but
127.0.0.1 is dialled.
"""

from __future__ import annotations

import argparse
import configparser
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import paramiko

import idcf_api
from cloudstack_sim import Simulator
from cloudstack_sim.trial import ClosedLoop
from load_sshd import LoadServer

# (runs, total demand in load units): the scripted day.
SCRIPT = ((1, 1.0), (2, 3.0), (3, 14.0), (4, 2.0))
MIN_SIZE, MAX_SIZE = 2, 4
THRESHOLD_OUT, THRESHOLD_IN = 3.0, 1.0


@dataclass
class Step:
    """One demo run: the demand, the load the server reported, and the pool after the run."""

    run: int
    demand: float
    load: Optional[float]
    before: int
    after: int
    exit_code: int


def write_config(directory: Path, sim: Simulator, port: int, key_path: Path) -> Path:
    """The demo's ~/.idcfrc: the simulator's own sections plus the demo's, in the 2013 tool's
    spelling."""
    sections = sim.config_sections()
    sections["monitoring"] = {"host": "127.0.0.1", "port": str(port), "user": "demo",
                              "private_key_path": str(key_path), "pass_phrase": ""}
    sections["launch_config"]["displayname"] = "demo-web"
    sections["scalling"].update(min_size=str(MIN_SIZE), max_size=str(MAX_SIZE),
                                drain_seconds="0", job_timeout="60")
    sections["scalling_policy_out"] = {"threshold": str(THRESHOLD_OUT), "cooldown": "0"}
    sections["scalling_policy_in"] = {"threshold": str(THRESHOLD_IN), "cooldown": "0"}
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_dict(sections)
    path = directory / "idcfrc"
    with open(path, "w", encoding="utf-8") as handle:
        parser.write(handle)
    path.chmod(0o600)
    return path


def run_autoscaler(config: Path, home: Path) -> subprocess.CompletedProcess:
    """One cron-style run of the real command, with HOME in the demo's directory."""
    env = dict(os.environ, HOME=str(home))
    env.pop("XDG_RUNTIME_DIR", None)
    env.pop("XDG_STATE_HOME", None)  # its run journal goes under that HOME too
    return subprocess.run([sys.executable, "-m", "ssh_scale", "-c", str(config)],
                          capture_output=True, text=True, env=env, timeout=120)


def demands() -> list[float]:
    return [demand for runs, demand in SCRIPT for _ in range(runs)]


def play(loop: ClosedLoop, config: Path, home: Path, pause: float) -> list[Step]:
    """Run the script; print every run's log lines indented."""
    steps = []
    for number, demand in enumerate(demands(), start=1):
        loop.demand = demand
        before = loop.members()
        print(f"--- run {number}: demand {demand:g} load units over {before} VM(s)", flush=True)
        done = run_autoscaler(config, home)
        for line in (done.stdout + done.stderr).splitlines():
            print(f"    {line}", flush=True)
        steps.append(Step(number, demand, loop.last_load, before, loop.members(),
                          done.returncode))
        time.sleep(pause)
    return steps


def summary(steps: Sequence[Step]) -> tuple[str, bool]:
    """A table of the runs, and whether the demo showed all three phases."""
    rows = [{"run": s.run, "demand": f"{s.demand:g}",
             "load read": "-" if s.load is None else f"{s.load:.2f}",
             "VMs before": s.before, "VMs after": s.after, "exit": s.exit_code}
            for s in steps]
    table = idcf_api.format_table(rows, ["run", "demand", "load read", "VMs before",
                                         "VMs after", "exit"])
    sizes = [s.after for s in steps]
    filled = steps[0].before < MIN_SIZE <= steps[0].after
    peaked = MAX_SIZE in sizes
    settled = sizes[-1] == MIN_SIZE and sizes.index(MAX_SIZE) < len(sizes) - 1 if peaked \
        else False
    ok = filled and peaked and settled and all(s.exit_code == 0 for s in steps)
    return table, ok


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sshscale.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--job-seconds", type=float, default=1.0,
                        help="how long each simulated cloud job takes (default 1)")
    parser.add_argument("--pause", type=float, default=1.0,
                        help="seconds between runs (cron would wait 60; default 1)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the demo; 0 when it showed min fill, scale-out to max and scale-in to min."""
    args = build_parser().parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ssh_scale_demo.") as tmp:
        directory = Path(tmp)
        (directory / ".ssh").mkdir(mode=0o700)
        key = paramiko.ECDSAKey.generate()
        key_path = directory / ".ssh" / "id_ecdsa"
        key.write_private_key_file(str(key_path))
        with Simulator(job_seconds=args.job_seconds) as sim:
            sim.add_vm("web1", ip="127.0.0.1")
            loop = ClosedLoop(sim)
            with LoadServer(loop.respond, authorized_keys=[key]) as server:
                config = write_config(directory, sim, server.port, key_path)
                print(f"demo: simulator at {sim.url}, SSH server at 127.0.0.1:{server.port}; "
                      f"pool {MIN_SIZE}..{MAX_SIZE} VMs, thresholds "
                      f"{THRESHOLD_IN:g}/{THRESHOLD_OUT:g}", flush=True)
                steps = play(loop, config, directory, args.pause)
    table, ok = summary(steps)
    print("\n" + table)
    print("demo: " + ("below min_size -> +1, spike -> scaled out to max_size, spike over -> "
                      "scaled in to min_size" if ok else "the run did not go as scripted"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
