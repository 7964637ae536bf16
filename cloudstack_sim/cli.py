"""cloudstack-sim: a CloudStack API simulator on loopback. It verifies signatures like the
management server, keeps VMs, load-balancer members, async jobs and events, and prints a config
snippet for ~/.idcfrc. Used by the tests, the demo and the benchmarks.

With --ssh --write-config trial.idcfrc its VMs also answer SSH, sharing a demand you set with
`cloudstack-sim load N` from another terminal, and trial.idcfrc is a complete config for
ssh_scale.py: an offline trial of the real command."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from .signing import DEFAULT_API_KEY, DEFAULT_SECRET_KEY
from .simulator import Simulator
from .versions import CLOUDSTACK_VERSIONS

__all__ = ["build_parser", "main"]

PROG = "cloudstack-sim"
DEFAULT_PORT = 8080


class _Terminated(Exception):
    """SIGTERM: stop serving (raised by the handler; an Event set from a signal handler can
    deadlock when the signal lands inside that Event's own wait)."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise _Terminated()


def _ini_snippet(sim: Simulator) -> str:
    lines = [f"# cloudstack-sim serving {sim.url} (Ctrl-C stops); paste into ~/.idcfrc"]
    for section, values in sim.config_sections().items():
        lines += [f"[{section}]", *(f"{key} = {value}" for key, value in values.items()), ""]
    return "\n".join(lines[:-1])


def _version() -> str:
    """The installed ssh-scale's version (the simulator imports none of its modules)."""
    try:
        return importlib.metadata.version("ssh-scale")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def _demand(text: str) -> float:
    from .trial import parse_demand

    try:
        return parse_demand(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    """The cloudstack-sim argument parser (also read by packaging/clidoc.py)."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"TCP port on 127.0.0.1 (default {DEFAULT_PORT}; 0 picks a free one)")
    parser.add_argument("--job-seconds", type=float, default=1.0,
                        help="how long each async job runs (default 1.0)")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY, help="accepted apiKey")
    parser.add_argument("--secret-key", default=DEFAULT_SECRET_KEY, help="its secret key")
    parser.add_argument("--vms", type=int, default=0, metavar="N",
                        help="seed N Running VMs in the LB rule, named web1..webN (--ssh: "
                             "at least 1)")
    parser.add_argument("--cloudstack", choices=CLOUDSTACK_VERSIONS, default="4.19",
                        help="answer like this server version (default 4.19): older ones word "
                             "failed tag jobs differently, and before 4.17 events have no "
                             "resourceid/resourcetype")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    trial = parser.add_argument_group("offline trial")
    trial.add_argument("--ssh", action="store_true",
                       help="the VMs answer SSH (127.0.1.1-16), each Running member of the LB "
                            "with an equal share of the demand; needs --write-config")
    trial.add_argument("--write-config", metavar="PATH",
                       help="write a complete ssh_scale.py config there (and its keys next "
                            "to it); a file this command did not write is never overwritten")
    trial.add_argument("--ssh-port", type=int, default=2222,
                       help="the VMs' SSH port (default 2222; 0 picks a free one)")
    trial.add_argument("--load", type=_demand, default=1.5, metavar="DEMAND",
                       help="the demand the pool's Running VMs share at first (default 1.5)")
    commands = parser.add_subparsers(dest="command", metavar="load",
                                     description="`load [DEMAND] [--port PORT]`: show or set, "
                                                 "from another terminal, the demand of a "
                                                 "running --ssh simulator (--port: the one it "
                                                 f"serves the API on, default {DEFAULT_PORT})")
    load = commands.add_parser("load", help="show or set the demand of a running simulator",
                               description="Show, or set, the total demand (load units) the "
                                           "Running members of a --ssh simulator share.")
    load.add_argument("demand", nargs="?", type=_demand, help="e.g. 6.5")
    load.add_argument("--port", type=int, default=DEFAULT_PORT,
                      help=f"the simulator's --port (default {DEFAULT_PORT})")
    return parser


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for name in ("port", "ssh_port"):
        value = getattr(args, name, 0)
        if not 0 <= value <= 65535:
            parser.error(f"--{name.replace('_', '-')} {value}: expected 0..65535")
    if args.command:
        return
    if args.job_seconds < 0:
        parser.error(f"--job-seconds {args.job_seconds}: expected >= 0")
    if args.vms < 0:
        parser.error(f"--vms {args.vms}: expected >= 0")
    if args.ssh and not args.write_config:
        parser.error("--ssh needs --write-config PATH (the config and its keys go there)")
    args.ssh = args.ssh or bool(args.write_config)


def load_command(demand: Optional[float], port: int) -> int:
    """`cloudstack-sim load [DEMAND]`: ask the simulator on 127.0.0.1:port; 0, or 1 with one
    line when none answers or it serves no trial."""
    from .trial import LOAD_PATH, load_report

    query = "" if demand is None else "?" + urllib.parse.urlencode({"demand": repr(demand)})
    url = f"http://127.0.0.1:{port}{LOAD_PATH}{query}"
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            state = json.loads(answer.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        print(f"{PROG}: error: the simulator on 127.0.0.1:{port} serves no SSH trial (HTTP "
              f"{exc.code}; start it with --ssh --write-config PATH)", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"{PROG}: error: no simulator answers on 127.0.0.1:{port} ({reason}; start one "
              "with cloudstack-sim --ssh --write-config trial.idcfrc, or give its --port)",
              file=sys.stderr)
        return 1
    print(load_report(state))
    return 0


def _start_trial(sim: Simulator, args: argparse.Namespace) -> Any:
    """The trial's SSH server and config; prints how to use them."""
    from .trial import ADDRESSES, Trial, load_report, stale_known_hosts

    def heard(address: str, load: float) -> None:
        print(f"{time.strftime('%H:%M:%S')} ssh {address}: load {load:.2f}", flush=True)

    trial = Trial(sim, Path(args.write_config), ssh_port=args.ssh_port, demand=args.load,
                  on_answer=heard)
    web1 = sim.lb_members()[0]["nic"][0]["ipaddress"]
    trial.start(web1)
    # the commands as this one was typed (.venv/bin/cloudstack-sim: .venv/bin/ssh_scale.py)
    bin_dir = os.path.dirname(sys.argv[0]) if os.sep in sys.argv[0] else ""
    ssh_scale = f"{os.path.join(bin_dir, 'ssh_scale.py')} -c {args.write_config}"
    port = "" if args.port == DEFAULT_PORT else f" --port {sim.port}"
    tries = ((f"{ssh_scale} --status", "the pool, and what a run would do"),
             (f"{os.path.join(bin_dir, PROG)} load 6.5{port}", "the demand the VMs share"),
             (ssh_scale, "one run, as cron starts one every minute"))
    width = max(len(command) for command, _ in tries)
    print(f"{PROG}: the CloudStack API at {sim.url}, SSH for its VMs on {ADDRESSES[0]}-"
          f"{ADDRESSES[-1].rsplit('.', 1)[1]} port {trial.server.port} (Ctrl-C stops)\n"
          f"wrote {args.write_config} (keys {trial.key_path.name}, {trial.host_key_path.name}"
          f"); the pool: web1 at {web1}; {load_report(trial.state())}\n"
          "try, in another terminal:\n" +
          "\n".join(f"  {command:<{width}}  # {what}" for command, what in tries), flush=True)
    known_hosts = Path(os.path.expanduser("~/.ssh/known_hosts"))
    for name in stale_known_hosts(ADDRESSES, trial.server.port, trial.host_key, known_hosts):
        print(f"note: ~/.ssh/known_hosts holds another host key for {name} (an earlier "
              f"trial's); remove it: ssh-keygen -R '{name}'", flush=True)
    return trial


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the simulator until Ctrl-C (130) or SIGTERM (0); `load` asks a running one.
    1 if it cannot listen or write the trial's config."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _check(parser, args)
    if args.command == "load":
        return load_command(args.demand, args.port)
    sim = Simulator(args.api_key, args.secret_key, port=args.port, job_seconds=args.job_seconds,
                    cloudstack=args.cloudstack, **_addresses(args))
    try:
        sim.start()
    except OSError as exc:
        print(f"{PROG}: error: cannot listen on 127.0.0.1:{args.port}: "
              f"{exc.strerror or exc} (choose another --port)", file=sys.stderr)
        return 1
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if in_main_thread else None
    trial = None
    try:
        for n in range(1, max(args.vms, 1 if args.ssh else 0) + 1):
            sim.add_vm(f"web{n}")
        if args.ssh:
            trial = _start_trial(sim, args)
        else:
            print(_ini_snippet(sim), flush=True)
        while True:  # until Ctrl-C or SIGTERM
            time.sleep(3600)
    except _Terminated:
        return 0
    except OSError as exc:
        print(f"{PROG}: error: {_trial_error(exc, args)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # stopping already
        if trial is not None:
            trial.stop()
        sim.stop()
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _addresses(args: argparse.Namespace) -> dict[str, Any]:
    """The trial's VMs take the addresses its SSH server listens on."""
    if not args.ssh:
        return {}
    from .trial import ADDRESSES

    return {"ip_addresses": ADDRESSES}


def _trial_error(exc: OSError, args: argparse.Namespace) -> str:
    if isinstance(exc, FileExistsError):
        return str(exc)
    if exc.filename:
        return f"{exc.filename}: {exc.strerror or exc}"
    return (f"cannot serve SSH on port {args.ssh_port}: {exc.strerror or exc} (choose another "
            "--ssh-port)")


if __name__ == "__main__":
    sys.exit(main())
