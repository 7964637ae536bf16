"""The JSON the API shows for the cloud's objects, field by field in the server's order
(ApiResponseSerializer: nulls omitted, dates as yyyy-MM-dd'T'HH:mm:ssZ)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Optional

from .records import Event, Job, Rule, Tag, Template, Vm, World

__all__ = ["JOB_CLASSES", "NETWORK_NAME", "ZONE_NAME", "api_json", "event_json", "format_time",
           "job_json", "network_json", "offering_json", "rule_json", "tag_json", "template_json",
           "vm_json", "zone_json"]

ZONE_NAME = "jp-east-t1v"
NETWORK_NAME = "sim-network"
JOB_CLASSES = {
    "deployvirtualmachine": "org.apache.cloudstack.api.command.user.vm.DeployVMCmd",
    "destroyvirtualmachine": "org.apache.cloudstack.api.command.user.vm.DestroyVMCmd",
    "assigntoloadbalancerrule":
        "org.apache.cloudstack.api.command.user.loadbalancer.AssignToLoadBalancerRuleCmd",
    "removefromloadbalancerrule":
        "org.apache.cloudstack.api.command.user.loadbalancer.RemoveFromLoadBalancerRuleCmd",
    "createtags": "org.apache.cloudstack.api.command.user.tag.CreateTagsCmd",
    "deletetags": "org.apache.cloudstack.api.command.user.tag.DeleteTagsCmd",
}
_OFFERING = {"name": "S2", "displaytext": "S2 (1 vCPU, 2 GB RAM)", "cpunumber": 1,
             "cpuspeed": 2400, "memory": 2048}


def format_time(when: float, tz: timezone) -> str:
    """A timestamp as the API shows dates, e.g. 2024-05-10T17:27:52+0900."""
    return datetime.fromtimestamp(when, tz).strftime("%Y-%m-%dT%H:%M:%S%z")


def zone_json(cloud: World) -> dict[str, Any]:
    """The zone."""
    return {
        "id": cloud.zone_id, "name": ZONE_NAME, "dns1": "8.8.8.8",
        "internaldns1": "127.0.0.53", "networktype": "Advanced",
        "securitygroupsenabled": False, "allocationstate": "Enabled",
        "zonetoken": cloud.zone_token, "dhcpprovider": "VirtualRouter",
        "localstorageenabled": False, "tags": [],
    }


def offering_json(cloud: World) -> dict[str, Any]:
    """The service offering."""
    return {
        "id": cloud.offering_id, **_OFFERING, "created": format_time(cloud.created, cloud.tz),
        "storagetype": "shared", "offerha": False, "limitcpuuse": False,
        "isvolatile": False, "issystem": False, "defaultuse": False, "iscustomized": False,
    }


def template_json(cloud: World, template: Template) -> dict[str, Any]:
    """A template: the featured one is public and BUILTIN, the account's own one is USER."""
    return {
        "id": template.id, "name": template.name, "displaytext": template.name,
        "ispublic": template.featured, "created": format_time(cloud.created, cloud.tz),
        "isready": True, "passwordenabled": False, "format": "QCOW2",
        "isfeatured": template.featured, "crossZones": False, "ostypeid": cloud.ostype_id,
        "ostypename": "CentOS 7", "account": template.account, "zoneid": cloud.zone_id,
        "zonename": ZONE_NAME, "status": "Download Complete", "size": 16106127360,
        "templatetype": "BUILTIN" if template.featured else "USER", "hypervisor": "KVM",
        "domain": "ROOT", "domainid": cloud.domain_id, "isextractable": False, "tags": [],
    }


def rule_json(cloud: World, rule: Rule) -> dict[str, Any]:
    """A load-balancer rule."""
    return {
        "id": rule.id, "name": rule.name, "publicipid": rule.publicipid,
        "publicip": rule.publicip, "publicport": "80", "privateport": "80",
        "algorithm": "roundrobin", "networkid": cloud.network_id, "account": "sim",
        "domainid": cloud.domain_id, "domain": "ROOT", "state": "Active",
        "zoneid": cloud.zone_id, "zonename": ZONE_NAME, "protocol": "tcp",
        "tags": [tag_json(cloud, tag) for tag in cloud.tags_of(rule.id)],
    }


def network_json(cloud: World) -> dict[str, Any]:
    """The account's isolated guest network (NetworkResponse, the fields a user sees)."""
    return {
        "id": cloud.network_id, "name": NETWORK_NAME, "displaytext": NETWORK_NAME,
        "broadcastdomaintype": "Vlan", "traffictype": "Guest", "gateway": "127.0.0.1",
        "netmask": "255.0.0.0", "cidr": "127.0.0.0/8", "zoneid": cloud.zone_id,
        "zonename": ZONE_NAME,
        "networkofferingname": "DefaultIsolatedNetworkOfferingWithSourceNatService",
        "state": "Implemented", "type": "Isolated", "account": "sim",
        "domainid": cloud.domain_id, "domain": "ROOT", "canusefordeploy": True, "tags": [],
    }


def api_json(name: str, is_async: bool) -> dict[str, Any]:
    """One API as listApis shows it (ApiDiscoveryResponse: name, isasync and its parameter and
    response sets, always present; the simulator keeps no descriptions)."""
    return {"name": name, "isasync": is_async, "params": [], "response": []}


def tag_json(cloud: World, tag: Tag) -> dict[str, Any]:
    """A resource tag (ResourceTagJoinDaoImpl.newResourceTagResponse; customer is null)."""
    return {"key": tag.key, "value": tag.value, "resourcetype": tag.resource_type,
            "resourceid": tag.resource_id, "account": "sim", "domainid": cloud.domain_id,
            "domain": "ROOT"}


def vm_json(cloud: World, vm: Vm, service_state: Optional[str] = None) -> dict[str, Any]:
    """A VM as listVirtualMachines shows it (with its pending job, if any); an LB rule's
    instance list adds the member's service state, when there is one."""
    template = cloud.templates[vm.template_id]
    out: dict[str, Any] = {
        "id": vm.id, "name": vm.name, "displayname": vm.displayname, "account": "sim",
        "userid": cloud.user_id, "username": "sim", "domainid": cloud.domain_id,
        "domain": "ROOT", "created": format_time(vm.created, cloud.tz), "state": vm.state,
        "haenable": False,
    }
    if vm.group is not None:
        out["groupid"], out["group"] = vm.groupid, vm.group
    out.update({
        "zoneid": cloud.zone_id, "zonename": ZONE_NAME,
        "templateid": template.id, "templatename": template.name,
        "templatedisplaytext": template.name, "passwordenabled": False,
        "serviceofferingid": cloud.offering_id, "serviceofferingname": _OFFERING["name"],
        "cpunumber": _OFFERING["cpunumber"], "cpuspeed": _OFFERING["cpuspeed"],
        "memory": _OFFERING["memory"], "guestosid": cloud.ostype_id,
        "rootdeviceid": 0, "rootdevicetype": "ROOT", "securitygroup": [],
        "nic": [{
            "id": vm.nic_id, "networkid": cloud.network_id, "networkname": NETWORK_NAME,
            "netmask": "255.0.0.0", "gateway": "127.0.0.1", "ipaddress": vm.ip,
            "traffictype": "Guest", "type": "Isolated", "isdefault": True,
            "macaddress": "02:00:" + ":".join(f"{b:02x}" for b in vm.seq.to_bytes(4, "big")),
            "secondaryip": [], "extradhcpoption": [],
        }],
        "hypervisor": "KVM", "affinitygroup": [], "isdynamicallyscalable": False,
        "ostypeid": cloud.ostype_id,
        "tags": [tag_json(cloud, tag) for tag in cloud.tags_of(vm.id)],
    })
    if vm.extra.get("keypair"):
        out["keypair"] = vm.extra["keypair"]
    if cloud.admin:
        out["instancename"] = vm.instancename
    if service_state is not None:
        out["servicestate"] = service_state
    if vm.job_id is not None:
        out["jobid"], out["jobstatus"] = vm.job_id, 0
    return out


def event_json(cloud: World, event: Event) -> dict[str, Any]:
    """An event as listEvents shows it (EventResponse); resourceid/resourcetype since 4.17."""
    out: dict[str, Any] = {
        "id": event.id, "username": "sim", "type": event.type, "level": event.level,
        "description": event.description, "account": "sim", "domainid": cloud.domain_id,
        "domain": "ROOT",
    }
    if cloud.server.event_resources and event.resource_id is not None:
        out["resourceid"], out["resourcetype"] = event.resource_id, event.resource_type
    out["created"], out["state"] = format_time(event.time, cloud.tz), event.state
    if event.parent_id is not None:
        out["parentid"] = event.parent_id
    return out


def job_json(cloud: World, job: Job) -> dict[str, Any]:
    """A job as queryAsyncJobResult shows it: result and completion (on servers that show it)
    only once finished."""
    out: dict[str, Any] = {
        "accountid": cloud.account_id, "userid": cloud.user_id,
        "cmd": JOB_CLASSES[job.command], "jobprocstatus": 0,
        "jobresultcode": job.result_code,
    }
    if job.status != 0:
        out["jobresulttype"], out["jobresult"] = "object", job.result
    if job.vm_id is not None:
        out["jobinstancetype"], out["jobinstanceid"] = "VirtualMachine", job.vm_id
    out["created"] = format_time(job.created, cloud.tz)
    if job.completed is not None and cloud.server.job_completed:
        out["completed"] = format_time(job.completed, cloud.tz)
    out["jobid"], out["jobstatus"] = job.id, job.status
    return out
