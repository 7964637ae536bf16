"""The facts ssh-scale keeps in the cloud's resource tags, so that any run on any monitor knows
them: their keys, how their values are written and read back (pure; tags carry no time of their
own, so every value that needs one holds it).

On the load-balancer rule:
  ssh-scale:scale-out   "<unix time> <deploy seconds>": when the last scale-out's VMs joined the
                        load balancer, and how long their deploy took (an adopt keeps the latter)
  ssh-scale:scale-in    unix time the last scale-in's VM left it
  ssh-scale:backoff:<n> "<n failed deploys in a row> <unix time the next deploy may start>"
                        (the next count is written before the previous one goes; of several,
                        the highest holds; a bare ssh-scale:backoff is an earlier version's)
  ssh-scale:lease       "<holder> <unix time it expires>": the one run acting on the pool now
  ssh-scale:launch:<token>
                        unix time a deploy of this pool was started (one tag per VM launched,
                        written before the deploy; kept an hour: the launch budget counts them)
  ssh-scale:budget      "<unix time> <run>": a deploy was held by the launch budget (one notice,
                        told by the run named)
  ssh-scale:refresh-halted
                        "<launch fingerprint> <unix time> <run>": the rolling refresh stopped
                        because a VM of that template and offering failed its health check
  ssh-scale:upgraded    unix time this version first acted on the pool (recognised an earlier
                        version's VMs, or launched one): from then on a member in the instance
                        group with neither the pool's name nor its tag is someone else's
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
  ssh-scale:tries       "<n>" on a VM deployed (0) or deployed to replace another (the n-th
                        replacement in a row of one member), until it passes its health check
  ssh-scale:given-up    "<unix time> <holder>": replacing this VM again was given up (the run
                        that created it told it)
  ssh-scale:repair:<n>  "<n failed repairs in a row> <unix time the next may start>": a repair
                        the cloud refused backs off per VM (written as the deploys' backoff)
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

__all__ = ["BACKOFF", "BUDGET", "DRAIN", "FIRST_BACKOFF_SECONDS", "GIVEN_UP", "LAUNCH_PREFIX",
           "LAUNCH_WINDOW", "LEASE", "NOISY", "POOL", "PROTECT", "REFRESH_HALTED", "REPAIR",
           "REPLACE", "SCALE_IN", "SCALE_OUT", "STUCK", "TRIES", "UNHEALTHY", "UPGRADED", "Tries",
           "backoff_after_failure", "backoff_key", "backoff_keys", "backoff_value",
           "history_from_tags", "latest_backoff", "launch_key", "lease_value", "parse_backoff",
           "parse_count", "parse_lease", "parse_time_value", "scale_out_value", "time_value",
           "tries_of_tags"]

SCALE_OUT = "ssh-scale:scale-out"
SCALE_IN = "ssh-scale:scale-in"
BACKOFF = "ssh-scale:backoff"
LEASE = "ssh-scale:lease"
LAUNCH_PREFIX = "ssh-scale:launch:"
BUDGET = "ssh-scale:budget"
NOISY = "ssh-scale:noisy"
REFRESH_HALTED = "ssh-scale:refresh-halted"
UPGRADED = "ssh-scale:upgraded"
POOL = "ssh-scale:pool"
DRAIN = "ssh-scale:drain"
UNHEALTHY = "ssh-scale:unhealthy"
REPLACE = "ssh-scale:replace"
TRIES = "ssh-scale:tries"
REPAIR = "ssh-scale:repair"
STUCK = "ssh-scale:stuck"
GIVEN_UP = "ssh-scale:given-up"
PROTECT = "ssh-scale:protect"
FIRST_BACKOFF_SECONDS = 60.0
LAUNCH_WINDOW = timedelta(hours=1)


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


def backoff_key(base: str, failures: int) -> str:
    """The key a backoff is written under: its base and its count of failures in a row, so
    that the next value is created before the previous one is removed (a key holds one
    value), and a run that dies in between leaves both: never none."""
    return f"{base}:{failures}"


def backoff_keys(tags: Mapping[str, str], base: str) -> tuple[str, ...]:
    """The backoff keys among the tags (keys lowercased): the base itself (an earlier
    version's) and every base:<count>."""
    return tuple(sorted(key for key in tags if key == base or key.startswith(f"{base}:")))


def latest_backoff(tags: Mapping[str, str], base: str) -> Optional[Backoff]:
    """The backoff the tags hold: of several (a run died between writing the next and removing
    the previous), the one with the most failures."""
    found = [b for b in (parse_backoff(tags[key]) for key in backoff_keys(tags, base)) if b]
    return max(found, key=lambda b: (b.failures, b.until), default=None)


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
    """A VM on trial: deployed (`count` = 0) or deployed to replace another (`count` = the
    replacements in a row of one member), and not yet healthy; `given_up`: replacing it again
    was given up."""

    on_trial: bool
    count: int = 0
    given_up: bool = False


def tries_of_tags(tags: Mapping[str, str]) -> Tries:
    """A VM's trial from its tags (keys lowercased)."""
    if TRIES not in tags:
        return Tries(False)
    return Tries(True, parse_count(tags[TRIES]), GIVEN_UP in tags)


def history_from_tags(tags: Mapping[str, str]) -> History:
    """What the load-balancer rule's tags (keys lowercased) say; unreadable values count as
    absent."""
    last_out, deploy_seconds = _parse_scale_out(tags.get(SCALE_OUT))
    halted = (tags.get(REFRESH_HALTED) or "").split()
    return History(
        last_scale_out=last_out,
        last_scale_in=parse_time_value(tags.get(SCALE_IN)),
        backoff=latest_backoff(tags, BACKOFF),
        backoff_keys=backoff_keys(tags, BACKOFF),
        lease=parse_lease(tags.get(LEASE)),
        deploy_seconds=deploy_seconds,
        launches=_launches(tags),
        budget_notice=parse_time_value((tags.get(BUDGET) or "").partition(" ")[0]),
        refresh_halted=halted[0] if halted else None,
        upgraded=UPGRADED in tags,
        noisy=parse_time_value(tags.get(NOISY)),
    )
