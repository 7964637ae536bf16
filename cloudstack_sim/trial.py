"""The offline trial: the simulator's VMs answer SSH, and a config to run ssh_scale.py with.

`cloudstack-sim --ssh --write-config trial.idcfrc` starts one SSH server (load_sshd.LoadServer)
on the addresses the simulator gives its VMs (127.0.1.1-127.0.1.16, one port), keeps a client
key pair and a host key next to the config, and writes the config, which `ssh_scale.py -c
trial.idcfrc` runs as it is. Every Running member of the load balancer reports an equal
share of a total demand (the closed loop the demo uses too), so each VM the autoscaler adds
lowers the load it reads next; `cloudstack-sim load 6.5`, from another terminal, sets the
demand through the simulator's LOAD_PATH.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Optional

import paramiko

from load_sshd import LoadServer

from .simulator import Simulator

__all__ = ["ADDRESSES", "LOAD_PATH", "ClosedLoop", "Trial", "load_report", "parse_demand",
           "refuse_foreign", "stale_known_hosts", "write_config"]

ADDRESSES = tuple(f"127.0.1.{n}" for n in range(1, 17))
LOAD_PATH = "/sim/load"
CPU_QUERY = "_NPROCESSORS_ONLN"  # per_cpu = yes appends `getconf _NPROCESSORS_ONLN`
HEADER = """\
# Written by cloudstack-sim --write-config for a trial of ssh_scale.py on the simulator.
# Each start of the simulator rewrites the keys it owns (the API endpoint and keys, the IDs,
# [monitoring] host, port and private_key_path); your changes to the others are kept.
"""


class ClosedLoop:
    """A total demand (load units) shared evenly by the load balancer's Running members: each
    reports demand / members as its 1, 5 and 15-minute load, a VM outside the pool (booting,
    drained) 0. `respond` is the LoadServer callback; `on_answer(address, load)` hears each."""

    def __init__(self, sim: Simulator, demand: float = 0.0,
                 on_answer: Optional[Callable[[str, float], None]] = None) -> None:
        self.sim = sim
        self.demand = demand
        self.last_load: Optional[float] = None
        self.on_answer = on_answer
        self._lock = threading.Lock()

    def members(self) -> int:
        """How many members of the load balancer are Running."""
        return len(self._running())

    def share(self) -> float:
        """What each Running member reports now."""
        return self.demand / max(1, self.members())

    def respond(self, address: str, command: str) -> str:
        """/proc/loadavg as the VM at `address` shows it (and a CPU count when asked);
        LookupError when no VM has the address (the server then answers exit status 1)."""
        with self._lock:
            running = self._running()
            if address in running:
                load = self.demand / len(running)
            elif address in {_address(vm) for vm in self.sim.vms()}:
                load = 0.0
            else:
                raise LookupError(f"no VM has the address {address}")
            self.last_load = load
        if self.on_answer is not None:
            self.on_answer(address, load)
        cpus = "1\n" if CPU_QUERY in command else ""
        return f"{load:.2f} {load:.2f} {load:.2f} 1/123 4567\n{cpus}"

    def _running(self) -> list[str]:
        return [_address(vm) for vm in self.sim.lb_members() if vm["state"] == "Running"]


def _address(vm: Mapping[str, Any]) -> str:
    return str(vm["nic"][0]["ipaddress"])


def parse_demand(text: str) -> float:
    """A demand in load units: a finite number >= 0; ValueError otherwise."""
    with contextlib.suppress(ValueError):
        demand = float(text)
        if math.isfinite(demand) and demand >= 0:
            return demand
    raise ValueError(f"expected a number of load units (at least 0), got {text!r}")


def load_report(state: Mapping[str, Any]) -> str:
    """One line for the demand and what the pool's VMs report."""
    members = state["members"]
    return (f"demand {state['demand']:g} shared by {members} running member"
            f"{'' if members == 1 else 's'}: each reports a load of {state['load']:.2f}")


# --- files ----------------------------------------------------------------------------------


def _key(path: Path) -> tuple[paramiko.PKey, bool]:
    """The ECDSA key at `path`, or a new one (not written yet: see _save), and whether new."""
    if path.exists():
        return paramiko.ECDSAKey.from_private_key_file(str(path)), False
    return paramiko.ECDSAKey.generate(), True


def _save(key: paramiko.PKey, path: Path, public: bool) -> None:
    """Write a new key (mode 600, with a .pub when `public`)."""
    key.write_private_key_file(str(path))
    path.chmod(0o600)
    if public:
        path.with_name(path.name + ".pub").write_text(
            f"{key.get_name()} {key.get_base64()} cloudstack-sim trial\n")


def _initial_config(owned: Mapping[str, Mapping[str, str]]) -> str:
    account, monitoring = owned["account"], owned["monitoring"]
    launch, scaling = owned["launch_config"], owned["scalling"]
    return HEADER + f"""
[account]
host = {account["host"]}
api_key = {account["api_key"]}
secret_key = {account["secret_key"]}

[monitoring]
# web1, the VM whose load is read (the simulator's VMs answer SSH on their addresses)
host = {monitoring["host"]}
port = {monitoring["port"]}
user = trial
private_key_path = {monitoring["private_key_path"]}
# host_key_policy is left at accept-new: the first run that is not a dry run records the
# simulator's host key in ~/.ssh/known_hosts, as it would a new VM's

[launch_config]
zoneid = {launch["zoneid"]}
serviceofferingid = {launch["serviceofferingid"]}
templateid = {launch["templateid"]}
displayname = trial-web

[scalling]
load_balancer = {scaling["load_balancer"]}
min_size = 1
max_size = 4
# short for a trial (the defaults: 30 s and 900 s)
drain_seconds = 2
job_timeout = 60
# the simulator gives an address to a new VM only once the VM that had it is expunged
expunge = yes

[scalling_policy_out]
threshold = 3.0
# short for a trial (the default, 120 s, lets the 1-minute load show a new VM)
cooldown = 30

[scalling_policy_in]
threshold = 1.0
cooldown = 60
"""


_SECTION = re.compile(r"\s*\[([^]]+)\]\s*$")
_KEY = re.compile(r"\s*([^=:#;\s][^=:]*?)\s*[=:]")


def _update(text: str, owned: Mapping[str, Mapping[str, str]]) -> str:
    """The config text with the owned keys set: in place where they are, after the last
    line of their section where they are not; every other line (comments included) kept."""
    out: list[str] = []
    section, end = "", 0  # the current section, and where its missing keys go
    sections: set[str] = set()
    seen: set[tuple[str, str]] = set()

    def add_missing() -> None:
        out[end:end] = [f"{key} = {value}" for key, value in owned.get(section, {}).items()
                        if (section, key) not in seen]

    for line in text.splitlines():
        header = _SECTION.match(line)
        key = _KEY.match(line)
        name = key.group(1).strip().lower() if key and not header else ""
        if header:
            add_missing()
            section = header.group(1).strip()
            sections.add(section)
        elif name in owned.get(section, {}):
            line = f"{name} = {owned[section][name]}"
            seen.add((section, name))
        out.append(line)
        if line.strip() and not line.lstrip().startswith(("#", ";")):
            end = len(out)
    add_missing()
    for missing in (name for name in owned if name not in sections):
        out += ["", f"[{missing}]", *(f"{k} = {v}" for k, v in owned[missing].items())]
    return "\n".join(out) + "\n"


def refuse_foreign(path: Path) -> None:
    """FileExistsError when path is a file this command did not write (it may be a real
    config, never to be overwritten)."""
    if path.exists() and not path.read_text(encoding="utf-8").startswith(
            HEADER.splitlines()[0]):
        raise FileExistsError(f"{path} exists and was not written by cloudstack-sim; choose "
                              "another path (a real config is never overwritten)")


def write_config(path: Path, owned: Mapping[str, Mapping[str, str]]) -> None:
    """Write the trial's config (mode 600): a new one, or the owned keys updated in one this
    command wrote before. FileExistsError for any other file (it may be a real config)."""
    refuse_foreign(path)
    text = _update(path.read_text(encoding="utf-8"), owned) if path.exists() \
        else _initial_config(owned)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    path.chmod(0o600)


def stale_known_hosts(addresses: tuple[str, ...], port: int, key: paramiko.PKey,
                      known_hosts: Path) -> list[str]:
    """The "[address]:port" entries of known_hosts that hold another key than `key` (an
    earlier trial's): ssh_scale.py would refuse them as a changed host key."""
    if not known_hosts.is_file():
        return []
    known = paramiko.HostKeys()
    try:
        known.load(str(known_hosts))
    except (OSError, paramiko.SSHException, ValueError):
        return []
    stale = []
    for address in addresses:
        name = address if port == 22 else f"[{address}]:{port}"
        entry = known.lookup(name) or {}
        if key.get_name() in entry and entry[key.get_name()] != key:
            stale.append(name)
    return stale


# --- the trial ------------------------------------------------------------------------------


class Trial:
    """The trial around a started Simulator whose VMs have ADDRESSES: keys, config, the SSH
    server of the closed loop, and LOAD_PATH to change the demand."""

    def __init__(self, sim: Simulator, config: Path, *, ssh_port: int = 2222,
                 demand: float = 1.5,
                 on_answer: Optional[Callable[[str, float], None]] = None) -> None:
        self.sim = sim
        self.config = Path(config)
        stem = self.config.with_suffix("").name if self.config.suffix else self.config.name
        self.key_path = self.config.with_name(f"{stem}_id_ecdsa").resolve()
        self.host_key_path = self.config.with_name(f"{stem}_host_key").resolve()
        self.ssh_port = ssh_port
        self.loop = ClosedLoop(sim, demand, on_answer)
        self.server: Optional[LoadServer] = None

    def start(self, monitored: str) -> Trial:
        """Serve SSH and write the config whose [monitoring] host is `monitored`, and the keys
        it names (kept from an earlier start): nothing is written unless the trial starts.
        OSError when the SSH port is taken; FileExistsError for a config this command did not
        write."""
        refuse_foreign(self.config)
        client_key, new_client = _key(self.key_path)
        self.host_key, new_host = _key(self.host_key_path)
        self.server = LoadServer(self.loop.respond, addresses=ADDRESSES, port=self.ssh_port,
                                 authorized_keys=[client_key], host_key=self.host_key).start()
        try:
            if new_client:
                _save(client_key, self.key_path, public=True)
            if new_host:
                _save(self.host_key, self.host_key_path, public=False)
            owned = self.sim.config_sections()
            # the account's own template, as listTemplates --templatefilter=self shows it
            owned["launch_config"]["templateid"] = self.sim.own_template_id
            owned["monitoring"] = {"host": monitored, "port": str(self.server.port),
                                   "private_key_path": str(self.key_path)}
            write_config(self.config, owned)
        except BaseException:
            self.stop()
            raise
        self.sim.add_route(LOAD_PATH, self._load_route)
        return self

    def stop(self) -> None:
        """Stop the SSH server."""
        if self.server is not None:
            self.server.stop()
            self.server = None

    def state(self) -> dict[str, Any]:
        """The demand, the Running members and what each reports."""
        return {"demand": self.loop.demand, "members": self.loop.members(),
                "load": self.loop.share()}

    def _load_route(self, params: dict[str, str]) -> tuple[int, Any]:
        if "demand" in params:
            try:
                self.loop.demand = parse_demand(params["demand"])
            except ValueError as exc:
                return 400, {"error": f"demand: {exc}"}
        return 200, self.state()
