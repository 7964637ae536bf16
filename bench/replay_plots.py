"""The replay comparison's plots (bench/replay_compare.py --write): overload against cost per
trace with every policy and the HPA curve, and the plateau's trade-off curves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sshscale.replay.plot import require_matplotlib

__all__ = ["plot_pareto", "plot_tradeoff"]

# (label, colour, marker) of the points every per-trace plot shows
POINT_STYLES = (("classic", "tab:orange", "s"), ("default", "tab:blue", "^"),
                ("proportional", "tab:cyan", "v"), ("CloudStack AutoScale", "tab:brown", "D"),
                ("target", "tab:green", "*"))


def plot_pareto(title: str, points: Mapping[str, tuple[int, int]],
                hpa: Sequence[tuple[float, int, int]], path: str) -> None:
    """Overload minutes against VM-minutes: the labelled points (label -> (overload,
    VM-minutes)) and the HPA curve ((target, overload, VM-minutes) by target)."""
    figure = require_matplotlib()(figsize=(7, 4.5), constrained_layout=True)
    axes = figure.subplots()
    curve = sorted(hpa, key=lambda point: point[0])
    axes.plot([vm for _, _, vm in curve], [ovl for _, ovl, _ in curve], "o-", color="tab:purple",
              alpha=0.7, label="Kubernetes HPA, by target")
    for target, overload, vm_minutes in curve:
        axes.annotate(f"{target:g}", (vm_minutes, overload), textcoords="offset points",
                      xytext=(4, 4), fontsize="x-small", color="tab:purple")
    for label, color, marker in POINT_STYLES:
        if label in points:
            overload, vm_minutes = points[label]
            axes.plot([vm_minutes], [overload], marker, color=color,
                      markersize=14 if label == "target" else 8, label=label)
    axes.set_xlabel("VM-minutes (cost)")
    axes.set_yscale("symlog", linthresh=10)  # the HPA curve spans 0 to hundreds of minutes
    axes.set_ylabel("overload minutes (demand per VM > 3; log above 10)")
    axes.set_title(f"{title}: overload against cost")
    axes.legend(fontsize="small")
    axes.grid(alpha=0.3)
    figure.savefig(path, dpi=100)


def plot_tradeoff(rows: Sequence[dict], floors: tuple[int, int], cost_bar: float,
                  path: str) -> None:
    """Overload minutes against VM-minutes over each policy's main parameter on the plateau,
    with the least VM-minutes that keep classic's overload (floors) and the bar's corner."""
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
    axes.axvline(cost_bar * classic["VM-minutes"], color="gray", linestyle="--",
                 label=f"{cost_bar:g} x classic's VM-minutes")
    axes.axhline(classic["overload minutes"], color="gray", linestyle=":",
                 label="classic's overload minutes")
    axes.set_xlabel("VM-minutes")
    axes.set_ylabel("overload minutes (demand per VM > 3)")
    axes.set_title("plateau.csv: overload against cost over each policy's parameters")
    axes.legend(fontsize="small")
    axes.grid(alpha=0.3)
    figure.savefig(path, dpi=100)
