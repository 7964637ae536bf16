"""Shared set-up for the benchmarks: a throwaway HOME with a key, the CloudStack simulator, an SSH
server (the real OpenSSH sshd, or load_sshd.LoadServer in its own process), configs, and child
processes measured with os.wait4 (wall time, peak RSS, CPU time).

Everything listens on 127.0.0.0/8 only; every process started here is stopped by its PID.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Optional, TypeVar

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cloudstack_sim import Simulator  # noqa: E402
from tests import sshd_support  # noqa: E402
from tests.configs import base_sections, render  # noqa: E402

BIN = Path(sys.executable).parent
TOOL = BIN / "ssh_scale.py"
LOAD_SERVER_SCRIPT = BENCH / "load_server_proc.py"
MID_LOAD = "2.00 2.00 2.00 1/100 1234\n"  # between the thresholds 1.0 and 3.0: nothing to do
HIGH_LOAD = "4.20 3.10 2.00 3/200 999\n"  # above threshold_out 3.0: scale out
LOW_LOAD = "0.10 0.20 0.30 1/99 9\n"  # below threshold_in 1.0: scale in
CHILD_TIMEOUT = 60.0  # seconds any measured child may run before it is killed
SERVER_START_SECONDS = 20.0
SERVER_STOP_SECONDS = 5.0
BYTECODE_ENV = ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")
SCRUBBED_ENV = ("XDG_RUNTIME_DIR", "XDG_STATE_HOME", "IDCFRC", "CLOUDSTACK_ENDPOINT",
                "CLOUDSTACK_KEY", "CLOUDSTACK_SECRET", "IDCF_COMPUTE_HOST", "IDCF_COMPUTE_API_KEY",
                "IDCF_COMPUTE_SECRET_KEY")


T = TypeVar("T")


class BenchError(RuntimeError):
    """A benchmark could not run as set up (a child failed, a server did not start)."""


# --- measured child processes -----------------------------------------------------------------


@dataclass(frozen=True)
class ChildRun:
    """One finished child: wall time (s), peak RSS (KiB), CPU time (s), exit status, output."""

    wall: float
    maxrss_kb: int
    cpu: float
    returncode: int
    stdout: str
    stderr: str


def run_child(argv: Sequence[str], env: Mapping[str, str],
              timeout: float = CHILD_TIMEOUT) -> ChildRun:
    """Run argv to completion and reap it with os.wait4 for its own rusage; BenchError if it
    fails or is killed after timeout seconds."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(list(argv), env=dict(env), stdin=subprocess.DEVNULL,
                                   stdout=out, stderr=err)
        watchdog = threading.Timer(timeout, _kill, args=(process.pid,))
        watchdog.start()
        try:
            _pid, status, usage = os.wait4(process.pid, 0)
        finally:
            watchdog.cancel()
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped: keep Popen quiet
        run = ChildRun(wall, usage.ru_maxrss, usage.ru_utime + usage.ru_stime,
                       process.returncode, _read(out), _read(err))
    if run.returncode != 0:
        raise BenchError(f"{' '.join(map(str, argv))} exited {run.returncode}: "
                         f"{run.stderr.strip()[-400:]}")
    return run


def rotating_rounds(commands: Mapping[str, Sequence[str]], runs: int,
                    measure: Callable[[Sequence[str]], T]) -> dict[str, list[T]]:
    """One warm-up round, then `runs` rounds of every command, the order rotating every round;
    measure(argv) of the kept rounds by label."""
    labels = list(commands)
    kept: dict[str, list[T]] = {label: [] for label in labels}
    for index in range(runs + 1):
        shift = index % len(labels)
        for label in labels[shift:] + labels[:shift]:
            result = measure(commands[label])
            if index > 0:
                kept[label].append(result)
    return kept


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _read(handle: IO[bytes]) -> str:
    handle.seek(0)
    return handle.read().decode("utf-8", "replace")


# --- statistics and tables --------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    """The median of a non-empty sequence."""
    return float(statistics.median(values))


def spread(values: Sequence[float]) -> str:
    """min-max of the values, for the text next to a median."""
    return f"{min(values):.3g}-{max(values):.3g}"


def ratio(figure: float, reference: float) -> float:
    """figure / reference (inf when the reference is 0)."""
    return figure / reference if reference else float("inf")


@dataclass(frozen=True)
class Result:
    """One line of the final summary: a figure, its reference, and the goal."""

    name: str
    figure: str
    reference: str
    ratio: str
    goal: str
    met: Optional[bool] = None  # None: for information, no goal


def verdict(met: Optional[bool]) -> str:
    """The goal column's word."""
    return "info" if met is None else ("met" if met else "NOT met")


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def summary_table(results: Sequence[Result]) -> str:
    """The final Markdown table of every Result."""
    rows = [(r.name, r.figure, r.reference, r.ratio, r.goal, verdict(r.met)) for r in results]
    return markdown_table(("benchmark", "figure", "reference", "ratio", "goal", "goal met"),
                          rows)


def say(text: str = "") -> None:
    """Print one progress/result line at once (the run takes minutes)."""
    print(text, flush=True)


# --- a throwaway HOME, a key, configs ---------------------------------------------------------


@dataclass
class Home:
    """A temporary directory holding HOME (with ~/.ssh and a key) and the child environment."""

    root: Path
    home: Path
    key: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def known_hosts(self) -> Path:
        return self.home / ".ssh" / "known_hosts"

    def trust(self, lines: Sequence[str]) -> None:
        """Write known_hosts so that no run records a new host key while it is measured."""
        self.known_hosts.write_text("".join(line + "\n" for line in lines))

    def write_config(self, name: str, sections: Mapping[str, Mapping[str, str]]) -> Path:
        """Write an owner-only config file in the temp dir; returns its path."""
        path = self.root / name
        path.write_text(render({k: dict(v) for k, v in sections.items()}))
        path.chmod(0o600)
        return path


_bytecode = {"cache": True}


def set_bytecode_cache(enabled: bool) -> None:
    """Whether children may cache bytecode (as an installed tool does) or run with the
    caller's PYTHONDONTWRITEBYTECODE/PYTHONPYCACHEPREFIX as they are."""
    _bytecode["cache"] = enabled


def bytecode_note() -> str:
    """How the children's bytecode is cached, for the report."""
    if _bytecode["cache"]:
        return "bytecode cached (PYTHONPYCACHEPREFIX in the temp dir, filled by the warm-ups)"
    flag = os.environ.get("PYTHONDONTWRITEBYTECODE")
    return f"inherited bytecode settings (PYTHONDONTWRITEBYTECODE={flag or 'unset'})"


def child_env(home: Path, root: Path) -> dict[str, str]:
    """This process's environment with HOME at home, no account or runtime-dir overrides and,
    unless disabled, a bytecode cache under root (the repository is never written to)."""
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    env["HOME"] = str(home)
    if _bytecode["cache"]:
        for name in BYTECODE_ENV:
            env.pop(name, None)
        env["PYTHONPYCACHEPREFIX"] = str(root / "pycache")
    return env


@contextmanager
def temp_home() -> Iterator[Home]:
    """A temp dir with HOME/.ssh/id_ed25519 and an environment that points HOME at it."""
    root = Path(tempfile.mkdtemp(prefix="ssh-scale-bench-"))
    try:
        home = root / "home"
        (home / ".ssh").mkdir(parents=True, mode=0o700)
        key = sshd_support.make_key(home / ".ssh", "id_ed25519")
        yield Home(root, home, key, child_env(home, root))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def config_sections(sim: Simulator, key: Path, hosts: Sequence[str], port: int,
                    **monitoring: str) -> dict[str, dict[str, str]]:
    """The tests' valid config (thresholds 3/1, 1-3 VMs, no cooldowns) for these hosts."""
    sections = base_sections(sim, key, host=",".join(hosts), port=port)
    sections["monitoring"].update(monitoring)
    return sections


@contextmanager
def simulator(job_seconds: float = 0.5, monitored_ip: str = "127.0.0.1") -> Iterator[Simulator]:
    """A started simulator with the monitored web VM (unmanaged) behind the load balancer."""
    with Simulator(job_seconds=job_seconds) as sim:
        sim.add_vm("web1", ip=monitored_ip)
        yield sim


# --- SSH servers ------------------------------------------------------------------------------


class OpenSshBackend:
    """The real OpenSSH sshd (tests/sshd_support), a child process of this one."""

    kind = "OpenSSH sshd (real, separate process)"

    def __init__(self, directory: Path, key: Path, addresses: Sequence[str],
                 output: str) -> None:
        self.server = sshd_support.OpenSSHServer(directory, addresses=addresses,
                                                 authorized_keys=[key])
        self.server.start()
        self.server.set_output(output)
        self.addresses = tuple(addresses)
        self.port = self.server.port

    def set_output(self, text: str) -> None:
        self.server.set_output(text)

    def known_hosts_lines(self) -> list[str]:
        return [self.server.known_hosts_line(a) for a in self.addresses]

    def exec_counts(self) -> dict[str, int]:
        return {a: self.server.exec_count(a) for a in self.addresses}

    def server_cpu(self) -> Optional[float]:
        return None  # sshd forks a process per connection: not tracked

    def stop(self) -> None:
        self.server.stop()


class LoadServerProcess:
    """load_sshd.LoadServer run by bench/load_server_proc.py in a separate process, driven
    over its stdin/stdout (one JSON line per request)."""

    kind = "load_sshd.LoadServer (paramiko, separate process)"

    def __init__(self, key: Path, addresses: Sequence[str], output: str,
                 delay: float = 0.0) -> None:
        argv = [sys.executable, str(LOAD_SERVER_SCRIPT), "--key", str(key),
                "--delay", str(delay), "--output", output, *addresses]
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True, cwd=str(ROOT))
        self.addresses = tuple(addresses)
        hello = self._ask(None, SERVER_START_SECONDS)
        self.port = int(hello["port"])
        self._known_hosts = list(hello["known_hosts"])

    def set_output(self, text: str) -> None:
        self._ask({"output": text})

    def known_hosts_lines(self) -> list[str]:
        return list(self._known_hosts)

    def exec_counts(self) -> dict[str, int]:
        return {k: int(v) for k, v in self._ask({"op": "count"})["execs"].items()}

    def server_cpu(self) -> Optional[float]:
        """The server process's CPU time so far (s)."""
        return float(self._ask({"op": "count"})["cpu"])

    def stop(self) -> None:
        process = self.process
        if process.poll() is not None:
            return
        try:
            assert process.stdin is not None
            process.stdin.close()
            process.wait(SERVER_STOP_SECONDS)
        except (OSError, subprocess.TimeoutExpired):
            _kill(process.pid)
            process.wait(SERVER_STOP_SECONDS)

    def _ask(self, request: Optional[Mapping[str, Any]],
             timeout: float = SERVER_STOP_SECONDS) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        if request is not None:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
        watchdog = threading.Timer(timeout, _kill, args=(self.process.pid,))
        watchdog.start()
        try:
            line = self.process.stdout.readline()
        finally:
            watchdog.cancel()
        if not line:
            raise BenchError(f"{LOAD_SERVER_SCRIPT.name} exited with {self.process.poll()}")
        return dict(json.loads(line))


def start_ssh_server(home: Home, addresses: Sequence[str], output: str, delay: float = 0.0,
                     prefer_openssh: bool = True) -> Any:
    """The real sshd when installed and preferred (no delay), else LoadServer in a process.
    Trusts the server's host key(s) in home's known_hosts."""
    if prefer_openssh and delay == 0 and sshd_support.sshd_available():
        server: Any = OpenSshBackend(home.root / "sshd", home.key, addresses, output)
    else:
        server = LoadServerProcess(home.key, addresses, output, delay)
    home.trust(server.known_hosts_lines())
    return server


def loopback_range(prefix: str, count: int) -> list[str]:
    """prefix.1 .. prefix.count, e.g. 127.0.2.1..127.0.2.50."""
    if not prefix.startswith("127.") or not 1 <= count <= 254:
        raise ValueError(f"{prefix}.1-{count}: only 127.0.0.0/8 and 1-254 hosts")
    return [f"{prefix}.{n}" for n in range(1, count + 1)]


def tool_argv(config: Path) -> list[str]:
    """The real command as cron runs it, quiet."""
    return [str(TOOL), "-c", str(config), "-q"]
