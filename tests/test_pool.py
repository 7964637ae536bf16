"""Watching the whole pool: members measured in parallel over the real sshd listening on
several loopback addresses, metric options, and the --status and --json views."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from cloudstack_sim import Simulator
from tests import sshd_support
from tests.conftest import base_sections, run_cli, write_config
from tests.configs import add_owned, unstem

ADDRESSES = ["127.0.1.1", "127.0.1.2", "127.0.1.3", "127.0.1.4"]
OLD = datetime.now(timezone.utc) - timedelta(hours=1)


@pytest.fixture
def cloud() -> Any:
    with Simulator(job_seconds=0.05, ip_addresses=ADDRESSES + ["127.0.1.9"]) as sim:
        yield sim


@pytest.fixture
def servers(tmp_path: Path, key: Path) -> Any:
    """One sshd on every member address: it tells hosts apart by the address dialled."""
    sshd_support.require_sshd()
    with sshd_support.OpenSSHServer(tmp_path / "sshd", addresses=ADDRESSES,
                                    authorized_keys=[key]) as server:
        yield server


def group(cloud: Any) -> str:
    return f"ssh_scale-{cloud.lb_id}"


def pool_of(cloud: Any, count: int, created: datetime = OLD) -> list[dict]:
    vms = [cloud.add_vm("web1", created=created)]
    vms += [add_owned(cloud, f"m{i}", created=created) for i in range(1, count)]
    return vms


def members_config(tmp_path: Path, cloud: Any, key: Path, port: int, **monitoring: str) -> Path:
    sections = base_sections(cloud, key, host="", port=port)
    sections["monitoring"].update(monitor_members="yes", **monitoring)
    sections["scalling"]["max_size"] = "6"
    return write_config(tmp_path / "idcfrc", sections)


def loads(server: Any, *values: float) -> None:
    for address, value in zip(ADDRESSES, values):
        server.set_output(f"{value:.2f} {value:.2f} {value:.2f} 1/100 42", address)


@pytest.mark.parametrize("aggregate, values, expected, action", [
    ("mean", (2.0, 2.5, 5.0), "now_la           : 3.17", "scale out        : +1"),
    ("max", (2.0, 2.5, 5.0), "now_la           : 5.00", "scale out        : +1"),
    ("mean", (0.5, 0.5, 2.0), "now_la           : 1.00", "decision         : none"),
])
def test_members_measured_once_each_and_aggregated(tmp_path, cloud, key, servers, aggregate,
                                                   values, expected, action):
    pool_of(cloud, 3)
    loads(servers, *values)
    done = run_cli("-c", str(members_config(tmp_path, cloud, key, servers.port,
                                            aggregate=aggregate)))
    assert done.returncode == 0, done.stderr
    assert expected in done.stdout and action in done.stdout
    assert [servers.exec_count(a) for a in ADDRESSES[:3]] == [1, 1, 1]


def test_young_member_skipped_by_boot_grace(tmp_path, cloud, key, servers):
    pool_of(cloud, 2)
    add_owned(cloud, "fresh", created=datetime.now(timezone.utc))
    loads(servers, 2.0, 2.0, 9.0)
    done = run_cli("-c", str(members_config(tmp_path, cloud, key, servers.port)))
    assert done.returncode == 0, done.stderr
    assert "fresh skipped" in done.stdout and "boot_grace 300 s" in done.stdout
    assert servers.exec_count(ADDRESSES[2]) == 0
    assert "now_la           : 2.00" in done.stdout


def test_unreachable_member_skipped_and_min_reporting(tmp_path, cloud, key, servers):
    pool_of(cloud, 2)
    add_owned(cloud, "dead", ip="127.0.1.9", created=OLD)
    loads(servers, 5.0, 5.0)
    path = members_config(tmp_path, cloud, key, servers.port, connect_timeout="2")
    done = run_cli("-c", str(path))
    assert done.returncode == 0, done.stderr
    assert "127.0.1.9" in done.stdout and "scale out        : +1" in done.stdout
    path = members_config(tmp_path, cloud, key, servers.port, min_reporting="4")
    done = run_cli("-c", str(path))
    assert "load unknown" in done.stdout


def test_per_cpu_reads_cpu_count_in_the_same_exec(tmp_path, cloud, key, servers):
    pool_of(cloud, 1)
    sections = base_sections(cloud, key, host=ADDRESSES[0], port=servers.port)
    sections["monitoring"]["per_cpu"] = "yes"
    servers.set_output("8.00 8.00 8.00 1/100 42\n4\n", ADDRESSES[0])
    done = run_cli("-c", str(write_config(tmp_path / "rc", sections)))
    assert done.returncode == 0, done.stderr
    assert "now_la           : 2.00" in done.stdout
    assert servers.commands(ADDRESSES[0]) == [
        "{ cat /proc/loadavg", "} && getconf _NPROCESSORS_ONLN"]  # one exec, two lines


def test_custom_command_first_number_is_the_metric(tmp_path, cloud, key, servers):
    pool_of(cloud, 1)
    sections = base_sections(cloud, key, host=ADDRESSES[0], port=servers.port)
    sections["monitoring"]["command"] = "queue-length"
    servers.set_output("queue: 12 jobs\n", ADDRESSES[0])
    done = run_cli("-c", str(write_config(tmp_path / "rc", sections)))
    assert done.returncode == 0, done.stderr
    assert "now_la           : 12.00" in done.stdout and "scale out" in done.stdout


def test_host_list_and_periods(tmp_path, cloud, key, servers):
    pool_of(cloud, 2)
    servers.set_output("0.50 3.00 1.00 1/1 1", ADDRESSES[0])
    servers.set_output("0.50 2.00 1.00 1/1 1", ADDRESSES[1])
    sections = base_sections(cloud, key, host=f"{ADDRESSES[0]}, {ADDRESSES[1]}",
                             port=servers.port)
    sections["scalling_policy_in"]["period"] = "5"
    done = run_cli("-c", str(write_config(tmp_path / "rc", sections)))
    assert done.returncode == 0, done.stderr
    # scale-out looks at the 1-min mean (0.50), scale-in at the 5-min mean (2.50): no action
    assert "now_la (1-min)   : 0.50" in done.stdout and "now_la (5-min)   : 2.50" in done.stdout
    assert "decision         : none" in done.stdout


def test_status_shows_pool_and_decision_without_acting(tmp_path, cloud, key, servers):
    pool_of(cloud, 2)
    loads(servers, 9.0, 9.0)
    done = run_cli("--status", "-c", str(members_config(tmp_path, cloud, key, servers.port)))
    assert done.returncode == 0, done.stderr
    table = done.stdout
    assert "| name" in table and "| web1" in table and "| m1" in unstem(table)
    assert "9.00 9.00 9.00" in table
    assert "decision now: scale out" in table
    assert not cloud.calls_of("deployVirtualMachine")
    # the table and the decision only: it printed the whole log and "dry run : would ..."
    assert done.stderr == "" and "dry run" not in table and "***" not in table
    verbose = run_cli("--status", "-v", "-c", str(members_config(tmp_path, cloud, key,
                                                                 servers.port)))
    assert verbose.returncode == 0 and verbose.stdout == table
    assert "*** scale out check ***" in verbose.stderr
    assert "dry run          : would scale out" in verbose.stderr


def test_json_one_object_on_stdout(tmp_path, cloud, key, servers):
    pool_of(cloud, 2)
    loads(servers, 9.0, 9.0)
    done = run_cli("--json", "-c", str(members_config(tmp_path, cloud, key, servers.port)))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["decision"]["action"] == "scale out"
    assert report["aggregate"]["out"] == 9.0
    assert {h["address"] for h in report["hosts"]} == set(ADDRESSES[:2])
    assert report["result"] == "pool has 3 VMs"
    assert len(cloud.lb_members()) == 3
    assert "*** scale out check ***" in done.stderr


def test_members_mode_scales_in_the_newest_managed(tmp_path, cloud, key, servers):
    vms = pool_of(cloud, 3)
    loads(servers, 0.1, 0.1, 0.1)
    done = run_cli("-c", str(members_config(tmp_path, cloud, key, servers.port)))
    assert done.returncode == 0, done.stderr
    assert "scale in         : -1 (m2" in unstem(done.stdout)
    assert vms[2]["id"] not in {vm["id"] for vm in cloud.vms()}


def test_json_still_printed_when_the_run_fails(tmp_path, cloud, key):
    pool_of(cloud, 1)
    sections = base_sections(cloud, key, port=sshd_support.free_port("127.0.0.1"))
    sections["scalling"]["min_size"] = "2"
    done = run_cli("--json", "-c", str(write_config(tmp_path / "rc", sections)))
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["decision"]["rule"] == "min_size" and report["result"] == "pool has 2 VMs"
    assert "connection refused" in report["error"]
    assert "connection refused" in report["hosts"][0]["error"]
    assert len(cloud.lb_members()) == 2


def test_failing_command_is_no_measurement(tmp_path, cloud, key):
    import paramiko

    from load_sshd import LoadServer

    def respond(address: str, command: str) -> str:
        raise RuntimeError("upstream error 502")  # the server answers exit status 1

    pool_of(cloud, 2)
    with LoadServer(respond, authorized_keys=[paramiko.PKey.from_path(str(key))]) as server:
        sections = base_sections(cloud, key, port=server.port)
        done = run_cli("-c", str(write_config(tmp_path / "rc", sections)))
    assert done.returncode == 1
    assert "the command exited with status 1" in done.stderr
    assert not cloud.calls_of("deployVirtualMachine") and not cloud.calls_of(
        "destroyVirtualMachine")


def test_members_use_the_key_of_the_configured_host_alias(tmp_path, cloud, key, servers, home):
    pool_of(cloud, 2)
    loads(servers, 2.0, 2.0)
    (home / ".ssh" / "config").write_text(f"Host web1\n  HostName {ADDRESSES[0]}\n"
                                          f"  IdentityFile {key}\n")
    sections = base_sections(cloud, None, host="web1", port=servers.port)
    del sections["monitoring"]["private_key_path"]
    sections["monitoring"]["monitor_members"] = "yes"
    done = run_cli("-c", str(write_config(tmp_path / "rc", sections)))
    assert done.returncode == 0, done.stderr
    assert [servers.exec_count(a) for a in ADDRESSES[:2]] == [1, 1]


def test_status_after_a_failed_read_says_the_pool_was_not_read(tmp_path, cloud, key, servers):
    pool_of(cloud, 1)
    sections = base_sections(cloud, key, host=ADDRESSES[0], port=servers.port)
    sections["account"]["secret_key"] = "wrong"
    done = run_cli("--status", "-c", str(write_config(tmp_path / "rc", sections)))
    assert done.returncode == 1
    assert "(the pool was not read)" in done.stdout and "HTTP 401" in done.stderr


def test_json_into_a_closed_pipe_is_quiet(tmp_path, cloud, key, servers):
    import subprocess

    from tests.conftest import SSH_SCALE
    pool_of(cloud, 1)
    loads(servers, 2.0)
    path = write_config(tmp_path / "rc", base_sections(cloud, key, host=ADDRESSES[0],
                                                       port=servers.port))
    done = subprocess.run(f"{SSH_SCALE} --json -c {path} | true", shell=True,
                          capture_output=True, text=True, check=False)
    assert "error" not in done.stderr and "Traceback" not in done.stderr
