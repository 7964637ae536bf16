"""Write the example replay traces (deterministic: the same bytes on every run).

  daily.csv     one day, every minute: ~2 load units at night, a lunch hump of ~7, an
                evening peak of ~14 around 20:00, with a little seeded noise
  spike.csv     four hours at 2 load units with a 90-minute spike to 16 (minutes 60-149)
  sawtooth.csv  six hours of hourly ramps from 2 to 14 over 50 minutes, then a drop to 2

Usage: python examples/make_traces.py [--out DIR]   (default: this script's directory)
Replay one: ssh_scale.py -c examples/replay.idcfrc --replay examples/spike.csv
"""

from __future__ import annotations

import argparse
import math
import os
import random
from collections.abc import Sequence
from typing import Optional

Rows = list[tuple[int, float]]

HEADER = "minute,demand"
SEED = 20130510  # any fixed seed: the noise must be the same on every run


def bump(hour: float, centre: float, width: float) -> float:
    """A Gaussian bump over a 24-hour clock (wraps around midnight)."""
    distance = min(abs(hour - centre), 24 - abs(hour - centre))
    return math.exp(-0.5 * (distance / width) ** 2)


def daily_rows() -> Rows:
    """One day of demand per minute: ~2 at night, ~7 at lunch, ~14 around 20:00."""
    noise = random.Random(SEED)
    rows = []
    for minute in range(24 * 60):
        hour = minute / 60
        demand = 1.5 + 5.5 * bump(hour, 12.5, 2.5) + 12.5 * bump(hour, 20.0, 1.6)
        rows.append((minute, max(0.0, round(demand + noise.gauss(0.0, 0.25), 2))))
    return rows


def spike_rows() -> Rows:
    """2 load units for four hours, except 16 from minute 60 to 149 (90 minutes)."""
    return [(0, 2.0), (60, 16.0), (150, 2.0), (239, 2.0)]


def sawtooth_rows() -> Rows:
    """Six hourly teeth: a linear ramp from 2 to 14 over 50 minutes, then 10 minutes at 2."""
    rows = []
    for minute in range(6 * 60):
        into = minute % 60
        rows.append((minute, round(2.0 + 12.0 * into / 50, 2) if into < 50 else 2.0))
    return rows


TRACES = {"daily.csv": daily_rows, "spike.csv": spike_rows, "sawtooth.csv": sawtooth_rows}


def render(rows: Rows, comment: str) -> str:
    """CSV text: a comment line, the header, one minute,demand row per line."""
    lines = [f"# {comment}", HEADER] + [f"{minute},{demand:g}" for minute, demand in rows]
    return "\n".join(lines) + "\n"


def write_traces(directory: str) -> list[str]:
    """Write every example trace into a directory; returns the paths written."""
    paths = []
    for name, make in TRACES.items():
        path = os.path.join(directory, name)
        summary = (make.__doc__ or "").strip().splitlines()[0]
        with open(path, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(render(make(), f"made by make_traces.py: {summary}"))
        paths.append(path)
    return paths


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Write the traces and list them."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)),
                        metavar="DIR", help="where to write the CSV files")
    args = parser.parse_args(argv)
    for path in write_traces(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
