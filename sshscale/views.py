"""Report -> what people read: the 2013 tool's check lines in the log, the --status table,
the --json object. Times are shown here in the monitor's local zone."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Optional

import idcf_api
from sshscale.fleet import failures, protected, vm_notes
from sshscale.logs import LABEL_WIDTH, TIME_FORMAT, log, note
from sshscale.model import Action, Bounds, Decision, History, Report, Settings, Window

__all__ = ["bounds_json", "decision_verb", "log_checks", "report_json", "schedule_lines",
           "status_table"]

STATUS_COLUMNS = ("name", "ip", "state", "in lb", "managed", "created", "load (1/5/15)")


def decision_verb(decision: Decision) -> str:
    """"scale out", "scale out 3", "destroy", ...: the action with its count when above 1."""
    return decision.action.value + (f" {decision.count}" if decision.count > 1 else "")


def log_checks(report: Report, settings: Settings) -> None:
    """The 2013 tool's check lines, with real decimals; each now_la says its period ("now_la
    (5-min)") unless both are the 1-minute average, as in the 2013 lines."""
    count = report.pool.count
    load_out = _load_text(report.load_out)
    load_in = _load_text(report.load_in)
    labelled = (settings.period_out, settings.period_in) != (1, 1)
    lines = [
        "*** scale out check ***",
        _labelled("la_threshold_out", repr(settings.threshold_out)),
        _labelled(_now_la(settings.period_out, labelled), load_out),
        _labelled("now_vm_count", str(count)),
        _labelled("vm count", f"now {count}, max {settings.max_size}"),
        "*** scale in check ***",
        _labelled("la_threshold_in", repr(settings.threshold_in)),
        _labelled(_now_la(settings.period_in, labelled), load_in),
        _labelled("vm count", f"now {count}, min {settings.min_size}"),
    ]
    for line in lines:
        log.info(line)
    for line in schedule_lines(report.bounds):
        note("schedule", line)


def _scheduled(bounds: Optional[Bounds]) -> bool:
    """Whether the config has schedules (some window, open or closed)."""
    return bounds is not None and bool(bounds.windows or bounds.closed)


def schedule_lines(bounds: Optional[Bounds]) -> list[str]:
    """The schedule windows, open and closed, and the bounds in force (nothing when the
    config has no schedules)."""
    if not _scheduled(bounds):
        return []
    lines = [f"{w.schedule.name} open since {_zoned(w.opened, w)}, until {_zoned(w.closes, w)}"
             f" ({_sets(w)})" for w in bounds.windows]
    if bounds.closed:
        lines.append(f"{', '.join(bounds.closed)} closed")
    lines.append(f"bounds now: min_size {bounds.min_size}{_source(bounds.min_from)}, max_size "
                 f"{bounds.max_size}{_source(bounds.max_from)}"
                 + ("; min_size lowered to max_size" if bounds.clamped else ""))
    return lines


def _zoned(when: datetime, window: Window) -> str:
    return when.astimezone(window.schedule.zone).strftime("%Y-%m-%d %H:%M %Z")


def _sets(window: Window) -> str:
    schedule = window.schedule
    return ", ".join(f"{key} {value}" for key, value in (("min_size", schedule.min_size),
                                                        ("max_size", schedule.max_size))
                     if value is not None)


def _source(name: Optional[str]) -> str:
    return f" (schedule {name})" if name else ""


def _now_la(period: int, labelled: bool) -> str:
    return f"now_la ({period}-min)" if labelled else "now_la"


def _labelled(label: str, value: str) -> str:
    return f"{label:<{LABEL_WIDTH}}: {value}"


def _load_text(load: Any) -> str:
    return "unknown" if load is None else f"{load:.2f}"


def status_table(report: Report) -> str:
    """The pool as a table, each member with its load, and the decision that would be taken."""
    loads = {h.address: h for h in report.measurement.hosts if h.address}
    rows = []
    for vm in report.pool.vms:
        host = loads.get(vm.ip)
        rows.append({
            "name": vm.name, "ip": vm.ip or "", "state": vm.state,
            "in lb": "yes" if vm.in_lb else "no",
            "managed": "yes" if vm.managed else ("monitored" if vm.monitored else "no"),
            "created": _local(vm.created) if vm.created else "",
            "load (1/5/15)": " ".join(f"{x:.2f}" for x in host.loads)
            if host and host.loads else "",
            "notes": vm_notes(vm),
        })
    # The notes column (protected, outdated, health, replacement) only when there are some.
    columns = STATUS_COLUMNS + (("notes",) if any(row["notes"] for row in rows) else ())
    if rows:
        table = idcf_api.format_table(rows, columns)
    elif report.pool_read:
        table = "(the pool is empty)"
    else:
        table = "(the pool was not read)"
    if report.decision is None:
        decided = "unknown: the run stopped before deciding (the error line says why)"
    else:
        decided = f"{decision_verb(report.decision)}: {report.decision.reason}"
    lines = [table, *_fact_lines(report.history),
             *(f"schedule: {line}" for line in schedule_lines(report.bounds)),
             f"decision now: {decided}"]
    return "\n".join(lines)


def _fact_lines(history: Optional[History]) -> list[str]:
    """The pool's facts that hold actions back: the failed-deploy backoff, the launch
    budget, a halted refresh, the noisy mark, the lease."""
    if history is None:
        return []
    lines = []
    if history.backoff is not None:
        lines.append(f"backoff: {history.backoff.failures} failed deploy(s) in a row; no "
                     f"deploy before {_local(history.backoff.until)}")
    if history.launches:
        newest = max(when for _, when in history.launches)
        lines.append(f"launch records: {len(history.launches)}, the newest at {_local(newest)} "
                     "(the launch budget counts the last hour's)"
                     + ("; it held a deploy" if history.budget_notice else ""))
    if history.refresh_halted is not None:
        lines.append("refresh halted: a VM of the template and offering it refreshed to failed "
                     "its health check (it applies while [launch_config] names them)")
    if history.noisy is not None:
        lines.append(f"noisy: a target scale-out found the load noisy at "
                     f"{_local(history.noisy)} (the wider scale-in margins last a day from then)")
    if history.lease is not None:
        lines.append(f"lease: held by {history.lease.holder} until "
                     f"{_local(history.lease.expires)}")
    return lines


def _local(when: datetime) -> str:
    return when.astimezone().strftime(TIME_FORMAT)


def _history_json(history: Optional[History]) -> Optional[dict[str, Any]]:
    if history is None:
        return None
    backoff, lease = history.backoff, history.lease
    return {
        "last_scale_out": _iso(history.last_scale_out),
        "last_scale_in": _iso(history.last_scale_in),
        "backoff": {"failures": backoff.failures, "until": _iso(backoff.until)}
        if backoff else None,
        "lease": {"holder": lease.holder, "expires": _iso(lease.expires)} if lease else None,
        "noisy": _iso(history.noisy),
    }


def _iso(when: Optional[datetime]) -> Optional[str]:
    return when.isoformat() if when else None


def bounds_json(bounds: Optional[Bounds]) -> Optional[dict[str, Any]]:
    """The bounds in force and the schedule windows, or None without schedules."""
    if not _scheduled(bounds):
        return None
    return {
        "min_size": bounds.min_size, "max_size": bounds.max_size,
        "min_from": bounds.min_from, "max_from": bounds.max_from, "clamped": bounds.clamped,
        "open": [{"schedule": w.schedule.name, "opened": _iso(w.opened),
                  "closes": _iso(w.closes), "min_size": w.schedule.min_size,
                  "max_size": w.schedule.max_size} for w in bounds.windows],
        "closed": list(bounds.closed),
    }


def report_json(report: Report) -> dict[str, Any]:
    """The report as the --json object."""
    decision = report.decision or Decision(Action.NONE, "")
    return {
        "time": report.time,
        "hosts": [{"host": h.host, "address": h.address,
                   "load": list(h.loads) if h.loads else None, "cpus": h.cpus,
                   "error": h.error} for h in report.measurement.hosts],
        "aggregate": {"out": report.load_out, "in": report.load_in},
        "pool": [{"id": v.id, "name": v.name, "ip": v.ip, "state": v.state,
                  "in_lb": v.in_lb, "managed": v.managed, "monitored": v.monitored,
                  "created": _iso(v.created), "tags": dict(v.tags),
                  "protected": protected(v), "outdated": v.outdated,
                  "health": None if v.check is None else {
                      "ok": v.check.ok, "detail": v.check.detail, "failures": failures(v)}}
                 for v in report.pool.vms],
        "history": _history_json(report.history),
        "bounds": bounds_json(report.bounds),
        "decision": {"action": decision.action.value, "count": decision.count,
                     "rule": decision.rule, "reason": decision.reason,
                     "vms": [v.name for v in decision.vms]},
        "dry_run": report.dry_run,
        "result": report.result,
        "error": report.error,
        "notices": list(report.notices),
    }
