"""Facts kept in the cloud's tags (issue: real CloudStack wording): drained VMs, the scale times
for the cooldowns, the failed-deploy backoff, and the lease that lets two monitors drive one
pool. Every scenario runs the installed command against the simulator speaking as every server
version it knows (4.5 to 4.19: each words tag failures its own way), and the real sshd."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from cloudstack_sim import Fault
from tests.conftest import run_cli
from tests.configs import add_owned, labels
from tests.scenarios import (
    campaign_cloud,
    HIGH,
    LOW,
    MID,
    add_managed,
    assert_consistent,
    group,
    kill_when,
    make_config,
    outputs,
    start_many,
)

LEASE, DRAIN, BACKOFF = "ssh-scale:lease", "ssh-scale:drain", "ssh-scale:backoff"
SCALE_OUT, SCALE_IN = "ssh-scale:scale-out", "ssh-scale:scale-in"


@pytest.fixture
def cloud(every_sim: Any) -> Any:
    """The campaign's cloud, speaking as each server version in turn (their tag failures are
    worded differently: the run reads back, whatever the wording)."""
    return campaign_cloud(every_sim)


def monitor_env(home: Path, name: str) -> dict[str, str]:
    """The environment of a run on another monitor: its own HOME (so its own lock) and name."""
    (home / ".ssh").mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HOME=str(home), SSH_SCALE_MONITOR=name)
    known = Path(os.environ["HOME"]) / ".ssh" / "known_hosts"
    if known.exists():
        (home / ".ssh" / "known_hosts").write_text(known.read_text())
    return env


def trust(sshd: Any) -> None:
    """The sshd's host key in ~/.ssh/known_hosts, which monitor_env copies (a dry run, which
    recorded it before, records nothing)."""
    known = Path(os.environ["HOME"]) / ".ssh" / "known_hosts"
    known.write_text(sshd.known_hosts_line("127.0.0.1") + "\n")


def managed(cloud: Any) -> list[dict]:
    return [vm for vm in cloud.vms() if vm.get("group") == group(cloud)]


# --- drained VMs ----------------------------------------------------------------------------

def test_scale_in_marks_the_victim_before_it_leaves_the_load_balancer(tmp_path, cloud, key,
                                                                        sshd):
    add_managed(cloud, "m1", hours_ago=3)
    victim = add_managed(cloud, "m2", hours_ago=2)
    sshd.set_output(LOW)
    path = make_config(tmp_path, cloud, key, sshd.port, scalling={"drain_seconds": "30"})
    kill_when(path, lambda: "m2" not in labels(cloud.lb_members()))
    assert DRAIN in cloud.tags(victim["id"])
    sshd.set_output(MID)
    cloud.settle()
    done = run_cli("-c", str(path))
    assert done.returncode == 0, done.stderr
    assert "was taken out of the load balancer but not destroyed" in done.stdout
    assert not cloud.calls_of("assignToLoadBalancerRule")
    assert victim["id"] not in {vm["id"] for vm in cloud.vms()}


def test_a_drain_mark_removed_by_hand_means_an_orphan_adopted(tmp_path, cloud, key, sshd):
    orphan = add_owned(cloud, "m1", in_lb=False)
    cloud.set_tag(orphan["id"], DRAIN, "1764460800")
    cloud.delete_tag(orphan["id"], DRAIN)
    sshd.set_output(MID)
    done = run_cli("-c", str(make_config(tmp_path, cloud, key, sshd.port)))
    assert done.returncode == 0, done.stderr
    assert "adopting it" in done.stdout
    assert orphan["id"] in {vm["id"] for vm in cloud.lb_members()}


# --- cooldowns from tags --------------------------------------------------------------------

@pytest.mark.parametrize("load, section, command, tag, cooldown", [
    (LOW, "scalling_policy_in", "destroyVirtualMachine", SCALE_IN, "scale-in cooldown"),
    (HIGH, "scalling_policy_out", "deployVirtualMachine", SCALE_OUT, "scale-out cooldown"),
])
def test_back_to_back_runs_act_once_within_the_cooldown(tmp_path, cloud, key, sshd, load,
                                                       section, command, tag, cooldown):
    for n in range(3):
        add_managed(cloud, f"m{n}", hours_ago=3 - n)
    sshd.set_output(load)
    path = make_config(tmp_path, cloud, key, sshd.port, **{section: {"cooldown": "300"}},
                       scalling={"max_size": "8"})
    texts = [outputs(run_cli("-c", str(path))) for _ in range(3)]
    assert len(cloud.calls_of(command)) == 1
    assert all(f"held back by the {cooldown}" in text for text in texts[1:])
    assert tag in cloud.tags(cloud.lb_id)


# --- the failed-deploy backoff --------------------------------------------------------------

def test_failing_deploys_back_off_and_a_success_resets(tmp_path, cloud, key, sshd):
    sshd.set_output(HIGH)
    path = make_config(tmp_path, cloud, key, sshd.port)
    cloud.inject(Fault("job_fail", command="deployVirtualMachine", times=-1))
    codes = [run_cli("-c", str(path)).returncode]
    codes += [run_within_backoff(cloud, path).returncode for _ in range(3)]
    assert codes == [1, 0, 0, 0]
    assert len(cloud.calls_of("deployVirtualMachine")) == 1
    assert managed(cloud) == []  # nothing left in Error
    assert cloud.tags(cloud.lb_id)[f"{BACKOFF}:1"].split()[0] == "1"
    held = run_cli("--json", "-c", str(path))
    assert '"backoff": {"failures": 1' in held.stdout
    assert "held back by the failed-deploy backoff (1 failed in a row)" in held.stderr
    # the backoff is over (set back by hand as time would): the next deploy works and resets it
    cloud.clear_faults()
    cloud.set_tag(cloud.lb_id, f"{BACKOFF}:1", "1 1000000000")
    done = run_cli("-c", str(path))
    assert done.returncode == 0, done.stderr
    assert len(cloud.calls_of("deployVirtualMachine")) == 2
    assert not any(k.startswith(BACKOFF) for k in cloud.tags(cloud.lb_id))


def test_min_size_fill_backs_off_too(tmp_path, cloud, key, sshd):
    sshd.set_output(MID)
    path = make_config(tmp_path, cloud, key, sshd.port, scalling={"min_size": "3"})
    cloud.inject(Fault("job_fail", command="deployVirtualMachine", times=-1))
    run_cli("-c", str(path))
    for _ in range(2):
        run_within_backoff(cloud, path)
    assert len(cloud.calls_of("deployVirtualMachine")) == 1


def run_within_backoff(cloud: Any, path: Path) -> Any:
    """A run right after the first failure: the backoff's first step (60 s) must not run out
    while a loaded machine runs the test, so its end is set a minute ahead again, as if the
    deploy had just failed."""
    failures, _ = cloud.tags(cloud.lb_id)[f"{BACKOFF}:1"].split()
    cloud.set_tag(cloud.lb_id, f"{BACKOFF}:1", f"{failures} {int(time.time()) + 60}")
    return run_cli("-c", str(path))


# --- two monitors, one actor ----------------------------------------------------------------

def test_two_monitors_eight_runs_each_deploy_exactly_once(tmp_path, cloud, key, sshd):
    sshd.set_output(HIGH)
    trust(sshd)
    path = make_config(tmp_path, cloud, key, sshd.port, scalling_policy_out={"cooldown": "120"})
    envs = (monitor_env(tmp_path / "a", "monitor-a"), monitor_env(tmp_path / "b", "monitor-b"))
    results = start_many(path, 8, envs)
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    assert len(cloud.calls_of("deployVirtualMachine")) == 1
    texts = [r.stdout for r in results]
    assert sum("another run" in t or "held back" in t for t in texts) == 15
    assert LEASE not in cloud.tags(cloud.lb_id)
    assert_consistent(cloud)


def test_holder_killed_mid_action_other_monitor_takes_over_after_expiry(tmp_path, cloud, key,
                                                                         sshd):
    sshd.set_output(HIGH)
    trust(sshd)
    path = make_config(tmp_path, cloud, key, sshd.port)
    one, other = monitor_env(tmp_path / "a", "monitor-a"), monitor_env(tmp_path / "b", "monitor-b")
    kill_when(path, lambda: bool(cloud.calls_of("deployVirtualMachine")), env=one)
    holder, expires = cloud.tags(cloud.lb_id)[LEASE].split()
    assert holder.startswith("monitor-a:") and int(expires) > time.time() + 20
    busy = run_cli("-c", str(path), env=other)
    assert busy.returncode == 0 and "holds the pool's lease until" in busy.stdout
    # time passes beyond the lease's end (its value holds the time: set it as time would)
    cloud.delete_tag(cloud.lb_id, LEASE)
    cloud.set_tag(cloud.lb_id, LEASE, f"{holder} {int(time.time()) - 1}")
    sshd.set_output(MID)
    cloud.settle()
    done = run_cli("-c", str(path), env=other)
    assert done.returncode == 0, done.stderr
    assert f"breaking an expired lease ({holder})" in done.stdout
    assert "repair" in done.stdout
    assert LEASE not in cloud.tags(cloud.lb_id)
    assert_consistent(cloud)


def test_lease_of_a_run_that_died_on_this_monitor_is_broken_at_once(tmp_path, cloud, key,
                                                                    sshd):
    sshd.set_output(HIGH)
    path = make_config(tmp_path, cloud, key, sshd.port)
    kill_when(path, lambda: bool(cloud.calls_of("deployVirtualMachine")))
    sshd.set_output(MID)
    cloud.settle()
    done = run_cli("-c", str(path))
    assert done.returncode == 0, done.stderr
    assert "a run that died on this monitor" in done.stdout
    assert_consistent(cloud)


@pytest.mark.parametrize("value, expected", [
    ("someone-else", "breaking an unreadable lease 'someone-else'"),
    ("other-host:1 4102444800", "another run (other-host:1) holds the pool's lease until"),
])
def test_foreign_lease_values(tmp_path, cloud, key, sshd, value, expected):
    cloud.set_tag(cloud.lb_id, LEASE, value)
    sshd.set_output(HIGH)
    done = run_cli("-c", str(make_config(tmp_path, cloud, key, sshd.port)))
    assert done.returncode == 0, done.stderr
    assert expected in done.stdout and "Traceback" not in done.stdout + done.stderr


def test_lease_created_by_someone_else_in_the_race_is_respected(tmp_path, cloud, key, sshd):
    sshd.set_output(HIGH)
    path = make_config(tmp_path, cloud, key, sshd.port)
    cloud.inject(Fault("slow", command="createTags", delay=0.5))
    cloud.set_tag(cloud.lb_id, LEASE, "other-host:7 4102444800")
    done = run_cli("-c", str(path))
    assert done.returncode == 0 and "another run (other-host:7)" in done.stdout
    assert not cloud.calls_of("deployVirtualMachine")


def test_a_cloud_without_tags_on_lb_rules_uses_the_local_lock_and_launches_nothing(
        tmp_path, key, sshd):
    """The lease falls back to the local lock; a deploy, whose launch record (the budget) and
    backoff live in the rule's tags, is not sent: a loop without a brake is worse than none."""
    from cloudstack_sim import Simulator

    with Simulator(job_seconds=0.05, untaggable=("LoadBalancer",)) as cloud:
        cloud.add_vm("web1", ip="127.0.0.1")
        cloud.add_vm("bystander", ip="127.0.1.200")
        sshd.set_output(HIGH)
        done = run_cli("-c", str(make_config(tmp_path, cloud, key, sshd.port)))
        assert done.returncode == 1
        assert "keeps no tags on load-balancer rules; relying on the local lock" in done.stdout
        assert "no VM is launched without its record: the cloud keeps no tags on the " \
               "load-balancer rule" in done.stderr
        assert not cloud.calls_of("deployVirtualMachine")


# --- what a quiet run costs -----------------------------------------------------------------

def test_quiet_run_costs_two_api_calls(tmp_path, cloud, key, sshd):
    sshd.set_output(MID)
    done = run_cli("-c", str(make_config(tmp_path, cloud, key, sshd.port)))
    assert done.returncode == 0, done.stderr
    assert sorted(c.command for c in cloud.calls) == ["listLoadBalancerRuleInstances",
                                                      "listVirtualMachines"]


def test_status_shows_the_backoff_and_the_lease(tmp_path, cloud, key, sshd):
    cloud.set_tag(cloud.lb_id, BACKOFF, "3 4102444800")
    cloud.set_tag(cloud.lb_id, LEASE, "other-host:9 4102444800")
    sshd.set_output(HIGH)
    done = run_cli("--status", "-c", str(make_config(tmp_path, cloud, key, sshd.port)))
    assert done.returncode == 0, done.stderr
    assert "backoff: 3 failed deploy(s) in a row" in done.stdout
    assert "lease: held by other-host:9" in done.stdout
    assert "held back by the failed-deploy backoff (3 failed in a row)" in done.stdout
    cloud.delete_tag(cloud.lb_id, BACKOFF)
    done = run_cli("--status", "-c", str(make_config(tmp_path, cloud, key, sshd.port)))
    assert "decision now: none: another run is acting (other-host:9 holds" in done.stdout
