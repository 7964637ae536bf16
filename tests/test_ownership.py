"""Whose VM it is (sshscale/ownership.py, pure) and how a pool is read from list answers:
proven ownership, another pool's VMs in a shared instance group, a person's VM, VMs an
earlier version deployed, and config identities that collide."""

from __future__ import annotations

import pytest

from idcf_api import Account
from sshscale.cli import main
from sshscale.facts import DRAIN, POOL, UNHEALTHY
from sshscale.model import Settings
from sshscale.observe import build_pool, vm_from_api
from sshscale.ownership import Owner, judge, name_stem, named_by, pool_key, vm_name
from tests.conftest import base_sections, write_config

LB, OTHER = "8d1e0000-0000-4000-8000-000000000001", "8d1e0000-0000-4000-8000-000000000002"
GROUP = f"ssh_scale-{LB}"
OURS, THEIRS = vm_name(LB, "a1b2c3"), vm_name(OTHER, "d4e5f6")
SETTINGS = Settings(
    source="test", account=Account("http://127.0.0.1:1/client/api", "k", "s"),
    hosts=("web1",), user="u", private_key_path="/k", pass_phrase="", launch={"zoneid": "z"},
    min_size=1, max_size=5, load_balancer=LB, threshold_out=3.0, threshold_in=1.0)


def test_vm_names_carry_the_pool_and_are_valid_host_names():
    name = vm_name(LB, "a1b2c3")
    assert name.startswith("ssh-scale-") and len(name) <= 63
    assert name == f"ssh-scale-{pool_key(LB)}-a1b2c3" and name.startswith(name_stem(LB))
    assert named_by(name.upper(), LB) and not named_by(name, OTHER) and not named_by(None, LB)
    assert pool_key(LB) != pool_key(OTHER) and pool_key(LB.upper()) == pool_key(LB)


@pytest.mark.parametrize("name, group, tags, in_lb, owner", [
    # deployed by this version for this pool: the name, or the tag, with the group
    (OURS, GROUP, {}, False, Owner.OURS),
    (OURS, GROUP, {POOL: LB}, False, Owner.OURS),
    ("i-2-7-VM", GROUP, {POOL: LB.upper()}, False, Owner.OURS),
    # another pool that names the same instance group (a copied config): never ours
    (THEIRS, GROUP, {POOL: OTHER}, False, Owner.DOUBTFUL),
    (THEIRS, GROUP, {POOL: OTHER}, True, Owner.DOUBTFUL),
    (OURS, GROUP, {POOL: OTHER}, False, Owner.DOUBTFUL),  # the tag contradicts the name
    (THEIRS, GROUP, {}, False, Owner.DOUBTFUL),  # its deploy did not live to tag it
    # a person's VM put into the group
    ("alice-test", GROUP, {}, False, Owner.DOUBTFUL),
    # an earlier version's VMs: members in the group (while the pool is upgrading)
    ("i-2-7-VM", GROUP, {}, True, Owner.LEGACY),
    # ... not a leftover outside the load balancer, whatever mark it has: --adopt it
    ("i-2-8-VM", GROUP, {DRAIN: "1764460800"}, False, Owner.DOUBTFUL),
    # another pool's VM with a mark of ours (its health count): its stem says whose
    (THEIRS, GROUP, {UNHEALTHY: "1"}, False, Owner.DOUBTFUL),
    (THEIRS, GROUP, {UNHEALTHY: "1"}, True, Owner.DOUBTFUL),
    # our name or tag outside the group: someone moved it; not ours to touch
    (OURS, "other-group", {}, False, Owner.DOUBTFUL),
    ("web1", None, {}, True, Owner.OTHER),
    ("web9", "some-group", {POOL: OTHER}, False, Owner.OTHER),
])
def test_judge(name, group, tags, in_lb, owner):
    verdict = judge(name, group, tags, in_lb, LB, GROUP)
    assert verdict.owner is owner
    assert verdict.ours is (owner in (Owner.OURS, Owner.LEGACY))
    assert bool(verdict.why) is (owner is Owner.DOUBTFUL)


def test_members_an_earlier_version_deployed_are_recognised_only_while_upgrading():
    """Once any VM carries the pool's name or tag, an unnamed, untagged member of the group is
    someone's (a person put it there): reported, to hand over with --adopt."""
    assert judge("i-2-7-VM", GROUP, {}, True, LB, GROUP, upgrading=True).owner is Owner.LEGACY
    later = judge("alice-db", GROUP, {}, True, LB, GROUP, upgrading=False)
    assert later.owner is Owner.DOUBTFUL and "--adopt" in later.why


def api_vm(name: str, group: str = GROUP, tags: dict[str, str] | None = None,
           vm_id: str = "") -> dict:
    return {"id": vm_id or name, "name": name, "state": "Running", "group": group,
            "nic": [{"ipaddress": "127.0.1.5"}],
            "tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]}


def test_build_pool_keeps_ours_and_doubtful_and_drops_the_rest():
    members = [{"loadbalancerruleinstance": api_vm("web1", group=""),
                "lbvmipaddresses": ["127.0.0.1"]},
               {"loadbalancerruleinstance": api_vm("i-2-7-VM"), "lbvmipaddresses": ["10.0.0.7"]}]
    listed = [api_vm(OURS), api_vm(THEIRS, tags={POOL: OTHER}), api_vm("bystander", group="x")]
    pool = build_pool(members, listed, SETTINGS, ["web1"])
    by_name = {v.name: v for v in pool.vms}
    assert set(by_name) == {"web1", "i-2-7-VM", OURS, THEIRS}
    assert by_name[OURS].managed and not by_name[OURS].legacy
    # a pool with a VM of its own is upgraded already: an unnamed, untagged member is someone's
    assert not by_name["i-2-7-VM"].managed and "neither named" in by_name["i-2-7-VM"].doubt
    assert not by_name[THEIRS].managed and "another pool's VM" in by_name[THEIRS].doubt
    assert by_name["web1"].monitored and not by_name["web1"].managed
    assert pool.committed == 3  # web1, i-2-7-VM (members) + OURS (outside, ours)


def test_build_pool_upgrades_only_a_pool_without_proof_of_its_own():
    """Members an earlier version deployed are recognised only while the rule does not say the
    upgrade happened and no VM carries the pool's name or tag."""
    member = {"loadbalancerruleinstance": api_vm("i-2-7-VM"), "lbvmipaddresses": ["10.0.0.7"]}
    alone = build_pool([member], [], SETTINGS, [], upgraded=False)
    assert alone.vms[0].legacy and alone.vms[0].managed
    assert not build_pool([member], [], SETTINGS, []).vms[0].managed  # upgraded already
    with_ours = build_pool([member], [api_vm(OURS, tags={POOL: LB})], SETTINGS, [],
                           upgraded=False)
    person = next(v for v in with_ours.vms if v.name == "i-2-7-VM")
    assert not person.managed and not person.legacy and "neither named nor tagged" in person.doubt


def test_the_monitored_vm_is_never_taken_as_an_earlier_versions():
    member = {"loadbalancerruleinstance": api_vm("web1"), "lbvmipaddresses": ["127.0.0.1"]}
    for names in (["WEB1"], ["127.0.0.1"]):  # by name (any case) or by the address reached
        vm = build_pool([member], [], SETTINGS, names, upgraded=False).vms[0]
        assert vm.monitored and not vm.legacy and not vm.managed


def test_a_deployed_vm_named_like_the_monitored_host_is_not_the_monitored_vm():
    vm = vm_from_api(api_vm(OURS), SETTINGS, in_lb=True, monitored_names=["web1"])
    assert vm.managed and not vm.monitored


def test_config_refuses_a_displayname_that_is_the_monitored_host(sim, tmp_path, key, capsys):
    sections = base_sections(sim, key, host="web1")
    sections["launch_config"]["displayname"] = "WEB1"
    assert main(["-c", str(write_config(tmp_path / "rc", sections)), "--status"]) == 2
    err = capsys.readouterr().err
    assert "[launch_config] displayname 'WEB1' is [monitoring] host too" in err
    assert not sim.calls


def test_config_refuses_a_displayname_that_is_the_monitored_hosts_hostname(sim, tmp_path, key,
                                                                            home, capsys):
    (home / ".ssh" / "config").write_text("Host mon\n    HostName web1.example.com\n")
    sections = base_sections(sim, key, host="mon")
    sections["launch_config"]["displayname"] = "web1.example.com"
    assert main(["-c", str(write_config(tmp_path / "rc", sections)), "--status"]) == 2
    assert "is [monitoring] host's ~/.ssh/config HostName too" in capsys.readouterr().err


@pytest.mark.parametrize("monitoring, message", [
    ({"min_reporting": "2"}, "[monitoring] min_reporting: 2 is more than the 1 host(s)"),
    ({"quorum": "0"}, "[monitoring] quorum: expected at least 1 (or 1%), got '0'"),
    ({"quorum": "0%"}, "[monitoring] quorum: expected at least 1 (or 1%), got '0%'"),
])
def test_config_refuses_guards_that_cannot_work(sim, tmp_path, key, capsys, monitoring,
                                                message):
    sections = base_sections(sim, key)
    sections["monitoring"].update(monitoring)
    assert main(["-c", str(write_config(tmp_path / "rc", sections)), "--status"]) == 2
    assert message in capsys.readouterr().err
    assert not sim.calls


@pytest.mark.parametrize("keys, message", [
    ({"account": "acme"}, "[launch_config] account: needs domainid too"),
    ({"projectid": "p1", "account": "acme", "domainid": "d"},
     "[launch_config] projectid: and account exclude each other"),
])
def test_config_refuses_a_broken_scope(sim, tmp_path, key, capsys, keys, message):
    sections = base_sections(sim, key)
    sections["launch_config"].update(keys)
    assert main(["-c", str(write_config(tmp_path / "rc", sections)), "--status"]) == 2
    assert message in capsys.readouterr().err
