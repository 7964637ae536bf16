"""Test helper: the real OpenSSH sshd on loopback addresses, and keys made by ssh-keygen.

The sshd runs as a child of the test process with its own config in a test directory. Every
session runs a ForceCommand script that counts the exec and prints a canned load report per
server address, which tests set with OpenSSHServer.set_output / set_sleep. As root, sshd needs the
privilege separation directory /run/sshd (made on start); as a normal user it runs unprivileged
and only that user can log in, which is the user AllowUsers names. With UsePAM no, sshd turns
away an account whose password entry it reads as locked ("!..."): as root that is root's line in
/etc/shadow; a normal user's sshd cannot read /etc/shadow and lets ordinary accounts in.
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import IO, Optional, Sequence


from load_sshd import check_loopback

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"
PRIVSEP_DIR = Path("/run/sshd")
KEY_TYPES = ("rsa", "ecdsa", "ed25519")
KEY_FORMATS = ("openssh", "pem")
DEFAULT_OUTPUT = "0.00 0.00 0.00 1/100 1234"
START_SECONDS = 10.0
STOP_SECONDS = 5.0
PORT_ATTEMPTS = 5  # port 0: fresh ports to try when another process takes the picked one first
LOG_TAIL_LINES = 20
BIND_FAILED = re.compile(r"Bind to port \d+ on \S+ failed")

WRAPPER = """#!/bin/sh
# ForceCommand of the test sshd: count the exec, then print the load report set for the
# address the client connected to ($SSH_CONNECTION = client_ip client_port server_ip server_port).
set -f
dir={directory}
set -- $SSH_CONNECTION
addr=$3
echo exec >> "$dir/execs/$addr.log"
printf '%s\\n' "$SSH_ORIGINAL_COMMAND" >> "$dir/execs/$addr.cmd"
if [ -f "$dir/load/$addr.sleep" ]; then
    sleep "$(cat "$dir/load/$addr.sleep")"
fi
if [ -f "$dir/load/$addr.drip" ]; then
    while :; do echo '{default_output}'; sleep "$(cat "$dir/load/$addr.drip")"; done
fi
if [ -f "$dir/load/$addr" ]; then
    cat "$dir/load/$addr"
elif [ -f "$dir/load/default" ]; then
    cat "$dir/load/default"
else
    echo '{default_output}'
fi
"""


class SSHDError(RuntimeError):
    """sshd did not start; the message carries the tail of its log."""


def sshd_available() -> bool:
    """Return True when both sshd and ssh-keygen are installed and executable."""
    return all(os.access(program, os.X_OK) for program in (SSHD, SSH_KEYGEN))


def require_sshd() -> None:
    """Skip the calling test when OpenSSH is missing; fail it instead when CI=true."""
    if sshd_available():
        return
    import pytest  # only here: the benchmarks use this module without pytest

    reason = f"OpenSSH sshd not found at {SSHD} (apt-get install openssh-server)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI=true requires it")
    pytest.skip(reason)


def current_user() -> str:
    """Return the login name of the effective user (the only one an unprivileged sshd admits)."""
    return pwd.getpwuid(os.geteuid()).pw_name


def make_key(
    directory: Path, name: str, key_type: str = "ed25519", passphrase: str = "",
    fmt: str = "openssh",
) -> Path:
    """Generate directory/name (public key at name.pub) with ssh-keygen; return the private path.

    Raises ValueError for an unknown type or format, FileExistsError if the key exists, and
    RuntimeError with ssh-keygen's message when it fails.
    """
    if key_type not in KEY_TYPES:
        raise ValueError(f"key_type {key_type!r} is not one of {KEY_TYPES}")
    if fmt not in KEY_FORMATS:
        raise ValueError(f"fmt {fmt!r} is not one of {KEY_FORMATS}")
    path = Path(directory) / name
    if path.exists():  # ssh-keygen would stop and ask whether to overwrite
        raise FileExistsError(f"{path} already exists")
    command = [SSH_KEYGEN, "-q", "-t", key_type, "-N", passphrase, "-C", name, "-f", str(path)]
    if key_type == "rsa":
        command += ["-b", "2048"]
    if fmt == "pem":
        command += ["-m", "PEM"]
    result = subprocess.run(
        command, check=False, stdin=subprocess.DEVNULL, capture_output=True, timeout=60,
    )
    if result.returncode != 0:  # e.g. a passphrase shorter than 5 characters
        message = result.stderr.decode(errors="replace").strip()
        raise RuntimeError(f"ssh-keygen could not make {path}: {message}")
    return path


def public_key_path(key: Path) -> Path:
    """Return the .pub file of a private key path (or the path itself if it is the .pub)."""
    key = Path(key)
    return key if key.suffix == ".pub" else key.with_name(key.name + ".pub")


def fingerprint(key: Path) -> str:
    """Return the key's SHA256 fingerprint as OpenSSH prints it ("SHA256:..."), by ssh-keygen."""
    result = subprocess.run([SSH_KEYGEN, "-l", "-E", "sha256", "-f", str(public_key_path(key))],
                            check=True, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    return result.stdout.decode().split()[1]


def free_port(address: str) -> int:
    """Return a TCP port that was free on `address` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((address, 0))
        return probe.getsockname()[1]


def answers_ssh(address: str, port: int) -> bool:
    """Return True when address:port accepts and sends an SSH banner within half a second."""
    try:
        with socket.create_connection((address, port), timeout=0.5) as probe:
            if not probe.recv(256).startswith(b"SSH-"):
                return False
            probe.sendall(b"SSH-2.0-sshd_support_probe\r\n")  # keeps sshd's error log quiet
            return True
    except OSError:
        return False


def _config_quote(path: Path) -> str:
    """Quote a path for sshd_config (double quotes keep spaces in one argument)."""
    return f'"{path}"'


class OpenSSHServer:
    """A real sshd on loopback addresses whose every session prints the load report set for it."""

    def __init__(
        self,
        directory: Path,
        *,
        addresses: Sequence[str] = ("127.0.0.1",),
        port: int = 0,
        authorized_keys: Sequence[Path] = (),
        host_key_type: str = "ed25519",
    ) -> None:
        """Write host key, authorized_keys, the wrapper and its directories into `directory`."""
        self.directory = Path(directory).resolve()
        self.addresses = check_loopback(addresses)
        self.port = port
        self.host_key_type = host_key_type
        self.host_key_path = self.directory / f"ssh_host_{host_key_type}_key"
        self.authorized_keys_path = self.directory / "authorized_keys"
        self.wrapper_path = self.directory / "forcecommand.sh"
        self.config_path = self.directory / "sshd_config"
        self.log_path = self.directory / "sshd.log"
        self._process: Optional[subprocess.Popen[bytes]] = None
        self._log: Optional[IO[bytes]] = None
        self._log_start = 0
        self._write_files(authorized_keys)

    def __enter__(self) -> OpenSSHServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def host_public_key(self) -> str:
        """The host key as "type base64" (no comment)."""
        key_type, base64 = public_key_path(self.host_key_path).read_text().split()[:2]
        return f"{key_type} {base64}"

    def start(self) -> OpenSSHServer:
        """Run sshd until it accepts on every address; raise SSHDError with its log otherwise."""
        if self._process is not None:
            raise RuntimeError("sshd is already running")
        if os.geteuid() == 0:
            PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        attempts = 1 if self.port else PORT_ATTEMPTS
        for attempt in range(1, attempts + 1):
            port = self.port or free_port(self.addresses[0])
            try:
                self._spawn(port)
                break
            except SSHDError as error:
                if attempt == attempts or "in use" not in str(error):
                    raise
        self.port = port  # kept: a restart (regenerate_host_key) listens on the same port
        return self

    def stop(self) -> None:
        """Terminate the sshd listener (SIGTERM, SIGKILL after STOP_SECONDS) and wait for it."""
        process, self._process = self._process, None
        if process is not None:
            process.terminate()
            try:
                process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_SECONDS)
        if self._log is not None:
            self._log.close()
            self._log = None

    def set_output(self, text: str, address: Optional[str] = None) -> None:
        """Make execs on `address` (None: every address without its own) print `text` verbatim."""
        self._load_file(address).write_text(text)

    def set_sleep(self, seconds: Optional[float], address: Optional[str] = None) -> None:
        """Make execs on `address` (None: every address) sleep `seconds` first; None: no sleep."""
        if seconds is not None and seconds < 0:
            raise ValueError(f"sleep {seconds} s is negative")
        for one in self.addresses if address is None else [self._served(address)]:
            path = self.directory / "load" / f"{one}.sleep"
            if seconds is None:
                path.unlink(missing_ok=True)
            else:
                path.write_text(f"{seconds:.3f}\n")

    def set_drip(self, seconds: Optional[float], address: str = "127.0.0.1") -> None:
        """Make execs on `address` print a line every `seconds`, never ending (a command that
        keeps printing); None: stop that."""
        path = self.directory / "load" / f"{self._served(address)}.drip"
        if seconds is None:
            path.unlink(missing_ok=True)
        else:
            path.write_text(f"{seconds:.3f}\n")

    def exec_count(self, address: str = "127.0.0.1") -> int:
        """Return how many execs sshd ran for clients connected to `address`."""
        return len(self._exec_log(address, "log"))

    def commands(self, address: str = "127.0.0.1") -> list[str]:
        """Return the commands clients asked to run on `address`, oldest first."""
        return self._exec_log(address, "cmd")

    def known_hosts_line(self, address: str) -> str:
        """Return "[address]:port type base64" (plain address on port 22) for known_hosts."""
        address = self._served(address)
        host = address if self.port == 22 else f"[{address}]:{self.port}"
        return f"{host} {self.host_public_key}"

    def regenerate_host_key(self) -> None:
        """Replace the host key with a new one, restarting sshd on the same port if it runs."""
        running = self._process is not None
        self.stop()
        self.host_key_path.unlink()
        public_key_path(self.host_key_path).unlink()
        make_key(self.directory, self.host_key_path.name, self.host_key_type)
        if running:
            self.start()

    def _write_files(self, authorized_keys: Sequence[Path]) -> None:
        for sub in ("execs", "load"):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        self.authorized_keys_path.write_text(
            "".join(public_key_path(key).read_text() for key in authorized_keys)
        )
        self.wrapper_path.write_text(WRAPPER.format(
            directory=shlex.quote(str(self.directory)), default_output=DEFAULT_OUTPUT,
        ))
        self.wrapper_path.chmod(0o755)
        make_key(self.directory, self.host_key_path.name, self.host_key_type)

    def _served(self, address: str) -> str:
        (address,) = check_loopback([address])
        if address not in self.addresses:
            raise ValueError(f"{address} is not one of this sshd's addresses {self.addresses}")
        return address

    def _load_file(self, address: Optional[str]) -> Path:
        name = "default" if address is None else self._served(address)
        return self.directory / "load" / name

    def _exec_log(self, address: str, suffix: str) -> list[str]:
        log = self.directory / "execs" / f"{self._served(address)}.{suffix}"
        return log.read_text().splitlines() if log.exists() else []

    def _spawn(self, port: int) -> None:
        """Start sshd on `port` and wait until every address accepts (SSHDError if not)."""
        self.config_path.write_text(self._config(port))
        self._log = self.log_path.open("ab")
        self._log_start = self._log.tell()
        self._process = subprocess.Popen(
            [os.path.abspath(SSHD), "-D", "-e", "-f", str(self.config_path)],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
        )
        deadline = time.monotonic() + START_SECONDS
        pending = list(self.addresses)
        while pending:
            if self._process.poll() is not None:
                self._fail(f"sshd exited with status {self._process.returncode}")
            if time.monotonic() > deadline:
                self._fail(f"sshd did not accept on {pending} port {port} in {START_SECONDS} s")
            pending = [address for address in pending if not answers_ssh(address, port)]
            if pending:
                time.sleep(0.05)
        if BIND_FAILED.search(self._log_tail()):  # sshd carries on when one address is bound
            self._fail(f"sshd could not listen on every address {self.addresses}")

    def _fail(self, reason: str) -> None:
        tail = self._log_tail()
        self.stop()
        raise SSHDError(f"{reason}; {self.log_path} ends with:\n{tail}")

    def _log_tail(self) -> str:
        """Return the last lines sshd logged since its latest start."""
        if self._log is not None:
            self._log.flush()
        with self.log_path.open("rb") as log:
            log.seek(self._log_start)
            lines = log.read().decode(errors="replace").splitlines()
        return "\n".join(lines[-LOG_TAIL_LINES:]) or "(empty log)"

    def _config(self, port: int) -> str:
        listen = [f"ListenAddress {address}:{port}" for address in self.addresses]
        settings = [
            f"HostKey {_config_quote(self.host_key_path)}",
            f"PidFile {_config_quote(self.directory / 'sshd.pid')}",
            f"AuthorizedKeysFile {_config_quote(self.authorized_keys_path)}",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes",
            "UsePAM no",
            "StrictModes no",
            "PermitRootLogin prohibit-password",
            f"AllowUsers {current_user()}",
            f"ForceCommand {shlex.quote(str(self.wrapper_path))}",
            "LogLevel ERROR",
            "MaxStartups 100:30:200",
            "MaxSessions 100",
            "X11Forwarding no",
            "AllowAgentForwarding no",
            "AllowTcpForwarding no",
            "AllowStreamLocalForwarding no",
            "PermitTunnel no",
            "PermitUserEnvironment no",
            "UseDNS no",
            "PrintMotd no",
            "PrintLastLog no",
        ]
        return "\n".join(listen + settings) + "\n"
