"""The pool's lease: the one run, of any monitor driving this pool, that may act now. A tag on
the load-balancer rule, taken with createTags (which fails when the key exists: an atomic
create-if-absent) only when a run is about to act, released after; broken only once it has
expired. Where the cloud keeps no tags on load-balancer rules, a warning line, and the local
lock alone."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Optional

from idcf_api import Client
from sshscale.errors import LeaseBusy, TagError
from sshscale.facts import LEASE, lease_value, parse_lease
from sshscale.logs import note
from sshscale.model import Action, Lease, Settings
from sshscale.tags import LOAD_BALANCER, TAG_JOB_SECONDS, TagWriter, refused

__all__ = ["change_deadline", "dead_here", "holder_id", "lease_seconds", "monitor_name",
           "pool_lease"]

LEASE_GUARD = 5.0
# The jobs an action waits for, each up to job_timeout: deploys (awaited together) and the
# assign; remove and destroy; both for a replacement; a pending job and the assign or destroy.
LONG_JOBS = {Action.SCALE_OUT: 2, Action.SCALE_IN: 2, Action.REPLACE: 4, Action.ADOPT: 2,
             Action.READD: 2, Action.DESTROY: 2}
TAG_JOBS = 8  # the tag jobs of the longest action, with a read-back each (launch records,
# the pool's tag, the drain and replace marks, the scale time and backoff)


def holder_id() -> str:
    """Who holds a lease: this monitor's name ($SSH_SCALE_MONITOR, else the host name) and
    this run's process id."""
    return f"{monitor_name()}:{os.getpid()}"


def monitor_name() -> str:
    """This monitor's name in leases: $SSH_SCALE_MONITOR, else the host name."""
    return os.environ.get("SSH_SCALE_MONITOR") or socket.gethostname()


def dead_here(holder: str) -> bool:
    """A holder on this monitor whose process is gone (killed, rebooted): its lease is void
    at once; a holder elsewhere is trusted until its lease expires."""
    name, _, pid = holder.rpartition(":")
    if name != monitor_name() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def lease_seconds(settings: Settings, action: Optional[Action] = None) -> float:
    """How long a lease for an action lasts: each of its jobs may take all of job_timeout,
    each of its tag jobs TAG_JOB_SECONDS, plus the drain (for an unknown action, the longest:
    a replacement)."""
    long_jobs = LONG_JOBS.get(action, max(LONG_JOBS.values()))
    tag_jobs = TAG_JOBS * min(settings.job_timeout, TAG_JOB_SECONDS)
    return long_jobs * settings.job_timeout + tag_jobs + settings.drain_seconds


def change_deadline(lease: Optional[Lease], settings: Settings,
                    action: Optional[Action] = None) -> Optional[datetime]:
    """When the holder starts no more changes: shortly before its lease ends, as two monitors'
    clocks may differ by a few seconds (5 s, at most a tenth of the lease)."""
    if lease is None:
        return None
    guard = min(LEASE_GUARD, lease_seconds(settings, action) / 10)
    return lease.expires - timedelta(seconds=guard)


@contextlib.contextmanager
def pool_lease(client: Client, settings: Settings, now: datetime,
               action: Optional[Action] = None) -> Iterator[Optional[Lease]]:
    """Hold the pool's lease, sized for `action`, while the block runs (None where the cloud
    refuses the tag); raises LeaseBusy when another run holds a lease that has not expired."""
    tags = TagWriter(client, settings)
    lease = Lease(holder_id(), now + timedelta(seconds=lease_seconds(settings, action)))
    if not _take(tags, settings, lease, now):
        yield None
        return
    try:
        yield lease
    finally:
        _release(tags, settings, lease)


def _take(tags: TagWriter, settings: Settings, lease: Lease, now: datetime) -> bool:
    """createTags the lease; if one is there, break it only when it has expired (or its
    holder died on this monitor). What is there is read back after every failed call, never
    inferred from the error's wording. False when the cloud refuses tags on the rule."""
    value = {LEASE: lease_value(lease)}
    rule = settings.load_balancer
    try:
        tags.create(LOAD_BALANCER, rule, value)
        return True
    except TagError as exc:
        held = _lease_in(exc)
        if held is None:
            if refused(exc):
                note("lease", "the cloud keeps no tags on load-balancer rules; relying on the "
                              "local lock alone (two monitors must not drive this pool)",
                     logging.WARNING)
                return False
            note("lease", f"taking the lease failed and no lease is there ({exc.cause}); "
                          "trying once more", logging.WARNING)
            _create_again(tags, rule, value)
            return True
    parsed = parse_lease(held)
    if parsed is not None and parsed.expires > now and not dead_here(parsed.holder):
        raise LeaseBusy(f"another run ({parsed.holder}) holds the pool's lease until "
                        f"{parsed.expires:%Y-%m-%d %H:%M:%S} UTC")
    if parsed is None:
        what = f"an unreadable lease {held!r}"
    elif parsed.expires > now:
        what = f"the lease of {parsed.holder}, a run that died on this monitor"
    else:
        what = f"an expired lease ({parsed.holder})"
    note("lease", f"breaking {what}", logging.WARNING)
    tags.delete(LOAD_BALANCER, rule, {LEASE: held})  # by value: a newer lease stays
    _create_again(tags, rule, value)
    return True


def _create_again(tags: TagWriter, rule: str, value: dict[str, str]) -> None:
    """The lease's second and last try: a lease found there now is another run's."""
    try:
        tags.create(LOAD_BALANCER, rule, value)
    except TagError as exc:
        if _lease_in(exc) is not None:
            raise LeaseBusy("another run took the pool's lease first") from None
        raise


def _lease_in(exc: TagError) -> Optional[str]:
    """The lease value the read-back after a failed create found on the rule, if any."""
    return next((held[LEASE] for held in exc.found.values() if LEASE in held), None)


def _release(tags: TagWriter, settings: Settings, lease: Lease) -> None:
    try:
        tags.delete(LOAD_BALANCER, settings.load_balancer, {LEASE: lease_value(lease)})
    except Exception as exc:  # the action's outcome matters more; the lease expires anyway
        note("lease", f"the lease was not released ({exc}); it expires at "
                      f"{lease.expires.astimezone(timezone.utc):%Y-%m-%d %H:%M:%S} UTC",
             logging.WARNING)
