"""The VM tags each run keeps up to date from what it saw (sshscale/marks.py says which): the
members' health failure counts, the pool's tag on VMs an earlier version deployed, proven
replacements, hopeless replacements, stuck VMs. Written only where they change, so a quiet run
whose members all pass writes nothing; batched: one deleteTags per key, one createTags per new
value. A read-only run writes nothing. Failed writes are a warning: the tags stay as they were
(and the run decides on what the cloud holds)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

import idcf_api
from idcf_api import Client
from sshscale.errors import ScaleError, TagError
from sshscale.facts import BACKOFF, POOL, TRIES, UPGRADED, backoff_keys, time_value
from sshscale.fleet import health_lines
from sshscale.logs import note
from sshscale.marks import Mark, marks_due, with_marks
from sshscale.model import Observation, Pool, Settings
from sshscale.observe import read_rule_tags
from sshscale.tags import LOAD_BALANCER, USER_VM, TagWriter

__all__ = ["keep_marks"]


def keep_marks(observation: Observation, settings: Settings, client: Client,
               write: bool = True, holder: str = "") -> tuple[Observation, list[str]]:
    """The observation with the VM tags this run changes (written unless `write` is false: a
    read-only run, which still decides on them), a log line for every member that failed its
    check, and the notices of brakes this run engaged: each is a tag created only if absent,
    its value naming this run (`holder`), so that of two monitors only the one that created it
    tells it. A VM that proves itself healthy ends the failed-deploy backoff."""
    marks = marks_due(observation.pool, settings, observation.now)
    plain = [m for m in marks if m.notice is None]
    told: list[Mark] = []
    if write:
        if plain and not _write(client, settings, observation.pool, plain):
            plain = []
        told = [m for m in marks if m.notice is not None and _tell(client, settings, m, holder)]
    written = plain + told if write else list(marks)
    pool = with_marks(observation.pool, written)
    for line in health_lines(pool, settings):
        note("health", line, logging.WARNING)
    legacy = [m.vm_id for m in written if m.key == POOL]
    if legacy and write:
        note("ownership", f"{len(legacy)} VM(s) an earlier ssh-scale deployed recognised as this "
                          f"pool's (instance group {settings.group}, in its load balancer): "
                          f"tagged {POOL}; from now on a member with neither the pool's name "
                          "nor its tag is someone else's", logging.WARNING)
        _mark_upgraded(client, settings, observation.now)
    if write and any(m.key == TRIES and m.value is None for m in written):
        _end_backoff(client, settings)
    notices = [m.notice.text for m in told if m.notice is not None]
    for text in notices:
        note("brake", text, logging.WARNING)
    return replace(observation, pool=pool), notices


def _tell(client: Client, settings: Settings, mark: Mark, holder: str) -> bool:
    """Create a notice's tag if absent; whether this run created it (and so tells it)."""
    try:
        TagWriter(client, settings).create(USER_VM, mark.vm_id,
                                           {mark.key: f"{mark.value} {holder}".strip()})
    except (idcf_api.CloudStackError, ScaleError) as exc:
        if not isinstance(exc, TagError) or not any(exc.found.values()):
            note("tags", f"could not record a notice on {mark.vm_id}: {exc}", logging.WARNING)
        return False
    return True


def _end_backoff(client: Client, settings: Settings) -> None:
    """A new VM passed its health check: deploys work again, the backoff ends (with health
    checks a deploy's job alone is no proof)."""
    keys = backoff_keys(read_rule_tags(client, settings), BACKOFF)
    if not keys:
        return
    try:
        TagWriter(client, settings).delete(LOAD_BALANCER, settings.load_balancer,
                                           dict.fromkeys(keys))
    except (idcf_api.CloudStackError, ScaleError) as exc:
        note("tags", f"could not end the failed-deploy backoff: {exc}", logging.WARNING)


def _mark_upgraded(client: Client, settings: Settings, now: datetime) -> None:
    """The rule's ssh-scale:upgraded: the upgrade happened (once; a failure is a warning, the
    next run recognises the same VMs again)."""
    try:
        TagWriter(client, settings).create(LOAD_BALANCER, settings.load_balancer,
                                           {UPGRADED: time_value(now)})
    except (idcf_api.CloudStackError, ScaleError) as exc:
        if not isinstance(exc, TagError) or not any(exc.found.values()):
            note("tags", f"could not record the upgrade on the load balancer: {exc}",
                 logging.WARNING)


def _write(client: Client, settings: Settings, pool: Pool, marks: Sequence[Mark]) -> bool:
    tags = TagWriter(client, settings)
    held = {(vm.id, k.lower()) for vm in pool.vms for k, _ in vm.tags}
    doomed: dict[str, list[str]] = {}
    created: dict[tuple[str, str], list[str]] = {}
    for mark in marks:
        if (mark.vm_id, mark.key) in held:
            doomed.setdefault(mark.key, []).append(mark.vm_id)
        if mark.value is not None:
            created.setdefault((mark.key, mark.value), []).append(mark.vm_id)
    try:
        for key, vm_ids in sorted(doomed.items()):
            tags.delete(USER_VM, vm_ids, {key: None})
        for (key, value), vm_ids in sorted(created.items()):
            tags.create(USER_VM, vm_ids, {key: value})
    except (idcf_api.CloudStackError, ScaleError) as exc:
        note("tags", f"could not update the members' tags: {exc}", logging.WARNING)
        return False
    return True
