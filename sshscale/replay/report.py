"""The replay's results as text: the changes with decide()'s reasons, the summary table (cost,
overload, churn and the SPEC RG elasticity metrics), the --json object."""

from __future__ import annotations

import os
from typing import Any

import textio
from sshscale.model import Action
from sshscale.replay.simulate import RUN_SECONDS, VIRTUAL_EPOCH, ReplayResult, Summary

__all__ = ["ELASTICITY_COLUMNS", "SUMMARY_COLUMNS", "changes_table", "elasticity_cells",
           "policy_label", "result_json", "summary_row", "text_report"]


SUMMARY_COLUMNS = ("trace", "policy", "minutes", "VM-minutes", "overload minutes", "scale-outs",
                   "scale-ins", "flips", "peak VMs")
ELASTICITY_COLUMNS = ("under (VMs)", "over (VMs)", "time under", "time over", "jitter/h")


def summary_row(result: ReplayResult) -> dict[str, Any]:
    """The summary as one table row keyed by SUMMARY_COLUMNS and ELASTICITY_COLUMNS."""
    summary = result.summary
    return {"trace": os.path.basename(result.source), "policy": policy_label(result),
            "minutes": summary.minutes, "VM-minutes": summary.vm_minutes,
            "overload minutes": summary.overload_minutes, "scale-outs": summary.scale_outs,
            "scale-ins": summary.scale_ins, "flips": summary.flips,
            "peak VMs": summary.peak_vms, **elasticity_cells(summary)}


def elasticity_cells(summary: Summary) -> dict[str, str]:
    """The elasticity metrics as table cells: accuracy in VMs, time shares in per cent,
    jitter in changes per hour."""
    return {"under (VMs)": f"{summary.accuracy_under:.2f}",
            "over (VMs)": f"{summary.accuracy_over:.2f}",
            "time under": f"{100 * summary.timeshare_under:.1f} %",
            "time over": f"{100 * summary.timeshare_over:.1f} %",
            "jitter/h": f"{summary.jitter:+.1f}"}


def policy_label(result: ReplayResult) -> str:
    """The --policy name; for "current", the config's policy when it is target, or the step
    when it is not 1."""
    settings = result.settings
    if result.policy == "current" and settings.policy == "target":
        return "current (target)"
    if result.policy in ("current", "threshold") and settings.step_out != "1":
        return f"{result.policy} (step {settings.step_out})"
    return result.policy


def clock_label(second: int) -> str:
    """Virtual time as hours:minutes since the replay's start."""
    minutes = second // RUN_SECONDS
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def changes_table(result: ReplayResult) -> str:
    """Every scale-out and scale-in, with decide()'s reason."""
    rows = [{"time": clock_label(c.second), "action": c.action.value,
             "VMs": f"{'+' if c.action is Action.SCALE_OUT else '-'}{c.count} -> {c.vms_after}",
             "reason": c.reason} for c in result.changes]
    if not rows:
        return "(no scale-out or scale-in)"
    return textio.format_table(rows, ["time", "action", "VMs", "reason"])


def text_report(result: ReplayResult) -> str:
    """The changes and the summary, as printed without --json."""
    title = (f"replay of {result.source}: {result.summary.minutes} minutes, policy "
             f"{policy_label(result)}, boot {result.boot_seconds:g} s")
    if result.start != VIRTUAL_EPOCH:
        title += f", minute 0 at {result.start:%Y-%m-%d %H:%M %Z}"
    row = summary_row(result)
    summary = textio.format_table([row], SUMMARY_COLUMNS)
    elasticity = textio.format_table([row], ELASTICITY_COLUMNS)
    return (f"{title}\n{changes_table(result)}\n{summary}\n"
            f"elasticity, SPEC RG (VMs needed = ceil(demand / threshold_out "
            f"{result.settings.threshold_out:g})):\n{elasticity}")


def result_json(result: ReplayResult) -> dict[str, Any]:
    """The replay as one JSON-ready object."""
    summary = result.summary
    return {
        "trace": result.source, "policy": result.policy,
        "scaling_policy": result.settings.policy,
        "step": result.settings.step_out, "boot_seconds": result.boot_seconds,
        "minutes": summary.minutes, "vm_minutes": summary.vm_minutes,
        "overload_minutes": summary.overload_minutes, "scale_outs": summary.scale_outs,
        "scale_ins": summary.scale_ins, "flips": summary.flips, "peak_vms": summary.peak_vms,
        "accuracy_under": round(summary.accuracy_under, 4),
        "accuracy_over": round(summary.accuracy_over, 4),
        "timeshare_under": round(summary.timeshare_under, 4),
        "timeshare_over": round(summary.timeshare_over, 4),
        "jitter_per_hour": round(summary.jitter, 3),
        "skipped_runs": sum(1 for r in result.runs if r.skipped),
        "start": result.start.isoformat(),
        "changes": [{"minute": c.minute, "action": c.action.value, "count": c.count,
                     "vms_after": c.vms_after, "reason": c.reason} for c in result.changes],
    }
