"""The fault campaign: concurrency, crashes at every step, API, job and SSH faults, secrets.

Every scenario runs the installed ssh_scale.py against the simulator and the real sshd, then
checks what matters to the operator: exit code, one clear line, and the pool afterwards
(within [min_size, max_size], no orphaned or half-built managed VM, the monitored and
unmanaged VMs untouched)."""

from __future__ import annotations

import gc
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable

import paramiko
import pytest
from paramiko.file import BufferedFile

from cloudstack_sim import Fault
from sshscale.measure import CommandFailed, run_remote
from tests import sshd_support
from tests.conftest import NEWEST_ONLY, SSH_SCALE, assert_no_secrets, run_cli
from tests.configs import add_owned, labels
from tests.scenarios import (
    campaign_cloud,
    HIGH,
    LOW,
    MID,
    add_managed,
    assert_consistent,
    called,
    group,
    kill_when,
    make_config,
    outputs,
    repair,
    start_many,
)


@pytest.fixture
def cloud(any_sim: Any) -> Any:
    """The campaign's cloud, speaking as each server version in turn."""
    return campaign_cloud(any_sim)


# --- concurrency --------------------------------------------------------------------------

def test_twenty_runs_at_once_high_load_deploy_exactly_once(tmp_path, cloud, key, sshd):
    sshd.set_output(HIGH)
    path = make_config(tmp_path, cloud, key, sshd.port,
                       scalling_policy_out={"cooldown": "120"})
    results = start_many(path, 20)
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    assert len(cloud.calls_of("deployVirtualMachine")) == 1
    busy = sum("another run holds the lock" in r.stdout for r in results)
    held = sum("held back by the scale-out cooldown" in r.stdout for r in results)
    assert busy + held == 19
    assert_consistent(cloud)


def test_twenty_runs_at_once_low_load_destroy_exactly_once(tmp_path, cloud, key, sshd):
    add_managed(cloud, "m1", hours_ago=3)
    add_managed(cloud, "m2", hours_ago=2)
    sshd.set_output(LOW)
    path = make_config(tmp_path, cloud, key, sshd.port,
                       scalling_policy_in={"cooldown": "300"})
    results = start_many(path, 20)
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    assert len(cloud.calls_of("destroyVirtualMachine")) == 1
    assert "m2" not in labels(cloud.vms())
    assert_consistent(cloud)


# --- crashes at every step ------------------------------------------------------------------

def polled_deploy_job(cloud: Any) -> bool:
    """A run has asked for the state of a deploy job of this pool."""
    jobs = {vm.get("jobid") for vm in cloud.vms() if vm.get("group") == group(cloud)}
    return any(call.params.get("jobid") in jobs for call in cloud.calls_of("queryAsyncJobResult"))


def scale_out_steps(cloud: Any) -> dict[str, tuple[Callable[[], bool], list[Fault]]]:
    def deploy_done() -> bool:
        return any(vm.get("group") == group(cloud) and vm["state"] == "Running"
                   for vm in cloud.vms())
    return {
        "deploy sent, job pending": (called(cloud, "deployVirtualMachine"), []),
        "deploy done, before assign": (
            lambda: deploy_done() and bool(cloud.calls_of("assignToLoadBalancerRule")),
            [Fault("slow", command="assignToLoadBalancerRule", delay=30)]),
        "assign sent, job pending": (called(cloud, "assignToLoadBalancerRule"), []),
        "waiting for the deploy job": (lambda: polled_deploy_job(cloud), []),
    }


@pytest.mark.parametrize("step", [
    "deploy sent, job pending", "deploy done, before assign", "assign sent, job pending",
    "waiting for the deploy job"])
def test_crash_during_scale_out_is_repaired(tmp_path, cloud, key, sshd, step):
    sshd.set_output(HIGH)
    path = make_config(tmp_path, cloud, key, sshd.port)
    predicate, faults = scale_out_steps(cloud)[step]
    for fault in faults:
        cloud.inject(fault)
    kill_when(path, predicate)
    cloud.clear_faults()
    sshd.set_output(MID)
    texts = repair(path, cloud)
    assert len(cloud.calls_of("deployVirtualMachine")) == 1  # never blindly redeployed
    assert "repair" in texts[0] or step == "assign sent, job pending"
    assert_consistent(cloud)
    assert len(cloud.lb_members()) == 3


def scale_in_steps(cloud: Any) -> dict[str, tuple[Callable[[], bool], list[Fault]]]:
    def out_of_lb() -> bool:
        return "m2" not in labels(cloud.lb_members())
    return {
        "remove sent, job pending": (called(cloud, "removeFromLoadBalancerRule"), []),
        "draining": (lambda: bool(cloud.calls_of("removeFromLoadBalancerRule")) and out_of_lb(),
                     []),
        "destroy sent, job pending": (called(cloud, "destroyVirtualMachine"), []),
    }


@pytest.mark.parametrize("step", ["remove sent, job pending", "draining",
                                  "destroy sent, job pending"])
def test_crash_during_scale_in_is_repaired(tmp_path, cloud, key, sshd, step):
    add_managed(cloud, "m1", hours_ago=3)
    add_managed(cloud, "m2", hours_ago=2)
    sshd.set_output(LOW)
    drain = "5" if step == "draining" else "0"
    path = make_config(tmp_path, cloud, key, sshd.port, scalling={"drain_seconds": drain})
    predicate, _ = scale_in_steps(cloud)[step]
    kill_when(path, predicate)
    sshd.set_output(MID)
    repair(path, cloud)
    assert "m2" not in labels(cloud.vms())
    assert "m1" in labels(cloud.lb_members())
    assert_consistent(cloud)


@pytest.mark.parametrize("signum, status, head", [
    (signal.SIGTERM, 143, "terminated (SIGTERM)"),  # systemctl stop, a systemd timeout
    (signal.SIGINT, 130, "interrupted (Ctrl-C)"),
])
def test_a_signal_during_the_drain_names_it_in_one_line_then_repaired(tmp_path, cloud, key,
                                                                     sshd, signum, status, head):
    add_managed(cloud, "m1", hours_ago=3)
    victim = add_managed(cloud, "m2", hours_ago=2)
    sshd.set_output(LOW)
    path = make_config(tmp_path, cloud, key, sshd.port, scalling={"drain_seconds": "30"})
    process = subprocess.Popen([SSH_SCALE, "-c", str(path)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    for line in process.stdout:  # the log is flushed line by line; EOF if it never drains
        if "drain            : 30 s" in line:
            break
    assert "m2" not in labels(cloud.lb_members())
    process.send_signal(signum)
    out, err = process.communicate(timeout=20)
    assert process.returncode == status
    assert err == (f"ssh_scale.py: error: {head} during the drain of {victim['name']}; the next "
                   "run finishes it\n")
    sshd.set_output(MID)
    repair(path, cloud)
    assert "m2" not in labels(cloud.vms())
    assert_consistent(cloud)


def test_drained_vm_is_readded_when_pool_fell_below_min(tmp_path, cloud, key, sshd):
    vm = add_managed(cloud, "m1", hours_ago=3)
    sshd.set_output(LOW)
    path = make_config(tmp_path, cloud, key, sshd.port, scalling={"drain_seconds": "5"})
    kill_when(path, lambda: "m1" not in labels(cloud.lb_members()))
    # the operator raises min_size meanwhile: the drained VM is needed again
    path = make_config(tmp_path, cloud, key, sshd.port, scalling={"min_size": "3"})
    sshd.set_output(MID)
    text = repair(path, cloud, runs=1)[0]
    assert "re-added" in text
    assert vm["id"] in {v["id"] for v in cloud.lb_members()}
    assert len(cloud.calls_of("deployVirtualMachine")) == 0


def test_orphan_destroyed_when_pool_is_full(tmp_path, cloud, key, sshd):
    add_managed(cloud, "m1")
    add_managed(cloud, "m2")
    orphan = add_owned(cloud, "orphan", in_lb=False)
    sshd.set_output(MID)
    path = make_config(tmp_path, cloud, key, sshd.port)
    text = repair(path, cloud, runs=1)[0]
    assert "the pool is full" in text
    assert orphan["id"] not in {vm["id"] for vm in cloud.vms()}


@pytest.mark.parametrize("state", ["Error", "Stopped"])
def test_broken_managed_vm_destroyed_unmanaged_left(tmp_path, cloud, key, sshd, state):
    broken = add_owned(cloud, "broken", in_lb=False)
    cloud.set_state(broken["id"], state)
    other = cloud.add_vm("not-ours", in_lb=False)
    cloud.set_state(other["id"], state)
    sshd.set_output(MID)
    text = repair(path := make_config(tmp_path, cloud, key, sshd.port), cloud, runs=1)[0]
    assert f"repair: managed VM {broken['name']} is {state}" in text
    ids = {vm["id"] for vm in cloud.vms()}
    assert broken["id"] not in ids and other["id"] in ids
    assert path.exists()


def test_deploy_answer_lost_in_transport_is_read_back_not_resent(tmp_path, cloud, key, sshd):
    """The deploy call times out after the cloud took it: the VM is found by the name the
    deploy gave it and the scale-out goes on with it (no second deploy, no backoff)."""
    sshd.set_output(HIGH)
    path = make_config(tmp_path, cloud, key, sshd.port, account={"timeout": "1"})
    cloud.inject(Fault("slow_after", command="deployVirtualMachine", delay=3))
    done = run_cli("-c", str(path))
    assert done.returncode == 0, done.stderr
    assert "no answer within 1 s, but" in done.stdout
    assert "the cloud took the deploy" in done.stdout
    assert len(cloud.calls_of("deployVirtualMachine")) == 1
    assert not any(k.startswith("ssh-scale:backoff") for k in cloud.tags(cloud.lb_id))
    assert_consistent(cloud)
    assert len(cloud.lb_members()) == 3


# --- API faults on every call ---------------------------------------------------------------

READS = ["listLoadBalancerRuleInstances", "listVirtualMachines", "queryAsyncJobResult"]
MUTATIONS_OUT = ["deployVirtualMachine", "assignToLoadBalancerRule"]
MUTATIONS_IN = ["removeFromLoadBalancerRule", "destroyVirtualMachine"]


def fault_config(tmp_path: Path, cloud: Any, key: Path, sshd: Any, command: str) -> Path:
    if command in MUTATIONS_IN:
        add_managed(cloud, "m1")
        sshd.set_output(LOW)
    else:
        sshd.set_output(HIGH)
    return make_config(tmp_path, cloud, key, sshd.port, account={"timeout": "1"})


@NEWEST_ONLY
@pytest.mark.parametrize("command", READS)
@pytest.mark.parametrize("kind", ["http_error", "html", "slow"])
def test_transient_read_fault_is_retried(tmp_path, cloud, key, sshd, command, kind):
    path = fault_config(tmp_path, cloud, key, sshd, command)
    cloud.inject(Fault(kind, command=command, delay=2, times=1))
    done = run_cli("-c", str(path))
    assert done.returncode == 0, done.stderr
    assert "scale out        : +1" in outputs(done)
    assert_consistent(cloud)


@NEWEST_ONLY
@pytest.mark.parametrize("command", READS[:2])
def test_persistent_read_fault_exits_1_after_bounded_retries(tmp_path, cloud, key, sshd,
                                                             command):
    path = fault_config(tmp_path, cloud, key, sshd, command)
    cloud.inject(Fault("http_error", command=command, times=-1))
    done = run_cli("-c", str(path))
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and f"{command}: HTTP 503" in done.stderr
    assert len(cloud.calls_of(command)) == 4
    assert len(cloud.calls_of("deployVirtualMachine")) == 0


@NEWEST_ONLY
@pytest.mark.parametrize("command", MUTATIONS_OUT + MUTATIONS_IN)
@pytest.mark.parametrize("kind", ["http_error", "html", "slow"])
def test_mutation_fault_is_not_repeated_and_repaired_next_run(tmp_path, cloud, key, sshd,
                                                              command, kind):
    path = fault_config(tmp_path, cloud, key, sshd, command)
    cloud.inject(Fault(kind, command=command, delay=2, times=-1))
    done = run_cli("-c", str(path))
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert command in done.stderr
    assert len(cloud.calls_of(command)) == 1
    cloud.clear_faults()
    sshd.set_output(MID)
    repair(path, cloud)
    assert_consistent(cloud)


def test_bad_key_401_on_first_call_exits_1(tmp_path, cloud, key, sshd):
    sshd.set_output(HIGH)
    path = make_config(tmp_path, cloud, key, sshd.port, account={"secret_key": "wrong"})
    done = run_cli("-c", str(path), "-v")
    assert done.returncode == 1
    assert "HTTP 401" in done.stderr and "unable to verify user credentials" in done.stderr
    assert all(c.status == 401 for c in cloud.calls)
    assert len(cloud.calls_of("listLoadBalancerRuleInstances")) == 1
    assert_no_secrets(done.stdout, done.stderr, extra=("wrong",))


# --- jobs -----------------------------------------------------------------------------------

def test_failing_deploy_job_leaves_nothing(tmp_path, cloud, key, sshd):
    sshd.set_output(HIGH)
    path = make_config(tmp_path, cloud, key, sshd.port)
    cloud.inject(Fault("job_fail", command="deployVirtualMachine", errortext="No host"))
    done = run_cli("-c", str(path))
    assert done.returncode == 1 and "No host" in done.stderr
    sshd.set_output(MID)
    repair(path, cloud, runs=1)
    assert [vm["name"] for vm in cloud.vms() if vm.get("group")] == []


def test_never_finishing_job_is_bounded_and_repaired(tmp_path, cloud, key, sshd):
    sshd.set_output(HIGH)
    path = make_config(tmp_path, cloud, key, sshd.port, scalling={"job_timeout": "2"})
    cloud.inject(Fault("job_hang", command="deployVirtualMachine"))
    started = time.monotonic()
    done = run_cli("-c", str(path))
    assert done.returncode == 1 and time.monotonic() - started < 15
    assert "still pending after 2 s" in done.stderr and "next run" in done.stderr
    # the hung VM is adopted once the cloud finishes (here: never, so job_timeout again)
    cloud.clear_faults()
    hung = [vm for vm in cloud.vms() if vm.get("group")][0]
    cloud.set_state(hung["id"], "Error")
    sshd.set_output(MID)
    repair(path, cloud, runs=1)
    assert [vm for vm in cloud.vms() if vm.get("group")] == []


# --- SSH faults -----------------------------------------------------------------------------

class SilentServer:
    """Accepts TCP connections and, after an optional greeting (an SSH banner), never says a
    word: a hung sshd, or a port that is not SSH at all."""

    def __init__(self, greeting: bytes = b"") -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.greeting = greeting
        self.clients: list[socket.socket] = []
        self.thread = threading.Thread(target=self._greet, daemon=True)
        self.thread.start()

    def _greet(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:  # closed
                return
            self.clients.append(client)
            client.sendall(self.greeting)

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(5)
        for client in self.clients:
            client.close()


def ssh_case(tmp_path: Path, cloud: Any, key: Path, port: int, **mon: str) -> tuple[
        subprocess.CompletedProcess, Path]:
    add_managed(cloud, "m1")
    path = make_config(tmp_path, cloud, key, port, monitoring=mon)
    return run_cli("-c", str(path)), path


def assert_no_load_action(done: subprocess.CompletedProcess, cloud: Any, text: str) -> None:
    assert done.returncode == 1, done.stdout
    assert text in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    # once in a cron log (>> log 2>&1): not also as an "ssh" line on stdout
    assert done.stderr.split(": error: ", 1)[1].strip() not in done.stdout, done.stdout
    assert not [c for c in cloud.calls if not c.command.startswith(("list", "query"))]
    assert_no_secrets(done.stdout, done.stderr)


def test_ssh_connection_refused(tmp_path, cloud, key):
    done, _ = ssh_case(tmp_path, cloud, key, sshd_support.free_port("127.0.0.1"))
    assert_no_load_action(done, cloud, "connection refused")


@pytest.mark.parametrize("greeting, text", [
    # It said "127.0.1.9:2222: No existing session".
    (b"", ": no SSH banner within 1 s: the port accepts TCP connections but no SSH server "
          "answers (check [monitoring] host/port"),
    (b"SSH-2.0-OpenSSH_9.6\r\n", ": SSH-2.0-OpenSSH_9.6 answered but did not finish the key "
                                 "exchange and authentication within 1 s (a stuck or overloaded "
                                 "host? check it, or raise [monitoring] connect_timeout)"),
])
def test_ssh_timeout(tmp_path, cloud, key, greeting, text):
    silent = SilentServer(greeting)
    try:
        done, _ = ssh_case(tmp_path, cloud, key, silent.port, connect_timeout="1")
    finally:
        silent.close()
    assert_no_load_action(done, cloud, f"127.0.0.1:{silent.port}{text}")


def test_ssh_auth_failure(tmp_path, cloud, key, sshd, home):
    stranger = sshd_support.make_key(home / ".ssh", "stranger")
    done, _ = ssh_case(tmp_path, cloud, stranger, sshd.port)
    assert_no_load_action(done, cloud, "authentication failed")


@pytest.mark.parametrize("output, text", [
    ("garbage without numbers", "'garbage without numbers' is not what cat /proc/loadavg prints"),
    ("", "empty output"),
    ("load average: n/a", "'load average: n/a' is not what cat /proc/loadavg prints"),
])
def test_ssh_unusable_output(tmp_path, cloud, key, sshd, output, text):
    sshd.set_output(output)
    done, _ = ssh_case(tmp_path, cloud, key, sshd.port)
    assert_no_load_action(done, cloud, text)


def test_ssh_command_hangs(tmp_path, cloud, key, sshd):
    sshd.set_sleep(30)
    started = time.monotonic()
    done, _ = ssh_case(tmp_path, cloud, key, sshd.port, command_timeout="1")
    assert time.monotonic() - started < 15
    assert_no_load_action(done, cloud, "127.0.0.1")


def test_ssh_command_hangs_and_nothing_of_its_session_is_left_for_the_collector(key, sshd):
    """Found by the soak: what outlives a timed-out command only in reference cycles is
    finalized at the interpreter's exit in any order, where paramiko's BufferedFile.__del__
    (its buffer finalized first) printed "Exception ignored ... ValueError: I/O operation on
    closed file" after the run. (A Channel's __del__ swallows every error.)"""
    sshd.set_sleep(30)
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect("127.0.0.1", port=sshd.port, username=sshd_support.current_user(),
                   key_filename=str(key), allow_agent=False, look_for_keys=False, timeout=10)
    gc.collect()
    gc.disable()
    try:
        try:
            run_remote(client, "cat /proc/loadavg", 0.5)
            error = ""
        except CommandFailed as exc:
            error = str(exc)
        client.close()
        left = [type(o).__name__ for o in gc.get_objects() if isinstance(o, BufferedFile)]
    finally:
        gc.enable()
    assert "did not finish within 0.5 s" in error
    assert left == []


@pytest.mark.parametrize("policy, ok, recorded", [
    ("accept-new", True, True), ("strict", False, False), ("off", True, False)])
def test_unknown_host_key_per_policy(tmp_path, cloud, key, sshd, home, policy, ok, recorded):
    sshd.set_output(MID)
    done, _ = ssh_case(tmp_path, cloud, key, sshd.port, host_key_policy=policy)
    known = home / ".ssh" / "known_hosts"
    assert (done.returncode == 0) is ok, done.stderr
    assert (known.exists() and str(sshd.port) in known.read_text()) is recorded
    if not ok:
        assert_no_load_action(done, cloud, "unknown host key and host_key_policy = strict")


@pytest.mark.parametrize("policy, ok", [("accept-new", False), ("strict", False), ("off", True)])
def test_changed_host_key_per_policy(tmp_path, cloud, key, sshd, home, policy, ok):
    sshd.set_output(MID)
    (home / ".ssh" / "known_hosts").write_text(sshd.known_hosts_line("127.0.0.1") + "\n")
    sshd.regenerate_host_key()
    done, _ = ssh_case(tmp_path, cloud, key, sshd.port, host_key_policy=policy)
    if ok:
        assert done.returncode == 0, done.stderr
    else:
        assert_no_load_action(done, cloud, "host key changed")


# --- secrets at every verbosity -------------------------------------------------------------

@NEWEST_ONLY
@pytest.mark.parametrize("flags", [[], ["-v"], ["-q"], ["--json"], ["--status"], ["-n", "-v"]])
def test_no_secret_in_any_output(tmp_path, cloud, home, flags):
    enc = sshd_support.make_key(home / ".ssh", "id_secret", "rsa", "phrase-XYZ", "pem")
    with sshd_support.OpenSSHServer(tmp_path / "sshd-s", authorized_keys=[enc]) as server:
        server.set_output(HIGH)
        path = make_config(tmp_path, cloud, enc, server.port,
                           monitoring={"pass_phrase": "phrase-XYZ"})
        done = run_cli("-c", str(path), *flags)
    assert done.returncode == 0, done.stderr
    assert_no_secrets(done.stdout, done.stderr, extra=("phrase-XYZ",))


def test_vm_stopped_mid_destroy_is_neither_adopted_nor_destroyed_twice(tmp_path, cloud, key, sshd):
    add_managed(cloud, "m1", hours_ago=3)
    victim = add_managed(cloud, "m2", hours_ago=2)
    sshd.set_output(LOW)
    cloud.job_seconds = 3.0
    path = make_config(tmp_path, cloud, key, sshd.port)
    # killed while the destroy job has the VM Stopped (out of the LB, job pending)
    kill_when(path, lambda: any(vm["id"] == victim["id"] and vm["state"] == "Stopped"
                                for vm in cloud.vms()))
    sshd.set_output(MID)
    done = run_cli("-c", str(path))
    assert done.returncode == 0, done.stderr
    # waited for the job, or (the job having ended while the run took the lease) found nothing
    assert "m2 was destroyed by its pending job" in done.stdout or \
        "decision         : none" in done.stdout
    assert not cloud.calls_of("assignToLoadBalancerRule")
    assert len(cloud.calls_of("destroyVirtualMachine")) == 1
    assert victim["id"] not in {vm["id"] for vm in cloud.vms()}
