"""Fleet operations end to end: the installed ssh_scale.py against the simulator and the real
sshd, with [schedule NAME] windows, [notify] (a real HTTP server on loopback and a command
that writes its environment to a file) and [metrics] (the textfile, parsed by
prometheus_client). Each asserts what a user sees: exit code, printed lines, the cloud's state,
what the receiver got."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import assert_no_secrets, base_sections, run_cli, write_config

LOW = "0.10 0.20 0.30 1/99 9"
MID = "2.00 2.00 2.00 1/200 999"


@pytest.fixture
def cloud(sim: Any) -> Any:
    """One unmanaged web VM (the monitored one) behind the load balancer."""
    sim.add_vm("web1", ip="127.0.0.1")
    return sim


def config(tmp_path: Path, cloud: Any, key: Path, sshd: Any, **sections: dict) -> Path:
    values = base_sections(cloud, key, port=sshd.port)
    for name, changes in sections.items():
        values.setdefault(name.replace("_", " ", 1), {}).update(changes)
    return write_config(tmp_path / "idcfrc", values)


def hours_from_now(hours: int) -> str:
    """A daily cron line (UTC) that fired `-hours` ago (negative) or fires in `hours`."""
    return f"0 {(datetime.now(timezone.utc) + timedelta(hours=hours)).hour} * * *"


def window(cron: str, **bounds: str) -> dict[str, str]:
    return {"cron": cron, "duration": "3h", "timezone": "UTC", **bounds}


# --- schedules -------------------------------------------------------------------------------

def test_open_window_raises_min_size(tmp_path, cloud, key, sshd):
    sshd.set_output(LOW)
    path = config(tmp_path, cloud, key, sshd,
                  schedule_business_hours=window(hours_from_now(-1), min_size="2"))
    done = run_cli("-c", str(path))
    assert done.returncode == 0, done.stderr
    assert "below min_size 2 (schedule business_hours)" in done.stdout
    assert "schedule         : business_hours open since " in done.stdout
    assert "vm count         : now 1, min 2" in done.stdout
    assert len(cloud.lb_members()) == 2


def test_closed_window_changes_nothing_and_costs_nothing(tmp_path, cloud, key, sshd):
    sshd.set_output(LOW)
    path = config(tmp_path, cloud, key, sshd,
                  schedule_later=window(hours_from_now(12), min_size="2"))
    done = run_cli("-c", str(path))
    assert done.returncode == 0, done.stderr
    assert "decision         : none: load 0.10 is low but the pool is at min_size 1" in \
        done.stdout
    assert "schedule         : later closed" in done.stdout
    assert len(cloud.lb_members()) == 1
    assert [c.command for c in cloud.calls] in (
        ["listLoadBalancerRuleInstances", "listVirtualMachines"],
        ["listVirtualMachines", "listLoadBalancerRuleInstances"])
    assert sshd.exec_count() == 1


def test_status_and_json_show_windows_and_bounds(tmp_path, cloud, key, sshd):
    sshd.set_output(MID)
    path = config(tmp_path, cloud, key, sshd,
                  schedule_peak=window(hours_from_now(-1), min_size="2", max_size="3"),
                  schedule_night=window(hours_from_now(12), max_size="2"))
    status = run_cli("-c", str(path), "--status")
    assert status.returncode == 0, status.stderr
    assert "schedule: peak open since " in status.stdout
    assert "(min_size 2, max_size 3)" in status.stdout
    assert "schedule: night closed" in status.stdout
    assert ("schedule: bounds now: min_size 2 (schedule peak), max_size 3 (schedule peak)"
            in status.stdout)
    assert "decision now: scale out: pool has 1 VMs, below min_size 2 (schedule peak)" in \
        status.stdout
    as_json = run_cli("-c", str(path), "--json")
    bounds = json.loads(as_json.stdout)["bounds"]
    assert (bounds["min_size"], bounds["max_size"], bounds["min_from"]) == (2, 3, "peak")
    assert [w["schedule"] for w in bounds["open"]] == ["peak"]
    assert bounds["closed"] == ["night"]
    assert_no_secrets(status.stdout, status.stderr, as_json.stdout, as_json.stderr)
