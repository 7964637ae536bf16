"""Replay input: `minute,demand` traces -> Trace (the demand every minute of the replay).

Trace format: `minute,demand` lines; an optional `minute,demand` header; `#` starts a comment.
Minutes are integers >= 0 and strictly increasing; demand (>= 0) holds from its minute until the
next row.  The replay covers minute 0 through the last row's minute; before the first row, the
first row's demand applies.
"""

from __future__ import annotations

import gzip
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Optional

import textio
from sshscale.errors import ConfigError

__all__ = ["MAX_MINUTES", "ReplayError", "Trace", "TracePoint", "parse_trace", "read_input_text",
           "read_trace"]

MAX_MINUTES = 31 * 24 * 60
HEADER = ("minute", "demand")


class ReplayError(ConfigError):
    """A replay input (trace file, option) is unusable; main() exits 2 with this line."""


@dataclass(frozen=True)
class TracePoint:
    """From this minute on, the pool must absorb this much load (load-average units)."""

    minute: int
    demand: float


@dataclass(frozen=True)
class Trace:
    """A parsed trace: rows in increasing minute order."""

    source: str
    points: tuple[TracePoint, ...]

    @property
    def minutes(self) -> int:
        """Length of the replay: minute 0 through the last row's minute."""
        return self.points[-1].minute + 1

    def per_minute(self) -> list[float]:
        """The demand of every minute of the replay: each row holds until the next, and the
        first row's demand also covers the minutes before it."""
        demands: list[float] = []
        for point, following in zip(self.points, self.points[1:] + (None,)):
            end = following.minute if following else self.minutes
            demands += [point.demand] * (end - len(demands))
        return demands


def parse_trace(lines: Iterable[str], source: str) -> Trace:
    """A Trace from minute,demand lines; raises ReplayError naming source and line."""
    points: list[TracePoint] = []
    first_row = True
    for number, raw in enumerate(lines, start=1):
        text = raw.split("#", 1)[0].strip()
        if not text:
            continue
        fields = [f.strip() for f in text.split(",")]
        if first_row and tuple(f.lower() for f in fields) == HEADER:
            first_row = False
            continue
        where = f"{source}:{number}"
        previous = points[-1] if points else None
        points.append(_parse_row(fields, where, previous, header_allowed=first_row))
        first_row = False
    if not points:
        raise ReplayError(f"{source}: no rows (expected minute,demand lines)")
    return Trace(source, tuple(points))


def _parse_row(fields: Sequence[str], where: str, previous: Optional[TracePoint],
               header_allowed: bool) -> TracePoint:
    if len(fields) != 2:
        raise ReplayError(f"{where}: expected 2 fields (minute,demand), got {len(fields)}")
    minute_text, demand_text = fields
    if not re.fullmatch(r"\d+", minute_text):
        hint = " (a header line must read minute,demand)" if header_allowed else ""
        raise ReplayError(f"{where}: minute: expected an integer of at least 0, "
                          f"got {minute_text!r}{hint}")
    minute = int(minute_text)
    if previous is not None and minute <= previous.minute:
        raise ReplayError(f"{where}: minute: {minute} is not after the previous row's "
                          f"{previous.minute} (minutes must increase)")
    if minute >= MAX_MINUTES:
        raise ReplayError(f"{where}: minute: {minute} is beyond the replay limit of "
                          f"{MAX_MINUTES} minutes (31 days)")
    return TracePoint(minute, _parse_demand(demand_text, where))


def _parse_demand(text: str, where: str) -> float:
    try:
        demand = float(text)
    except ValueError:
        raise ReplayError(f"{where}: demand: expected a number, got {text!r}") from None
    if not math.isfinite(demand) or demand < 0:
        raise ReplayError(f"{where}: demand: expected a number of at least 0, got {text!r}")
    return demand


def read_input_text(path: str) -> str:
    """A replay input's text (UTF-8, a byte order mark dropped; a *.gz file, such as the run
    journal's rotated files or a compressed log, decompressed); raises ReplayError naming
    the file when it cannot be read."""
    if path.endswith(".gz"):
        try:
            with gzip.open(path, "rt", encoding="utf-8-sig") as stream:
                return stream.read()
        except FileNotFoundError:
            raise ReplayError(f"{path}: no such file") from None
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            raise ReplayError(f"{path}: not a gzip-compressed UTF-8 text file "
                              f"({getattr(exc, 'strerror', None) or exc})") from None
    try:
        return textio.read_text(path, "UTF-8 text", encoding="utf-8-sig")
    except textio.UnreadableFile as exc:
        raise ReplayError(str(exc)) from None


def read_trace(path: str) -> Trace:
    """Read and parse a trace file; raises ReplayError naming the file (and line)."""
    return parse_trace(read_input_text(path).splitlines(), path)
