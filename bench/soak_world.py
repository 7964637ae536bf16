"""The soak's world for one server mode (bench/soak.py drives it): the CloudStack simulator with
a small guest address pool and two templates, the real OpenSSH sshd answering on every guest
address, an HTTP health endpoint per address, two monitors (each its own HOME and
$SSH_SCALE_MONITOR) sharing one config, the runs of the real ssh_scale.py (killed with SIGKILL
or SIGTERM on demand), and what the cloud holds after a step, read from the simulator.

Everything listens on 127.0.0.0/8 only; every process started here is stopped by its PID."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Optional

from bench.common import TOOL, child_env
from cloudstack_sim import Simulator
from tests import sshd_support
from tests.configs import base_sections, render

NET = "127.0.4"
UPGRADED = "ssh-scale:upgraded"  # README, "Tags ssh-scale keeps"
WEB1 = f"{NET}.200"  # the monitored VM of the 2013 tool: unmanaged, in the load balancer
BYSTANDER = f"{NET}.201"  # another unmanaged member
# other pools' VMs and strangers (sshd listens on at most 16 addresses: web1, the bystander,
# up to 9 guest addresses and these)
FOREIGN_IPS = tuple(f"{NET}.{n}" for n in range(210, 215))
API_TIMEOUT = 4  # [account] timeout: seconds per API request
GUEST_SPARE = 3  # guest addresses beyond max_size: a small pool, reused (expunge = yes)
SILENT_SECONDS = 5.0  # a silent host's answer comes after command_timeout (3 s)
RUN_TIMEOUT = 120.0  # a run still going after this is killed and reported
TERM_GRACE = 15.0  # a run that got SIGTERM must have ended within this
GOOD, BROKEN = 200, 500
PYCACHE = Path(tempfile.gettempdir()) / f"ssh-scale-soak-pycache-{os.getuid()}"
HEALTH_PORT_ATTEMPTS = 5


@dataclass(frozen=True)
class Scenario:
    """One server mode's config knobs (drawn from the seed)."""

    min_size: int
    max_size: int
    policy: str
    monitor_members: bool
    health: bool
    refresh: bool
    cooldown_out: int
    cooldown_in: int
    unhealthy_runs: int
    max_backoff: int
    broken_is_own: bool  # which of the simulator's two templates is the one that fails health
    job_seconds: float


@dataclass(frozen=True)
class Kill:
    """Stop a run with `signal` once the cloud received `after_calls` API calls since it
    started (0: after `delay` seconds)."""

    signal: int
    after_calls: int
    delay: float = 0.0

    def describe(self) -> str:
        name = signal.Signals(self.signal).name
        when = f"its {self.after_calls}th API call" if self.after_calls else \
            f"{self.delay:.2f} s"
        return f"{name} after {when}"


@dataclass(frozen=True)
class RunRecord:
    """One finished run of ssh_scale.py."""

    number: int
    monitor: str
    args: tuple[str, ...]
    kill: Optional[Kill]
    signalled: bool  # the kill was sent (the run had not ended before)
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    overran: bool = False  # killed by the harness after RUN_TIMEOUT (or TERM_GRACE)

    @property
    def report(self) -> Optional[dict[str, Any]]:
        """The --json object, when the run printed one."""
        for line in reversed(self.stdout.splitlines()):
            if line.startswith("{"):
                try:
                    return json.loads(line)
                except ValueError:
                    return None
        return None


@dataclass(frozen=True)
class CloudVm:
    """A VM as the simulator holds it after a step (`created` in virtual epoch seconds)."""

    id: str
    name: str
    state: str
    ip: Optional[str]
    template: str
    group: Optional[str]
    created: float
    in_lb: bool
    tags: Mapping[str, str]
    jobid: Optional[str]


@dataclass(frozen=True)
class CallRecord:
    """One API request the simulator received (parameter names lowercased)."""

    command: str
    params: Mapping[str, str]
    status: int
    time: float


@dataclass
class Monitor:
    """One monitor VM: its name in leases and the environment of its runs (its own HOME)."""

    name: str
    env: dict[str, str] = field(default_factory=dict)


class HealthEndpoints:
    """A real HTTP server on each address (one port), answering every GET with the status
    verdict(address) gives."""

    def __init__(self, addresses: Sequence[str], verdict: Callable[[str], int]) -> None:
        self.verdict = verdict
        self.servers: list[ThreadingHTTPServer] = []
        for attempt in range(HEALTH_PORT_ATTEMPTS):
            self.port = sshd_support.free_port(addresses[0])
            try:
                for address in addresses:
                    self.servers.append(self._serve(address))
                return
            except OSError:  # another process took the port on one address meanwhile
                self.close()
                if attempt == HEALTH_PORT_ATTEMPTS - 1:
                    raise

    def _serve(self, address: str) -> ThreadingHTTPServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the http.server name)
                self.send_response(owner.verdict(self.connection.getsockname()[0]))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer((address, self.port), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        return server

    def close(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()
        self.servers = []


class World:
    """The cloud, the hosts and the two monitors of one server mode."""

    def __init__(self, root: Path, mode: str, scenario: Scenario, stack: ExitStack) -> None:
        self.root, self.mode, self.scenario = root, mode, scenario
        self.guest_ips = tuple(f"{NET}.{n}" for n in
                               range(1, scenario.max_size + GUEST_SPARE + 1))
        self.sim = stack.enter_context(Simulator(
            job_seconds=scenario.job_seconds, ip_addresses=self.guest_ips, cloudstack=mode))
        self.good_template, self.broken_template = (
            (self.sim.template_id, self.sim.own_template_id) if scenario.broken_is_own
            else (self.sim.own_template_id, self.sim.template_id))
        self.group = f"ssh_scale-{self.sim.lb_id}"
        self.seeded: dict[str, str] = {}  # VM id -> what it is; every other VM is the tool's
        self.legacy: dict[str, str] = {}  # VMs seeded as an earlier version's: the pool's too
        self.sick: set[str] = set()  # addresses whose health endpoint answers 503
        self.addresses = (WEB1, BYSTANDER, *self.guest_ips, *FOREIGN_IPS)
        keys = root / "keys"
        keys.mkdir(mode=0o700)
        self.key = sshd_support.make_key(keys, "id_ed25519")
        self.sshd = stack.enter_context(sshd_support.OpenSSHServer(
            root / "sshd", addresses=self.addresses, authorized_keys=[self.key]))
        self.health = HealthEndpoints(self.addresses, self._verdict)
        stack.callback(self.health.close)
        self.monitors = [self._monitor(name) for name in ("monitor-a", "monitor-b")]
        self.config = root / "idcfrc"
        self._seed()

    def _monitor(self, name: str) -> Monitor:
        home = self.root / name
        (home / ".ssh").mkdir(parents=True, mode=0o700)
        env = child_env(home, self.root)
        env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)  # compiled once for every soak, not per world
        env["SSH_SCALE_MONITOR"] = name
        return Monitor(name, env)

    def _seed(self) -> None:
        """web1 (monitored) and a bystander in the load balancer, another pool's VMs."""
        other = self.sim.add_lb_rule("other")
        hours_ago = datetime.now(timezone.utc) - timedelta(hours=2)
        self.seed_vm("web1", "the monitored VM", ip=WEB1, created=hours_ago)
        self.seed_vm("bystander", "an unmanaged member", ip=BYSTANDER, created=hours_ago)
        for state in ("Running", "Error"):
            self.seed_vm(f"other-{state.lower()}", f"another pool's {state} VM",
                         group=f"ssh_scale-{other}", in_lb=False, state=state)

    def seed_vm(self, name: str, kind: str, *, ip: Optional[str] = None,
                group: Optional[str] = None, in_lb: bool = True, state: str = "Running",
                created: Optional[datetime] = None, legacy: bool = False) -> str:
        """Add a VM the tool did not create (`legacy`: one it may take for the pool's, as an
        earlier version's); returns its id."""
        ip = ip or next(a for a in FOREIGN_IPS if a not in self._used_ips())
        vm = self.sim.add_vm(name, ip=ip, group=group, in_lb=in_lb, state=state,
                             created=created)
        (self.legacy if legacy else self.seeded)[vm["id"]] = kind
        return str(vm["id"])

    def upgrading(self) -> bool:
        """Whether the pool is still being upgraded (README, "Managed VMs"): the rule does not
        say ssh-scale:upgraded (which the first launch writes), so a member of the pool's
        instance group that carries neither the pool's name nor its tag passes for a VM an
        earlier version deployed."""
        return UPGRADED not in self.sim.tags(self.sim.lb_id)

    def _used_ips(self) -> set[str]:
        return {vm.ip for vm in self.cloud_vms() if vm.ip}

    def _verdict(self, address: str) -> int:
        if address in self.sick:
            return 503
        broken = any(vm["templateid"] == self.broken_template and vm["id"] not in self.seeded
                     and vm["nic"][0]["ipaddress"] == address for vm in self.sim.vms())
        return BROKEN if broken else GOOD

    # --- the config and the SSH answers ----------------------------------------------------

    def write_config(self, template: str) -> None:
        """The config both monitors run, deploying `template`."""
        self.config.write_text(render(config_sections(self, template)))
        self.config.chmod(0o600)

    def set_answers(self, answers: Mapping[str, str], silent: Collection[str]) -> None:
        """What each address's `cat /proc/loadavg` prints; silent ones answer too late."""
        for address in self.addresses:
            self.sshd.set_output(answers.get(address, ""), address)
            self.sshd.set_sleep(SILENT_SECONDS if address in silent else None, address)

    # --- runs -----------------------------------------------------------------------------

    def run(self, number: int, monitor: Monitor, args: Sequence[str],
            kill: Optional[Kill] = None, start_delay: float = 0.0) -> RunRecord:
        """Run ssh_scale.py once as `monitor` (after start_delay), stopped as `kill` says."""
        time.sleep(start_delay)
        before = len(self.sim.calls)
        started = time.monotonic()
        process = subprocess.Popen([str(TOOL), "-c", str(self.config), *args],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   env=monitor.env)
        reader = _Reader(process)
        signalled, overran = False, False
        if kill is not None:
            signalled = _signal_when(process, kill, lambda: len(self.sim.calls) - before,
                                     started)
        limit = TERM_GRACE if signalled else RUN_TIMEOUT
        if not _ended_within(process, limit, started if not signalled else time.monotonic()):
            process.kill()
            overran = True
        stdout, stderr = reader.finish()
        return RunRecord(number, monitor.name, tuple(args), kill, signalled, process.returncode,
                         stdout, stderr, time.monotonic() - started, overran)

    # --- what the cloud holds -------------------------------------------------------------

    def cloud_vms(self) -> list[CloudVm]:
        """Every VM, destroyed and expunged ones too, in creation order."""
        members = {vm["id"] for vm in self.sim.lb_members()}
        return [CloudVm(id=str(vm["id"]), name=str(vm["name"]), state=str(vm["state"]),
                        ip=(vm.get("nic") or [{}])[0].get("ipaddress"),
                        template=str(vm.get("templateid")), group=vm.get("group"),
                        created=_epoch(str(vm["created"])), in_lb=vm["id"] in members,
                        tags={t["key"]: t["value"] for t in vm.get("tags") or []},
                        jobid=vm.get("jobid"))
                for vm in self.sim.vms(include_gone=True)]

    def calls_since(self, start: int) -> list[CallRecord]:
        return [CallRecord(c.command.lower(), {k.lower(): v for k, v in c.params.items()},
                           c.status, c.time) for c in self.sim.calls[start:]]

    def failed_deploys(self) -> set[str]:
        """The VMs whose deploy job failed (a VM.CREATE event completed with level ERROR)."""
        by_seq = {}
        for vm in self.sim.vms(include_gone=True):
            by_seq[str(self.sim.internal_id(vm["id"]))] = str(vm["id"])
        failed = set()
        for event in self.sim.events:
            if event["type"] == "VM.CREATE" and event["state"] == "Completed" and \
                    event["level"] == "ERROR":
                seq = event["description"].rsplit(":", 1)[-1].strip()
                if seq in by_seq:
                    failed.add(by_seq[seq])
        return failed


def config_sections(world: World, template: str) -> dict[str, dict[str, str]]:
    """The soak's config: the tests' base (thresholds 3/1), the scenario's knobs, short
    timeouts (every wait of a run is real time; long enough for a machine under load),
    expunge (addresses are reused)."""
    scenario = world.scenario
    sections = base_sections(world.sim, world.key, host=WEB1, port=world.sshd.port)
    sections["account"]["timeout"] = str(API_TIMEOUT)
    sections["launch_config"]["templateid"] = template
    sections["monitoring"].update(connect_timeout="5", command_timeout="3",
                                  monitor_members="yes" if scenario.monitor_members else "no")
    sections["scalling"].update(
        min_size=str(scenario.min_size), max_size=str(scenario.max_size), job_timeout="10",
        expunge="yes", drain_seconds="0", max_backoff=str(scenario.max_backoff),
        refresh="yes" if scenario.refresh else "no", policy=scenario.policy)
    if scenario.policy == "target":
        for name in ("scalling_policy_out", "scalling_policy_in"):
            sections[name].pop("cooldown")
    else:
        sections["scalling_policy_out"]["cooldown"] = str(scenario.cooldown_out)
        sections["scalling_policy_in"]["cooldown"] = str(scenario.cooldown_in)
    if scenario.health:
        sections["health"] = {"check": "http", "timeout": "2", "grace": "60",
                              "unhealthy_runs": str(scenario.unhealthy_runs),
                              "url": f"http://{{ip}}:{world.health.port}/healthz"}
    return sections


@contextmanager
def open_world(mode: str, scenario: Scenario) -> Iterator[World]:
    """A started world in a temp directory, removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix=f"ssh-scale-soak-{mode}-"))
    try:
        with ExitStack() as stack:
            yield World(root, mode, scenario, stack)
    finally:
        shutil.rmtree(root, ignore_errors=True)


class _Reader:
    """Both output streams of a process, read by threads (so that a full pipe never stalls
    a run the harness is polling)."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.parts: dict[str, str] = {}
        self.threads = [threading.Thread(target=self._read, args=(name, stream), daemon=True)
                        for name, stream in (("out", process.stdout), ("err", process.stderr))]
        for thread in self.threads:
            thread.start()

    def _read(self, name: str, stream: Any) -> None:
        self.parts[name] = stream.read()

    def finish(self) -> tuple[str, str]:
        for thread in self.threads:
            thread.join()
        return self.parts.get("out", ""), self.parts.get("err", "")


def _signal_when(process: subprocess.Popen, kill: Kill, calls: Callable[[], int],
                 started: float) -> bool:
    """Send kill.signal once its point is reached; False when the run ended first."""
    while process.poll() is None:
        due = calls() >= kill.after_calls if kill.after_calls else \
            time.monotonic() - started >= kill.delay
        if due:
            os.kill(process.pid, kill.signal)
            return True
        if time.monotonic() - started > RUN_TIMEOUT:
            return False
        time.sleep(0.005)
    return False


def _ended_within(process: subprocess.Popen, seconds: float, since: float) -> bool:
    try:
        process.wait(max(0.0, since + seconds - time.monotonic()))
        return True
    except subprocess.TimeoutExpired:
        return False


def _epoch(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S%z").timestamp()
