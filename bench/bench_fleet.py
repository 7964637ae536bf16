"""What fleet operations add to a quiet run (information): the real command with
[schedule NAME] windows (two open, one closed), [notify] (a webhook on loopback and a command)
and [metrics] (a textfile) against the same command without them, alternating, each child
reaped with os.wait4. A quiet run notifies nothing: the figures are the schedules' evaluation,
the textfile's write, and the modules' imports.

    .venv/bin/python bench/bench_fleet.py [--runs 15] [--warmups 2] [--loadserver]
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_noop import Probe, alternate, describe_calls, noop_arguments  # noqa: E402
from bench.common import (  # noqa: E402
    MID_LOAD, config_sections, median, say, simulator, spread, start_ssh_server, temp_home,
    tool_argv,
)
from tests.receivers import Receiver  # noqa: E402

HOST = "127.0.0.1"


def fleet_sections(base: dict, webhook: str, command: Path, textfile: Path) -> dict:
    """The base config plus every fleet feature: windows open (2) and closed (1), a webhook
    and a command, a textfile."""
    hour = datetime.now(timezone.utc).hour
    sections = {name: dict(values) for name, values in base.items()}
    for name, fired, bounds in (("peak", -1, {"min_size": "1", "max_size": "3"}),
                                ("lunch", -2, {"max_size": "3"}),
                                ("night", 12, {"max_size": "2"})):
        sections[f"schedule {name}"] = {"cron": f"0 {(hour + fired) % 24} * * *",
                                        "duration": "3h", "timezone": "Asia/Tokyo", **bounds}
    sections["notify"] = {"webhook": webhook, "command": str(command)}
    sections["metrics"] = {"textfile": str(textfile)}
    return sections


def run(runs: int = 15, warmups: int = 2, prefer_openssh: bool = True) -> None:
    say(f"== fleet operations on a quiet run: {runs} runs each after {warmups} warm-ups, "
        "alternating")
    with temp_home() as home, simulator(monitored_ip=HOST) as sim, Receiver() as receiver:
        server = start_ssh_server(home, [HOST], MID_LOAD, prefer_openssh=prefer_openssh)
        try:
            say(f"  SSH server: {server.kind} on {HOST}:{server.port}")
            base = config_sections(sim, home.key, [HOST], server.port)
            textfile = home.root / "ssh_scale.prom"
            command = home.root / "on-scale"
            command.write_text("#!/bin/sh\ntouch \"$0.ran\"\n")
            command.chmod(0o755)
            programs = {
                "off": tool_argv(home.write_config("off.idcfrc", base)),
                "on": tool_argv(home.write_config("on.idcfrc", fleet_sections(
                    base, receiver.url(), command, textfile))),
            }
            samples = alternate(programs, Probe(sim, server), home, runs, warmups)
        finally:
            server.stop()
        say("| features | wall (median, spread) | peak RSS | CPU user+sys | API calls | "
            "SSH execs |")
        say("|---|---|---:|---:|---|---:|")
        for name, label in (("off", "none"), ("on", "3 schedules + notify + metrics")):
            s = samples[name]
            say(f"| {label} | {median(s.walls):.3f} s ({spread(s.walls)}) | "
                f"{median(s.rss_mib):.1f} MiB | {median(s.cpus):.3f} s | "
                f"{describe_calls(s.calls[-1])} | {max(s.execs)} |")
        ran = Path(f"{command}.ran").exists()
        say(f"  notifications sent: {len(receiver.posts)} webhook POSTs, command "
            f"{'ran' if ran else 'never ran'}; textfile written: {textfile.exists()} "
            f"({textfile.stat().st_size if textfile.exists() else 0} bytes)")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = noop_arguments(__doc__ or "", argv)
    run(args.runs, args.warmups, not args.loadserver)
    return 0


if __name__ == "__main__":
    sys.exit(main())
