"""`ssh_scale.py --replay`: read the trace, replay it, print the report, draw the plot."""

from __future__ import annotations

import json
import math
from typing import Any, Optional

from sshscale.model import Settings
from sshscale.replay.plot import plot_replay, require_matplotlib
from sshscale.replay.report import result_json, text_report
from sshscale.replay.simulate import DEFAULT_BOOT_SECONDS, replay
from sshscale.replay.trace import ReplayError, read_trace

__all__ = ["checked_boot_seconds", "run_replay"]


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


def run_replay(settings: Settings, trace: str, *, policy: Optional[str] = None,
               plot: Optional[str] = None, boot_seconds: Optional[float] = None,
               as_json: bool = False) -> int:
    """`ssh_scale.py --replay`: replay, print the table (or JSON), draw the plot; returns 0.

    Raises ReplayError (a ConfigError: exit 2) for a bad trace, option or plot path."""
    boot = checked_boot_seconds(DEFAULT_BOOT_SECONDS if boot_seconds is None else boot_seconds)
    if plot:
        require_matplotlib()
    result = replay(read_trace(trace), settings, policy or "current", boot)
    if plot:
        plot_replay(result, plot)
    if as_json:
        print(json.dumps({**result_json(result), "plot": plot}))
    else:
        print(text_report(result) + (f"\nplot: {plot}" if plot else ""))
    return 0
