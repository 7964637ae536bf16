"""The pure rules of issues "Never act on a wrong belief" and "Every corrective loop damped":
silent and garbled hosts for a scale-in (the quorum), stuck transitional VMs, repairs the cloud
keeps refusing, the launch budget, leftovers adopted together, replacements that never become
healthy, the replacement budget, the refresh's health gate and halt, the marks a run writes,
and the facts' tag values."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Optional

import pytest

from sshscale import fleet
from sshscale.decide import decide, quorum_shortfall, scale_in_load
from sshscale.facts import (
    BUDGET,
    POOL,
    REFRESH_HALTED,
    REPAIR,
    STUCK,
    TRIES,
    GIVEN_UP,
    UNHEALTHY,
    history_from_tags,
    launch_key,
    scale_out_value,
    time_value,
)
from sshscale.marks import Mark, marks_due, with_marks
from sshscale.model import Action, Check, History, HostLoad, Measurement, Pool, Vm
from tests.test_decide import BASE as DECIDE_BASE

NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=timezone.utc)
BASE = replace(DECIDE_BASE,
               launch={"zoneid": "z", "templateid": "t2", "serviceofferingid": "o1"},
               max_size=6, health_check="http")
A = Action
FAIL, OK = Check(False, "http://127.0.1.9:80/healthz: HTTP 500"), Check(True)


def vm(name: str, *, age_min: float = 60, managed: bool = True, in_lb: bool = True,
       state: str = "Running", tags: Optional[dict[str, str]] = None, outdated: bool = False,
       check: Optional[Check] = None, jobid: Optional[str] = None, legacy: bool = False) -> Vm:
    return Vm(id=f"id-{name}", name=name, state=state, created=NOW - timedelta(minutes=age_min),
              ip=f"127.0.1.{sum(map(ord, name)) % 250 + 1}", in_lb=in_lb, managed=managed,
              monitored=name == "web1", tags=tuple((tags or {}).items()), outdated=outdated,
              check=check, jobid=jobid, legacy=legacy)


WEB1 = vm("web1", managed=False, age_min=1000)


def pool(*vms: Vm) -> Pool:
    return Pool((WEB1,) + vms)


def hosts(*values: Optional[float]) -> Measurement:
    return Measurement(tuple(HostLoad(f"h{i}", loads=None if v is None else (v, v, v),
                                      error="timed out" if v is None else None)
                             for i, v in enumerate(values)))


def ago(minutes: float) -> datetime:
    return NOW - timedelta(minutes=minutes)


# --- silence is not low load ------------------------------------------------------------------

@pytest.mark.parametrize("values, quorum, load_in, short", [
    ((0.4, None, None, None), "75%", 0.4, "only 1 of 4 hosts answered (quorum 75%)"),
    ((0.4, 2.0, 3.0, None), "75%", 2.1, None),        # the silent one counts as the busiest
    ((0.4, 0.4, None), "75%", 0.4, "only 2 of 3"),
    ((0.4, 0.4, None), "2", 0.4, None),               # a count
    ((0.2, 0.4), "100%", 0.3, None),
    ((None, None), "75%", None, "only 0 of 2"),
])
def test_scale_in_load_and_quorum(values, quorum, load_in, short):
    settings = replace(BASE, quorum=quorum)
    measured = hosts(*values)
    got = scale_in_load(measured, 1, settings)
    assert got == pytest.approx(load_in) if load_in is not None else got is None
    found = quorum_shortfall(measured, settings)
    assert (found is None) if short is None else short in found


def test_three_silent_members_and_an_idle_one_do_not_scale_in():
    p = pool(vm("m1", age_min=90), vm("m2", age_min=80), vm("m3", age_min=70))
    d = decide(hosts(0.4, None, None, None), p, BASE, NOW, History())
    assert d.action is A.NONE and d.rule == "quorum"
    assert "only 1 of 4 hosts answered (quorum 75%): not scaling in" in d.reason
    # scale-out still acts on the answers
    d = decide(hosts(4.0, None, None, None), p, BASE, NOW, History())
    assert d.action is A.SCALE_OUT


def test_a_silent_host_counts_as_busy_for_a_scale_in():
    p = pool(vm("m1", age_min=90), vm("m2", age_min=80), vm("m3", age_min=70))
    # three idle, one silent: it may be the busy one; its share makes the mean 0.75 -> in
    d = decide(hosts(0.0, 0.0, 3.0, None), p, BASE, NOW, History())
    assert d.action is A.NONE  # mean(0, 0, 3, 3) = 1.5: not below threshold_in
    d = decide(hosts(0.5, 0.5, 0.5, None), p, BASE, NOW, History())
    assert d.action is A.SCALE_IN
    assert "4 hosts, 3 answered; the silent ones counted as busy as the busiest" in d.reason


# --- stuck transitional VMs -------------------------------------------------------------------

@pytest.mark.parametrize("state, jobid, seen_min, action", [
    ("Starting", None, 20, A.DESTROY),       # first seen 20 min ago, job_timeout 15 min
    ("Stopping", None, 20, A.DESTROY),
    ("Starting", None, 5, A.NONE),
    ("Starting", "job-1", 60, A.NONE),       # its job is still pending
    ("Running", None, 60, A.NONE),
])
def test_stuck_vms_are_broken_after_job_timeout(state, jobid, seen_min, action):
    stuck = vm("m3", state=state, jobid=jobid, tags={STUCK: time_value(ago(seen_min))})
    p = pool(vm("m1"), vm("m2"), stuck)
    d = decide(hosts(2.0), p, BASE, NOW, History())
    assert d.action is action
    if action is A.DESTROY:
        assert d.vms == (stuck,) and "without a job for more than 900 s" in d.reason


def test_marks_note_when_a_vm_is_first_seen_stuck_and_forget_it_after():
    first = marks_due(pool(vm("m1", state="Stopping")), BASE, NOW)
    assert Mark("id-m1", STUCK, time_value(NOW)) in first
    later = marks_due(pool(vm("m1", tags={STUCK: "1"})), BASE, NOW)
    assert Mark("id-m1", STUCK, None) in later


# --- repairs the cloud keeps refusing ---------------------------------------------------------

def test_a_refused_repair_backs_off_and_the_other_rules_act_meanwhile():
    refusing = vm("bad", state="Error", in_lb=False,
                  tags={REPAIR: f"2 {time_value(NOW + timedelta(minutes=2))}"})
    p = pool(vm("m1"), refusing)
    d = decide(hosts(4.0), p, BASE, NOW, History())
    assert d.action is A.SCALE_OUT  # the destroy no longer blocks the scale-out
    later = NOW + timedelta(minutes=3)
    assert decide(hosts(4.0), p, BASE, later, History()).action is A.DESTROY


def test_an_adopt_the_cloud_refuses_does_not_block_min_size():
    orphan = vm("o1", in_lb=False, tags={REPAIR: f"1 {time_value(NOW + timedelta(minutes=1))}"})
    d = decide(hosts(2.0), Pool((WEB1, orphan)), BASE, NOW, History())
    assert (d.action, d.rule) == (A.SCALE_OUT, "min_size")


def test_leftovers_are_adopted_together_up_to_max_size():
    orphans = [vm(f"o{i}", in_lb=False, age_min=1) for i in range(4)]
    p = pool(vm("m1"), vm("m2"), *orphans)
    d = decide(hosts(2.0), p, BASE, NOW, History())
    assert d.action is A.ADOPT and [v.name for v in d.vms] == ["o0", "o1", "o2"]


# --- the launch budget -------------------------------------------------------------------------

def launches(*minutes_ago: float) -> tuple[tuple[str, datetime], ...]:
    return tuple((launch_key(f"t{i}"), ago(m)) for i, m in enumerate(minutes_ago))


@pytest.mark.parametrize("recent, count, action, got", [
    ((), 1, A.SCALE_OUT, 1),
    ((5,) * 11, 1, A.SCALE_OUT, 1),      # 11 of 12 (2 x max_size 6)
    ((5,) * 12, 1, A.NONE, 0),
    ((70,) * 12, 1, A.SCALE_OUT, 1),     # older than an hour: no longer counted
    ((5,) * 10, 4, A.SCALE_OUT, 2),      # a bigger step shrinks to what is left
])
def test_launch_budget(recent, count, action, got):
    settings = replace(BASE, step_out="proportional", max_size=6)
    members = [vm(f"m{i}") for i in range(1, 3)]
    load = {1: 4.0, 4: 12.0}[count]
    d = decide(hosts(load), pool(*members), settings, NOW, History(launches=launches(*recent)))
    assert d.action is action
    assert d.count == got
    if action is A.NONE:
        assert d.rule == "budget" and "12 VMs created in the last hour, at most 12" in d.reason
        assert d.notice is not None and d.notice.key == BUDGET
        noticed = History(launches=launches(*recent), budget_notice=ago(1))
        assert decide(hosts(load), pool(*members), settings, NOW, noticed).notice is None


def test_launch_budget_key_overrides_the_default():
    settings = replace(BASE, launch_budget=1)
    d = decide(hosts(4.0), pool(vm("m1")), settings, NOW, History(launches=launches(30)))
    assert d.rule == "budget"


# --- replacements that never become healthy ------------------------------------------------------

def unhealthy(name: str, runs: int = 3, **kwargs) -> Vm:
    tags = {UNHEALTHY: str(runs), **kwargs.pop("tags", {})}
    return vm(name, tags=tags, check=FAIL, **kwargs)


def test_a_replacement_that_never_passed_is_replaced_again_until_given_up():
    p = pool(vm("m1", check=OK), unhealthy("m2", tags={TRIES: "2"}))
    d = decide(hosts(2.0), p, BASE, NOW, History())
    assert d.action is A.REPLACE and d.vms[0].name == "m2"
    given_up = pool(vm("m1", check=OK), unhealthy("m2", tags={TRIES: "3", GIVEN_UP: "1 x"}))
    assert decide(hosts(2.0), given_up, BASE, NOW, History()).action is A.NONE


def test_a_failing_given_up_vm_suspends_every_other_replacement():
    """A new VM that stays unhealthy (given up or not) suspends the other members'
    replacements: a broken template starts no second chain."""
    p = pool(vm("m0", check=OK), unhealthy("m1"),
             unhealthy("m2", tags={TRIES: "3", GIVEN_UP: "1 x"}))
    d = decide(hosts(2.0), p, BASE, NOW, History())
    assert d.action is A.NONE and "not yet healthy and failing" in d.reason


def test_marks_give_up_the_third_replacement_once_and_clear_a_proven_one():
    third = unhealthy("m2", tags={TRIES: "3"})
    proven = vm("m1", check=OK, tags={TRIES: "1"})
    marks = marks_due(pool(proven, third), BASE, NOW)
    assert Mark("id-m1", TRIES, None) in marks  # it passed: no longer on trial
    halt = next(m for m in marks if m.vm_id == "id-m2")
    assert (halt.key, halt.value) == (GIVEN_UP, time_value(NOW)) and halt.notice is not None
    assert "3th replacement in a row that never passed" in halt.notice.text
    again = marks_due(with_marks(pool(third), [halt]), BASE, NOW)
    assert not [m for m in again if m.key in (TRIES, GIVEN_UP)]  # told once
    healed = vm("m2", check=OK, tags={TRIES: "3", GIVEN_UP: "1 x"})
    assert set(marks_due(pool(healed), BASE, NOW)) == {Mark("id-m2", TRIES, None),
                                                        Mark("id-m2", GIVEN_UP, None)}


def test_with_check_none_a_replacement_proves_itself_by_running_past_grace():
    settings = replace(BASE, health_check="none")
    young, old = vm("m1", age_min=2, tags={TRIES: "1"}), vm("m2", age_min=10, tags={TRIES: "1"})
    marks = marks_due(pool(young, old), settings, NOW)
    assert marks == (Mark("id-m2", TRIES, None),)


@pytest.mark.parametrize("others, action, reason", [
    # one replacement still on trial (a tenth of 5, at least one): the next waits
    ((vm("m3", check=OK, tags={TRIES: "1"}),), A.NONE, "1 replacement(s) not yet healthy"),
    # on trial and failing: everything else waits for it
    ((unhealthy("m3", runs=1, tags={TRIES: "1"}),), A.NONE, "not yet healthy and failing"),
    ((vm("m3", check=OK),), A.REPLACE, "failed its health check"),
])
def test_replacement_budget(others, action, reason):
    p = pool(vm("m1", check=OK), unhealthy("m2"), *others)
    d = decide(hosts(2.0), p, BASE, NOW, History())
    assert d.action is action and reason in d.reason


# --- the rolling refresh's brakes --------------------------------------------------------------

def refresh_pool(*extra: Vm) -> Pool:
    return pool(vm("m1", outdated=True, check=OK, age_min=300),
                vm("m2", outdated=True, check=OK, age_min=200), *extra)


@pytest.mark.parametrize("extra, history, action, reason", [
    ((), History(), A.REPLACE, "refresh: m1"),
    # a member fails its check: no refresh step
    ((vm("m3", outdated=True, check=Check(False, "x"), age_min=100),), History(), A.NONE,
     "refresh waits: m3 fails its health check"),
    # the last refresh step is still on trial
    ((vm("m3", check=None, age_min=3, tags={TRIES: "1"}),), History(), A.NONE,
     "m3 has not passed its health check yet"),
    # a VM of the new template fails: halted, told once
    ((vm("m3", check=FAIL, age_min=30),), History(), A.NONE, "refresh halted: m3"),
    ((), History(refresh_halted=fleet.launch_fingerprint(BASE.launch)), A.NONE,
     "change the template or offering to refresh again"),
    ((), History(refresh_halted="another"), A.REPLACE, "refresh: m1"),
])
def test_refresh_gate(extra, history, action, reason):
    settings = replace(BASE, refresh=True)
    d = decide(hosts(2.0), refresh_pool(*extra), settings, NOW, history)
    assert d.action is action and reason in d.reason
    if "refresh halted: m3" in reason:
        assert d.notice is not None and d.notice.key == REFRESH_HALTED
        assert d.notice.value.startswith(fleet.launch_fingerprint(BASE.launch))


# --- marks and facts ----------------------------------------------------------------------------

def test_legacy_vms_get_the_pool_tag_once():
    marks = marks_due(pool(vm("old", legacy=True)), BASE, NOW)
    assert marks == (Mark("id-old", POOL, "lb-1"),)
    marked = with_marks(pool(vm("old", legacy=True)), marks)
    assert not marked.vms[1].legacy and marked.vms[1].tag(POOL) == "lb-1"


def test_scale_out_tag_keeps_the_deploy_duration_and_reads_old_values():
    history = history_from_tags({"ssh-scale:scale-out": scale_out_value(NOW, 95.4)})
    assert history.last_scale_out == NOW and history.deploy_seconds == 95
    old = history_from_tags({"ssh-scale:scale-out": time_value(NOW)})
    assert old.last_scale_out == NOW and old.deploy_seconds is None


def test_launch_records_and_notices_read_from_the_rule_tags():
    tags = {launch_key("aa"): time_value(ago(5)), launch_key("bb"): time_value(ago(50)),
            launch_key("cc"): "garbage", BUDGET: time_value(ago(1)),
            REFRESH_HALTED: "abc123 1764460800"}
    history = history_from_tags(tags)
    assert [k for k, _ in history.launches] == [launch_key("bb"), launch_key("aa")]
    assert history.budget_notice == ago(1) and history.refresh_halted == "abc123"


def test_the_backoff_is_written_next_before_the_previous_goes():
    """Of several backoff tags (a run died between writing the next count and removing the
    previous one), the highest holds; an earlier version's bare key still counts."""
    until = time_value(NOW + timedelta(minutes=8))
    tags = {"ssh-scale:backoff": f"2 {time_value(NOW)}", "ssh-scale:backoff:3": f"3 {until}",
            "ssh-scale:backoff:4": f"4 {until}", "ssh-scale:backoffice": "x"}
    history = history_from_tags(tags)
    assert history.backoff is not None and history.backoff.failures == 4
    assert history.backoff_keys == ("ssh-scale:backoff", "ssh-scale:backoff:3",
                                    "ssh-scale:backoff:4")


def test_a_half_done_replacement_whose_end_is_refused_backs_off_too():
    """The old VM of a replacement whose new VM serves is taken away as a repair; refused, it
    backs off per VM like any repair, and the load rules act meanwhile."""
    new = vm("new", age_min=5)
    held = f"1 {time_value(NOW + timedelta(minutes=1))}"
    old = vm("old", tags={"ssh-scale:replace": "id-new", f"{REPAIR}:1": held})
    p = pool(vm("m1"), old, new)
    assert decide(hosts(4.0), p, BASE, NOW, History()).action is A.SCALE_OUT
    later = decide(hosts(4.0), p, BASE, NOW + timedelta(minutes=2), History())
    assert (later.action, later.rule, later.vms) == (A.REPLACE, "repair", (old,))
