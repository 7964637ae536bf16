"""One live run: take the config's lock, observe (SSH and the cloud), decide (reading the
event log only when the first answer says it depends on it), act, filling a Report."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any, Callable, Optional

from idcf_api import Client
from sshscale.act import Actor
from sshscale.config import display_path
from sshscale.decide import aggregate_load, decide
from sshscale.errors import LockBusy, SshError
from sshscale.logs import note
from sshscale.model import Action, Decision, Observation, Report, Settings
from sshscale.observe import observe, read_history
from sshscale.views import decision_verb, log_checks

__all__ = ["decide_with_history", "lock_path", "run_lock", "run_once"]


def lock_path(config: str) -> str:
    """The lock file of a config: ~/.cache/ssh_scale/<hash of its real path>.lock, the same
    for cron, systemd and a login shell, and across an editor replacing the config."""
    digest = hashlib.sha1(os.path.realpath(config).encode()).hexdigest()[:16]
    return os.path.join(os.path.expanduser("~/.cache"), "ssh_scale", f"{digest}.lock")


@contextlib.contextmanager
def run_lock(config: str) -> Iterator[None]:
    """Hold the config's flock for the run; raises LockBusy when another run holds it."""
    path = lock_path(config)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockBusy(f"another run holds the lock for {display_path(config)}") from None
        yield


def decide_with_history(observation: Observation, settings: Settings,
                        client: Client) -> Decision:
    """decide() in two passes: without the event log first; only when that answer depends
    on it (a cooldown, a repair) is the log read and decide() asked again."""
    first = decide(observation.measurement, observation.pool, settings, observation.now)
    if not first.needs_history:
        return first
    history = read_history(client, settings, observation.pool, observation.now)
    return decide(observation.measurement, observation.pool, settings, observation.now,
                  history)


def run_once(settings: Settings, client: Client, report: Report, *,
             ssh_config: Optional[Any] = None, sleep: Callable[[float], None] = time.sleep,
             clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> Report:
    """Observe, decide and (unless report.dry_run) act once, filling the report as it goes
    (so that a failing run still reports what it saw and did); raises on operational
    failure, SshError when no host could be measured (after any min/max action)."""
    local_now = clock()
    report.time = local_now.isoformat(timespec="seconds")
    observation = observe(settings, client, ssh_config, local_now)
    report.measurement, report.pool, report.pool_read = (observation.measurement,
                                                         observation.pool, True)
    report.load_out = aggregate_load(observation.measurement, settings.period_out, settings)
    report.load_in = aggregate_load(observation.measurement, settings.period_in, settings)
    log_checks(report, settings)
    decision = report.decision = decide_with_history(observation, settings, client)
    if decision.action is Action.NONE:
        note("decision", f"none: {decision.reason}")
        report.result = "nothing to do"
    elif report.dry_run:
        note("dry run", f"would {decision_verb(decision)}: {decision.reason}", logging.WARNING)
        report.result = "dry run: no change made"
    else:
        note("decision", f"{decision.action.value}: {decision.reason}", logging.WARNING)
        report.result = Actor(client, settings, sleep).run(decision, observation.pool)
    measured = observation.measurement.hosts
    if measured and not observation.measurement.answered:
        raise SshError("; ".join(h.error or "" for h in measured))
    return report
