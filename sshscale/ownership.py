"""Whose VM it is, pure: a VM belongs to this pool only when it carries proof.

The proof is fixed in the deploy call itself, so there is no moment at which a VM this pool
created cannot be recognised: every deploy passes `name=` (the VM's host name) made of the
pool's stem, ``ssh-scale-<12 hex digits of the load-balancer rule's id>-<random token>``, and
`group=` ([launch_config] group). Right after the deploy is accepted, the VM is also tagged
``ssh-scale:pool=<load-balancer rule id>``.

A VM is the pool's ("ours") when it is in the pool's instance group AND it is named with the
pool's stem or tagged with the pool's id; a VM tagged with another pool's id, or named with
another pool's stem, is never ours. VMs an earlier ssh-scale deployed carry neither name nor
tag: in the first run after the upgrade (no VM of the pool carries its name or tag yet), the
members of the load balancer in the instance group are recognised as the pool's ("legacy"),
tagged, and ours from then on; later, such a VM is someone's, to hand over with --adopt.
Anything else in the instance group is reported and never touched: another pool's VM, a
person's VM, a VM whose deploy-time identity contradicts its tag.
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Optional

from sshscale.facts import POOL

__all__ = ["NAME_PREFIX", "Owner", "Verdict", "judge", "name_stem", "named_by", "pool_key",
           "stem_key", "vm_name"]

NAME_PREFIX = "ssh-scale-"
POOL_KEY_DIGITS = 12
_STEM = re.compile(rf"{NAME_PREFIX}([0-9a-f]{{{POOL_KEY_DIGITS}}})-")


class Owner(enum.Enum):
    """Who a VM belongs to, as far as this pool can tell."""

    OURS = "ours"              # named or tagged by this pool, in its instance group
    LEGACY = "legacy"          # deployed by an earlier ssh-scale: ours, to be tagged once
    DOUBTFUL = "doubtful"      # carries part of the pool's identity only: never touched
    OTHER = "other"            # nothing of ours about it


@dataclass(frozen=True)
class Verdict:
    """A VM's owner, and for a doubtful one the reason --status gives."""

    owner: Owner
    why: str = ""

    @property
    def ours(self) -> bool:
        """The pool may act on the VM (adopt, re-add, scale in, replace, destroy)."""
        return self.owner in (Owner.OURS, Owner.LEGACY)


def pool_key(load_balancer: str) -> str:
    """12 hex digits that stand for the pool (its load-balancer rule) in VM names."""
    digest = hashlib.sha256(load_balancer.strip().lower().encode()).hexdigest()
    return digest[:POOL_KEY_DIGITS]


def name_stem(load_balancer: str) -> str:
    """What every VM name of the pool starts with: ``ssh-scale-<pool key>-``."""
    return f"{NAME_PREFIX}{pool_key(load_balancer)}-"


def vm_name(load_balancer: str, token: str) -> str:
    """The host name a deploy asks for: the pool's stem and a random token (lowercase hex),
    unique in the network, a valid host name (letters, digits, hyphens; 63 at most)."""
    return name_stem(load_balancer) + token


def named_by(name: Optional[str], load_balancer: str) -> bool:
    """The name carries the pool's stem (host names compare case-insensitively)."""
    return (name or "").lower().startswith(name_stem(load_balancer))


def stem_key(name: Optional[str]) -> Optional[str]:
    """The pool key in a name that has the form of a pool's stem, whichever pool's."""
    match = _STEM.match((name or "").lower())
    return match.group(1) if match else None


def judge(name: Optional[str], group: Optional[str], tags: Mapping[str, str], in_lb: bool,
          load_balancer: str, pool_group: str, upgrading: bool = True) -> Verdict:
    """Whose VM it is, from its host name, instance group, tags (keys lowercased) and whether
    the pool's load balancer lists it. `upgrading`: no VM of the pool carries its name or tag
    yet (the first runs after an upgrade), when members of the group that carry neither are
    taken as an earlier version's."""
    tagged = tags.get(POOL)
    in_group = group == pool_group
    named = named_by(name, load_balancer)
    foreign_stem = stem_key(name) not in (None, pool_key(load_balancer))
    if tagged is not None and tagged.strip().lower() != load_balancer.strip().lower():
        if in_group or named:
            return Verdict(Owner.DOUBTFUL, f"tagged {POOL}={tagged}: another pool's VM")
        return Verdict(Owner.OTHER)
    if foreign_stem and (in_group or tagged is not None):
        return Verdict(Owner.DOUBTFUL, "named with another pool's stem: another pool's VM")
    if not in_group:
        if named or tagged is not None:
            return Verdict(Owner.DOUBTFUL, f"carries this pool's name or tag but is in instance "
                                           f"group {group or '(none)'}, not {pool_group}")
        return Verdict(Owner.OTHER)
    if named or tagged is not None:
        return Verdict(Owner.OURS)
    if in_lb and upgrading:
        return Verdict(Owner.LEGACY)
    where = "and its load balancer " if in_lb else ""
    return Verdict(Owner.DOUBTFUL, f"in instance group {pool_group} {where}but neither named "
                                   f"nor tagged by this pool (ssh_scale.py --adopt it if it is)")
