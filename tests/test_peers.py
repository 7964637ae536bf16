"""The peer autoscalers of the replay comparison (bench/peers.py), against the rules their
documentation states: Kubernetes' HPA replica calculator and behaviour, CloudStack's AutoScale
VM group. Pure calls on hand-made pools: no replay, no I/O."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Optional

import pytest

from bench import peers
from idcf_api import Account
from sshscale.model import Action, HostLoad, Measurement, Pool, Settings, Vm

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
BASE = Settings(
    source="test", account=Account("http://127.0.0.1:1/client/api", "k", "s"),
    hosts=("web0",), user="u", private_key_path="/k", pass_phrase="", launch={"zoneid": "z"},
    min_size=2, max_size=12, load_balancer="lb-1", threshold_out=3.0, threshold_in=1.0,
    drain_seconds=30.0)


def pool(serving: int, booting: int = 0) -> Pool:
    """The monitored VM, serving - 1 managed members (newest last) and booting VMs."""
    vms = [Vm(id="vm-0", name="web0", state="Running", in_lb=True, monitored=True)]
    vms += [Vm(id=f"vm-{i}", name=f"vm-{i}", state="Running", in_lb=True, managed=True,
               created=NOW - timedelta(hours=2, minutes=-i)) for i in range(1, serving)]
    vms += [Vm(id=f"b-{i}", name=f"b-{i}", state="Starting", managed=True, jobid=f"job-{i}",
               created=NOW - timedelta(seconds=30)) for i in range(booting)]
    return Pool(tuple(vms))


def loads(*ones: float) -> Measurement:
    """The measured VMs' 1-minute loads (VMs in service for less than METRIC_SETTLE are not
    measured: give fewer loads than VMs in service for them)."""
    return Measurement(tuple(HostLoad(f"vm-{i}", loads=(one, one, one))
                             for i, one in enumerate(ones)))


@pytest.mark.parametrize("measured, serving, booting, desired", [
    ((2.5, 2.5, 2.5), 3, 0, 3),  # at the target
    ((2.7, 2.7, 2.7), 3, 0, 3),  # ratio 1.08: within the 10 % tolerance
    ((3.0, 3.0, 3.0), 3, 0, 4),  # ratio 1.2: ceil(3 x 1.2) = 4
    ((1.0, 1.0, 1.0, 1.0), 4, 0, 2),  # ratio 0.4: ceil(4 x 0.4) = 2
    # two VMs not yet ready count as 0 for a scale-up: 4 x 3 / 6 / 2.5 = 0.8 < 1: no change
    ((3.0, 3.0, 3.0, 3.0), 4, 2, 6),
    # ... and at 5 per ready VM: 20 / 6 / 2.5 = 1.33 -> ceil(6 x 1.33) = 8
    ((5.0, 5.0, 5.0, 5.0), 4, 2, 8),
    # in service but not measured yet (its average has not settled): not ready either
    ((5.0, 5.0), 3, 0, 4),  # 10 / 3 / 2.5 = 1.33 -> ceil(3 x 1.33) = 4
])
def test_hpa_replica_calculator(measured, serving, booting, desired):
    assert peers.Hpa(2.5).desired(loads(*measured), serving + booting) == desired


def decide_hpa(hpa: peers.Hpa, measured: tuple[float, ...], machines: Pool, at: float,
               settings: Settings = BASE):
    return hpa.decide(loads(*measured), machines, settings, NOW + timedelta(seconds=at), None)


def test_hpa_scales_up_at_once_and_down_to_the_highest_recommendation_of_300_s():
    hpa = peers.Hpa(2.5)
    up = decide_hpa(hpa, (5.0, 5.0), pool(2), 0)
    assert (up.action, up.count) == (Action.SCALE_OUT, 2)  # ceil(2 x 2) = 4
    assert decide_hpa(hpa, (1.0,) * 4, pool(4), 15).action is Action.NONE  # 4 still recommended
    assert decide_hpa(hpa, (1.0,) * 4, pool(4), 299).action is Action.NONE
    down = decide_hpa(hpa, (1.0,) * 4, pool(4), 301)  # the 4 of second 0 has left the window
    assert (down.action, down.count) == (Action.SCALE_IN, 2)
    assert [v.id for v in down.vms] == ["vm-3", "vm-2"]  # the newest first, never vm-0


def test_hpa_scale_up_is_limited_to_double_or_four_more_and_to_max_size():
    assert decide_hpa(peers.Hpa(2.5), (25.0, 25.0), pool(2), 0).count == 4  # 20 wanted: +4
    capped = replace(BASE, max_size=5)
    assert decide_hpa(peers.Hpa(2.5), (25.0, 25.0), pool(2), 0, capped).count == 3


def test_hpa_removes_vms_still_booting_first():
    hpa = peers.Hpa(2.5)
    decision = decide_hpa(hpa, (0.5, 0.5), pool(2, booting=2), 0)
    assert decision.action is Action.SCALE_IN and decision.vms[0].id.startswith("b-")


def decide_cs(group: peers.CloudStackAutoScale, load: float, machines: Pool, at: float,
              settings: Settings = BASE) -> Optional[Action]:
    return group.decide(loads(load, load), machines, settings, NOW + timedelta(seconds=at),
                        None).action


def test_cloudstack_acts_on_the_average_over_the_duration_one_vm_at_a_time():
    group = peers.CloudStackAutoScale()
    # no decision before a full duration (120 s) of statistics; then the mean of the samples
    # of the last 120 s: 2, 2, 2, 5 at 120 s; 2, 2, 5, 5 at 150 s
    actions = [decide_cs(group, load, pool(2), at) for at, load in
               ((0, 9.0), (30, 2.0), (60, 2.0), (90, 2.0), (120, 5.0), (150, 5.0))]
    assert actions == [Action.NONE] * 5 + [Action.SCALE_OUT]
    assert decide_cs(group, 9.0, pool(2, booting=1), 180) is Action.NONE  # SCALING
    # after the change, the scale-up policy waits its quiet time (300 s, until 450 s)
    assert decide_cs(group, 9.0, pool(3), 300) is Action.NONE
    assert decide_cs(group, 9.0, pool(3), 420) is Action.NONE
    assert decide_cs(group, 9.0, pool(3), 450) is Action.SCALE_OUT


def test_cloudstack_scales_down_below_threshold_in_and_keeps_min_members():
    group = peers.CloudStackAutoScale()
    for at in (0, 30, 60, 90):
        assert decide_cs(group, 0.5, pool(3), at) is Action.NONE
    assert decide_cs(group, 0.5, pool(3), 120) is Action.SCALE_IN
    fresh = peers.CloudStackAutoScale()
    assert all(decide_cs(fresh, 0.1, pool(2), at) is Action.NONE for at in range(0, 600, 30))
