"""Compare scaling policies by replaying the example traces through sshscale.decide.

Policies: "default" (examples/replay.idcfrc as is: threshold rules, one VM per run, scale-out
cooldown 120 s after a VM joined, scale-in cooldown 300 s), "proportional" (the same with
step = proportional), "classic" (the 2013 tool's rules) and "target"
(examples/replay-target.idcfrc: the 2013 keys only plus [scalling] policy = target, every
target key at its default). Thresholds 3/1, 2-8 VMs, boot 150 s unless a table says otherwise.

Deterministic: the same traces give the same bytes. Without --write, the Markdown goes to
stdout; with it, to bench/results-replay.md and BENCHMARKS.md's last section, and the plots
to docs/ (they need matplotlib).

Usage: .venv/bin/python bench/replay_compare.py [--write]
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import idcf_api  # noqa: E402
from sshscale import replay as rp  # noqa: E402
from sshscale.config import settings_from_config  # noqa: E402
from sshscale.model import Settings  # noqa: E402
from sshscale.replay.plot import plot_replay, require_matplotlib  # noqa: E402

EXAMPLES = os.path.join(ROOT, "examples")
CONFIG = os.path.join(EXAMPLES, "replay.idcfrc")
TARGET_CONFIG = os.path.join(EXAMPLES, "replay-target.idcfrc")
RESULTS = os.path.join(HERE, "results-replay.md")
BENCHMARKS = os.path.join(ROOT, "BENCHMARKS.md")
SECTION = "## What-if replay: policies compared"
TRACES = ("daily.csv", "spike.csv", "sawtooth.csv", "ramp.csv", "flash.csv", "plateau.csv",
          "weekday.csv")
PLOTS = (("flash.csv", "replay-target-flash.png"), ("sawtooth.csv", "replay-target-sawtooth.png"))
TRADEOFF_PLOT = "replay-tradeoff-plateau.png"
BOOT_SECONDS = 150.0
COST_BAR = 0.95  # the bar: VM-minutes at most 95 % of classic's
COLUMNS = ("trace", "policy", "overload minutes", "VM-minutes", "scale-outs", "scale-ins",
           "flips", "peak VMs")
BAR_COLUMNS = ("trace", "classic ovl / VM-min / flips", "default ovl / VM-min (ratio) / flips",
               "target ovl / VM-min (ratio) / flips", "bar")
TRADEOFF_COLUMNS = ("trace", "policy", "parameter", "overload minutes", "VM-minutes",
                    "x classic", "flips")
BOOT_COLUMNS = ("boot", "trace", "classic ovl / VM-min / flips",
                "target ovl / VM-min (ratio) / flips", "bar",
                "forecast boot + 90 s: ovl / VM-min (ratio) / flips", "bar ")
# (label, config, replay policy, Settings overrides, replay options)
Variant = tuple[str, str, str, dict, dict]
POLICIES: tuple[Variant, ...] = (
    ("default", CONFIG, "current", {}, {}),
    ("proportional", CONFIG, "current", {"step_out": "proportional"}, {}),
    ("classic", CONFIG, "classic", {}, {}),
    ("target", TARGET_CONFIG, "current", {}, {}),
)
VARIANTS: tuple[Variant, ...] = (
    ("default, period_in 5", CONFIG, "current", {"period_in": 5}, {}),
    ("proportional, period_in 5", CONFIG, "current",
     {"step_out": "proportional", "period_in": 5}, {}),
    ("proportional, period_in 5, cooldown_out 0", CONFIG, "current",
     {"step_out": "proportional", "period_in": 5, "cooldown_out": 0.0}, {}),
    ("proportional, period_in 15", CONFIG, "current", {"step_out": "proportional", "period_in": 15},
     {}),
    ("target, lock held through the boot", TARGET_CONFIG, "current", {}, {"boot_lock": True}),
    ("target, forecast 0", TARGET_CONFIG, "current", {"forecast": 0.0}, {}),
    ("target, stabilization 0", TARGET_CONFIG, "current", {"stabilization": 0.0}, {}),
    ("target, stabilization 300", TARGET_CONFIG, "current", {"stabilization": 300.0}, {}),
    ("target, target_in 3 (no margin)", TARGET_CONFIG, "current", {"target_in": 3.0}, {}),
    ("target, target_in 2 (mid-band)", TARGET_CONFIG, "current", {"target_in": 2.0}, {}),
)
TRADEOFF_TRACES = ("plateau.csv",)  # where target cannot meet the bar
# (policy, parameter label, config, replay policy, overrides) per point of a curve
TRADEOFF_POINTS: tuple[tuple[str, str, str, str, dict], ...] = tuple(
    [("classic", f"threshold_out {t:g}", CONFIG, "classic", {"threshold_out": t})
     for t in (2.6, 2.8, 3.0, 3.2, 3.3, 3.4)]
    + [("classic", f"threshold_in {t:g}", CONFIG, "classic", {"threshold_in": t})
       for t in (0.5, 1.5, 2.0)]
    + [("target", f"target {t:g}", TARGET_CONFIG, "current", {"target_out": t})
       for t in (2.6, 2.8, 3.0, 3.2, 3.3, 3.4)]
    + [("target", f"target_in {t:g}", TARGET_CONFIG, "current", {"target_in": t})
       for t in (2.0, 2.75)]
)
BOOTS = (90.0, 240.0)  # the boot-time table: besides the 150 s of every other table

HEADER = """\
# Replay comparison of scaling policies

Produced by (from the repository root; deterministic, about 20 s; `--write` also rewrites the
last section of BENCHMARKS.md and the plots in `docs/`):

```
.venv/bin/python examples/make_traces.py
.venv/bin/python bench/replay_compare.py --write
```

Setup: boot 150 s, thresholds 3/1 on the 1-minute load of the monitored VM, 2-8 VMs, drain
30 s. "default" is `examples/replay.idcfrc` (threshold rules, cooldown_out 120 s after a VM
joined, cooldown_in 300 s); "proportional" adds `step = proportional`; "classic" is the 2013
tool's rules (1-minute load of one VM, no cooldown, no lock, one VM per run, booting VMs
counted against max_size, no drain); "target" is `examples/replay-target.idcfrc`: the 2013
keys only plus `[scalling] policy = target`, so every target key takes its default derived
from the thresholds (target 3, target_in 2.5, forecast 240 s, stabilization 600 s). A target
scale-out gives the per-config lock back once its deploy calls are accepted, as the live run
does; threshold runs hold it through the boot.

Traces (`examples/make_traces.py`, seeded noise): daily (1440 min, ~2 at night, lunch ~7,
evening peak ~14), spike (240 min, 2 -> 16 for 90 min), sawtooth (360 min, hourly ramps
2 -> 14 over 50 min then 10 min at 2), ramp (240 min, 2 -> 20 in 15 min, an hour at 20, an
hour's decline), flash (300 min, base 3, flash crowds +12 and +17 decaying with half-lives of
20 and 12 min), plateau (240 min, 3 h at 5.8 +- 0.35: 2.9 per VM on min_size's 2 VMs),
weekday (1440 min, up to 12 from 9:30 to 17:00, a lunch dip to 6 from 12:00 to 13:00).

Columns: overload minutes = minutes in which demand per in-service VM exceeded threshold_out (3)
at any 5-s tick; VM-minutes = started minutes in which each VM existed (booting, in service or
draining); scale-outs/-ins = VMs added/removed; flips = direction changes within 10 minutes of
the previous change; peak VMs = most VMs booting or in service at once. The bar (the issue):
target's overload minutes <= classic's, VM-minutes <= 0.95 x classic's, flips <= classic's.
"""


def load_replay_settings(path: str) -> Settings:
    """Settings from an example config (a replay neither reads nor checks the key file)."""
    parser = idcf_api.read_config(path)
    return settings_from_config(parser, os.path.relpath(path, ROOT), environ={},
                                check_key=False)


def read_traces() -> dict[str, rp.Trace]:
    return {name: rp.read_trace(os.path.join(EXAMPLES, name)) for name in TRACES}


def run(trace: rp.Trace, config: str, policy: str, overrides: dict,
        options: Optional[dict] = None, boot: float = BOOT_SECONDS) -> rp.ReplayResult:
    """One replay; overload is always scored against the example's threshold_out (3)."""
    settings = replace(load_replay_settings(config), **overrides)
    line = load_replay_settings(CONFIG).threshold_out
    return rp.replay(trace, settings, policy, boot, overload_threshold=line, **(options or {}))


def replay_rows(traces: dict, variants: Sequence[Variant]) -> Iterator[dict]:
    """One table row per trace and variant."""
    for name, trace in traces.items():
        for label, config, policy, overrides, options in variants:
            summary = run(trace, config, policy, overrides, options).summary
            yield {"trace": name, "policy": label, "overload minutes": summary.overload_minutes,
                   "VM-minutes": summary.vm_minutes, "scale-outs": summary.scale_outs,
                   "scale-ins": summary.scale_ins, "flips": summary.flips,
                   "peak VMs": summary.peak_vms}


def verdict(candidate: rp.Summary, classic: rp.Summary) -> str:
    """'holds', or which parts of the bar fail."""
    failed = [part for part, ok in (
        ("overload", candidate.overload_minutes <= classic.overload_minutes),
        ("cost", candidate.vm_minutes <= COST_BAR * classic.vm_minutes),
        ("flips", candidate.flips <= classic.flips)) if not ok]
    return "holds" if not failed else f"**fails ({', '.join(failed)})**"


def against(summary: rp.Summary, classic: rp.Summary) -> str:
    """overload / VM-minutes (ratio to classic's) / flips."""
    ratio = summary.vm_minutes / classic.vm_minutes
    return f"{summary.overload_minutes} / {summary.vm_minutes} ({ratio:.3f}) / {summary.flips}"


def plain(summary: rp.Summary) -> str:
    return f"{summary.overload_minutes} / {summary.vm_minutes} / {summary.flips}"


def bar_rows(traces: dict) -> Iterator[tuple[dict, rp.Summary, rp.Summary]]:
    """Per trace: classic, the default threshold config and target, against the bar."""
    for name, trace in traces.items():
        classic = run(trace, CONFIG, "classic", {}).summary
        default = run(trace, CONFIG, "current", {}).summary
        target = run(trace, TARGET_CONFIG, "current", {}).summary
        yield ({"trace": name, BAR_COLUMNS[1]: plain(classic),
                BAR_COLUMNS[2]: against(default, classic), BAR_COLUMNS[3]: against(target, classic),
                "bar": verdict(target, classic)}, target, classic)


def boot_rows(traces: dict) -> Iterator[dict]:
    """The bar at other boot times, with the default forecast and with forecast = boot + 90."""
    for boot in BOOTS:
        for name, trace in traces.items():
            classic = run(trace, CONFIG, "classic", {}, boot=boot).summary
            target = run(trace, TARGET_CONFIG, "current", {}, boot=boot).summary
            tuned = run(trace, TARGET_CONFIG, "current", {"forecast": boot + 90}, boot=boot).summary
            yield {"boot": f"{boot:g} s", "trace": name, BOOT_COLUMNS[2]: plain(classic),
                   BOOT_COLUMNS[3]: against(target, classic), "bar": verdict(target, classic),
                   BOOT_COLUMNS[5]: against(tuned, classic), "bar ": verdict(tuned, classic)}


def tradeoff_rows(traces: dict) -> Iterator[dict]:
    """Overload against cost over each policy's main parameter, every point scored against
    the same overload line (3), whatever threshold or target the point decides with."""
    for name in TRADEOFF_TRACES:
        classic = run(traces[name], CONFIG, "classic", {}).summary
        for policy, parameter, config, replay_policy, overrides in TRADEOFF_POINTS:
            summary = run(traces[name], config, replay_policy, overrides).summary
            yield {"trace": name, "policy": policy, "parameter": parameter,
                   "overload minutes": summary.overload_minutes,
                   "VM-minutes": summary.vm_minutes,
                   "x classic": f"{summary.vm_minutes / classic.vm_minutes:.3f}",
                   "flips": summary.flips}


def plateau_floor(trace: rp.Trace) -> tuple[tuple[int, int], str]:
    """Why no policy that reacts to the load meets the cost bar on the plateau: the least
    VM-minutes that keep overload at classic's, and the arithmetic as a sentence. Demand there
    never needs more than one VM beyond min_size, so only the minutes over min_size x
    threshold_out count: an extra VM must serve all but classic's number of them, billed from
    its creation (a boot before it serves, in started minutes) through the minute it leaves."""
    settings = load_replay_settings(CONFIG)
    line = settings.min_size * settings.threshold_out
    over = [m for m, demand in enumerate(trace.per_minute()) if demand > line]
    classic = run(trace, CONFIG, "classic", {}).summary
    allowed, boot = classic.overload_minutes, -(-int(BOOT_SECONDS) // 60)

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
    base, bar = settings.min_size * trace.minutes, COST_BAR * classic.vm_minutes
    span = over[-1] + 1 - over[0]
    chance = len(over) / span
    short = base + single - bar
    return (base + single, base + best[0, allowed]), (
        f"plateau.csv: demand exceeds {line:g} (the overload line of the {settings.min_size} "
        f"VMs of min_size) in {len(over)} of the {span} minutes from minute {over[0]} to "
        f"{over[-1]}. Keeping overload at classic's {allowed} minutes needs a third VM for at "
        f"least {single} VM-minutes in one stretch, {base + single} in all, above "
        f"{COST_BAR:g} x classic's {classic.vm_minutes} = {bar:g}. Only a schedule that knows "
        f"each noise peak a boot ahead, and drops and re-adds the VM between them, gets down "
        f"to {base + best[0, allowed]}; the noise is independent from minute to minute (a "
        f"minute in that span exceeds {line:g} with a chance of {chance:.2f}), so a policy "
        f"that reacts to the load pays about {chance:.2f} overload minutes for each minute "
        f"without the third VM: the {short:g} VM-minutes the bar asks for, plus a boot for "
        f"the re-add, would cost about {chance * (short + boot + 1):.0f} more overload "
        "minutes.")


def plot_tradeoff(rows: Sequence[dict], floors: tuple[int, int], path: str) -> None:
    """Overload minutes against VM-minutes, one colour per policy, for plateau.csv."""
    figure = require_matplotlib()(figsize=(7, 4.5), constrained_layout=True)
    axes = figure.subplots()
    for policy, color in (("classic", "tab:orange"), ("target", "tab:green")):
        points = sorted((r for r in rows if r["policy"] == policy), key=lambda r: r["VM-minutes"])
        names = ", ".join(sorted({r["parameter"].split()[0] for r in points}))
        axes.plot([r["VM-minutes"] for r in points], [r["overload minutes"] for r in points],
                  "o", color=color, alpha=0.8, label=f"{policy}: {names}")
    classic = next(r for r in rows if r["parameter"] == "threshold_out 3")
    target = next(r for r in rows if r["parameter"] == "target 3")
    for point, text in ((classic, "classic (2013 config)"), (target, "target (defaults)")):
        axes.annotate(text, (point["VM-minutes"], point["overload minutes"]),
                      textcoords="offset points", xytext=(8, 10), fontsize="small")
    for floor, marker, text in zip(floors, ("kx", "k+"), ("with the third VM in one stretch",
                                                          "knowing the noise a boot ahead")):
        axes.plot([floor], [classic["overload minutes"]], marker, markersize=9,
                  label=f"least at classic's overload, {text} ({floor})")
    axes.axvline(COST_BAR * classic["VM-minutes"], color="gray", linestyle="--",
                 label=f"{COST_BAR:g} x classic's VM-minutes")
    axes.axhline(classic["overload minutes"], color="gray", linestyle=":",
                 label="classic's overload minutes")
    axes.set_xlabel("VM-minutes")
    axes.set_ylabel("overload minutes (demand per VM > 3)")
    axes.set_title("plateau.csv: overload against cost over each policy's parameters")
    axes.legend(fontsize="small")
    axes.grid(alpha=0.3)
    figure.savefig(path, dpi=100)


def markdown_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """A GitHub-flavoured Markdown table; numbers right-aligned."""
    numeric = {"overload minutes", "VM-minutes", "scale-outs", "scale-ins", "flips", "peak VMs",
               "x classic"}
    lines = ["| " + " | ".join(c.strip() for c in columns) + " |",
             "|" + "|".join("---:" if c in numeric else "---" for c in columns) + "|"]
    lines += ["| " + " | ".join(str(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def bullet(text: str) -> str:
    """A Markdown list item wrapped like the rest of the file."""
    return textwrap.fill(text, width=95, initial_indent="- ", subsequent_indent="  ")


def reading(bars: Sequence[tuple[dict, rp.Summary, rp.Summary]], variants: Sequence[dict],
            boots: Sequence[dict]) -> str:
    """The findings, with the figures they rest on taken from the tables above."""
    held = [row["trace"] for row, _, _ in bars if row["bar"] == "holds"]
    failed = [row["trace"] for row, _, _ in bars if row["bar"] != "holds"]
    ratios = [t.vm_minutes / c.vm_minutes for row, t, c in bars if row["bar"] == "holds"]
    classic = {row["trace"]: c for row, _, c in bars}
    lock_misses = [f"{r['trace']} ({r['overload minutes']} > "
                   f"{classic[r['trace']].overload_minutes} overload minutes)" for r in variants
                   if r["policy"] == "target, lock held through the boot"
                   and r["overload minutes"] > classic[r["trace"]].overload_minutes]

    def misses(boot: str, column: str) -> str:
        found = [f"{r['trace']} ({r[column].strip('*')[len('fails ('):-1]})" for r in boots
                 if r["boot"] == boot and r[column] != "holds"]
        return ", ".join(found) or "none"

    return "\n".join(["## Reading", "", *(bullet(text) for text in (
        f"**The bar holds on {len(held)} of the {len(bars)} traces** ({', '.join(held)}), at "
        f"{min(ratios):.3f}-{max(ratios):.3f} x classic's VM-minutes, with no flips.",
        f"**It fails on {', '.join(failed) or 'none'}**, on the cost part, where no policy "
        "that reacts to the load can pass: classic adds exactly the one VM that the plateau "
        "needs and holds it, so there is no overshoot to save (the arithmetic is under the "
        "trade-off table). No point of either policy's trade-off curve reaches the bar's "
        "corner; target's defaults pay a little more than classic there for fewer overload "
        "minutes (its trend sees the step to the plateau and adds the third VM as the plateau "
        "begins; classic waits for the 1-minute load to pass 3).",
        "**Why the live run waits for a target scale-out's deploys without the lock**: with "
        "the lock held through the boot (the threshold policy's way, the variant \"target, "
        "lock held through the boot\") a run cannot add VMs while others boot, and the "
        f"overload part of the bar fails on {', '.join(lock_misses) or 'no trace'}.",
        "Each ingredient, by the variants: without the trend (`forecast = 0`: the corrected "
        "1-minute load as is) target is late on every rise; without the stabilization (or "
        "with 300 s) a flash crowd's peak is followed by scale-ins within the 10 minutes that "
        "count as a flip; scale-in at the target itself (`target_in = 3`) flaps on daily, "
        "plateau and weekday; at the middle of the band (`target_in = 2`) it costs more on "
        "every trace.",
        "Steps overshoot: a jump looks like a steep ramp to the three load averages, so "
        "target runs to max_size on spike and flash where fewer VMs suffice (as classic does); "
        "its faster scale-in keeps the cost below classic's. A run that remembered the "
        "previous run's estimate could tell a step from a ramp; ssh-scale keeps no local "
        "state.",
        "The defaults fit the 150-s boot of the bar. At other boot times (their table) the "
        f"bar fails, with the default forecast, at 90 s on {misses('90 s', 'bar')} and at "
        f"240 s on {misses('240 s', 'bar')}; with forecast = boot + 90 s at 90 s on "
        f"{misses('90 s', 'bar ')} and at 240 s on {misses('240 s', 'bar ')}. A faster boot "
        "lets classic overshoot less, so there is less to save; a slower one needs the longer "
        "forecast for rises, which then flaps on the sawtooth's teeth.",
        "Threshold policy (unchanged): `step = proportional` halves the spike's overload for "
        "+2 % cost; `[policy_in] period = 5` removes the sawtooth's flips for +8 % VM-minutes "
        "there; classic beats it on overload only because it overshoots.",
    ))])


def document(traces: dict) -> tuple[str, list[dict], tuple[int, int]]:
    """The whole Markdown file; also the trade-off rows and the plateau's floor."""
    bars = list(bar_rows(traces))
    variants = list(replay_rows(traces, VARIANTS))
    boots = list(boot_rows(traces))
    tradeoff = list(tradeoff_rows(traces))
    floors, why = plateau_floor(traces["plateau.csv"])
    sections = [
        HEADER, "## The bar: target against classic\n",
        markdown_table([row for row, _, _ in bars], BAR_COLUMNS), "",
        *(f"![target on {name}](../docs/{png})" for name, png in PLOTS),
        "\n## Every policy\n", markdown_table(list(replay_rows(traces, POLICIES)), COLUMNS),
        "\n## Variants\n", markdown_table(variants, COLUMNS),
        "\n## Other boot times (target's forecast 240 s; or boot + 90 s)\n",
        markdown_table(boots, BOOT_COLUMNS),
        "\n## Trade-off on the plateau: overload against VM-minutes\n",
        markdown_table(tradeoff, TRADEOFF_COLUMNS), "", textwrap.fill(why, width=95), "",
        f"![plateau.csv: overload against cost](../docs/{TRADEOFF_PLOT})", "",
        reading(bars, variants, boots),
    ]
    return "\n".join(sections) + "\n", tradeoff, floors


def benchmarks_section(results: str) -> str:
    """results-replay.md as BENCHMARKS.md's last section: headings two levels down, image
    paths relative to the repository root."""
    lines = [SECTION, "",
             "Reproduced verbatim from `bench/results-replay.md` (only its headings moved down "
             "two levels", "and the plots' paths made relative to this file);",
             "`.venv/bin/python bench/replay_compare.py --write` regenerates both.", ""]
    for line in results.splitlines():
        lines.append("##" + line if line.startswith("#") else line.replace("](../docs/",
                                                                             "](docs/"))
    return "\n".join(lines) + "\n"


def write(results: str, tradeoff: Sequence[dict], floors: tuple[int, int],
          traces: dict) -> None:
    """bench/results-replay.md, BENCHMARKS.md's last section, and the plots in docs/."""
    with open(RESULTS, "w", encoding="utf-8") as handle:
        handle.write(results)
    with open(BENCHMARKS, encoding="utf-8") as handle:
        text = handle.read()
    with open(BENCHMARKS, "w", encoding="utf-8") as handle:
        handle.write(text[:text.index(SECTION)] + benchmarks_section(results))
    docs = os.path.join(ROOT, "docs")
    plot_tradeoff(tradeoff, floors, os.path.join(docs, TRADEOFF_PLOT))
    for name, png in PLOTS:
        plot_replay(run(traces[name], TARGET_CONFIG, "current", {}), os.path.join(docs, png))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Print the comparison as Markdown, or write it (and the plots) where it belongs."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true",
                        help="write bench/results-replay.md, BENCHMARKS.md's replay section "
                             "and the plots in docs/")
    args = parser.parse_args(argv)
    traces = read_traces()
    results, tradeoff, floors = document(traces)
    if args.write:
        write(results, tradeoff, floors, traces)
    else:
        sys.stdout.write(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

