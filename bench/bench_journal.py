"""The run journal (information): how big one run's line is, how long the rotation keeps
them, and what the append adds to a quiet run.

  sizes   the real command, one quiet run per pool of 2, 4, 8 and 16 VMs (the monitored web1
          and managed members tagged ssh-scale:pool), against the simulator and the real
          sshd: the length of the line it appended, and the weeks the journal's
          FILE_BYTES x ROTATED_FILES keep at one run a minute
  cost    quiet runs of the 4-VM pool in this process (sshscale.cli.main, warm), with
          sshscale.journal.append timed inside them: what the append (the --json object
          encoded, the file locked, checked, appended, closed) takes, next to the run;
          the journal module's import in a fresh interpreter; the real command's quiet run
          (a fresh process each time) for scale
  rotate  appends to a journal of 64-KiB files, so that rotations (compressing the file)
          happen: an append that rotates against one that does not; and one rotation of a
          full FILE_BYTES file of the 4-VM pool's lines: its time and the compression

    .venv/bin/python bench/bench_journal.py [--runs 15] [--warmups 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    MID_LOAD, Home, config_sections, markdown_table, median, run_child, say, spread,
    start_ssh_server, temp_home, tool_argv,
)
from cloudstack_sim import Simulator  # noqa: E402
from sshscale import cli, journal  # noqa: E402
from sshscale.facts import POOL  # noqa: E402

HOST = "127.0.0.1"
POOL_SIZES = (2, 4, 8, 16)
SIX_WEEKS_OF_RUNS = 6 * 7 * 24 * 60
KEPT_BYTES = journal.FILE_BYTES * journal.ROTATED_FILES  # right after a rotation, at least


def pool_config(home: Home, sim: Simulator, port: int, size: int) -> Path:
    """A config for the simulator's pool of `size` VMs: web1 and size - 1 managed members
    (created two hours ago, tagged as the pool's), with room to spare (max_size 20)."""
    group = f"ssh_scale-{sim.lb_id}"
    for number in range(2, size + 1):
        vm = sim.add_vm(f"web{number}", group=group,
                        created=datetime.now(timezone.utc) - timedelta(hours=2))
        sim.set_tag(vm["id"], POOL, sim.lb_id)
    sections = config_sections(sim, home.key, [HOST], port)
    sections["scalling"].update(max_size="20")
    return home.write_config(f"pool{size}.idcfrc", sections)


def last_line(config: Path, env: dict) -> bytes:
    path = journal.journal_path(str(config), {"XDG_STATE_HOME": f"{env['HOME']}/.local/state"})
    return Path(path).read_bytes().splitlines()[-1]


def sizes(home: Home, port: int) -> list[list[str]]:
    """One quiet run per pool size; the rows of the sizes table."""
    rows = []
    for size in POOL_SIZES:
        with Simulator(job_seconds=0.05) as sim:
            sim.add_vm("web1", ip=HOST)
            config = pool_config(home, sim, port, size)
            run_child(tool_argv(config), home.env)
            length = len(last_line(config, home.env)) + 1
        weeks = KEPT_BYTES / length / (7 * 24 * 60)
        rows.append([f"{size} VMs", f"{length} B", f"{SIX_WEEKS_OF_RUNS * length / 1e6:.0f} MB",
                     f"{weeks:.1f} weeks"])
        say(f"  pool of {size:2}: {length} bytes per run; six weeks = "
            f"{SIX_WEEKS_OF_RUNS * length / 1e6:.0f} MB; the journal keeps {weeks:.1f} weeks")
    return rows


def timed(function: Callable[..., Any], seconds: list[float]) -> Callable[..., Any]:
    """function, adding the time of each call to `seconds`."""
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - started)
    return wrapper


def in_process(config: Path, env: dict, runs: int, warmups: int) -> tuple[list[float],
                                                                          list[float]]:
    """Quiet runs through sshscale.cli.main in this process, HOME and the environment as
    the children's: (seconds in journal.append, seconds per run), warm-ups dropped."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    appends: list[float] = []
    walls: list[float] = []
    original = journal.append
    journal.append = timed(original, appends)
    try:
        for _ in range(warmups + runs):
            started = time.perf_counter()
            if cli.main(["-c", str(config), "-q"]) != 0:
                raise RuntimeError("a quiet run failed in-process")
            walls.append(time.perf_counter() - started)
    finally:
        journal.append = original
        os.environ.clear()
        os.environ.update(saved)
    return appends[warmups:], walls[warmups:]


def import_seconds(env: dict, rounds: int = 7) -> list[float]:
    """`import sshscale.journal` in a fresh interpreter that has imported what a live run
    has by then (cli, run, views, metrics, notify)."""
    code = ("import time, sshscale.cli, sshscale.run, sshscale.views, sshscale.metrics, "
            "sshscale.notify; t = time.perf_counter(); import sshscale.journal; "
            "print(time.perf_counter() - t)")
    return [float(subprocess.run([sys.executable, "-c", code], env=env, check=True,
                                 capture_output=True, text=True).stdout) for _ in range(rounds)]


def rotations(directory: Path, line: bytes, appends: int = 2000) -> tuple[list[float],
                                                                          list[float]]:
    """Appends of `line` to a journal of 64-KiB files: (seconds of appends that rotated,
    seconds of the others)."""
    path = directory / "rotate.jsonl"
    rotating, plain = [], []
    for _ in range(appends):
        before = path.stat().st_size if path.exists() else 0
        started = time.perf_counter()
        journal._append_line(str(path), line, 64 * 1024)
        seconds = time.perf_counter() - started
        (rotating if path.stat().st_size < before else plain).append(seconds)
    return rotating, plain


def full_rotation(directory: Path, line: bytes) -> tuple[float, int]:
    """One rotation of a full FILE_BYTES file of `line`: (seconds, compressed bytes)."""
    path = directory / "full.jsonl"
    count = journal.FILE_BYTES // len(line)
    path.write_bytes(line * count)
    started = time.perf_counter()
    journal._append_line(str(path), line, journal.FILE_BYTES)
    seconds = time.perf_counter() - started
    return seconds, Path(f"{path}.1.gz").stat().st_size


def ms(values: Sequence[float]) -> str:
    """The median in ms, with the spread."""
    return f"{median(values) * 1e3:.3f} ms ({spread([v * 1e3 for v in values])})"


def cost(home: Home, port: int, runs: int, warmups: int) -> None:
    """The append's cost on a quiet run of the 4-VM pool, and the rotation's."""
    with Simulator(job_seconds=0.05) as sim:
        sim.add_vm("web1", ip=HOST)
        config = pool_config(home, sim, port, 4)
        appends, walls = in_process(config, home.env, runs, warmups)
        children = [run_child(tool_argv(config), home.env).wall
                    for _ in range(warmups + runs)][warmups:]
        line = last_line(config, home.env) + b"\n"
    imports = import_seconds(home.env)
    rotating, plain = rotations(home.root, line)
    seconds, compressed = full_rotation(home.root, line)
    rows = [
        [f"journal.append() in a quiet run (in-process, median of {len(appends)})",
         ms(appends)],
        [f"the quiet run itself, in-process (median of {len(walls)})", ms(walls)],
        ["the append's share of the in-process run", f"{median(appends) / median(walls):.2%}"],
        [f"`import sshscale.journal` after the run's modules (median of {len(imports)})",
         ms(imports)],
        [f"the real command's quiet run, a fresh process (median of {len(children)})",
         ms(children)],
        [f"an append that rotates a 64-KiB file ({len(rotating)} of "
         f"{len(rotating) + len(plain)})", ms(rotating)],
        ["an append that does not (same journal)", ms(plain)],
        [f"an append that rotates a full {journal.FILE_BYTES >> 20}-MiB file (once)",
         f"{seconds * 1e3:.1f} ms; {compressed / 1e6:.2f} MB compressed, "
         f"{journal.FILE_BYTES / compressed:.0f}x"],
    ]
    say(markdown_table(["what", "time"], rows))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--warmups", type=int, default=2)
    args = parser.parse_args(argv)
    say(f"== the run journal: line sizes (files of {journal.FILE_BYTES >> 20} MiB of lines, "
        f"{journal.ROTATED_FILES} rotated kept: at least {KEPT_BYTES / 1e6:.0f} MB of lines)")
    with temp_home() as home:
        server = start_ssh_server(home, [HOST], MID_LOAD)
        try:
            say(f"  SSH server: {server.kind} on {HOST}:{server.port}")
            rows = sizes(home, server.port)
            say(markdown_table(["pool", "line per run", "six weeks of runs",
                                "the journal keeps"], rows))
            say(f"== what the append adds to a quiet run: {args.runs} runs after "
                f"{args.warmups} warm-ups")
            cost(home, server.port, args.runs, args.warmups)
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
