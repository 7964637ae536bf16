"""End to end: the installed ssh_scale.py command, the real OpenSSH sshd on loopback and the
CloudStack simulator. Each test asserts what a user sees: exit code, printed lines, and the
cloud's state afterwards."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from cloudstack_sim import Fault
from tests import sshd_support
from tests.conftest import NEWEST_ONLY, assert_no_secrets, base_sections, run_cli, write_config
from tests.configs import add_owned, config_with, labels

HIGH, MID, LOW = "4.20 3.10 2.00 3/200 999", "2.00 2.00 2.00 1/200 999", "0.10 0.20 0.30 1/99 9"


@pytest.fixture
def sim(any_sim: Any) -> Any:
    """This module runs against both server versions."""
    return any_sim


@pytest.fixture
def cloud(sim: Any) -> Any:
    """The 2013 starting point: one unmanaged web VM (the monitored one) behind the LB."""
    sim.monitored = sim.add_vm("web1", ip="127.0.0.1")
    return sim


def config(tmp_path: Path, cloud: Any, key: Path, sshd: Any, **changes: dict) -> Path:
    return config_with(tmp_path / "idcfrc", cloud, key, sshd.port, **changes)


def managed_group(cloud: Any) -> str:
    return f"ssh_scale-{cloud.lb_id}"


def add_managed(cloud: Any, name: str, ip: str) -> dict:
    return add_owned(cloud, name, ip=ip)


def member_names(cloud: Any) -> list[str]:
    return sorted(labels(cloud.lb_members()))


def mutations(cloud: Any) -> list[str]:
    return [c.command for c in cloud.calls
            if not c.command.lower().startswith(("list", "query"))]


def test_walkthrough_vm_name_via_ssh_config_scales_out(tmp_path, cloud, key, sshd, home):
    (home / ".ssh" / "config").write_text(
        f"Host i-2-1-VM\n  HostName 127.0.0.1\n  Port {sshd.port}\n")
    sections = base_sections(cloud, key, host="i-2-1-VM")
    path = write_config(tmp_path / "idcfrc", sections)
    sshd.set_output(HIGH)
    done = run_cli("-c", str(path))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert any(line.endswith("*** scale out check ***") for line in lines)
    assert any("la_threshold_out : 3.0" in line for line in lines)
    assert any("now_la           : 4.20" in line for line in lines)
    assert any("scale out        : +1" in line for line in lines)
    assert any("query job        : jobid: " in line for line in lines)
    assert any("now vm count     : 2" in line for line in lines)
    members = cloud.lb_members()
    assert len(members) == 2
    new = [vm for vm in members if vm["name"] != "web1"][0]
    assert new["group"] == managed_group(cloud) and new["state"] == "Running"
    assert sshd.exec_count() == 1
    assert f"[127.0.0.1]:{sshd.port}" in (home / ".ssh" / "known_hosts").read_text()


@NEWEST_ONLY
@pytest.mark.parametrize("key_type, fmt, passphrase", [
    ("rsa", "pem", "correct horse"), ("ed25519", "openssh", ""), ("ecdsa", "openssh", "pw"),
])
def test_key_types_and_passphrases(tmp_path, cloud, home, key_type, fmt, passphrase):
    other = sshd_support.make_key(home / ".ssh", f"id_{key_type}", key_type, passphrase, fmt)
    with sshd_support.OpenSSHServer(tmp_path / "sshd2", authorized_keys=[other]) as server:
        server.set_output(MID)
        sections = base_sections(cloud, other, port=server.port)
        sections["monitoring"]["pass_phrase"] = passphrase
        done = run_cli("-c", str(write_config(tmp_path / "rc", sections)))
    assert done.returncode == 0, done.stderr
    assert "now_la           : 2.00" in done.stdout
    assert_no_secrets(done.stdout, done.stderr, extra=(passphrase,) if passphrase else ())


@NEWEST_ONLY
def test_wrong_passphrase_exits_1_without_action(tmp_path, cloud, home):
    other = sshd_support.make_key(home / ".ssh", "id_enc", "rsa", "right", "pem")
    sections = base_sections(cloud, other, port=1)
    sections["monitoring"]["pass_phrase"] = "wrong-phrase"
    done = run_cli("-c", str(write_config(tmp_path / "rc", sections)))
    assert done.returncode == 1
    assert "pass_phrase" in done.stderr and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1
    assert_no_secrets(done.stdout, done.stderr, extra=("wrong-phrase",))
    assert mutations(cloud) == []


def test_min_fill_adds_one_even_at_low_load(tmp_path, cloud, key, sshd):
    sshd.set_output(LOW)
    path = config(tmp_path, cloud, key, sshd, scalling={"min_size": "2"})
    done = run_cli("-c", str(path))
    assert done.returncode == 0, done.stderr
    assert "below min_size 2" in done.stdout
    assert len(cloud.lb_members()) == 2


def test_max_cap_holds_at_high_load(tmp_path, cloud, key, sshd):
    add_managed(cloud, "m1", "127.0.1.101")
    add_managed(cloud, "m2", "127.0.1.102")
    sshd.set_output(HIGH)
    done = run_cli("-c", str(config(tmp_path, cloud, key, sshd)))
    assert done.returncode == 0, done.stderr
    assert "at max_size 3" in done.stdout
    assert mutations(cloud) == []


def test_scale_in_removes_newest_managed_only(tmp_path, cloud, key, sshd):
    from datetime import datetime, timedelta, timezone
    now = datetime.now(timezone.utc)
    cloud.add_vm("other-unmanaged", ip="127.0.1.100", created=now)
    older = add_owned(cloud, "m-old", ip="127.0.1.101", created=now - timedelta(hours=2))
    newer = add_owned(cloud, "m-new", ip="127.0.1.102", created=now - timedelta(hours=1))
    sshd.set_output(LOW)
    path = config(tmp_path, cloud, key, sshd, scalling={"max_size": "5"})
    done = run_cli("-c", str(path))
    assert done.returncode == 0, done.stderr
    assert f"scale in         : -1 ({newer['name']}" in done.stdout
    assert member_names(cloud) == ["m-old", "other-unmanaged", "web1"]
    assert newer["id"] not in {vm["id"] for vm in cloud.vms()}
    assert older["id"] in {vm["id"] for vm in cloud.vms()}
    # and again: the next victim is m-old, never web1 or the unmanaged VM
    assert run_cli("-c", str(path)).returncode == 0
    assert member_names(cloud) == ["other-unmanaged", "web1"]
    third = run_cli("-c", str(path))
    assert third.returncode == 0 and "no managed VM" in third.stdout
    assert member_names(cloud) == ["other-unmanaged", "web1"]


def test_monitored_vm_never_removed_even_unprotected(tmp_path, cloud, key, sshd):
    cloud.add_vm("other", ip="127.0.1.100")
    sshd.set_output(LOW)
    path = config(tmp_path, cloud, key, sshd, scalling={"protect_unmanaged": "no"})
    assert run_cli("-c", str(path)).returncode == 0
    assert member_names(cloud) == ["web1"]
    done = run_cli("-c", str(path))
    assert done.returncode == 0 and member_names(cloud) == ["web1"]


def test_failed_deploy_reports_errortext_and_destroys_error_vm(tmp_path, cloud, key, sshd):
    cloud.inject(Fault("job_fail", command="deployVirtualMachine",
                       errortext="Insufficient capacity in zone"))
    sshd.set_output(HIGH)
    done = run_cli("-c", str(config(tmp_path, cloud, key, sshd)))
    assert done.returncode == 1
    assert "Insufficient capacity in zone" in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert [vm["name"] for vm in cloud.vms()] == ["web1"]
    assert member_names(cloud) == ["web1"]


def test_backoff_and_cooldown_ends_print_in_the_log_lines_zone(tmp_path, cloud, key, sshd):
    # The log lines are local, the held times were UTC: nine hours apart in Tokyo.
    cloud.inject(Fault("job_fail", command="deployVirtualMachine", errortext="no capacity"))
    sshd.set_output(HIGH)
    path = config(tmp_path, cloud, key, sshd)
    tokyo = dict(os.environ, TZ="Asia/Tokyo")
    failed = run_cli("-c", str(path), env=tokyo)
    held = run_cli("-c", str(path), env=tokyo)
    stamp = r"\d{4}-\d\d-\d\d (\d\d):\d\d:\d\d"
    for done, label, line in ((failed, "backoff", "the next deploy waits until"),
                              (held, "decision", "held back by the failed-deploy backoff")):
        found = re.search(rf"{stamp} {label} +: .*{line} .*?{stamp} JST", done.stdout)
        assert found, done.stdout  # in the zone of the line's own time, with its name
        logged, until = int(found.group(1)), int(found.group(2))
        assert (until - logged) % 24 in (0, 1), done.stdout  # the next minute, not 9 h off


def test_dry_run_sends_no_mutation(tmp_path, cloud, key, sshd):
    sshd.set_output(HIGH)
    done = run_cli("-c", str(config(tmp_path, cloud, key, sshd)), "--dry-run")
    assert done.returncode == 0
    assert "would scale out" in done.stdout
    assert mutations(cloud) == [] and member_names(cloud) == ["web1"]


def test_lock_held_exits_0_with_one_line(tmp_path, cloud, key, sshd):
    from sshscale.run import run_lock
    path = config(tmp_path, cloud, key, sshd)
    with run_lock(str(path)):
        done = run_cli("-c", str(path))
        shell_like = run_cli("-c", str(path), env=dict(os.environ, XDG_RUNTIME_DIR=str(tmp_path)))
        status = run_cli("-c", str(path), "--status")
    assert done.returncode == 0 and shell_like.returncode == 0
    assert "another run holds the lock" in done.stdout
    assert "another run holds the lock" in shell_like.stdout
    assert status.returncode == 0 and "decision now" in status.stdout  # read-only: no lock
    assert not [c for c in cloud.calls if c.command == "deployVirtualMachine"]
    assert sshd.exec_count() == 1


def test_unreachable_host_exits_1_and_takes_no_load_action(tmp_path, cloud, key):
    add_managed(cloud, "m1", "127.0.1.101")
    sections = base_sections(cloud, key, host="127.0.0.1", port=sshd_support.free_port(
        "127.0.0.1"))
    done = run_cli("-c", str(write_config(tmp_path / "rc", sections)))
    assert done.returncode == 1
    assert "connection refused (check [monitoring] host/port)" in done.stderr
    assert mutations(cloud) == []


def test_unreachable_host_still_enforces_min_size(tmp_path, cloud, key):
    sections = base_sections(cloud, key, port=sshd_support.free_port("127.0.0.1"))
    sections["scalling"]["min_size"] = "2"
    done = run_cli("-c", str(write_config(tmp_path / "rc", sections)))
    assert done.returncode == 1
    assert len(cloud.lb_members()) == 2


def test_changed_host_key_refused(tmp_path, cloud, key, sshd, home):
    sshd.set_output(HIGH)
    path = config(tmp_path, cloud, key, sshd)
    (home / ".ssh" / "known_hosts").write_text(sshd.known_hosts_line("127.0.0.1") + "\n")
    sshd.regenerate_host_key()
    done = run_cli("-c", str(path))
    assert done.returncode == 1
    assert "host key changed" in done.stderr
    # what to do when the host was rebuilt: the line that removes the old key
    assert f"remove the old key: ssh-keygen -R '[127.0.0.1]:{sshd.port}')" in done.stderr
    assert sshd.exec_count() == 0 and mutations(cloud) == []


def test_verbose_output_has_no_secrets(tmp_path, cloud, home, sshd):
    other = sshd_support.make_key(home / ".ssh", "id_v", "rsa", "s3cret-phrase", "pem")
    with sshd_support.OpenSSHServer(tmp_path / "sshd3", authorized_keys=[other]) as server:
        server.set_output(HIGH)
        sections = base_sections(cloud, other, port=server.port)
        sections["monitoring"]["pass_phrase"] = "s3cret-phrase"
        done = run_cli("-v", "-c", str(write_config(tmp_path / "rc", sections)))
    assert done.returncode == 0, done.stderr
    assert "deployVirtualMachine" in done.stdout + done.stderr
    assert_no_secrets(done.stdout, done.stderr, extra=("s3cret-phrase",))


def test_quiet_prints_only_actions(tmp_path, cloud, key, sshd):
    sshd.set_output(MID)
    done = run_cli("-q", "-c", str(config(tmp_path, cloud, key, sshd)))
    assert done.returncode == 0 and done.stdout == ""


def test_quiet_prints_an_action_with_its_outcome(tmp_path, cloud, key, sshd):
    # -q printed the decision, but neither "scale out : +1" nor the new count
    sshd.set_output(HIGH)
    path = config(tmp_path, cloud, key, sshd)
    done = run_cli("-q", "-c", str(path))
    assert done.returncode == 0, done.stderr
    labels = [line[20:37].strip() for line in done.stdout.splitlines()]
    assert labels == ["decision", "scale out", "now vm count"], done.stdout
    assert done.stdout.splitlines()[-1].endswith("now vm count     : 2")
    sshd.set_output(LOW)
    done = run_cli("-q", "-c", str(path))
    labels = [line[20:37].strip() for line in done.stdout.splitlines()]
    assert labels == ["decision", "scale in", "destroy", "now vm count"], done.stdout


def test_read_only_looks_create_no_lock_file(tmp_path, cloud, key, sshd, home):
    # README: "--status and --dry-run change nothing and take no lock"; --status created it
    sshd.set_output(MID)
    path = config(tmp_path, cloud, key, sshd)
    for option in ("--status", "--dry-run", "--check"):
        done = run_cli("-c", str(path), option)
        assert done.returncode == 0, done.stdout + done.stderr
    assert not (home / ".cache").exists()


def test_help_shows_cron_line_and_version():
    done = run_cli("--help")
    assert done.returncode == 0 and "* * * * * /usr/bin/ssh_scale.py -c " in done.stdout
    assert run_cli("--version").stdout.strip().startswith("ssh_scale.py ")


def test_env_override_of_config_path(tmp_path, cloud, key, sshd):
    sshd.set_output(MID)
    path = config(tmp_path, cloud, key, sshd)
    env = dict(os.environ, IDCFRC=str(path))
    done = run_cli(env=env)
    assert done.returncode == 0 and "now_la           : 2.00" in done.stdout


def test_cooldown_uses_the_clouds_clock_when_ours_is_off(tmp_path, cloud, key, sshd):
    sshd.set_output(HIGH)
    path = config(tmp_path, cloud, key, sshd, scalling_policy_out={"cooldown": "120"},
                  scalling={"max_size": "5"})
    assert run_cli("-c", str(path)).returncode == 0  # scale-out: assigned just now
    # The cloud's clock runs an hour behind ours: its records and its Date header agree.
    cloud.age(3600)
    cloud.skew_clock(-3600)
    done = run_cli("-c", str(path))
    assert done.returncode == 0, done.stderr
    assert re.search(r"clock is 36\d\d s ahead of the cloud's", done.stdout)
    assert "held back by the scale-out cooldown" in done.stdout
    assert len(cloud.calls_of("deployVirtualMachine")) == 1


def test_known_hosts_lines_paramiko_cannot_read_are_skipped(tmp_path, cloud, key, sshd, home):
    (home / ".ssh" / "known_hosts").write_text(
        "@cert-authority *.example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE\n"
        "garbage line\n"
        "127.0.0.9 ssh-unknown-type AAAA\n")
    sshd.set_output(MID)
    done = run_cli("-c", str(config(tmp_path, cloud, key, sshd)))
    assert done.returncode == 0, done.stderr
    assert f"[127.0.0.1]:{sshd.port}" in (home / ".ssh" / "known_hosts").read_text()


def test_lock_holds_across_a_replaced_or_symlinked_config(tmp_path, cloud, key, sshd):
    from sshscale.run import run_lock
    path = config(tmp_path, cloud, key, sshd)
    link = tmp_path / "link-to-rc"
    link.symlink_to(path)
    with run_lock(str(path)):
        replacement = tmp_path / "new"
        replacement.write_bytes(path.read_bytes())
        replacement.chmod(0o600)
        os.replace(replacement, path)  # an editor's save: a new inode
        done = run_cli("-c", str(path))
        via_link = run_cli("-c", str(link))
    assert "another run holds the lock" in done.stdout
    assert "another run holds the lock" in via_link.stdout
    assert cloud.calls == []


def test_dry_run_and_status_record_no_host_key_but_say_what_they_would(tmp_path, cloud, key,
                                                                      sshd, home):
    # A dry run wrote ~/.ssh/known_hosts: it changes nothing, accept-new included.
    sshd.set_output(HIGH)
    path = config(tmp_path, cloud, key, sshd)
    known = home / ".ssh" / "known_hosts"
    dry = run_cli("-n", "-c", str(path))
    status = run_cli("--status", "-v", "-c", str(path))
    assert dry.returncode == 0 and status.returncode == 0, dry.stderr + status.stderr
    assert not known.exists()
    fingerprint = sshd_support.fingerprint(sshd.host_key_path)
    would = (f"ssh              : [127.0.0.1]:{sshd.port}: new host key ssh-ed25519 "
             f"{fingerprint} would be recorded in ~/.ssh/known_hosts (not by a dry run)")
    assert would in dry.stdout and would in status.stderr
    assert "would scale out" in dry.stdout and mutations(cloud) == []
    done = run_cli("-c", str(path))
    assert done.returncode == 0, done.stderr
    assert f"{fingerprint} recorded in ~/.ssh/known_hosts" in done.stdout
    assert known.read_text().strip() == sshd.known_hosts_line("127.0.0.1")
