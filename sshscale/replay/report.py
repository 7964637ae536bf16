"""The replay's results as text: the changes with decide()'s reasons, the summary table, the
--json object."""

from __future__ import annotations

import os
from typing import Any

import textio
from sshscale.model import Action
from sshscale.replay.simulate import RUN_SECONDS, VIRTUAL_EPOCH, ReplayResult

__all__ = ["SUMMARY_COLUMNS", "changes_table", "policy_label", "result_json", "summary_row",
           "text_report"]


SUMMARY_COLUMNS = ("trace", "policy", "minutes", "VM-minutes", "overload minutes", "scale-outs",
                   "scale-ins", "flips", "peak VMs")


def summary_row(result: ReplayResult) -> dict[str, Any]:
    """The summary as one table row keyed by SUMMARY_COLUMNS."""
    summary = result.summary
    return {"trace": os.path.basename(result.source), "policy": policy_label(result),
            "minutes": summary.minutes, "VM-minutes": summary.vm_minutes,
            "overload minutes": summary.overload_minutes, "scale-outs": summary.scale_outs,
            "scale-ins": summary.scale_ins, "flips": summary.flips,
            "peak VMs": summary.peak_vms}


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
    summary = textio.format_table([summary_row(result)], SUMMARY_COLUMNS)
    return f"{title}\n{changes_table(result)}\n{summary}"


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
        "skipped_runs": sum(1 for r in result.runs if r.skipped),
        "start": result.start.isoformat(),
        "changes": [{"minute": c.minute, "action": c.action.value, "count": c.count,
                     "vms_after": c.vms_after, "reason": c.reason} for c in result.changes],
    }
