"""Resource tags -> cloud calls: create, delete and replace tags on a VM or the load-balancer
rule, each an async job awaited within job_timeout (createTags fails when the key is already
there: the one atomic create-if-absent CloudStack offers)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Optional

from idcf_api import Client, JobFailed
from sshscale.model import Settings

__all__ = ["LOAD_BALANCER", "USER_VM", "TagWriter", "already_there", "refused"]

USER_VM = "UserVm"
LOAD_BALANCER = "LoadBalancer"


def already_there(exc: JobFailed) -> bool:
    """A createTags job failed because the key is on the resource already."""
    return "already on" in exc.errortext


def refused(exc: JobFailed) -> bool:
    """A createTags job failed because the cloud keeps no tags on this kind of resource."""
    return "support resource tags" in exc.errortext


def _nothing_matched(exc: JobFailed) -> bool:
    return "Failed to delete tags" in exc.errortext or exc.errorcode == 431


class TagWriter:
    """Writes tags for one pool; every call waits for its job."""

    def __init__(self, client: Client, settings: Settings) -> None:
        self.client, self.settings = client, settings

    def create(self, kind: str, resource_id: str, tags: Mapping[str, str]) -> None:
        """Add the tags (all or none); raises JobFailed (see already_there, refused)."""
        self._run("createTags", kind, resource_id, tags)

    def delete(self, kind: str, resource_id: str,
               tags: Mapping[str, Optional[str]]) -> bool:
        """Remove the tags (a key with None: whatever its value); False when none matched."""
        try:
            self._run("deleteTags", kind, resource_id, tags)
        except JobFailed as exc:
            if _nothing_matched(exc):
                return False
            raise
        return True

    def replace(self, kind: str, resource_id: str, tags: Mapping[str, str],
                also_delete: tuple[str, ...] = ()) -> None:
        """Set the tags to these values (and drop the also_delete keys): delete, then create."""
        self.delete(kind, resource_id, {**dict.fromkeys(tags), **dict.fromkeys(also_delete)})
        if tags:
            self.create(kind, resource_id, tags)

    def _run(self, command: str, kind: str, resource_id: str,
             tags: Mapping[str, Optional[str]]) -> None:
        params: dict[str, str] = {}
        for n, (key, value) in enumerate(tags.items()):
            params[f"tags[{n}].key"] = key
            if value is not None:
                params[f"tags[{n}].value"] = value
        answer = self.client.call(command, resourcetype=kind, resourceids=resource_id, **params)
        self.client.wait(str(answer["jobid"]), timeout=self.settings.job_timeout)
