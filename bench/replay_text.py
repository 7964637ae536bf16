"""The replay comparison's words (bench/replay_compare.py): the header, Markdown tables, the
plateau's arithmetic and the reading, every figure taken from the tables it rests on."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

from sshscale import replay as rp
from sshscale.model import Settings

__all__ = ["HEADER", "bullet", "markdown_table", "pareto_words", "plateau_floor", "reading",
           "steady_pool", "wrap"]

WIDTH = 95
NUMERIC = {"overload minutes", "VM-minutes", "scale-outs", "scale-ins", "flips", "peak VMs",
           "x classic", "under (VMs)", "over (VMs)", "time under", "time over", "jitter/h"}

HEADER = """\
# Replay comparison of scaling policies

Produced by (from the repository root; deterministic, about a minute; `--write` also rewrites
the last section of BENCHMARKS.md and the plots in `docs/`):

```
.venv/bin/python examples/make_traces.py
.venv/bin/python bench/replay_compare.py --write
```

Setup: boot 150 s, thresholds 3/1 on the 1-minute load of the monitored VM, 2-8 VMs (10 for
noisy-plateau, 12 for launch and wc98), drain 30 s. "default" is `examples/replay.idcfrc`
(threshold rules, cooldown_out 120 s after a VM joined, cooldown_in 300 s); "proportional" adds
`step = proportional`; "classic" is the 2013 tool's rules (1-minute load of one VM, no
cooldown, no lock, one VM per run, booting VMs counted against max_size, no drain); "target" is
`examples/replay-target.idcfrc`: the 2013 keys only plus `[scalling] policy = target`, so every
target key takes its default derived from the thresholds (target 3, target_in 2.5, forecast
240 s, stabilization 600 s); a calm pool scales in halfway between target_in and the target
(2.75), a pool marked noisy (a scale-out took back a scale-in, or the load's spread drove it:
`ssh-scale:noisy`, kept by the replay as by the cloud) at target_in, for a day. A target
scale-out gives the per-config lock back once its deploy calls are accepted, as the live run
does; threshold runs hold it through the boot.

Peers (`bench/peers.py`, written from their documentation, on the same replay engine and the
same per-VM 1-minute load averages): "HPA t" is Kubernetes' HorizontalPodAutoscaler with the
autoscaling/v2 defaults at a target load t per VM (sync every 15 s, desired = ceil(ready VMs x
mean load / t), 10 % tolerance, VMs not yet ready count as 0 for a scale-up, scale-down to the
highest recommendation of the last 300 s, scale-up at once, at most doubling or +4 per 15 s);
"CloudStack AutoScale" is a CloudStack 4.18+ AutoScale VM group (the VMs' mean load sampled
every 30 s, scale up by one VM when its average over 120 s is above 3, down by one when below
1, 300 s quiet time per policy, nothing while a VM deploys, and each decision on a full 120 s of
samples after the last change).

Traces (`examples/make_traces.py`, seeded noise): daily (1440 min, ~2 at night, lunch ~7,
evening peak ~14), spike (240 min, 2 -> 16 for 90 min), sawtooth (360 min, hourly ramps
2 -> 14 over 50 min then 10 min at 2), ramp (240 min, 2 -> 20 in 15 min, an hour at 20, an
hour's decline), flash (300 min, base 3, flash crowds +12 and +17 decaying with half-lives of
20 and 12 min), plateau (240 min, 3 h at 5.8 +- 0.35: 2.9 per VM on min_size's 2 VMs),
weekday (1440 min, up to 12 from 9:30 to 17:00, a lunch dip to 6 from 12:00 to 13:00),
noisy-plateau (360 min at 7.5, 2.5 VMs' worth, +- 2 minute to minute), noisy-weekday (the
weekday +- 0.8), launch (three days, 3 at night and up to 10 in the afternoon, 30 % more from
day two, a launch at 10:00 on day two adding 17 that halves every two hours, about +- 20 %
minute to minute), wc98 (the 1998 World Cup web site, three days, two match-day flash crowds,
real traffic: `examples/wc98/SOURCE.md`).

Columns: overload minutes = minutes in which demand per in-service VM exceeded threshold_out (3)
at any 5-s step; VM-minutes = started minutes in which each VM existed (booting, in service or
draining); flips = direction changes within 10 minutes of the previous change; scale-outs/-ins
= VMs added/removed; peak VMs = most VMs booting or in service at once. The SPEC Research
Group's elasticity metrics (Herbst, Kounev, Reussner, ICAC 2013; BUNGEE), with d = VMs needed =
ceil(demand / 3) and s = VMs in service at each 5-s step: under (VMs) = mean of max(d - s, 0),
over (VMs) = mean of max(s - d, 0), time under/over = share of the time with s < d / s > d,
jitter/h = (changes of s - changes of d) per hour (negative: fewer adaptations than the demand
had changes). The bar (the issue): target's overload minutes <= classic's, VM-minutes <= 0.95 x
classic's, flips <= classic's. "peers": whether a peer (the HPA curve over targets 1.5-3.5
included) has both fewer overload minutes and fewer VM-minutes than target.
"""


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A GitHub-flavoured Markdown table; numbers right-aligned."""
    lines = ["| " + " | ".join(c.strip() for c in columns) + " |",
             "|" + "|".join("---:" if c in NUMERIC else "---" for c in columns) + "|"]
    lines += ["| " + " | ".join(str(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def wrap(text: str) -> str:
    return textwrap.fill(text, width=WIDTH)


def bullet(text: str) -> str:
    """A Markdown list item wrapped like the rest of the file."""
    return textwrap.fill(text, width=WIDTH, initial_indent="- ", subsequent_indent="  ")


def pareto_words(dominating: Sequence[tuple[str, rp.Summary]], short: bool) -> str:
    """Whether target is on the peers' Pareto front, and which peer points dominate it."""
    if not dominating:
        return "front" if short else ("target is on the Pareto front: no peer point has both "
                                      "fewer overload minutes and fewer VM-minutes.")
    points = ", ".join(f"{name} ({s.overload_minutes} / {s.vm_minutes})"
                       for name, s in dominating)
    return f"**dominated**: {points}" if short else (
        f"target is **not** on the Pareto front: {points} (overload / VM-minutes) have both "
        "fewer overload minutes and fewer VM-minutes.")


def plateau_floor(trace: rp.Trace, settings: Settings, classic: rp.Summary,
                  boot_seconds: float, cost_bar: float) -> tuple[tuple[int, int], str]:
    """Why no policy that reacts to the load meets the cost bar on the plateau: the least
    VM-minutes that keep overload at classic's, and the arithmetic as a sentence. Demand there
    never needs more than one VM beyond min_size, so only the minutes over min_size x
    threshold_out count: an extra VM must serve all but classic's number of them, billed from
    its creation (a boot before it serves, in started minutes) through the minute it leaves."""
    line = settings.min_size * settings.threshold_out
    over = [m for m, demand in enumerate(trace.per_minute()) if demand > line]
    allowed, boot = classic.overload_minutes, -(-int(boot_seconds) // 60)

    def stretch(first: int, last: int) -> int:
        return over[last] + 1 - over[first] + boot + 1

    # in one stretch: the allowed uncovered minutes at its ends
    single = min(stretch(i, len(over) - 1 - (allowed - i)) for i in range(allowed + 1))
    # in as many stretches as pays (a schedule that knows every peak a boot ahead)
    best: dict[tuple[int, int], int] = {}
    for first in range(len(over), -1, -1):
        for left in range(allowed + 1):
            if first == len(over):
                best[first, left] = 0
                continue
            options = [best[first + 1, left - 1]] if left else []
            options += [stretch(first, last) + best[last + 1, left]
                        for last in range(first, len(over))]
            best[first, left] = min(options)
    base, bar = settings.min_size * trace.minutes, cost_bar * classic.vm_minutes
    span = over[-1] + 1 - over[0]
    chance = len(over) / span
    short = base + single - bar
    return (base + single, base + best[0, allowed]), (
        f"plateau.csv: demand exceeds {line:g} (the overload line of the {settings.min_size} "
        f"VMs of min_size) in {len(over)} of the {span} minutes from minute {over[0]} to "
        f"{over[-1]}. Keeping overload at classic's {allowed} minutes needs a third VM for at "
        f"least {single} VM-minutes in one stretch, {base + single} in all, above "
        f"{cost_bar:g} x classic's {classic.vm_minutes} = {bar:g}. Only a schedule that knows "
        f"each noise peak a boot ahead, and drops and re-adds the VM between them, gets down "
        f"to {base + best[0, allowed]}; the noise is independent from minute to minute (a "
        f"minute in that span exceeds {line:g} with a chance of {chance:.2f}), so a policy "
        f"that reacts to the load pays about {chance:.2f} overload minutes for each minute "
        f"without the third VM: the {short:g} VM-minutes the bar asks for, plus a boot for "
        f"the re-add, would cost about {chance * (short + boot + 1):.0f} more overload "
        "minutes.")


def _names(items: Sequence[str]) -> str:
    return ", ".join(items) or "none"


def _against(results: Any) -> str:
    """Target's overload / VM-minutes against classic's on one trace (a TraceResults)."""
    mine, theirs = results.target, results.classic
    return (f"{mine.overload_minutes} / {mine.vm_minutes} against classic's "
            f"{theirs.overload_minutes} / {theirs.vm_minutes}: "
            f"{mine.vm_minutes / theirs.vm_minutes:.3f} x its VM-minutes")


def steady_pool(trace: rp.Trace, vms: int, threshold_out: float) -> tuple[int, int, int]:
    """(VMs, overload minutes, VM-minutes) of a pool held at `vms` VMs all along."""
    overload = sum(1 for demand in trace.per_minute() if demand > vms * threshold_out)
    return vms, overload, vms * trace.minutes


def reading(results: Mapping[str, Any], bars: Sequence[dict], variants: Sequence[dict],
            boots: Sequence[dict], seeds: Sequence[dict], steady: tuple[int, int, int]) -> str:
    """The findings, with the figures they rest on taken from the tables above; `steady` is
    what a pool held at one size would score on the noisy plateau (steady_pool)."""
    held = [row["trace"] for row in bars if row["bar"] == "holds"]
    failed = [f"{row['trace']} ({row['bar'].strip('*')[len('fails ('):-1]})" for row in bars
              if row["bar"] != "holds"]
    front = [row["trace"] for row in bars if row["peers"] == "front"]
    behind = [f"{row['trace']} ({row['peers'].split(': ', 1)[1]})" for row in bars
              if row["peers"] != "front"]
    ratios = [r.target.vm_minutes / r.classic.vm_minutes for name, r in results.items()
              if name in held]
    short = [f"{name} ({_against(r)})" for name, r in results.items()
             if name not in held and name != "plateau.csv"]
    flips = [(name, r.target.flips, r.classic.flips) for name, r in results.items()]
    draws = [row for row in seeds if not row["seed"].startswith("mean")]
    drawn = list(dict.fromkeys(row["trace"] for row in draws))
    means = [f"{row['trace']} {row['bar'].strip('*')}" for row in seeds
             if row["seed"].startswith("mean")]
    classic = {name: r.classic for name, r in results.items()}
    unlocked = {name: r.target.overload_minutes for name, r in results.items()}
    lock_costs = [f"{r['trace']} ({r['overload minutes']} against {unlocked[r['trace']]})"
                  for r in variants if r["policy"] == "target, lock held through the boot"
                  and r["overload minutes"] > unlocked[r["trace"]]]
    lock_misses = [f"{r['trace']} ({r['overload minutes']} > "
                   f"{classic[r['trace']].overload_minutes} overload minutes)" for r in variants
                   if r["policy"] == "target, lock held through the boot"
                   and r["overload minutes"] > classic[r["trace"]].overload_minutes]

    def misses(boot: str, column: str) -> str:
        found = [f"{r['trace']} ({r[column].strip('*')[len('fails ('):-1]})" for r in boots
                 if r["boot"] == boot and r[column] != "holds"]
        return _names(found)

    return "\n".join(["## Reading", "", *(bullet(text) for text in (
        f"**The bar holds on {len(held)} of the {len(bars)} traces** ({_names(held)}), at "
        f"{min(ratios):.3f}-{max(ratios):.3f} x classic's VM-minutes. It fails on "
        f"{_names(failed)}.",
        "plateau.csv's cost part is out of reach for any policy that reacts to the load "
        "(the arithmetic is under its trade-off table). Noise alone does not make the bar "
        f"impossible: on noisy-plateau, {steady[0]} VMs from the first minute to the last (one "
        f"more than the mean needs) would have {steady[1]} overload minutes and {steady[2]} "
        f"VM-minutes, against classic's {results['noisy-plateau.csv'].classic.overload_minutes} "
        f"and {results['noisy-plateau.csv'].classic.vm_minutes}.",
        (f"**Where the bar still fails besides the plateau**: {_names(short)}." if short else
         f"**The noisy plateau meets the bar**: {_against(results['noisy-plateau.csv'])}.")
        + " A pool starts calm and learns that its load is noisy only from a scale-out "
        "that takes back a scale-in or that the spread drove (the ssh-scale:noisy mark): on "
        "the noisy plateau the first scale-in is judged at the calm margins and taken back 11 "
        "minutes later. The mark cannot come sooner: one run's three load averages cannot "
        "tell a noisy plateau from a gentle fall, and a quiet run writes nothing. What the "
        "take-back costs is bounded: it restores the VM the scale-in removed, and beyond "
        "that sizes for the demand without the spread's hedge (the take-back guard: the "
        "spread is the noise that fooled the scale-in), so the next minute's noise peak adds "
        "no fifth VM; the noisy pool's hedge (half the spread) adds one on some noise peaks, "
        "for about 11 minutes each.",
        "**Flips** (target / classic): "
        + ", ".join(f"{name} {mine} / {theirs}" for name, mine, theirs in flips) + ".",
        f"**One draw of the noise decides a lot**: over {len(draws)} draws of "
        f"{_names(drawn)} (their table), the bar holds on "
        f"{sum(1 for row in draws if row['bar'] == 'holds')}; classic's cost and overload "
        "swing with each draw far more than target's; on the mean of the draws the bar: "
        f"{', '.join(means)}.",
        f"**Against the peers**, target is on the Pareto front of overload against cost on "
        f"{len(front)} of the {len(bars)} traces ({_names(front)}); dominated on "
        f"{_names(behind)}.",
        "**Why the live run waits for a target scale-out's deploys without the lock**: with "
        "the lock held through the boot (the threshold policy's way, the variant \"target, "
        "lock held through the boot\") a run cannot add VMs while others boot: more overload "
        f"minutes on {_names(lock_costs)}; the overload part of the bar fails on "
        f"{_names(lock_misses) if lock_misses else 'no trace'}.",
        "The defaults fit the 150-s boot of the bar. At other boot times (their table) the "
        f"bar fails, with the default forecast, at 90 s on {misses('90 s', 'bar')} and at "
        f"240 s on {misses('240 s', 'bar')}; with forecast = boot + 90 s at 90 s on "
        f"{misses('90 s', 'bar ')} and at 240 s on {misses('240 s', 'bar ')}.",
        "Threshold policy (unchanged): `step = proportional` halves the spike's overload for "
        "+2 % cost; `[policy_in] period = 5` removes the sawtooth's flips for +8 % VM-minutes "
        "there; classic beats it on overload only because it overshoots.",
    ))])
