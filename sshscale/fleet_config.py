"""The optional sections of fleet operations -> Settings fields: any number of
[schedule NAME] windows, [notify] and [metrics]. Each is off unless configured. The caller
(config) hands over its validated sections (`_Section`: values, error(), text(), integer(),
number(), check_known()), so errors name file, section and key like every other one."""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import urllib.parse
from collections.abc import Mapping
from datetime import datetime, tzinfo
from typing import Any, Callable, Optional
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import textio
from sshscale.errors import ConfigError
from sshscale.model import Notify, Schedule
from sshscale.schedule import check_cron

__all__ = ["NOTIFY_EVENTS", "NOTIFY_KEYS", "SCHEDULE_KEYS", "local_zone", "metrics_textfile",
           "notify", "schedules"]

SCHEDULE_KEYS = ("cron", "duration", "timezone", "min_size", "max_size")
NOTIFY_KEYS = ("webhook", "command", "events", "timeout")
NOTIFY_EVENTS = ("scale_out", "scale_in", "repair", "replace", "failure", "brake")
MAX_NOTIFY_TIMEOUT = 60.0

def schedules(parser: configparser.ConfigParser, make_section: Callable[..., Any],
              environ: Optional[Mapping[str, str]], scaling: Any,
              max_size: int) -> tuple[Schedule, ...]:
    """Every [schedule NAME] section, in file order; `make_section(source, name, values)`
    makes a validated section, `scaling` is the [scaling] one (named in errors)."""
    found = []
    for name in parser.sections():
        kind, _, label = name.partition(" ")
        if kind != "schedule":
            continue
        if not label.strip():
            raise ConfigError(f"{scaling.source}: [{name}]: name the window: [schedule NAME]")
        section = make_section(scaling.source, name, dict(parser[name]))
        section.check_known(SCHEDULE_KEYS)
        found.append(_schedule(section, label.strip(), environ, scaling, max_size))
    return tuple(found)


def _schedule(section: Any, name: str, environ: Optional[Mapping[str, str]],
              scaling: Any, max_size: int) -> Schedule:
    cron = section.text("cron")
    try:
        check_cron(cron)
    except ValueError as exc:
        raise section.error("cron", str(exc)) from None
    bounds = {key: section.integer(key, minimum=1) if key in section.values else None
              for key in ("min_size", "max_size")}
    low, high = bounds["min_size"], bounds["max_size"]
    if low is None and high is None:
        raise section.error("min_size", "missing: set min_size, max_size or both")
    if low is not None and high is not None and low > high:
        raise section.error("min_size", f"{low} is greater than max_size {high}")
    if low is not None and high is None and low > max_size:
        raise section.error("min_size", f"{low} is above [{scaling.name}] max_size "
                                        f"{max_size}: set max_size here too")
    return Schedule(name=name, cron=cron, duration=section.seconds("duration", above=True),
                    zone=_zone(section, environ), min_size=low, max_size=high)


def _zone(section: Any, environ: Optional[Mapping[str, str]]) -> tzinfo:
    name = section.values.get("timezone", "").strip()
    if not name:
        return local_zone(os.environ if environ is None else environ)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise section.error("timezone", f"unknown time zone {name!r} (an IANA name such as "
                                        "Asia/Tokyo; check the spelling)") from None


def local_zone(environ: Mapping[str, str]) -> tzinfo:
    """This machine's time zone, with its DST rules: $TZ when it names a zone, else
    /etc/localtime, else the current UTC offset."""
    name = environ.get("TZ", "").lstrip(":")
    try:
        if name and not name.startswith("/"):
            return ZoneInfo(name)
        with open(name or "/etc/localtime", "rb") as handle:
            real = os.path.realpath(handle.name)
            return ZoneInfo.from_file(handle, key=real.partition("zoneinfo/")[2] or None)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        offset = datetime.now().astimezone().tzinfo
        assert offset is not None  # astimezone() always sets one
        return offset


def notify(section: Any) -> Optional[Notify]:
    """[notify], or None when absent (or empty)."""
    if not section.values:
        return None
    webhook = section.values.get("webhook", "").strip() or None
    if webhook is not None:
        parts = urllib.parse.urlsplit(webhook)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            # The URL holds a token: say what is wrong, not what it is.
            raise section.error("webhook", "expected an http:// or https:// URL")
    command = _command(section)
    if webhook is None and not command:
        raise section.error("webhook", "missing: set webhook, command or both")
    events = [e for e in re.split(r"[\s,]+", section.text("events", ",".join(NOTIFY_EVENTS)))
              if e]
    if not events:
        raise section.error("events", f"expected some of {', '.join(NOTIFY_EVENTS)}")
    for event in events:
        if event not in NOTIFY_EVENTS:
            raise section.error("events", f"unknown event {event!r}"
                                f"{textio.did_you_mean(event, NOTIFY_EVENTS)} (expected "
                                f"some of {', '.join(NOTIFY_EVENTS)})")
    timeout = section.seconds("timeout", Notify.timeout, above=True)
    if timeout > MAX_NOTIFY_TIMEOUT:
        raise section.error("timeout", f"expected at most {MAX_NOTIFY_TIMEOUT:g} seconds (a "
                                       f"run must not wait long for a notification), got "
                                       f"{timeout:g}")
    return Notify(webhook=webhook, command=command, events=tuple(events), timeout=timeout)


def _command(section: Any) -> tuple[str, ...]:
    """[notify] command, split like a shell line (no shell runs it); its program must exist."""
    raw = section.values.get("command", "").strip()
    try:
        argv = tuple(shlex.split(raw))
    except ValueError as exc:
        raise section.error("command", f"cannot split {raw!r}: {exc}") from None
    if not argv:
        return ()
    program = os.path.expanduser(argv[0])
    found = program if "/" in program else shutil.which(program)
    if not found or not os.path.isfile(found) or not os.access(found, os.X_OK):
        where = "" if "/" in program else " in PATH"
        raise section.error("command", f"{program}: no such executable file{where}")
    return (program, *argv[1:])


def metrics_textfile(section: Any) -> Optional[str]:
    """[metrics] textfile: a *.prom file in an existing folder, or None."""
    if not section.values:
        return None
    path = os.path.abspath(os.path.expanduser(section.text("textfile")))
    if not path.endswith(".prom"):
        raise section.error("textfile", f"{path}: must end in .prom (node_exporter's textfile "
                                        "collector reads only *.prom files)")
    if not os.path.isdir(os.path.dirname(path)):
        raise section.error("textfile", f"{os.path.dirname(path)}: no such folder")
    return path
