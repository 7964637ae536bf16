"""Scenario helpers shared by the fault campaign and the tag tests: a config for the real
command against the simulator and the real sshd, the pool's invariants, killing a run at a
chosen step, repairing, and many runs at once."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Optional

from tests.conftest import SSH_SCALE, assert_no_secrets, base_sections, run_cli, write_config
from tests.configs import add_owned, label, labels

HIGH, MID, LOW = "4.20 3.10 2.00 3/200 999", "2.00 2.00 2.00 1/200 999", "0.10 0.20 0.30 1/99 9"
MIN, MAX = 1, 3


def campaign_cloud(sim: Any) -> Any:
    """The campaign's cloud: web1 (monitored, unmanaged) and an unmanaged bystander behind the
    load balancer, jobs of 0.3 s."""
    sim.job_seconds = 0.3
    sim.add_vm("web1", ip="127.0.0.1")
    sim.add_vm("bystander", ip="127.0.1.200")
    return sim


def group(cloud: Any) -> str:
    return f"ssh_scale-{cloud.lb_id}"


def add_managed(cloud: Any, name: str, hours_ago: float = 2) -> dict:
    created = datetime.now(timezone.utc) - timedelta(hours=hours_ago)
    return add_owned(cloud, name, created=created)


def make_config(tmp_path: Path, cloud: Any, key: Path, port: int, **changes: dict) -> Path:
    """The campaign's config with changes per section (a key set to None is left out)."""
    sections = base_sections(cloud, key, port=port)
    sections["scalling"].update(min_size=str(MIN), max_size=str(MAX + 1), job_timeout="20")
    sections["account"]["timeout"] = "2"
    for section, values in changes.items():
        keys = sections.setdefault(section, {})
        keys.update(values)
        for name in [k for k, v in values.items() if v is None]:  # None: no such key
            del keys[name]
    return write_config(tmp_path / "idcfrc", sections)


def assert_consistent(cloud: Any, min_size: int = MIN + 1, max_size: int = MAX + 1) -> None:
    """The invariants: bounds, no orphan, no half-built VM, unmanaged VMs untouched."""
    cloud.settle()
    names = labels(cloud.lb_members())
    assert {"web1", "bystander"} <= names
    assert min_size <= len(names) <= max_size
    for vm in cloud.vms():
        if vm.get("group") == group(cloud):
            assert vm["state"] == "Running", vm
            assert label(vm["name"]) in names, f"orphan {vm['name']}"


def outputs(done: subprocess.CompletedProcess) -> str:
    assert_no_secrets(done.stdout, done.stderr)
    return done.stdout + done.stderr


def start_run(path: Path, *args: str, env: Optional[dict[str, str]] = None) -> subprocess.Popen:
    """Start the installed command on a config (text output, both streams captured)."""
    return subprocess.Popen([SSH_SCALE, "-c", str(path), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def wait_for(predicate: Callable[[], bool], process: subprocess.Popen,
             timeout: float = 120) -> None:
    """Poll a condition (every 10 ms) while the run goes on; the bound only ends a run that
    never gets there (a loaded machine may take long)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.01)


def kill_when(path: Path, predicate: Callable[[], bool], *args: str,
              timeout: float = 120, env: Optional[dict[str, str]] = None) -> None:
    """Start a run and kill -9 it as soon as predicate() holds."""
    process = start_run(path, *args, env=env)
    try:
        wait_for(predicate, process, timeout)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.communicate()


def called(cloud: Any, command: str) -> Callable[[], bool]:
    return lambda: bool(cloud.calls_of(command))


def repair(path: Path, cloud: Any, runs: int = 2) -> list[str]:
    """Run again (cloud jobs finished first) until the pool is quiet; returns the outputs."""
    texts = []
    for _ in range(runs):
        cloud.settle()
        done = run_cli("-c", str(path))
        texts.append(outputs(done))
        assert done.returncode == 0, done.stderr
    return texts


def start_many(path: Path, count: int, envs: tuple[Optional[dict[str, str]], ...] = (None,)
               ) -> list[subprocess.CompletedProcess]:
    """count runs of the config started at once in each environment (each a monitor)."""
    results: list[subprocess.CompletedProcess] = []
    barrier = threading.Barrier(count * len(envs))

    def one(env: Optional[dict[str, str]]) -> None:
        barrier.wait()
        results.append(run_cli("-c", str(path), env=env, timeout=120))

    threads = [threading.Thread(target=one, args=(env,)) for env in envs for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results
