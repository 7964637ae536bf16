"""Replay inputs from real load history, besides `minute,demand` traces: sysstat's `sar -q`
reports and ssh_scale.py's own `--json` log, turned into a Trace of the pool's demand.

  sar   `sar -q` text (LC_ALL=C or any locale whose times read HH:MM:SS, with AM/PM or not):
        one VM's ldavg-1 at each sample. One file and --members N: demand = ldavg-1 x N;
        several files, one per VM: demand = the sum of their ldavg-1 at each minute (a VM
        counts from its first sample until one sampling interval after its last). The date
        in each report's `Linux ...` line (MM/DD/YYYY, MM/DD/YY or YYYY-MM-DD) places
        concatenated days; without one, a time earlier than the previous row's is the next
        day.
  json  one object per run (`ssh_scale.py --json`), several files (rotated logs, monitors)
        merged by time: demand = the mean 1-minute load of the hosts measured x the members in
        service (Running, Starting, Migrating). A run that measured nothing (another run held
        the lock, SSH failed) adds no sample.
  csv   minute,demand (sshscale.replay.trace).

The format is detected from a file's first line unless given; every row is checked, and a
malformed one is a ReplayError naming file and line (main() exits 2).
"""

from __future__ import annotations

import bisect
import json
import math
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta, timezone
from typing import Any, Optional

from sshscale.model import IN_SERVICE
from sshscale.replay.trace import MAX_MINUTES, ReplayError, Trace, TracePoint, parse_trace, \
    read_input_text

__all__ = ["FORMATS", "Sample", "detect_format", "parse_json_log", "parse_sar", "pool_demand",
           "read_inputs", "trace_from_samples"]

FORMATS = ("csv", "sar", "json")
Sample = tuple[float, float]  # (seconds on the input's clock, load units)
_TIME = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}))?$")
_DATES = ((re.compile(r"\d{2}/\d{2}/\d{4}$"), "%m/%d/%Y"),
          (re.compile(r"\d{2}/\d{2}/\d{2}$"), "%m/%d/%y"),
          (re.compile(r"\d{4}-\d{2}-\d{2}$"), "%Y-%m-%d"))
_NO_DATE = date(2000, 1, 1)  # the day a report without a date starts on


def detect_format(text: str) -> str:
    """csv, sar or json, from the first line with content."""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("{"):
            return "json"
        if stripped.startswith("Linux ") or "ldavg-1" in stripped.split():
            return "sar"
        return "csv"
    return "csv"


# --- sar -q ----------------------------------------------------------------------------------


def _clock(tokens: Sequence[str]) -> Optional[float]:
    """Seconds into the day of a row's time (HH:MM[:SS], then AM/PM or a zone name), or None."""
    found = _TIME.match(tokens[0]) if tokens else None
    if found is None:
        return None
    hours, minutes, seconds = (int(part or 0) for part in found.groups())
    suffix = tokens[1].upper() if len(tokens) > 1 else ""
    if suffix in ("AM", "PM"):
        if not 1 <= hours <= 12:
            return None
        hours = hours % 12 + (12 if suffix == "PM" else 0)
    if hours > 23 or minutes > 59 or seconds > 59:
        return None
    return hours * 3600.0 + minutes * 60 + seconds


def _report_date(tokens: Sequence[str]) -> Optional[date]:
    for token in tokens:
        for pattern, fmt in _DATES:
            if pattern.match(token):
                try:
                    return datetime.strptime(token, fmt).date()
                except ValueError:
                    return None
    return None


def _number(text: str) -> Optional[float]:
    try:
        value = float(text.replace(",", "."))  # some locales write 0,57
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def parse_sar(lines: Iterable[str], source: str) -> list[Sample]:
    """(seconds, ldavg-1) of every row of the `sar -q` sections of a report; raises
    ReplayError naming source and line. Rows of other sections (`sar -A`) are skipped."""
    samples: list[Sample] = []
    day, offset, previous = _NO_DATE, 0, None
    columns: Optional[list[str]] = None
    lead = 1
    for number, raw in enumerate(lines, start=1):
        tokens = raw.split()
        where = f"{source}:{number}"
        if not tokens:
            columns = None  # a blank line ends a section
            continue
        if tokens[0] == "Linux":
            found = _report_date(tokens)
            if found is not None:
                day, offset, previous = found, 0, None
            continue
        if _clock(tokens) is not None and any("-" in t and t[0].isalpha() for t in tokens):
            lead = 2 if _clock(tokens[:1]) is not None and tokens[1].isalpha() else 1
            columns = tokens[lead:] if "ldavg-1" in tokens else None
            continue
        summary = not _TIME.match(tokens[0]) and any(t.endswith(":") for t in tokens[:2])
        if columns is None or summary or "RESTART" in tokens:
            continue  # another section, an Average: row, a LINUX RESTART mark
        seconds = _clock(tokens[:lead])
        if seconds is None or len(tokens) != lead + len(columns):
            raise ReplayError(f"{where}: expected a sar -q row (a time, then "
                              f"{' '.join(columns)}), got {raw.strip()!r} (run sar with "
                              "LC_ALL=C)")
        load = _number(tokens[lead + columns.index("ldavg-1")])
        if load is None:
            raise ReplayError(f"{where}: ldavg-1: expected a number of at least 0, got "
                              f"{tokens[lead + columns.index('ldavg-1')]!r}")
        if previous is not None and seconds < previous:
            offset += 1  # past midnight
        previous = seconds
        start = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
        samples.append(((start + timedelta(days=offset)).timestamp() + seconds, load))
    if not samples:
        raise ReplayError(f"{source}: no sar -q rows (expected the output of sar -q, with "
                          "its runq-sz ... ldavg-1 header)")
    return samples


def pool_demand(series: Sequence[Sequence[Sample]]) -> list[Sample]:
    """The pool's demand from one VM's load per series: their sum at every sample time, each
    VM counting from its first sample until one of its sampling intervals after its last."""
    spans = []
    for samples in series:
        ordered = sorted(samples)
        times = [when for when, _ in ordered]
        gaps = [b - a for a, b in zip(times, times[1:])]
        spans.append((times, [load for _, load in ordered],
                      times[-1] + (statistics.median(gaps) if gaps else 60.0)))
    demand = []
    for when in sorted({t for times, _, end in spans for t in (*times, end)}):
        present = [loads[bisect.bisect_right(times, when) - 1] for times, loads, end in spans
                   if times[0] <= when < end]
        if present:  # after the last VM's end: no sample
            demand.append((when, sum(present)))
    return demand


# --- ssh_scale.py --json ------------------------------------------------------------------------


def _run_demand(run: Mapping[str, Any], where: str) -> Optional[Sample]:
    try:
        when = datetime.fromisoformat(str(run["time"]))
    except (KeyError, ValueError):
        raise ReplayError(f"{where}: time: expected an ISO 8601 time (an ssh_scale.py --json "
                          f"object), got {run.get('time')!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    hosts, pool = (run.get(key) if run.get(key) is not None else [] for key in ("hosts", "pool"))
    if not isinstance(hosts, list) or not isinstance(pool, list):
        raise ReplayError(f"{where}: hosts and pool: expected lists")
    loads = []
    for host in hosts:
        load = host.get("load") if isinstance(host, Mapping) else None
        if load is not None:
            if not (isinstance(load, list) and load and _number(str(load[0])) is not None):
                raise ReplayError(f"{where}: hosts: load: expected [1-min, 5-min, 15-min], "
                                  f"got {load!r}")
            loads.append(float(load[0]))
    serving = sum(1 for vm in pool if isinstance(vm, Mapping) and vm.get("in_lb")
                  and vm.get("state") in IN_SERVICE)
    if not loads or not serving:
        return None  # nothing measured, or the pool not read: no sample
    return when.timestamp(), sum(loads) / len(loads) * serving


def parse_json_log(lines: Iterable[str], source: str,
                   since: Optional[datetime] = None) -> list[Sample]:
    """(unix seconds, demand) of every run of an ssh_scale.py --json log that measured a
    load (from `since` on, if given); raises ReplayError naming source and line."""
    samples = _json_samples(lines, source, since)
    if not samples:
        raise _no_runs(source, since)
    return samples


def _no_runs(source: str, since: Optional[datetime]) -> ReplayError:
    return ReplayError(f"{source}: no run with a measured load"
                       + (f" since {since:%Y-%m-%d %H:%M %Z}" if since else "")
                       + " (expected the lines of ssh_scale.py --json)")


def _json_samples(lines: Iterable[str], source: str,
                  since: Optional[datetime]) -> list[Sample]:
    samples = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        where = f"{source}:{number}"
        try:
            run = json.loads(raw)
        except ValueError as exc:
            raise ReplayError(f"{where}: not a JSON object ({exc.msg})") from None
        if not isinstance(run, dict):
            raise ReplayError(f"{where}: expected a JSON object (one ssh_scale.py --json run "
                              "per line)")
        sample = _run_demand(run, where)
        if sample is not None and (since is None or sample[0] >= since.timestamp()):
            samples.append(sample)
    return samples


# --- to a trace -----------------------------------------------------------------------------


def trace_from_samples(samples: Sequence[Sample], source: str) -> Trace:
    """A Trace from (seconds, demand) samples: minutes from the first one, the last sample of
    a minute winning; raises ReplayError when they span more than the replay's limit."""
    ordered = sorted(samples)
    start = ordered[0][0]
    by_minute: dict[int, float] = {}
    for when, demand in ordered:
        by_minute[int((when - start) // 60)] = round(demand, 3)
    last = max(by_minute)
    if last >= MAX_MINUTES:
        raise ReplayError(f"{source}: spans {last + 1} minutes, beyond the replay limit of "
                          f"{MAX_MINUTES} minutes (31 days)")
    return Trace(source, tuple(TracePoint(m, d) for m, d in sorted(by_minute.items())))


def _json_trace(paths: Sequence[str], texts: Mapping[str, str], since: Optional[datetime],
                source: str) -> Trace:
    """--json logs (rotated files, monitors) merged: each file must hold runs with a load,
    or with `since`, the files together must hold some since then."""
    samples: list[Sample] = []
    for path in paths:
        found = _json_samples(texts[path].splitlines(), path, since)
        if not found and since is None:
            raise _no_runs(path, since)
        samples += found
    if not samples:
        raise _no_runs(source, since)
    return trace_from_samples(samples, source)


def read_inputs(paths: Sequence[str], fmt: Optional[str] = None,
                members: Optional[int] = None, since: Optional[datetime] = None) -> Trace:
    """The pool's demand from one or more input files (format detected unless given; `since`:
    the runs of --json logs from then on); raises ReplayError for a bad file, line or
    combination of options."""
    if fmt is not None and fmt not in FORMATS:
        raise ReplayError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    texts = {path: read_input_text(path) for path in paths}
    kinds = {path: fmt or detect_format(text) for path, text in texts.items()}
    kind = kinds[paths[0]]
    mixed = [path for path in paths if kinds[path] != kind]
    if mixed:
        raise ReplayError(f"{mixed[0]}: a {kinds[mixed[0]]} file among {kind} files: give "
                          "files of one format")
    source = paths[0] if len(paths) == 1 else f"{paths[0]} and {len(paths) - 1} more"
    if members is not None and (kind != "sar" or len(paths) > 1):
        raise ReplayError("--members goes with one sar -q file (several are one VM each)")
    if since is not None and kind != "json":
        raise ReplayError("--since goes with --json logs and the run journal")
    if kind == "csv":
        if len(paths) > 1:
            raise ReplayError("a minute,demand trace is one file")
        return parse_trace(texts[paths[0]].splitlines(), paths[0])
    if kind == "json":
        return _json_trace(paths, texts, since, source)
    series = [parse_sar(texts[path].splitlines(), path) for path in paths]
    if len(paths) == 1:
        if members is None:
            raise ReplayError(f"{paths[0]}: a sar -q report is one VM's load: give --members "
                              "N (the VMs that shared the load) or one file per VM")
        return trace_from_samples([(when, load * members) for when, load in series[0]],
                                  source)
    return trace_from_samples(pool_demand(series), source)
