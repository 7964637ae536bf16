"""Scheduled capacity, pure: which [schedule NAME] windows are open at a time, the pool bounds
they give, and the schedule names a decision's reason mentions.

A window is open when its cron expression's last fire time (in its zone) is less than its
duration ago: evaluated afresh at every run from the time alone, nothing remembered. Of the
open windows, the largest min_size and the largest max_size win (a bound no open window sets
stays [scaling]'s); should min_size then exceed max_size, it is lowered to it (max_size caps
the bill). Cron expressions are cronsim's (Debian cron's rules, DST included), imported only
when a config has schedules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Optional

from sshscale.model import Bounds, Schedule, Settings, Window

__all__ = ["CRON_FIELDS", "check_cron", "effective_bounds", "last_fire", "name_schedules",
           "open_windows", "with_bounds"]

CRON_FIELDS = "minute hour day-of-month month day-of-week"
CRONSIM_HINT = "needs the Python package cronsim (pip install 'cronsim>=2.6')"


def check_cron(expression: str) -> None:
    """Raise ValueError (with what is wrong) unless `expression` is a 5-field cron line."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"expected 5 fields ({CRON_FIELDS}), got {len(fields)} in "
                         f"{expression!r}")
    try:
        from cronsim import CronSim, CronSimError
    except ImportError:
        raise ValueError(CRONSIM_HINT) from None
    try:
        CronSim(expression, datetime(2000, 1, 1))
    except (CronSimError, ValueError, KeyError) as exc:
        raise ValueError(f"{exc or 'not a cron expression'} in {expression!r}") from None


def last_fire(schedule: Schedule, now: datetime) -> datetime:
    """The last time at or before `now` (aware) at which the schedule's cron fires."""
    from cronsim import CronSim

    # cronsim's reverse iteration yields times strictly before the one given (before its
    # minute in cronsim < 2.7, its second since): start at the next minute, so that a fire in
    # this minute (at its second 0, not after now) counts with either.
    start = (now.replace(second=0, microsecond=0) + timedelta(minutes=1)).astimezone(
        schedule.zone)
    return next(CronSim(schedule.cron, start, reverse=True))


def open_windows(schedules: Sequence[Schedule], now: datetime) -> tuple[Window, ...]:
    """The windows open at `now` (aware), in config order."""
    windows = []
    for schedule in schedules:
        opened = last_fire(schedule, now)
        # Elapsed time: aware arithmetic in a zone with DST would add wall-clock hours.
        closes = (opened.astimezone(timezone.utc) + timedelta(seconds=schedule.duration)
                  ).astimezone(schedule.zone)
        if now < closes:
            windows.append(Window(schedule, opened, closes))
    return tuple(windows)


def _largest(windows: Sequence[Window], key: str, base: int) -> tuple[int, Optional[str]]:
    """The largest value of a bound among the windows that set it (with the first schedule
    that sets it so), else [scaling]'s."""
    best: tuple[int, Optional[str]] = (base, None)
    for window in windows:
        value = getattr(window.schedule, key)
        if value is not None and (best[1] is None or value > best[0]):
            best = (value, window.schedule.name)
    return best


def effective_bounds(settings: Settings, now: datetime) -> Bounds:
    """The bounds in force at `now` (aware): [scaling]'s, or those of the open windows."""
    if not settings.schedules:
        return Bounds(settings.min_size, settings.max_size)
    windows = open_windows(settings.schedules, now)
    opened = {w.schedule.name for w in windows}
    closed = tuple(s.name for s in settings.schedules if s.name not in opened)
    min_size, min_from = _largest(windows, "min_size", settings.min_size)
    max_size, max_from = _largest(windows, "max_size", settings.max_size)
    if min_size <= max_size:
        return Bounds(min_size, max_size, windows, min_from, max_from, closed=closed)
    return Bounds(max_size, max_size, windows, max_from, max_from, clamped=True, closed=closed)


def with_bounds(settings: Settings, bounds: Bounds) -> Settings:
    """The settings with the bounds in force as min_size and max_size."""
    if (bounds.min_size, bounds.max_size) == (settings.min_size, settings.max_size):
        return settings
    return replace(settings, min_size=bounds.min_size, max_size=bounds.max_size)


def name_schedules(reason: str, bounds: Bounds) -> str:
    """The reason, followed by the schedule(s) that set the bounds it mentions:
    "pool has 2 VMs, below min_size 4 (schedule business-hours)"."""
    names = []
    for key, name in (("min_size", bounds.min_from), ("max_size", bounds.max_from)):
        if name and key in reason and name not in names:
            names.append(name)
    if not names:
        return reason
    return f"{reason} (schedule{'s' if len(names) > 1 else ''} {', '.join(names)})"
