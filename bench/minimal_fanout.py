"""The least a many-host measurement must do, as a reference: start Python, import paramiko,
load the key and ~/.ssh/known_hosts once, then run `cat /proc/loadavg` over one SSH connection
per host, all at once (one thread per host) or, with --serial, one host after the other.

    minimal_fanout.py --port PORT --user USER --key KEY [--serial] HOST...

Prints how many hosts answered; exits 1 unless every host did.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from typing import Optional, Sequence

import paramiko

TIMEOUT = 10.0


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("hosts", nargs="+")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--serial", action="store_true", help="one host after the other")
    return parser


def read_load(host: str, args: argparse.Namespace, key: paramiko.PKey,
              known: paramiko.HostKeys) -> str:
    """One connection, one exec; the command's output."""
    client = paramiko.SSHClient()
    name = host if args.port == 22 else f"[{host}]:{args.port}"
    for key_type, host_key in (known.lookup(name) or {}).items():
        client.get_host_keys().add(name, key_type, host_key)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(host, port=args.port, username=args.user, pkey=key, timeout=TIMEOUT,
                       allow_agent=False, look_for_keys=False)
        _stdin, stdout, _stderr = client.exec_command("cat /proc/loadavg", timeout=TIMEOUT)
        return stdout.read().decode()
    finally:
        client.close()


def measure_all(args: argparse.Namespace) -> list[str]:
    """Every host's output ("" for a host that failed)."""
    key = paramiko.PKey.from_path(args.key)
    known = paramiko.HostKeys(os.path.expanduser("~/.ssh/known_hosts"))
    results = [""] * len(args.hosts)

    def one(index: int) -> None:
        try:
            results[index] = read_load(args.hosts[index], args, key, known)
        except Exception as exc:  # a failed host is counted, not fatal
            print(f"{args.hosts[index]}: {exc}", file=sys.stderr)

    if args.serial:
        for index in range(len(args.hosts)):
            one(index)
        return results
    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(args.hosts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Measure every host; 0 when all answered."""
    args = build_parser().parse_args(argv)
    results = measure_all(args)
    answered = sum(1 for r in results if r)
    print(f"{answered}/{len(results)} hosts answered")
    return 0 if answered == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
