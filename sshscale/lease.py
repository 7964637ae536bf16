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
from datetime import datetime, timedelta
from typing import Optional

from idcf_api import Client, JobFailed
from sshscale.errors import LeaseBusy
from sshscale.facts import LEASE, lease_value, parse_lease
from sshscale.logs import note
from sshscale.model import Lease, Settings, shown_time
from sshscale.observe import read_rule_tags
from sshscale.tags import LOAD_BALANCER, TagWriter, already_there, refused

__all__ = ["change_deadline", "dead_here", "holder_id", "lease_seconds", "monitor_name",
           "pool_lease"]

LEASE_GUARD = 5.0


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


def lease_seconds(settings: Settings) -> float:
    """How long a lease lasts: one job that takes all of job_timeout, the drain, and as long
    again for the short jobs around them (LB changes, tags)."""
    return 2 * settings.job_timeout + settings.drain_seconds


def change_deadline(lease: Optional[Lease], settings: Settings) -> Optional[datetime]:
    """When the holder starts no more changes: shortly before its lease ends, as two monitors'
    clocks may differ by a few seconds (5 s, at most a tenth of the lease)."""
    if lease is None:
        return None
    return lease.expires - timedelta(seconds=min(LEASE_GUARD, lease_seconds(settings) / 10))


@contextlib.contextmanager
def pool_lease(client: Client, settings: Settings, now: datetime) -> Iterator[Optional[Lease]]:
    """Hold the pool's lease while the block runs (None where the cloud refuses the tag);
    raises LeaseBusy when another run holds a lease that has not expired."""
    tags = TagWriter(client, settings)
    lease = _take(client, tags, settings,
                  Lease(holder_id(), now + timedelta(seconds=lease_seconds(settings))), now)
    if lease is None:
        yield None
        return
    try:
        yield lease
    finally:
        _release(tags, settings, lease)


def _take(client: Client, tags: TagWriter, settings: Settings, lease: Lease,
          now: datetime) -> Optional[Lease]:
    """createTags the lease; if one is there, break it only when it has expired. None when
    the cloud refuses tags on the rule."""
    value = {LEASE: lease_value(lease)}
    try:
        tags.create(LOAD_BALANCER, settings.load_balancer, value)
        return lease
    except JobFailed as exc:
        if refused(exc):
            note("lease", "the cloud keeps no tags on load-balancer rules; relying on the "
                          "local lock alone (two monitors must not drive this pool)",
                 logging.WARNING)
            return None
        if not already_there(exc):
            raise
    raw = read_rule_tags(client, settings).get(LEASE)
    held = parse_lease(raw)
    if held is not None and held.expires > now and not dead_here(held.holder):
        raise LeaseBusy(f"another run ({held.holder}) holds the pool's lease until "
                        f"{shown_time(held.expires, settings.zone)}")
    if held is None:
        what = f"an unreadable lease {raw!r}"
    elif held.expires > now:
        what = f"the lease of {held.holder}, a run that died on this monitor"
    else:
        what = f"an expired lease ({held.holder})"
    note("lease", f"breaking {what}", logging.WARNING)
    if raw is not None:
        tags.delete(LOAD_BALANCER, settings.load_balancer, {LEASE: raw})
    try:
        tags.create(LOAD_BALANCER, settings.load_balancer, value)
    except JobFailed as exc:
        if already_there(exc):
            raise LeaseBusy("another run took the pool's lease first") from None
        raise
    return lease


def _release(tags: TagWriter, settings: Settings, lease: Lease) -> None:
    try:
        released = tags.delete(LOAD_BALANCER, settings.load_balancer,
                               {LEASE: lease_value(lease)})
    except Exception as exc:  # the action's outcome matters more; the lease expires anyway
        released = False
        note("lease", f"could not release the lease ({exc})", logging.WARNING)
    if not released:
        note("lease", f"the lease was not released; it expires at "
                      f"{shown_time(lease.expires, settings.zone)}",
             logging.WARNING)
