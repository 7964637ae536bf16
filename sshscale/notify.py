"""[notify]: tell people about a finished run's action or failure, after the run, through a
webhook (POST of a JSON object with a Slack-compatible "text") and/or a command (the same
fields in SSH_SCALE_* environment variables). An output of the finished Report: it cannot
change the decision, and it never fails the run; a failed or slow notification is one warning
line, and each is bounded by [notify] timeout. No secret reaches the receiver.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any, Callable, Optional

import requests

import idcf_api
from sshscale import __version__
from sshscale.logs import note
from sshscale.model import Action, Report, Settings
from sshscale.views import decision_verb, report_json

__all__ = ["EVENT_OF_ACTION", "command_environment", "event_of", "payload", "send",
           "webhook_secrets"]

# Action values -> [notify] events.
EVENT_OF_ACTION = {Action.SCALE_OUT.value: "scale_out", Action.SCALE_IN.value: "scale_in",
                   Action.ADOPT.value: "repair", Action.READD.value: "repair",
                   Action.DESTROY.value: "repair", Action.REPLACE.value: "replace"}
ENV_PREFIX = "SSH_SCALE_"


class NotifyError(Exception):
    """One notification failed (the message names no secret)."""


def event_of(report: Report) -> Optional[str]:
    """The [notify] event a finished live run is: "failure" when it failed, else its
    action's ("scale_out", "scale_in", "repair", ...), else "brake" when it engaged one (the
    launch budget, a halted refresh, a replacement given up: told once); None for a run that
    changed nothing."""
    if report.error is not None:
        return "failure"
    decision = report.decision
    if decision is None or decision.action is Action.NONE:
        return "brake" if report.notices else None
    return EVENT_OF_ACTION.get(decision.action.value)


def payload(report: Report, event: str, settings: Settings, host: str) -> dict[str, Any]:
    """The notification: a Slack-compatible "text", the action's fields, and --json's time,
    decision, result, error and bounds."""
    data = report_json(report)
    decision = data["decision"]
    before = report.pool.count if report.pool_read else None
    after = report.pool_after
    if after is None and report.error is None:
        after = before  # an action that did not change the pool's size (a repair's destroy)
    where = f"ssh-scale on {host}, load balancer {settings.load_balancer}"
    if event == "brake":
        text = f"{where}: " + "; ".join(report.notices)
    elif event == "failure":
        attempted = f" ({decision_verb(report.decision)})" if report.decision and \
            report.decision.action is not Action.NONE else ""
        text = f"{where}: run failed{attempted}: {report.error}"
    else:
        assert report.decision is not None  # an event other than failure has an action
        text = (f"{where}: {decision_verb(report.decision)}: {decision['reason']}; pool "
                f"{before} -> {after} VMs")
    return {"text": text, "event": event, "action": decision["action"],
            "reason": decision["reason"], "pool_before": before, "pool_after": after,
            "vm_ids": list(report.vm_ids), "time": data["time"], "host": host,
            "load_balancer": settings.load_balancer, "result": data["result"],
            "error": data["error"], "decision": decision, "bounds": data["bounds"],
            "notices": list(report.notices)}


def _redacted(value: Any, secrets: Sequence[str]) -> Any:
    """The value with every secret (and any signature or key parameter) masked, in every
    string it holds."""
    if isinstance(value, str):
        return idcf_api.redact(value, secrets)
    if isinstance(value, Mapping):
        return {k: _redacted(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redacted(v, secrets) for v in value]
    return value


def command_environment(data: Mapping[str, Any], environ: Mapping[str, str],
                        secrets: Sequence[str]) -> dict[str, str]:
    """The command's environment: this one without the account's variables or any value
    holding a secret, plus SSH_SCALE_<FIELD> for each plain field (lists comma-separated,
    None empty) and SSH_SCALE_JSON, the whole payload."""
    account = {name for names in idcf_api.ENV_NAMES.values() for name in names}
    env = {k: v for k, v in environ.items() if k not in account
           and not any(s and s in v for s in secrets)}
    for key, value in data.items():
        if isinstance(value, (list, tuple)):
            env[ENV_PREFIX + key.upper()] = ",".join(str(v) for v in value)
        elif not isinstance(value, Mapping):
            env[ENV_PREFIX + key.upper()] = "" if value is None else str(value)
    env[ENV_PREFIX + "JSON"] = json.dumps(data)
    return env


def webhook_secrets(settings: Settings) -> tuple[str, ...]:
    """The parts of [notify] webhook that hold its token (the URL, its path and query), for
    the log's redaction."""
    url = settings.notify.webhook if settings.notify else None
    if not url:
        return ()
    parts = urllib.parse.urlsplit(url)
    return tuple(p for p in (url, parts.path if len(parts.path) > 1 else "", parts.query) if p)


def _webhook_label(url: str) -> str:
    """The webhook as a log line names it: its host (and port), never its path."""
    parts = urllib.parse.urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"webhook {parts.hostname}{port}"


def _post(url: str, data: Mapping[str, Any], timeout: float) -> None:
    try:
        answer = requests.post(url, json=data, timeout=timeout,
                               headers={"User-Agent": f"ssh-scale/{__version__}"})
    except requests.Timeout:
        raise NotifyError(f"no answer within {timeout:g} s") from None
    except requests.exceptions.SSLError:
        raise NotifyError("TLS error (check the certificate)") from None
    except requests.ConnectionError:
        raise NotifyError("cannot connect") from None
    except requests.RequestException as exc:
        raise NotifyError(type(exc).__name__) from None
    if not 200 <= answer.status_code < 300:
        raise NotifyError(f"HTTP {answer.status_code}")


def _run(argv: Sequence[str], env: Mapping[str, str], timeout: float) -> None:
    # stderr to a file, not a pipe: a child the command leaves behind cannot hold us.
    with tempfile.TemporaryFile() as errors:
        try:
            process = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL,
                                       stdout=subprocess.DEVNULL, stderr=errors, env=dict(env),
                                       start_new_session=True)
        except OSError as exc:
            raise NotifyError(exc.strerror or str(exc)) from None
        try:
            status = process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise NotifyError(f"did not finish within {timeout:g} s (killed)") from None
        if status != 0:
            errors.seek(0)
            lines = errors.read().decode("utf-8", "replace").strip().splitlines()
            raise NotifyError(f"exit status {status}" + (f": {lines[-1]}" if lines else ""))


def send(report: Report, settings: Settings, host: str, secrets: Sequence[str] = (),
         environ: Optional[Mapping[str, str]] = None) -> None:
    """Notify [notify]'s webhook and command, at once, of the run's event when it is one of
    [notify] events (and of a brake it engaged besides an action: a second notification);
    waits at most [notify] timeout each; never raises (a failure, or a sender still busy at
    the timeout, is a warning line)."""
    config = settings.notify
    if config is None:
        return
    events = [event_of(report)]
    if report.notices and events[0] != "brake":  # a brake told besides the run's action
        events.append("brake")
    for event in events:
        if event is not None and event in config.events:
            _send_one(report, event, settings, host, secrets, environ)


def _send_one(report: Report, event: str, settings: Settings, host: str,
              secrets: Sequence[str], environ: Optional[Mapping[str, str]]) -> None:
    config = settings.notify
    assert config is not None  # send() checked
    data = _redacted(payload(report, event, settings, host), secrets)
    jobs: list[tuple[str, Callable[[], None]]] = []
    if config.webhook:
        url = config.webhook
        jobs.append((_webhook_label(url), lambda: _post(url, data, config.timeout)))
    if config.command:
        env = command_environment(data, os.environ if environ is None else environ, secrets)
        jobs.append((f"command {config.command[0]}",
                     lambda: _run(config.command, env, config.timeout)))
    failures: dict[str, str] = {}

    def attempt(label: str, job: Callable[[], None]) -> None:
        try:
            job()
        except Exception as exc:  # any failure is a warning line: the run is done
            failures[label] = str(exc) if isinstance(exc, NotifyError) else type(exc).__name__

    threads = [(label, threading.Thread(target=attempt, args=(label, job), daemon=True))
               for label, job in jobs]
    deadline = time.monotonic() + config.timeout + 1.0  # the senders' own bounds come first
    for _, thread in threads:
        thread.start()
    for label, thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            failures[label] = f"still busy after {config.timeout:g} s; not waiting"
        if label in failures:
            note("notify", f"{label}: {failures[label]} ({event} not delivered; the run is "
                           "not affected)", logging.WARNING)
