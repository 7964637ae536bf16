"""The server versions the simulator answers as (Simulator(cloudstack=...), --cloudstack): how
each words a failed tag job, how its job dispatcher reports an error, and which fields its
listEvents and queryAsyncJobResult show. Only what differs in something a client of the
simulator reads; each wording names the upstream source (apache/cloudstack) it comes from.

| version | duplicate createTags key      | deleteTags that matched nothing                    |
|---------|-------------------------------|----------------------------------------------------|
| 4.5     | 530 "Entity already exists: " | 530 "Unable to find tags by parameters specified"  |
| 4.11    | 530 "tag K already on T ..."  | 530 "Unable to find any tags which conform ..."    |
| 4.12    | 530 "Entity already exists: " | 530 "Unable to find any tags which conform ..."    |
| 4.15    | 530 "tag K already on T ..."  | 530 "Failed to delete tags"                        |
| 4.19    | as 4.15                       | as 4.15; events carry resourceid/resourcetype      |

Other invalid parameters inside a tag job are errorcode 530 (jobresultcode 530) up to 4.12,
431 (jobresultcode 431) from 4.15.
"4.11" is the 4.11 LTS as last released (4.11.3); 4.11.0-4.11.2 answer as "4.12" does.
"""

from __future__ import annotations

from dataclasses import dataclass

from .params import ApiError, InvalidParameter

__all__ = ["CLOUDSTACK_VERSIONS", "SERVERS", "Server"]

# TaggedResourceManagerImpl.createTags persists each tag; the unique index
# i_tags__resource_id__resource_type__key (schema 3.0.4 -> 3.0.5) refuses a second one and
# GenericDaoBase.persist turns MySQL's 1062 into EntityExistsException("Entity already exists: ",
# e) (framework/db/src/com/cloud/utils/db/GenericDaoBase.java, 4.2-4.10 layout; the same line in
# the 4.11+ layout). The job's errortext is that message only: MySQL's "Duplicate entry '...'
# for key ..." stays in the cause, which only the management server's log shows.
_ENTITY_EXISTS = "Entity already exists: "
# apache/cloudstack #3339, PR #3348 (merged May 2019, in 4.11.3 and 4.13.0): createTags catches
# the EntityExistsException and throws CloudRuntimeException(String.format("tag %s already on
# %s with id %s", key, resourceType, resourceId)), resourceId as the caller gave it.
_ALREADY_ON = "tag {key} already on {kind} with id {given}"
# deleteTags when no tag matched. 4.2-4.10: InvalidParameterValueException("Unable to find tags
# by parameters specified") (server/src/com/cloud/tags/TaggedResourceManagerImpl.java).
# PR #2350 (CLOUDSTACK-10170, 4.11): InvalidParameterValueException("Unable to find any tags
# which conform to specified delete parameters."). Later deleteTags returns false and
# DeleteTagsCmd.execute throws ServerApiException(INTERNAL_ERROR, "Failed to delete tags"): in
# main and in a fork with 4.13-era code (globocom/cloudstack), i.e. after PR #3228 (4.13);
# which release first shipped it is not pinned down (the simulator gives it to 4.15 onwards).
_NOTHING_4_2 = "Unable to find tags by parameters specified"
_NOTHING_4_11 = "Unable to find any tags which conform to specified delete parameters."
_NOTHING_RETURNS_FALSE = "Failed to delete tags"


@dataclass(frozen=True)
class Server:
    """What one server version does differently."""

    version: str
    duplicate_tag: str
    nothing_to_delete: str
    #: ApiAsyncJobDispatcher.runJob maps an InvalidParameterValueException to PARAM_ERROR (431)
    #: and stores the error's code as the job's jobresultcode. The 4.2-4.10 dispatcher
    #: (server/src/com/cloud/api/ApiAsyncJobDispatcher.java) reports every exception that is not
    #: a ServerApiException as 530, and any failure's jobresultcode as 530 ("FIXME: setting
    #: resultCode to ApiErrorCode.INTERNAL_ERROR is not right"); main has the mapping. The
    #: release that added it is not pinned down: the simulator gives it to 4.15 onwards.
    maps_invalid_parameters: bool
    #: TaggedResourceManagerImpl.getResourceId says "by uuid X" for a name that is not a number
    #: since PR #2350 (4.11); before, "by id X" whatever was given.
    names_uuids: bool
    #: listEvents' resourceid/resourcetype (EventResponse, 4.17).
    event_resources: bool
    #: queryAsyncJobResult's `completed` once a job is done (absent from the 4.4 and 4.9 API
    #: references; the release that added it is not pinned down: 4.15 onwards here).
    job_completed: bool

    def duplicate(self, key: str, kind: str, given: str) -> str:
        """The errortext of a createTags job whose key is already on the resource."""
        return self.duplicate_tag.format(key=key, kind=kind, given=given)

    def unknown_resource(self, kind: str, given: str) -> InvalidParameter:
        """The error of a tag job naming a resource that does not exist."""
        how = "uuid" if self.names_uuids and not given.isdigit() else "id"
        return InvalidParameter(f"Unable to find resource by {how} {given} and type {kind}")

    def nothing_deleted(self) -> ApiError:
        """The error of a deleteTags job that matched no tag."""
        if self.nothing_to_delete == _NOTHING_RETURNS_FALSE:
            return ApiError(530, self.nothing_to_delete)
        return InvalidParameter(self.nothing_to_delete)

    def job_failure(self, error: ApiError) -> tuple[int, int]:
        """(jobresult errorcode, jobresultcode) of a job that raised error."""
        if self.maps_invalid_parameters:
            return error.code, error.code
        return (530 if isinstance(error, InvalidParameter) else error.code), 530


SERVERS = {server.version: server for server in (
    Server("4.5", _ENTITY_EXISTS, _NOTHING_4_2, maps_invalid_parameters=False,
           names_uuids=False, event_resources=False, job_completed=False),
    Server("4.11", _ALREADY_ON, _NOTHING_4_11, maps_invalid_parameters=False,
           names_uuids=True, event_resources=False, job_completed=False),
    Server("4.12", _ENTITY_EXISTS, _NOTHING_4_11, maps_invalid_parameters=False,
           names_uuids=True, event_resources=False, job_completed=False),
    Server("4.15", _ALREADY_ON, _NOTHING_RETURNS_FALSE, maps_invalid_parameters=True,
           names_uuids=True, event_resources=False, job_completed=True),
    Server("4.19", _ALREADY_ON, _NOTHING_RETURNS_FALSE, maps_invalid_parameters=True,
           names_uuids=True, event_resources=True, job_completed=True),
)}
#: Server versions whose answers the simulator reproduces, oldest first.
CLOUDSTACK_VERSIONS = tuple(SERVERS)
