"""policy = target, live: the installed command against the simulator and the real sshd.

A target scale-out starts its deploys under the lock and the pool's lease, gives both back, and
then waits for the jobs and assigns the VMs; meanwhile the next runs count those VMs as booting
(they neither adopt them nor deploy them again, and may add more). Deploy jobs that hang until
the test releases them (Simulator.release_hung) make the window as long as a test needs."""

from __future__ import annotations

import logging
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from cloudstack_sim import Fault
from idcf_api import Client
from sshscale.act import Actor
from sshscale.config import load_settings
from sshscale.model import Deploy, History
from tests.conftest import run_cli
from tests.configs import labels
from tests.scenarios import (
    LOW,
    MID,
    add_managed,
    assert_consistent,
    campaign_cloud,
    group,
    kill_when,
    make_config,
    outputs,
    repair,
    start_run,
    wait_for,
)

LEASE, BACKOFF = "ssh-scale:lease", "ssh-scale:backoff"
LOADS = {n: f"{n:.2f} {n:.2f} {n:.2f} 3/200 999" for n in (4.0, 6.0, 9.0)}


@pytest.fixture
def cloud(sim: Any) -> Any:
    """web1 (monitored) and an unmanaged bystander serve; jobs of 0.3 s."""
    return campaign_cloud(sim)


def target_config(tmp_path: Path, cloud: Any, port: int, key: Path, **scaling: str) -> Path:
    """The campaign's config (1-4 VMs) with policy = target and only the 2013 keys; jobs may
    take 2 minutes (the hung ones wait for the test)."""
    return make_config(tmp_path, cloud, key, port,
                       scalling={"policy": "target", "job_timeout": "120", **scaling},
                       scalling_policy_out={"cooldown": None},
                       scalling_policy_in={"cooldown": None})


def finish(process: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def waiting_unlocked(cloud: Any, deploys: int) -> bool:
    """`deploys` deploy calls were made, the lease is given back, and a run polls a deploy
    job: it waits for its deploys without the lock."""
    jobs = {vm.get("jobid") for vm in cloud.vms() if vm.get("group") == group(cloud)} - {None}
    return (len(cloud.calls_of("deployVirtualMachine")) == deploys
            and LEASE not in cloud.tags(cloud.lb_id)
            and any(c.params.get("jobid") in jobs for c in cloud.calls_of("queryAsyncJobResult")))


def managed_names(cloud: Any) -> set[str]:
    return {vm["name"] for vm in cloud.vms() if vm.get("group") == group(cloud)}


def test_one_run_adds_several_vms_and_assigns_them_after_giving_back_the_lease(
        tmp_path, cloud, key, sshd):
    sshd.set_output(LOADS[9.0])  # demand 18 on 2 VMs: 6 wanted, max_size 4
    done = run_cli("-c", str(target_config(tmp_path, cloud, sshd.port, key)))
    text = outputs(done)
    assert done.returncode == 0, done.stderr
    assert ("scale out: demand 18.00 now, 18.00 in 240 s (steady; 1-min load 9.00) + 0.75 x "
            "spread 0.00: 4 VMs at target 3") in text
    assert "scale out        : +2" in text
    assert "waiting for 2 deploy(s) without the lock and the pool's lease" in text
    assert "now vm count     : 4" in text
    assert len(cloud.lb_members()) == 4 and len(cloud.calls_of("assignToLoadBalancerRule")) == 1
    # the lease was given back before the run waited for the deploys (and taken again for
    # the assign)
    commands = [c.command for c in cloud.calls]
    release = min(i for i, c in enumerate(cloud.calls) if c.command == "deleteTags"
                  and c.params.get("tags[0].key") == LEASE)
    assert commands.index("queryAsyncJobResult", commands.index("deployVirtualMachine")) > release
    assert LEASE not in cloud.tags(cloud.lb_id)
    assert_consistent(cloud)


def test_a_scale_out_that_takes_back_a_scale_in_marks_the_pool_noisy(tmp_path, cloud, key, sshd):
    """The mark goes with the scale-out's own record (the same tag calls) and the next runs
    read it: they keep the wider noise margins."""
    now = int(time.time())
    cloud.set_tag(cloud.lb_id, "ssh-scale:scale-out", f"{now - 3600} 150")
    cloud.set_tag(cloud.lb_id, "ssh-scale:scale-in", str(now - 720))
    sshd.set_output(LOADS[4.0])  # demand 8 on 2 VMs, 12 minutes after a scale-in: 3 wanted
    path = target_config(tmp_path, cloud, sshd.port, key)
    done = run_cli("-c", str(path))
    assert done.returncode == 0, done.stderr
    assert "3 VMs at target 3 (2 in service, 0 booting); the pool is noisy: it takes back the " \
           "scale-in of " in outputs(done)
    assert abs(int(cloud.tags(cloud.lb_id)["ssh-scale:noisy"]) - now) < 120
    marks = [c.params for c in cloud.calls_of("createTags")
             if "ssh-scale:noisy" in c.params.values()]
    assert len(marks) == 1 and "ssh-scale:scale-out" in marks[0].values()
    sshd.set_output("2.00 2.00 2.00 3/200 999")  # demand 6 on 3 VMs: nothing to do
    writes = len(cloud.calls_of("createTags")) + len(cloud.calls_of("deleteTags"))
    steady = run_cli("-c", str(path))
    assert steady.returncode == 0, steady.stderr
    assert "3 in service, 0 booting, noisy pool" in steady.stdout
    assert len(cloud.calls_of("createTags")) + len(cloud.calls_of("deleteTags")) == writes


def test_runs_during_a_boot_count_the_booting_vms_and_may_add_more(tmp_path, cloud, key, sshd):
    cloud.inject(Fault("job_hang", command="deployVirtualMachine", times=-1))
    sshd.set_output(LOADS[6.0])  # demand 12 on 2 VMs: 4 wanted
    path = target_config(tmp_path, cloud, sshd.port, key, max_size="5")
    first = start_run(path)
    wait_for(lambda: waiting_unlocked(cloud, 2), first)
    steady = run_cli("-c", str(path))  # the same monitor: the lock is free
    assert steady.returncode == 0, steady.stderr
    assert "decision         : none: demand 12.00 now" in steady.stdout
    assert "2 in service, 2 booting" in steady.stdout and "repair" not in steady.stdout
    assert len(cloud.calls_of("deployVirtualMachine")) == 2
    sshd.set_output(LOADS[9.0])  # demand 18: 6 wanted, max_size 5: one more
    second = start_run(path)
    wait_for(lambda: waiting_unlocked(cloud, 3), second)
    assert cloud.calls_of("assignToLoadBalancerRule") == []  # nobody adopted a booting VM
    assert cloud.release_hung() == 3
    done = [finish(first), finish(second)]
    assert [d.returncode for d in done] == [0, 0], [d.stderr for d in done]
    assert "5 VMs at target 3 (2 in service, 2 booting)" in done[1].stdout
    assert "scale out        : +1" in done[1].stdout
    assert "now vm count     : 5" in done[0].stdout + done[1].stdout
    assert len(cloud.lb_members()) == 5 and len(cloud.calls_of("assignToLoadBalancerRule")) == 2
    assert_consistent(cloud, max_size=5)


def test_a_run_killed_while_it_waits_without_the_lock_is_repaired(tmp_path, cloud, key, sshd):
    cloud.inject(Fault("job_hang", command="deployVirtualMachine", times=-1))
    sshd.set_output(LOADS[6.0])
    path = target_config(tmp_path, cloud, sshd.port, key)
    kill_when(path, lambda: waiting_unlocked(cloud, 2))
    assert LEASE not in cloud.tags(cloud.lb_id) and cloud.release_hung() == 2
    sshd.set_output(MID)
    texts = repair(path, cloud, runs=2)
    assert "are not in the load balancer; adopting them" in texts[0]  # both at once
    assert "repair" not in texts[1]
    assert not any("breaking" in text for text in texts)  # no lease was left behind
    assert len(cloud.lb_members()) == 4 and len(cloud.calls_of("deployVirtualMachine")) == 2
    assert_consistent(cloud)


def test_scale_in_removes_one_vm_per_run(tmp_path, cloud, key, sshd):
    for n in range(3):
        add_managed(cloud, f"m{n}", hours_ago=3 - n)
    sshd.set_output(LOW)
    path = target_config(tmp_path, cloud, sshd.port, key, max_size="6")
    destroyed = []
    for _ in range(4):
        done = run_cli("-c", str(path))
        assert done.returncode == 0, done.stderr
        destroyed.append(len(cloud.calls_of("destroyVirtualMachine")))
    assert destroyed == [1, 2, 3, 3]
    assert managed_names(cloud) == set()
    assert "no managed VM other than the monitored one may be removed" in done.stdout
    assert labels(cloud.lb_members()) == {"web1", "bystander"}


def test_quiet_target_run_costs_three_api_calls(tmp_path, cloud, key, sshd):
    sshd.set_output(MID)
    done = run_cli("-c", str(target_config(tmp_path, cloud, sshd.port, key)))
    assert done.returncode == 0, done.stderr
    assert "decision         : none: demand 4.00 now" in done.stdout
    assert sorted(c.command for c in cloud.calls) == [
        "listLoadBalancerRuleInstances", "listLoadBalancerRules", "listVirtualMachines"]
    assert sshd.exec_count() == 1


def test_a_failed_deploy_after_the_lease_is_reported_and_backs_off(tmp_path, cloud, key, sshd):
    cloud.inject(Fault("job_fail", command="deployVirtualMachine",
                       errortext="Insufficient capacity in zone"))
    sshd.set_output(LOADS[4.0])  # demand 8: 3 wanted, one more
    done = run_cli("-c", str(target_config(tmp_path, cloud, sshd.port, key)))
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "Insufficient capacity in zone" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    cloud.settle()
    assert managed_names(cloud) == set()  # the VM left in Error is destroyed
    tags = cloud.tags(cloud.lb_id)
    assert tags[f"{BACKOFF}:1"].split()[0] == "1" and LEASE not in tags


def test_min_size_is_filled_when_no_host_answers(tmp_path, cloud, key, sshd):
    path = target_config(tmp_path, cloud, 1, key, min_size="3")  # port 1: refused
    done = run_cli("-c", str(path))
    assert done.returncode == 1 and "connection refused" in done.stderr
    assert "below min_size 3" in done.stdout and "now vm count     : 3" in done.stdout
    assert len(cloud.lb_members()) == 3


@pytest.mark.parametrize("adopted, assigns", [((0,), 2), ((0, 1), 1)])
def test_assign_counts_a_vm_another_run_adopted(tmp_path, cloud, key, caplog, adopted, assigns):
    settings = load_settings(str(target_config(tmp_path, cloud, 1, key)))
    client = Client(settings.account)
    deploys = []
    for _ in range(2):
        answer = client.call("deployVirtualMachine", group=settings.group, **settings.launch)
        deploys.append(Deploy(str(answer["id"]), str(answer["jobid"])))
    cloud.settle()
    for index in adopted:  # as a repair of another run would, between the job and the assign
        client.wait(client.call("assignToLoadBalancerRule", id=cloud.lb_id,
                                virtualmachineids=deploys[index].vm_id)["jobid"])
    actor = Actor(client, settings, History(), lambda: datetime.now(timezone.utc))
    with caplog.at_level(logging.INFO, logger="ssh_scale"):  # whatever an earlier main() set
        assert actor.finish_deploys(deploys, None) == "pool has 4 VMs"
    assert f"{len(adopted)} of them already in the load balancer" in caplog.text
    assert len(cloud.lb_members()) == 4
    assert len(cloud.calls_of("assignToLoadBalancerRule")) - len(adopted) == assigns
