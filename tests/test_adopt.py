"""`ssh_scale.py --adopt VM...`: handing the 2013 tool's VMs over to the pool. The simulator's
updateVirtualMachine (checked with the independent `cs` client), then the command against the
simulator: what it refuses without changing anything, what it changes and in which order,
what a failed or lost call leaves (read back from the cloud), and what the next real runs
(the real sshd) do with an adopted VM."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cs
import pytest

from cloudstack_sim import Fault, Simulator
from sshscale.cli import main
from sshscale.facts import POOL
from tests.conftest import base_sections, run_cli, write_config

LOW, MID = "0.10 0.20 0.30 1/99 9", "2.00 2.00 2.00 1/200 999"
UNKNOWN = "0d5a3e55-0000-4000-8000-000000000000"
MUTATIONS = ("createTags", "deleteTags", "updateVirtualMachine", "assignToLoadBalancerRule",
             "removeFromLoadBalancerRule", "deployVirtualMachine", "destroyVirtualMachine")


def group(cloud: Any) -> str:
    return f"ssh_scale-{cloud.lb_id}"


def vm_named(cloud: Any, name: str) -> dict:
    return next(vm for vm in cloud.vms() if vm["name"] == name)


def changes(cloud: Any) -> list[str]:
    """The calls that change the pool's VMs (the lease's tag jobs on the rule left out)."""
    return [c.command for c in cloud.calls if c.command in MUTATIONS
            and c.params.get("resourcetype") != "LoadBalancer"]


# --- the simulator's updateVirtualMachine ----------------------------------------------------

def test_simulator_update_vm_moves_it_into_a_group_synchronously(sim):
    web1 = sim.add_vm("web1", group="old")
    client = cs.CloudStack(endpoint=sim.url, key=sim.api_key, secret=sim.secret_key)
    answer = client.updateVirtualMachine(id=web1["id"], group="ssh_scale-x")
    assert set(answer) == {"virtualmachine"}
    assert answer["virtualmachine"]["group"] == "ssh_scale-x"
    listed = vm_named(sim, "web1")
    assert listed["group"] == "ssh_scale-x" and listed["groupid"] != web1["groupid"]
    deployed = client.deployVirtualMachine(zoneid=sim.zone_id, group="ssh_scale-x",
                                           serviceofferingid=sim.offering_id,
                                           templateid=sim.template_id, fetch_result=True)
    assert deployed["virtualmachine"]["groupid"] == listed["groupid"]  # one group, one id
    renamed = client.updateVirtualMachine(id=web1["id"], displayname="web one")
    assert renamed["virtualmachine"]["displayname"] == "web one"
    assert renamed["virtualmachine"]["group"] == "ssh_scale-x"


@pytest.mark.parametrize("case, text", [
    ("no id", "due to missing parameter id"),
    ("unknown id", "Invalid parameter id value="),
    ("Error", "is not in the right state"),
])
def test_simulator_update_vm_refusals_are_431(sim, case, text):
    vm = sim.add_vm("web1", state="Error" if case == "Error" else "Running")
    params = {"no id": {"group": "g"}, "unknown id": {"id": UNKNOWN, "group": "g"},
              "Error": {"id": vm["id"], "group": "g"}}[case]
    client = cs.CloudStack(endpoint=sim.url, key=sim.api_key, secret=sim.secret_key)
    with pytest.raises(cs.CloudStackApiException) as failure:
        client.updateVirtualMachine(**params)
    assert failure.value.error["errorcode"] == 431 and text in failure.value.error["errortext"]
    assert "group" not in vm_named(sim, "web1")


def test_simulator_lists_the_rules_a_vm_is_assigned_to(sim):
    api = sim.add_lb_rule("api")
    both = sim.add_vm("both")
    sim.add_vm("api1", lb_id=api)
    client = cs.CloudStack(endpoint=sim.url, key=sim.api_key, secret=sim.secret_key)
    client.assignToLoadBalancerRule(id=api, virtualmachineids=both["id"], fetch_result=True)
    listed = client.listLoadBalancerRules(virtualmachineid=both["id"])["loadbalancerrule"]
    assert sorted(rule["name"] for rule in listed) == ["api", "web"]
    alone = client.listLoadBalancerRules(virtualmachineid=vm_named(sim, "api1")["id"])
    assert [rule["id"] for rule in alone["loadbalancerrule"]] == [api]


# --- the command ------------------------------------------------------------------------------

@pytest.fixture
def cloud(sim: Any) -> Any:
    """The 2013 starting point: web1 (monitored) and old2 behind the load balancer, old3
    outside it, none in an instance group; jobs of 0.05 s."""
    sim.add_vm("web1", ip="127.0.0.1")
    sim.add_vm("old2", ip="127.0.1.2")
    sim.add_vm("old3", ip="127.0.1.3", in_lb=False)
    return sim


def config(tmp_path: Path, cloud: Any, key: Path, port: Any = None, **scalling: str) -> Path:
    sections = base_sections(cloud, key, port=port)
    sections["scalling"].update({"max_size": "4", **scalling})
    sections["account"]["timeout"] = "2"
    return write_config(tmp_path / "web.idcfrc", sections)


def test_adopt_a_member_and_a_vm_outside_then_the_next_runs_manage_them(tmp_path, cloud, key,
                                                                       sshd):
    path = config(tmp_path, cloud, key, sshd.port)
    old2, old3 = vm_named(cloud, "old2"), vm_named(cloud, "old3")
    done = run_cli("-c", str(path), "--adopt", "old2", old3["id"])
    assert done.returncode == 0, done.stderr
    assert f"old2 ({old2['id']}) now belongs to this pool: a member of the load balancer, " \
        "managed from the next run on" in done.stdout
    assert "old3" in done.stdout and "added to the load balancer (the pool had 2 VMs, " \
        "max_size 4)" in done.stdout
    for vm in (old2, old3):
        assert cloud.tags(vm["id"]) == {POOL: cloud.lb_id}
        assert vm_named(cloud, vm["name"])["group"] == group(cloud)
    # the tag first, then the group, then (outside it) the load balancer: a half-done
    # adoption never leaves an owned-looking VM
    assert changes(cloud) == ["createTags", "updateVirtualMachine"] * 2 + [
        "assignToLoadBalancerRule"]
    assert cloud.tags(cloud.lb_id) == {}  # the lease was taken and given back
    assert {vm["name"] for vm in cloud.lb_members()} == {"web1", "old2", "old3"}
    cloud.settle()
    sshd.set_output(LOW)
    scaled = run_cli("-c", str(path))
    assert scaled.returncode == 0, scaled.stderr
    assert {vm["name"] for vm in cloud.lb_members()} == {"web1", "old2"}  # old3: the newest


def test_a_vm_adopted_alone_from_outside_the_load_balancer_is_the_pools_next_run(
        tmp_path, cloud, key, sshd):
    # No other member of the group is unnamed: the run lists the group only through the
    # load balancer's members, so a VM left outside it would never be seen.
    path = config(tmp_path, cloud, key, sshd.port)
    assert run_cli("-c", str(path), "--adopt", "old3").returncode == 0
    assert "old3" in {vm["name"] for vm in cloud.lb_members()}
    sshd.set_output(MID)
    status = run_cli("-c", str(path), "--status")
    assert status.returncode == 0 and "old3" in status.stdout
    assert "pool has 3 VMs" in status.stdout


def test_adopt_refuses_a_vm_serving_another_load_balancer_rule(tmp_path, cloud, key):
    api = cloud.add_lb_rule("api")
    cloud.add_vm("api1", lb_id=api)
    path = config(tmp_path, cloud, key)
    done = run_cli("-c", str(path), "--adopt", "api1")
    assert done.returncode == 2
    assert f"is a member of load-balancer rule api ({api})" in done.stderr
    assert changes(cloud) == [] and cloud.tags(vm_named(cloud, "api1")["id"]) == {}


def test_adopt_dry_run_and_an_adopted_vm_change_nothing(tmp_path, cloud, key, capsys):
    path = config(tmp_path, cloud, key)
    assert main(["-c", str(path), "--adopt", "OLD3", "-n"]) == 0
    assert "would adopt old3" in capsys.readouterr().out
    assert changes(cloud) == []
    assert main(["-c", str(path), "--adopt", "old3"]) == 0
    calls = len(cloud.calls)
    assert main(["-c", str(path), "--adopt", "old3"]) == 0
    assert "belongs to this pool already; nothing to do" in capsys.readouterr().out
    assert sorted(c.command for c in cloud.calls[calls:]) == [
        "listLoadBalancerRuleInstances", "listLoadBalancerRules", "listVirtualMachines"]


def refusal_cases() -> list:
    """(what to seed, the argument, the refusal's words)."""
    return [
        (None, "web1", "is the monitored VM ([monitoring] host)"),
        (None, "127.0.0.1", "no such VM in zone"),
        (None, "nosuch", "no such VM in zone"),
        ("twins", "twin", "2 VMs have this name"),
        ("foreign tag", "old2", f"carries {POOL}=other-lb: it belongs to the pool of load "
                                "balancer other-lb"),
        ("foreign group", "old2", "is in instance group ssh_scale-other-lb, another ssh-scale"),
        ("stopped", "old2", "is Stopped: the next run would destroy a Stopped VM"),
        ("starting", "old2", "is Starting: only a Running VM can be adopted"),
        ("full", "old3", "is not in the load balancer and the pool is full (4 VMs of max_size "
                         "4): the next run would destroy it"),
    ]


@pytest.mark.parametrize("seed, name, message", refusal_cases())
def test_adopt_refusals_exit_2_and_change_nothing(tmp_path, cloud, key, capsys, seed, name,
                                                  message):
    old2 = vm_named(cloud, "old2")
    if seed == "twins":
        cloud.add_vm("twin", in_lb=False)
        cloud.add_vm("twin", in_lb=False)
    elif seed == "foreign tag":
        cloud.set_tag(old2["id"], POOL, "other-lb")
    elif seed == "foreign group":
        cloud.add_vm("moved", group="ssh_scale-other-lb")
        old2 = vm_named(cloud, "moved")
        name = "moved"
    elif seed in ("stopped", "starting"):
        cloud.set_state(old2["id"], seed.capitalize())
    elif seed == "full":
        for number in (4, 5):
            cloud.add_vm(f"m{number}", group=group(cloud))
    path = config(tmp_path, cloud, key)
    assert main(["-c", str(path), "--adopt", name]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert changes(cloud) == [] and cloud.tags(cloud.lb_id) == {}


def test_adopt_refuses_the_monitored_vm_found_through_ssh_config(tmp_path, cloud, key, home,
                                                                capsys):
    (home / ".ssh" / "config").write_text("Host front\n  HostName 127.0.1.2\n")
    sections = base_sections(cloud, key, host="front")
    path = write_config(tmp_path / "web.idcfrc", sections)
    assert main(["-c", str(path), "--adopt", "old3", "old2"]) == 2
    err = capsys.readouterr().err
    assert "old2" in err and "is the monitored VM" in err and "nothing was changed" in err
    assert changes(cloud) == []  # old3 was fine, but nothing is adopted while one is refused


def test_a_failed_group_change_is_read_back_and_a_second_adopt_finishes(tmp_path, cloud, key,
                                                                       capsys):
    path = config(tmp_path, cloud, key)
    old2 = vm_named(cloud, "old2")
    cloud.inject(Fault("http_error", "updateVirtualMachine", status=530))
    assert main(["-c", str(path), "--adopt", "old2"]) == 1
    err = capsys.readouterr().err
    assert "updateVirtualMachine: HTTP 530" in err
    assert f"the VM now holds group (none), {POOL} {cloud.lb_id}, state Running" in err
    assert cloud.calls_of("listVirtualMachines")[-1].params["id"] == old2["id"]  # read back
    assert cloud.tags(cloud.lb_id) == {}  # the lease was given back
    assert main(["-c", str(path), "--adopt", "old2"]) == 0
    assert vm_named(cloud, "old2")["group"] == group(cloud)
    assert changes(cloud) == ["createTags", "updateVirtualMachine", "updateVirtualMachine"]


def test_a_call_whose_answer_is_lost_counts_when_the_cloud_shows_it_done(tmp_path, cloud, key,
                                                                         capsys):
    path = config(tmp_path, cloud, key)
    cloud.inject(Fault("slow_after", "updateVirtualMachine", delay=3))  # past timeout = 2
    assert main(["-c", str(path), "--adopt", "old2"]) == 0
    out = capsys.readouterr().out
    assert "no answer within 2 s; the cloud shows it done" in out
    assert "old2" in out and "now belongs to this pool" in out
    assert vm_named(cloud, "old2")["group"] == group(cloud)


def test_a_failed_tag_job_stops_before_the_group_changes(tmp_path, key, capsys):
    """On a cloud that keeps no tags on VMs: the tag job fails, the VM is read back, and its
    group is left alone."""
    with Simulator(job_seconds=0.05, untaggable=["UserVm"]) as cloud:
        cloud.add_vm("web1", ip="127.0.0.1")
        cloud.add_vm("old2", ip="127.0.1.2")
        path = config(tmp_path, cloud, key)
        assert main(["-c", str(path), "--adopt", "old2"]) == 1
        err = capsys.readouterr().err
        assert "doesn't support resource tags" in err
        assert f"the VM now holds group (none), {POOL} (none), state Running" in err
        assert changes(cloud) == ["createTags"] and "group" not in vm_named(cloud, "old2")
        assert cloud.tags(cloud.lb_id) == {}  # the lease was given back


def test_adopt_waits_for_no_one_while_another_run_holds_the_lease(tmp_path, cloud, key,
                                                                  capsys):
    cloud.set_tag(cloud.lb_id, "ssh-scale:lease", "other-host:7 4102444800")
    path = config(tmp_path, cloud, key)
    assert main(["-c", str(path), "--adopt", "old2"]) == 1
    err = capsys.readouterr().err
    assert "another run (other-host:7) holds the pool's lease" in err
    assert "nothing was changed: try again in a minute" in err
    assert changes(cloud) == []


@pytest.mark.parametrize("options, message", [
    (("--adopt", "old2", "--status"), "--adopt and --status do not go together"),
    (("--adopt", "old2", "--json"), "--adopt prints no --json object"),
    (("--adopt", "old2", "--replay", "x.csv"), "--replay and --adopt do not go together"),
])
def test_adopt_usage_errors(tmp_path, cloud, key, capsys, options, message):
    path = config(tmp_path, cloud, key)
    assert main(["-c", str(path), *options]) == 2
    assert message in capsys.readouterr().err


def test_a_vm_of_the_pools_group_gets_the_tag_only(tmp_path, cloud, key, capsys):
    """A 2013 config that set [launch_config] group: its VMs are in the group already."""
    grouped = cloud.add_vm("grouped", group=group(cloud), in_lb=False)
    path = config(tmp_path, cloud, key, max_size="3")
    assert main(["-c", str(path), "--adopt", "grouped"]) == 0
    assert "added to the load balancer" in capsys.readouterr().out
    assert changes(cloud) == ["createTags", "assignToLoadBalancerRule"]
    assert cloud.tags(grouped["id"]) == {POOL: cloud.lb_id}
    assert main(["-c", str(path), "--adopt", "old3"]) == 2  # grouped takes the last place
    assert "the pool is full (3 VMs of max_size 3)" in capsys.readouterr().err
