"""Configs for the tests and the benchmarks (no pytest needed): the simulator's own sections
(sim.config_sections()) plus [monitoring] and the policies, in the 2013 tool's spelling."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from typing import Any, Optional

from sshscale.facts import POOL, UPGRADED
from sshscale.ownership import NAME_PREFIX, POOL_KEY_DIGITS, vm_name
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


def config_with(path: Path, sim: Any, key: Path, port: int, **changes: dict) -> Path:
    """Write base_sections (SSH on `port`) with changes per section, at `path`."""
    sections = base_sections(sim, key, port=port)
    for section, values in changes.items():
        sections.setdefault(section, {}).update(values)
    return write_config(path, sections)


def add_owned(sim: Any, label: str, **kwargs: Any) -> dict:
    """Seed a VM as this version deploys it for the simulator's pool: named with the pool's
    stem (ending in `label`), in its instance group, tagged ssh-scale:pool; returns its JSON
    (add_vm's keywords: ip, state, in_lb, created, ...)."""
    kwargs.setdefault("group", f"ssh_scale-{sim.lb_id}")
    vm = sim.add_vm(vm_name(sim.lb_id, label), **kwargs)
    sim.set_tag(vm["id"], POOL, sim.lb_id)
    if UPGRADED not in sim.tags(sim.lb_id):  # this version deployed for the pool
        sim.set_tag(sim.lb_id, UPGRADED, str(int(time.time())))
    return vm


def add_bystanders(sim: Any, count: int, rules: int = 10, prefix: str = "127.1") -> None:
    """Seed `count` VMs that are not the pool's, as a busy account holds them: two in three
    are other pools' (named with their stems, tagged with them, in their instance groups,
    members of their own load-balancer rules; `rules` of them), the rest people's VMs in
    other groups and no load balancer. Their addresses are prefix.0.1 onwards (loopback)."""
    others = [sim.add_lb_rule(f"other-{n}") for n in range(rules)]
    for n in range(count):
        ip = f"{prefix}.{n // 250}.{n % 250 + 1}"
        if n % 3 == 2:
            sim.add_vm(f"app-{n}", ip=ip, group=f"team-{n % 7}", in_lb=False)
            continue
        rule = others[n % rules]
        vm = sim.add_vm(vm_name(rule, f"{n:06x}"), ip=ip, group=f"ssh_scale-{rule}",
                        lb_id=rule)
        sim.set_tag(vm["id"], POOL, rule)


def label(name: str) -> str:
    """A VM name with the pool's stem taken off ("ssh-scale-<key>-m2" -> "m2"), so that tests
    compare the names they gave (other names unchanged)."""
    stem = len(NAME_PREFIX) + POOL_KEY_DIGITS + 1
    return name[stem:] if name.startswith(NAME_PREFIX) and len(name) > stem else name


def labels(vms: Any) -> set[str]:
    """The labels of VMs' JSON (simulator answers)."""
    return {label(vm["name"]) for vm in vms}


def unstem(text: str) -> str:
    """Output with the pool's name stems taken off the VM names, so that tests find the names
    they gave ("replace : m2 (127.0.2.3)")."""
    return re.sub(rf"{NAME_PREFIX}[0-9a-f]{{{POOL_KEY_DIGITS}}}-", "", text)
