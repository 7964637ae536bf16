"""Resource tags -> cloud calls: create, delete and replace tags on VMs or the load-balancer
rule, each an async job awaited within TAG_JOB_SECONDS (at most job_timeout). createTags fails
when the key is already there: the one atomic create-if-absent CloudStack offers.

Servers word tag failures differently by version (a duplicate key, nothing to delete), and a
job that timed out may still have done its work: so after any failed or timed-out tag call the
tags are read back (listTags) and what the cloud holds decides, never the error's wording."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Optional, Union

from idcf_api import ApiError, Client, CloudStackError, JobFailed
from sshscale.errors import TagError
from sshscale.facts import backoff_key, backoff_value
from sshscale.logs import note
from sshscale.model import Backoff, Settings

__all__ = ["LOAD_BALANCER", "TAG_JOB_SECONDS", "USER_VM", "TagWriter", "answered", "read_tags",
           "refused"]

USER_VM = "UserVm"
LOAD_BALANCER = "LoadBalancer"
TAG_JOB_SECONDS = 60.0  # a tag job is a database write: a minute is long


def read_tags(client: Client, settings: Settings, kind: str, resource_ids: Sequence[str],
              keys: Sequence[str]) -> dict[str, dict[str, str]]:
    """The tags with these keys on the resources, {resource id: {key (lowercased): value}}
    (keys compare case-insensitively, as CloudStack's do)."""
    wanted = {key.lower() for key in keys}
    # One resource: all its tags at once; several: each key's tags of that resource type.
    queries = [{"resourceid": resource_ids[0]}] if len(resource_ids) == 1 else \
        [{"key": key} for key in sorted(wanted)]
    found: dict[str, dict[str, str]] = {}
    for query in queries:
        for tag in client.list("listTags", resourcetype=kind, **query, **settings.scope):
            key, resource = str(tag.get("key", "")).lower(), str(tag.get("resourceid", ""))
            if key in wanted and resource in resource_ids:
                found.setdefault(resource, {})[key] = str(tag.get("value", ""))
    return found


def refused(exc: TagError) -> bool:
    """The resource takes no tags: the create was refused as a bad parameter (431) and nothing
    is there (a server error or a timeout is no such answer)."""
    return getattr(exc.cause, "errorcode", None) == 431 and not any(exc.found.values())


def answered(exc: TagError) -> bool:
    """The cloud answered the tag call with a failure (an error answer, or a job that ended
    failed); not a call or job that went unanswered, which may still take effect later."""
    return isinstance(exc.cause, (ApiError, JobFailed))


def _ids(resource_ids: Union[str, Sequence[str]]) -> list[str]:
    return [resource_ids] if isinstance(resource_ids, str) else list(resource_ids)


class TagWriter:
    """Writes tags for one pool; every call waits for its job and, when the job fails or
    times out, reads back what the cloud holds."""

    def __init__(self, client: Client, settings: Settings) -> None:
        self.client, self.settings = client, settings
        self.timeout = min(settings.job_timeout, TAG_JOB_SECONDS)

    def create(self, kind: str, resource_ids: Union[str, Sequence[str]],
               tags: Mapping[str, str]) -> None:
        """Add the tags to every resource (all or none). Raises TagError when, after a failed
        or timed-out call, the cloud does not hold them all with these values (its `found`
        says what it holds: another value of a key that was there already, say)."""
        ids = _ids(resource_ids)
        try:
            self._run("createTags", kind, ids, tags)
        except CloudStackError as exc:
            found = self._read_back(kind, ids, tags)
            if all(found.get(rid, {}).get(key.lower()) == value
                   for rid in ids for key, value in tags.items()):
                note("tags", f"createTags failed ({exc}) but the tags are there", logging.DEBUG)
                return
            raise TagError("createTags", kind, ids, tags, exc, found) from None

    def delete(self, kind: str, resource_ids: Union[str, Sequence[str]],
               tags: Mapping[str, Optional[str]]) -> None:
        """Remove the tags (a key with None: whatever its value; a key with a value: only that
        value, so a newer value stays). Nothing to remove is no failure. Raises TagError when,
        after a failed or timed-out call, a tag is still there."""
        ids = _ids(resource_ids)
        try:
            self._run("deleteTags", kind, ids, tags)
        except CloudStackError as exc:
            found = self._read_back(kind, ids, tags)
            left = {rid: {key: value for key, value in held.items()
                          if _matches(key, value, tags)} for rid, held in found.items()}
            if not any(left.values()):
                return  # gone, or never there: as asked
            raise TagError("deleteTags", kind, ids, tags, exc, found) from None

    def replace(self, kind: str, resource_id: str, tags: Mapping[str, str],
                also_delete: Sequence[str] = ()) -> None:
        """Set the tags to these values (and drop the also_delete keys): delete, then create
        (a key holds one value); a create that the read-back finds missing is tried once
        more, so that a fact is not lost to one failed call."""
        self.delete(kind, resource_id, {**dict.fromkeys(tags), **dict.fromkeys(also_delete)})
        if not tags:
            return
        try:
            self.create(kind, resource_id, tags)
        except TagError as exc:
            if any(exc.found.values()):
                raise  # someone else wrote a value meanwhile: theirs stands
            self.create(kind, resource_id, tags)

    def write_backoff(self, kind: str, resource_id: str, base: str, backoff: Backoff,
                      old_keys: Sequence[str]) -> None:
        """Record a grown backoff: the new count's key first (a run that dies before the old
        keys go leaves both, and the highest holds), then the old keys go (a failure there is
        harmless)."""
        key = backoff_key(base, backoff.failures)
        try:
            self.create(kind, resource_id, {key: backoff_value(backoff)})
        except TagError as exc:
            if not any(exc.found.values()):
                raise  # nothing recorded: the caller says so
        stale = [k for k in old_keys if k != key]
        if stale:
            try:
                self.delete(kind, resource_id, dict.fromkeys(stale))
            except (CloudStackError, TagError) as exc:
                note("tags", f"an older backoff stays on {kind} {resource_id}: {exc}",
                     logging.DEBUG)

    def _read_back(self, kind: str, ids: Sequence[str],
                   tags: Mapping[str, Optional[str]]) -> dict[str, dict[str, str]]:
        return read_tags(self.client, self.settings, kind, ids, list(tags))

    def _run(self, command: str, kind: str, ids: Sequence[str],
             tags: Mapping[str, Optional[str]]) -> None:
        params: dict[str, str] = {}
        for n, (key, value) in enumerate(tags.items()):
            params[f"tags[{n}].key"] = key
            if value is not None:
                params[f"tags[{n}].value"] = value
        answer = self.client.call(command, resourcetype=kind, resourceids=",".join(ids),
                                  **params)
        self.client.wait(str(answer["jobid"]), timeout=self.timeout)


def _matches(key: str, value: str, tags: Mapping[str, Optional[str]]) -> bool:
    """Whether a tag the cloud holds is one deleteTags was asked to remove."""
    return any(key == asked.lower() and (wanted is None or value.lower() == wanted.lower())
               for asked, wanted in tags.items())
