"""What a run may believe (issue 16): a load only in its command's format, a host key per VM
it deployed, the cloud's clock when ours is off, and a lease holder per boot of a monitor. The
installed command against the simulator (as each server version where the cloud matters) and
the real OpenSSH sshd on loopback."""

from __future__ import annotations

import os
import re
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import idcf_api
from cloudstack_sim import DEFAULT_API_KEY, DEFAULT_SECRET_KEY, Fault
from sshscale.lease import boot_id
from tests import sshd_support
from tests.conftest import base_sections, run_cli, write_config
from tests.scenarios import HIGH, LOW, MID, campaign_cloud, group, make_config, outputs, \
    start_run, wait_for

OLD = datetime.now(timezone.utc) - timedelta(hours=2)
WEB1, BYSTANDER, M1 = "127.0.4.1", "127.0.4.2", "127.0.4.3"
LEASE = "ssh-scale:lease"
FUTURE = 4102444800  # 2100-01-01


@pytest.fixture
def servers(tmp_path: Path, key: Path) -> Any:
    """One sshd on three addresses: the monitored VM's, an unmanaged member's, a managed one's."""
    sshd_support.require_sshd()
    with sshd_support.OpenSSHServer(tmp_path / "sshd", addresses=[WEB1, BYSTANDER, M1],
                                    authorized_keys=[key]) as server:
        yield server


def old_host_key(tmp_path: Path) -> str:
    """Another host key, "type base64": the key of a VM that had the address before."""
    path = sshd_support.make_key(tmp_path, "old_host_key")
    return " ".join(sshd_support.public_key_path(path).read_text().split()[:2])


# --- A. garbage is not a load ---------------------------------------------------------------

@pytest.mark.parametrize("output", [
    "not a number 2/123 4567",                          # was load 2.00
    f"Welcome to Ubuntu 22.04.3 LTS\n{LOW}",            # was load 22.04: a scale-out
    "",
])
def test_default_command_output_in_another_format_is_no_measurement(tmp_path, sim, key, sshd,
                                                                    output):
    sim.add_vm("web1", ip="127.0.0.1")
    sshd.set_output(output)
    done = run_cli("-c", str(write_config(tmp_path / "rc", base_sections(sim, key,
                                                                         port=sshd.port))))
    text = outputs(done)
    assert done.returncode == 1, text
    assert not sim.calls_of("deployVirtualMachine")
    if output:
        quoted = repr(output.strip()[:60])
        assert text.count(quoted) == 1
        assert f"127.0.0.1:{sshd.port}: unusable command output: {quoted} is not what cat " \
               "/proc/loadavg prints (check [monitoring] command" in done.stderr
    else:
        assert "unusable command output: empty output" in done.stderr


def test_a_member_answering_a_banner_fails_its_ssh_check(tmp_path, sim, key, servers):
    sim.add_vm("web1", ip=WEB1, created=OLD)
    sim.add_vm("m1", ip=M1, group=group(sim), created=OLD)
    servers.set_output(MID, WEB1)
    servers.set_output(f"Welcome to Ubuntu 22.04.3 LTS\n{LOW}", M1)
    sections = base_sections(sim, key, host=WEB1, port=servers.port)
    sections["monitoring"]["monitor_members"] = "yes"
    sections["health"] = {"check": "ssh"}
    done = run_cli("-c", str(write_config(tmp_path / "rc", sections)))
    text = outputs(done)
    assert done.returncode == 0, text
    assert "m1 failed its check 1 of 3 runs in a row: " in text
    assert "is not what cat /proc/loadavg prints" in text
    assert "now_la           : 2.00" in text  # web1's load alone
    assert not sim.calls_of("deployVirtualMachine")


def test_custom_command_keeps_its_first_number(tmp_path, sim, key, sshd):
    sim.add_vm("web1", ip="127.0.0.1")
    sshd.set_output("Welcome to Ubuntu 22.04.3 LTS\n")
    sections = base_sections(sim, key, port=sshd.port)
    sections["monitoring"]["command"] = "my-load"
    done = run_cli("-c", str(write_config(tmp_path / "rc", sections)))
    assert done.returncode == 0, done.stderr
    assert "now_la           : 22.04" in done.stdout


# --- B. a deployed VM's host key is the VM's ------------------------------------------------

def members_config(tmp_path: Path, cloud: Any, key: Path, port: int, **monitoring: str) -> Path:
    sections = base_sections(cloud, key, host=WEB1, port=port)
    sections["monitoring"].update(monitor_members="yes", **monitoring)
    sections["health"] = {"check": "ssh"}
    return write_config(tmp_path / "rc", sections)


def test_a_new_vm_on_a_reused_address_is_measured_and_the_others_stay_strict(
        tmp_path, any_sim, key, servers, home):
    any_sim.add_vm("web1", ip=WEB1, created=OLD)
    any_sim.add_vm("bystander", ip=BYSTANDER, created=OLD)
    m1 = any_sim.add_vm("m1", ip=M1, group=group(any_sim), created=OLD)
    servers.set_output(MID)
    port, old = servers.port, old_host_key(tmp_path)
    # What a monitor holds after VMs of other keys had these addresses: address records (the
    # previous version, and the monitored and unmanaged VMs), and the record of a destroyed VM.
    known = home / ".ssh" / "known_hosts"
    stale = f"ssh-scale-vm-gone-1 {old} [{M1}]:{port}"
    known.write_text("".join(f"[{a}]:{port} {old}\n" for a in (WEB1, BYSTANDER, M1)) +
                     stale + "\n")
    path = members_config(tmp_path, any_sim, key, port)
    done = run_cli("-c", str(path))
    text = outputs(done)
    assert done.returncode == 0, text
    assert servers.exec_count(M1) == 1 and "now_la           : 2.00" in text
    for address in (WEB1, BYSTANDER):
        assert f"{address}:{port}: host key changed (ssh-ed25519); refusing to connect " \
               "(check ~/.ssh/known_hosts; " in text
        assert servers.exec_count(address) == 0
    assert "m1 failed its check" not in text
    alias = f"ssh-scale-vm-{m1['id']}"
    assert f"recorded in ~/.ssh/known_hosts as {alias}" in text
    lines = known.read_text().splitlines()
    assert f"{alias} {servers.host_public_key} [{M1}]:{port}" in lines
    assert stale not in lines and f"[{WEB1}]:{port} {old}" in lines
    # The same VM with another key: a changed key, refused.
    servers.regenerate_host_key()
    done = run_cli("-c", str(path))
    assert done.returncode == 1
    assert f"{M1}:{port}: host key changed (ssh-ed25519); refusing to connect (check {alias} " \
           "in ~/.ssh/known_hosts; " in done.stdout + done.stderr
    assert servers.exec_count(M1) == 1


def test_strict_policy_takes_a_deployed_vm_key_by_its_id_or_its_address(tmp_path, sim, key,
                                                                       servers, home):
    m1 = sim.add_vm("m1", ip=M1, group=group(sim), created=OLD)
    servers.set_output(MID)
    path = members_config(tmp_path, sim, key, servers.port, host_key_policy="strict")
    done = run_cli("-c", str(path))
    assert done.returncode == 1
    assert "unknown host key and host_key_policy = strict (add it to ~/.ssh/known_hosts as " \
           f"ssh-scale-vm-{m1['id']})" in done.stderr
    known = home / ".ssh" / "known_hosts"
    known.write_text(servers.known_hosts_line(M1) + "\n")
    assert run_cli("-c", str(path)).returncode == 0
    known.write_text(f"ssh-scale-vm-{m1['id']} {servers.host_public_key}\n")
    assert run_cli("-c", str(path)).returncode == 0
    assert servers.exec_count(M1) == 2


# --- C. the clock -------------------------------------------------------------------------

@pytest.fixture
def clock_cloud(any_sim: Any) -> Any:
    """The monitored web VM; the cloud's clock 1000 s ahead of this machine's, beyond the
    signatures' 600 s lifetime (the simulator checks `expires` on its own clock)."""
    any_sim.add_vm("web1", ip="127.0.0.1")
    any_sim.skew_clock(1000, signatures=True)
    return any_sim


def test_a_monitor_clock_behind_the_cloud_signs_on_the_clouds_clock(tmp_path, clock_cloud,
                                                                    key, sshd):
    sshd.set_output(HIGH)
    path = write_config(tmp_path / "rc", base_sections(clock_cloud, key, port=sshd.port))
    done = run_cli("-c", str(path))
    text = outputs(done)
    assert done.returncode == 0, text
    assert re.search(r"this machine's clock is (999|100\d) s behind the cloud's", text)
    assert len(clock_cloud.calls_of("deployVirtualMachine")) == 1
    statuses = [call.status for call in clock_cloud.calls]
    assert statuses.count(401) <= 2 and statuses[-1] == 200  # the first reads, once each


def test_a_401_that_stays_names_the_keys_and_the_clock(tmp_path, clock_cloud, key, sshd):
    sections = base_sections(clock_cloud, key, port=sshd.port)
    sections["account"]["secret_key"] = "not-the-secret"
    done = run_cli("-c", str(write_config(tmp_path / "rc", sections)))
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1
    assert "HTTP 401" in done.stderr
    assert "check [account] api_key and secret_key" in done.stderr
    assert re.search(r"this machine's clock is (999|100\d) s behind the cloud's", done.stderr)
    clock_cloud.skew_clock(0)
    done = run_cli("-c", str(write_config(tmp_path / "rc", sections)))
    assert "check [account] api_key and secret_key" in done.stderr
    assert "clock" not in done.stderr


def test_client_signs_again_on_the_servers_clock_once(clock_cloud):
    client = idcf_api.Client(idcf_api.Account(clock_cloud.url, DEFAULT_API_KEY,
                                              DEFAULT_SECRET_KEY))
    assert client.list("listZones")
    assert client.list("listZones")
    assert [call.status for call in clock_cloud.calls] == [401, 200, 200]
    assert 990 < client.signing_skew < 1010


# --- D. who holds the lease -----------------------------------------------------------------

@pytest.fixture
def cloud(sim: Any) -> Any:
    """The campaign's cloud: who holds a lease does not depend on the server's version."""
    return campaign_cloud(sim)


def monitor(name: str) -> dict[str, str]:
    return dict(os.environ, SSH_SCALE_MONITOR=name)


def gone_pid() -> int:
    """The pid of a process that has ended."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_a_bad_monitor_name_is_a_config_error(tmp_path, cloud, key, sshd):
    sshd.set_output(HIGH)
    done = run_cli("-c", str(make_config(tmp_path, cloud, key, sshd.port)),
                   env=monitor("monitor a"))
    assert done.returncode == 2
    assert done.stderr == ("ssh_scale.py: error: $SSH_SCALE_MONITOR: 'monitor a' is not a "
                           "monitor name: up to 200 letters, digits, '.', '-' and '_', starting "
                           "with a letter or digit\n")
    assert cloud.calls == []


@pytest.mark.parametrize("holder", [
    "monitor-a:{pid}",             # the previous version's form: no boot to tell
    "monitor-a:0badb007:{pid}",    # another host of the same name, or this one before a reboot
    "monitor-a:{boot}:{me}",       # this boot, a live process
])
def test_a_live_lease_of_the_same_monitor_name_is_respected(tmp_path, cloud, key, sshd, holder):
    held = holder.format(pid=gone_pid(), boot=boot_id(), me=os.getpid())
    cloud.set_tag(cloud.lb_id, LEASE, f"{held} {FUTURE}")
    sshd.set_output(HIGH)
    done = run_cli("-c", str(make_config(tmp_path, cloud, key, sshd.port)),
                   env=monitor("monitor-a"))
    assert done.returncode == 0, done.stderr
    assert f"another run ({held}) holds the pool's lease until" in done.stdout
    assert not cloud.calls_of("deployVirtualMachine")


def test_a_lease_given_back_meanwhile_is_taken_without_breaking(tmp_path, any_sim, key, sshd):
    """The lease is there when the run's createTags job runs, and gone when it reads it back:
    both jobs (ours, then the holder's deleteTags) finish at once, before that read."""
    cloud = campaign_cloud(any_sim)
    cloud.set_tag(cloud.lb_id, LEASE, f"other-host:0badb007:7 {FUTURE}")
    cloud.inject(Fault("job_hang", command="createTags"))
    sshd.set_output(HIGH)
    run = start_run(make_config(tmp_path, cloud, key, sshd.port))
    wait_for(lambda: cloud.pending_jobs() == 1, run)  # the run's createTags, hung
    cloud.inject(Fault("job_hang", command="deleteTags"))
    holder = idcf_api.Client(idcf_api.Account(cloud.url, DEFAULT_API_KEY, DEFAULT_SECRET_KEY))
    holder.call("deleteTags", resourcetype="LoadBalancer", resourceids=cloud.lb_id,
                **{"tags[0].key": LEASE})
    assert cloud.release_hung() == 2
    out, err = run.communicate(timeout=120)
    assert run.returncode == 0, err
    assert "the lease was given back meanwhile; taking it" in out
    assert "breaking" not in out
    assert len(cloud.calls_of("deployVirtualMachine")) == 1
    leases = [c.params["tags[0].value"] for c in cloud.calls_of("createTags")
              if c.params["tags[0].key"] == LEASE]
    assert re.fullmatch(rf"[\w.-]+:{boot_id()}:{run.pid} \d+", leases[-1])
