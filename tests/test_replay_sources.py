"""Replay inputs from real load history: sysstat's `sar -q` reports and ssh_scale.py's own
--json log (sshscale.replay.sources), by hand-written samples in tests/samples (after
sysstat's documented output: the C locale's 12-hour clock, a 24-hour one with an ISO date and
no `blocked` column, a `sar -A` excerpt with decimal commas), and a log written by real runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sshscale.cli import main
from sshscale.replay import sources
from sshscale.replay.trace import ReplayError, TracePoint
from tests.configs import example_config
from tests.conftest import run_cli
from tests.scenarios import MID, campaign_cloud, make_config

SAMPLES = Path(__file__).resolve().parent / "samples"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
WEB1, WEB2, WEB3, RUNS = (str(SAMPLES / name) for name in (
    "sar-q-web1.txt", "sar-q-web2.txt", "sar-A-web3.txt", "runs.jsonl"))
HEADER = "10:00:01 AM   runq-sz  plist-sz   ldavg-1   ldavg-5  ldavg-15   blocked"


def points(*pairs: tuple[int, float]) -> tuple[TracePoint, ...]:
    return tuple(TracePoint(minute, demand) for minute, demand in pairs)


@pytest.mark.parametrize("text, expected", [
    ("minute,demand\n0,2\n", "csv"),
    ("# a comment\n\n0,2\n", "csv"),
    ("", "csv"),
    ("Linux 5.15.0 (web1) \t01/15/2024 \t_x86_64_\t(2 CPU)\n", "sar"),
    (f"{HEADER}\n10:10:01 AM 1 2 0.5 0.4 0.3 0\n", "sar"),
    ('{"time": "2026-11-28T10:00:02+09:00"}\n', "json"),
])
def test_detect_format(text: str, expected: str) -> None:
    assert sources.detect_format(text) == expected


@pytest.mark.parametrize("path, minutes, loads", [
    # 11:10 PM to 12:20 AM: the 12:00:01 AM row and the rows after the restart are the next day
    (WEB1, [0, 10, 20, 30, 40, 50, 60, 70], [0.52, 1.31, 2.85, 2.4, 0.97, 0.31, 0.12, 0.44]),
    (WEB2, [0, 10, 20, 30, 40], [0.48, 1.27, 2.91, 2.36, 1.01]),  # 24-hour, no blocked column
    (WEB3, [0, 10], [0.57, 1.93]),  # sar -A: only the -q section; decimal commas
])
def test_parse_sar_reads_ldavg_1_of_every_row(path: str, minutes: list, loads: list) -> None:
    samples = sources.parse_sar(Path(path).read_text().splitlines(), path)
    start = samples[0][0]
    assert [round((when - start) / 60) for when, _ in samples] == minutes
    assert [load for _, load in samples] == loads


def test_parse_sar_places_concatenated_days_by_their_dates() -> None:
    day = Path(WEB2).read_text()
    samples = sources.parse_sar((day + day.replace("2024-01-15", "2024-01-17")).splitlines(),
                                "two-days.txt")
    assert samples[5][0] - samples[0][0] == 2 * 86400


@pytest.mark.parametrize("rows, message", [
    ("10:10:01 AM 1 245 0.52 0.48\n", "t.txt:3: expected a sar -q row (a time, then runq-sz "
     "plist-sz ldavg-1 ldavg-5 ldavg-15 blocked), got '10:10:01 AM 1 245 0.52 0.48' (run sar "
     "with LC_ALL=C)"),
    ("10h10 AM 1 245 0.52 0.48 0.45 0\n", "t.txt:3: expected a sar -q row"),
    ("13:10:01 PM 1 245 0.52 0.48 0.45 0\n", "t.txt:3: expected a sar -q row"),
    ("10:10:01 AM 1 245 high 0.48 0.45 0\n", "t.txt:3: ldavg-1: expected a number of at least "
     "0, got 'high'"),
    ("10:10:01 AM 1 245 -1 0.48 0.45 0\n", "t.txt:3: ldavg-1: expected a number"),
    ("Average: 1 245 0.52 0.48 0.45 0\n", "t.txt: no sar -q rows"),
])
def test_parse_sar_rejects_malformed_rows_naming_file_and_line(rows: str, message: str) -> None:
    lines = f"Linux 5.15.0 (web1) \t01/15/2024\n{HEADER}\n{rows}".splitlines()
    with pytest.raises(ReplayError) as error:
        sources.parse_sar(lines, "t.txt")
    assert message in str(error.value)


def test_parse_json_log_turns_each_run_into_the_pools_demand() -> None:
    samples = sources.parse_json_log(Path(RUNS).read_text().splitlines(), RUNS)
    # 1.2 and 3.6 on 2 members; a skipped run and an SSH failure add nothing; the mean of
    # two members' loads (2.5, 2.1) on 3 in service (the booting VM is not in the pool)
    assert [round(demand, 2) for _, demand in samples] == [2.4, 7.2, 6.9]
    assert [when - samples[0][0] for when, _ in samples] == [0, 60, 300]


@pytest.mark.parametrize("line, message", [
    ("not json", "log.jsonl:2: not a JSON object (Expecting value)"),
    ("[1, 2]", "log.jsonl:2: expected a JSON object (one ssh_scale.py --json run per line)"),
    ('{"hosts": []}', "log.jsonl:2: time: expected an ISO 8601 time"),
    ('{"time": "yesterday"}', "log.jsonl:2: time: expected an ISO 8601 time"),
    ('{"time": "2026-11-28T10:01:00+09:00", "hosts": {}}', "log.jsonl:2: hosts and pool: "
     "expected lists"),
    ('{"time": "2026-11-28T10:01:00+09:00", "hosts": [{"load": "high"}], "pool": []}',
     "log.jsonl:2: hosts: load: expected [1-min, 5-min, 15-min], got 'high'"),
])
def test_parse_json_log_rejects_malformed_lines_naming_file_and_line(line: str,
                                                                     message: str) -> None:
    first = Path(RUNS).read_text().splitlines()[0]
    with pytest.raises(ReplayError) as error:
        sources.parse_json_log([first, line], "log.jsonl")
    assert str(error.value).startswith(message)


def test_parse_json_log_without_a_measured_run_is_an_error() -> None:
    skipped = Path(RUNS).read_text().splitlines()[2]
    with pytest.raises(ReplayError, match="log.jsonl: no run with a measured load"):
        sources.parse_json_log([skipped], "log.jsonl")


@pytest.mark.parametrize("series, expected", [
    ([[(0, 1.0), (600, 2.0)]], [(0, 1.0), (600, 2.0)]),
    # two VMs sampled a second apart: each holds its value until its next sample
    ([[(0, 1.0), (600, 2.0)], [(1, 0.5), (601, 0.7)]],
     [(0, 1.0), (1, 1.5), (600, 2.5), (601, 2.7), (1200, 0.7)]),
    # a VM that left (its file ends): it counts one sampling interval after its last sample
    ([[(0, 1.0), (600, 1.0), (1200, 1.0)], [(0, 2.0), (600, 2.0)]],
     [(0, 3.0), (600, 3.0), (1200, 1.0)]),
])
def test_pool_demand_sums_the_vms_present(series: list, expected: list) -> None:
    assert sources.pool_demand(series) == expected


def test_read_inputs_turns_per_vm_load_into_pool_demand() -> None:
    assert sources.read_inputs([WEB1], members=2).points == points(
        (0, 1.04), (10, 2.62), (20, 5.7), (30, 4.8), (40, 1.94), (50, 0.62), (60, 0.24),
        (70, 0.88))
    both = sources.read_inputs([WEB1, WEB2])
    assert both.points[:5] == points((0, 1.0), (10, 2.58), (20, 5.76), (30, 4.76), (40, 1.98))
    assert both.source == f"{WEB1} and 1 more"
    assert sources.read_inputs([RUNS], "json").points == points((0, 2.4), (1, 7.2), (5, 6.9))


def test_read_inputs_merges_json_logs_by_time(tmp_path: Path) -> None:
    lines = Path(RUNS).read_text().splitlines()
    (tmp_path / "runs.jsonl.1").write_text("\n".join(lines[:2]) + "\n")
    (tmp_path / "runs.jsonl").write_text("\n".join(lines[2:]) + "\n")
    trace = sources.read_inputs([str(tmp_path / "runs.jsonl"), str(tmp_path / "runs.jsonl.1")])
    assert trace.points == points((0, 2.4), (1, 7.2), (5, 6.9))


@pytest.mark.parametrize("paths, fmt, members, message", [
    ([WEB1], None, None, "sar-q-web1.txt: a sar -q report is one VM's load: give --members N"),
    ([WEB1, WEB2], None, 2, "--members goes with one sar -q file"),
    ([RUNS], None, 2, "--members goes with one sar -q file"),
    ([WEB1, RUNS], None, None, "runs.jsonl: a json file among sar files"),
    ([str(EXAMPLES / "spike.csv")] * 2, None, None, "a minute,demand trace is one file"),
    ([WEB1], "xml", None, "--format: expected one of csv, sar, json, got 'xml'"),
    ([RUNS], "sar", 2, "runs.jsonl: no sar -q rows"),
    ([str(SAMPLES / "missing.txt")], None, None, "missing.txt: no such file"),
])
def test_read_inputs_errors(paths: list, fmt: Any, members: Any, message: str) -> None:
    with pytest.raises(ReplayError) as error:
        sources.read_inputs(paths, fmt, members)
    assert message in str(error.value)


def test_read_inputs_refuses_more_than_the_replay_limit(tmp_path: Path) -> None:
    lines = Path(RUNS).read_text().splitlines()
    late = json.loads(lines[0])
    late["time"] = "2026-12-30T10:00:02+09:00"
    (tmp_path / "long.jsonl").write_text(lines[0] + "\n" + json.dumps(late) + "\n")
    with pytest.raises(ReplayError, match="long.jsonl: spans 46081 minutes, beyond the replay "
                                          "limit"):
        sources.read_inputs([str(tmp_path / "long.jsonl")])


# --- the command line ------------------------------------------------------------------------


@pytest.fixture
def replay_config(home: Path) -> Path:
    return example_config(home, "replay-target.idcfrc")


@pytest.mark.parametrize("inputs", [[WEB1, "--members", "2"], [WEB1, WEB2], [RUNS],
                                    [WEB3, "--format", "sar", "--members", "3"]])
def test_main_replays_real_history(replay_config: Path, capsys: pytest.CaptureFixture[str],
                                   inputs: list) -> None:
    assert main(["-c", str(replay_config), "--json", "--replay", *inputs]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["scaling_policy"] == "target" and data["minutes"] >= 6


def test_main_malformed_history_exits_2_naming_file_and_line(
        replay_config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "web1.txt"
    broken.write_text(Path(WEB1).read_text().replace("2.40", "2.4O"))
    assert main(["-c", str(replay_config), "--replay", str(broken), "--members", "2"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == (f"ssh_scale.py: error: {broken}:7: ldavg-1: expected a number "
                                 "of at least 0, got '2.4O'\n")


@pytest.mark.parametrize("argv", [["--members", "2"], ["--format", "sar"]])
def test_history_options_go_with_replay(argv: list, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "go with --replay" in capsys.readouterr().err


def test_main_members_must_be_positive(replay_config: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-c", str(replay_config), "--replay", WEB1, "--members", "0"]) == 2
    assert "--members: expected a number of VMs of at least 1, got 0" in capsys.readouterr().err


def test_the_json_log_of_real_runs_replays(tmp_path, sim, key, sshd):
    """What the README promises: last week's `--json` runs replay directly."""
    cloud = campaign_cloud(sim)
    sshd.set_output(MID)
    path = make_config(tmp_path, cloud, key, sshd.port)
    log = tmp_path / "runs.jsonl"
    for _ in range(3):
        done = run_cli("-c", str(path), "--json")
        assert done.returncode == 0, done.stderr
        with log.open("a") as handle:
            handle.write(done.stdout)
    replayed = run_cli("-c", str(path), "--replay", str(log), "--json")
    assert replayed.returncode == 0, replayed.stderr
    assert json.loads(replayed.stdout)["minutes"] >= 1
    trace = sources.read_inputs([str(log)])
    assert {point.demand for point in trace.points} == {4.0}  # load 2.00 on 2 VMs
