"""The pool's lease: the one run, of any monitor driving this pool, that may act now. A tag on
the load-balancer rule, taken with createTags (which fails when the key exists: an atomic
create-if-absent) only when a run is about to act, released after; broken only once it has
expired. Where the cloud keeps no tags on load-balancer rules, a warning line, and the local
lock alone."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Optional

from idcf_api import Client
from sshscale.errors import ConfigError, LeaseBusy, ScaleError, TagError
from sshscale.facts import LEASE, lease_value, parse_lease
from sshscale.logs import note
from sshscale.model import Action, Lease, Settings, shown_time
from sshscale.tags import LOAD_BALANCER, TAG_JOB_SECONDS, TagWriter, answered, refused

__all__ = ["boot_id", "change_deadline", "dead_here", "holder_id", "lease_seconds",
           "monitor_name", "pool_lease"]

LEASE_GUARD = 5.0
MONITOR_VARIABLE = "SSH_SCALE_MONITOR"
BOOT_ID = "/proc/sys/kernel/random/boot_id"
UNKNOWN_BOOT = "-"
# A host-name-like word short enough for the lease tag, whose value (at most 255 characters
# in CloudStack) holds it and 28 more.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
# The jobs an action waits for, each up to job_timeout: deploys (awaited together) and the
# assign; remove and destroy; both for a replacement; a pending job and the assign or destroy.
LONG_JOBS = {Action.SCALE_OUT: 2, Action.SCALE_IN: 2, Action.REPLACE: 4, Action.ADOPT: 2,
             Action.READD: 2, Action.DESTROY: 2}
TAG_JOBS = 8  # the tag jobs of the longest action, with a read-back each (launch records,
# the pool's tag, the drain and replace marks, the scale time and backoff)


def holder_id() -> str:
    """Who holds a lease: `<monitor>:<boot>:<pid>`, this monitor's name, this boot of it (two
    hosts of one name, or one host before and after a reboot, differ) and this run's pid."""
    return f"{monitor_name()}:{boot_id()}:{os.getpid()}"


def monitor_name() -> str:
    """This monitor's name in leases and notifications: $SSH_SCALE_MONITOR, else the host
    name; raises ConfigError for a name that is not a host-name-like word."""
    given = os.environ.get(MONITOR_VARIABLE)
    name = given or socket.gethostname()
    if not _NAME.fullmatch(name):
        where = f"${MONITOR_VARIABLE}" if given else f"this host's name (set ${MONITOR_VARIABLE})"
        raise ConfigError(f"{where}: {name!r} is not a monitor name: up to 200 letters, digits, "
                          "'.', '-' and '_', starting with a letter or digit")
    return name


def boot_id() -> str:
    """This boot of this host: the first 8 hex digits of the kernel's boot id (Linux), or
    UNKNOWN_BOOT where there is none."""
    try:
        with open(BOOT_ID, encoding="ascii") as handle:
            return handle.read().strip().replace("-", "")[:8] or UNKNOWN_BOOT
    except (OSError, UnicodeDecodeError):
        return UNKNOWN_BOOT


def dead_here(holder: str) -> bool:
    """A holder of this boot of this monitor whose process is gone (killed): its lease is
    void at once. Any other holder is trusted until its lease expires: another host of the
    same name, this host before a reboot (a different boot id), a boot that cannot be told
    (UNKNOWN_BOOT) and a holder of the old `<monitor>:<pid>` form alike."""
    parts = holder.split(":")
    name, boot, pid = parts if len(parts) == 3 else ("", "", "")
    ours = boot_id()
    if (name, boot) != (monitor_name(), ours) or ours == UNKNOWN_BOOT or not pid.isdigit():
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
            if not answered(exc):  # it may land later: this run is no holder to act as
                raise ScaleError(f"taking the pool's lease went unanswered ({exc.cause}) and "
                                 "no lease is there yet: not acting this run (a lease that "
                                 "lands late is this run's, broken by the next run here)") \
                    from None
            note("lease", "the lease was given back meanwhile; taking it")
            note("lease", f"(the first take failed: {exc.cause})", logging.DEBUG)
            _create_again(tags, rule, value)
            return True
    parsed = parse_lease(held)
    if parsed is not None and parsed.expires > now and not dead_here(parsed.holder):
        raise LeaseBusy(f"another run ({parsed.holder}) holds the pool's lease until "
                        f"{shown_time(parsed.expires, settings.zone)}")
    note("lease", f"breaking {_broken(parsed, held, now)}", logging.WARNING)
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


def _broken(held: Optional[Lease], raw: str, now: datetime) -> str:
    """The lease a run breaks: an unreadable one, a dead run's, or an expired one."""
    if held is None:
        return f"an unreadable lease {raw!r}"
    if held.expires > now:
        return f"the lease of {held.holder}, a run that died on this monitor"
    return f"an expired lease ({held.holder})"


def _release(tags: TagWriter, settings: Settings, lease: Lease) -> None:
    try:
        tags.delete(LOAD_BALANCER, settings.load_balancer, {LEASE: lease_value(lease)})
    except Exception as exc:  # the action's outcome matters more; the lease expires anyway
        note("lease", f"the lease was not released ({exc}); it expires at "
                      f"{shown_time(lease.expires, settings.zone)}", logging.WARNING)
