"""The facts ssh-scale keeps in the cloud's resource tags, so that any run on any monitor knows
them: their keys, how their values are written and read back (pure; tags carry no time of their
own, so every value that needs one holds it).

On the load-balancer rule:
  ssh-scale:scale-out   unix time the last scale-out's VMs joined the load balancer
  ssh-scale:scale-in    unix time the last scale-in's VM left it
  ssh-scale:backoff     "<failed deploys in a row> <unix time the next deploy may start>"
  ssh-scale:lease       "<holder> <unix time it expires>": the one run acting on the pool now
On a VM:
  ssh-scale:drain       unix time it was taken out of the load balancer on purpose (a later run
                        finishes the scale-in)
  ssh-scale:unhealthy   how many runs in a row its health check failed (written only when
                        that changes; it stops at [health] unhealthy_runs)
  ssh-scale:replace     the id of the VM deployed to replace it (a later run finishes the
                        replacement once that VM serves)
  ssh-scale:protect     "true", set by the user: never scaled in, replaced or repaired away
  ssh-scale:pool        the load-balancer rule id of the pool it belongs to (with the pool's
                        instance group; --adopt sets both)
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Optional

from sshscale.model import Backoff, History, Lease

__all__ = ["BACKOFF", "DRAIN", "FIRST_BACKOFF_SECONDS", "LEASE", "POOL", "PROTECT", "REPLACE",
           "SCALE_IN", "SCALE_OUT", "UNHEALTHY", "backoff_after_failure", "backoff_value",
           "history_from_tags", "lease_value", "parse_count", "parse_lease", "parse_time_value",
           "time_value"]

SCALE_OUT = "ssh-scale:scale-out"
SCALE_IN = "ssh-scale:scale-in"
BACKOFF = "ssh-scale:backoff"
LEASE = "ssh-scale:lease"
DRAIN = "ssh-scale:drain"
UNHEALTHY = "ssh-scale:unhealthy"
REPLACE = "ssh-scale:replace"
PROTECT = "ssh-scale:protect"
POOL = "ssh-scale:pool"
FIRST_BACKOFF_SECONDS = 60.0


def time_value(when: datetime) -> str:
    """A time as a tag value: whole unix seconds."""
    return str(int(when.timestamp()))


def parse_time_value(value: Optional[str]) -> Optional[datetime]:
    """A tag's unix time, or None when absent or not a time (someone else's value)."""
    try:
        return datetime.fromtimestamp(int((value or "").strip()), timezone.utc)
    except (ValueError, OverflowError, OSError):
        return None


def parse_count(value: Optional[str]) -> int:
    """A tag's count (0 when absent or not a count: someone else's value)."""
    text = (value or "").strip()
    return int(text) if text.isascii() and text.isdigit() else 0


def _pair(value: Optional[str]) -> Optional[tuple[str, datetime]]:
    """"<word> <unix time>" -> (word, time); None for anything else."""
    parts = (value or "").split()
    when = parse_time_value(parts[1]) if len(parts) == 2 else None
    return (parts[0], when) if when is not None else None


def lease_value(lease: Lease) -> str:
    """The lease tag's value."""
    return f"{lease.holder} {time_value(lease.expires)}"


def parse_lease(value: Optional[str]) -> Optional[Lease]:
    """The lease a tag value describes, or None when it is absent or not ours to read."""
    pair = _pair(value)
    return Lease(*pair) if pair else None


def backoff_value(backoff: Backoff) -> str:
    """The backoff tag's value."""
    return f"{backoff.failures} {time_value(backoff.until)}"


def _parse_backoff(value: Optional[str]) -> Optional[Backoff]:
    pair = _pair(value)
    if pair is None or not pair[0].isdigit() or int(pair[0]) < 1:
        return None
    return Backoff(int(pair[0]), pair[1])


def backoff_after_failure(previous: Optional[Backoff], now: datetime,
                          max_backoff: float) -> Backoff:
    """After one more failed deploy: wait 1 min, then 2, 4, ... up to max_backoff seconds."""
    failures = (previous.failures if previous else 0) + 1
    delay = min(FIRST_BACKOFF_SECONDS * 2 ** min(failures - 1, 30), max_backoff)
    return Backoff(failures, now + timedelta(seconds=delay))


def history_from_tags(tags: Mapping[str, str]) -> History:
    """What the load-balancer rule's tags (keys lowercased) say; unreadable values count as
    absent."""
    return History(
        last_scale_out=parse_time_value(tags.get(SCALE_OUT)),
        last_scale_in=parse_time_value(tags.get(SCALE_IN)),
        backoff=_parse_backoff(tags.get(BACKOFF)),
        lease=parse_lease(tags.get(LEASE)),
    )
