"""The offline trial, as README "Try it offline" walks it: `cloudstack-sim --ssh --write-config
trial.idcfrc` in one terminal; `ssh_scale.py -c trial.idcfrc` and `cloudstack-sim load N` in
another. The real commands, as subprocesses."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import paramiko
import pytest

from cloudstack_sim.trial import ClosedLoop, stale_known_hosts, write_config
from tests.conftest import run_cli

CLOUDSTACK_SIM = shutil.which("cloudstack-sim", path=os.path.dirname(sys.executable)) or \
    "cloudstack-sim"


def sim_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([CLOUDSTACK_SIM, *args], capture_output=True, text=True,
                          timeout=timeout)


class TrialSimulator:
    """`cloudstack-sim --ssh --write-config PATH` running in the background, its output kept."""

    def __init__(self, config: Path, *args: str) -> None:
        self.process = subprocess.Popen(
            [CLOUDSTACK_SIM, "--port", "0", "--ssh-port", "0", "--job-seconds", "0.1",
             "--ssh", "--write-config", str(config), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        assert self.process.stdout is not None
        for line in self.process.stdout:  # the banner, up to its last line
            self.lines.append(line)
            if "cloudstack-sim load" in line:
                break
        banner = "".join(self.lines)
        found = re.search(r"http://127\.0\.0\.1:(\d+)/client/api", banner)
        assert found and "(Ctrl-C stops)" in banner, banner + self.process.stderr.read()
        self.port = found.group(1)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        self.lines.extend(self.process.stdout)

    def load(self, *args: str) -> subprocess.CompletedProcess:
        return sim_cli("load", *args, "--port", self.port)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        status = self.process.wait(20)
        self.reader.join(20)
        return status


@pytest.fixture
def trial(tmp_path: Path, home: Path) -> Any:
    started: list[TrialSimulator] = []

    def start(*args: str) -> TrialSimulator:
        started.append(TrialSimulator(tmp_path / "trial.idcfrc", *args))
        return started[-1]

    yield start
    for one in started:
        if one.process.poll() is None:
            one.stop()


def run(config: Path, *args: str) -> subprocess.CompletedProcess:
    done = run_cli("-c", str(config), *args)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_the_readme_trial_scales_out_and_in_and_keeps_edits_across_restarts(tmp_path, trial,
                                                                           home):
    sim = trial()
    config = tmp_path / "trial.idcfrc"
    assert "wrote " + str(config) in "".join(sim.lines)
    assert config.stat().st_mode & 0o777 == 0o600
    templates = subprocess.run([shutil.which("idcf-compute-api", path=os.path.dirname(
        sys.executable)) or "idcf-compute-api", "--config", str(config), "listTemplates",
        "--templatefilter=self", "-t", "id"], capture_output=True, text=True, timeout=60)
    own = re.search(r"(?m)^templateid = (\S+)$", config.read_text())
    assert own and own.group(1) in templates.stdout, templates.stdout + templates.stderr
    status = run(config, "--status")
    assert "| web1 " in status.stdout and "1.50 1.50 1.50" in status.stdout
    assert "decision now: none: load between thresholds" in status.stdout
    assert status.stderr == ""

    load = sim.load("6.5")
    assert (load.returncode, load.stdout, load.stderr) == (
        0, "demand 6.5 shared by 1 running member: each reports a load of 6.50\n", "")
    assert "scale out        : +1" in run(config).stdout
    assert "held back by the scale-out cooldown" in run(config).stdout  # 30 s in the trial
    # the user edits the policy: no cooldowns
    config.write_text(re.sub(r"(?m)^cooldown = \d+$", "cooldown = 0", config.read_text()))
    assert "now vm count     : 3" in run(config).stdout  # 6.5 / 2 = 3.25 > 3
    assert "decision         : none" in run(config).stdout  # 6.5 / 3 = 2.17
    assert sim.load().stdout.startswith("demand 6.5 shared by 3 running members: each reports "
                                        "a load of 2.17")
    sim.load("0.5")
    assert "scale in         : -1" in run(config).stdout
    assert "scale in         : -1" in run(config).stdout
    assert "at min_size 1" in run(config).stdout
    assert "ssh 127.0.1.1: load 0.50\n" in "".join(sim.lines)[-40:]  # what the sim printed
    assert sim.stop() == 0

    again = trial()
    text = config.read_text()
    assert f"host = http://127.0.0.1:{again.port}/client/api" in text
    assert text.count("cooldown = 0") == 2 and "# web1, the VM" in text  # edits kept
    status = run(config, "--status")
    assert "| web1 " in status.stdout and "0.50 0.50 0.50" not in status.stdout


def test_a_file_the_simulator_did_not_write_is_never_overwritten(tmp_path, home):
    config = tmp_path / "idcfrc"
    config.write_text("[account]\nhost = https://cloud.example/client/api\n")
    done = sim_cli("--port", "0", "--ssh-port", "0", "--write-config", str(config))
    assert done.returncode == 1
    assert done.stderr == (f"cloudstack-sim: error: {config} exists and was not written by "
                           "cloudstack-sim; choose another path (a real config is never "
                           "overwritten)\n")
    assert config.read_text() == "[account]\nhost = https://cloud.example/client/api\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "idcfrc"]  # no key files


def test_a_taken_ssh_port_writes_no_file(tmp_path, home):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.1.1", 0))
        taken.listen()
        done = sim_cli("--port", "0", "--ssh-port", str(taken.getsockname()[1]),
                       "--write-config", str(tmp_path / "trial.idcfrc"))
    assert done.returncode == 1 and "choose another --ssh-port" in done.stderr, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]


def test_cloudstack_sim_has_a_version_and_its_help_names_load_port():
    from sshscale import __version__

    assert sim_cli("--version").stdout == f"cloudstack-sim {__version__}\n"
    assert "load [DEMAND] [--port PORT]" in " ".join(sim_cli("--help").stdout.split())


def test_load_without_a_simulator_or_without_its_trial_is_one_line(sim):
    from tests.sshd_support import free_port

    port = free_port("127.0.0.1")
    done = sim_cli("load", "2", "--port", str(port))
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert done.stderr.startswith(f"cloudstack-sim: error: no simulator answers on "
                                  f"127.0.0.1:{port} (")
    assert "cloudstack-sim --ssh --write-config trial.idcfrc" in done.stderr
    plain = sim_cli("load", "--port", str(sim.port))
    assert plain.returncode == 1
    assert plain.stderr == (f"cloudstack-sim: error: the simulator on 127.0.0.1:{sim.port} "
                            "serves no SSH trial (HTTP 404; start it with --ssh "
                            "--write-config PATH)\n")


@pytest.mark.parametrize("args, message", [
    (["load", "-1"], "expected a number of load units (at least 0), got '-1'"),
    (["load", "lots"], "expected a number of load units (at least 0), got 'lots'"),
    (["--load", "nan", "--write-config", "x"], "got 'nan'"),
    (["--ssh"], "--ssh needs --write-config PATH"),
    (["--ssh-port", "70000", "--write-config", "x"], "--ssh-port 70000: expected 0..65535"),
])
def test_bad_trial_options_exit_2(args, message):
    done = sim_cli(*args)
    assert done.returncode == 2 and message in done.stderr


def test_closed_loop_answers_per_address(sim):
    web1 = sim.add_vm("web1")
    sim.add_vm("web2")
    sim.add_vm("booting", in_lb=False)
    stopped = sim.add_vm("stopped")
    sim.set_state(stopped["id"], "Stopped")
    heard: list[tuple[str, float]] = []
    loop = ClosedLoop(sim, 5.0, on_answer=lambda address, load: heard.append((address, load)))
    assert web1["nic"][0]["ipaddress"] == "127.0.1.1"
    assert loop.respond("127.0.1.1", "cat /proc/loadavg") == "2.50 2.50 2.50 1/123 4567\n"
    assert loop.respond("127.0.1.3", "cat /proc/loadavg") == "0.00 0.00 0.00 1/123 4567\n"
    assert loop.respond("127.0.1.2", "{ cat /proc/loadavg\n} && getconf _NPROCESSORS_ONLN") \
        == "2.50 2.50 2.50 1/123 4567\n1\n"
    with pytest.raises(LookupError, match="no VM has the address 127.0.1.99"):
        loop.respond("127.0.1.99", "cat /proc/loadavg")
    assert heard == [("127.0.1.1", 2.5), ("127.0.1.3", 0.0), ("127.0.1.2", 2.5)]
    assert loop.last_load == 2.5 and loop.members() == 2


OWNED = {"account": {"host": "http://127.0.0.1:2/client/api", "api_key": "k",
                     "secret_key": "s"},
         "monitoring": {"host": "127.0.1.1", "port": "2", "private_key_path": "/k2"},
         "launch_config": {"zoneid": "z2", "serviceofferingid": "o2", "templateid": "t2"},
         "scalling": {"load_balancer": "lb2"}}


def test_write_config_updates_only_the_keys_it_owns(tmp_path):
    path = tmp_path / "trial.idcfrc"
    write_config(path, {**OWNED, "account": {**OWNED["account"],
                                             "host": "http://127.0.0.1:1/client/api"}})
    edited = path.read_text().replace("max_size = 4", "max_size = 9\n# mine") \
        .replace("templateid = t2\n", "").replace("[monitoring]\n", "[monitoring]\nport=1\n") \
        .replace("port = 2\n", "") + "\n[other]\nhost = elsewhere\n"
    path.write_text(edited)
    write_config(path, OWNED)
    assert path.read_text() == edited \
        .replace("http://127.0.0.1:1/", "http://127.0.0.1:2/") \
        .replace("[monitoring]\nport=1\n", "[monitoring]\nport = 2\n") \
        .replace("displayname = trial-web\n", "displayname = trial-web\ntemplateid = t2\n")
    assert path.stat().st_mode & 0o777 == 0o600


def test_stale_known_hosts_entries_are_named(tmp_path):
    key, other = paramiko.ECDSAKey.generate(), paramiko.ECDSAKey.generate()
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.1.1]:2222 {other.get_name()} {other.get_base64()}\n"
                     f"[127.0.1.2]:2222 {key.get_name()} {key.get_base64()}\n"
                     f"[127.0.1.3]:2200 {other.get_name()} {other.get_base64()}\n")
    addresses = ("127.0.1.1", "127.0.1.2", "127.0.1.3")
    assert stale_known_hosts(addresses, 2222, key, known) == ["[127.0.1.1]:2222"]
    assert stale_known_hosts(addresses, 2222, key, tmp_path / "none") == []



def test_the_load_path_sets_the_demand_and_refuses_a_bad_one(tmp_path, sim):
    import json
    import urllib.error
    import urllib.request

    from cloudstack_sim.trial import LOAD_PATH, Trial

    sim.add_vm("web1")
    base = f"http://127.0.0.1:{sim.port}{LOAD_PATH}"
    trial = Trial(sim, tmp_path / "trial.idcfrc", ssh_port=0).start("127.0.1.1")
    try:
        with urllib.request.urlopen(f"{base}?demand=2", timeout=10) as answer:
            assert json.load(answer) == {"demand": 2.0, "members": 1, "load": 2.0}
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{base}?demand=-3", timeout=10)
        assert refused.value.code == 400
        assert json.load(refused.value) == {
            "error": "demand: expected a number of load units (at least 0), got '-3'"}
        assert trial.state()["demand"] == 2.0
        assert sim.calls == []  # beside the API: not recorded, no signature
    finally:
        trial.stop()
