"""Write the example replay traces (deterministic: the same bytes on every run).

  daily.csv     one day, every minute: ~2 load units at night, a lunch hump of ~7, an
                evening peak of ~14 around 20:00, with a little seeded noise
  spike.csv     four hours at 2 load units with a 90-minute spike to 16 (minutes 60-149)
  sawtooth.csv  six hours of hourly ramps from 2 to 14 over 50 minutes, then a drop to 2
  ramp.csv      a steep ramp: 2 load units, then 2 -> 20 in 15 minutes, an hour at 20, a
                slow decline over an hour (seeded noise)
  flash.csv     two flash crowds on a base of 3: a jump to 15 and to 20, each decaying back
                with a half-life of 20 and 12 minutes (seeded noise)
  plateau.csv   a noisy plateau near the threshold: 3 hours at ~5.8 load units (2.9 per VM
                on the 2 VMs of min_size, threshold_out 3) with minute-to-minute noise
  weekday.csv   an office weekday: night ~1.5, up to 12 by 9:30 and until 17:00 with a lunch
                dip to ~6 from 12:00 to 13:00, an evening decline (seeded noise)
  noisy-plateau.csv  six hours at 7.5 load units (2.5 VMs' worth at threshold_out 3) with
                independent minute-to-minute noise of +-2 (a standard deviation of 2)
  noisy-weekday.csv  the weekday's shape with minute-to-minute noise of +-0.8 (a standard
                deviation of 0.8)
  launch.csv    three days of web traffic, busiest in the afternoon (3 at night, up to 10,
                30 % more from day two), a launch at 10:00 on day two (+17, halving every two
                hours; the peak needs 10 VMs), and about +-20 % from one minute to the next
                (log-normal noise)
The real trace of the World Cup 1998 web site is in wc98/ (see wc98/SOURCE.md).

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


def noisy(values: Sequence[float], seed: int, sigma: float) -> Rows:
    """Minute rows of values plus Gaussian noise (seeded), rounded to 0.01, never below 0."""
    noise = random.Random(seed)
    return [(minute, max(0.0, round(value + noise.gauss(0.0, sigma), 2)))
            for minute, value in enumerate(values)]


def ramp_rows() -> Rows:
    """A steep ramp: 30 min at 2, 2 -> 20 in 15 min, 60 min at 20, back to 2 over 60 min."""
    values = [2.0] * 30 + [2.0 + 18.0 * m / 15 for m in range(15)] + [20.0] * 60
    values += [20.0 - 18.0 * m / 60 for m in range(60)] + [2.0] * 75
    return noisy(values, SEED + 1, 0.25)


def flash_rows() -> Rows:
    """Two flash crowds on a base of 3: +12 at minute 40 (half-life 20 min), +17 at minute
    160 (half-life 12 min), each reaching its peak within 2 minutes."""
    values = []
    for minute in range(300):
        demand = 3.0
        for start, height, half_life in ((40, 12.0, 20.0), (160, 17.0, 12.0)):
            if minute >= start:
                rise = min(1.0, (minute - start + 1) / 2)
                demand += height * rise * 0.5 ** (max(0, minute - start - 1) / half_life)
        values.append(demand)
    return noisy(values, SEED + 2, 0.25)


def plateau_rows() -> Rows:
    """30 min at 2, 3 hours of a noisy plateau at 5.8 (sigma 0.35), 30 min at 2."""
    values = [2.0] * 30 + [5.8] * 180 + [2.0] * 30
    return noisy(values, SEED + 3, 0.35)


def weekday_values() -> list[float]:
    """The office weekday without noise, per minute."""
    points = ((0, 1.5), (7.5, 1.5), (9.5, 12.0), (11.9, 12.0), (12.15, 6.0), (12.85, 6.0),
              (13.1, 12.0), (17.0, 12.0), (19.0, 3.0), (22.0, 1.5), (24.0, 1.5))
    values = []
    for minute in range(24 * 60):
        hour = minute / 60
        for (h0, d0), (h1, d1) in zip(points, points[1:]):
            if h0 <= hour < h1:
                values.append(d0 + (d1 - d0) * (hour - h0) / (h1 - h0))
                break
    return values


def weekday_rows() -> Rows:
    """An office weekday: ~1.5 at night, up to 12 from 7:30 to 9:30, a lunch dip to ~6 from
    12:00 to 13:00, down from 17:00 to ~3 by 19:00 and to 1.5 by 22:00."""
    return noisy(weekday_values(), SEED + 4, 0.25)


def noisy_plateau_rows() -> Rows:
    """Six hours at 7.5 load units with minute-to-minute noise of standard deviation 2."""
    return noisy([7.5] * 360, SEED + 5, 2.0)


def noisy_weekday_rows() -> Rows:
    """The office weekday with minute-to-minute noise of standard deviation 0.8."""
    return noisy(weekday_values(), SEED + 6, 0.8)


def launch_rows(seed: int = SEED + 7) -> Rows:
    """Three days of noisy web traffic with a launch-day flash crowd that needs 10 VMs.

    3 at night, up to 10 in the afternoon, 30 % more from day two; the launch at 10:00 on
    day two adds 17, halving every two hours; log-normal minute-to-minute noise (sigma 0.2:
    about +-20 %), drawn from `seed`."""
    noise = random.Random(seed)
    launch, rows = 24 * 60 + 10 * 60, []
    for minute in range(3 * 24 * 60):
        day, hour = divmod(minute / 60, 24)
        level = (3.0 + 7.0 * bump(hour, 14.0, 3.5)) * (1.3 if day >= 1 else 1.0)
        if minute >= launch:
            rise = min(1.0, (minute - launch + 1) / 5)
            level += 17.0 * rise * 0.5 ** (max(0, minute - launch - 4) / 120)
        rows.append((minute, round(level * math.exp(noise.gauss(0.0, 0.2)), 2)))
    return rows


TRACES = {"daily.csv": daily_rows, "spike.csv": spike_rows, "sawtooth.csv": sawtooth_rows,
          "ramp.csv": ramp_rows, "flash.csv": flash_rows, "plateau.csv": plateau_rows,
          "weekday.csv": weekday_rows, "noisy-plateau.csv": noisy_plateau_rows,
          "noisy-weekday.csv": noisy_weekday_rows, "launch.csv": launch_rows}


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
