"""Never act on a wrong belief, end to end (the installed command, the simulator in both server
modes, the real sshd): whose VM it is (another pool sharing the instance group, a person's VM,
an earlier version's VMs), the list calls' scope, members that do not answer, and VMs stuck in
a transitional state."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from cloudstack_sim import Fault, Simulator
from sshscale.facts import POOL, STUCK
from sshscale.ownership import vm_name
from tests import sshd_support
from tests.configs import add_bystanders, add_owned, label, labels
from tests.conftest import run_cli
from tests.scenarios import HIGH, LOW, MID, campaign_cloud, group, make_config, outputs

OLD = datetime.now(timezone.utc) - timedelta(hours=2)


@pytest.fixture
def cloud(any_sim: Any) -> Any:
    return campaign_cloud(any_sim)


def run(path: Path, *args: str) -> str:
    done = run_cli("-c", str(path), *args)
    assert done.returncode == 0, done.stdout + done.stderr
    return outputs(done)


def mutations(cloud: Any, vm_id: str) -> list[str]:
    """The calls that changed the VM (or its tags)."""
    return [c.command for c in cloud.calls
            if vm_id in (c.params.get("id"), c.params.get("virtualmachineids"),
                         c.params.get("resourceids"))]


def test_another_pool_sharing_the_group_keeps_its_vms(tmp_path, cloud, key, sshd):
    """A copied config names the same instance group for pool B: pool A, full, neither
    destroys B's fresh VM (nor one B's deploy did not live to tag), nor adopts a person's
    VM put into the group; --status says why they are not A's."""
    pool_b = cloud.add_lb_rule("web-b")
    add_owned(cloud, "a1", created=OLD)
    add_owned(cloud, "a2", created=OLD)
    theirs = cloud.add_vm(vm_name(pool_b, "b1a2b3"), group=group(cloud), in_lb=False)
    cloud.set_tag(theirs["id"], POOL, pool_b)
    untagged = cloud.add_vm(vm_name(pool_b, "c4d5e6"), group=group(cloud), in_lb=False)
    persons = cloud.add_vm("alice-test", group=group(cloud), in_lb=False)
    unnamed = cloud.add_vm("i-legacy", group=group(cloud), created=OLD)  # A lists the group
    sshd.set_output(MID)
    path = make_config(tmp_path, cloud, key, sshd.port, scalling={"max_size": "5"})
    text = run(path)
    assert "repair" not in text
    for vm in (theirs, untagged, persons, unnamed):  # (the pool has VMs of its own: an
        assert mutations(cloud, vm["id"]) == []      # unnamed member is no earlier version's)
        assert vm["id"] in {v["id"] for v in cloud.vms()}
    status = run(path, "--status")
    assert "another pool's VM" in status and "neither named nor tagged" in status
    assert "alice-test" in status


def test_vms_of_an_earlier_version_are_recognised_once_and_scaled_in(tmp_path, cloud, key,
                                                                     sshd):
    """Upgrading: VMs the previous version deployed (instance group, load balancer, no tag)
    are the pool's, tagged once with one line; the pool keeps scaling them."""
    old = [cloud.add_vm(f"i-2-{n}-VM", group=group(cloud), created=OLD) for n in (7, 8)]
    sshd.set_output(MID)
    path = make_config(tmp_path, cloud, key, sshd.port)
    first = run(path)
    assert "2 VM(s) an earlier ssh-scale deployed recognised as this pool's" in first
    assert all(cloud.tags(vm["id"]).get(POOL) == cloud.lb_id for vm in old)
    assert "earlier ssh-scale" not in run(path)
    sshd.set_output(LOW)
    assert "scale in" in run(path)
    assert labels(cloud.lb_members()) == {"web1", "bystander", "i-2-7-VM"}


def test_the_pool_is_listed_narrowly_whatever_else_the_account_holds(tmp_path, key, sshd):
    """1,000-VM accounts page: the pool's VMs are listed by the pool's name stem (one page),
    not the whole zone, so an orphan cannot hide between pages."""
    with Simulator(job_seconds=0.05) as sim:
        sim.page_size = 20
        sim.add_vm("web1", ip="127.0.0.1")
        for n in range(60):
            sim.add_vm(f"other-{n}", group="someone-else", in_lb=False)
        orphan = add_owned(sim, "orphan", in_lb=False, created=OLD)
        sshd.set_output(MID)
        text = run(make_config(tmp_path, sim, key, sshd.port))
        assert f"managed VM {orphan['name']} (Running) is not in the load balancer" in text
        listing = sim.calls_of("listVirtualMachines")[0].params
        assert listing["name"] == orphan["name"][:-len("orphan")]
        assert "page" not in listing


QUIET_CALLS = {
    "threshold": ["listLoadBalancerRuleInstances", "listVirtualMachines"],
    "target": ["listLoadBalancerRuleInstances", "listLoadBalancerRules", "listVirtualMachines"],
}


@pytest.mark.parametrize("policy", sorted(QUIET_CALLS))
def test_a_quiet_run_costs_the_same_calls_in_a_busy_account(tmp_path, cloud, key, sshd, policy):
    """A quiet run's cost does not grow with the account (issue 17): with 1,000 VMs of other
    pools and people (other instance groups, other load-balancer rules) it makes the same
    calls as without them, none of them a further page."""
    add_owned(cloud, "m1", created=OLD)
    sshd.set_output(MID)
    unset = {"cooldown": None} if policy == "target" else {}
    path = make_config(tmp_path, cloud, key, sshd.port, scalling={"policy": policy},
                       scalling_policy_out=unset, scalling_policy_in=unset)

    def quiet_run_calls() -> list[Any]:
        before = len(cloud.calls)
        assert "decision         : none" in run(path)
        return cloud.calls[before:]

    alone = quiet_run_calls()
    add_bystanders(cloud, 1000)
    crowded = quiet_run_calls()
    assert len(cloud.vms()) == 1003
    for calls in (alone, crowded):
        assert sorted(c.command for c in calls) == QUIET_CALLS[policy]
        assert not any("page" in c.params for c in calls)


def test_list_calls_carry_the_project_the_pool_deploys_into(tmp_path, cloud, key, sshd):
    sshd.set_output(HIGH)
    path = make_config(tmp_path, cloud, key, sshd.port,
                       launch_config={"projectid": "7e360000-0000-4000-8000-00000000000f"})
    run_cli("-c", str(path))
    for command in ("listVirtualMachines", "listLoadBalancerRules", "deployVirtualMachine"):
        calls = cloud.calls_of(command)
        assert calls and all(c.params.get("projectid") for c in calls), command


ADDRESSES = ["127.0.4.1", "127.0.4.2", "127.0.4.3", "127.0.4.4"]


def test_silent_members_are_no_low_load(tmp_path, key):
    """3 of 4 members give no load (one so busy that its command times out, two answering
    garbage), the fourth answers 0.40: no scale-in (a pool in trouble keeps its capacity),
    and the line says how many answered."""
    sshd_support.require_sshd()
    with Simulator(job_seconds=0.05, ip_addresses=ADDRESSES + ["127.0.4.9"]) as sim, \
            sshd_support.OpenSSHServer(tmp_path / "sshd", addresses=ADDRESSES,
                                       authorized_keys=[key]) as servers:
        sim.add_vm("web1", ip=ADDRESSES[0], created=OLD)
        for n in (1, 2, 3):
            add_owned(sim, f"m{n}", ip=ADDRESSES[n], created=OLD)
        servers.set_output("0.40 0.40 0.40 1/100 42")
        servers.set_sleep(60, ADDRESSES[1])  # bounded by command_timeout
        for address in ADDRESSES[2:]:
            servers.set_output("Welcome to Ubuntu 22.04.3 LTS", address)
        path = make_config(tmp_path, sim, key, servers.port,
                           monitoring={"host": "", "monitor_members": "yes",
                                       "command_timeout": "8"})
        text = outputs(run_cli("-c", str(path)))
        assert "only 1 of 4 hosts answered (quorum 75%): not scaling in" in text
        assert len(sim.lb_members()) == 4 and not sim.calls_of("removeFromLoadBalancerRule")


def test_a_vm_stuck_starting_without_a_job_is_repaired_after_job_timeout(tmp_path, cloud, key,
                                                                        sshd):
    stuck = add_owned(cloud, "stuck", created=OLD)
    add_owned(cloud, "m2", created=OLD)
    cloud.set_state(stuck["id"], "Starting")
    sshd.set_output(MID)
    path = make_config(tmp_path, cloud, key, sshd.port)
    assert "repair" not in run(path)
    seen = cloud.tags(stuck["id"])[STUCK]
    assert abs(int(seen) - datetime.now(timezone.utc).timestamp()) < 120
    cloud.set_tag(stuck["id"], STUCK, str(int(seen) - 21))  # job_timeout is 20 s here
    text = run(path)
    assert f"repair: managed VM {stuck['name']} is Starting without a job for more than 20 s" \
        in text
    assert stuck["id"] not in {vm["id"] for vm in cloud.vms()}
    assert {label(vm["name"]) for vm in cloud.lb_members()} == {"web1", "bystander", "m2"}


# --- found by attacking the ownership rules ------------------------------------------------------

def test_a_persons_vm_put_into_the_group_and_the_load_balancer_is_not_taken(tmp_path, cloud,
                                                                            key, sshd):
    """After the upgrade (the pool has VMs of its own), an unnamed, untagged VM someone puts
    into the instance group and the load balancer is not the pool's: never tagged, never
    scaled in; --status says why."""
    add_owned(cloud, "m1", created=OLD)
    persons = cloud.add_vm("alice-db", group=group(cloud))
    sshd.set_output(LOW)
    path = make_config(tmp_path, cloud, key, sshd.port)
    text = run(path)
    assert "earlier ssh-scale" not in text and "alice-db" not in text.split("decision")[-1]
    assert mutations(cloud, persons["id"]) == []
    assert "neither named nor tagged by this pool" in run(path, "--status")


def test_the_monitored_vm_named_by_dns_is_never_taken_nor_scaled_in(tmp_path, any_sim, key,
                                                                    sshd):
    """[monitoring] host is a DNS name (localhost: 127.0.0.1, web1's address) and web1 sits in
    the pool's instance group and load balancer during the upgrade: it is the monitored VM,
    never one an earlier version deployed (never tagged, never scaled in), while the earlier
    version's other VM is recognised and scaled in."""
    web1 = any_sim.add_vm("web1", ip="127.0.0.1", group=group(any_sim), created=OLD)
    older = any_sim.add_vm("i-2-9-VM", group=group(any_sim), created=OLD)
    sshd.set_output(LOW)
    path = make_config(tmp_path, any_sim, key, sshd.port, monitoring={"host": "localhost"})
    text = run(path)
    assert "1 VM(s) an earlier ssh-scale deployed recognised" in text
    assert "scale in         : -1 (i-2-9-VM" in text
    assert mutations(any_sim, web1["id"]) == [] and any_sim.tags(web1["id"]) == {}
    assert [vm["name"] for vm in any_sim.lb_members()] == ["web1"]
    assert older["id"] not in {vm["id"] for vm in any_sim.vms()}


def test_a_lease_take_that_goes_unanswered_is_no_lease_to_act_on(tmp_path, cloud, key, sshd):
    """The lease's createTags gets no answer in time and is not there yet: the run acts on
    nothing (exit 1, one line); the lease that lands late is this run's, broken at once by the
    next run on this monitor, which then acts."""
    cloud.inject(Fault("slow", command="createTags", delay=6))
    sshd.set_output(HIGH)
    path = make_config(tmp_path, cloud, key, sshd.port)
    done = run_cli("-c", str(path))
    assert done.returncode == 1
    assert "taking the pool's lease went unanswered" in outputs(done)
    assert not cloud.calls_of("deployVirtualMachine")
    cloud.settle(timeout=30)
    assert "ssh-scale:lease" in cloud.tags(cloud.lb_id)  # it landed after the run ended
    text = run(path)
    assert "breaking the lease of" in text and "scale out" in text


def test_a_command_that_keeps_printing_is_bounded_by_command_timeout(tmp_path, cloud, key,
                                                                     sshd):
    sshd.set_drip(0.5)
    path = make_config(tmp_path, cloud, key, sshd.port, monitoring={"command_timeout": "2"})
    done = run_cli("-c", str(path), timeout=120)
    assert done.returncode == 1
    assert "the command did not finish within 2 s" in done.stderr
