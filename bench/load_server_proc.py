"""Run load_sshd.LoadServer in a process of its own, so that a benchmark's client and the SSH
server do not share one interpreter (they still share the machine's cores).

    load_server_proc.py --key KEY [--delay S] [--output TEXT] [--lifetime S] ADDRESS...

Prints one JSON line {"port": ..., "known_hosts": [...]} once every address listens, then
answers one JSON line per JSON request read on stdin: {"op": "count"} gives the exec count per
address and this process's CPU seconds; {"output": TEXT} changes what every exec prints.
Stops on end of input, or after --lifetime seconds whatever happens.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import threading
from typing import Any, Optional, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import paramiko  # noqa: E402

from load_sshd import LoadServer  # noqa: E402

DEFAULT_LIFETIME = 900.0


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("addresses", nargs="+", help="127.x.y.z addresses, one port for all")
    parser.add_argument("--key", required=True, help="the client's private key (authorized)")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--output", default="0.00 0.00 0.00 1/100 1234\n",
                        help="what every exec prints")
    parser.add_argument("--lifetime", type=float, default=DEFAULT_LIFETIME,
                        help="hard stop after this many seconds")
    return parser


def cpu_seconds() -> float:
    """User + system CPU time of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def answer(server: LoadServer, output: list[str], request: dict[str, Any]) -> dict[str, Any]:
    """The reply to one request."""
    if "output" in request:
        output[0] = str(request["output"])
        return {"ok": True}
    return {"execs": dict(server.exec_count), "cpu": cpu_seconds()}


def serve(server: LoadServer, output: list[str]) -> None:
    """Answer requests on stdin until it closes."""
    for line in sys.stdin:
        if line.strip():
            print(json.dumps(answer(server, output, json.loads(line))), flush=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Serve until stdin closes or the lifetime ends."""
    args = build_parser().parse_args(argv)
    key = paramiko.PKey.from_path(args.key)
    output = [args.output]
    server = LoadServer(lambda _address, _command: output[0], addresses=args.addresses,
                        authorized_keys=[key], delay=args.delay)
    deadline = threading.Timer(args.lifetime, os._exit, args=(3,))
    deadline.daemon = True
    deadline.start()
    with server:
        hello = {"port": server.port,
                 "known_hosts": [server.known_hosts_line(a) for a in server.addresses]}
        print(json.dumps(hello), flush=True)
        serve(server, output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
