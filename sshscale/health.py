"""Health checks -> the log and the members' failure counts: after each run's checks, each
managed member's count of failed runs in a row (the VM tag ssh-scale:unhealthy) is written
where it changed, and only there, so a run whose members all pass writes nothing. Writes are
batched: one deleteTags for every count that changes, one createTags per new value."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace

import idcf_api
from idcf_api import Client
from sshscale.facts import UNHEALTHY
from sshscale.fleet import count_changes, health_lines, with_counts
from sshscale.logs import note
from sshscale.model import Observation, Pool, Settings
from sshscale.tags import USER_VM, TagWriter

__all__ = ["keep_counts"]


def keep_counts(observation: Observation, settings: Settings, client: Client,
                write: bool = True) -> Observation:
    """The observation with each checked member's failure count brought up to date (written
    to its tag unless `write` is false: a read-only run), and a log line for every member
    that failed. Counts that cannot be written are a warning, and stay where they were."""
    changes = count_changes(observation.pool, settings)
    if changes and write and not _write(client, settings, observation.pool, changes):
        changes = {}
    pool = with_counts(observation.pool, changes)
    for line in health_lines(pool, settings):
        note("health", line, logging.WARNING)
    return replace(observation, pool=pool)


def _write(client: Client, settings: Settings, pool: Pool, changes: Mapping[str, int]) -> bool:
    tags = TagWriter(client, settings)
    tagged = [vm.id for vm in pool.vms if vm.id in changes and vm.tag(UNHEALTHY) is not None]
    values: dict[int, list[str]] = {}
    for vm_id, count in changes.items():
        if count:
            values.setdefault(count, []).append(vm_id)
    try:
        if tagged:
            tags.delete(USER_VM, ",".join(tagged), {UNHEALTHY: None})
        for count, vm_ids in sorted(values.items()):
            tags.create(USER_VM, ",".join(vm_ids), {UNHEALTHY: str(count)})
    except idcf_api.CloudStackError as exc:
        note("tags", f"could not record the members' health check failures: {exc}",
             logging.WARNING)
        return False
    return True
