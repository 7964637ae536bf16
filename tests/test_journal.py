"""The run journal (sshscale.journal): where it lives, one whole line per run, rotation into
compressed files, and that a journal that cannot be written never fails a run. Real files in a
temporary directory; concurrent writers are real processes."""

from __future__ import annotations

import gzip
import json
import os
import resource
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from sshscale import journal
from sshscale.model import Action, Decision, HostLoad, Measurement, Pool, Report, Vm
from sshscale.views import report_json

ROOT = Path(__file__).resolve().parent.parent


def report(number: int = 0, vms: int = 2) -> Report:
    """A quiet run's report, told apart by its time (`number` seconds after 08:00), all of
    one length."""
    load = 1.5
    return Report(
        time=f"2026-12-01T08:{number // 60 % 60:02d}:{number % 60:02d}+00:00",
        measurement=Measurement((HostLoad("web1", "10.1.0.1", (load, load, load)),)),
        pool=Pool(tuple(Vm(f"id-{n}", f"web{n}", "Running", ip=f"10.1.0.{n}", in_lb=True)
                        for n in range(1, vms + 1))),
        decision=Decision(Action.NONE, "load between the thresholds"), load_out=load,
        load_in=load, result="nothing to do", pool_read=True)


def lines_of(path: str) -> list[bytes]:
    """Every line of the journal, oldest first (rotated files decompressed)."""
    lines: list[bytes] = []
    for name in journal.existing_files(path):
        opener = gzip.open if name.endswith(".gz") else open
        with opener(name, "rb") as stream:
            lines += stream.read().splitlines(keepends=True)
    return lines


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "web.idcfrc"
    path.write_text("[account]\n")
    return path


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(directory))
    return directory / "ssh-scale"


@pytest.mark.parametrize("xdg, expected", [
    ("/srv/state", "/srv/state/ssh-scale"),
    ("relative/state", "{home}/.local/state/ssh-scale"),  # the XDG spec ignores a relative one
    ("", "{home}/.local/state/ssh-scale"),
])
def test_state_dir_follows_xdg(home, xdg, expected):
    assert journal.state_dir({"XDG_STATE_HOME": xdg}) == expected.format(home=home)


def test_journal_path_is_the_same_through_a_symlink(tmp_path, config, state):
    link = tmp_path / "link.idcfrc"
    link.symlink_to(config)
    path = journal.journal_path(str(config))
    assert path == journal.journal_path(str(link))
    assert Path(path).parent == state and Path(path).name.startswith("web.idcfrc-")
    other = tmp_path / "api.idcfrc"
    assert journal.journal_path(str(other)) != path


def test_append_writes_one_line_per_run_readable_by_the_owner_only(config, state):
    for number in range(3):
        journal.append(report(number), str(config))
    path = journal.journal_path(str(config))
    lines = lines_of(path)
    assert [json.loads(line) for line in lines] == [report_json(report(n)) for n in range(3)]
    assert all(line.endswith(b"\n") for line in lines)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o700


def test_rotation_compresses_the_full_file_and_drops_the_oldest(config, state, monkeypatch):
    monkeypatch.setattr(journal, "ROTATED_FILES", 3)
    size = len(journal.encode(report(0)))
    for number in range(40):  # 4 lines a file: 10 files' worth, 3 rotated kept
        journal.append(report(number), str(config), file_bytes=4 * size)
    path = journal.journal_path(str(config))
    assert journal.existing_files(path) == [f"{path}.3.gz", f"{path}.2.gz", f"{path}.1.gz",
                                            path]
    kept = [json.loads(line)["time"] for line in lines_of(path)]
    assert kept == [report(n).time for n in range(24, 40)]  # whole lines, none out of order
    assert stat.S_IMODE(os.stat(f"{path}.1.gz").st_mode) == 0o600


def test_concurrent_runs_never_interleave_or_lose_lines(config, state, monkeypatch):
    """Two processes appending and rotating at the same time: every line whole, none lost."""
    code = ("import sys; from sshscale import journal; from tests.test_journal import report; "
            "[journal.append(report(int(sys.argv[1]) + n), sys.argv[2], file_bytes=20000) "
            "for n in range(150)]")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    writers = [subprocess.Popen([sys.executable, "-c", code, str(start), str(config)], env=env)
               for start in (0, 1000)]
    assert [writer.wait(timeout=60) for writer in writers] == [0, 0]
    times = sorted(json.loads(line)["time"] for line in lines_of(journal.journal_path(
        str(config))))
    assert times == sorted(report(n).time for start in (0, 1000) for n in
                           range(start, start + 150))


def test_a_short_write_is_cut_off_again(config, state, caplog):
    """A full disk (here: RLIMIT_FSIZE) mid-line leaves no half line: one warning instead."""
    journal.append(report(0), str(config))
    path = journal.journal_path(str(config))
    before = Path(path).read_bytes()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) + 100, hard))
    try:
        journal.append(report(1, vms=8), str(config))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert Path(path).read_bytes() == before
    assert "cannot write" in caplog.text and "the run is not affected" in caplog.text


def test_an_unwritable_state_dir_is_one_warning(tmp_path, config, monkeypatch, caplog):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    monkeypatch.setenv("XDG_STATE_HOME", str(blocker))
    journal.append(report(0), str(config))  # no exception
    assert caplog.text.count("cannot write") == 1


def test_require_files_names_where_it_looked(config, state):
    with pytest.raises(journal.JournalMissing, match="no journal for .*web.idcfrc at .*"
                                                     "state/ssh-scale/web.idcfrc-"):
        journal.require_files(str(config))
