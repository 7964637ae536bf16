"""Every corrective loop has a brake, end to end (the installed command, the simulator in both
server modes, the real sshd): repairs the cloud refuses back off per VM, deploys the API
refuses at once, the launch budget and its one notice, the target policy's deploys when one
fails, and tag calls whose answer is lost (the lease read back). A deploy whose answer is lost:
tests/test_faults.py; replacements that never become healthy and the refresh's halt:
tests/test_health.py."""

from __future__ import annotations

import configparser

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from cloudstack_sim import Fault
from idcf_api import Account, Client
from sshscale.config import settings_from_config
from sshscale.errors import TagError
from sshscale.facts import BACKOFF, BUDGET, LEASE, REPAIR, launch_key
from sshscale.model import Backoff
from sshscale.tags import LOAD_BALANCER, TagWriter
from tests.configs import add_owned, base_sections, labels, render
from tests.conftest import run_cli
from tests.receivers import Receiver
from tests.scenarios import HIGH, campaign_cloud, make_config, outputs

OLD = datetime.now(timezone.utc) - timedelta(hours=2)


@pytest.fixture
def cloud(any_sim: Any) -> Any:
    return campaign_cloud(any_sim)


def run(path: Path, *args: str, status: int = 0) -> str:
    done = run_cli("-c", str(path), *args)
    assert done.returncode == status, done.stdout + done.stderr
    return outputs(done)


def deploys(cloud: Any) -> int:
    return len(cloud.calls_of("deployVirtualMachine"))


def test_a_destroy_the_cloud_refuses_backs_off_and_the_pool_still_scales(tmp_path, cloud, key,
                                                                         sshd):
    broken = add_owned(cloud, "broken", in_lb=False)
    cloud.set_state(broken["id"], "Error")
    cloud.inject(Fault("http_error", command="destroyVirtualMachine", times=-1, status=530))
    sshd.set_output(HIGH)
    path = make_config(tmp_path, cloud, key, sshd.port)
    first = run(path, status=1)
    assert f"{broken['name']}: 1 failed repair(s) in a row" in first
    assert cloud.tags(broken["id"])[f"{REPAIR}:1"].startswith("1 ")
    second = run(path)  # the repair backs off: the load rule acts meanwhile
    assert "scale out" in second and deploys(cloud) == 1
    assert len(cloud.calls_of("destroyVirtualMachine")) == 1
    assert "repair refused 1 time(s)" in run(path, "--status")


def test_a_deploy_refused_at_once_grows_the_backoff(tmp_path, cloud, key, sshd):
    cloud.inject(Fault("http_error", command="deployVirtualMachine", status=533))
    sshd.set_output(HIGH)
    path = make_config(tmp_path, cloud, key, sshd.port)
    assert "1 failed deploy(s) in a row" in run(path, status=1)
    assert cloud.tags(cloud.lb_id)[f"{BACKOFF}:1"].startswith("1 ")
    assert "held back by the failed-deploy backoff" in run(path)
    assert deploys(cloud) == 1
    assert sum(key.startswith("ssh-scale:launch:") for key in cloud.tags(cloud.lb_id)) == 1


def test_the_launch_budget_holds_deploys_and_says_so_once(tmp_path, cloud, key, sshd):
    now = int(datetime.now(timezone.utc).timestamp())
    for token in ("aaaaaa", "bbbbbb"):
        cloud.set_tag(cloud.lb_id, launch_key(token), str(now - 60))
    sshd.set_output(HIGH)
    with Receiver() as receiver:
        path = make_config(tmp_path, cloud, key, sshd.port,
                           scalling={"launch_budget": "2"},
                           notify={"webhook": receiver.url(), "events": "brake"})
        first = run(path)
        assert "held back by the launch budget: 2 VMs created in the last hour, at most 2" \
            in first
        assert BUDGET in cloud.tags(cloud.lb_id)
        run(path)
        assert deploys(cloud) == 0
        assert [post["event"] for _, post in receiver.posts] == ["brake"]
        assert "launch budget" in receiver.posts[0][1]["text"]


def test_target_deploys_that_came_up_join_when_another_fails(tmp_path, cloud, key, sshd):
    cloud.inject(Fault("job_fail", command="deployVirtualMachine", errortext="no capacity"))
    sshd.set_output("9.00 9.00 9.00 9/200 999")
    path = make_config(tmp_path, cloud, key, sshd.port,
                       scalling={"policy": "target", "max_size": "6"},
                       scalling_policy_out={"cooldown": None},
                       scalling_policy_in={"cooldown": None})
    text = run(path, status=1)
    assert "no capacity" in text and "1 failed deploy(s) in a row" in text
    started = deploys(cloud)
    assert started >= 3
    members = labels(cloud.lb_members())
    assert len(members) == 2 + started - 1  # every VM that came up joined in this run
    assert f"{BACKOFF}:1" in cloud.tags(cloud.lb_id)


def test_a_lease_whose_answer_is_lost_is_read_back(tmp_path, cloud, key, sshd):
    """createTags of the lease answers too late: the run reads the lease back, finds its own,
    acts and releases it (the other monitor is not blocked for the lease's length)."""
    cloud.inject(Fault("slow_after", command="createTags", delay=5))
    sshd.set_output(HIGH)
    path = make_config(tmp_path, cloud, key, sshd.port)
    assert "scale out" in run(path)
    assert LEASE not in cloud.tags(cloud.lb_id) and len(cloud.lb_members()) == 3


def test_a_backoff_whose_next_value_cannot_be_written_keeps_the_previous(cloud):
    """Failed creates (a database hiccup) never lose the backoff: the next count is created
    before the previous one is removed."""
    parser = configparser.ConfigParser()
    parser.read_string(render(base_sections(cloud, None)))
    settings = settings_from_config(parser, "test", {}, check_key=False)
    client = Client(Account(cloud.url, cloud.api_key, cloud.secret_key, timeout=5))
    cloud.set_tag(cloud.lb_id, f"{BACKOFF}:4", "4 4102444800")
    cloud.inject(Fault("job_fail", command="createTags", times=2, errortext="db hiccup"))
    with pytest.raises(TagError):
        TagWriter(client, settings).write_backoff(
            LOAD_BALANCER, cloud.lb_id, BACKOFF, Backoff(5, datetime.now(timezone.utc)),
            (f"{BACKOFF}:4",))
    assert cloud.tags(cloud.lb_id)[f"{BACKOFF}:4"] == "4 4102444800"
