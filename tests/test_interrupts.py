"""Ctrl-C and SIGTERM: one line that says what the run was doing, never a traceback, from the
first import on (the drain of a scale-in: test_faults)."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from sshscale.interrupts import Terminated, step, stopped_message, stopped_status
from tests.conftest import SSH_SCALE, base_sections, write_config
from tests.scenarios import start_run, wait_for

NOTHING = "nothing was changed"
FINISHES = "the next run finishes it"


def stopped(error: KeyboardInterrupt, *steps: tuple[str, bool]) -> KeyboardInterrupt:
    """The interruption as main() sees it after unwinding the given steps, outermost first."""
    def unwind(level: int) -> None:
        if level == len(steps):
            raise error
        what, changing = steps[level]
        with step(what, changing=changing):
            unwind(level + 1)

    try:
        unwind(0)
    except KeyboardInterrupt as exc:
        return exc
    raise AssertionError("not raised")


@pytest.mark.parametrize("error, steps, message, status", [
    (KeyboardInterrupt(), [], "interrupted (Ctrl-C)", 130),
    (Terminated(), [], "terminated (SIGTERM)", 143),
    (KeyboardInterrupt(), [("while starting", False)],
     f"interrupted (Ctrl-C) while starting; {NOTHING}", 130),
    (Terminated(), [("while reading the pool", False), ("while holding the pool's lease", True),
                    ("during the drain of web-3", True)],
     f"terminated (SIGTERM) during the drain of web-3; {FINISHES}", 143),
    # the innermost step wins, also over an outer one that changes nothing
    (KeyboardInterrupt(), [("while reading the pool", False), ("during the deploy of 1 VM", True)],
     f"interrupted (Ctrl-C) during the deploy of 1 VM; {FINISHES}", 130),
])
def test_stopped_message_names_the_innermost_step(error, steps, message, status):
    exc = stopped(error, *steps)
    assert (stopped_message(exc), stopped_status(exc)) == (message, status)


def test_terminated_is_no_exception_a_handler_could_swallow():
    assert issubclass(Terminated, KeyboardInterrupt) and not issubclass(Terminated, Exception)


# The console script imports sshscale.cli, whose main() imports the rest: a signal sent while
# one of those modules is being imported (it took ~0.2 s) printed a traceback.
LAUNCHER = """
import importlib.abc, os, runpy, signal, sys

module, signum, script = sys.argv[1], int(sys.argv[2]), sys.argv[3]

class SignalOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == module:
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signum)
        return None

sys.meta_path.insert(0, SignalOnImport())
sys.argv[:] = sys.argv[3:]
runpy.run_path(script, run_name="__main__")
"""


@pytest.mark.parametrize("module", ["idcf_api", "requests", "sshscale.logs", "sshscale.errors",
                                    "sshscale.config", "paramiko", "sshscale.run"])
@pytest.mark.parametrize("signum, status, head", [
    (signal.SIGINT, 130, "interrupted (Ctrl-C)"),
    (signal.SIGTERM, 143, "terminated (SIGTERM)"),
])
def test_a_signal_during_the_imports_is_one_line(tmp_path, home, module, signum, status, head):
    done = subprocess.run([sys.executable, "-c", LAUNCHER, module, str(int(signum)), SSH_SCALE,
                           "-c", str(tmp_path / "idcfrc")],
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (status, ""), done.stderr
    assert done.stderr == f"ssh_scale.py: error: {head} while starting; {NOTHING}\n"


@pytest.mark.parametrize("module", ["sshscale.interrupts", "sshscale.cli"])
def test_ctrl_c_before_main_runs_is_the_same_one_line(tmp_path, home, module):
    # The console script's own import of sshscale.cli (~0.15 s on a cold, busy machine) was
    # not covered: Ctrl-C there printed a traceback.
    done = subprocess.run([sys.executable, "-c", LAUNCHER, module, str(int(signal.SIGINT)),
                           SSH_SCALE, "-c", str(tmp_path / "idcfrc")],
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (130, ""), done.stderr
    assert done.stderr == f"ssh_scale.py: error: interrupted (Ctrl-C) while starting; {NOTHING}\n"


def test_importing_the_package_leaves_the_excepthook_alone():
    done = subprocess.run([sys.executable, "-c", "import sys, sshscale.cli; "
                           "print(sys.excepthook is sys.__excepthook__)"],
                          capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "True"


def test_cli_module_imports_nothing_heavy():
    done = subprocess.run([sys.executable, "-c", "import sys, sshscale.cli; print(sorted("
                           "m for m in ('idcf_api', 'requests', 'paramiko', 'argparse', "
                           "'sshscale.config', 'sshscale.errors') if m in sys.modules))"],
                          capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"


def test_ctrl_c_while_measuring_changes_nothing(tmp_path, sim, key, sshd):
    sim.add_vm("web1", ip="127.0.0.1")
    sshd.set_sleep(30)
    sections = base_sections(sim, key, port=sshd.port)
    sections["monitoring"]["command_timeout"] = "2"
    path = write_config(tmp_path / "idcfrc", sections)
    process = start_run(path)
    wait_for(lambda: sshd.exec_count() > 0, process)  # the command runs (and sleeps) there
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=20)
    assert process.returncode == 130
    assert err == ("ssh_scale.py: error: interrupted (Ctrl-C) while measuring the load and "
                   f"reading the pool; {NOTHING}\n")
    assert [c.command for c in sim.calls if not c.command.startswith(("list", "query"))] == []
