"""Fleet rules, pure (fleet.py and the decisions they feed): protection, termination policy,
health verdicts and counts, replacement and refresh; and the validation of their config keys."""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Optional

import pytest

from sshscale import fleet
from sshscale.cli import main
from sshscale.config import load_settings
from sshscale.decide import decide
from sshscale.facts import PROTECT, REPLACE, UNHEALTHY
from sshscale.model import Action, Backoff, Check, History, HostLoad, Measurement, Pool, \
    Vm
from tests.conftest import base_sections, write_config
from tests.test_decide import BASE as DECIDE_BASE

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=timezone.utc)
BASE = replace(DECIDE_BASE,
               launch={"zoneid": "z", "templateid": "t2", "serviceofferingid": "o1"},
               health_check="ssh", monitor_members=True)
A = Action
FAIL, OK = Check(False, "127.0.1.9:22: unusable command output"), Check(True)


def vm(name: str, *, age_min: float = 60, managed: bool = True, monitored: bool = False,
       in_lb: bool = True, state: str = "Running", tags: Optional[dict[str, str]] = None,
       outdated: bool = False, check: Optional[Check] = None) -> Vm:
    return Vm(id=f"id-{name}", name=name, state=state, created=NOW - timedelta(minutes=age_min),
              ip=f"127.0.1.{sum(map(ord, name)) % 250 + 1}", in_lb=in_lb, managed=managed,
              monitored=monitored, tags=tuple((tags or {}).items()), outdated=outdated, check=check)


WEB1 = vm("web1", managed=False, monitored=True, age_min=1000)


def pool(*vms: Vm) -> Pool:
    return Pool((WEB1,) + vms)


def load(value: float) -> Measurement:
    return Measurement((HostLoad("web1", loads=(value, value, value)),))


def unhealthy(name: str, runs: int = 3, **kwargs) -> Vm:
    return vm(name, tags={UNHEALTHY: str(runs), **kwargs.pop("tags", {})}, check=FAIL, **kwargs)


# --- which member a scale-in removes --------------------------------------------------------

@pytest.mark.parametrize("policy, members, victim", [
    ("newest", (vm("old", age_min=90), vm("new", age_min=10)), "new"),
    ("oldest", (vm("old", age_min=90), vm("new", age_min=10)), "old"),
    ("outdated-first", (vm("old", age_min=90, outdated=True), vm("new", age_min=10)), "old"),
    ("outdated-first", (vm("a", age_min=90, outdated=True), vm("b", age_min=50, outdated=True),
                        vm("c", age_min=10)), "b"),
    ("outdated-first", (vm("old", age_min=90), vm("new", age_min=10)), "new"),
    # protected members are never chosen, whatever the policy
    ("newest", (vm("old", age_min=90), vm("new", age_min=10, tags={PROTECT: "true"})), "old"),
    ("oldest", (vm("old", age_min=90, tags={PROTECT: "TRUE"}), vm("new", age_min=10)), "new"),
    ("newest", (vm("old", age_min=90), vm("new", age_min=10, tags={PROTECT: "no"})), "new"),
])
def test_scale_in_victim_by_policy_and_protection(policy, members, victim):
    d = decide(load(0.1), pool(*members), replace(BASE, termination_policy=policy, min_size=1),
               NOW, History())
    assert d.action is A.SCALE_IN and d.vms[0].name == victim


def test_scale_in_refused_when_every_candidate_is_protected():
    d = decide(load(0.1), pool(vm("m1", tags={PROTECT: "true"})), replace(BASE, min_size=1),
               NOW, History())
    assert d.action is A.NONE and "(the others are protected)" in d.reason


def test_protected_leftovers_are_not_repaired_away():
    stopped = vm("m1", state="Stopped", tags={PROTECT: "true"})
    outside = vm("m2", in_lb=False, tags={PROTECT: "true"})
    d = decide(load(2.0), pool(vm("m3"), stopped, outside), BASE, NOW, History())
    assert d.action is A.NONE


# --- health: counts, verdicts, replacement ---------------------------------------------------

@pytest.mark.parametrize("tags, check, managed, expected", [
    ({}, FAIL, True, {"id-m1": 1}),
    ({UNHEALTHY: "1"}, FAIL, True, {"id-m1": 2}),
    ({UNHEALTHY: "3"}, FAIL, True, {}),           # stops at unhealthy_runs: nothing to write
    ({UNHEALTHY: "7"}, FAIL, True, {"id-m1": 3}),  # unhealthy_runs lowered since
    ({UNHEALTHY: "2"}, OK, True, {"id-m1": 0}),    # a success resets
    ({}, OK, True, {}),                            # a healthy member costs nothing
    ({UNHEALTHY: "junk"}, FAIL, True, {"id-m1": 1}),
    ({}, FAIL, False, {}),                         # unmanaged: never tagged
    ({UNHEALTHY: "2"}, None, True, {}),            # not checked this run
])
def test_count_changes(tags, check, managed, expected):
    p = pool(vm("m1", tags=tags, check=check, managed=managed))
    assert fleet.count_changes(p, BASE) == expected


def test_with_counts_rewrites_the_tag():
    p = pool(vm("m1", tags={UNHEALTHY: "1", "other": "x"}, check=FAIL), vm("m2", check=OK))
    counted = fleet.with_counts(p, {"id-m1": 2})
    assert counted.vms[1].tag(UNHEALTHY) == "2" and counted.vms[1].tag("other") == "x"
    assert fleet.with_counts(counted, {"id-m1": 0}).vms[1].tag(UNHEALTHY) is None


@pytest.mark.parametrize("members, settings, action, reason_part", [
    ((unhealthy("m1"), vm("m2", check=OK)), {}, A.REPLACE, "m1 failed its health check 3 run(s)"),
    ((unhealthy("m1", 2), vm("m2", check=OK)), {}, A.NONE, "between thresholds"),
    ((unhealthy("m1", 1), vm("m2", check=OK)), {"unhealthy_runs": 1}, A.REPLACE, "m1"),
    # the oldest unhealthy member first
    ((unhealthy("m1", age_min=10), unhealthy("m2", age_min=50), vm("m3", check=OK)),
     {}, A.REPLACE, "m2 failed"),
    # more failing than max_unhealthy: the network is the likelier fault
    ((unhealthy("m1"), unhealthy("m2")), {}, A.NONE, "between thresholds"),
    ((unhealthy("m1"), unhealthy("m2")), {"max_unhealthy": "2"}, A.REPLACE, "failed"),
    ((unhealthy("m1"), unhealthy("m2")), {"max_unhealthy": "100%"}, A.REPLACE, "failed"),
    ((unhealthy("m1"), vm("m2", check=OK)), {"max_unhealthy": "0"}, A.NONE, "between"),
    # never the monitored VM, a protected or an unmanaged one
    ((unhealthy("m1", tags={PROTECT: "true"}), vm("m2", check=OK)), {}, A.NONE, "between"),
    ((unhealthy("m1", monitored=True), vm("m2", check=OK)), {}, A.NONE, "between"),
    ((vm("x", managed=False, check=FAIL), vm("m2", check=OK)), {}, A.NONE, "between"),
    # room for one more: max_size + 1 at most
    ((unhealthy("m1"), vm("m2", check=OK)), {"max_size": 3}, A.REPLACE, "m1"),
    ((unhealthy("m1"), vm("m2", check=OK), vm("m3", in_lb=False, state="Stopped", age_min=1,
                                              tags={PROTECT: "true"})),
     {"max_size": 3}, A.NONE, "between"),
])
def test_health_replacement(members, settings, action, reason_part):
    d = decide(load(2.0), pool(*members), replace(BASE, **settings), NOW, History())
    assert d.action is action and reason_part in d.reason
    if action is A.REPLACE:
        assert d.rule == "health" and d.vms[0].name in d.reason


def test_health_replacement_respects_the_backoff_and_reads_the_history_first():
    p = pool(unhealthy("m1"), vm("m2", check=OK))
    assert decide(load(2.0), p, BASE, NOW).needs_history
    held = decide(load(2.0), p, BASE, NOW,
                  History(backoff=Backoff(2, NOW + timedelta(minutes=3))))
    assert held.action is A.NONE and "held back by the failed-deploy backoff" in held.reason


def test_health_replacement_goes_ahead_with_the_load_unknown():
    p = pool(unhealthy("m1"), vm("m2", check=OK))
    d = decide(Measurement((HostLoad("web1", error="refused"),)), p, BASE, NOW, History())
    assert d.action is A.REPLACE


@pytest.mark.parametrize("failing, members, limit, too_many", [
    (1, 2, "50%", False), (2, 3, "50%", True), (1, 1, "50%", True), (1, 1, "100%", False),
    (2, 4, "1", True), (1, 4, "1", False), (0, 4, "0", False),
])
def test_max_unhealthy_counts_members_failing_now(failing, members, limit, too_many):
    vms = [vm(f"m{i}", check=FAIL if i < failing else OK) for i in range(members)]
    health = fleet.assess(Pool(tuple(vms)), replace(BASE, max_unhealthy=limit))
    assert health.too_many is too_many


def test_health_lines_say_why_nothing_is_replaced():
    lines = fleet.health_lines(pool(unhealthy("m1"), unhealthy("m2", tags={PROTECT: "true"}),
                                    vm("x", managed=False, check=FAIL)), BASE)
    assert any("x failed its check (not managed: reported, never replaced)" in x for x in lines)
    assert any("m2 failed its check 3 of 3 runs in a row (protected" in x for x in lines)
    assert "3 of 4 members fail their check, more than max_unhealthy 50%" in lines[-1]
    assert fleet.health_lines(pool(vm("m1", check=OK)), BASE) == []


@pytest.mark.parametrize("text, parsed", [
    ("50%", (50.0, True)), ("0", (0.0, False)), ("3", (3.0, False)), ("12.5%", (12.5, True)),
    (" 100% ", (100.0, True)),
])
def test_parse_limit(text, parsed):
    assert fleet.parse_limit(text) == parsed


@pytest.mark.parametrize("text", ["half", "-1", "1.5", "101%", "50 %", "%", ""])
def test_parse_limit_refuses(text):
    with pytest.raises(ValueError, match="a count .* or a percentage"):
        fleet.parse_limit(text)


def test_ssh_checks_are_the_measured_members_past_grace():
    old, young = vm("m1", age_min=60), vm("m2", age_min=1)
    measured = Measurement((HostLoad(old.ip or "", error="garbage"),
                            HostLoad(young.ip or "", loads=(1.0, 1.0, 1.0))))
    checks = fleet.ssh_checks(pool(old, young), measured, BASE, NOW)
    assert checks == {"id-m1": Check(False, "garbage")}


@pytest.mark.parametrize("data, expected", [
    ({"templateid": "t2", "serviceofferingid": "o1"}, False),
    ({"templateid": "t1", "serviceofferingid": "o1"}, True),
    ({"templateid": "t2", "serviceofferingid": "o0"}, True),
    ({}, False),
])
def test_outdated(data, expected):
    assert fleet.outdated(data, BASE.launch) is expected


# --- rolling refresh ---------------------------------------------------------------------------

@pytest.mark.parametrize("value, members, settings, action, reason_part", [
    (2.0, (vm("a", outdated=True, age_min=90), vm("b", outdated=True, age_min=50)), {},
     A.REPLACE, "refresh: a runs an outdated template or service offering (2 outdated)"),
    (3.0, (vm("a", outdated=True),), {}, A.NONE, "between thresholds"),  # not below threshold_out
    (2.0, (vm("a"),), {}, A.NONE, "between"),
    (2.0, (vm("a", outdated=True),), {"refresh": False}, A.NONE, "between"),
    (2.0, (vm("a", outdated=True, tags={PROTECT: "true"}),), {}, A.NONE, "between"),
    # room for one more: max_size + 1 at most
    (2.0, (vm("a", outdated=True), vm("b"), vm("c"), vm("d")), {"max_size": 5}, A.REPLACE, "a"),
    (2.0, (vm("a", outdated=True), vm("b"), vm("c"), vm("d"),
           vm("e", in_lb=False, state="Stopped", tags={PROTECT: "true"})), {"max_size": 5},
     A.NONE, "between"),
    # a load rule first: scale-in (with outdated-first, of an outdated member)
    (0.5, (vm("a", outdated=True, age_min=90), vm("b", age_min=10)),
     {"min_size": 1, "termination_policy": "outdated-first"}, A.SCALE_IN, "threshold_in"),
    (0.5, (vm("a", outdated=True),), {"min_size": 2}, A.REPLACE, "refresh"),
])
def test_refresh(value, members, settings, action, reason_part):
    d = decide(load(value), pool(*members), replace(BASE, **{"refresh": True, **settings}),
               NOW, History())
    assert d.action is action and reason_part in d.reason
    if action is A.SCALE_IN and "termination_policy" in settings:
        assert d.vms[0].name == "a"


def test_refresh_with_the_load_unknown_waits():
    d = decide(Measurement(), pool(vm("a", outdated=True)), replace(BASE, refresh=True), NOW,
               History())
    assert d.action is A.NONE and "load unknown" in d.reason


# --- a replacement a dead run left half done --------------------------------------------------

def test_old_vm_whose_replacement_serves_is_taken_away_first():
    old, new = vm("m1", tags={REPLACE: "id-m9"}), vm("m9", age_min=1)
    d = decide(load(5.0), pool(old, new, vm("m2")), replace(BASE, max_size=3), NOW, History())
    assert (d.action, d.rule, d.vms[0].name) == (A.REPLACE, "repair", "m1")
    assert "m9 replaced m1" in d.reason


def test_replacement_outside_the_pool_is_adopted_even_at_max_size():
    old, new = vm("m1", tags={REPLACE: "id-m9"}), vm("m9", in_lb=False, age_min=1)
    full = replace(BASE, max_size=3)
    d = decide(load(2.0), pool(old, vm("m2"), new), full, NOW, History())
    assert (d.action, d.vms[0].name) == (A.ADOPT, "m9")
    stray = vm("m8", in_lb=False, age_min=1)
    d = decide(load(2.0), pool(old, vm("m2"), stray), full, NOW, History())
    assert (d.action, d.vms[0].name) == (A.DESTROY, "m8")


def test_a_mark_naming_a_gone_vm_is_ignored():
    d = decide(load(2.0), pool(vm("m1", tags={REPLACE: "id-gone"}), vm("m2")), BASE, NOW,
               History())
    assert d.action is A.NONE


@pytest.mark.parametrize("member, notes", [
    (vm("m1", tags={PROTECT: "true"}, outdated=True), "protected, outdated"),
    (vm("m1", check=OK), "healthy"),
    (unhealthy("m1", 2), "failing (2 in a row)"),
    (vm("x", managed=False, check=FAIL), "failing"),
    (vm("m1", tags={REPLACE: "id-m9"}), "being replaced by id-m9"),
    (vm("m1"), ""),
])
def test_vm_notes(member, notes):
    assert fleet.vm_notes(member) == notes


# --- config ------------------------------------------------------------------------------------

BROKEN = [
    ({"health": {"check": "tcp"}}, "[health] check: expected one of none, ssh, http"),
    ({"health": {"check": "ssh"}}, "[health] check: ssh needs [monitoring] monitor_members"),
    ({"health": {"check": "http", "url": "http://10.0.0.1/healthz"}}, "[health] url: expected"),
    ({"health": {"url": "ftp://{ip}/x"}}, "[health] url: expected an http:// or https:// URL"),
    ({"health": {"url": "http://{ip}:{port}/"}}, "[health] url: expected"),
    ({"health": {"timeout": "0"}}, "[health] timeout: expected a duration greater than 0 s"),
    ({"health": {"timeout": "soon"}}, "[health] timeout: expected a duration like 90s"),
    ({"health": {"unhealthy_runs": "0"}}, "[health] unhealthy_runs: expected an integer of at "
                                          "least 1"),
    ({"health": {"unhealthy_runs": "2.5"}}, "[health] unhealthy_runs: expected an integer"),
    ({"health": {"grace": "-1"}}, "[health] grace: expected a duration of at least 0 s"),
    ({"health": {"max_unhealthy": "most"}}, "[health] max_unhealthy: expected a count (e.g. 1) "
                                            "or a percentage (e.g. 50%), got 'most'"),
    ({"health": {"max_unhealthy": "150%"}}, "[health] max_unhealthy: expected a count"),
    ({"health": {"unhealthy_run": "3"}}, "[health] unhealthy_run: unknown key (did you mean "
                                         "unhealthy_runs?)"),
    ({"scalling": {"termination_policy": "random"}},
     "[scalling] termination_policy: expected one of newest, oldest, outdated-first"),
    ({"scalling": {"refresh": "daily"}}, "[scalling] refresh: expected yes or no"),
]


@pytest.mark.parametrize("changes, expected", BROKEN, ids=[b[1].split(":")[0] + ":" +
                                                          str(i) for i, b in enumerate(BROKEN)])
def test_fleet_keys_validated(sim, key, tmp_path, capsys, changes, expected):
    sections = copy.deepcopy(base_sections(sim, key))
    for section, values in changes.items():
        sections.setdefault(section, {}).update(values)
    assert main(["-c", str(write_config(tmp_path / "idcfrc", sections))]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err
    assert sim.calls == []


def test_fleet_defaults_and_values(sim, key, tmp_path):
    sections = base_sections(sim, key)
    settings = load_settings(str(write_config(tmp_path / "rc", sections)))
    assert (settings.health_check, settings.health_url, settings.health_timeout) == (
        "none", "http://{ip}:80/healthz", 5.0)
    assert (settings.unhealthy_runs, settings.health_grace, settings.max_unhealthy) == (
        3, 300.0, "50%")
    assert (settings.termination_policy, settings.refresh) == ("newest", False)
    sections["monitoring"]["monitor_members"] = "yes"
    sections["health"] = {"check": "ssh", "url": "https://{ip}:8443/up", "timeout": "2.5",
                          "unhealthy_runs": "2", "grace": "0", "max_unhealthy": "1"}
    sections["scalling"].update(termination_policy="Outdated-First", refresh="yes")
    settings = load_settings(str(write_config(tmp_path / "rc", sections)))
    assert (settings.health_check, settings.health_url, settings.health_timeout,
            settings.unhealthy_runs, settings.health_grace, settings.max_unhealthy) == (
        "ssh", "https://{ip}:8443/up", 2.5, 2, 0.0, "1")
    assert (settings.termination_policy, settings.refresh) == ("outdated-first", True)


# --- the replay -------------------------------------------------------------------------------

@pytest.mark.parametrize("policy, victim", [("newest", "vm-2"), ("oldest", "vm-1")])
def test_replay_scale_in_follows_the_termination_policy(policy, victim):
    from sshscale import replay as rp

    settings = replace(BASE, health_check="none", monitor_members=False, min_size=2,
                       max_size=3, cooldown_in=300, termination_policy=policy, refresh=True)
    trace = rp.parse_trace(["0,8", "10,0", "29,0"], "test.csv")
    result = rp.replay(trace, settings)
    scale_ins = [r.decision for r in result.runs
                 if r.decision is not None and r.decision.action is A.SCALE_IN]
    assert [d.vms[0].id for d in scale_ins] == [victim]
    # no health checks and no template in the replay: it never replaces
    assert all(r.decision is None or r.decision.action is not A.REPLACE for r in result.runs)
