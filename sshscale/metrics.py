"""[metrics] textfile: the finished run as Prometheus gauges for node_exporter's textfile
collector, written after every live run (success or failure), atomically (a temporary file in
the same folder, then a rename), every series labelled with the load balancer so that several
pools can share one folder. An output of the finished Report: it cannot change the decision,
and a file that cannot be written is one warning line, never a failed run.

Times that outlive one run (the last success, the last action of each kind, the backoff's
end) come from this run when it knows them, from the cloud's facts (the load balancer's tags,
when the run read them), else from the previous textfile: it is read back only for those
values, never to decide anything.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Optional

from sshscale.decide import aggregate_load
from sshscale.logs import note
from sshscale.model import IN_SERVICE, PERIODS, Action, Report, Settings
from sshscale.notify import EVENT_OF_ACTION

__all__ = ["read_previous", "render", "write"]

PREFIX = "ssh_scale_"
HELP = {
    "pool_members": "VMs the load-balancer rule lists",
    "pool_in_service": "members Running, Starting or Migrating (the pool's size)",
    "pool_booting": "VMs starting, or deployed and not yet in the load balancer",
    "pool_committed": "what max_size bounds: the pool plus managed VMs outside it",
    "min_size": "min_size in force (a schedule's, else [scaling]'s)",
    "max_size": "max_size in force (a schedule's, else [scaling]'s)",
    "schedule_open": "1 while the [schedule NAME] window is open",
    "load": "the pool's measured load average per period (minutes), as decide() sees it",
    "hosts_measured": "hosts this run measured over SSH",
    "hosts_answered": "hosts that gave a load",
    "last_run_timestamp_seconds": "when the last run ended (unix time)",
    "last_run_success": "1 when the last run succeeded (exit status 0)",
    "last_success_timestamp_seconds": "when the last successful run ended (unix time)",
    "last_action_timestamp_seconds": "when each kind of action last happened (unix time)",
    "run_duration_seconds": "how long the last run took",
    "backoff_until_timestamp_seconds": "no deploy before this time (0: no failed-deploy "
                                       "backoff)",
}
_SAMPLE = re.compile(r'^(ssh_scale_[a-z_]+)(?:\{(.*)\})? (\S+)$')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
Key = tuple[str, str]  # (metric name without the prefix, its action label or "")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def read_previous(text: str, load_balancer: str) -> dict[Key, float]:
    """The values of a textfile this tool wrote for the load balancer; anything else (another
    pool's lines, unreadable ones) is skipped."""
    values: dict[Key, float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match:
            continue
        labels = {k: _unescape(v) for k, v in _LABEL.findall(match.group(2) or "")}
        if labels.get("load_balancer") != load_balancer:
            continue
        try:
            value = float(match.group(3))
        except ValueError:
            continue
        values[(match.group(1)[len(PREFIX):], labels.get("action", ""))] = value
    return values


def _seconds(when: Optional[datetime]) -> Optional[float]:
    return when.timestamp() if when else None


def _latest(*values: Optional[float]) -> Optional[float]:
    return max((v for v in values if v is not None), default=None)


def _samples(report: Report, settings: Settings, now: float, duration: float,
             previous: Mapping[Key, float]) -> Iterable[tuple[str, dict[str, str], float]]:
    """(name, labels besides load_balancer, value) for every series of this run."""
    pool = report.pool
    if report.pool_read:
        booting = [v for v in pool.vms if v.state == "Starting"
                   or (v.managed and not v.in_lb and v.state in IN_SERVICE)]
        yield from (("pool_members", {}, len(pool.members)), ("pool_in_service", {}, pool.count),
                    ("pool_booting", {}, len(booting)), ("pool_committed", {}, pool.committed))
    bounds = report.bounds
    yield "min_size", {}, bounds.min_size if bounds else settings.min_size
    yield "max_size", {}, bounds.max_size if bounds else settings.max_size
    opened = {w.schedule.name for w in bounds.windows} if bounds else set()
    for schedule in settings.schedules:
        yield "schedule_open", {"schedule": schedule.name}, int(schedule.name in opened)
    for period in PERIODS:
        load = aggregate_load(report.measurement, period, settings)
        if load is not None:
            yield "load", {"period": str(period)}, load
    yield "hosts_measured", {}, len(report.measurement.hosts)
    yield "hosts_answered", {}, len(report.measurement.answered)
    success = report.error is None
    yield "last_run_timestamp_seconds", {}, now
    yield "last_run_success", {}, int(success)
    last_success = now if success else previous.get(("last_success_timestamp_seconds", ""))
    if last_success is not None:
        yield "last_success_timestamp_seconds", {}, last_success
    yield from _action_times(report, now, previous)
    yield "run_duration_seconds", {}, duration
    history = report.history
    if history is not None:
        backoff = _seconds(history.backoff.until) if history.backoff else 0.0
    else:
        backoff = previous.get(("backoff_until_timestamp_seconds", ""))
    if backoff is not None:
        yield "backoff_until_timestamp_seconds", {}, backoff


def _action_times(report: Report, now: float, previous: Mapping[Key, float]
                  ) -> Iterable[tuple[str, dict[str, str], float]]:
    """The last time of each kind of action: this run's (when it was carried out), the cloud's
    facts (when read), the previous textfile's; the latest wins."""
    name = "last_action_timestamp_seconds"
    times = {action: value for (metric, action), value in previous.items() if metric == name}
    history = report.history
    if history is not None:
        for action, when in (("scale_out", history.last_scale_out),
                             ("scale_in", history.last_scale_in)):
            times[action] = _latest(times.get(action), _seconds(when)) or 0.0
    decision = report.decision
    if decision is not None and decision.action is not Action.NONE and report.result:
        # the actor finished it (the run may still fail after, e.g. no host measured)
        times[EVENT_OF_ACTION.get(decision.action.value, decision.action.value)] = now
    for action in sorted(times):
        if times[action]:
            yield name, {"action": action}, times[action]


def render(report: Report, settings: Settings, now: float, duration: float,
           previous: Mapping[Key, float]) -> str:
    """The textfile: HELP and TYPE lines, then every series, each labelled with the load
    balancer; times are unix seconds (`now` is this run's end)."""
    by_name: dict[str, list[tuple[dict[str, str], float]]] = {}
    for name, labels, value in _samples(report, settings, now, duration, previous):
        by_name.setdefault(name, []).append((labels, value))
    lb = f'load_balancer="{_escape(settings.load_balancer)}"'
    lines = []
    for name, samples in by_name.items():
        lines += [f"# HELP {PREFIX}{name} {HELP[name]}", f"# TYPE {PREFIX}{name} gauge"]
        for labels, value in samples:
            extra = "".join(f',{k}="{_escape(v)}"' for k, v in labels.items())
            lines.append(f"{PREFIX}{name}{{{lb}{extra}}} {float(value)!r}")
    return "\n".join(lines) + "\n"


def _replace_file(path: str, text: str) -> None:
    """Write the file whole or not at all: a temporary file in the same folder (not *.prom,
    so the collector never reads it half written), readable by all, then renamed over."""
    folder, name = os.path.split(path)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.chmod(temporary, 0o644)  # node_exporter runs as another user
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def write(report: Report, settings: Settings, duration: float, now: float) -> None:
    """Write [metrics] textfile for this finished run, if configured; never raises (a file
    that cannot be written is a warning line)."""
    path = settings.metrics_textfile
    if path is None:
        return
    try:
        with open(path, encoding="utf-8") as stream:
            previous = read_previous(stream.read(), settings.load_balancer)
    except (OSError, UnicodeDecodeError):
        previous = {}
    try:
        _replace_file(path, render(report, settings, now, duration, previous))
    except OSError as exc:
        note("metrics", f"cannot write {path}: {exc.strerror or exc} (the run is not "
                        "affected)", logging.WARNING)
