"""Hosts -> Measurement: one SSH connection and one exec per host, in parallel, each host with
its own timeouts; every failure of one host becomes data (HostLoad.error), never a crash."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import getpass
import hashlib
import math
import os
import re
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Optional

import paramiko
from paramiko.hostkeys import HostKeyEntry

from sshscale.config import display_path, key_path_for, lookup_ssh_config
from sshscale.errors import ConfigError, SshError
from sshscale.logs import log, note
from sshscale.model import HostLoad, Measurement, Settings

__all__ = ["Host", "Target", "fingerprint", "forget_host_key", "known_format",
           "known_host_name", "load_known_hosts", "load_private_key", "make_target", "measure",
           "parse_load", "read_load", "read_ssh_config", "remote_command", "run_remote",
           "ssh_targets", "vm_key_name"]

CPU_COMMAND = "getconf _NPROCESSORS_ONLN"
MAX_OUTPUT = 65536  # bytes of a command's output read: a load fits in a line
VM_KEY_PREFIX = "ssh-scale-vm-"


class CommandFailed(Exception):
    """The monitoring command failed, or did not finish within command_timeout."""


# --- parsing (pure) ---------------------------------------------------------------------------


_NUMBER = re.compile(r"-?\d+(?:[.,]\d+)?")
# The exact outputs of the default command and of `uptime`: /proc/loadavg's one line, and the
# uptime line of Linux (procps, BusyBox) and the BSDs/macOS ("load averages:", no commas), in
# any locale (a decimal comma).
_LOADAVG = re.compile(r"(\d+\.\d+) (\d+\.\d+) (\d+\.\d+) \d+/\d+ \d+")
_DECIMAL = r"(\d+[.,]\d+)"
_UPTIME = re.compile(rf".*\bup\b.*\bload averages?: {_DECIMAL},? +{_DECIMAL},? +{_DECIMAL}",
                     re.IGNORECASE)


def known_format(command: str) -> Optional[re.Pattern]:
    """The one output format `command` has when it is `cat /proc/loadavg` or `uptime`; None
    for another command (its first number is the metric)."""
    words = command.split()
    if words == ["cat", "/proc/loadavg"]:
        return _LOADAVG
    if len(words) == 1 and os.path.basename(words[0]) == "uptime":
        return _UPTIME
    return None


def parse_load(text: str, per_cpu: bool = False, command: Optional[str] = None
               ) -> tuple[tuple[float, float, float], Optional[int]]:
    """Load averages from the output of `command`; with per_cpu, the last line is the CPU
    count. The output of `cat /proc/loadavg` or `uptime` counts only in its exact format (one
    line); another command's (or, without one, any text's) is read leniently: /proc/loadavg,
    any common `uptime` output, else its first number is the metric.

    Raises ValueError for output without a usable load, quoting its start."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    cpus = None
    if per_cpu:
        if len(lines) < 2 or not lines[-1].strip().isdigit() or int(lines[-1]) < 1:
            raise ValueError("no CPU count on the last line of the output")
        cpus = int(lines.pop().strip())
    if not lines:
        raise ValueError("empty output")
    exact = known_format(command) if command else None
    loads = _exact_loads(lines, exact, text, command or "") if exact else _any_loads(lines, text)
    if any(v < 0 or not math.isfinite(v) for v in loads):
        raise ValueError(f"negative load in {text.strip()[:60]!r}")
    return loads, cpus


def _exact_loads(lines: Sequence[str], form: re.Pattern, text: str, command: str
                 ) -> tuple[float, float, float]:
    match = form.fullmatch(lines[0].strip()) if len(lines) == 1 else None
    if match is None:
        raise ValueError(f"{text.strip()[:60]!r} is not what {command} prints (check "
                         "[monitoring] command, and that nothing else prints on login)")
    first, second, third = (float(n.replace(",", ".")) for n in match.groups())
    return first, second, third


def _any_loads(lines: Sequence[str], text: str) -> tuple[float, float, float]:
    body = " ".join(lines)
    marker = re.search(r"load averages?:", body, re.IGNORECASE)
    numbers = _NUMBER.findall(body[marker.end():] if marker else lines[0])
    values = [float(n.replace(",", ".")) for n in numbers]
    if marker and len(values) >= 3:
        return values[0], values[1], values[2]
    if not marker and re.match(r"\s*[\d.]+\s+[\d.]+\s+[\d.]+\s+\d+/\d+", lines[0]):
        return values[0], values[1], values[2]
    if values and not marker:
        return (values[0],) * 3
    raise ValueError(f"no load average in {text.strip()[:60]!r}")


# --- SSH -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Host:
    """A host to measure: a name, alias or address; for a VM ssh-scale deployed, its id (its
    host key is then the VM's, not the address's: see vm_key_name)."""

    name: str
    vm_id: Optional[str] = None


@dataclass(frozen=True)
class Target:
    """Where and how to connect for one measurement, after ~/.ssh/config."""

    label: str
    hostname: str
    port: int
    user: str
    key_path: str
    known_hosts: str
    vm_id: Optional[str] = None


def vm_key_name(vm_id: str) -> str:
    """The name a deployed VM's host key is recorded under in known_hosts, as OpenSSH's
    HostKeyAlias would (`ssh -o HostKeyAlias=ssh-scale-vm-<id> <address>` checks it too): a
    new VM on a reused address is another host, the same VM with another key a changed one."""
    return f"{VM_KEY_PREFIX}{vm_id}"


def read_ssh_config(path: str = "~/.ssh/config") -> Optional[Any]:
    """The user's OpenSSH client config (paramiko.SSHConfig), or None when absent."""
    expanded = os.path.expanduser(path)
    if not os.path.isfile(expanded):
        return None
    try:
        return paramiko.SSHConfig.from_path(expanded)
    except Exception as exc:  # paramiko raises assorted errors for a malformed file
        raise ConfigError(f"{display_path(expanded)}: cannot parse: {exc}") from None


def make_target(host: str, settings: Settings, ssh_config: Optional[Any],
                default_key: str = "", vm_id: Optional[str] = None) -> Target:
    """Resolve a host name, alias or address like OpenSSH: ~/.ssh/config, then defaults
    (a member reached at its IP uses the configured host's key unless one matches it);
    `vm_id`: a VM ssh-scale deployed, whose host key is recorded by its id."""
    options = lookup_ssh_config(ssh_config, host)
    port = settings.port or int(options.get("port", 22))
    user = settings.user or options.get("user") or getpass.getuser()
    known = (options.get("userknownhostsfile") or "~/.ssh/known_hosts").split()[0]
    return Target(label=host, hostname=options.get("hostname", host), port=port, user=user,
                  key_path=key_path_for(settings, options) or default_key,
                  known_hosts=os.path.expanduser(known), vm_id=vm_id)


def ssh_targets(hosts: Sequence[Host], settings: Settings,
                ssh_config: Optional[Any]) -> list[Target]:
    """Where and how each host is reached; a member reached at its IP uses the key of
    [monitoring] host unless ~/.ssh/config gives one for it."""
    configured = settings.hosts[0] if settings.hosts else "*"
    default_key = key_path_for(settings, lookup_ssh_config(ssh_config, configured)) or ""
    return [make_target(h.name, settings, ssh_config, default_key, h.vm_id) for h in hosts]


def known_host_name(target: Target) -> str:
    """The target's address as known_hosts names it, as OpenSSH writes it: host, or
    [host]:port."""
    return target.hostname if target.port == 22 else f"[{target.hostname}]:{target.port}"


def load_private_key(path: str, pass_phrase: str) -> Any:
    """Load an RSA, ECDSA or Ed25519 key (PEM or OpenSSH format); raises SshError.

    PKey.from_path (paramiko >= 3.2) reads any type. Where it fails or is missing (Debian 12
    ships paramiko 2.12), the key classes are tried: the one a PEM file names, else RSA, ECDSA
    and Ed25519. On every paramiko version they tell an encrypted key from a bad one, and they
    ignore a pass_phrase given for an unencrypted key, as ssh does."""
    password = pass_phrase.encode() or None
    unusable = (paramiko.SSHException, ValueError, TypeError,
                getattr(paramiko, "UnknownKeyType", paramiko.SSHException))
    failures: list[Exception] = []
    try:
        if hasattr(paramiko.PKey, "from_path"):
            try:  # positional: the parameter is passphrase= before paramiko 5, password= since
                return paramiko.PKey.from_path(path, password)
            except unusable as exc:
                failures.append(exc)
        with open(path, encoding="utf-8", errors="replace") as handle:
            tag = re.search(r"-----BEGIN (\w+) PRIVATE KEY-----", handle.read())
        kinds = {"RSA": [paramiko.RSAKey], "EC": [paramiko.ECDSAKey]}.get(
            tag.group(1) if tag else "", [paramiko.RSAKey, paramiko.ECDSAKey, paramiko.Ed25519Key])
        for kind in kinds:
            try:
                return kind.from_private_key_file(path, password=password)
            except paramiko.PasswordRequiredException:
                raise
            except unusable as exc:  # another type's file, or a wrong pass_phrase
                failures.append(exc)
        raise failures[0]
    except paramiko.PasswordRequiredException:
        raise SshError(f"{path}: the key is encrypted; set [monitoring] pass_phrase") from None
    except unusable as exc:
        hint = "wrong [monitoring] pass_phrase?" if pass_phrase else "not a private key?"
        raise SshError(f"{path}: cannot load the private key ({_first_line(exc)}; "
                       f"{hint})") from None
    except OSError as exc:
        raise SshError(f"{path}: {exc.strerror}") from None


_known_hosts_lock = threading.Lock()


def fingerprint(key: Any) -> str:
    """The key's SHA256 fingerprint as OpenSSH shows it ("SHA256:" and unpadded base64)."""
    digest = base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode()
    return f"SHA256:{digest.rstrip('=')}"


def _accept_new_policy(target: Target, record: bool) -> Any:
    class AcceptNew(paramiko.MissingHostKeyPolicy):
        """OpenSSH's StrictHostKeyChecking=accept-new: record unknown keys, refuse changed;
        a dry run (record=False) uses an unknown key and only says it would record it. A
        deployed VM's key is recorded by the VM's id, with the address it was seen at."""

        def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
            name = vm_key_name(target.vm_id) if target.vm_id else hostname
            where = display_path(target.known_hosts) + (f" as {name}" if target.vm_id else "")
            new_key = f"{hostname}: new host key {key.get_name()} {fingerprint(key)}"
            if not record:
                note("ssh", f"{new_key} would be recorded in {where} (not by a dry run)")
                return
            line = f"{name} {key.get_name()} {key.get_base64()}"
            _record_host_key(target.known_hosts, f"{line} {hostname}" if target.vm_id else line,
                             seen_at=hostname if target.vm_id else None)
            note("ssh", f"{new_key} recorded in {where}")

    return AcceptNew()


def _record_host_key(path: str, line: str, seen_at: Optional[str] = None) -> None:
    """Add a line to known_hosts; with `seen_at`, a deployed VM's address, first drop the
    records of the VMs seen there before: one address serves one VM at a time, so they are
    gone (records of VMs whose address is never reused stay, one per address at most)."""
    with _known_hosts_lock, _locked(path) as handle:
        handle.seek(0)
        lines = handle.read().splitlines(keepends=True)
        kept = [old for old in lines if not (seen_at and _seen_before(old, seen_at))]
        if len(kept) == len(lines):
            handle.write(("" if not lines or lines[-1].endswith("\n") else "\n") + line + "\n")
            return
        real = os.path.realpath(path)
        temporary = f"{real}.ssh-scale.{os.getpid()}"
        with open(temporary, "w", encoding="utf-8") as new:
            os.chmod(temporary, os.stat(real).st_mode & 0o7777)
            new.writelines(kept + [line + "\n"])
        os.replace(temporary, real)


def _seen_before(line: str, address: str) -> bool:
    fields = line.split()
    return len(fields) >= 4 and fields[0].startswith(VM_KEY_PREFIX) and fields[3] == address


@contextlib.contextmanager
def _locked(path: str) -> Iterator[Any]:
    """known_hosts opened (created if absent) for reading and appending under an exclusive
    flock; opened again when another process replaced the file while this one waited."""
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    while True:
        with open(path, "a+", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            if os.path.exists(path) and os.path.samestat(os.fstat(handle.fileno()),
                                                         os.stat(path)):
                yield handle
                return


def remote_command(settings: Settings) -> str:
    """The one command executed per host; with per_cpu it also prints the CPU count.

    "{ cmd<newline>} && getconf ...": the command's own exit status counts, and a trailing
    comment in it cannot swallow getconf."""
    if not settings.per_cpu:
        return settings.command
    return f"{{ {settings.command}\n}} && {CPU_COMMAND}"


def load_known_hosts(path: str) -> Any:
    """The parsed known_hosts file, read once per run for all hosts; empty when absent or
    unreadable. Lines paramiko cannot use (@cert-authority, @revoked, unknown key types)
    are skipped instead of failing the run, as OpenSSH skips what it does not know."""
    keys = paramiko.HostKeys()
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return keys
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith(("#", "@")):
            continue
        try:
            entry = HostKeyEntry.from_line(line, number)
        except Exception:  # paramiko raises assorted errors for lines it cannot read
            entry = None
        if entry is not None and entry.key is not None:
            for name in entry.hostnames:
                keys.add(name, entry.key.get_name(), entry.key)
    return keys


def read_load(target: Target, settings: Settings, pkey: Any, known: Any,
              dry_run: bool = False) -> HostLoad:
    """One SSH connection, one exec; never raises (the error goes into the HostLoad).

    ``known`` is the parsed known_hosts (paramiko.HostKeys); only this host's entries are
    handed to the client. A dry run records no new host key (it says it would)."""
    client = paramiko.SSHClient()
    started = time.monotonic()
    try:
        name = known_host_name(target)
        if settings.host_key_policy != "off":
            for keytype, key in _recorded_keys(known, target, name, settings).items():
                client.get_host_keys().add(name, keytype, key)
        if settings.host_key_policy == "accept-new":
            client.set_missing_host_key_policy(_accept_new_policy(target, record=not dry_run))
        elif settings.host_key_policy == "off":
            client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        else:
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
        sock = socket.create_connection((target.hostname, target.port),
                                        timeout=settings.connect_timeout)
        # SSH sends small packets back and forth: without this each may wait ~40 ms for a
        # delayed ACK (paramiko does not set it).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.connect(target.hostname, port=target.port, username=target.user, pkey=pkey,
                       timeout=settings.connect_timeout, banner_timeout=settings.connect_timeout,
                       auth_timeout=settings.connect_timeout, allow_agent=False,
                       look_for_keys=False, sock=sock)
        transport = client.get_transport()
        address = transport.getpeername()[0] if transport else None
        output = run_remote(client, remote_command(settings), settings.command_timeout)
        loads, cpus = parse_load(output, settings.per_cpu, settings.command)
        log.debug("%s: %s in %.3f s", target.label, output.strip()[:80],
                  time.monotonic() - started)
        return HostLoad(target.label, address, loads, cpus)
    except Exception as exc:  # every failure of one host is data, not a crash
        transport = client.get_transport()
        banner = transport.remote_version if transport else ""
        return HostLoad(target.label, error=_ssh_error_text(exc, target, settings, banner))
    finally:
        client.close()


def _recorded_keys(known: Any, target: Target, name: str, settings: Settings) -> Any:
    """The keys known_hosts holds for a host: a deployed VM's by its id (with strict, else by
    its address, where the user may have put it); any other host's by its address (`name`)."""
    keys = known.lookup(vm_key_name(target.vm_id)) if target.vm_id else None
    if keys is None and (not target.vm_id or settings.host_key_policy == "strict"):
        keys = known.lookup(name)
    return keys or {}


def run_remote(client: Any, command: str, timeout: float) -> str:
    """Execute the command on a connected paramiko client; its output, or CommandFailed when
    it exits non-zero or does not finish within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    # A session channel of our own, not exec_command's three file objects: those that outlive
    # a timeout are freed by the garbage collector at exit, where paramiko's
    # BufferedFile.__del__ prints "Exception ignored ... I/O operation on closed file".
    channel = client.get_transport().open_session(timeout=timeout)
    try:
        channel.exec_command(command)
        channel.shutdown_write()
        return _output(channel, deadline, timeout)
    finally:
        channel.close()


def _output(channel: Any, deadline: float, timeout: float) -> str:
    """The command's output once it exited 0, within the deadline."""
    data = b""
    while len(data) < MAX_OUTPUT:  # the whole command within timeout, however it drips
        left = deadline - time.monotonic()
        if left <= 0:
            raise _late(timeout)
        channel.settimeout(left)
        try:
            chunk = channel.recv(MAX_OUTPUT - len(data))
        except socket.timeout:
            raise _late(timeout) from None
        if not chunk:
            break
        data += chunk
    if not channel.status_event.wait(max(deadline - time.monotonic(), 0.0)):
        raise _late(timeout)
    status = channel.recv_exit_status()
    if status != 0:
        raise CommandFailed(f"the command exited with status {status} "
                            "(check [monitoring] command)")
    return data.decode("utf-8", "replace")


def _late(timeout: float) -> CommandFailed:
    # made when raised: an exception kept in a local would hold its own frame in a cycle
    return CommandFailed(f"the command did not finish within {timeout:g} s "
                         "(check [monitoring] command / command_timeout)")


def _ssh_error_text(exc: BaseException, target: Target, settings: Settings,
                    banner: str = "") -> str:
    """The one line for a host that gave no load; `banner` is the SSH version string the
    server sent, if any (a host that sent none is no SSH server, or a hung one)."""
    where = f"{target.hostname}:{target.port}"
    if isinstance(exc, CommandFailed):
        return f"{where}: {exc}"
    known_hosts = display_path(target.known_hosts)
    alias = vm_key_name(target.vm_id) if target.vm_id else ""  # a deployed VM's record
    if isinstance(exc, paramiko.BadHostKeyException):
        record = f"{alias} in {known_hosts}" if alias else known_hosts
        return (f"{where}: host key changed ({exc.key.get_name()}); refusing to connect (check "
                f"{record}; if the host was rebuilt, remove the old key: "
                f"{forget_host_key(target)})")
    # paramiko gives up on a silent server with "Error reading SSH protocol banner", or,
    # when its connect timeout strikes first, with "No existing session" from the auth step.
    if isinstance(exc, paramiko.SSHException) and not banner:
        return (f"{where}: no SSH banner within {settings.connect_timeout:g} s: the port "
                "accepts TCP connections but no SSH server answers (check [monitoring] "
                "host/port, and that sshd runs there)")
    if str(exc).strip() in ("No existing session", "Authentication timeout."):
        return (f"{where}: {banner} answered but did not finish the key exchange and "
                f"authentication within {settings.connect_timeout:g} s (a stuck or overloaded "
                "host? check it, or raise [monitoring] connect_timeout)")
    if isinstance(exc, paramiko.AuthenticationException):
        return f"{where}: authentication failed as {target.user} (check [monitoring] user/key)"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return (f"{where}: timed out after {settings.connect_timeout:g} s "
                "(check [monitoring] host/port)")
    if isinstance(exc, (ConnectionRefusedError, paramiko.ssh_exception.NoValidConnectionsError)):
        return f"{where}: connection refused (check [monitoring] host/port)"
    if isinstance(exc, socket.gaierror):
        return f"{where}: cannot resolve host name (check [monitoring] host)"
    if isinstance(exc, paramiko.SSHException) and "not found in known_hosts" in str(exc):
        return (f"{where}: unknown host key and host_key_policy = strict "
                f"(add it to {known_hosts}{' as ' + alias if alias else ''})")
    if isinstance(exc, ValueError):
        return f"{where}: unusable command output: {exc}"
    return f"{where}: {_first_line(exc) or exc.__class__.__name__}"


def forget_host_key(target: Target) -> str:
    """The ssh-keygen line that removes the target's recorded host key (a deployed VM's: the
    record by its id)."""
    name = vm_key_name(target.vm_id) if target.vm_id else known_host_name(target)
    quoted = f"'{name}'" if name.startswith("[") else name
    default = os.path.expanduser("~/.ssh/known_hosts")
    where = "" if target.known_hosts == default else f" -f {display_path(target.known_hosts)}"
    return f"ssh-keygen{where} -R {quoted}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


def measure(hosts: Sequence[Host], settings: Settings, ssh_config: Optional[Any],
            dry_run: bool = False) -> Measurement:
    """Measure every host in parallel (bounded workers, per-host timeouts); each host with
    its own key (~/.ssh/config IdentityFile), each key loaded once; a key that cannot be
    loaded fails the hosts that use it. A dry run writes no known_hosts."""
    if not hosts:
        return Measurement()
    reached = ssh_targets(hosts, settings, ssh_config)
    keys = {path: _key_or_error(path, settings.pass_phrase)
            for path in {t.key_path for t in reached}}
    known = {path: load_known_hosts(path) if settings.host_key_policy != "off" else None
             for path in {t.known_hosts for t in reached}}

    def one(target: Target) -> HostLoad:
        key = keys[target.key_path]
        if isinstance(key, SshError):
            return HostLoad(target.label, error=str(key))
        return read_load(target, settings, key, known[target.known_hosts], dry_run)

    workers = min(settings.max_parallel, len(reached))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return Measurement(tuple(pool.map(one, reached)))


def _key_or_error(path: str, pass_phrase: str) -> Any:
    """The loaded key, or the SshError saying why not (it then fails each host using it)."""
    try:
        return load_private_key(path, pass_phrase)
    except SshError as exc:
        return exc
