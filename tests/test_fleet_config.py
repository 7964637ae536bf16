"""The optional sections of fleet operations ([schedule NAME], [notify], [metrics]): every bad
value exits 2 with one line naming section and key, before anything is sent; good ones load
with their defaults; absent sections turn the features off."""

from __future__ import annotations

import copy
import os
from datetime import datetime
from pathlib import Path
from typing import Callable

import pytest

from sshscale.cli import main
from sshscale.config import load_settings
from sshscale.fleet_config import NOTIFY_EVENTS, local_zone
from tests.conftest import assert_no_secrets, base_sections, write_config

Sections = dict[str, dict[str, str]]
HOOK = "https://hooks.example.com/services/T000/B000/XXXXSECRETXXXX"
GOOD_SCHEDULE = {"cron": "0 8 * * 1-5", "duration": "11h", "timezone": "Asia/Tokyo",
                 "min_size": "2", "max_size": "3"}


def with_section(name: str, values: dict[str, str]) -> Callable[[Sections], None]:
    def change(sections: Sections) -> None:
        sections[name] = dict(values)
    return change


def schedule(**changes: str) -> Callable[[Sections], None]:
    """[schedule bh] from GOOD_SCHEDULE with keys changed (a value of None removes the key)."""
    values = {k: v for k, v in {**GOOD_SCHEDULE, **changes}.items() if v is not None}
    return with_section("schedule bh", values)


def notify(**values: str) -> Callable[[Sections], None]:
    return with_section("notify", values)


BROKEN = [
    ("schedule-no-name", with_section("schedule", GOOD_SCHEDULE),
     "[schedule]: name the window: [schedule NAME]"),
    ("schedule-typo", schedule(durtion="1h"),
     "[schedule bh] durtion: unknown key (did you mean duration?)"),
    ("no-cron", schedule(cron=None), "[schedule bh] cron: missing"),
    ("cron-4-fields", schedule(cron="0 8 * *"), "[schedule bh] cron: expected 5 fields"),
    ("cron-6-fields", schedule(cron="0 0 8 * * 1-5"), "[schedule bh] cron: expected 5 fields"),
    ("cron-minute", schedule(cron="61 8 * * *"), "[schedule bh] cron: Bad minute"),
    ("cron-word", schedule(cron="0 8 * * weekdays"), "[schedule bh] cron: Bad day-of-week"),
    ("no-duration", schedule(duration=None), "[schedule bh] duration: missing"),
    ("duration-unit", schedule(duration="11x"),
     "[schedule bh] duration: expected a duration like 90s, 30m or 11h (or a number of "
     "seconds), got '11x'"),
    ("duration-zero", schedule(duration="0m"), "[schedule bh] duration: expected a duration"),
    ("duration-negative", schedule(duration="-1h"), "[schedule bh] duration:"),
    ("bad-zone", schedule(timezone="Asia/Tokio"),
     "[schedule bh] timezone: unknown time zone 'Asia/Tokio'"),
    ("zone-path", schedule(timezone="../../etc/passwd"), "[schedule bh] timezone: unknown"),
    ("zone-folder", schedule(timezone="Asia"), "[schedule bh] timezone: unknown"),
    ("no-bounds", schedule(min_size=None, max_size=None),
     "[schedule bh] min_size: missing: set min_size, max_size or both"),
    ("min-text", schedule(min_size="four"), "[schedule bh] min_size: expected an integer"),
    ("min-zero", schedule(min_size="0"), "[schedule bh] min_size: expected an integer of at"),
    ("max-empty", schedule(max_size=""), "[schedule bh] max_size: empty"),
    ("min-gt-max", schedule(min_size="5", max_size="4"),
     "[schedule bh] min_size: 5 is greater than max_size 4"),
    ("min-above-scaling-max", schedule(min_size="9", max_size=None),
     "[schedule bh] min_size: 9 is above [scalling] max_size 3: set max_size here too"),
    ("notify-typo", notify(webhok=HOOK), "[notify] webhok: unknown key (did you mean webhook?)"),
    ("notify-nothing", notify(events="failure"),
     "[notify] webhook: missing: set webhook, command or both"),
    ("webhook-scheme", notify(webhook="ftp://hooks.example.com/x"),
     "[notify] webhook: expected an http:// or https:// URL"),
    ("webhook-no-host", notify(webhook="https:///services/x"), "[notify] webhook: expected an"),
    ("command-missing", notify(command="/nonexistent/on-scale"),
     "[notify] command: /nonexistent/on-scale: no such executable file"),
    ("command-not-in-path", notify(command="no-such-program-here --x"),
     "[notify] command: no-such-program-here: no such executable file in PATH"),
    ("command-not-executable", notify(command="{tmp}/on-scale"),
     "[notify] command: {tmp}/on-scale: no such executable file"),
    ("command-quote", notify(command="logger 'unclosed"), "[notify] command: cannot split"),
    ("bad-event", notify(webhook=HOOK, events="scale_out, scale-in"),
     "[notify] events: unknown event 'scale-in' (did you mean scale_in?)"),
    ("no-events", notify(webhook=HOOK, events=", ,"), "[notify] events: expected some of"),
    ("timeout-zero", notify(webhook=HOOK, timeout="0"),
     "[notify] timeout: expected a duration greater than 0 s"),
    ("timeout-long", notify(webhook=HOOK, timeout="61"),
     "[notify] timeout: expected at most 60 seconds"),
    ("timeout-text", notify(webhook=HOOK, timeout="soon"),
     "[notify] timeout: expected a duration like 90s, 30m or 11h"),
    ("metrics-typo", with_section("metrics", {"text_file": "/tmp/x.prom"}),
     "[metrics] text_file: unknown key (did you mean textfile?)"),
    ("textfile-empty", with_section("metrics", {"textfile": ""}), "[metrics] textfile: empty"),
    ("textfile-suffix", with_section("metrics", {"textfile": "/tmp/ssh_scale.txt"}),
     "[metrics] textfile: /tmp/ssh_scale.txt: must end in .prom"),
    ("textfile-folder", with_section("metrics", {"textfile": "/nonexistent/dir/x.prom"}),
     "[metrics] textfile: /nonexistent/dir: no such folder"),
]


@pytest.mark.parametrize("change, expected", [b[1:] for b in BROKEN],
                         ids=[b[0] for b in BROKEN])
def test_broken_fleet_sections_exit_2_naming_section_and_key(sim, key, tmp_path, capsys,
                                                             change, expected):
    (tmp_path / "on-scale").write_text("#!/bin/sh\n")  # not executable
    sections = copy.deepcopy(base_sections(sim, key))
    change(sections)
    for values in sections.values():
        values.update({k: v.replace("{tmp}", str(tmp_path)) for k, v in values.items()})
    path = write_config(tmp_path / "idcfrc", sections)
    assert main(["-c", str(path)]) == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith("ssh_scale.py: error: ")
    assert expected.replace("{tmp}", str(tmp_path)) in err
    assert_no_secrets(out, err, extra=("XXXXSECRETXXXX",))
    assert sim.calls == []


def test_fleet_sections_absent_turn_the_features_off(sim, key, tmp_path):
    sections = base_sections(sim, key)
    sections["metrics"] = {}
    sections["notify"] = {}
    settings = load_settings(str(write_config(tmp_path / "rc", sections)))
    assert (settings.schedules, settings.notify, settings.metrics_textfile) == ((), None, None)


def test_fleet_sections_load_with_defaults(sim, key, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"/bin:{os.environ['PATH']}")
    sections = base_sections(sim, key)
    sections["schedule business-hours"] = {"cron": "0 8 * * 1-5", "duration": "90m",
                                           "max_size": "3"}
    sections["schedule night"] = dict(GOOD_SCHEDULE, duration="3600")
    sections["notify"] = {"webhook": HOOK, "command": "true --flag 'two words'"}
    sections["metrics"] = {"textfile": str(tmp_path / "ssh_scale.prom")}
    monkeypatch.setenv("TZ", "Europe/Berlin")
    settings = load_settings(str(write_config(tmp_path / "rc", sections)))
    first, second = settings.schedules
    assert (first.name, first.duration, first.min_size, first.max_size) == (
        "business-hours", 5400.0, None, 3)
    assert str(first.zone) == "Europe/Berlin"  # the monitor's zone by default
    assert (second.name, second.duration, str(second.zone)) == ("night", 3600.0, "Asia/Tokyo")
    assert settings.notify is not None
    assert settings.notify.command == ("true", "--flag", "two words")
    assert settings.notify.events == NOTIFY_EVENTS and settings.notify.timeout == 5.0
    assert settings.metrics_textfile == str(tmp_path / "ssh_scale.prom")
    assert "XXXXSECRETXXXX" not in repr(settings)


@pytest.mark.parametrize("tz, expected", [
    ("Asia/Tokyo", "Asia/Tokyo"),
    (":Europe/Berlin", "Europe/Berlin"),
    ("/usr/share/zoneinfo/America/New_York", "America/New_York"),
])
def test_local_zone_from_tz(tz, expected):
    if tz.startswith("/") and not Path(tz).exists():
        pytest.skip("no system zone data")
    assert str(local_zone({"TZ": tz})) == expected


@pytest.mark.parametrize("environ", [{}, {"TZ": "JST-9"}], ids=["etc-localtime", "posix-tz"])
def test_local_zone_otherwise_this_machines(environ):
    # /etc/localtime, or (a POSIX TZ string zoneinfo cannot read) the current UTC offset
    assert local_zone(environ).utcoffset(datetime(2026, 1, 1)) is not None


def test_sample_fleet_sections_uncommented_are_valid(sim, key, tmp_path):
    """sample.idcfrc's commented fleet sections, uncommented (each value without its trailing
    explanation), with a command and a folder that exist here."""
    text = (Path(__file__).parent.parent / "sample.idcfrc").read_text()
    text = text.replace("~/.ssh/id_rsa", str(key))
    head, _, tail = text.partition("# [schedule business-hours]")
    lines = []
    for line in ("# [schedule business-hours]" + tail).splitlines():
        line = line[2:].split("  ")[0] if line.startswith("# ") else ""
        if line.startswith("[") or " = " in line:
            lines.append(line)
    fleet = "\n".join(lines).replace("/usr/local/bin/on-scale", "true").replace(
        "/var/lib/prometheus/node-exporter", str(tmp_path))
    path = tmp_path / "sample"
    path.write_text(head + "\n" + fleet + "\n")
    settings = load_settings(str(path))
    (window,) = settings.schedules
    assert (window.name, window.duration, window.min_size, window.max_size) == (
        "business-hours", 39600.0, 4, 12)
    assert settings.notify is not None and settings.notify.command == ("true",)
    assert settings.metrics_textfile == str(tmp_path / "ssh_scale-web.prom")
