"""cloudstack-sim: a CloudStack API simulator on loopback. It verifies signatures like the
management server, keeps VMs, load-balancer members, async jobs and events, and prints a config
snippet for ~/.idcfrc. Used by the tests, the demo and the benchmarks."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Optional

from .signing import DEFAULT_API_KEY, DEFAULT_SECRET_KEY
from .simulator import Simulator
from .state import CLOUDSTACK_VERSIONS

__all__ = ["main"]


def _ini_snippet(sim: Simulator) -> str:
    lines = [f"# cloudstack-sim serving {sim.url} (Ctrl-C stops); paste into ~/.idcfrc"]
    for section, values in sim.config_sections().items():
        lines += [f"[{section}]", *(f"{key} = {value}" for key, value in values.items()), ""]
    return "\n".join(lines[:-1])


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cloudstack-sim", description=__doc__)
    parser.add_argument("--port", type=int, default=8080,
                        help="TCP port on 127.0.0.1 (default 8080; 0 picks a free one)")
    parser.add_argument("--job-seconds", type=float, default=1.0,
                        help="how long each async job runs (default 1.0)")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY, help="accepted apiKey")
    parser.add_argument("--secret-key", default=DEFAULT_SECRET_KEY, help="its secret key")
    parser.add_argument("--vms", type=int, default=0, metavar="N",
                        help="seed N Running VMs in the LB rule, named web1..webN")
    parser.add_argument("--cloudstack", choices=CLOUDSTACK_VERSIONS, default="4.19",
                        help="answer like this server version (default 4.19; 4.15 writes "
                             "events without resourceid/resourcetype)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the simulator until Ctrl-C (130) or SIGTERM (0); 1 if it cannot listen."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port {args.port}: expected 0..65535")
    if args.job_seconds < 0:
        parser.error(f"--job-seconds {args.job_seconds}: expected >= 0")
    if args.vms < 0:
        parser.error(f"--vms {args.vms}: expected >= 0")
    sim = Simulator(args.api_key, args.secret_key, port=args.port, job_seconds=args.job_seconds,
                    cloudstack=args.cloudstack)
    try:
        sim.start()
    except OSError as exc:
        print(f"cloudstack-sim: error: cannot listen on 127.0.0.1:{args.port}: "
              f"{exc.strerror or exc} (choose another --port)", file=sys.stderr)
        return 1
    stop = threading.Event()
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set()) if in_main_thread else None
    try:
        for n in range(1, args.vms + 1):
            sim.add_vm(f"web{n}")
        print(_ini_snippet(sim), flush=True)
        while not stop.wait(0.5):
            pass
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        sim.stop()
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
