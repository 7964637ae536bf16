"""Fleet operations end to end: the installed ssh_scale.py against the simulator and the real
sshd, with [schedule NAME] windows, [notify] (a real HTTP server on loopback and a command
that writes its environment to a file) and [metrics] (the textfile, parsed by
prometheus_client). Each asserts what a user sees: exit code, printed lines, the cloud's state,
what the receiver got."""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cloudstack_sim import DEFAULT_API_KEY, DEFAULT_SECRET_KEY, Fault
from tests.conftest import assert_no_secrets, base_sections, run_cli, write_config
from tests.receivers import Receiver, env_command, read_env
from tests.scenarios import start_run, wait_for
from tests.configs import add_owned

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
    assert "decision now: scale out: pool has 1 VM, below min_size 2 (schedule peak)" in \
        status.stdout
    as_json = run_cli("-c", str(path), "--json")
    bounds = json.loads(as_json.stdout)["bounds"]
    assert (bounds["min_size"], bounds["max_size"], bounds["min_from"]) == (2, 3, "peak")
    assert [w["schedule"] for w in bounds["open"]] == ["peak"]
    assert bounds["closed"] == ["night"]
    assert_no_secrets(status.stdout, status.stderr, as_json.stdout, as_json.stderr)


# --- notifications ---------------------------------------------------------------------------

def test_scale_out_notifies_webhook_and_command_without_secrets(tmp_path, cloud, key, sshd):
    sshd.set_output(LOW)
    out = tmp_path / "env"
    with Receiver() as receiver:
        path = config(tmp_path, cloud, key, sshd, scalling={"min_size": "2"},
                      notify={"webhook": receiver.url(),
                              "command": str(env_command(tmp_path, out))})
        # the account in the environment too: it must not reach the command
        env = dict(os.environ, CLOUDSTACK_KEY=DEFAULT_API_KEY,
                   CLOUDSTACK_SECRET=DEFAULT_SECRET_KEY, SSH_SCALE_MONITOR="monitor-a")
        done = run_cli("-c", str(path), "-v", env=env)
    assert done.returncode == 0, done.stderr
    new = [vm["id"] for vm in cloud.lb_members() if vm["name"] != "web1"]
    ((_, data),) = receiver.posts
    assert (data["event"], data["action"], data["host"]) == ("scale_out", "scale out",
                                                            "monitor-a")
    assert (data["pool_before"], data["pool_after"], data["vm_ids"]) == (1, 2, new)
    assert data["text"].endswith("scale out: pool has 1 VM, below min_size 2; pool 1 -> 2 VMs")
    command_env = read_env(out)
    assert command_env["SSH_SCALE_EVENT"] == "scale_out"
    assert command_env["SSH_SCALE_VM_IDS"] == ",".join(new)
    assert "CLOUDSTACK_SECRET" not in command_env and "CLOUDSTACK_KEY" not in command_env
    assert_no_secrets(json.dumps(data), out.read_text(), done.stdout, done.stderr,
                      extra=("XXXXSECRETXXXX",))


def test_failed_run_notifies_and_keeps_its_exit_status(tmp_path, cloud, key, sshd):
    sshd.set_output(LOW)
    cloud.inject(Fault("job_fail", "deployVirtualMachine", errortext="No capacity in zone"))
    with Receiver(status=500) as receiver:
        path = config(tmp_path, cloud, key, sshd, scalling={"min_size": "2"},
                      notify={"webhook": receiver.url(), "events": "failure"})
        done = run_cli("-c", str(path))
    assert done.returncode == 1
    ((_, data),) = receiver.posts
    assert data["event"] == "failure" and "No capacity in zone" in data["error"]
    assert data["text"].startswith("ssh-scale on ") and "run failed (scale out)" in data["text"]
    assert len(data["vm_ids"]) == 1  # the VM the failed deploy left (destroyed since)
    warning = [line for line in done.stdout.splitlines() if "notify" in line]
    assert len(warning) == 1 and f"webhook 127.0.0.1:{receiver.port}: HTTP 500" in warning[0]
    assert "XXXXSECRETXXXX" not in done.stdout + done.stderr
    assert done.stderr.startswith("ssh_scale.py: error: ") and done.stderr.count("\n") == 1


def test_hanging_webhook_delays_the_run_by_the_timeout_only(tmp_path, cloud, key, sshd):
    sshd.set_output(LOW)
    with Receiver(delay=60) as receiver:
        path = config(tmp_path, cloud, key, sshd, scalling={"min_size": "2"},
                      notify={"webhook": receiver.url(), "timeout": "1"})
        started = time.monotonic()
        done = run_cli("-c", str(path))
        elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert "no answer within 1 s" in done.stdout
    assert len(cloud.lb_members()) == 2
    assert elapsed < 30  # the run itself (deploy, assign) plus at most the timeout


# --- metrics -----------------------------------------------------------------------------

def read_metrics(path: Path) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """{name: {labels without load_balancer: value}}, through prometheus_client's parser."""
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            labels = dict(sample.labels)
            assert labels.pop("load_balancer")
            found.setdefault(sample.name, {})[tuple(sorted(labels.items()))] = sample.value
    return found


def test_textfile_written_every_run_and_parsed(tmp_path, cloud, key, sshd):
    folder = tmp_path / "textfile"
    folder.mkdir()
    prom = folder / "ssh_scale.prom"
    sshd.set_output(LOW)
    path = config(tmp_path, cloud, key, sshd, scalling={"min_size": "2"},
                  metrics={"textfile": str(prom)},
                  schedule_peak=window(hours_from_now(-1), max_size="4"))
    before = time.time()
    assert run_cli("-c", str(path)).returncode == 0
    first = read_metrics(prom)
    assert first["ssh_scale_pool_in_service"][()] == 1  # as read before the scale-out
    assert (first["ssh_scale_min_size"][()], first["ssh_scale_max_size"][()]) == (2, 4)
    assert first["ssh_scale_schedule_open"][(("schedule", "peak"),)] == 1
    assert first["ssh_scale_load"][(("period", "1"),)] == pytest.approx(0.1)
    scaled = first["ssh_scale_last_action_timestamp_seconds"][(("action", "scale_out"),)]
    assert before <= scaled <= time.time()
    assert first["ssh_scale_last_run_success"][()] == 1
    sshd.set_output("garbage")  # no load: exit 1, min/max still enforced (nothing to do)
    done = run_cli("-c", str(path))
    assert done.returncode == 1
    second = read_metrics(prom)
    assert second["ssh_scale_last_run_success"][()] == 0
    assert second["ssh_scale_last_success_timestamp_seconds"][()] == \
        first["ssh_scale_last_success_timestamp_seconds"][()]
    assert second["ssh_scale_last_run_timestamp_seconds"][()] > \
        first["ssh_scale_last_run_timestamp_seconds"][()]
    assert second["ssh_scale_last_action_timestamp_seconds"][(("action", "scale_out"),)] == \
        scaled
    assert "ssh_scale_load" not in second
    assert sorted(os.listdir(folder)) == ["ssh_scale.prom"]


def test_read_only_looks_write_no_textfile(tmp_path, cloud, key, sshd):
    prom = tmp_path / "ssh_scale.prom"
    sshd.set_output(LOW)
    path = config(tmp_path, cloud, key, sshd, metrics={"textfile": str(prom)})
    for option in ("--status", "--dry-run"):
        assert run_cli("-c", str(path), option).returncode == 0
    assert not prom.exists()


def test_a_run_stopped_by_sigterm_writes_its_failure_and_ctrl_c_writes_nothing(tmp_path, cloud,
                                                                              key, sshd):
    add_owned(cloud, "m1")
    sshd.set_output(LOW)
    for signum, written in ((signal.SIGINT, False), (signal.SIGTERM, True)):
        prom = tmp_path / f"{signum}.prom"
        path = config(tmp_path, cloud, key, sshd, scalling={"drain_seconds": "60"},
                      metrics={"textfile": str(prom)})
        process = start_run(path)
        wait_for(lambda: "ssh-scale:scale-in" in cloud.tags(cloud.lb_id), process)  # draining
        process.send_signal(signum)
        process.communicate(timeout=120)
        assert prom.exists() is written
        if written:
            assert read_metrics(prom)["ssh_scale_last_run_success"][()] == 0
        cloud.delete_tag(cloud.lb_id, "ssh-scale:scale-in")
        cloud.settle()
        run_cli("-c", str(config(tmp_path, cloud, key, sshd)))  # the repair: destroys m1
        add_owned(cloud, "m1")


# --- the quiet run with every feature on ------------------------------------------------------

def test_quiet_run_with_every_feature_costs_two_calls_and_one_exec(tmp_path, cloud, key, sshd):
    sshd.set_output(MID)
    prom = tmp_path / "ssh_scale.prom"
    out = tmp_path / "env"
    with Receiver() as receiver:
        path = config(tmp_path, cloud, key, sshd,
                      schedule_peak=window(hours_from_now(-1), min_size="1", max_size="2"),
                      schedule_night=window(hours_from_now(12), max_size="1"),
                      notify={"webhook": receiver.url(),
                              "command": str(env_command(tmp_path, out))},
                      metrics={"textfile": str(prom)})
        done = run_cli("-c", str(path))
    assert done.returncode == 0, done.stderr
    assert "decision         : none: load between thresholds" in done.stdout
    assert sorted(c.command for c in cloud.calls) == ["listLoadBalancerRuleInstances",
                                                      "listVirtualMachines"]
    assert sshd.exec_count() == 1
    assert receiver.posts == [] and not out.exists()
    assert read_metrics(prom)["ssh_scale_last_run_success"][()] == 1
