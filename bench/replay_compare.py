"""Compare scaling policies by replaying the example traces through sshscale.decide, and against
the autoscalers a user would run instead (bench/peers.py).

Policies: "default" (examples/replay.idcfrc as is: threshold rules, one VM per run, scale-out
cooldown 120 s after a VM joined, scale-in cooldown 300 s), "proportional" (the same with
step = proportional), "classic" (the 2013 tool's rules), "target"
(examples/replay-target.idcfrc: the 2013 keys only plus [scalling] policy = target, every
target key at its default); peers: Kubernetes' HPA at targets 2, 2.5 and 3 (and a curve over
more targets) and a CloudStack AutoScale VM group. Thresholds 3/1, boot 150 s, 2-8 VMs unless
a trace needs more.

Deterministic: the same traces give the same bytes. Without --write, the Markdown goes to
stdout; with it, to bench/results-replay.md and BENCHMARKS.md's last section, and the plots
to docs/ (they need matplotlib).

Usage: .venv/bin/python bench/replay_compare.py [--write]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import idcf_api  # noqa: E402
from bench import peers  # noqa: E402
from bench.replay_plots import plot_pareto, plot_tradeoff  # noqa: E402
from bench.replay_text import (  # noqa: E402
    HEADER,
    markdown_table,
    pareto_words,
    plateau_floor,
    reading,
    steady_pool,
    wrap,
)
from sshscale import replay as rp  # noqa: E402
from sshscale.config import settings_from_config  # noqa: E402
from sshscale.model import Settings  # noqa: E402
from sshscale.replay.plot import plot_replay  # noqa: E402

EXAMPLES = os.path.join(ROOT, "examples")
CONFIG = os.path.join(EXAMPLES, "replay.idcfrc")
TARGET_CONFIG = os.path.join(EXAMPLES, "replay-target.idcfrc")
RESULTS = os.path.join(HERE, "results-replay.md")
BENCHMARKS = os.path.join(ROOT, "BENCHMARKS.md")
SECTION = "## What-if replay: policies compared"


@dataclass(frozen=True)
class TraceSetup:
    """A trace of the comparison: its name in the tables, its file under examples/, and the
    max_size it is replayed with (min_size is 2)."""

    name: str
    path: str
    max_size: int = 8

    @property
    def stem(self) -> str:
        return self.name.split(".")[0]


TRACES = (TraceSetup("daily.csv", "daily.csv"), TraceSetup("spike.csv", "spike.csv"),
          TraceSetup("sawtooth.csv", "sawtooth.csv"), TraceSetup("ramp.csv", "ramp.csv"),
          TraceSetup("flash.csv", "flash.csv"), TraceSetup("plateau.csv", "plateau.csv"),
          TraceSetup("weekday.csv", "weekday.csv"),
          TraceSetup("noisy-plateau.csv", "noisy-plateau.csv", 10),
          TraceSetup("noisy-weekday.csv", "noisy-weekday.csv"),
          TraceSetup("launch.csv", "launch.csv", 12),
          TraceSetup("wc98", "wc98/wc98_1998-06-28_3d.csv", 12))
SMOOTH = ("daily.csv", "spike.csv", "sawtooth.csv", "ramp.csv", "flash.csv", "plateau.csv",
          "weekday.csv")  # the variants and other boot times are replayed on these
PLOTS = (("flash.csv", "replay-target-flash.png"), ("sawtooth.csv", "replay-target-sawtooth.png"))
TRADEOFF_PLOT = "replay-tradeoff-plateau.png"
BOOT_SECONDS = 150.0
COST_BAR = 0.95  # the bar: VM-minutes at most 95 % of classic's
HPA_CURVE = (1.5, 2.0, 2.25, 2.5, 2.75, 3.0, 3.5)
SEEDS = 3  # other seeds of the noisy examples
METRICS = ("overload minutes", "VM-minutes", "flips", "scale-outs", "scale-ins", "peak VMs")
COLUMNS = ("policy", *METRICS, *rp.ELASTICITY_COLUMNS)
VARIANT_COLUMNS = ("trace", "policy", *METRICS)
BAR_COLUMNS = ("trace", "VMs", "classic ovl / VM-min / flips",
               "default ovl / VM-min (ratio) / flips", "target ovl / VM-min (ratio) / flips",
               "bar", "peers")
TRADEOFF_COLUMNS = ("trace", "policy", "parameter", "overload minutes", "VM-minutes",
                    "x classic", "flips")
BOOT_COLUMNS = ("boot", "trace", "classic ovl / VM-min / flips",
                "target ovl / VM-min (ratio) / flips", "bar",
                "forecast boot + 90 s: ovl / VM-min (ratio) / flips", "bar ")
SEED_COLUMNS = ("trace", "seed", "classic ovl / VM-min / flips",
                "target ovl / VM-min (ratio) / flips", "bar")
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
# (policy, parameter label, config, replay policy, overrides) per point of the plateau's curves
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


def load_replay_settings(path: str) -> Settings:
    """Settings from an example config (a replay neither reads nor checks the key file)."""
    parser = idcf_api.read_config(path)
    return settings_from_config(parser, os.path.relpath(path, ROOT), environ={},
                                check_key=False)


def read_traces() -> dict[str, rp.Trace]:
    """Every trace of the comparison by name."""
    return {setup.name: rp.read_trace(os.path.join(EXAMPLES, setup.path)) for setup in TRACES}


def setup_of(name: str) -> TraceSetup:
    return next(setup for setup in TRACES if setup.name == name)


def run(trace: rp.Trace, config: str, policy: str, overrides: dict,
        options: Optional[dict] = None, boot: float = BOOT_SECONDS,
        max_size: int = 8) -> rp.ReplayResult:
    """One replay; overload is always scored against the example's threshold_out (3)."""
    settings = replace(load_replay_settings(config), max_size=max_size, **overrides)
    line = load_replay_settings(CONFIG).threshold_out
    return rp.replay(trace, settings, policy, boot, overload_threshold=line, **(options or {}))


def run_peer(trace: rp.Trace, peer: rp.Peer, max_size: int) -> rp.Summary:
    """One replay of a peer on the example's config (thresholds, sizes, drain)."""
    settings = peers.peer_settings(replace(load_replay_settings(CONFIG), max_size=max_size))
    return rp.replay(trace, settings, boot_seconds=BOOT_SECONDS, peer=peer).summary


def policy_row(label: str, summary: rp.Summary) -> dict[str, Any]:
    """One row of a per-trace table."""
    return {"policy": label, "overload minutes": summary.overload_minutes,
            "VM-minutes": summary.vm_minutes, "flips": summary.flips,
            "scale-outs": summary.scale_outs, "scale-ins": summary.scale_ins,
            "peak VMs": summary.peak_vms, **rp.elasticity_cells(summary)}


@dataclass(frozen=True)
class TraceResults:
    """Every policy's score on one trace: ssh-scale's (by label), the peers' (by name) and
    the HPA curve (target -> summary)."""

    setup: TraceSetup
    ours: dict[str, rp.Summary]
    peers: dict[str, rp.Summary]
    curve: dict[float, rp.Summary]

    @property
    def classic(self) -> rp.Summary:
        return self.ours["classic"]

    @property
    def target(self) -> rp.Summary:
        return self.ours["target"]

    def rows(self) -> list[dict[str, Any]]:
        return ([policy_row(label, summary) for label, summary in self.ours.items()]
                + [policy_row(name, summary) for name, summary in self.peers.items()])

    def dominating(self) -> list[tuple[str, rp.Summary]]:
        """The peer points (the HPA curve included) with both fewer overload minutes and
        fewer VM-minutes than target."""
        points = [(f"HPA {t:g}", s) for t, s in self.curve.items()]
        points += [(name, s) for name, s in self.peers.items() if not name.startswith("HPA")]
        mine = self.target
        return [(name, s) for name, s in points if s.overload_minutes < mine.overload_minutes
                and s.vm_minutes < mine.vm_minutes]


def trace_results(setup: TraceSetup, trace: rp.Trace) -> TraceResults:
    """Replay every policy and peer on one trace."""
    ours = {label: run(trace, config, policy, overrides, options,
                       max_size=setup.max_size).summary
            for label, config, policy, overrides, options in POLICIES}
    curve = {target: run_peer(trace, peers.Hpa(target), setup.max_size) for target in HPA_CURVE}
    table = {f"HPA {t:g}": curve[t] for t in peers.HPA_TARGETS}
    table[peers.CloudStackAutoScale.name] = run_peer(trace, peers.CloudStackAutoScale(),
                                                    setup.max_size)
    return TraceResults(setup, ours, table, curve)


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


def bar_row(results: TraceResults) -> dict[str, str]:
    """The bar on one trace: classic, the default threshold config and target."""
    classic, setup = results.classic, results.setup
    return {"trace": setup.name, "VMs": f"2-{setup.max_size}",
            BAR_COLUMNS[2]: plain(classic), BAR_COLUMNS[3]: against(results.ours["default"],
                                                                    classic),
            BAR_COLUMNS[4]: against(results.target, classic),
            "bar": verdict(results.target, classic),
            "peers": pareto_words(results.dominating(), short=True)}


def variant_rows(traces: dict, setups: Sequence[str]) -> Iterator[dict]:
    """One table row per trace and variant."""
    for name in setups:
        for label, config, policy, overrides, options in VARIANTS:
            summary = run(traces[name], config, policy, overrides, options).summary
            yield {"trace": name, "policy": label, "overload minutes": summary.overload_minutes,
                   "VM-minutes": summary.vm_minutes, "scale-outs": summary.scale_outs,
                   "scale-ins": summary.scale_ins, "flips": summary.flips,
                   "peak VMs": summary.peak_vms}


def boot_rows(traces: dict, setups: Sequence[str]) -> Iterator[dict]:
    """The bar at other boot times, with the default forecast and with forecast = boot + 90."""
    for boot in BOOTS:
        for name in setups:
            trace = traces[name]
            classic = run(trace, CONFIG, "classic", {}, boot=boot).summary
            target = run(trace, TARGET_CONFIG, "current", {}, boot=boot).summary
            tuned = run(trace, TARGET_CONFIG, "current", {"forecast": boot + 90}, boot=boot).summary
            yield {"boot": f"{boot:g} s", "trace": name, BOOT_COLUMNS[2]: plain(classic),
                   BOOT_COLUMNS[3]: against(target, classic), "bar": verdict(target, classic),
                   BOOT_COLUMNS[5]: against(tuned, classic), "bar ": verdict(tuned, classic)}


def tradeoff_rows(trace: rp.Trace) -> Iterator[dict]:
    """Overload against cost over each policy's main parameter on the plateau, every point
    scored against the same overload line (3), whatever threshold or target it decides with."""
    classic = run(trace, CONFIG, "classic", {}).summary
    for policy, parameter, config, replay_policy, overrides in TRADEOFF_POINTS:
        summary = run(trace, config, replay_policy, overrides).summary
        yield {"trace": "plateau.csv", "policy": policy, "parameter": parameter,
               "overload minutes": summary.overload_minutes, "VM-minutes": summary.vm_minutes,
               "x classic": f"{summary.vm_minutes / classic.vm_minutes:.3f}",
               "flips": summary.flips}


def make_traces_module() -> Any:
    """examples/make_traces.py as a module (it is a script, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_traces",
                                                  os.path.join(EXAMPLES, "make_traces.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def seed_rows() -> Iterator[dict]:
    """The bar on the three noisy examples made with other seeds (the noise, not the shape,
    changes), and on the mean over the example's seed and these: whether a result depends
    on one draw of the noise."""
    make = make_traces_module()
    shapes: tuple[tuple[str, Callable[[int], list], int, int], ...] = (
        ("noisy-plateau.csv", lambda seed: make.noisy([7.5] * 360, seed, 2.0), 10,
         make.SEED + 5),
        ("noisy-weekday.csv", lambda seed: make.noisy(make.weekday_values(), seed, 0.8), 8,
         make.SEED + 6),
        ("launch.csv", make.launch_rows, 12, make.SEED + 7))
    for name, draw, max_size, example in shapes:
        pairs = []
        for seed in (example, *range(make.SEED + 101, make.SEED + 101 + SEEDS)):
            trace = rp.parse_trace([f"{m},{d}" for m, d in draw(seed)], f"{name} seed {seed}")
            classic = run(trace, CONFIG, "classic", {}, max_size=max_size).summary
            target = run(trace, TARGET_CONFIG, "current", {}, max_size=max_size).summary
            pairs.append((classic, target))
            yield {"trace": name, "seed": f"{seed}{' (the example)' if seed == example else ''}",
                   SEED_COLUMNS[2]: plain(classic), SEED_COLUMNS[3]: against(target, classic),
                   "bar": verdict(target, classic)}
        classic, target = (mean_summary([pair[side] for pair in pairs]) for side in (0, 1))
        yield {"trace": name, "seed": f"mean of {len(pairs)}", SEED_COLUMNS[2]: plain(classic),
               SEED_COLUMNS[3]: against(target, classic), "bar": verdict(target, classic)}


def mean_summary(summaries: Sequence[rp.Summary]) -> rp.Summary:
    """The mean of the bar's three figures over several replays (rounded to one decimal)."""
    def mean(values: Sequence[int]) -> Any:
        return round(sum(values) / len(values), 1)

    first = summaries[0]
    return replace(first, overload_minutes=mean([s.overload_minutes for s in summaries]),
                   vm_minutes=mean([s.vm_minutes for s in summaries]),
                   flips=mean([s.flips for s in summaries]))


def trace_section(results: TraceResults) -> list[str]:
    """One trace's table of every policy, whether target is on the peers' Pareto front, and
    its plot."""
    setup = results.setup
    return [f"### {setup.name} (2-{setup.max_size} VMs)", "",
            markdown_table(results.rows(), COLUMNS), "",
            wrap(f"Peers: {pareto_words(results.dominating(), short=False)}"), "",
            f"![{setup.name}: overload against cost](../docs/replay-pareto-{setup.stem}.png)",
            ""]


def document(traces: dict) -> tuple[str, dict[str, Any]]:
    """The whole Markdown file, and what the plots need."""
    results = {setup.name: trace_results(setup, traces[setup.name]) for setup in TRACES}
    bars = [bar_row(r) for r in results.values()]
    variants = list(variant_rows(traces, SMOOTH))
    boots = list(boot_rows(traces, SMOOTH))
    tradeoff = list(tradeoff_rows(traces["plateau.csv"]))
    seeds = list(seed_rows())
    settings = load_replay_settings(CONFIG)
    floors, why = plateau_floor(traces["plateau.csv"], settings, results["plateau.csv"].classic,
                                BOOT_SECONDS, COST_BAR)
    sections = [
        HEADER, "## The bar: target against classic\n", markdown_table(bars, BAR_COLUMNS), "",
        *(f"![target on {name}](../docs/{png})" for name, png in PLOTS),
        "\n## Every trace: ssh-scale's policies and their peers\n",
        *(line for r in results.values() for line in trace_section(r)),
        "## The noisy examples with other seeds\n", markdown_table(seeds, SEED_COLUMNS),
        "\n## Variants (the first seven traces)\n", markdown_table(variants, VARIANT_COLUMNS),
        "\n## Other boot times (target's forecast 240 s; or boot + 90 s)\n",
        markdown_table(boots, BOOT_COLUMNS),
        "\n## Trade-off on the plateau: overload against VM-minutes\n",
        markdown_table(tradeoff, TRADEOFF_COLUMNS), "", wrap(why), "",
        f"![plateau.csv: overload against cost](../docs/{TRADEOFF_PLOT})", "",
        reading(results, bars, variants, boots, seeds,
                steady_pool(traces["noisy-plateau.csv"], 4, settings.threshold_out)),
    ]
    return "\n".join(sections) + "\n", {"results": results, "tradeoff": tradeoff,
                                        "floors": floors}


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


def write(results: str, extra: dict[str, Any], traces: dict) -> None:
    """bench/results-replay.md, BENCHMARKS.md's last section, and the plots in docs/."""
    with open(RESULTS, "w", encoding="utf-8") as handle:
        handle.write(results)
    with open(BENCHMARKS, encoding="utf-8") as handle:
        text = handle.read()
    with open(BENCHMARKS, "w", encoding="utf-8") as handle:
        handle.write(text[:text.index(SECTION)] + benchmarks_section(results))
    docs = os.path.join(ROOT, "docs")
    plot_tradeoff(extra["tradeoff"], extra["floors"], COST_BAR, os.path.join(docs, TRADEOFF_PLOT))
    for name, png in PLOTS:
        plot_replay(run(traces[name], TARGET_CONFIG, "current", {}), os.path.join(docs, png))
    for trace in extra["results"].values():
        points = {label: (s.overload_minutes, s.vm_minutes) for label, s in trace.ours.items()}
        cloudstack = trace.peers[peers.CloudStackAutoScale.name]
        points[peers.CloudStackAutoScale.name] = (cloudstack.overload_minutes,
                                                   cloudstack.vm_minutes)
        curve = [(t, s.overload_minutes, s.vm_minutes) for t, s in trace.curve.items()]
        plot_pareto(trace.setup.name, points, curve,
                    os.path.join(docs, f"replay-pareto-{trace.setup.stem}.png"))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Print the comparison as Markdown, or write it (and the plots) where it belongs."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true",
                        help="write bench/results-replay.md, BENCHMARKS.md's replay section "
                             "and the plots in docs/")
    args = parser.parse_args(argv)
    traces = read_traces()
    results, extra = document(traces)
    if args.write:
        write(results, extra, traces)
    else:
        sys.stdout.write(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
