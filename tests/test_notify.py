"""[notify], against real receivers on loopback: which runs are events, the payload (a
Slack-compatible text and the action's fields, no secret), the command's environment (no
account variable, no secret), and that a failing, refusing or hanging receiver costs at most
the timeout and one warning line."""

from __future__ import annotations

import json
import logging
import socket
import time
from dataclasses import replace
from typing import Optional

import pytest

from sshscale.model import Action, Decision, Notify, Pool, Report
from sshscale.notify import command_environment, event_of, payload, send, webhook_secrets
from tests.receivers import Receiver, env_command, read_env
from tests.test_decide import BASE, pool, vm

SECRETS = ("sim-api-key-123", "sim-secret-456")
NEW = vm("m9")


def report(action: Action = Action.SCALE_OUT, error: Optional[str] = None,
           members: int = 1) -> Report:
    decision = Decision(action, "pool has 1 VM, below min_size 2", count=1, rule="min_size",
                        vms=(NEW,) if action is Action.SCALE_IN else ())
    return Report(time="2026-12-01T10:00:00+09:00", pool=pool(members), pool_read=True,
                  decision=decision, result="pool has 2 VMs", error=error,
                  vm_ids=("vm-new-1",), pool_after=None if error else members + 1)


def settings(**notify: object):
    return replace(BASE, notify=Notify(**{"events": ("scale_out", "scale_in", "repair",
                                                     "failure"), "timeout": 2.0, **notify}))


@pytest.mark.parametrize("run, expected", [
    (report(), "scale_out"),
    (report(Action.SCALE_IN), "scale_in"),
    (report(Action.ADOPT), "repair"),
    (report(Action.READD), "repair"),
    (report(Action.DESTROY), "repair"),
    (report(error="listVirtualMachines: HTTP 503"), "failure"),
    (report(Action.NONE), None),
    (Report(time="t"), None),
])
def test_event_of(run, expected):
    assert event_of(run) == expected


def test_payload_fields():
    data = payload(report(), "scale_out", BASE, "monitor-1")
    assert data["text"] == ("ssh-scale on monitor-1, load balancer lb-1: scale out: pool has 1 "
                            "VM, below min_size 2; pool 1 -> 2 VMs")
    assert (data["event"], data["action"], data["reason"]) == (
        "scale_out", "scale out", "pool has 1 VM, below min_size 2")
    assert (data["pool_before"], data["pool_after"], data["vm_ids"]) == (1, 2, ["vm-new-1"])
    assert (data["time"], data["host"], data["load_balancer"]) == (
        "2026-12-01T10:00:00+09:00", "monitor-1", "lb-1")
    assert data["decision"]["rule"] == "min_size" and data["bounds"] is None


def test_payload_of_a_failure():
    data = payload(report(error="deploy job failed: No capacity"), "failure", BASE, "m")
    assert data["text"] == ("ssh-scale on m, load balancer lb-1: run failed (scale out): "
                            "deploy job failed: No capacity")
    assert (data["pool_before"], data["pool_after"]) == (1, None)


def test_webhook_receives_the_payload_without_secrets():
    run = report(error=f"GET ...&apiKey={SECRETS[0]}&signature=abc: {SECRETS[1]} refused")
    with Receiver() as receiver:
        send(run, settings(webhook=receiver.url()), "monitor-1", SECRETS)
    ((path, data),) = receiver.posts
    assert path == "/services/T000/B000/XXXXSECRETXXXX"
    assert data["event"] == "failure" and data["text"].startswith("ssh-scale on monitor-1")
    text = json.dumps(data)
    assert not any(s in text for s in SECRETS) and "signature=abc" not in text


def test_events_not_listed_are_not_sent():
    with Receiver() as receiver:
        send(report(), settings(webhook=receiver.url(), events=("failure",)), "m")
        send(report(Action.NONE), settings(webhook=receiver.url()), "m")
    assert receiver.posts == []


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_webhook_error_status_is_one_warning_without_the_token(caplog):
    with Receiver(status=500) as receiver:
        send(report(), settings(webhook=receiver.url()), "m")
    (line,) = warnings(caplog)
    assert f"webhook 127.0.0.1:{receiver.port}: HTTP 500 (scale_out not delivered" in line
    assert "XXXXSECRETXXXX" not in line


def test_webhook_refused_is_one_warning(caplog):
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    send(report(), settings(webhook=f"http://127.0.0.1:{port}/hook"), "m")
    (line,) = warnings(caplog)
    assert f"webhook 127.0.0.1:{port}: cannot connect" in line


def test_hanging_webhook_costs_at_most_the_timeout(caplog):
    with Receiver(delay=30) as receiver:
        started = time.monotonic()
        send(report(), settings(webhook=receiver.url(), timeout=0.5), "m")
        elapsed = time.monotonic() - started
    assert elapsed < 2.0
    (line,) = warnings(caplog)
    assert "no answer within 0.5 s" in line


def test_command_gets_the_fields_and_no_secret(tmp_path):
    out = tmp_path / "env"
    environ = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "CLOUDSTACK_SECRET": SECRETS[1],
               "IDCF_COMPUTE_API_KEY": SECRETS[0], "LEAKY": f"x{SECRETS[0]}y", "LANG": "C.UTF-8"}
    command = (str(env_command(tmp_path, out)),)
    send(report(), settings(command=command), "monitor-1", SECRETS, environ=environ)
    env = read_env(out)
    assert (env["SSH_SCALE_EVENT"], env["SSH_SCALE_ACTION"]) == ("scale_out", "scale out")
    assert env["SSH_SCALE_REASON"] == "pool has 1 VM, below min_size 2"
    assert (env["SSH_SCALE_POOL_BEFORE"], env["SSH_SCALE_POOL_AFTER"]) == ("1", "2")
    assert (env["SSH_SCALE_VM_IDS"], env["SSH_SCALE_HOST"]) == ("vm-new-1", "monitor-1")
    assert env["SSH_SCALE_ERROR"] == "" and env["SSH_SCALE_LOAD_BALANCER"] == "lb-1"
    assert json.loads(env["SSH_SCALE_JSON"])["text"] == env["SSH_SCALE_TEXT"]
    assert env["LANG"] == "C.UTF-8" and env["HOME"] == str(tmp_path)
    assert not {"CLOUDSTACK_SECRET", "IDCF_COMPUTE_API_KEY", "LEAKY"} & set(env)
    assert not any(s in out.read_text() for s in SECRETS)


def test_command_failure_is_one_warning_with_its_last_error_line(tmp_path, caplog):
    command = (str(env_command(tmp_path, tmp_path / "env", exit_status=3)),)
    send(report(), settings(command=command), "m")
    (line,) = warnings(caplog)
    assert f"command {command[0]}: exit status 3: hook: something went wrong" in line


def test_hanging_command_is_killed_at_the_timeout(tmp_path, caplog):
    out = tmp_path / "env"
    command = (str(env_command(tmp_path, out, sleep=30)),)
    started = time.monotonic()
    send(report(), settings(command=command, timeout=0.5), "m")
    assert time.monotonic() - started < 2.0
    (line,) = warnings(caplog)
    assert "did not finish within 0.5 s (killed)" in line
    assert out.exists()


def test_webhook_and_command_are_sent_together_within_one_timeout(tmp_path, caplog):
    out = tmp_path / "env"
    with Receiver(delay=30) as receiver:
        started = time.monotonic()
        send(report(), settings(webhook=receiver.url(), command=(
            str(env_command(tmp_path, out, sleep=30)),), timeout=0.5), "m")
        assert time.monotonic() - started < 2.5
    assert len(warnings(caplog)) == 2 and len(receiver.posts) == 1 and out.exists()


def test_command_environment_flattens_lists_and_none():
    env = command_environment({"vm_ids": ["a", "b"], "error": None, "decision": {"x": 1}},
                              {}, ())
    assert (env["SSH_SCALE_VM_IDS"], env["SSH_SCALE_ERROR"]) == ("a,b", "")
    assert "SSH_SCALE_DECISION" not in env and json.loads(env["SSH_SCALE_JSON"])["decision"]


@pytest.mark.parametrize("url, expected", [
    ("https://hooks.slack.com/services/T0/B0/XX", ("https://hooks.slack.com/services/T0/B0/XX",
                                                  "/services/T0/B0/XX")),
    ("https://h.example/?token=abc", ("https://h.example/?token=abc", "token=abc")),
])
def test_webhook_secrets_for_the_log(url, expected):
    assert webhook_secrets(settings(webhook=url)) == expected
    assert webhook_secrets(BASE) == ()


def test_pool_not_read_gives_no_sizes():
    run = Report(time="t", decision=Decision(Action.NONE, ""), error="config", pool=Pool())
    data = payload(run, "failure", BASE, "m")
    assert (data["pool_before"], data["pool_after"]) == (None, None)
