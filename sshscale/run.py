"""One live run: take the config's lock, observe (SSH and the cloud), decide (reading the
pool's history only when the first answer says it depends on it), and when there is something
to do, take the pool's lease, look again and act, filling a Report. A scale-out of policy =
target only starts its deploys under the lock and the lease; finish_pending() waits for them
and assigns their VMs after both are given back, so that the next runs see them booting."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Optional

from idcf_api import Client
from sshscale.act import Actor
from sshscale.config import display_path
from sshscale.decide import aggregate_load, decide
from sshscale.errors import LockBusy, SshError
from sshscale.health import keep_counts
from sshscale.interrupts import step
from sshscale.lease import change_deadline, pool_lease
from sshscale.logs import note
from sshscale.model import Action, Decision, History, Observation, Pending, Report, Settings
from sshscale.observe import observe, read_history, reread_pool
from sshscale.schedule import effective_bounds, with_bounds
from sshscale.views import decision_verb, log_checks

__all__ = ["decide_with_history", "finish_pending", "lock_path", "other_run_on_this_monitor",
           "run_lock", "run_once"]


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


def other_run_on_this_monitor(config: str) -> Optional[str]:
    """Whether another run of this config holds the lock here (for read-only looks, which
    create nothing: without a lock file no run holds it)."""
    try:
        with open(lock_path(config)) as handle:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except FileNotFoundError:
        return None
    except BlockingIOError:
        return "a run on this monitor holds the lock"
    return None


def decide_with_history(observation: Observation, settings: Settings,
                        client: Client) -> tuple[Decision, Optional[History]]:
    """decide() in two passes: without the pool's history first; only when that answer
    depends on it (a cooldown, the failed-deploy backoff) is it read and decide() asked
    again. Returns the decision and the history, if it was read."""
    first = decide(observation.measurement, observation.pool, settings, observation.now)
    if not first.needs_history:
        return first, None
    history = read_history(client, settings, observation.pool, observation.now)
    return decide(observation.measurement, observation.pool, settings, observation.now,
                  history), history


@step("while measuring the load and reading the pool", changing=False)
def run_once(settings: Settings, client: Client, report: Report, *,
             ssh_config: Optional[Any] = None, sleep: Callable[[float], None] = time.sleep,
             clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
             other_run: Optional[str] = None) -> Report:
    """Observe, decide and (unless report.dry_run) act once, filling the report as it goes
    (so that a failing run still reports what it saw and did); raises on operational
    failure, SshError when no host could be measured (after any min/max action). A read-only
    run is told `other_run` when another run of this config holds the lock here."""
    local_now = clock()
    report.time = local_now.isoformat(timespec="seconds")
    observation = observe(settings, client, ssh_config, local_now, report.dry_run)
    report.bounds = effective_bounds(settings, observation.now)
    bounded = with_bounds(settings, report.bounds)  # what the log and health lines quote
    observation = keep_counts(observation, bounded, client, write=not report.dry_run)
    report.measurement, report.pool, report.pool_read = (observation.measurement,
                                                         observation.pool, True)
    report.load_out = aggregate_load(observation.measurement, settings.period_out, settings)
    report.load_in = aggregate_load(observation.measurement, settings.period_in, settings)
    log_checks(report, bounded)
    decision, report.history = decide_with_history(observation, settings, client)
    report.decision = decision
    if report.dry_run:
        _look(observation, settings, client, report, decision, other_run)
    elif decision.action is Action.NONE:
        _nothing_to_do(report, decision)
    else:
        _act(observation, settings, client, report, ssh_config, sleep,
             (observation.now - local_now).total_seconds(), clock)
    measured = observation.measurement.hosts
    if measured and not observation.measurement.answered:
        raise SshError("; ".join(h.error or "" for h in measured))
    return report


def _nothing_to_do(report: Report, decision: Decision) -> None:
    report.decision = decision
    note("decision", f"none: {decision.reason}")
    report.result = "nothing to do"


def _look(observation: Observation, settings: Settings, client: Client, report: Report,
          decision: Decision, other_run: Optional[str]) -> None:
    """A read-only run: what would be done, or that another run is acting (then its VMs
    in flight are no leftovers to repair)."""
    history = report.history or read_history(client, settings, observation.pool,
                                              observation.now)
    report.history = history
    lease = history.lease
    if lease is not None and lease.expires > observation.now:
        other_run = other_run or f"{lease.holder} holds the pool's lease"
    if decision.action is Action.NONE:
        _nothing_to_do(report, decision)
    elif other_run:
        _nothing_to_do(report, Decision(Action.NONE, f"another run is acting ({other_run})",
                                        rule="busy"))
    else:
        note("dry run", f"would {decision_verb(decision)}: {decision.reason}", logging.WARNING)
        report.result = "dry run: no change made"


@step("while holding the pool's lease")
def _act(observation: Observation, settings: Settings, client: Client, report: Report,
         ssh_config: Optional[Any], sleep: Callable[[float], None], skew: float,
         clock: Callable[[], datetime]) -> None:
    """Take the pool's lease, read the pool and its history again (another monitor may have
    acted since), decide again and act (a target scale-out: start its deploys). Times are on
    the cloud's clock: this machine's plus `skew` seconds."""
    with pool_lease(client, settings, observation.now) as lease:
        observation = reread_pool(observation, settings, client, ssh_config)
        report.pool = observation.pool
        decision, report.history = decide_with_history(observation, settings, client)
        if decision.action is Action.NONE:
            _nothing_to_do(report, decision)
            return
        report.decision = decision
        note("decision", f"{decision.action.value}: {decision.reason}", logging.WARNING)
        actor = Actor(client, settings, report.history or History(),
                      lambda: clock() + timedelta(seconds=skew), change_deadline(lease, settings),
                      sleep)
        try:
            if decision.action is Action.SCALE_OUT and settings.policy == "target":
                report.pending = Pending(actor.start_scale_out(decision.count), skew)
                report.result = f"{decision.count} deploy(s) started"
                return
            report.result = actor.run(decision, observation.pool)
        finally:
            report.vm_ids, report.pool_after = tuple(actor.vm_ids), actor.count_after


def finish_pending(settings: Settings, client: Client, report: Report, *,
                   sleep: Callable[[float], None] = time.sleep,
                   clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
                   ) -> Report:
    """The end of a target scale-out, once the run gave back the lock and the lease: wait for
    its deploys and add their VMs to the load balancer (a VM another run adopted meanwhile
    counts as added). Meanwhile the next runs count the VMs as booting, and may add more."""
    pending = report.pending
    if pending is None:
        return report
    note("scale out", f"waiting for {len(pending.deploys)} deploy(s) without the lock and the "
                      "pool's lease")
    actor = Actor(client, settings, report.history or History(),
                  lambda: clock() + timedelta(seconds=pending.skew), None, sleep)
    try:
        report.result = actor.finish_deploys(pending.deploys, None)
    finally:
        report.pool_after = actor.count_after
    return report
