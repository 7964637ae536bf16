"""What-if replays: a minute,demand trace through the same decide() as a live run, on a
virtual clock instead of SSH and the cloud (`ssh_scale.py --replay TRACE.csv`).

  trace     the input: minute,demand lines -> Trace
  sources   real load history -> Trace: sar -q reports, ssh_scale.py --json logs
  simulate  the virtual clock, the kernel's load averages, cron runs calling decide(), scoring
  report    the results as tables and JSON
  plot      the optional PNG (matplotlib, imported only when asked for)
  command   run_replay: what `ssh_scale.py --replay` does
"""

from sshscale.replay.command import checked_boot_seconds, run_replay
from sshscale.replay.report import (
    ELASTICITY_COLUMNS,
    SUMMARY_COLUMNS,
    changes_table,
    elasticity_cells,
    policy_label,
    result_json,
    summary_row,
    text_report,
)
from sshscale.replay.simulate import (
    DEFAULT_BOOT_SECONDS,
    POLICIES,
    Change,
    Peer,
    ReplayResult,
    Run,
    Sample,
    Summary,
    billed_minutes,
    classic_settings,
    count_flips,
    elasticity,
    kernel_step,
    needed_vms,
    replay,
    replay_settings,
    summarize,
    warmed_loads,
)
from sshscale.replay.sources import FORMATS, detect_format, read_inputs
from sshscale.replay.trace import (
    MAX_MINUTES,
    ReplayError,
    Trace,
    TracePoint,
    parse_trace,
    read_trace,
)

__all__ = ["DEFAULT_BOOT_SECONDS", "ELASTICITY_COLUMNS", "FORMATS", "MAX_MINUTES", "POLICIES",
           "SUMMARY_COLUMNS", "Change", "Peer", "ReplayError", "ReplayResult", "Run", "Sample",
           "Summary", "Trace", "TracePoint", "billed_minutes", "changes_table",
           "checked_boot_seconds", "classic_settings", "count_flips", "detect_format",
           "elasticity", "elasticity_cells", "kernel_step", "needed_vms", "parse_trace",
           "policy_label", "read_inputs", "read_trace", "replay", "replay_settings",
           "result_json", "run_replay", "summarize", "summary_row", "text_report",
           "warmed_loads"]
