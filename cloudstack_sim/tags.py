"""Resource tags as TaggedResourceManagerImpl keeps them: the resource types (ResourceTag.
ResourceObjectType), the unique (resource, type, key) index, createTags and deleteTags as one
transaction each, and the tag filters of the list commands.

Keys and values compare case-insensitively everywhere: deleteTags uses equalsIgnoreCase, and the
database's default collation (utf8_general_ci) makes the unique index and the list filters
case-insensitive too. What a failure says depends on the server version (versions.Server)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Optional

from .params import ApiError, InvalidParameter
from .records import Tag, TagRequest, World

__all__ = ["RESOURCE_TYPES", "UNTAGGABLE_TYPES", "create_tags", "delete_tags", "matches_any",
           "resource_type"]

# ResourceObjectType names (api/src/main/java/com/cloud/server/ResourceTag.java); those whose
# resourceTagsSupport is false refuse tags.
UNTAGGABLE_TYPES = frozenset({
    "DomainRouter", "Nic", "Zone", "ServiceOffering", "Storage", "PrivateGateway",
    "NetworkACLList", "VpnGateway", "CustomerGateway", "VpnConnection", "DiskOffering",
    "AutoScaleVmProfile", "AutoScaleVmGroup", "LBStickinessPolicy", "LBHealthCheckPolicy",
    "GuestOs", "NetworkOffering", "Domain"})
RESOURCE_TYPES = UNTAGGABLE_TYPES | {
    "VMInstance", "UserVm", "Template", "ISO", "Volume", "Snapshot", "Backup", "Network",
    "LoadBalancer", "PortForwardingRule", "FirewallRule", "SecurityGroup", "SecurityGroupRule",
    "PublicIpAddress", "Project", "Account", "Vpc", "NetworkACL", "StaticRoute", "VMSnapshot",
    "RemoteAccessVpn", "User", "SnapshotPolicy", "VpcOffering"}
_BY_LOWER = {name.lower(): name for name in RESOURCE_TYPES}

Pairs = Sequence[tuple[str, Optional[str]]]


def resource_type(name: str) -> str:
    """The ResourceObjectType for name, any case; InvalidParameter "Invalid resource type"."""
    canonical = _BY_LOWER.get(name.lower())
    if canonical is None:
        raise InvalidParameter(f"Invalid resource type {name}")
    return canonical


def _same(a: str, b: str) -> bool:
    return a.lower() == b.lower()


def _matches(tag: Tag, pairs: Pairs) -> bool:
    """deleteTags' rule: a key alone matches any value; no pairs at all match every tag."""
    return not pairs or any(_same(tag.key, key) and (value is None or _same(tag.value, value))
                            for key, value in pairs)


def matches_any(tags: Iterable[Tag], pairs: Pairs) -> bool:
    """Whether one of tags has one of the (key, value) pairs (the list filters OR them)."""
    return any(_same(tag.key, key) and _same(tag.value, value or "")
               for tag in tags for key, value in pairs)


def create_tags(cloud: World, request: TagRequest) -> None:
    """Add every key to every resource, all or nothing. InvalidParameter for an invalid or
    untaggable type, an unknown resource or an empty value; ApiError 530 for a key already on a
    resource (TaggedResourceManagerImpl.createTags, in its order of checks)."""
    kind = resource_type(request.resource_type)
    created: list[Tag] = []
    for key, value in dict(request.pairs).items():
        for given in request.resource_ids:
            if kind in cloud.untaggable:
                raise InvalidParameter(f"The resource type {kind} doesn't support resource tags")
            uuid = cloud.find_resource(kind, given)
            if uuid is None:
                raise cloud.server.unknown_resource(kind, given)
            if not value:
                raise InvalidParameter(f"Value for the key {key} is either null or empty")
            if any(tag.resource_type == kind and tag.resource_id == uuid and _same(tag.key, key)
                   for tag in cloud.tags + created):
                # the unique index's EntityExistsException, or since 4.13 its rewording
                raise ApiError(530, cloud.server.duplicate(key, kind, given))
            created.append(Tag(cloud.next_id("tag"), key, value, kind, uuid))
    cloud.tags.extend(created)


def delete_tags(cloud: World, request: TagRequest) -> None:
    """Remove the matching tags of the resources (by identity: a tag created meanwhile with
    another value stays). InvalidParameter for an invalid type; when nothing matched, the
    server version's error (versions.Server.nothing_deleted)."""
    kind = resource_type(request.resource_type)
    uuids = {cloud.find_resource(kind, given) or given for given in request.resource_ids}
    doomed = [tag for tag in cloud.tags if tag.resource_type == kind
              and tag.resource_id in uuids and _matches(tag, request.pairs)]
    if not doomed:
        raise cloud.server.nothing_deleted()
    cloud.tags[:] = [tag for tag in cloud.tags if all(tag is not gone for gone in doomed)]
