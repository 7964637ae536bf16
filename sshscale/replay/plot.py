"""The replay drawn: demand, per-VM load against the thresholds, and the VM count, to a PNG.
matplotlib is an optional extra, imported only when a plot is asked for."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

from sshscale.model import Action, Settings
from sshscale.replay.report import policy_label
from sshscale.replay.simulate import ReplayResult
from sshscale.replay.trace import ReplayError
from sshscale.target import targets

__all__ = ["install_hint", "plot_replay", "require_matplotlib"]


def install_hint(prefix: str, base_prefix: str, executable: str) -> str:
    """How to add matplotlib to the Python that runs ssh_scale.py (sys.prefix, base_prefix,
    executable): pipx's venv wants `pipx inject`, any other venv (a source checkout's, a
    pip install) its own pip, the packages' system Python the distribution's package."""
    if f"{os.sep}pipx{os.sep}venvs{os.sep}" in prefix + os.sep:
        command = "pipx inject ssh-scale matplotlib"
    elif prefix != base_prefix:
        command = f"{executable} -m pip install 'matplotlib>=3.3'"
    else:
        command = ("sudo apt-get install python3-matplotlib (Debian, Ubuntu) or sudo dnf "
                   "install python3-matplotlib (EL9, Fedora)")
    return f"--plot needs matplotlib, which {executable} cannot import: {command}"


def require_matplotlib() -> Any:
    """A maker of matplotlib Figures on the Agg canvas (no pyplot, no global backend
    switch); raises ReplayError with the install hint when matplotlib is missing."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ReplayError(install_hint(sys.prefix, sys.base_prefix, sys.executable)) from None

    def new_figure(**kwargs: Any) -> Any:
        figure = Figure(**kwargs)
        FigureCanvasAgg(figure)
        return figure

    return new_figure


def plot_replay(result: ReplayResult, path: str) -> None:
    """Draw demand, per-VM load, thresholds and VM count to a PNG; raises ReplayError."""
    figure = require_matplotlib()(figsize=(11, 7.5), constrained_layout=True)
    demand_axes, load_axes, count_axes = figure.subplots(
        3, 1, sharex=True, gridspec_kw={"height_ratios": (2, 3, 2)})
    hours = [s.second / 3600 for s in result.samples]
    _plot_demand(demand_axes, hours, result)
    _plot_loads(load_axes, hours, result)
    _plot_counts(count_axes, hours, result)
    count_axes.set_xlabel("hours since the start of the trace")
    summary = result.summary
    figure.suptitle(f"{os.path.basename(result.source)}: policy {policy_label(result)}, boot "
                    f"{result.boot_seconds:g} s: {summary.overload_minutes} overload min, "
                    f"{summary.vm_minutes} VM-min, +{summary.scale_outs}/-{summary.scale_ins}, "
                    f"{summary.flips} flips")
    try:
        figure.savefig(path, dpi=100)
    except OSError as exc:
        raise ReplayError(f"{path}: cannot write the plot: {exc.strerror or exc}") from None


def _plot_demand(axes: Any, hours: Sequence[float], result: ReplayResult) -> None:
    axes.plot(hours, [s.demand for s in result.samples], color="black", drawstyle="steps-post",
              label="demand (whole pool)")
    axes.set_ylabel("load units")
    axes.set_ylim(bottom=0)
    _legend(axes)
    axes.grid(alpha=0.3)


def _plot_loads(axes: Any, hours: Sequence[float], result: ReplayResult) -> None:
    settings = result.settings
    axes.plot(hours, [s.share for s in result.samples], color="tab:gray", linewidth=1,
              drawstyle="steps-post", label="demand per VM in service")
    axes.plot(hours, [s.load1 for s in result.samples], color="tab:orange",
              label="1-min load of the monitored VM")
    runs = [r for r in result.runs if r.load_out is not None]
    axes.plot([r.second / 3600 for r in runs], [r.load_out for r in runs], ".",
              color="tab:purple", markersize=3,
              label=f"load decide() saw ({settings.period_out}-min, {_seen_hosts(settings)})")
    axes.axhline(settings.threshold_out, color="tab:red", linestyle="--",
                 label=f"threshold_out {settings.threshold_out:g}")
    axes.axhline(settings.threshold_in, color="tab:blue", linestyle="--",
                 label=f"threshold_in {settings.threshold_in:g}")
    if settings.policy == "target":
        target, target_in = targets(settings)
        axes.axhline(target, color="tab:red", linestyle=":", label=f"target {target:g}")
        axes.axhline(target_in, color="tab:blue", linestyle=":", label=f"target_in {target_in:g}")
    overloaded = [s.share > settings.threshold_out for s in result.samples]
    axes.fill_between(hours, 0, 1, where=overloaded, step="post", color="tab:red", alpha=0.1,
                      transform=axes.get_xaxis_transform(), label="overloaded")
    axes.set_ylabel("load per VM")
    axes.set_ylim(bottom=0)
    _legend(axes)
    axes.grid(alpha=0.3)


def _legend(axes: Any) -> None:
    """Beside the panel, so it never hides a curve."""
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)


def _seen_hosts(settings: Settings) -> str:
    return f"{settings.aggregate} of members" if settings.monitor_members else "monitored VM"


def _plot_counts(axes: Any, hours: Sequence[float], result: ReplayResult) -> None:
    settings = result.settings
    axes.plot(hours, [s.serving + s.booting for s in result.samples], color="tab:green",
              linestyle=":", drawstyle="steps-post", label="VMs booting + in service")
    axes.plot(hours, [s.serving for s in result.samples], color="tab:green",
              drawstyle="steps-post", label="VMs in service")
    for action, marker, color in ((Action.SCALE_OUT, "^", "tab:red"),
                                  (Action.SCALE_IN, "v", "tab:blue")):
        changes = [c for c in result.changes if c.action is action]
        axes.plot([c.second / 3600 for c in changes], [c.vms_after for c in changes], marker,
                  color=color, linestyle="none", label=action.value)
    axes.set_ylim(0, max(settings.max_size, result.summary.peak_vms) + 1)
    axes.set_ylabel("VMs")
    _legend(axes)
    axes.grid(alpha=0.3)
