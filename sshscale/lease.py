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
from datetime import datetime, timedelta, timezone
from typing import Optional

from idcf_api import Client, JobFailed
from sshscale.errors import ConfigError, LeaseBusy
from sshscale.facts import LEASE, lease_value, parse_lease
from sshscale.logs import note
from sshscale.model import Lease, Settings
from sshscale.observe import read_rule_tags
from sshscale.tags import LOAD_BALANCER, TagWriter, already_there, refused

__all__ = ["boot_id", "change_deadline", "dead_here", "holder_id", "lease_seconds",
           "monitor_name", "pool_lease"]

LEASE_GUARD = 5.0
MONITOR_VARIABLE = "SSH_SCALE_MONITOR"
BOOT_ID = "/proc/sys/kernel/random/boot_id"
UNKNOWN_BOOT = "-"
# A host-name-like word short enough for the lease tag, whose value (at most 255 characters
# in CloudStack) holds it and 28 more.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


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
                        f"{held.expires:%Y-%m-%d %H:%M:%S} UTC")
    if raw is None:  # given back since createTags found it: nothing to break
        note("lease", "the lease was given back meanwhile; taking it")
    else:
        note("lease", f"breaking {_broken(held, raw, now)}", logging.WARNING)
        tags.delete(LOAD_BALANCER, settings.load_balancer, {LEASE: raw})
    try:
        tags.create(LOAD_BALANCER, settings.load_balancer, value)
    except JobFailed as exc:
        if already_there(exc):
            raise LeaseBusy("another run took the pool's lease first") from None
        raise
    return lease


def _broken(held: Optional[Lease], raw: str, now: datetime) -> str:
    """The lease a run breaks: an unreadable one, a dead run's, or an expired one."""
    if held is None:
        return f"an unreadable lease {raw!r}"
    if held.expires > now:
        return f"the lease of {held.holder}, a run that died on this monitor"
    return f"an expired lease ({held.holder})"


def _release(tags: TagWriter, settings: Settings, lease: Lease) -> None:
    try:
        released = tags.delete(LOAD_BALANCER, settings.load_balancer,
                               {LEASE: lease_value(lease)})
    except Exception as exc:  # the action's outcome matters more; the lease expires anyway
        released = False
        note("lease", f"could not release the lease ({exc})", logging.WARNING)
    if not released:
        note("lease", f"the lease was not released; it expires at "
                      f"{lease.expires.astimezone(timezone.utc):%Y-%m-%d %H:%M:%S} UTC",
             logging.WARNING)
