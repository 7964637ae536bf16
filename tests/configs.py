"""Configs for the tests and the benchmarks (no pytest needed): the simulator's own sections
(sim.config_sections()) plus [monitoring] and the policies, in the 2013 tool's spelling."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Optional

from tests.sshd_support import current_user

Sections = dict[str, dict[str, str]]


def base_sections(sim: Any, key: Optional[Path], host: str = "127.0.0.1",
                  port: Optional[int] = None) -> Sections:
    """A valid config as sections: thresholds 3.0/1.0, 1-3 VMs, no cooldowns, no drain."""
    sections = sim.config_sections()
    monitoring = {"host": host, "user": current_user(),
                  "private_key_path": str(key) if key else "", "pass_phrase": ""}
    if port:
        monitoring["port"] = str(port)
    sections["monitoring"] = monitoring
    sections["scalling"].update(min_size="1", max_size="3", drain_seconds="0")
    sections["scalling_policy_out"] = {"threshold": "3.0", "cooldown": "0"}
    sections["scalling_policy_in"] = {"threshold": "1.0", "cooldown": "0"}
    return sections


def example_config(home: Path, name: str) -> Path:
    """A config of examples/ copied into a throwaway HOME that holds the (never read) key it
    names, readable by its owner only: for replays, which never connect."""
    (home / ".ssh" / "id_rsa").write_text("not a key: replays never connect\n")
    config = home / name
    shutil.copy(Path(__file__).resolve().parent.parent / "examples" / name, config)
    config.chmod(0o600)
    return config


def render(sections: Sections) -> str:
    """INI text from sections."""
    lines = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {v}" for k, v in values.items()]
        lines.append("")
    return "\n".join(lines)


def write_config(path: Path, sections: Sections) -> Path:
    """Write a config readable by its owner only, as the README asks."""
    path.write_text(render(sections))
    path.chmod(0o600)
    return path
