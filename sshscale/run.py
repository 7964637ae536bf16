"""One live run: take the config's lock, observe (SSH and the cloud), decide (reading the
pool's history only when the first answer says it depends on it), and when there is something
to do, take the pool's lease, look again and act, filling a Report. A scale-out of policy =
target only starts its deploys under the lock and the lease; finish_pending() waits for them
and assigns their VMs after both are given back, so that the next runs see them booting."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Optional

from idcf_api import Client
from sshscale.act import Actor
from sshscale.config import config_digest, display_path
from sshscale.decide import aggregate_load, decide
from sshscale.errors import LeaseBusy, LockBusy, SshError, TagError
from sshscale.interrupts import step
from sshscale.launch import Awaited
from sshscale.lease import change_deadline, holder_id, lease_seconds, pool_lease
from sshscale.logs import note
from sshscale.model import Action, Decision, History, Observation, Pending, Report, Settings
from sshscale.observe import observe, read_history, reread_pool
from sshscale.schedule import effective_bounds, with_bounds
from sshscale.tags import LOAD_BALANCER, USER_VM, TagWriter
from sshscale.upkeep import keep_marks
from sshscale.views import decision_verb, log_checks

__all__ = ["decide_with_history", "finish_pending", "lock_path", "other_run_on_this_monitor",
           "run_lock", "run_once"]

LEASE_RETRY_SECONDS = 2.0  # a deploy's end waits for another run's lease this often


def lock_path(config: str) -> str:
    """The lock file of a config: ~/.cache/ssh_scale/<hash of its real path>.lock, the same
    for cron, systemd and a login shell, and across an editor replacing the config."""
    return os.path.join(os.path.expanduser("~/.cache"), "ssh_scale",
                        f"{config_digest(config)}.lock")


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
    observation, report.notices = keep_marks(observation, bounded, client,
                                             write=not report.dry_run, holder=holder_id())
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
        _record_notice(decision, settings, client, report)
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


def _record_notice(decision: Decision, settings: Settings, client: Client,
                   report: Report) -> None:
    """A brake the decision engaged (the launch budget, a halted refresh) is recorded once, in
    a tag created only if absent: the run that creates it tells it (notify's brake event),
    so two monitors tell it once between them."""
    notice = decision.notice
    if notice is None:
        return
    kind, where = (USER_VM, notice.vm_id) if notice.vm_id else \
        (LOAD_BALANCER, settings.load_balancer)
    try:  # the value names this run: a tie with another monitor's is no tie
        TagWriter(client, settings).create(kind, where,
                                           {notice.key: f"{notice.value} {holder_id()}"})
    except TagError as exc:
        if not any(exc.found.values()):
            note("tags", f"could not record the notice: {exc}", logging.WARNING)
        return  # another run recorded it first: it told
    note("brake", notice.text, logging.WARNING)
    report.notices.append(notice.text)


@step("while holding the pool's lease")
def _act(observation: Observation, settings: Settings, client: Client, report: Report,
         ssh_config: Optional[Any], sleep: Callable[[float], None], skew: float,
         clock: Callable[[], datetime]) -> None:
    """Take the pool's lease (sized for the action decided), read the pool and its history
    again (another monitor may have acted since), decide again and act (a target scale-out:
    start its deploys). Times are on the cloud's clock: this machine's plus `skew` seconds."""
    planned = report.decision.action if report.decision else None
    with pool_lease(client, settings, observation.now, planned) as lease:
        observation = reread_pool(observation, settings, client, ssh_config)
        report.pool = observation.pool
        decision, report.history = decide_with_history(observation, settings, client)
        if decision.action is Action.NONE:
            _nothing_to_do(report, decision)
            _record_notice(decision, settings, client, report)
            return
        if lease is not None and \
                lease_seconds(settings, decision.action) > lease_seconds(settings, planned):
            _nothing_to_do(report, Decision(Action.NONE, f"the pool changed meanwhile: "
                                            f"{decision_verb(decision)} is for the next run "
                                            "(its lease would be too short)", rule="busy"))
            return
        report.decision = decision
        note("decision", f"{decision.action.value}: {decision.reason}", logging.WARNING)
        actor = Actor(client, settings, report.history or History(),
                      lambda: clock() + timedelta(seconds=skew),
                      change_deadline(lease, settings, planned), sleep)
        try:
            if decision.action is Action.SCALE_OUT and settings.policy == "target":
                report.pending = Pending(actor.start_scale_out(decision.count), skew,
                                         decision.noisy)
                report.result = f"{len(report.pending.deploys)} deploy(s) started"
                return
            report.result = actor.run(decision, observation.pool)
        finally:
            report.vm_ids, report.pool_after = tuple(actor.vm_ids), actor.count_after


def _join_under_lease(actor: Actor, awaited: Awaited, noisy: bool, settings: Settings,
                      client: Client, now: Callable[[], datetime],
                      sleep: Callable[[float], None]) -> str:
    """Assign the VMs that came up and record the scale under the pool's lease, waiting (up to
    job_timeout) for a run of another scale that holds it; then the next runs add them."""
    waited = 0.0
    while True:
        try:
            with pool_lease(client, settings, now(), Action.ADOPT) as lease:
                actor.deadline = change_deadline(lease, settings, Action.ADOPT)
                return actor.join(awaited, None, noisy)
        except LeaseBusy as exc:
            if waited >= settings.job_timeout:
                note("scale out", f"{exc}: the next runs add the new VMs"
                     + (" (the failed deploy is not counted)" if awaited.failure else ""),
                     logging.WARNING)
                return "deploys done; the next runs add the VMs"
        sleep(LEASE_RETRY_SECONDS)
        waited += LEASE_RETRY_SECONDS


def finish_pending(settings: Settings, client: Client, report: Report, *,
                   sleep: Callable[[float], None] = time.sleep,
                   clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)
                   ) -> Report:
    """The end of a target scale-out, once the run gave back the lock and the lease: wait for
    every deploy, then take the pool's lease again to add every VM that came up to the load
    balancer and record the scale (a VM another run adopted meanwhile counts as added).
    Meanwhile the next runs count the VMs as booting, and may add more. When another run
    holds the lease by then, the VMs are left to it and the next runs (which adopt them all
    at once)."""
    pending = report.pending
    if pending is None:
        return report
    note("scale out", f"waiting for {len(pending.deploys)} deploy(s) without the lock and the "
                      "pool's lease")
    def now() -> datetime:
        return clock() + timedelta(seconds=pending.skew)

    actor = Actor(client, settings, report.history or History(), now, None, sleep)
    try:
        with step(f"during the deploy of {len(pending.deploys)} VM(s)"):
            awaited = actor.await_deploys(pending.deploys)
        report.result = _join_under_lease(actor, awaited, pending.noisy, settings, client, now,
                                          sleep)
    finally:
        report.pool_after = actor.count_after
    return report
