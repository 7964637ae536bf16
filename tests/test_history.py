"""`ssh_scale.py --history` and `--replay --journal`: the rules that turn journal lines into
rows (tables of cases), and end to end, the installed command against the simulator and the
real sshd: runs that act, hold, fail and do nothing, then their history, its plot and their
replay."""

from __future__ import annotations

import gzip
import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from sshscale import journal
from sshscale.cli import main
from sshscale.errors import ConfigError
from sshscale.history import history_table, parse_since, read_runs, rows_of, run_of
from tests.conftest import base_sections, run_cli, write_config

HIGH, MID = "4.20 3.10 2.00 3/200 999", "2.00 2.00 2.00 1/200 999"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


def line(minute: int, action: str = "none", rule: str = "none", error: Any = None,
         load: Any = 2.0, members: int = 2, reason: str = "steady") -> dict:
    """A journal line as report_json writes it, `minute` minutes after 08:00 UTC."""
    return {"time": (NOW.replace(hour=8) + timedelta(minutes=minute)).isoformat(),
            "hosts": [], "aggregate": {"out": load, "in": load},
            "pool": [{"id": f"v{n}", "state": "Running", "in_lb": True} for n in range(members)],
            "decision": {"action": action, "count": 1 if action != "none" else 0, "rule": rule,
                         "reason": reason, "vms": []},
            "dry_run": False, "result": "pool has 3 VMs" if action != "none" else "",
            "error": error}


# --- the rules ------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("90m", NOW - timedelta(minutes=90)),
    ("24h", NOW - timedelta(hours=24)),
    ("7d", NOW - timedelta(days=7)),
    ("3600", NOW - timedelta(hours=1)),
    (" 2h ", NOW - timedelta(hours=2)),
    ("2026-11-30T08:00+09:00", datetime(2026, 11, 29, 23, 0, tzinfo=timezone.utc)),
])
def test_parse_since(text, expected):
    assert parse_since(text, NOW) == expected


def test_parse_since_without_offset_is_local_time():
    assert parse_since("2026-11-30 08:00", NOW) == datetime(2026, 11, 30, 8, 0).astimezone()


@pytest.mark.parametrize("text", ["yesterday", "-1h", "5w", ""])
def test_parse_since_refuses_anything_else(text):
    with pytest.raises(ConfigError, match="--since: expected a duration like 90m"):
        parse_since(text, NOW)


@pytest.mark.parametrize("text", ["99999999d", "9" * 21, "9" * 400, "0001-01-01"])
def test_parse_since_refuses_a_time_out_of_range(text):
    with pytest.raises(ConfigError, match=r"--since: .* is out of range"):
        parse_since(text, NOW)


@pytest.mark.parametrize("data, kind, event", [
    (line(0), "quiet", "quiet"),
    (line(0, "scale out", "threshold_out"), "action", "scale out"),
    (line(0, "destroy", "repair"), "action", "destroy"),
    (line(0, rule="cooldown"), "hold", "held"),
    (line(0, rule="backoff"), "hold", "held"),
    (line(0, rule="target"), "quiet", "quiet"),
    (line(0, error="web1:22: connection refused"), "failure", "failed"),
    (line(0, "scale out", "min_size", error="job 1 failed"), "failure", "failed: scale out"),
])
def test_run_of_classifies(data, kind, event):
    run = run_of(data)
    assert run is not None and (run.kind, run.event) == (kind, event)


def test_run_of_reads_pool_and_load_and_skips_a_line_without_time():
    run = run_of(line(0, members=3, load=1.25))
    assert run is not None and (run.pool, run.load) == (3, 1.25)
    assert run_of({**line(0), "time": "soon"}) is None
    unread = run_of({**line(0), "pool": [], "aggregate": {"out": None}})
    assert unread is not None and (unread.pool, unread.load) == (None, None)


def test_rows_summarise_quiet_runs_holds_and_failures_but_not_actions():
    lines = [line(0, load=1.0), line(1, load=2.5), line(2, "scale out", "threshold_out"),
             line(3, "scale out", "threshold_out", members=3),
             line(4, rule="cooldown", members=3), line(5, rule="cooldown", members=3),
             line(6, error="refused"), line(7, error="refused"), line(8, error="timeout"),
             line(9, members=3)]
    rows = rows_of([run_of(data) for data in lines])
    assert [(row.runs[-1].event, len(row.runs)) for row in rows] == [
        ("quiet", 2), ("scale out", 1), ("scale out", 1), ("held", 2), ("failed", 2),
        ("failed", 1), ("quiet", 1)]
    table = history_table(rows)
    first = table.splitlines()[3]
    assert "| 2    | 2    | 1.00-2.50 | quiet" in first
    assert "steady: pool has 3 VMs" in table  # an action's reason and result


def test_read_runs_reads_only_the_files_it_needs(tmp_path):
    """Rotated files are read newest first; one that starts before --since ends the reading,
    so an older file (here unreadable) is never opened."""
    base = tmp_path / "j.jsonl"
    (tmp_path / "j.jsonl.2.gz").write_bytes(b"not gzip")
    with gzip.open(tmp_path / "j.jsonl.1.gz", "wt") as stream:
        stream.write("".join(json.dumps(line(m)) + "\n" for m in range(0, 10)))
    base.write_text("".join(json.dumps(line(m)) + "\n" for m in range(10, 20)) + "{half\n")
    files = [str(tmp_path / "j.jsonl.2.gz"), str(tmp_path / "j.jsonl.1.gz"), str(base)]
    runs, unreadable = read_runs(files, NOW.replace(hour=8, minute=5))
    assert [run.when.minute for run in runs] == list(range(5, 20))
    assert unreadable == 1


# --- end to end -----------------------------------------------------------------------------

@pytest.fixture
def cloud(sim: Any) -> Any:
    sim.add_vm("web1", ip="127.0.0.1")
    return sim


@pytest.fixture
def path(tmp_path: Path, cloud: Any, key: Path, sshd: Any) -> Path:
    sections = base_sections(cloud, key, port=sshd.port)
    sections["scalling_policy_out"]["cooldown"] = "600"
    return write_config(tmp_path / "web.idcfrc", sections)


def journal_lines(path: Path) -> list[dict]:
    return [json.loads(text) for text in
            Path(journal.journal_path(str(path))).read_text().splitlines()]


def test_history_of_runs_that_act_hold_fail_and_do_nothing(tmp_path, cloud, path, sshd):
    for output, status in ((MID, 0), (MID, 0), (HIGH, 0), (HIGH, 0), ("garbage", 1), (MID, 0)):
        sshd.set_output(output)
        calls = len(cloud.calls)
        done = run_cli("-c", str(path))
        assert done.returncode == status, done.stderr
        if output == MID:  # the journal costs no API call: a quiet run makes two
            assert len(cloud.calls) - calls == 2
        cloud.settle()
    lines = journal_lines(path)
    assert [entry["decision"]["action"] for entry in lines] == [
        "none", "none", "scale out", "none", "none", "none"]
    assert lines[4]["error"] and lines[3]["decision"]["rule"] == "cooldown"
    done = run_cli("-c", str(path), "--history")
    assert done.returncode == 0, done.stderr
    rows = [row for row in done.stdout.splitlines() if row.startswith("| 20")]
    assert [row.split("|")[6].strip() for row in rows] == [
        "quiet", "scale out", "held", "failed", "quiet"]
    assert "| 2    | 1    | 2.00 | quiet" in rows[0]
    assert "load 4.20 > threshold_out 3" in rows[1] and "pool has 2 VMs" in rows[1]
    assert "held back by the scale-out cooldown" in rows[2]
    assert done.stdout.splitlines()[-1].startswith(
        "6 runs since ")
    assert ": 1 action, 1 failed, 1 held, 3 quiet (journal ~/.local/state/ssh-scale/" \
        "web.idcfrc-" in done.stdout


def test_history_since_a_later_time_shows_no_run(tmp_path, cloud, path, sshd, capsys):
    sshd.set_output(MID)
    assert run_cli("-c", str(path)).returncode == 0
    assert main(["-c", str(path), "--history", "--since", "2099-01-01"]) == 0
    out = capsys.readouterr().out
    assert "(no run recorded in that time)" in out and "0 runs since 2099-01-01 00:00:00" in out


def test_history_plot_and_replay_of_the_journal(tmp_path, cloud, path, sshd, capsys):
    for output in (HIGH, MID):
        sshd.set_output(output)
        assert run_cli("-c", str(path)).returncode == 0
        cloud.settle()
    png = tmp_path / "history.png"
    assert main(["-c", str(path), "--history", "--since", "1h", "--plot", str(png)]) == 0
    assert capsys.readouterr().out.rstrip().endswith(f"plot: {png}")
    assert png.read_bytes().startswith(b"\x89PNG")
    assert main(["-c", str(path), "--replay", "--journal", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["trace"].endswith(Path(journal.journal_path(str(path))).name)
    assert main(["-c", str(path), "--replay", journal.journal_path(str(path))]) == 0
    assert "replay of" in capsys.readouterr().out


def test_runs_that_change_nothing_or_found_another_busy_write_no_line(tmp_path, cloud, path,
                                                                      sshd):
    from sshscale.run import run_lock

    sshd.set_output(MID)
    assert run_cli("-c", str(path)).returncode == 0
    for options in (("--status",), ("--json", "-n")):
        assert run_cli("-c", str(path), *options).returncode == 0
    with run_lock(str(path)):
        busy = run_cli("-c", str(path))
    assert busy.returncode == 0 and "another run holds the lock" in busy.stdout
    assert len(journal_lines(path)) == 1


def test_an_unwritable_journal_is_one_warning_and_the_run_goes_on(tmp_path, cloud, path, sshd):
    blocker = tmp_path / "state-is-a-file"
    blocker.write_text("")
    sshd.set_output(HIGH)
    done = run_cli("-c", str(path), env=dict(os.environ, XDG_STATE_HOME=str(blocker)))
    assert done.returncode == 0, done.stderr
    warning = [text for text in done.stdout.splitlines() if "journal" in text]
    assert len(warning) == 1 and "cannot write" in warning[0] and \
        "(the run is not affected)" in warning[0]
    assert len(cloud.lb_members()) == 2  # the scale-out happened


@pytest.mark.parametrize("options, status, message", [
    (("--history",), 1, "no journal for "),
    (("--replay", "--journal"), 1, "no journal for "),
    (("--history", "--json"), 2, "--history prints no --json object"),
    (("--history", "-n"), 2, "--history runs offline"),
    (("--history", "--since", "soon"), 2, "--since: expected a duration"),
    (("--since", "1h"), 2, "--plot and --since go with --replay or --history"),
    (("--journal",), 2, "--replay takes FILEs, or --journal"),
    (("--replay",), 2, "--replay takes FILEs, or --journal"),
    (("--replay", "x.jsonl", "--journal"), 2, "--replay takes FILEs, or --journal"),
    (("--history", "--replay", "x.csv"), 2, "--replay and --history do not go together"),
])
def test_history_errors(tmp_path, cloud, key, options, status, message, capsys):
    path = write_config(tmp_path / "web.idcfrc", base_sections(cloud, key))
    assert main(["-c", str(path), *options]) == status
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.parametrize("command", [("--history",), ("--replay", "--journal")])
@pytest.mark.parametrize("since", ["99999999d", "9" * 21, "0001-01-01"])
def test_history_since_out_of_range_is_a_usage_error(tmp_path, cloud, key, command, since,
                                                     capsys):
    path = write_config(tmp_path / "web.idcfrc", base_sections(cloud, key))
    written = Path(journal.journal_path(str(path)))
    written.parent.mkdir(parents=True, exist_ok=True)
    written.write_text(json.dumps(line(0)) + "\n")
    assert main(["-c", str(path), *command, "--since", since]) == 2
    err = capsys.readouterr().err
    assert f"--since: {since!r} is out of range" in err and err.count("\n") == 1


def test_replay_reads_gzip_compressed_json_logs_and_since(tmp_path, home, capsys):
    from tests.configs import example_config

    path = example_config(home, "replay.idcfrc")
    runs = [{**line(m, load=2.0 + m / 10, members=2), "hosts": [{"load": [2.0 + m / 10, 2, 2]}]}
            for m in range(30)]
    log = tmp_path / "runs.jsonl.1.gz"
    with gzip.open(log, "wt") as stream:
        stream.write("".join(json.dumps(run) + "\n" for run in runs))
    assert main(["-c", str(path), "--replay", str(log), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["minutes"] == 30
    assert main(["-c", str(path), "--replay", str(log), "--since", "2026-12-01T08:20+00:00",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["minutes"] == 10
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(b"plain text, not gzip")
    assert main(["-c", str(path), "--replay", str(broken)]) == 2
    assert f"{broken}: not a gzip-compressed UTF-8 text file" in capsys.readouterr().err
    trace = tmp_path / "trace.csv"
    trace.write_text("0,1\n")
    assert main(["-c", str(path), "--replay", str(trace), "--since", "1h"]) == 2
    assert "--since goes with --json logs and the run journal" in capsys.readouterr().err
