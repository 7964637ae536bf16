"""Run every ssh-scale benchmark and print a Markdown summary (what `make bench` runs).

  1. no-op run: wall time and peak RSS of `ssh_scale.py -c CFG -q` vs bench/minimal_noop.py
     (against the real sshd; 1b repeats it against load_sshd.LoadServer, for information)
  2. API calls and SSH execs per no-op run (and of a scale-out run, for information)
  3. job-completion notice delay of idcf_api.Client.wait vs the 2013 tool's 10-s polling
  4. 50 monitored hosts answering after 200 ms vs bench/minimal_fanout.py (threads, serial)
  5. peak RSS of a no-op run and of a 50-host run next to the minimal scripts'
  7. a quiet run in a busy account (1,000 other VMs, 200 members measured over SSH): API
     calls, SSH execs, wall time vs the parallel SSH floor (bench/bench_account.py)

Everything runs on loopback (127.0.0.0/8) with HOME in a temporary directory. Exit status 0
when every benchmark ran (whether or not its goal is met), 1 when one could not run.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import bench_account, bench_fanout, bench_jobs, bench_noop  # noqa: E402
from bench.common import (  # noqa: E402
    ROOT, BenchError, Result, bytecode_note, say, set_bytecode_cache, summary_table,
)

BENCHMARKS = ("noop", "jobs", "fanout", "account")


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15, help="no-op runs per program (15)")
    parser.add_argument("--warmups", type=int, default=2, help="no-op warm-up runs (2)")
    parser.add_argument("--fanout-runs", type=int, default=5,
                        help="50-host runs per program after one warm-up round (5)")
    parser.add_argument("--account-runs", type=int, default=5,
                        help="busy-account runs per program after one warm-up round (5)")
    parser.add_argument("--loadserver", action="store_true",
                        help="no-op benchmark: use load_sshd.LoadServer even when the real "
                             "sshd is installed")
    parser.add_argument("--no-loadserver-noop", action="store_true",
                        help="skip the informational no-op runs against LoadServer (1b)")
    parser.add_argument("--only", action="append", choices=BENCHMARKS,
                        help="run only this benchmark (repeatable)")
    parser.add_argument("--inherit-bytecode-env", action="store_true",
                        help="let the measured children keep PYTHONDONTWRITEBYTECODE / "
                             "PYTHONPYCACHEPREFIX from this environment instead of caching "
                             "bytecode in the temp dir")
    return parser


def git_revision() -> str:
    """The checked-out commit, marked when the working tree has changes (read-only git)."""
    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                              timeout=10)
        return done.stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}{' + uncommitted changes' if dirty else ''}" if head else "unknown"


def machine() -> list[str]:
    """Lines describing where the figures were measured."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    versions = ", ".join(f"{name} {importlib.metadata.version(name)}"
                         for name in ("paramiko", "requests", "cryptography"))
    return [
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs ({usable} usable), "
        f"{platform.system()} {platform.release()}",
        f"python {platform.python_version()} ({sys.executable}); {versions}",
        f"repository: {git_revision()}; children: {bytecode_note()}",
    ]


def run_selected(args: argparse.Namespace) -> list[Result]:
    """Every selected benchmark's summary rows, in order."""
    selected = args.only or list(BENCHMARKS)
    results: list[Result] = []
    if "noop" in selected:
        results += bench_noop.run(args.runs, args.warmups, not args.loadserver)
        if not args.loadserver and not args.no_loadserver_noop:
            results += bench_noop.run_loadserver()
    if "jobs" in selected:
        results += bench_jobs.run()
    if "fanout" in selected:
        results += bench_fanout.run(args.fanout_runs)
    if "account" in selected:
        results += bench_account.run(args.account_runs)
    return results


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run, print each figure as it comes, then the summary table."""
    args = build_parser().parse_args(argv)
    set_bytecode_cache(not args.inherit_bytecode_env)
    started = time.monotonic()
    for line in machine():
        say(line)
    try:
        results = run_selected(args)
    except BenchError as exc:
        say(f"run_all.py: error: {exc}")
        return 1
    say()
    say("## Summary")
    say()
    say(summary_table(results))
    missed = [r.name for r in results if r.met is False]
    say()
    say(f"{len(results)} figures, {len(missed)} goal(s) not met; "
        f"{time.monotonic() - started:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
