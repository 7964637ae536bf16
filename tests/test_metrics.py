"""[metrics] textfile: the text format proved by prometheus_client's own parser, every series
labelled with the load balancer, the times carried over from the previous file or taken from
the cloud's facts, the atomic write, and a file that cannot be written as one warning line."""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sshscale.model import Action, Backoff, Bounds, Decision, History, HostLoad, Measurement, \
    Report
from sshscale.metrics import read_previous, render, write
from tests.test_decide import BASE, pool
from tests.test_schedule import window

NOW = 1_764_556_800.0  # 2025-12-01 02:40 UTC
EARLIER = datetime(2025, 11, 30, tzinfo=timezone.utc)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(name, labels without load_balancer): value}, through prometheus_client's parser;
    every sample must carry the load balancer."""
    found = {}
    for family in text_string_to_metric_families(text):
        assert family.type == "gauge" and family.documentation
        for sample in family.samples:
            labels = dict(sample.labels)
            assert labels.pop("load_balancer") == "lb-1"
            found[(sample.name, tuple(sorted(labels.items())))] = sample.value
    return found


def value(found: dict, name: str, **labels: str) -> Optional[float]:
    return found.get((f"ssh_scale_{name}", tuple(sorted(labels.items()))))


def report(error: Optional[str] = None, action: Action = Action.NONE,
           history: Optional[History] = None) -> Report:
    """A run that measured two hosts (one answered) and read a pool of 3; an action without
    an error was carried out (the actor's result)."""
    loads = Measurement((HostLoad("web1", "127.0.0.1", (0.5, 1.5, 2.5)),
                         HostLoad("web2", error="refused")))
    return Report(time="t", measurement=loads, pool=pool(3), pool_read=True,
                  decision=Decision(action, "why"), error=error, history=history,
                  result="done" if action is not Action.NONE and error is None else "",
                  bounds=Bounds(4, 12))


def test_render_is_valid_text_format_with_every_gauge():
    settings = replace(BASE, schedules=(window("bh"), window("night", min_size=None)))
    run = replace(report(), bounds=Bounds(4, 12, windows=(), closed=("bh", "night")))
    found = samples(render(run, settings, NOW, 0.25, {}))
    assert value(found, "pool_members") == 3 and value(found, "pool_in_service") == 3
    assert value(found, "pool_booting") == 0 and value(found, "pool_committed") == 3
    assert (value(found, "min_size"), value(found, "max_size")) == (4, 12)
    assert value(found, "schedule_open", schedule="bh") == 0
    assert value(found, "schedule_open", schedule="night") == 0
    assert [value(found, "load", period=p) for p in ("1", "5", "15")] == [0.5, 1.5, 2.5]
    assert (value(found, "hosts_measured"), value(found, "hosts_answered")) == (2, 1)
    assert value(found, "last_run_timestamp_seconds") == NOW
    assert value(found, "last_success_timestamp_seconds") == NOW
    assert value(found, "last_run_success") == 1
    assert value(found, "run_duration_seconds") == 0.25
    assert value(found, "backoff_until_timestamp_seconds") is None  # unknown: history unread


def test_without_bounds_or_pool_the_config_bounds_are_shown():
    run = Report(time="t", error="SSH failed")
    found = samples(render(run, BASE, NOW, 1.0, {}))
    assert (value(found, "min_size"), value(found, "max_size")) == (2, 5)
    assert value(found, "pool_members") is None and value(found, "last_run_success") == 0
    assert value(found, "last_success_timestamp_seconds") is None


def test_failure_carries_the_last_success_and_actions_over():
    first = render(report(action=Action.SCALE_OUT), BASE, NOW - 60, 1.0, {})
    previous = read_previous(first, "lb-1")
    found = samples(render(report(error="boom"), BASE, NOW, 1.0, previous))
    assert value(found, "last_run_timestamp_seconds") == NOW
    assert value(found, "last_success_timestamp_seconds") == NOW - 60
    assert value(found, "last_action_timestamp_seconds", action="scale_out") == NOW - 60
    assert value(found, "last_run_success") == 0


def test_failed_action_is_no_last_action():
    found = samples(render(report(error="deploy failed", action=Action.SCALE_OUT), BASE, NOW,
                           1.0, {}))
    assert value(found, "last_action_timestamp_seconds", action="scale_out") is None


def test_action_done_before_the_run_failed_counts():
    done = replace(report(error="no host measured", action=Action.SCALE_OUT),
                   result="pool has 4 VMs")
    found = samples(render(done, BASE, NOW, 1.0, {}))
    assert value(found, "last_action_timestamp_seconds", action="scale_out") == NOW
    assert value(found, "last_run_success") == 0


def test_history_gives_scale_times_and_the_backoff():
    history = History(last_scale_out=EARLIER, last_scale_in=None,
                      backoff=Backoff(2, datetime.fromtimestamp(NOW + 120, timezone.utc)))
    previous = {("last_action_timestamp_seconds", "scale_in"): NOW - 5000,
                ("last_action_timestamp_seconds", "scale_out"): NOW - 10,
                ("backoff_until_timestamp_seconds", ""): NOW + 999}
    found = samples(render(report(history=history, action=Action.SCALE_IN), BASE, NOW, 1.0,
                           previous))
    # the later of the cloud's fact and the previous file; this run's action is now
    assert value(found, "last_action_timestamp_seconds", action="scale_out") == NOW - 10
    assert value(found, "last_action_timestamp_seconds", action="scale_in") == NOW
    assert value(found, "backoff_until_timestamp_seconds") == NOW + 120
    cleared = samples(render(report(history=History()), BASE, NOW, 1.0, previous))
    assert value(cleared, "backoff_until_timestamp_seconds") == 0


def test_read_previous_keeps_only_this_pools_readable_lines():
    text = ('ssh_scale_last_success_timestamp_seconds{load_balancer="lb-1"} 12.5\n'
            'ssh_scale_last_success_timestamp_seconds{load_balancer="lb-2"} 99\n'
            'ssh_scale_last_action_timestamp_seconds{load_balancer="lb-1",action="repair"} 7\n'
            'ssh_scale_run_duration_seconds{load_balancer="lb-1"} soon\n'
            "# HELP ssh_scale_x whatever\ngarbage\n")
    assert read_previous(text, "lb-1") == {("last_success_timestamp_seconds", ""): 12.5,
                                           ("last_action_timestamp_seconds", "repair"): 7.0}


def test_label_values_are_escaped_and_read_back():
    settings = replace(BASE, load_balancer='lb "1"\\x', schedules=(window('a"b\\c'),))
    text = render(report(), settings, NOW, 1.0, {})
    families = {f.name: f for f in text_string_to_metric_families(text)}
    (sample,) = families["ssh_scale_schedule_open"].samples
    assert sample.labels == {"load_balancer": 'lb "1"\\x', "schedule": 'a"b\\c'}
    assert read_previous(text, 'lb "1"\\x')[("last_success_timestamp_seconds", "")] == NOW


def test_write_replaces_the_file_atomically_readable_by_the_collector(tmp_path):
    path = tmp_path / "ssh_scale.prom"
    path.write_text("old\n")
    settings = replace(BASE, metrics_textfile=str(path))
    write(report(), settings, 1.0, NOW)
    assert value(samples(path.read_text()), "last_run_timestamp_seconds") == NOW
    assert os.stat(path).st_mode & 0o777 == 0o644
    assert os.listdir(tmp_path) == ["ssh_scale.prom"]  # no temporary file left


def test_write_off_without_metrics(tmp_path):
    write(report(), BASE, 1.0, NOW)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_textfile_is_one_warning(tmp_path: Path, caplog):
    settings = replace(BASE, metrics_textfile=str(tmp_path / "gone" / "ssh_scale.prom"))
    write(report(), settings, 1.0, NOW)
    (line,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "cannot write" in line and "gone/ssh_scale.prom" in line
    assert "the run is not affected" in line


@pytest.mark.parametrize("action, label", [(Action.ADOPT, "repair"),
                                           (Action.DESTROY, "repair"),
                                           (Action.SCALE_OUT, "scale_out")])
def test_this_runs_action_is_the_last_of_its_kind(action, label):
    found = samples(render(report(action=action), BASE, NOW, 1.0, {}))
    assert value(found, "last_action_timestamp_seconds", action=label) == NOW
