"""The API commands, one function each, registered by their case-sensitive API name in COMMANDS.
Each takes the cloud, the lowercased command name and the parameters (names lowercased, as
ParamUnpackWorker does) and returns the inner answer, or raises ApiError."""

from __future__ import annotations

import re
import time
from typing import Any, Callable

from . import views
from .params import (
    ApiError,
    is_true,
    known,
    missing_parameter,
    page,
    parse_date,
    required,
    tag_filter,
    tag_pairs,
)
from .records import HIDDEN_STATES, Tag, TagRequest, new_id
from .state import Cloud
from .tags import matches_any

__all__ = ["COMMANDS", "TEMPLATE_FILTERS", "Command"]

TEMPLATE_FILTERS = ("featured", "self", "selfexecutable", "sharedexecutable", "executable",
                    "community", "all")
_FEATURED_FILTERS = frozenset({"featured", "executable", "all"})
_OWN_FILTERS = frozenset({"self", "selfexecutable", "executable", "all"})
_HOSTNAME = re.compile(r"[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_DEPLOY_PARAMS = frozenset({"command", "response", "signatureversion", "expires", "zoneid",
                            "serviceofferingid", "templateid", "name", "displayname", "group"})

_TAG_FIELDS: dict[str, Callable[[Tag], str]] = {
    "resourcetype": lambda tag: tag.resource_type, "resourceid": lambda tag: tag.resource_id,
    "key": lambda tag: tag.key, "value": lambda tag: tag.value}

Command = Callable[[Cloud, str, dict[str, str]], dict[str, Any]]


def _page(cloud: Cloud, command: str, params: dict[str, str], items: list[dict],
          key: str) -> dict[str, Any]:
    return page(command, params, items, key, cloud.page_size)


def list_zones(cloud: Cloud, command: str, params: dict[str, str]) -> dict[str, Any]:
    if "id" in params:
        known(command, "id", params["id"], {cloud.zone_id})
    items = [views.zone_json(cloud)] if params.get("name", views.ZONE_NAME) == views.ZONE_NAME \
        else []
    return _page(cloud, command, params, items, "zone")


def list_service_offerings(cloud: Cloud, command: str, params: dict[str, str]) -> dict[str, Any]:
    if "id" in params:
        known(command, "id", params["id"], {cloud.offering_id})
    offering = views.offering_json(cloud)
    items = [offering] if params.get("name", offering["name"]) == offering["name"] else []
    return _page(cloud, command, params, items, "serviceoffering")


def list_templates(cloud: Cloud, command: str, params: dict[str, str]) -> dict[str, Any]:
    flt = required(command, params, "templatefilter")
    if flt not in TEMPLATE_FILTERS:
        raise ApiError(431, "No enum constant "
                            f"com.cloud.template.VirtualMachineTemplate.TemplateFilter.{flt}")
    for name, choices in (("id", cloud.templates), ("zoneid", {cloud.zone_id})):
        if name in params:
            known(command, name, params[name], choices)
    items = [views.template_json(cloud, template) for template in cloud.templates.values()
             if flt in (_FEATURED_FILTERS if template.featured else _OWN_FILTERS)
             and params.get("id", template.id) == template.id]
    return _page(cloud, command, params, items, "template")


def list_lb_rules(cloud: Cloud, command: str, params: dict[str, str]) -> dict[str, Any]:
    if "id" in params:
        known(command, "id", params["id"], cloud.rules)
    pairs = tag_filter(params)
    vm_id = params.get("virtualmachineid")  # the rules this VM is assigned to
    items = [views.rule_json(cloud, rule) for rule in cloud.rules.values()
             if params.get("id", rule.id) == rule.id and params.get("name", rule.name) == rule.name
             and (vm_id is None or vm_id in rule.members)
             and (not pairs or matches_any(cloud.tags_of(rule.id), pairs))]
    return _page(cloud, command, params, items, "loadbalancerrule")


def list_lb_instances(cloud: Cloud, command: str, params: dict[str, str]) -> dict[str, Any]:
    """Not paginated: every member, count == len(items) (CLOUDSTACK-API.md section 3)."""
    rule_id = known(command, "id", required(command, params, "id"), cloud.rules)
    if not is_true(params.get("applied"), True):
        return {}
    states = cloud.rules[rule_id].service_states
    members = [views.vm_json(cloud, vm, states.get(vm.id))
               for vm in cloud.visible_members(rule_id)]
    if not members:
        return {}
    if is_true(params.get("lbvmips"), False):
        items = [{"loadbalancerruleinstance": vm, "lbvmipaddresses": [vm["nic"][0]["ipaddress"]]}
                 for vm in members]
        return {"count": len(items), "lbrulevmidip": items}
    return {"count": len(members), "loadbalancerruleinstance": members}


def list_vms(cloud: Cloud, command: str, params: dict[str, str]) -> dict[str, Any]:
    vms = cloud.listed_vms()
    if "id" in params:
        wanted = known(command, "id", params["id"], cloud.vms)
        vms = [vm for vm in vms if vm.id == wanted]
    if "ids" in params:
        ids = {known(command, "ids", one, cloud.vms) for one in params["ids"].split(",") if one}
        vms = [vm for vm in vms if vm.id in ids]
    if "name" in params:  # a LIKE %name% match, as QueryManagerImpl does
        vms = [vm for vm in vms if params["name"].lower() in vm.name.lower()]
    state = params.get("state", "")
    if state and state.lower() != "present":
        vms = [vm for vm in vms if vm.state.lower() == state.lower()]
    for name, choices in (("zoneid", {cloud.zone_id}), ("serviceofferingid", {cloud.offering_id})):
        if name in params:
            known(command, name, params[name], choices)
    if "templateid" in params:
        template_id = known(command, "templateid", params["templateid"], cloud.templates)
        vms = [vm for vm in vms if vm.template_id == template_id]
    if "groupid" in params:
        groupid = known(command, "groupid", params["groupid"], set(cloud.groups.values()))
        vms = [vm for vm in vms if vm.groupid == groupid]
    if params.get("keyword"):
        word = params["keyword"].lower()
        vms = [vm for vm in vms
               if any(word in text.lower() for text in (vm.name, vm.displayname, vm.state))]
    pairs = tag_filter(params)
    if pairs:
        vms = [vm for vm in vms if matches_any(cloud.tags_of(vm.id), pairs)]
    return _page(cloud, command, params, [views.vm_json(cloud, vm) for vm in vms],
                 "virtualmachine")


def list_events(cloud: Cloud, command: str, params: dict[str, str]) -> dict[str, Any]:
    events = sorted(cloud.events, key=lambda e: (int(e.time), e.seq), reverse=True)
    if params.get("type"):
        events = [e for e in events if e.type.lower() == params["type"].lower()]
    if params.get("startdate"):
        start = parse_date(command, params["startdate"], cloud.tz)
        events = [e for e in events if int(e.time) >= start]
    if params.get("enddate"):
        end = parse_date(command, params["enddate"], cloud.tz)
        events = [e for e in events if int(e.time) <= end]
    if params.get("level"):
        events = [e for e in events if e.level.lower() == params["level"].lower()]
    if params.get("keyword"):  # LIKE %keyword% over type, description and level
        word = params["keyword"].lower()
        events = [e for e in events
                  if any(word in text.lower() for text in (e.type, e.description, e.level))]
    return _page(cloud, command, params, [views.event_json(cloud, e) for e in events], "event")


def _check_hostname(cloud: Cloud, name: str) -> None:
    if not _HOSTNAME.fullmatch(name):
        raise ApiError(431, "Invalid name. Vm name can contain ASCII letters 'a' through 'z', "
                            "the digits '0' through '9', and the hyphen ('-'), must be between 1 "
                            "and 63 characters long, and can't start or end with \"-\" and can't "
                            "start with digit", 4350)
    if any(vm.name.lower() == name.lower() for vm in cloud.listed_vms()):
        raise ApiError(431, f"The vm with hostName {name} already exists in the network domain: "
                            "cs2cloud.internal; network=sim-network", 4350)


def deploy_vm(cloud: Cloud, command: str, params: dict[str, str]) -> dict[str, Any]:
    for name, choices in (("zoneid", {cloud.zone_id}), ("serviceofferingid", {cloud.offering_id}),
                          ("templateid", cloud.templates)):
        known(command, name, required(command, params, name), choices)
    for network in params.get("networkids", "").split(","):  # a list of UUIDs, each translated
        if network:
            known(command, "networkids", network, {cloud.network_id})
    name = params.get("name") or None
    if name is not None:
        _check_hostname(cloud, name)
    ip = cloud.addresses.allocate()
    if ip is None:
        raise ApiError(533, "Insufficient address capacity: no free guest IP address in "
                            "network sim-network")
    vm = cloud.new_vm(name=name, displayname=params.get("displayname") or None,
                      state="Stopped", ip=ip, group=params.get("group") or None,
                      created=cloud.stamp(time.time()), template_id=params["templateid"],
                      extra={k: v for k, v in params.items() if k not in _DEPLOY_PARAMS})
    job = cloud.new_job(command, vm=vm, start=is_true(params.get("startvm"), True))
    return {"id": vm.id, "jobid": job.id}


def destroy_vm(cloud: Cloud, command: str, params: dict[str, str]) -> dict[str, Any]:
    vm = cloud.vms[known(command, "id", required(command, params, "id"), cloud.vms)]
    if vm.removed:
        raise ApiError(431, f"Unable to find a virtual machine with specified vmId {vm.id}", 4350)
    job = cloud.new_job(command, vm=vm, expunge=is_true(params.get("expunge"), False))
    if vm.state == "Running":
        vm.state = "Stopping"
    return {"jobid": job.id}


def update_vm(cloud: Cloud, command: str, params: dict[str, str]) -> dict[str, Any]:
    """Synchronous, as UpdateVMCmd: the answer is the VM. `group` moves it into that instance
    group (created for the account if new; a VM is in one group at most), `displayname`
    renames it; a VM in Error or Expunging is refused (UserVmManagerImpl)."""
    vm = cloud.vms[known(command, "id", required(command, params, "id"), cloud.vms)]
    if vm.removed:
        raise ApiError(431, f"unable to find virtual machine with id: {vm.seq}", 4350)
    if vm.state in ("Error", "Expunging"):
        raise ApiError(431, f"Vm with id {vm.seq} is not in the right state", 4350)
    if params.get("group"):
        vm.group = params["group"]
        vm.groupid = cloud.groups.setdefault(vm.group, new_id())
    if params.get("displayname"):
        vm.displayname = params["displayname"]
    return {"virtualmachine": views.vm_json(cloud, vm)}


def change_lb_members(cloud: Cloud, command: str, params: dict[str, str]) -> dict[str, Any]:
    """assignToLoadBalancerRule and removeFromLoadBalancerRule."""
    rule_id = known(command, "id", required(command, params, "id"), cloud.rules)
    vm_ids = [one for one in params.get("virtualmachineids", "").split(",") if one]
    vm_ids += [value for name, value in sorted(params.items())
               if re.fullmatch(r"vmidipmap\[\d+\]\.vmid", name)]
    if not vm_ids:
        raise missing_parameter(command, "virtualmachineids")
    live = {vm.id for vm in cloud.vms.values() if not vm.removed}
    for one in vm_ids:
        known(command, "virtualmachineids", one, live)
        if command == "assigntoloadbalancerrule" and cloud.vms[one].state in HIDDEN_STATES:
            raise ApiError(431, f"Unable to execute API command {command}: VM {one} is "
                                f"{cloud.vms[one].state}", 4350)
    job = cloud.new_job(command, rule_id=rule_id, vm_ids=list(dict.fromkeys(vm_ids)))
    return {"jobid": job.id}


def _tag_request(command: str, params: dict[str, str], *, tags_required: bool) -> TagRequest:
    pairs = tag_pairs(params)
    if tags_required and not pairs:
        raise missing_parameter(command, "tags")
    return TagRequest(required(command, params, "resourcetype"),
                      [one for one in required(command, params, "resourceids").split(",") if one],
                      pairs)


def create_tags(cloud: Cloud, command: str, params: dict[str, str]) -> dict[str, Any]:
    """Async: the tags are checked and created when the job runs (see tags.create_tags)."""
    job = cloud.new_job(command, tag_request=_tag_request(command, params, tags_required=True))
    return {"jobid": job.id}


def delete_tags(cloud: Cloud, command: str, params: dict[str, str]) -> dict[str, Any]:
    """Async: without tags[n] every tag of the resources goes (see tags.delete_tags)."""
    job = cloud.new_job(command, tag_request=_tag_request(command, params, tags_required=False))
    return {"jobid": job.id}


def list_tags(cloud: Cloud, command: str, params: dict[str, str]) -> dict[str, Any]:
    """Filters compare case-insensitively, as the database's collation does."""
    wanted = {name: params[name].lower() for name in _TAG_FIELDS if params.get(name)}
    items = [views.tag_json(cloud, tag) for tag in cloud.tags
             if all(_TAG_FIELDS[name](tag).lower() == value for name, value in wanted.items())]
    return _page(cloud, command, params, items, "tag")


def list_networks(cloud: Cloud, command: str, params: dict[str, str]) -> dict[str, Any]:
    """The account's one guest network (the one its VMs' NICs and the LB rules are in)."""
    for name, choices in (("id", {cloud.network_id}), ("zoneid", {cloud.zone_id})):
        if name in params:
            known(command, name, params[name], choices)
    return _page(cloud, command, params, [views.network_json(cloud)], "network")


def list_apis(cloud: Cloud, command: str, params: dict[str, str]) -> dict[str, Any]:
    """The API discovery plugin (ListApisCmd, ApiDiscoveryServiceImpl): the commands this
    account may call, or the one named; an unknown or refused name is a 530. Not a list
    command: no paging, count is the number of items."""
    allowed = [name for name in COMMANDS if name not in cloud.denied]
    if "name" in params:
        if params["name"] not in allowed:
            raise ApiError(530, "Api Discovery plugin was unable to find an api by that name "
                                "or process any apis")
        allowed = [params["name"]]
    items = [views.api_json(name, name.lower() in views.JOB_CLASSES) for name in allowed]
    return {"count": len(items), "api": items}


def query_job(cloud: Cloud, command: str, params: dict[str, str]) -> dict[str, Any]:
    job_id = known(command, "jobid", required(command, params, "jobid"), cloud.jobs)
    return views.job_json(cloud, cloud.jobs[job_id])


COMMANDS: dict[str, Command] = {
    "listZones": list_zones,
    "listServiceOfferings": list_service_offerings,
    "listTemplates": list_templates,
    "listLoadBalancerRules": list_lb_rules,
    "listLoadBalancerRuleInstances": list_lb_instances,
    "listVirtualMachines": list_vms,
    "listEvents": list_events,
    "deployVirtualMachine": deploy_vm,
    "destroyVirtualMachine": destroy_vm,
    "updateVirtualMachine": update_vm,
    "assignToLoadBalancerRule": change_lb_members,
    "removeFromLoadBalancerRule": change_lb_members,
    "queryAsyncJobResult": query_job,
    "createTags": create_tags,
    "deleteTags": delete_tags,
    "listTags": list_tags,
    "listNetworks": list_networks,
    "listApis": list_apis,
}
