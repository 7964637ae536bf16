"""`ssh_scale.py --history [--since 24h] [--plot PNG]`: the run journal (sshscale.journal) as
a table of what the runs did (every action and failure, the holds; consecutive quiet runs,
holds of one rule and failures of one error summarised in one row each), and with --plot the
load, the VMs and the actions over time. Reads only the journal: no SSH, no cloud.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

import idcf_api
from sshscale.config import display_path
from sshscale.errors import ConfigError
from sshscale.journal import require_files
from sshscale.logs import TIME_FORMAT
from sshscale.model import IN_SERVICE, Settings

__all__ = ["DEFAULT_SINCE", "HOLD_RULES", "Row", "Run", "history_table", "parse_since",
           "plot_history", "read_runs", "rows_of", "run_of", "show_history", "summary_line"]

DEFAULT_SINCE = "24h"
HOLD_RULES = ("cooldown", "backoff")  # decide()'s rules that hold an action back for a time
COLUMNS = ("time", "until", "runs", "pool", "load", "event", "detail")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Run:
    """One journal line as the history shows it: when, what kind (action, failure, hold,
    quiet), the event's name, the VMs in service and the load decide() saw, and the detail."""

    when: datetime
    kind: str
    event: str
    pool: Optional[int]
    load: Optional[float]
    detail: str
    group: tuple[str, ...] = ()  # consecutive runs with the same (non-empty) group share a row


@dataclass(frozen=True)
class Row:
    """One line of the table: a run, or consecutive runs summarised."""

    runs: tuple[Run, ...]


def parse_since(text: str, now: datetime) -> datetime:
    """--since: a duration back from now (90m, 24h, 7d; plain seconds) or a time ('2026-12-01
    08:00', ISO 8601; this machine's zone unless an offset is given); raises ConfigError."""
    found = _DURATION.fullmatch(text.strip().lower())
    try:
        when = None if found else datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(f"--since: expected a duration like 90m, 24h or 7d, or a time like "
                          f"'2026-12-01 08:00', got {text!r}") from None
    try:
        if when is None:
            when = now - timedelta(seconds=float(found.group(1)) * _UNITS[found.group(2)])
        local = when.astimezone()  # the table shows it in this machine's zone
    except (OverflowError, ValueError):
        raise ConfigError(f"--since: {text!r} is out of range (years 1 to 9999)") from None
    return when if when.tzinfo else local


def _time(value: Any) -> Optional[datetime]:
    try:
        when = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def _in_service(pool: Any) -> Optional[int]:
    if not isinstance(pool, list) or not pool:
        return None
    return sum(1 for vm in pool if isinstance(vm, Mapping) and vm.get("in_lb")
               and vm.get("state") in IN_SERVICE)


def _load(run: Mapping[str, Any]) -> Optional[float]:
    aggregate = run.get("aggregate")
    value = aggregate.get("out") if isinstance(aggregate, Mapping) else None
    return float(value) if isinstance(value, (int, float)) else None


def run_of(run: Mapping[str, Any]) -> Optional[Run]:
    """The history's view of one --json object; None when it has no readable time."""
    when = _time(run.get("time"))
    if when is None:
        return None
    decision = run.get("decision") if isinstance(run.get("decision"), Mapping) else {}
    action, rule = str(decision.get("action", "none")), str(decision.get("rule", "none"))
    verb = action + (f" {decision['count']}" if (decision.get("count") or 0) > 1 else "")
    reason, result = str(decision.get("reason", "")), str(run.get("result") or "")
    pool, load, error = _in_service(run.get("pool")), _load(run), run.get("error")
    if error:
        event = f"failed: {verb}" if action != "none" else "failed"
        return Run(when, "failure", event, pool, load, str(error), ("failure", str(error)))
    if action != "none":
        return Run(when, "action", verb, pool, load, f"{reason}: {result}" if result else reason)
    if rule in HOLD_RULES:
        return Run(when, "hold", "held", pool, load, reason, ("hold", rule))
    return Run(when, "quiet", "quiet", pool, load, "nothing to do", ("quiet",))


def read_runs(paths: Sequence[str], since: datetime) -> tuple[list[Run], int]:
    """The runs since `since` in the journal's files (given oldest first), in time order,
    and how many lines could not be read. Files wholly older than `since` are not parsed."""
    runs: list[Run] = []
    unreadable = 0
    for path in reversed(paths):  # the newest first; stop at a file that starts before since
        found, bad = _read_file(path)
        unreadable += bad
        runs += [run for run in found if run.when >= since]
        if found and found[0].when < since:
            break
    return sorted(runs, key=lambda run: run.when), unreadable


def _read_file(path: str) -> tuple[list[Run], int]:
    """The runs in one journal file (rotated ones are compressed), and the lines that could
    not be read; raises ReplayError (a ConfigError) when the file cannot be read."""
    from sshscale.replay.trace import read_input_text

    text = read_input_text(path)
    runs, bad = [], 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError:
            bad += 1
            continue
        run = run_of(data) if isinstance(data, dict) else None
        if run is None:
            bad += 1
        else:
            runs.append(run)
    return runs, bad


def rows_of(runs: Iterable[Run]) -> list[Row]:
    """Consecutive runs of one group (quiet; a hold of one rule; a failure with one error)
    share a row; every action has its own."""
    rows: list[list[Run]] = []
    for run in runs:
        if rows and run.group and rows[-1][-1].group == run.group:
            rows[-1].append(run)
        else:
            rows.append([run])
    return [Row(tuple(group)) for group in rows]


def _local(when: datetime) -> str:
    return when.astimezone().strftime(TIME_FORMAT)


def _span(values: Sequence[Any], text: Callable[[Any], str]) -> str:
    """"low-high" of the values (one value when they agree; "-" when none is known)."""
    present = [v for v in values if v is not None]
    if not present:
        return "-"
    low, high = min(present), max(present)
    return text(low) if low == high else f"{text(low)}-{text(high)}"


def _cells(row: Row) -> dict[str, str]:
    first, last = row.runs[0], row.runs[-1]
    start, end = _local(first.when), _local(last.when)
    until = "" if len(row.runs) == 1 else (end[11:] if end[:10] == start[:10] else end)
    return {"time": start, "until": until, "runs": str(len(row.runs)),
            "pool": _span([r.pool for r in row.runs], str),
            "load": _span([r.load for r in row.runs], lambda v: f"{v:.2f}"),
            "event": last.event, "detail": last.detail}


def history_table(rows: Sequence[Row]) -> str:
    """The rows as an ASCII table (times in this machine's zone)."""
    if not rows:
        return "(no run recorded in that time)"
    return idcf_api.format_table([_cells(row) for row in rows], COLUMNS)


def _counted(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def summary_line(runs: Sequence[Run], unreadable: int, files: Sequence[str],
                 since: datetime) -> str:
    """What the table covers: the runs by kind, the journal, lines that could not be read."""
    counts = {kind: sum(1 for run in runs if run.kind == kind)
              for kind in ("action", "failure", "hold", "quiet")}
    text = (f"{_counted(len(runs), 'run')} since {_local(since)}: "
            f"{_counted(counts['action'], 'action')}, "
            f"{counts['failure']} failed, {counts['hold']} held, {counts['quiet']} quiet "
            f"(journal {display_path(files[-1])}")
    text += f", {len(files) - 1} rotated file(s))" if len(files) > 1 else ")"
    if unreadable:
        text += f"; {unreadable} unreadable line(s) skipped"
    return text


def plot_history(runs: Sequence[Run], settings: Settings, path: str, title: str) -> None:
    """Draw the load decide() saw against the thresholds, and the VMs in service with the
    actions and failures, over time (this machine's zone), to a PNG; raises ReplayError
    (matplotlib missing, or the file not writable)."""
    from sshscale.replay.plot import require_matplotlib
    from sshscale.replay.trace import ReplayError

    figure = require_matplotlib()(figsize=(11, 6), constrained_layout=True)
    from matplotlib import dates  # matplotlib is there: require_matplotlib() said so

    load_axes, count_axes = figure.subplots(2, 1, sharex=True,
                                            gridspec_kw={"height_ratios": (3, 2)})
    measured = [r for r in runs if r.load is not None]
    load_axes.plot([r.when for r in measured], [r.load for r in measured], ".-",
                   color="tab:purple", markersize=3, linewidth=0.8, label="load decide() saw")
    load_axes.axhline(settings.threshold_out, color="tab:red", linestyle="--",
                      label=f"threshold_out {settings.threshold_out:g}")
    load_axes.axhline(settings.threshold_in, color="tab:blue", linestyle="--",
                      label=f"threshold_in {settings.threshold_in:g}")
    load_axes.set_ylabel("load")
    counted = [r for r in runs if r.pool is not None]
    count_axes.plot([r.when for r in counted], [r.pool for r in counted], color="tab:green",
                    drawstyle="steps-post", label="VMs in service")
    for kind, marker, color in (("action", "^", "tab:red"), ("failure", "x", "black"),
                                ("hold", ".", "tab:orange")):
        marked = [r for r in counted if r.kind == kind]
        count_axes.plot([r.when for r in marked], [r.pool for r in marked], marker,
                        color=color, linestyle="none", label=kind if kind != "action"
                        else "actions")
    count_axes.set_ylabel("VMs")
    count_axes.set_ylim(0, max([settings.max_size, *(r.pool for r in counted)]) + 1)
    count_axes.xaxis.set_major_formatter(dates.DateFormatter("%m-%d %H:%M"))
    for axes in (load_axes, count_axes):
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small",
                    frameon=False)
        axes.grid(alpha=0.3)
    figure.suptitle(title)
    try:
        figure.savefig(path, dpi=100)
    except OSError as exc:
        raise ReplayError(f"{path}: cannot write the plot: {exc.strerror or exc}") from None


def show_history(settings: Settings, config: str, since_text: Optional[str],
                 plot: Optional[str], now: datetime) -> None:
    """--history: print the table and the summary line (and draw the plot); raises
    JournalMissing (no journal) or ConfigError (a bad --since, the plot)."""
    since = parse_since(since_text or DEFAULT_SINCE, now)
    files = require_files(config)
    if plot:
        from sshscale.replay.plot import require_matplotlib

        require_matplotlib()  # before the journal is read: the missing extra is one line
    runs, unreadable = read_runs(files, since)
    print(history_table(rows_of(runs)))
    print(summary_line(runs, unreadable, files, since))
    if plot:
        plot_history(runs, settings, plot, f"{os.path.basename(config)}: {len(runs)} runs "
                                           f"since {_local(since)}")
        print(f"plot: {plot}")
