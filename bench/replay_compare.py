"""Compare scaling policies by replaying the example traces through sshscale.decide.

Policies: "default" (examples/replay.idcfrc as is: one VM per run, scale-out cooldown 120 s
after a VM joined, scale-in cooldown 300 s), "proportional" (the same with [policy_out]
step = proportional) and "classic" (the 2013 tool's rules).  All with thresholds 3/1, 2-8 VMs
and a 150 s boot, as set in that config.  --variants adds rows for a few other settings.

Usage: .venv/bin/python bench/replay_compare.py [--variants] > bench/results-replay.md
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import idcf_api  # noqa: E402
from sshscale import replay as rp  # noqa: E402
from sshscale.config import settings_from_config  # noqa: E402
from sshscale.model import Settings  # noqa: E402

EXAMPLES = os.path.join(ROOT, "examples")
CONFIG = os.path.join(EXAMPLES, "replay.idcfrc")
TRACES = ("daily.csv", "spike.csv", "sawtooth.csv")
BOOT_SECONDS = 150.0
COLUMNS = ("trace", "policy", "overload minutes", "VM-minutes", "scale-outs", "scale-ins",
           "flips", "peak VMs")
Variant = tuple[str, str, dict]  # (label, replay policy, Settings overrides)
POLICIES: tuple[Variant, ...] = (
    ("default", "current", {}),
    ("proportional", "current", {"step_out": "proportional"}),
    ("classic", "classic", {}),
)
VARIANTS: tuple[Variant, ...] = (
    ("default, period_in 5", "current", {"period_in": 5}),
    ("proportional, period_in 5", "current", {"step_out": "proportional", "period_in": 5}),
    ("proportional, period_in 5, cooldown_out 0", "current",
     {"step_out": "proportional", "period_in": 5, "cooldown_out": 0.0}),
    ("proportional, period_in 15", "current", {"step_out": "proportional", "period_in": 15}),
)


def load_replay_settings(path: str = CONFIG) -> Settings:
    """Settings from the example config (a replay neither reads nor checks the key file)."""
    parser = idcf_api.read_config(path)
    return settings_from_config(parser, os.path.relpath(path, ROOT), environ={},
                                check_key=False)


def replay_rows(settings: Settings, variants: Sequence[Variant]) -> Iterator[dict]:
    """One table row per trace and variant."""
    for name in TRACES:
        trace = rp.read_trace(os.path.join(EXAMPLES, name))
        for label, policy, overrides in variants:
            result = rp.replay(trace, replace(settings, **overrides), policy, BOOT_SECONDS)
            row = rp.summary_row(result)
            yield {**row, "trace": name, "policy": label}


def markdown_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """A GitHub-flavoured Markdown table; numbers right-aligned."""
    lines = ["| " + " | ".join(columns) + " |",
             "|" + "|".join("---" if c in ("trace", "policy") else "---:" for c in columns) + "|"]
    lines += ["| " + " | ".join(str(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Print the comparison as Markdown."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", action="store_true",
                        help="also replay a few other settings of the current policy")
    args = parser.parse_args(argv)
    settings = load_replay_settings()
    print(markdown_table(list(replay_rows(settings, POLICIES)), COLUMNS))
    if args.variants:
        print()
        print(markdown_table(list(replay_rows(settings, VARIANTS)), COLUMNS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
