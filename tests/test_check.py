"""--check, the read-only preflight, and the errors that name the config key to change: the
installed command against the simulator and the real sshd (one line per check, exit 0 or 1,
nothing changed), --dry-run's launch checks, a run refused with 431 naming the key, and the
findings' rules as tables."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from sshscale.measure import Target, forget_host_key
from sshscale.preflight import (
    FAIL,
    OK,
    RUN_COMMANDS,
    WARN,
    command_finding,
    lister,
    network_finding,
    rule_finding,
    template_finding,
    zone_finding,
)
from tests import sshd_support
from tests.configs import config_with
from tests.conftest import assert_no_secrets, run_cli
from tests.test_decide import BASE

HIGH, LOW = "4.20 3.10 2.00 3/200 999", "0.10 0.20 0.30 1/99 9"
TOPICS = ["config", "key", "api", "clock", "commands", "zone", "offering", "template", "network",
          "lb rule", "pool", "ssh"]


@pytest.fixture
def cloud(sim: Any) -> Any:
    sim.add_vm("web1", ip="127.0.0.1")
    return sim


def config(tmp_path: Path, cloud: Any, key: Path, sshd: Any, **changes: dict) -> Path:
    return config_with(tmp_path / "idcfrc", cloud, key, sshd.port, **changes)


def check(path: Path) -> tuple[int, list[tuple[str, str, str]], str]:
    """Run --check: the exit status, each line as (status, topic, text), and stderr."""
    done = run_cli("--check", "-c", str(path))
    assert_no_secrets(done.stdout, done.stderr)
    lines = [re.match(r"(\S+) +(lb rule|\S+) +(.*)", line).groups()  # type: ignore[union-attr]
             for line in done.stdout.splitlines()]
    return done.returncode, lines, done.stderr


def mutations(cloud: Any) -> list[str]:
    return [c.command for c in cloud.calls if not c.command.startswith(("list", "query"))]


def test_check_passes_a_good_config_and_changes_nothing(tmp_path, cloud, key, sshd, home):
    status, lines, err = check(config(tmp_path, cloud, key, sshd))
    assert (status, err) == (0, ""), lines
    assert [topic for _, topic, _ in lines] == TOPICS
    assert {state for state, _, _ in lines} == {OK}, lines
    found = {topic: text for _, topic, text in lines}
    assert found["zone"] == "[launch_config] zoneid: jp-east-t1v"
    assert found["lb rule"].startswith("[scalling] load_balancer: web (203.0.113.10:80 -> 80)")
    assert found["commands"] == (f"this account may call the {len(RUN_COMMANDS)} commands a run "
                                 "uses (listApis)")
    assert found["ssh"] == (f"127.0.0.1:{sshd.port} as {sshd_support.current_user()} with "
                            "~/.ssh/id_ed25519: load 0.00 0.00 0.00; host key new: the first "
                            "run records it in ~/.ssh/known_hosts")
    assert mutations(cloud) == [] and sshd.exec_count() == 1
    assert not (home / ".ssh" / "known_hosts").exists() and not (home / ".cache").exists()


@pytest.mark.parametrize("section, key_name, value, topic, expected", [
    ("launch_config", "templateid", "1234", "template",
     "[launch_config] templateid: no such template '1234' for this account ({lister} "
     "listTemplates --templatefilter=executable -t id,name,zonename)"),
    # a name where the id goes
    ("launch_config", "zoneid", "jp-east-t1v", "zone",
     "[launch_config] zoneid: no such zone 'jp-east-t1v' for this account; that is the name of "
     "zone {zone}: give its id ({lister} listZones -t id,name)"),
    ("launch_config", "serviceofferingid", "S2", "offering",
     "[launch_config] serviceofferingid: no such service offering 'S2' for this account; that "
     "is the name of service offering {offering}: give its id ({lister} listServiceOfferings "
     "-t id,name,displaytext)"),
    ("launch_config", "networkids", "net-1", "network",
     "[launch_config] networkids: no such network 'net-1' for this account ({lister} "
     "listNetworks -t id,name,zonename)"),
    ("scalling", "load_balancer", "9f0c", "lb rule",
     "[scalling] load_balancer: no such load-balancer rule '9f0c' for this account ({lister} "
     "listLoadBalancerRules -t id,name,publicip,zonename)"),
])
def test_check_names_a_wrong_id_and_the_command_that_lists_the_right_ones(
        tmp_path, cloud, key, sshd, section, key_name, value, topic, expected):
    path = config(tmp_path, cloud, key, sshd, **{section: {key_name: value}})
    status, lines, err = check(path)
    assert status == 1
    failed = [(t, text) for state, t, text in lines if state == FAIL]
    assert failed == [(topic, expected.format(lister=f"idcf-compute-api --config {path}",
                                              zone=cloud.zone_id, offering=cloud.offering_id))]
    assert err == f"ssh_scale.py: error: 1 of {len(lines)} checks failed: {topic}\n"
    assert mutations(cloud) == []


def test_check_lists_the_commands_the_role_lacks(tmp_path, cloud, key, sshd):
    cloud.deny("createTags", "deleteTags")
    status, lines, _ = check(config(tmp_path, cloud, key, sshd))
    assert status == 1
    assert (FAIL, "commands", "this account may not call createTags, deleteTags, which runs use "
                              "(its role lacks them: ask the cloud's administrator)") in lines


def test_check_on_a_cloud_without_list_apis_warns_and_goes_on(tmp_path, cloud, key, sshd):
    cloud.deny("listApis")
    status, lines, err = check(config(tmp_path, cloud, key, sshd))
    assert (status, err) == (0, "")
    (commands,) = [line for line in lines if line[1] == "commands"]
    assert commands[0] == WARN and commands[2].startswith(
        "this cloud does not list the commands this account may call (listApis: HTTP 401")
    assert commands[2].endswith("): not checked")


@pytest.mark.parametrize("command, topic, key_name", [
    ("listServiceOfferings", "offering", "[launch_config] serviceofferingid"),
    ("listTemplates", "template", "[launch_config] templateid"),
    ("listNetworks", "network", "[launch_config] networkids"),
])
def test_check_and_dry_run_warn_for_a_list_the_role_lacks_that_no_run_sends(
        tmp_path, cloud, key, sshd, command, topic, key_name):
    # was: FAIL "listNetworks: HTTP 401 ... check [account] api_key and secret_key", and a dry
    # run exited 1 blaming the keys, while a live run (which never sends it) worked
    cloud.deny(command)
    sshd.set_output(HIGH)
    path = config(tmp_path, cloud, key, sshd)
    status, lines, err = check(path)
    assert (status, err) == (0, ""), lines
    expected = (f"this account may not call {command} (its role lacks it; no run sends it): "
                f"{key_name} not checked")
    assert [(state, text) for state, t, text in lines if t == topic] == [(WARN, expected)]
    assert {state for state, _, _ in lines} == {OK, WARN}, lines
    done = run_cli("-n", "-c", str(path))
    assert (done.returncode, done.stderr) == (0, ""), done.stdout
    assert "would scale out" in done.stdout and expected in done.stdout
    assert "api_key" not in done.stdout
    assert mutations(cloud) == []


def test_check_fails_files_readable_by_others(tmp_path, cloud, key, sshd):
    path = config(tmp_path, cloud, key, sshd)
    path.chmod(0o644)
    key.chmod(0o640)
    status, lines, _ = check(path)
    assert status == 1
    assert (FAIL, "config", f"{path} is readable by group or others; it holds secrets: chmod "
                            f"600 {path}") in lines
    assert (FAIL, "key", "~/.ssh/id_ed25519 is readable by group or others (OpenSSH refuses "
                         "such a key): chmod 600 ~/.ssh/id_ed25519") in lines


def test_check_warns_about_config_near_misses(tmp_path, cloud, key, sshd):
    path = config(tmp_path, cloud, key, sshd, notfy={"webhook": "http://127.0.0.1:9/"})
    status, lines, _ = check(path)
    assert status == 0
    assert (WARN, "config", f"{path}: [notfy] is not a section ssh_scale.py reads, so it is "
                            "ignored (did you mean [notify]?)") in lines


def test_check_refuses_a_changed_host_key_with_the_line_that_forgets_it(tmp_path, cloud, key,
                                                                        sshd, home):
    known = home / ".ssh" / "known_hosts"
    recorded = sshd.known_hosts_line("127.0.0.1") + "\n"
    known.write_text(recorded)
    path = config(tmp_path, cloud, key, sshd)
    assert check(path)[1][-1][2].endswith("host key known (~/.ssh/known_hosts)")
    sshd.regenerate_host_key()
    status, lines, _ = check(path)
    assert status == 1
    state, topic, text = lines[-1]
    assert (state, topic) == (FAIL, "ssh") and "host key changed" in text
    assert text.endswith(f"remove the old key: ssh-keygen -R '[127.0.0.1]:{sshd.port}')")
    assert known.read_text() == recorded  # a check records and removes nothing


def test_check_measures_the_members_with_monitor_members(tmp_path, cloud, key, sshd):
    cloud.add_vm("m1", ip="127.0.1.50", group=f"ssh_scale-{cloud.lb_id}")
    path = config(tmp_path, cloud, key, sshd,
                  monitoring={"host": "", "monitor_members": "yes"})
    status, lines, _ = check(path)
    ssh = [(state, text.split(":")[0]) for state, topic, text in lines if topic == "ssh"]
    assert status == 1 and ssh == [(OK, "127.0.0.1"), (FAIL, "127.0.1.50")], lines


def test_check_tells_a_clock_off_the_clouds(tmp_path, cloud, key, sshd):
    cloud.skew_clock(120)
    status, lines, _ = check(config(tmp_path, cloud, key, sshd))
    assert status == 0
    (clock,) = [line for line in lines if line[1] == "clock"]
    found = re.fullmatch(r"this machine's clock is (\d+) s behind the cloud's: runs correct for "
                         r"it, but set the clock \(NTP\)", clock[2])
    # the Date header has whole seconds, and a loaded machine takes a moment to read it
    assert clock[0] == WARN and found and 115 <= int(found.group(1)) <= 125, clock


def test_check_with_wrong_keys_fails_the_api_and_skips_the_cloud(tmp_path, cloud, key, sshd):
    path = config(tmp_path, cloud, key, sshd, account={"secret_key": "not-the-secret"})
    status, lines, err = check(path)
    assert status == 1
    assert [(state, topic) for state, topic, _ in lines] == [
        (OK, "config"), (OK, "key"), (FAIL, "api"), (OK, "clock"), ("skip", "cloud"),
        (OK, "ssh")]
    assert "listZones: HTTP 401" in lines[2][2]
    assert "not-the-secret" not in "".join(map(str, lines)) + err


@pytest.mark.parametrize("scope", [{"projectid": "p1"}, {"account": "web", "domainid": "d1"}])
@pytest.mark.parametrize("options", [("--check",), ("-n",)])
def test_check_and_dry_run_list_in_the_launch_configs_scope(tmp_path, cloud, key, sshd, scope,
                                                            options):
    # was: listTemplates, listLoadBalancerRules and listNetworks without the scope (listall):
    # the checks judged the caller's own resources, not the project's a run reads
    sshd.set_output(HIGH)
    path = config(tmp_path, cloud, key, sshd, launch_config=scope)
    run_cli(*options, "-c", str(path))
    for command in ("listTemplates", "listLoadBalancerRules", "listNetworks"):
        calls = cloud.calls_of(command)
        assert calls and all(scope.items() <= call.params.items() for call in calls), command
    assert mutations(cloud) == []


# --- the dry run and the runs name the key ---------------------------------------------------

def test_dry_run_checks_the_launch_ids(tmp_path, cloud, key, sshd):
    # A wrong templateid passed a dry run ("would scale out", exit 0); the first live run
    # under load then failed with the raw 431.
    sshd.set_output(HIGH)
    path = config(tmp_path, cloud, key, sshd, launch_config={"templateid": "1234"})
    done = run_cli("-n", "-c", str(path))
    assert done.returncode == 1
    assert "would scale out" in done.stdout
    assert done.stderr == (f"ssh_scale.py: error: {path}: [launch_config] templateid: no such "
                           "template '1234' for this account (idcf-compute-api --config "
                           f"{path} listTemplates --templatefilter=executable -t "
                           "id,name,zonename)\n")
    assert mutations(cloud) == []


@pytest.mark.parametrize("changes, output, expected, refused", [
    ({"launch_config": {"zoneid": "7e3f"}}, LOW,
     "[launch_config] zoneid: no such zone '7e3f' for this account", "listVirtualMachines"),
    ({"scalling": {"load_balancer": "9f0c"}}, LOW,
     "[scalling] load_balancer: no such load-balancer rule '9f0c' for this account",
     "listLoadBalancerRuleInstances"),
    ({"launch_config": {"networkids": "net-1"}}, HIGH,
     "[launch_config] networkids: no such network 'net-1' for this account",
     "deployVirtualMachine"),
])
def test_a_run_refused_for_a_parameter_names_the_config_key(tmp_path, cloud, key, sshd, changes,
                                                            output, expected, refused):
    # was: "listVirtualMachines: HTTP 431, ... Invalid parameter zoneid value=7e3f due to ..."
    sshd.set_output(output)
    path = config(tmp_path, cloud, key, sshd, **changes)
    done = run_cli("-c", str(path))
    assert done.returncode == 1
    assert done.stderr.startswith(f"ssh_scale.py: error: {path}: {expected} (")
    assert done.stderr.endswith(f") ({refused} answered HTTP 431)\n")
    assert "Invalid parameter" not in done.stderr and done.stderr.count("\n") == 1
    assert [vm["name"] for vm in cloud.vms()] == ["web1"]


# --- the rules, as tables ---------------------------------------------------------------------

ZONES = [{"id": "z1", "name": "east", "allocationstate": "Enabled"},
         {"id": "z2", "name": "west", "allocationstate": "Disabled"}]
LAUNCH = {"zoneid": "z1", "serviceofferingid": "o1", "templateid": "t1"}


def settings(**launch: str) -> Any:
    return replace(BASE, launch={**LAUNCH, **launch}, load_balancer="r1")


def test_zone_finding():
    assert zone_finding(ZONES, settings(), "L").status == OK
    disabled = zone_finding(ZONES, settings(zoneid="z2"), "L")
    assert (disabled.status, disabled.text) == (
        FAIL, "[launch_config] zoneid: zone west is Disabled: nothing can be deployed there")


@pytest.mark.parametrize("templates, status, text", [
    ([{"id": "t1", "name": "web", "zoneid": "z1", "isready": True}], OK,
     "[launch_config] templateid: web"),
    ([{"id": "t1", "name": "web", "zoneid": "z2", "zonename": "west", "isready": True}], FAIL,
     "[launch_config] templateid: template web is not in zone east (it is in west; L "
     "listTemplates --templatefilter=executable -t id,name,zonename)"),
    ([{"id": "t1", "name": "web", "zoneid": "z1", "isready": False, "status": "Downloading"}],
     FAIL, "[launch_config] templateid: template web is not ready in zone east (Downloading)"),
])
def test_template_finding(templates, status, text):
    found = template_finding(templates, settings(), ZONES, "L")
    assert (found.status, found.text) == (status, text)


RULE = {"id": "r1", "name": "web", "publicip": "203.0.113.7", "publicport": "80",
        "privateport": "8080", "state": "Active", "zoneid": "z1", "zonename": "east",
        "networkid": "n1"}


@pytest.mark.parametrize("rule, status, text", [
    (RULE, OK, "[scalling] load_balancer: web (203.0.113.7:80 -> 8080), Active, zone east"),
    ({**RULE, "state": "Revoke"}, FAIL,
     "[scalling] load_balancer: rule web is being deleted (state Revoke)"),
    ({**RULE, "zoneid": "z2", "zonename": "west"}, FAIL,
     "[scalling] load_balancer: rule web is in zone west, but [launch_config] zoneid is east: "
     "new VMs could not join it"),
])
def test_rule_finding(rule, status, text):
    found = rule_finding([rule], settings(), ZONES, "L")
    assert (found.status, found.text) == (status, text)


NETWORKS = [{"id": "n1", "name": "web-net", "zoneid": "z1", "zonename": "east"},
            {"id": "n2", "name": "db-net", "zoneid": "z1", "zonename": "east"},
            {"id": "n3", "name": "far-net", "zoneid": "z2", "zonename": "west"}]


@pytest.mark.parametrize("networks, networkids, status, text", [
    (NETWORKS[:1], None, OK, "[launch_config] networkids: not set (the zone's network web-net)"),
    (NETWORKS, None, WARN, "[launch_config] networkids: not set, and this account has 2 "
                           "networks in the zone: a deploy may fail or pick another one than the "
                           "load balancer's; set networkids = n1 (L listNetworks -t "
                           "id,name,zonename)"),
    (NETWORKS, "n1,n2", OK, "[launch_config] networkids: web-net, db-net"),
    (NETWORKS, "n2", FAIL, "[launch_config] networkids: the load balancer's network web-net (n1) "
                           "is not among them: new VMs could not join the rule"),
    (NETWORKS, "n1,n3", FAIL, "[launch_config] networkids: network far-net is in zone west, not "
                              "in [launch_config] zoneid's"),
])
def test_network_finding(networks, networkids, status, text):
    launch = {"networkids": networkids} if networkids else {}
    found = network_finding(networks, RULE, settings(**launch), "L")
    assert (found.status, found.text) == (status, text)


def test_command_finding_lists_what_is_missing():
    assert command_finding(list(RUN_COMMANDS) + ["listZones"]).status == OK
    found = command_finding([c for c in RUN_COMMANDS if c != "deleteTags"])
    assert found.status == FAIL and found.text.startswith("this account may not call deleteTags,")


def test_lister_names_the_config_unless_idcf_compute_api_reads_it_anyway(tmp_path, home,
                                                                         monkeypatch):
    (home / ".idcfrc").write_text("")
    other = tmp_path / "web.idcfrc"
    assert lister(str(home / ".idcfrc")) == "idcf-compute-api"
    assert lister(str(other)) == f"idcf-compute-api --config {other}"
    monkeypatch.setenv("IDCFRC", str(other))
    assert lister(str(other)) == "idcf-compute-api"


@pytest.mark.parametrize("hostname, port, known, line", [
    ("10.0.0.5", 22, "~/.ssh/known_hosts", "ssh-keygen -R 10.0.0.5"),
    ("10.0.0.5", 2222, "~/.ssh/known_hosts", "ssh-keygen -R '[10.0.0.5]:2222'"),
    ("web1", 22, "/etc/ssh/ssh_known_hosts", "ssh-keygen -f /etc/ssh/ssh_known_hosts -R web1"),
])
def test_forget_host_key_line(home, hostname, port, known, line):
    target = Target("label", hostname, port, "u", "/k", str(Path(known).expanduser()))
    assert forget_host_key(target) == line

