"""The facts ssh-scale keeps in the cloud's resource tags, so that any run on any monitor knows
them: their keys, how their values are written and read back (pure; tags carry no time of their
own, so every value that needs one holds it).

On the load-balancer rule:
  ssh-scale:scale-out   "<unix time> <deploy seconds>": when the last scale-out's VMs joined the
                        load balancer, and how long their deploy took (an adopt keeps the latter)
  ssh-scale:scale-in    unix time the last scale-in's VM left it
  ssh-scale:backoff     "<failed deploys in a row> <unix time the next deploy may start>"
  ssh-scale:lease       "<holder> <unix time it expires>": the one run acting on the pool now
  ssh-scale:launch:<token>
                        unix time a deploy of this pool was started (one tag per VM launched,
                        written before the deploy; kept an hour: the launch budget counts them)
  ssh-scale:budget      unix time a deploy was first held by the launch budget (one notice)
  ssh-scale:refresh-halted
                        "<launch fingerprint> <unix time>": the rolling refresh stopped because
                        a VM of that template and offering failed its health check
  ssh-scale:noisy       unix time a target scale-out found the load noisy (it took back a
                        recent scale-in, or the load's spread drove it): wider margins for a day
On a VM:
  ssh-scale:pool        the load-balancer rule's id: the pool this VM belongs to (written once
                        it is up, or by --adopt; see sshscale/ownership.py)
  ssh-scale:drain       unix time it was taken out of the load balancer on purpose (a later run
                        finishes the scale-in)
  ssh-scale:unhealthy   how many runs in a row its health check failed (written only when
                        that changes; it stops at [health] unhealthy_runs)
  ssh-scale:replace     the id of the VM deployed to replace it (a later run finishes the
                        replacement once that VM serves)
  ssh-scale:tries       "<n>" on a VM deployed to replace another, until it passes its health
                        check: the n-th replacement in a row of one member ("<n> halted" once
                        replacing it again was given up)
  ssh-scale:repair      "<failed repairs in a row> <unix time the next may start>": a repair the
                        cloud refused backs off per VM
  ssh-scale:stuck       unix time the VM was first seen in a transitional state (Starting,
                        Stopping) without a pending job
  ssh-scale:protect     "true", set by the user: never scaled in, replaced or repaired away
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Optional

from sshscale.model import Backoff, History, Lease

__all__ = ["BACKOFF", "BUDGET", "DRAIN", "FIRST_BACKOFF_SECONDS", "LAUNCH_PREFIX", "LAUNCH_WINDOW",
           "LEASE", "NOISY", "POOL", "PROTECT", "REFRESH_HALTED", "REPAIR", "REPLACE", "SCALE_IN",
           "SCALE_OUT", "STUCK", "TRIES", "UNHEALTHY", "Tries", "backoff_after_failure",
           "backoff_value", "history_from_tags", "launch_key", "lease_value", "parse_backoff",
           "parse_count", "parse_lease", "parse_time_value", "parse_tries", "scale_out_value",
           "time_value", "tries_value"]

SCALE_OUT = "ssh-scale:scale-out"
SCALE_IN = "ssh-scale:scale-in"
BACKOFF = "ssh-scale:backoff"
LEASE = "ssh-scale:lease"
LAUNCH_PREFIX = "ssh-scale:launch:"
BUDGET = "ssh-scale:budget"
NOISY = "ssh-scale:noisy"
REFRESH_HALTED = "ssh-scale:refresh-halted"
POOL = "ssh-scale:pool"
DRAIN = "ssh-scale:drain"
UNHEALTHY = "ssh-scale:unhealthy"
REPLACE = "ssh-scale:replace"
TRIES = "ssh-scale:tries"
REPAIR = "ssh-scale:repair"
STUCK = "ssh-scale:stuck"
PROTECT = "ssh-scale:protect"
FIRST_BACKOFF_SECONDS = 60.0
LAUNCH_WINDOW = timedelta(hours=1)
HALTED = "halted"


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
    """The value of a backoff tag (the pool's deploys, or one VM's repairs)."""
    return f"{backoff.failures} {time_value(backoff.until)}"


def parse_backoff(value: Optional[str]) -> Optional[Backoff]:
    """A backoff tag's value, or None when absent or unreadable."""
    pair = _pair(value)
    if pair is None or not pair[0].isdigit() or int(pair[0]) < 1:
        return None
    return Backoff(int(pair[0]), pair[1])


def backoff_after_failure(previous: Optional[Backoff], now: datetime,
                          max_backoff: float) -> Backoff:
    """After one more failure: wait 1 min, then 2, 4, ... up to max_backoff seconds."""
    failures = (previous.failures if previous else 0) + 1
    delay = min(FIRST_BACKOFF_SECONDS * 2 ** min(failures - 1, 30), max_backoff)
    return Backoff(failures, now + timedelta(seconds=delay))


def scale_out_value(joined: datetime, deploy_seconds: Optional[float]) -> str:
    """The scale-out tag's value: when VMs joined, and how long their deploy took."""
    if deploy_seconds is None:
        return time_value(joined)
    return f"{time_value(joined)} {max(0, round(deploy_seconds))}"


def _parse_scale_out(value: Optional[str]) -> tuple[Optional[datetime], Optional[float]]:
    """The scale-out tag: (time, deploy seconds); a bare time (an earlier version's) has no
    deploy duration."""
    parts = (value or "").split()
    when = parse_time_value(parts[0]) if parts else None
    seconds = parts[1] if len(parts) == 2 else ""
    deploy = float(seconds) if when is not None and seconds.isdigit() else None
    return when, deploy


def launch_key(token: str) -> str:
    """The load-balancer rule's tag that records one launch."""
    return f"{LAUNCH_PREFIX}{token}"


def _launches(tags: Mapping[str, str]) -> tuple[tuple[str, datetime], ...]:
    """(key, time) of every launch record, oldest first."""
    found = []
    for key, value in tags.items():
        when = parse_time_value(value) if key.startswith(LAUNCH_PREFIX) else None
        if when is not None:
            found.append((key, when))
    return tuple(sorted(found, key=lambda pair: pair[1]))


@dataclass(frozen=True)
class Tries:
    """A replacement's generation: the n-th replacement in a row of one member (0: not a
    replacement that still has to prove itself); halted once replacing it again was given up."""

    count: int
    halted: bool = False


def tries_value(count: int, halted: bool = False) -> str:
    """The tries tag's value."""
    return f"{count} {HALTED}" if halted else str(count)


def parse_tries(value: Optional[str]) -> Tries:
    """The tries tag: 0 when absent or unreadable."""
    parts = (value or "").split()
    count = parse_count(parts[0]) if parts else 0
    return Tries(count, count > 0 and parts[1:] == [HALTED])


def history_from_tags(tags: Mapping[str, str]) -> History:
    """What the load-balancer rule's tags (keys lowercased) say; unreadable values count as
    absent."""
    last_out, deploy_seconds = _parse_scale_out(tags.get(SCALE_OUT))
    halted = (tags.get(REFRESH_HALTED) or "").split()
    return History(
        last_scale_out=last_out,
        last_scale_in=parse_time_value(tags.get(SCALE_IN)),
        backoff=parse_backoff(tags.get(BACKOFF)),
        lease=parse_lease(tags.get(LEASE)),
        deploy_seconds=deploy_seconds,
        launches=_launches(tags),
        budget_notice=parse_time_value(tags.get(BUDGET)),
        refresh_halted=halted[0] if halted else None,
        noisy=parse_time_value(tags.get(NOISY)),
    )
