"""`ssh_scale.py --replay`: read the inputs (a trace, sar -q reports, --json logs), replay
them, print the report, draw the plot."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from datetime import datetime, tzinfo
from typing import Any, Optional, Union

from sshscale.fleet_config import local_zone
from sshscale.model import Settings
from sshscale.replay.plot import plot_replay, require_matplotlib
from sshscale.replay.report import result_json, text_report
from sshscale.replay.simulate import DEFAULT_BOOT_SECONDS, VIRTUAL_EPOCH, replay
from sshscale.replay.sources import read_inputs
from sshscale.replay.trace import ReplayError

__all__ = ["checked_boot_seconds", "checked_start", "run_replay"]


def checked_boot_seconds(value: Any) -> float:
    """--boot-seconds as a finite number of seconds >= 0; raises ReplayError."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ReplayError(f"--boot-seconds: expected a number of seconds, got {value!r}") \
            from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ReplayError(f"--boot-seconds: expected a number of seconds of at least 0, "
                          f"got {value!r}")
    return seconds


def checked_start(value: str, zone: tzinfo) -> datetime:
    """--start ("2026-12-01 00:00", ISO 8601, an offset optional; without one, in `zone`) as
    an aware time; raises ReplayError."""
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ReplayError(f"--start: expected a time like '2026-12-01 00:00', got {value!r}") \
            from None
    return when if when.tzinfo else when.replace(tzinfo=zone)


def run_replay(settings: Settings, trace: Union[str, Sequence[str]], *,
               policy: Optional[str] = None, plot: Optional[str] = None,
               boot_seconds: Optional[float] = None, as_json: bool = False,
               start: Optional[str] = None, fmt: Optional[str] = None,
               members: Optional[int] = None, since: Optional[datetime] = None) -> int:
    """`ssh_scale.py --replay`: replay, print the table (or JSON), draw the plot; returns 0.
    `trace` is one input file or several (sources.read_inputs: `fmt`, `members`); `start` is
    the time of the trace's minute 0 (schedules are evaluated at it); `since` keeps the runs
    of --json logs from then on.

    Raises ReplayError (a ConfigError: exit 2) for a bad input, option or plot path."""
    boot = checked_boot_seconds(DEFAULT_BOOT_SECONDS if boot_seconds is None else boot_seconds)
    first = VIRTUAL_EPOCH if start is None else checked_start(start, local_zone(os.environ))
    if members is not None and members < 1:
        raise ReplayError(f"--members: expected a number of VMs of at least 1, got {members}")
    if plot:
        require_matplotlib()
    paths = [trace] if isinstance(trace, str) else list(trace)
    demand = read_inputs(paths, fmt, members, since)
    result = replay(demand, settings, policy or "current", boot, start=first)
    if plot:
        plot_replay(result, plot)
    if as_json:
        print(json.dumps({**result_json(result), "plot": plot}))
    else:
        print(text_report(result) + (f"\nplot: {plot}" if plot else ""))
    return 0
