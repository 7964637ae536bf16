"""Tests for cloudstack_sim: real HTTP against a Simulator on loopback (the `sim` fixture is in
conftest.py)."""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

import cs
import pytest
import requests

from cloudstack_sim import (
    DEFAULT_API_KEY,
    DEFAULT_SECRET_KEY,
    Fault,
    Simulator,
    compute_signature,
    main,
    parse_expires,
    verify_request,
)

DOC_API_KEY = ("plgWJfZK4gyS3mOMTVmjUVg-X-jlWlnfaUJ9GAbBbf9EdM-kAYMmAiLqzzq1ElZLYq_u38zCm0bewzG"
               "UdP66mg")
DOC_SECRET = ("VDaACYb0LV9eNjTetIOElcVQkvJck_J_QljX_FcHRj87ZKiy0z0ty0ZsYBkoXkY9b7eq1EhwJaw7FF3"
              "akA3KBQ")
BAD_SIGNATURE = "unable to verify user credentials and/or request signature"
JST = timezone(timedelta(hours=9))
ROOT = Path(__file__).resolve().parent.parent


def java_encode(value: str) -> str:
    """Java URLEncoder semantics, written independently of the simulator: `~` is escaped too."""
    return quote(value, safe="*").replace("~", "%7E")


def sign(params: dict[str, str], secret: str,
         order: Callable[[str], Any] = lambda name: name,
         encode: Callable[[str], str] = java_encode) -> str:
    text = "&".join(f"{k}={encode(params[k])}" for k in sorted(params, key=order))
    digest = hmac.new(secret.encode(), text.lower().encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def request(sim: Simulator, command: str, *, method: str = "GET", secret: str | None = None,
            timeout: float = 5, signed: bool = True, **params: str) -> requests.Response:
    data = {"command": command, "response": "json", "apiKey": sim.api_key, **params}
    if signed:
        data["signature"] = sign(data, secret or sim.secret_key)
    if method == "POST":
        return requests.post(sim.url, data=data, timeout=timeout)
    return requests.get(sim.url, params=data, timeout=timeout)


def ok(sim: Simulator, command: str, **params: str) -> dict[str, Any]:
    """The inner answer of a successful call."""
    response = request(sim, command, **params)
    assert response.status_code == 200, response.text
    return response.json()[f"{command.lower()}response"]


def deploy(sim: Simulator, **params: str) -> dict[str, Any]:
    return ok(sim, "deployVirtualMachine", **{"zoneid": sim.zone_id,
              "serviceofferingid": sim.offering_id, "templateid": sim.template_id, **params})


def job(sim: Simulator, jobid: str) -> dict[str, Any]:
    return ok(sim, "queryAsyncJobResult", jobid=jobid)


def before(sim: Simulator, version: str) -> bool:
    """Whether the simulator speaks as a server older than version (e.g. "4.17")."""
    def number(text: str) -> tuple[int, ...]:
        return tuple(int(part) for part in text.split("."))
    return number(sim.cloudstack) < number(version)


def deploy_given_up(sim: Simulator, kind: str, delay: float, timeout: float) -> None:
    """A deploy under a slow fault whose client gives up (read timeout) before the answer."""
    sim.inject(Fault(kind, "deployVirtualMachine", delay=delay))
    with pytest.raises(requests.exceptions.ReadTimeout):
        request(sim, "deployVirtualMachine", zoneid=sim.zone_id, serviceofferingid=sim.offering_id,
                templateid=sim.template_id, timeout=timeout)


def wait_answered(sim: Simulator, command: str, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not all(c.status for c in sim.calls_of(command)):
        assert time.monotonic() < deadline, f"{command} never answered"
        time.sleep(0.01)


# ----------------------------------------------------------------- signing, pure


def test_compute_signature_docs_vector() -> None:
    params = {"command": "listUsers", "response": "json", "apikey": DOC_API_KEY}
    assert compute_signature(params, DOC_SECRET) == "TTpdDq/7j/J58XCRHomKoQXEQds="
    assert verify_request({**params, "signature": "TTpdDq/7j/J58XCRHomKoQXEQds="},
                          {DOC_API_KEY: DOC_SECRET}, datetime.now(timezone.utc))


def test_compute_signature_ignores_signature_in_any_case() -> None:
    params = {"command": "listZones", "apiKey": "k"}
    assert compute_signature({**params, "Signature": "x"}, "s") == compute_signature(params, "s")


@pytest.mark.parametrize("expires, valid", [
    ("2999-01-01T00:00:00+00:00", True),
    ("2999-01-01T00:00:00Z", True),
    ("2999-01-01T00:00+09:00", True),
    ("2999-01-01T00:00:00.123+01:00", True),
    ("2999-01-01T00:00:00+0000", True),
    ("2999-01-01T00:00:00.123456Z", True),
    ("2999-01-01T00:00:00.123456+0100", True),
    ("2999-01-01T00:00:00Z+0000", True),
    ("2000-01-01T00:00:00+0000", False),          # expired: no clock-skew allowance
    ("2999-01-01 00:00:00", False),
    ("2999-02-30T00:00:00+0000", False),
    ("tomorrow", False),
    ("", False),
])
def test_verify_request_v3_expires(expires: str, valid: bool) -> None:
    params = {"command": "listZones", "apiKey": "k", "signatureVersion": "3", "expires": expires}
    params["signature"] = sign(params, "s")
    assert verify_request(params, {"k": "s"}, datetime.now(timezone.utc)) is valid


def test_verify_request_rejects_missing_and_unknown_parts() -> None:
    now = datetime.now(timezone.utc)
    base = {"command": "listZones", "apiKey": "k"}
    assert not verify_request(base, {"k": "s"}, now)                       # no signature
    v3 = {**base, "signatureVersion": "3"}
    assert not verify_request({**v3, "signature": sign(v3, "s")}, {"k": "s"}, now)  # no expires
    signed = {**base, "signature": sign(base, "s")}
    assert verify_request(signed, {"k": "s"}, now)
    assert not verify_request(signed, {"other": "s"}, now)                 # unknown apiKey
    assert not verify_request(signed, {"k": "wrong"}, now)
    no_key = {"command": "listZones"}
    assert not verify_request({**no_key, "signature": sign(no_key, "s")}, {"k": "s"}, now)


def test_verify_request_ignores_expires_without_v3() -> None:
    params = {"command": "listZones", "apikey": "k", "signatureVersion": "2", "expires": "junk"}
    params["signature"] = sign(params, "s")
    assert verify_request(params, {"k": "s"}, datetime.now(timezone.utc))


def test_parse_expires_offset() -> None:
    parsed = parse_expires("2030-01-01T09:00:00+0900")
    assert parsed == datetime(2030, 1, 1, tzinfo=timezone.utc)


# ------------------------------------------------------------- signing over HTTP


def test_http_cs_client_is_accepted(sim: Simulator) -> None:
    sim.add_vm("web1")
    for method in ("get", "post"):
        client = cs.CloudStack(endpoint=sim.url, key=sim.api_key, secret=sim.secret_key,
                               method=method, poll_interval=0.02)
        assert client.listZones()["zone"][0]["id"] == sim.zone_id
        vms = client.listVirtualMachines(fetch_list=True)
        assert [vm["name"] for vm in vms] == ["web1"]
    result = client.deployVirtualMachine(zoneid=sim.zone_id, serviceofferingid=sim.offering_id,
                                         templateid=sim.template_id, fetch_result=True)
    assert result["virtualmachine"]["state"] == "Running"
    assert sim.calls_of("listZones")[0].params["command"] == "listZones"
    assert all("signature" not in c.params and "apiKey" not in c.params for c in sim.calls)


def test_http_bad_signature_is_401_without_cserrorcode(sim: Simulator) -> None:
    response = request(sim, "listZones", secret="wrong")
    assert response.status_code == 401
    assert response.headers["Content-Type"] == "application/json; charset=UTF-8"
    assert response.text == ('{"listzonesresponse":{"uuidList":[],"errorcode":401,'
                             f'"errortext":"{BAD_SIGNATURE}"}}}}')
    assert sim.calls[-1].status == 401


def test_http_missing_signature_is_401(sim: Simulator) -> None:
    response = request(sim, "listZones", signed=False)
    assert response.status_code == 401
    assert response.json()["listzonesresponse"]["errortext"] == BAD_SIGNATURE


def test_http_expired_v3_is_401(sim: Simulator) -> None:
    response = request(sim, "listZones", signatureVersion="3", expires="2020-01-01T00:00:00+0000")
    assert response.status_code == 401
    fresh = (datetime.now(timezone.utc) + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S%z")
    assert request(sim, "listZones", signatureVersion="3", expires=fresh).status_code == 200


def test_http_unknown_command_is_401_errorresponse(sim: Simulator) -> None:
    response = request(sim, "fooBar")
    assert response.status_code == 401
    assert response.json() == {"errorresponse": {"uuidList": [], "errorcode": 401,
                                                 "errortext": BAD_SIGNATURE}}


def test_http_signature_uses_java_encoding_and_case_sensitive_sort(sim: Simulator) -> None:
    tilde = {"command": "listVirtualMachines", "response": "json", "apiKey": sim.api_key,
             "keyword": "a~b c*d/e"}
    python_style = {**tilde, "signature": sign(tilde, sim.secret_key, encode=lambda v: quote(
        v, safe="*"))}
    assert requests.get(sim.url, params=python_style, timeout=5).status_code == 401
    assert request(sim, "listVirtualMachines", keyword="a~b c*d/e").status_code == 200

    # templateId < templatefilter when sorted case-sensitively ("I" < "f"), not when lowercased
    params = {"command": "listTemplates", "response": "json", "apiKey": sim.api_key,
              "templatefilter": "featured", "templateId": sim.template_id}
    lowered = {**params, "signature": sign(params, sim.secret_key, order=str.lower)}
    assert requests.get(sim.url, params=lowered, timeout=5).status_code == 401
    answer = ok(sim, "listTemplates", templatefilter="featured", templateId=sim.template_id)
    assert answer["count"] == 1


def test_http_post_body_merges_with_query(sim: Simulator) -> None:
    params = {"command": "listZones", "response": "json", "apiKey": sim.api_key,
              "name": "jp-east-t1v"}
    params["signature"] = sign(params, sim.secret_key)
    response = requests.post(sim.url, params={"command": "listZones", "response": "json"},
                             data={k: v for k, v in params.items()
                                   if k not in ("command", "response")}, timeout=5)
    assert response.status_code == 200
    assert response.json()["listzonesresponse"]["count"] == 1
    assert sim.calls[-1].method == "POST"


def test_http_without_response_json_is_not_json(sim: Simulator) -> None:
    params = {"command": "listZones", "apiKey": sim.api_key}
    params["signature"] = sign(params, sim.secret_key)
    response = requests.get(sim.url, params=params, timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/xml")
    assert response.text.startswith("<?xml")


def test_http_other_path_is_404(sim: Simulator) -> None:
    response = requests.get(sim.url.replace("/client/api", "/client/other"), timeout=5)
    assert response.status_code == 404
    assert sim.calls[-1].status == 404


# ------------------------------------------------------------ errors, listing


def test_http_missing_parameter_is_431(sim: Simulator) -> None:
    response = request(sim, "deployVirtualMachine", zoneid=sim.zone_id)
    assert response.status_code == 431
    assert response.json() == {"deployvirtualmachineresponse": {
        "uuidList": [], "errorcode": 431, "cserrorcode": 9999,
        "errortext": "Unable to execute API command deployvirtualmachine due to missing "
                     "parameter serviceofferingid"}}
    assert "missing parameter serviceofferingid" in response.headers["X-Description"]


@pytest.mark.parametrize("command, params, name", [
    ("listLoadBalancerRuleInstances", {"id": "nope"}, "id"),
    ("queryAsyncJobResult", {"jobid": "0b0e1d39-0000-4000-8000-000000000000"}, "jobid"),
    ("listVirtualMachines", {"zoneid": "nope"}, "zoneid"),
    ("deployVirtualMachine", {"zoneid": "nope", "serviceofferingid": "x", "templateid": "y"},
     "zoneid"),
    ("destroyVirtualMachine", {"id": "nope"}, "id"),
    ("assignToLoadBalancerRule", {"id": "LB", "virtualmachineids": "nope"}, "virtualmachineids"),
    ("deployVirtualMachine", {"zoneid": "ZONE", "serviceofferingid": "OFFERING",
                              "templateid": "TEMPLATE", "networkids": "nope"}, "networkids"),
    ("listNetworks", {"id": "nope"}, "id"),
])
def test_http_unknown_uuid_is_431(sim: Simulator, command: str, params: dict[str, str],
                                  name: str) -> None:
    ids = {"LB": sim.lb_id, "ZONE": sim.zone_id, "OFFERING": sim.offering_id,
           "TEMPLATE": sim.template_id}
    response = request(sim, command, **{k: ids.get(v, v) for k, v in params.items()})
    assert response.status_code == 431
    error = response.json()[f"{command.lower()}response"]
    assert error["errortext"].startswith(f"Unable to execute API command {command.lower()} due "
                                         f"to invalid value. Invalid parameter {name} value=")


def test_list_networks_shows_the_network_of_the_vms_and_the_rule(sim: Simulator) -> None:
    vm = sim.add_vm("web1")
    (network,) = ok(sim, "listNetworks", zoneid=sim.zone_id)["network"]
    assert network["id"] == sim.network_id == vm["nic"][0]["networkid"]
    assert network["zoneid"] == sim.zone_id and network["state"] == "Implemented"
    rule = ok(sim, "listLoadBalancerRules", id=sim.lb_id)["loadbalancerrule"][0]
    assert rule["networkid"] == sim.network_id
    assert deploy(sim, networkids=sim.network_id)["jobid"]


def test_list_apis_names_every_command_the_account_may_call(sim: Simulator) -> None:
    answer = ok(sim, "listApis")
    names = {api["name"]: api["isasync"] for api in answer["api"]}
    assert answer["count"] == len(names)
    assert names["deployVirtualMachine"] is True and names["listZones"] is False
    assert {"createTags", "deleteTags", "listApis", "queryAsyncJobResult"} <= set(names)
    assert ok(sim, "listApis", name="listZones")["api"] == [
        {"name": "listZones", "isasync": False, "params": [], "response": []}]


def test_denied_commands_are_401_and_left_out_of_list_apis(sim: Simulator) -> None:
    sim.deny("createTags", "listZones")
    names = {api["name"] for api in ok(sim, "listApis")["api"]}
    assert "createTags" not in names and "listZones" not in names and "deleteTags" in names
    response = request(sim, "listZones")
    assert response.status_code == 401
    assert response.json() == {"listzonesresponse": {
        "uuidList": [], "errorcode": 401,
        "errortext": "The given command 'listZones' either does not exist, is not available "
                     "for user."}}
    # the plugin answers a name it cannot give (unknown, or refused) with an internal error
    for name in ("createTags", "noSuchApi"):
        response = request(sim, "listApis", name=name)
        assert response.status_code == 530
        assert "unable to find an api by that name" in response.json()["listapisresponse"][
            "errortext"]


def test_http_list_templates_validates_filter(sim: Simulator) -> None:
    assert request(sim, "listTemplates").status_code == 431
    response = request(sim, "listTemplates", templatefilter="Featured")
    assert response.status_code == 431
    assert "No enum constant" in response.json()["listtemplatesresponse"]["errortext"]
    assert ok(sim, "listTemplates", templatefilter="executable")["template"][0]["name"] == \
        "CentOS 7"
    assert ok(sim, "listTemplates", templatefilter="sharedexecutable") == {}


@pytest.mark.parametrize("templatefilter, names", [
    ("featured", ["CentOS 7"]),
    ("self", ["web-base"]),
    ("selfexecutable", ["web-base"]),
    ("executable", ["CentOS 7", "web-base"]),
    ("all", ["CentOS 7", "web-base"]),
    ("community", []),
    ("sharedexecutable", []),
])
def test_http_list_templates_own_and_featured(sim: Simulator, templatefilter: str,
                                              names: list[str]) -> None:
    answer = ok(sim, "listTemplates", templatefilter=templatefilter)
    assert [t["name"] for t in answer.get("template", [])] == names
    ids = {t["name"]: t["id"] for t in answer.get("template", [])}
    assert ids.get("CentOS 7", sim.template_id) == sim.template_id
    assert ids.get("web-base", sim.own_template_id) == sim.own_template_id


def test_deploy_from_the_own_template(sim: Simulator) -> None:
    own = ok(sim, "listTemplates", templatefilter="self")["template"][0]
    assert (own["isfeatured"], own["ispublic"], own["account"]) == (False, False, "sim")
    answer = deploy(sim, templateid=own["id"])
    sim.settle()
    vm = job(sim, answer["jobid"])["jobresult"]["virtualmachine"]
    assert (vm["templateid"], vm["templatename"]) == (own["id"], "web-base")
    sim.add_vm("web1")
    assert [v["name"] for v in ok(sim, "listVirtualMachines", templateid=own["id"])[
        "virtualmachine"]] == [vm["name"]]


def test_http_seeded_objects(sim: Simulator) -> None:
    assert ok(sim, "listZones")["zone"][0]["name"] == "jp-east-t1v"
    offering = ok(sim, "listServiceOfferings")["serviceoffering"][0]
    assert (offering["id"], offering["name"], offering["cpunumber"]) == (sim.offering_id, "S2", 1)
    rule = ok(sim, "listLoadBalancerRules", id=sim.lb_id)["loadbalancerrule"][0]
    assert (rule["name"], rule["publicip"], rule["publicport"]) == ("web", "203.0.113.10", "80")
    other = sim.add_lb_rule("api")
    assert ok(sim, "listLoadBalancerRules")["count"] == 2
    assert ok(sim, "listLoadBalancerRuleInstances", id=other) == {}


def test_seeded_vm_joins_the_rule_it_names(sim: Simulator) -> None:
    other = sim.add_lb_rule("api")
    sim.add_vm("api1", lb_id=other)
    sim.add_vm("web1")
    members = ok(sim, "listLoadBalancerRuleInstances", id=other)["loadbalancerruleinstance"]
    assert [vm["name"] for vm in members] == ["api1"]
    assert [vm["name"] for vm in sim.lb_members()] == ["web1"]
    with pytest.raises(KeyError):
        sim.add_vm("lost", lb_id="no-such-rule")


def test_http_empty_list_is_empty_object(sim: Simulator) -> None:
    response = request(sim, "listVirtualMachines")
    assert response.text == '{"listvirtualmachinesresponse":{}}'


def test_http_pagination(sim: Simulator) -> None:
    for n in range(7):
        sim.add_vm(f"web{n}")
    first = ok(sim, "listVirtualMachines", page="1", pagesize="3")
    assert first["count"] == 7
    assert [vm["name"] for vm in first["virtualmachine"]] == ["web0", "web1", "web2"]
    assert [vm["name"] for vm in ok(sim, "listVirtualMachines", page="3",
                                    pagesize="3")["virtualmachine"]] == ["web6"]
    assert ok(sim, "listVirtualMachines", page="4", pagesize="3") == {"count": 7}
    assert len(ok(sim, "listVirtualMachines", pagesize="-1")["virtualmachine"]) == 7
    assert request(sim, "listVirtualMachines", page="1").status_code == 431
    assert request(sim, "listVirtualMachines", pagesize="3").status_code == 431
    assert request(sim, "listVirtualMachines", page="x", pagesize="3").status_code == 431
    too_big = request(sim, "listVirtualMachines", page="1", pagesize="501")
    assert too_big.status_code == 431
    assert too_big.json()["listvirtualmachinesresponse"]["cserrorcode"] == 4350


def test_http_list_defaults_to_500() -> None:
    with Simulator(ip_addresses=[f"127.0.{n // 250 + 2}.{n % 250 + 1}" for n in range(502)]) as big:
        for n in range(502):
            big.add_vm(f"vm{n}", in_lb=False)
        answer = ok(big, "listVirtualMachines")
        assert (answer["count"], len(answer["virtualmachine"])) == (502, 500)


def test_http_list_vms_filters(sim: Simulator) -> None:
    web1 = sim.add_vm("web1", group="asg")
    web10 = sim.add_vm("web10", state="Stopped")
    sim.add_vm("db1", displayname="database")

    def names(**params: str) -> list[str]:
        return [vm["name"] for vm in ok(sim, "listVirtualMachines", **params).get(
            "virtualmachine", [])]

    assert names(name="web1") == ["web1", "web10"]        # LIKE %name%, as the server does
    assert names(id=web10["id"]) == ["web10"]
    assert names(ids=f"{web1['id']},{web10['id']}") == ["web1", "web10"]
    assert names(state="Stopped") == ["web10"]
    assert names(state="present") == ["web1", "web10", "db1"]
    assert names(groupid=web1["groupid"]) == ["web1"]
    assert names(keyword="datab") == ["db1"]
    assert names(zoneid=sim.zone_id) == ["web1", "web10", "db1"]
    assert web1["group"] == "asg" and "group" not in web10


# ------------------------------------------------------------------ jobs, VMs


def test_deploy_job_pending_then_running_and_in_no_lb(sim: Simulator) -> None:
    sim.job_seconds = 0.2
    answer = deploy(sim, name="web2", group="asg", keypair="key1", displayname="Web 2")
    assert set(answer) == {"id", "jobid"}
    pending = job(sim, answer["jobid"])
    assert pending["jobstatus"] == 0 and "jobresult" not in pending
    assert pending["jobinstanceid"] == answer["id"]
    listed = ok(sim, "listVirtualMachines", id=answer["id"])["virtualmachine"][0]
    # a deploy lists Stopped, then Starting, then Running (CLOUDSTACK-API.md §3)
    assert (listed["state"], listed["jobid"], listed["jobstatus"]) == ("Stopped", answer["jobid"],
                                                                       0)
    assert sim.pending_jobs() == 1
    sim.settle()
    assert sim.pending_jobs() == 0
    done = job(sim, answer["jobid"])
    assert (done["jobstatus"], done["jobresultcode"]) == (1, 0)
    vm = done["jobresult"]["virtualmachine"]
    assert (vm["state"], vm["name"], vm["displayname"], vm["keypair"]) == (
        "Running", "web2", "Web 2", "key1")
    assert vm["nic"][0]["ipaddress"] == "127.0.1.1" and "instancename" not in vm  # admins only
    assert vm["created"].endswith("+0900")
    assert "jobid" not in sim.vms()[0]
    assert sim.lb_members() == []
    event = ok(sim, "listEvents", type="VM.CREATE")["event"][0]
    assert (event["resourceid"], event["state"]) == (answer["id"], "Completed")
    assert event["description"] == ("Successfully completed starting Vm. Vm Id: "
                                    f"{sim.internal_id(answer['id'])}")


def test_deploy_defaults_and_validation(sim: Simulator) -> None:
    answer = deploy(sim, startvm="false")
    sim.settle()
    vm = sim.vms()[0]
    assert vm["id"] == answer["id"]
    assert vm["name"] == vm["displayname"] == "i-2-1-VM"
    assert vm["state"] == "Stopped"
    sim.add_vm("web1")
    for name in ("web1", "1web", "bad_name"):
        response = request(sim, "deployVirtualMachine", zoneid=sim.zone_id, name=name,
                           serviceofferingid=sim.offering_id, templateid=sim.template_id)
        assert response.status_code == 431, name


def test_deploy_reuses_expunged_addresses_only_when_list_is_exhausted() -> None:
    with Simulator(job_seconds=0.01, ip_addresses=["127.0.2.1", "127.0.2.2"]) as sim:
        first = deploy(sim)
        sim.settle()
        ok(sim, "destroyVirtualMachine", id=first["id"], expunge="true")
        sim.settle()
        deploy(sim)
        sim.settle()
        assert [vm["nic"][0]["ipaddress"] for vm in sim.vms()] == ["127.0.2.2"]
        deploy(sim)
        sim.settle()
        assert sorted(vm["nic"][0]["ipaddress"] for vm in sim.vms()) == ["127.0.2.1",
                                                                         "127.0.2.2"]
        full = request(sim, "deployVirtualMachine", zoneid=sim.zone_id,
                       serviceofferingid=sim.offering_id, templateid=sim.template_id)
        assert full.status_code == 533


def test_assign_and_remove_membership(sim: Simulator) -> None:
    web1 = sim.add_vm("web1")
    web2 = sim.add_vm("web2", in_lb=False)
    web3 = sim.add_vm("web3", in_lb=False)
    jobid = ok(sim, "assignToLoadBalancerRule", id=sim.lb_id,
               virtualmachineids=f"{web3['id']},{web2['id']}")["jobid"]
    assert [vm["name"] for vm in sim.lb_members()] == ["web1"]     # only when the job completes
    sim.settle()
    assert [vm["name"] for vm in sim.lb_members()] == ["web1", "web3", "web2"]
    done = job(sim, jobid)
    assert done["jobresult"] == {"success": True} and "jobinstanceid" not in done
    listed = ok(sim, "listLoadBalancerRuleInstances", id=sim.lb_id)
    assert listed["count"] == 3
    ok(sim, "removeFromLoadBalancerRule", id=sim.lb_id, virtualmachineids=web1["id"])
    sim.settle()
    assert [vm["name"] for vm in sim.lb_members()] == ["web3", "web2"]
    events = [e for e in ok(sim, "listEvents")["event"] if e["state"] == "Completed"]
    assert [e["type"] for e in events] == ["LB.REMOVE.FROM.RULE", "LB.ASSIGN.TO.RULE"]
    number = sim.internal_id
    assert events[1]["description"] == (
        "Successfully completed assigning to load balancer. Load balancer Id: "
        f"{number(sim.lb_id)} VmIds: {number(web3['id'])},{number(web2['id'])}")
    assert events[0]["resourceid"] == sim.lb_id
    assert events[0]["resourcetype"] == "LoadBalancerRule"


def test_destroy_hides_vm_and_drops_membership(sim: Simulator) -> None:
    sim.job_seconds = 0.2
    web1 = sim.add_vm("web1")
    sim.add_vm("web2")
    jobid = ok(sim, "destroyVirtualMachine", id=web1["id"])["jobid"]
    assert sim.vms()[0]["state"] == "Stopping"
    assert [vm["name"] for vm in sim.lb_members()] == ["web1", "web2"]   # Stopping is listed
    sim.settle()
    result = job(sim, jobid)
    assert result["jobresult"]["virtualmachine"]["state"] == "Destroyed"
    assert [vm["name"] for vm in ok(sim, "listVirtualMachines")["virtualmachine"]] == ["web2"]
    assert ok(sim, "listVirtualMachines", id=web1["id"]) == {}
    assert [vm["name"] for vm in sim.lb_members()] == ["web2"]
    assert [vm["state"] for vm in sim.vms(include_gone=True)] == ["Destroyed", "Running"]
    event = sim.events[-1]
    assert (event["type"], event["state"]) == ("VM.DESTROY", "Completed")
    assert event["description"] == ("Successfully completed destroying Vm. Vm Id: "
                                    f"{sim.internal_id(web1['id'])}")


def test_destroy_expunge_removes_vm(sim: Simulator) -> None:
    web1 = sim.add_vm("web1")
    ok(sim, "destroyVirtualMachine", id=web1["id"], expunge="true")
    sim.settle()
    assert sim.vms() == []
    assert sim.vms(include_gone=True)[0]["state"] == "Expunging"
    assert request(sim, "destroyVirtualMachine", id=web1["id"]).status_code == 431


def test_lb_instances_skip_error_vms(sim: Simulator) -> None:
    web1 = sim.add_vm("web1")
    sim.add_vm("web2", state="Stopped")
    sim.add_vm("web3", state="Error")
    sim.set_state(web1["id"], "Unknown")
    assert [vm["name"] for vm in sim.lb_members()] == ["web2"]
    answer = ok(sim, "listLoadBalancerRuleInstances", id=sim.lb_id, lbvmips="true")
    assert answer["count"] == 1
    item = answer["lbrulevmidip"][0]
    assert item["loadbalancerruleinstance"]["name"] == "web2"
    assert item["lbvmipaddresses"] == [item["loadbalancerruleinstance"]["nic"][0]["ipaddress"]]
    with pytest.raises(ValueError):
        sim.set_state(web1["id"], "Exploded")
    with pytest.raises(KeyError):
        sim.set_state("nope", "Running")


# ---------------------------------------------------------------------- faults


def test_fault_job_fail_leaves_vm_in_error(sim: Simulator) -> None:
    sim.inject(Fault("job_fail", "deployvirtualmachine", errortext="No capacity in zone"))
    jobid = deploy(sim, name="web2")["jobid"]
    sim.settle()
    failed = job(sim, jobid)
    assert (failed["jobstatus"], failed["jobresultcode"]) == (2, 533)
    assert failed["jobresult"] == {"errorcode": 533, "errortext": "No capacity in zone"}
    assert sim.vms()[0]["state"] == "Error"
    assert [(e["state"], e["level"], e["description"]) for e in sim.events] == [
        ("Scheduled", "INFO", "starting Vm. Vm Id: 1"),
        ("Started", "INFO", "starting Vm. Vm Id: 1"),
        ("Completed", "ERROR", "Error while starting Vm. Vm Id: 1")]
    deploy(sim, name="web3")                                         # times=1: used up
    sim.settle()
    assert sim.vms()[1]["state"] == "Running"


def test_fault_job_hang_never_completes(sim: Simulator) -> None:
    sim.inject(Fault("job_hang", "assignToLoadBalancerRule"))
    web2 = sim.add_vm("web2", in_lb=False)
    jobid = ok(sim, "assignToLoadBalancerRule", id=sim.lb_id,
               virtualmachineids=web2["id"])["jobid"]
    sim.settle(timeout=1)                                           # does not wait for hung jobs
    sim.age(3600)
    assert job(sim, jobid)["jobstatus"] == 0
    assert sim.pending_jobs() == 1
    assert sim.lb_members() == []
    assert sim.release_hung() == 1  # the test lets it finish when it wants
    assert job(sim, jobid)["jobstatus"] == 1 and sim.pending_jobs() == 0
    assert [vm["name"] for vm in sim.lb_members()] == ["web2"]
    assert sim.release_hung() == 0


def test_fault_http_error(sim: Simulator) -> None:
    sim.inject(Fault("http_error", "listVirtualMachines", times=2, status=530))
    for _ in range(2):
        response = request(sim, "listVirtualMachines")
        assert response.status_code == 530
        assert response.json() == {"listvirtualmachinesresponse": {
            "uuidList": [], "errorcode": 530, "cserrorcode": 9999,
            "errortext": "Internal error executing command, please contact your system "
                         "administrator"}}
    assert request(sim, "listZones").status_code == 200             # other commands unaffected
    assert request(sim, "listVirtualMachines").status_code == 200
    assert [c.status for c in sim.calls_of("listvirtualmachines")] == [530, 530, 200]


def test_fault_html_and_forever_and_clear(sim: Simulator) -> None:
    sim.inject(Fault("html", times=-1, status=502))
    for command in ("listZones", "listEvents"):
        response = request(sim, command)
        assert response.status_code == 502
        assert response.headers["Content-Type"].startswith("text/html")
        assert "502 Bad Gateway" in response.text
    assert request(sim, "listZones", secret="wrong").status_code == 401   # after verification
    sim.clear_faults()
    assert request(sim, "listZones").status_code == 200


def test_fault_slow_acts_after_the_sleep(sim: Simulator) -> None:
    deploy_given_up(sim, "slow", delay=0.4, timeout=0.1)
    assert sim.vms() == []
    wait_answered(sim, "deployVirtualMachine")
    assert len(sim.vms()) == 1
    assert sim.calls_of("deployVirtualMachine")[0].status == 200


def test_fault_slow_after_acts_at_once(sim: Simulator) -> None:
    # The client gives up after 0.2 s, maybe before the request is even read (a loaded
    # machine): the deploy is done long before the answer's 60 s, never after them.
    deploy_given_up(sim, "slow_after", delay=60, timeout=0.2)
    deadline = time.monotonic() + 30
    while not sim.vms():
        assert time.monotonic() < deadline, "the deploy waited for the answer's delay"
        time.sleep(0.01)
    assert len(sim.vms()) == 1
    assert sim.calls_of("deployVirtualMachine")[0].status == 200


def test_fault_rejects_unknown_kind() -> None:
    with pytest.raises(ValueError):
        Fault("explode")
    with pytest.raises(ValueError):
        Fault("slow", times=0)


# ---------------------------------------------------------------- events, time


def test_events_newest_first_and_filters(sim: Simulator) -> None:
    web1 = sim.add_vm("web1")
    deploy(sim)
    sim.settle()
    ok(sim, "destroyVirtualMachine", id=web1["id"])
    sim.settle()
    events = ok(sim, "listEvents")
    assert [(e["type"], e["state"]) for e in events["event"]] == [
        ("VM.DESTROY", "Completed"), ("VM.DESTROY", "Started"), ("VM.DESTROY", "Scheduled"),
        ("VM.CREATE", "Completed"), ("VM.CREATE", "Started"), ("VM.CREATE", "Scheduled")]
    assert ok(sim, "listEvents", keyword="destroying")["count"] == 3
    since = (datetime.now(JST) - timedelta(minutes=1)).strftime("%Y-%m-%d %H:%M:%S")
    assert ok(sim, "listEvents", startdate=since)["count"] == 6
    tomorrow = (datetime.now(JST) + timedelta(days=1)).strftime("%Y-%m-%d")
    assert ok(sim, "listEvents", startdate=tomorrow) == {}
    assert request(sim, "listEvents", startdate="yesterday").status_code == 431


def test_age_moves_the_past(sim: Simulator) -> None:
    sim.add_vm("web1", created=datetime(2024, 5, 10, 17, 27, 52))
    assert sim.vms()[0]["created"] == "2024-05-10T17:27:52+0900"
    deploy(sim)
    sim.settle()
    before = datetime.strptime(sim.events[0]["created"], "%Y-%m-%dT%H:%M:%S%z")
    sim.age(7200)
    after = datetime.strptime(sim.events[0]["created"], "%Y-%m-%dT%H:%M:%S%z")
    assert before - after == timedelta(hours=2)
    assert sim.vms()[0]["created"] == "2024-05-10T15:27:52+0900"
    since = (datetime.now(JST) - timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S")
    assert ok(sim, "listEvents", startdate=since) == {}


def test_age_finishes_pending_jobs(sim: Simulator) -> None:
    sim.job_seconds = 600
    deploy(sim)
    assert sim.pending_jobs() == 1
    sim.age(600)
    assert sim.pending_jobs() == 0
    assert sim.vms()[0]["state"] == "Running"


def test_settle_times_out() -> None:
    with Simulator(job_seconds=60) as sim:
        deploy(sim)
        with pytest.raises(TimeoutError):
            sim.settle(timeout=0.05)


def test_settle_waits_for_a_request_a_slow_fault_holds(sim: Simulator) -> None:
    deploy_given_up(sim, "slow", delay=0.5, timeout=0.1)
    sim.settle()                        # the deploy acts after the client gave up; then its job
    assert [vm["state"] for vm in sim.vms()] == ["Running"]
    assert sim.calls_of("deployVirtualMachine")[0].status == 200


def test_settle_leaves_a_request_held_beyond_its_timeout(sim: Simulator) -> None:
    deploy_given_up(sim, "slow", delay=60, timeout=0.1)
    sim.settle(timeout=1)               # like a hung job: not waited for, no error
    assert sim.vms() == [] and sim.calls_of("deployVirtualMachine")[0].status == 0


def test_job_shows_the_internal_record(sim: Simulator) -> None:
    sim.job_seconds = 0.2
    jobid = deploy(sim)["jobid"]
    received = sim.calls_of("deployVirtualMachine")[0].time
    pending = sim.job(jobid)
    assert (pending["jobid"], pending["command"], pending["status"]) == (
        jobid, "deployvirtualmachine", 0)
    assert pending["completed"] is None and not pending["hung"]
    assert received <= pending["created"] <= pending["due"] - 0.2 + 0.01
    sim.settle()
    done = sim.job(jobid)
    assert (done["status"], done["completed"]) == (1, pending["due"])
    with pytest.raises(KeyError):
        sim.job("nope")


@pytest.mark.parametrize("skew", [-3600, 0, 7200])
def test_skew_clock_shifts_the_date_header(sim: Simulator, skew: int) -> None:
    sim.skew_clock(skew)
    response = request(sim, "listZones")
    served = email.utils.parsedate_to_datetime(response.headers["Date"])
    offset = (served - datetime.now(timezone.utc)).total_seconds()
    assert skew - 5 < offset < skew + 5
    assert ok(sim, "listZones")["count"] == 1                     # the API itself is unchanged


def test_skew_clock_with_signatures_checks_expires_on_the_skewed_clock(sim: Simulator) -> None:
    sim.skew_clock(1000, signatures=True)
    now = datetime.now(timezone.utc)
    for signed_at, status in ((now, 401), (now + timedelta(seconds=1000), 200)):
        expires = (signed_at + timedelta(seconds=600)).strftime("%Y-%m-%dT%H:%M:%S+0000")
        response = request(sim, "listZones", signatureVersion="3", expires=expires)
        assert response.status_code == status


def test_skew_clock_with_records_stamps_new_vms_and_events_on_the_skewed_clock(
        sim: Simulator) -> None:
    before_skew = sim.add_vm("web1")
    sim.skew_clock(7200, records=True)
    deployed = deploy(sim)
    sim.settle()
    seeded = sim.add_vm("web2")
    created = {vm["id"]: datetime.strptime(vm["created"], "%Y-%m-%dT%H:%M:%S%z")
               for vm in ok(sim, "listVirtualMachines")["virtualmachine"]}
    now = datetime.now(timezone.utc)
    assert abs((created[before_skew["id"]] - now).total_seconds()) < 5  # kept its time
    for vm_id in (deployed["id"], seeded["id"]):
        assert abs((created[vm_id] - now).total_seconds() - 7200) < 5
    events = ok(sim, "listEvents", type="VM.CREATE")["event"]
    assert {e["state"] for e in events} == {"Scheduled", "Started", "Completed"}
    for event in events:
        stamped = datetime.strptime(event["created"], "%Y-%m-%dT%H:%M:%S%z")
        assert abs((stamped - now).total_seconds() - 7200) < 5
    sim.skew_clock(7200)                                  # without records: the real time again
    assert abs((datetime.strptime(sim.add_vm("web3")["created"], "%Y-%m-%dT%H:%M:%S%z")
                - now).total_seconds()) < 5


def test_config_sections_name_this_simulator(sim: Simulator) -> None:
    assert sim.config_sections() == {
        "account": {"host": sim.url, "api_key": DEFAULT_API_KEY, "secret_key": DEFAULT_SECRET_KEY},
        "launch_config": {"zoneid": sim.zone_id, "serviceofferingid": sim.offering_id,
                          "templateid": sim.template_id},
        "scalling": {"load_balancer": sim.lb_id},
    }


# ------------------------------------------------------------- construction


@pytest.mark.parametrize("kwargs", [
    {"ip_addresses": ["127.0.0.5", "10.0.0.1"]},
    {"ip_addresses": ["not-an-ip"]},
    {"host": "0.0.0.0"},
    {"host": "192.0.2.1"},
    {"job_seconds": -1},
    {"cloudstack": "4.16"},
    {"untaggable": ["Teapot"]},
])
def test_simulator_rejects_non_loopback_and_bad_settings(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Simulator(**kwargs)


def test_add_vm_rejects_non_loopback_ip(sim: Simulator) -> None:
    with pytest.raises(ValueError, match="127.0.0.0/8"):
        sim.add_vm("web1", ip="192.0.2.7")
    with pytest.raises(ValueError):
        sim.add_vm("web1", state="Sleeping")
    assert sim.add_vm("web1", ip="127.0.1.1")["nic"][0]["ipaddress"] == "127.0.1.1"
    assert sim.add_vm("web2")["nic"][0]["ipaddress"] == "127.0.1.2"   # no double allocation


def test_url_needs_start() -> None:
    sim = Simulator()
    with pytest.raises(RuntimeError):
        _ = sim.url
    with sim:
        assert sim.url.startswith("http://127.0.0.1:") and sim.url.endswith("/client/api")
    sim.stop()                                                          # idempotent


def test_concurrent_clients(sim: Simulator) -> None:
    failures: list[str] = []

    def client() -> None:
        try:
            for _ in range(3):
                assert request(sim, "listVirtualMachines").status_code == 200
            deploy(sim)
        except Exception as exc:  # collected and asserted below
            failures.append(repr(exc))

    threads = [threading.Thread(target=client) for _ in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert failures == []
    sim.settle()
    vms = sim.vms()
    assert len(vms) == 30
    assert len({vm["nic"][0]["ipaddress"] for vm in vms}) == 30
    assert len(sim.calls) == 120


# ------------------------------------------------------------------------ CLI


def test_main_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "CloudStack API simulator on loopback" in out and "--job-seconds" in out


def test_main_rejects_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--vms", "-1"])
    assert exc.value.code == 2
    assert "--vms -1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["--cloudstack", "4.16"])
    assert exc.value.code == 2
    assert "invalid choice: '4.16'" in capsys.readouterr().err


def test_main_port_in_use(sim: Simulator, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--port", str(sim.port)]) == 1
    assert f"cannot listen on 127.0.0.1:{sim.port}" in capsys.readouterr().err


def test_main_serves_until_ctrl_c() -> None:
    command = [sys.executable, "-m", "cloudstack_sim", "--port", "0", "--vms", "2"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT) as process:
        try:
            assert process.stdout is not None
            lines = [process.stdout.readline() for _ in range(13)]
            settings = dict(line.strip().split(" = ", 1) for line in lines if " = " in line)
            assert "[account]" in "".join(lines) and "[scalling]" in "".join(lines)
            assert settings["api_key"] == DEFAULT_API_KEY
            assert settings["secret_key"] == DEFAULT_SECRET_KEY
            assert settings["zoneid"] and settings["serviceofferingid"] and settings["templateid"]
            params = {"command": "listLoadBalancerRuleInstances", "response": "json",
                      "apiKey": DEFAULT_API_KEY, "id": settings["load_balancer"]}
            params["signature"] = sign(params, DEFAULT_SECRET_KEY)
            answer = requests.get(settings["host"], params=params, timeout=5).json()
            names = [vm["name"] for vm in answer["listloadbalancerruleinstancesresponse"][
                "loadbalancerruleinstance"]]
            assert names == ["web1", "web2"]
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=60) == 130
        finally:
            process.kill()


def test_vm_middle_states_and_destroyed_vms_cannot_join(sim: Simulator) -> None:
    # Jobs of an hour, moved through by age(): no phase depends on how fast the machine is.
    sim.job_seconds = 3600
    answer = deploy(sim)
    sim.age(1800)
    assert ok(sim, "listVirtualMachines", id=answer["id"])["virtualmachine"][0]["state"] == \
        "Starting"
    sim.age(1800)
    sim.settle()
    destroyed = ok(sim, "destroyVirtualMachine", id=answer["id"])
    assert sim.vms()[0]["state"] == "Stopping"
    sim.age(1800)
    assert sim.vms()[0]["state"] == "Stopped"
    sim.age(1800)
    sim.settle()
    assert destroyed["jobid"] and sim.vms() == []
    response = request(sim, "assignToLoadBalancerRule", id=sim.lb_id,
                       virtualmachineids=answer["id"])
    assert response.status_code == 431


def test_command_names_are_case_sensitive(sim: Simulator) -> None:
    response = request(sim, "listzones")
    assert response.status_code == 401 and "errorresponse" in response.json()


def test_instancename_only_for_admins() -> None:
    with Simulator(admin=True) as admin:
        admin.add_vm("web1")
        assert admin.vms()[0]["instancename"] == "i-2-1-VM"


# ------------------------------------------------- server versions: ids and events

def run_job(sim: Simulator, command: str, **params: str) -> dict[str, Any]:
    """Start an async command, let the cloud settle, and return its finished job."""
    jobid = ok(sim, command, **params)["jobid"]
    sim.settle()
    return job(sim, jobid)


def rows(sim: Simulator, **filters: str) -> list[tuple[str, str, str]]:
    """(state, level, description) of listEvents' answer, oldest first."""
    answer = ok(sim, "listEvents", **filters).get("event", [])
    return [(e["state"], e["level"], e["description"]) for e in reversed(answer)]


def test_internal_ids_are_sequences_apart_from_uuids(sim: Simulator) -> None:
    web1, web2 = sim.add_vm("web1"), sim.add_vm("web2")
    other = sim.add_lb_rule("api")
    assert [sim.internal_id(one) for one in (web1["id"], web2["id"])] == [1, 2]
    assert [sim.internal_id(one) for one in (sim.lb_id, other)] == [42, 43]
    assert all(len(one) == 36 for one in (web1["id"], sim.lb_id, other))
    with pytest.raises(KeyError):
        sim.internal_id("nope")


@pytest.mark.parametrize("command, params, resource, scheduled, action", [
    ("deployVirtualMachine", {}, "NEW", "starting Vm. Vm Id: 3", "starting Vm. Vm Id: 3"),
    ("destroyVirtualMachine", {"id": "WEB1"}, "WEB1", "destroying vm: 1",
     "destroying Vm. Vm Id: 1"),
    ("assignToLoadBalancerRule", {"id": "LB", "virtualmachineids": "WEB2,WEB1"}, "LB",
     "applying instances for load balancer: 42 (ids: 2,1)",
     "assigning to load balancer. Load balancer Id: 42 VmIds: 2,1"),
    ("removeFromLoadBalancerRule", {"id": "LB", "virtualmachineids": "WEB1"}, "LB",
     "removing instances from load balancer: 42 (ids: 1)",
     "removing from load balancer. Load balancer Id: 42 VmIds: 1"),
])
def test_events_scheduled_started_completed_name_internal_ids(
        every_sim: Simulator, command: str, params: dict[str, str], resource: str,
        scheduled: str, action: str) -> None:
    sim = every_sim
    assigning = command == "assignToLoadBalancerRule"  # of VMs the rule does not have yet
    names = {"WEB1": sim.add_vm("web1", in_lb=not assigning)["id"],
             "WEB2": sim.add_vm("web2", in_lb=False)["id"], "LB": sim.lb_id}
    if command == "deployVirtualMachine":
        done = run_job(sim, command, zoneid=sim.zone_id, serviceofferingid=sim.offering_id,
                       templateid=sim.template_id)
        names["NEW"] = done["jobinstanceid"]
    else:
        done = run_job(sim, command, **{k: ",".join(names[one] for one in v.split(","))
                                        for k, v in params.items()})
    assert done["jobstatus"] == 1
    assert rows(sim) == [("Scheduled", "INFO", scheduled), ("Started", "INFO", action),
                         ("Completed", "INFO", f"Successfully completed {action}")]
    scheduled_row, *later = sim.events
    assert "parentid" not in scheduled_row
    assert [e["parentid"] for e in later] == [scheduled_row["id"]] * 2
    kind = "LoadBalancerRule" if resource == "LB" else "VirtualMachine"
    fields = [(e.get("resourceid"), e.get("resourcetype")) for e in sim.events]
    assert fields == [(None, None) if before(sim, "4.17") else (names[resource], kind)] * 3


def test_assigning_a_vm_already_mapped_fails_the_job_and_maps_none(every_sim: Simulator) -> None:
    # LoadBalancingRulesManagerImpl.assignToLoadBalancer checks every VM before it maps any;
    # AssignToLoadBalancerRuleCmd answers its "VM <id> with <ip> is already mapped to load
    # balancer." (a CloudRuntimeException) with a plain 530
    sim = every_sim
    mapped, new = sim.add_vm("web1"), sim.add_vm("web2", in_lb=False)
    failed = run_job(sim, "assignToLoadBalancerRule", id=sim.lb_id,
                     virtualmachineids=f"{new['id']},{mapped['id']}")
    assert (failed["jobstatus"], failed["jobresultcode"]) == (2, 530)
    assert failed["jobresult"] == {"errorcode": 530,
                                   "errortext": "Failed to assign load balancer rule"}
    assert [vm["name"] for vm in sim.lb_members()] == ["web1"]
    assert rows(sim, level="ERROR") == [("Completed", "ERROR", "Error while assigning to load "
                                         "balancer. Load balancer Id: 42 VmIds: 2,1")]


def test_failed_action_writes_an_error_row_and_filters_keep_working(every_sim: Simulator) -> None:
    sim = every_sim
    web1 = sim.add_vm("web1", in_lb=False)
    sim.inject(Fault("job_fail", "assignToLoadBalancerRule", errortext="LB device down"))
    failed = run_job(sim, "assignToLoadBalancerRule", id=sim.lb_id, virtualmachineids=web1["id"])
    assert failed["jobresult"] == {"errorcode": 533, "errortext": "LB device down"}
    assert run_job(sim, "assignToLoadBalancerRule", id=sim.lb_id,
                   virtualmachineids=web1["id"])["jobstatus"] == 1
    error = "Error while assigning to load balancer. Load balancer Id: 42 VmIds: 1"
    assert rows(sim, level="ERROR") == [("Completed", "ERROR", error)]
    assert len(rows(sim, level="INFO")) == 5
    assert rows(sim, keyword="error while") == [("Completed", "ERROR", error)]
    assert len(rows(sim, type="LB.ASSIGN.TO.RULE")) == 6
    assert rows(sim, type="VM.CREATE") == []
    assert ok(sim, "listEvents", page="2", pagesize="4") == {
        "count": 6, "event": ok(sim, "listEvents")["event"][4:]}
    today = datetime.now(JST).strftime("%Y-%m-%d")
    assert ok(sim, "listEvents", startdate=today, enddate=f"{today} 23:59:59")["count"] == 6


# -------------------------------------------------------------- servicestate


def test_lb_instances_servicestate_only_when_the_map_has_one(sim: Simulator) -> None:
    web1, web2 = sim.add_vm("web1"), sim.add_vm("web2")

    def states(**params: str) -> list[Any]:
        answer = ok(sim, "listLoadBalancerRuleInstances", id=sim.lb_id, **params)
        items = answer.get("lbrulevmidip") or answer.get("loadbalancerruleinstance", [])
        return [item.get("loadbalancerruleinstance", item).get("servicestate") for item in items]

    assert states(lbvmips="true") == [None, None]                   # no health check: omitted
    sim.set_service_state(web1["id"], "UP")
    sim.set_service_state(web2["id"], "DOWN")
    assert states(lbvmips="true") == ["UP", "DOWN"] == states()
    assert "servicestate" not in ok(sim, "listVirtualMachines")["virtualmachine"][0]
    sim.set_service_state(web2["id"], None)
    assert states(lbvmips="true") == ["UP", None]
    run_job(sim, "removeFromLoadBalancerRule", id=sim.lb_id, virtualmachineids=web1["id"])
    run_job(sim, "assignToLoadBalancerRule", id=sim.lb_id, virtualmachineids=web1["id"])
    assert states() == [None, None]                                 # a new map row
    with pytest.raises(KeyError):
        sim.set_service_state(sim.add_vm("web3", in_lb=False)["id"], "UP")


# ---------------------------------------------------------------------- tags


def tag_args(*pairs: tuple[str, Any]) -> dict[str, str]:
    """tags[n].key / tags[n].value parameters; a value of None leaves .value out."""
    out: dict[str, str] = {}
    for n, (key, value) in enumerate(pairs):
        out[f"tags[{n}].key"] = key
        if value is not None:
            out[f"tags[{n}].value"] = value
    return out


def tag_job(sim: Simulator, command: str, resourcetype: str, resourceids: str,
            *pairs: tuple[str, Any]) -> dict[str, Any]:
    return run_job(sim, command, resourcetype=resourcetype, resourceids=resourceids,
                   **tag_args(*pairs))


def test_create_tags_is_async_and_shows_everywhere(sim: Simulator) -> None:
    sim.job_seconds = 0.2
    web1, web2 = sim.add_vm("web1"), sim.add_vm("web2")
    jobid = ok(sim, "createTags", resourcetype="uservm", resourceids=f"{web1['id']},{web2['id']}",
               **tag_args(("owner", "ssh-scale"), ("since", "2024-05-10T17:27:52+0900")))["jobid"]
    pending = job(sim, jobid)
    assert (pending["jobstatus"], pending["cmd"]) == (
        0, "org.apache.cloudstack.api.command.user.tag.CreateTagsCmd")
    assert "jobinstancetype" not in pending and sim.tags(web1["id"]) == {}
    sim.settle()
    assert job(sim, jobid)["jobresult"] == {"success": True}
    expected = {"owner": "ssh-scale", "since": "2024-05-10T17:27:52+0900"}
    assert sim.tags(web1["id"]) == sim.tags(web2["id"]) == expected
    vm = ok(sim, "listVirtualMachines", id=web1["id"])["virtualmachine"][0]
    assert vm["tags"][0] == {"key": "owner", "value": "ssh-scale", "resourcetype": "UserVm",
                             "resourceid": web1["id"], "account": "sim",
                             "domainid": vm["domainid"], "domain": "ROOT"}
    member = ok(sim, "listLoadBalancerRuleInstances", id=sim.lb_id)["loadbalancerruleinstance"][0]
    assert member["tags"] == vm["tags"]
    destroyed = run_job(sim, "destroyVirtualMachine", id=web1["id"])
    assert destroyed["jobresult"]["virtualmachine"]["tags"] == vm["tags"]
    assert tag_job(sim, "createTags", "LoadBalancer", sim.lb_id, ("pool", "web"))["jobstatus"] == 1
    rule = ok(sim, "listLoadBalancerRules", id=sim.lb_id)["loadbalancerrule"][0]
    assert [(t["key"], t["resourcetype"]) for t in rule["tags"]] == [("pool", "LoadBalancer")]


def test_create_tags_duplicate_key_fails_the_whole_call(sim: Simulator) -> None:
    web1, web2 = sim.add_vm("web1"), sim.add_vm("web2")
    sim.set_tag(web2["id"], "lock", "run-1")
    failed = tag_job(sim, "createTags", "UserVm", f"{web1['id']},{web2['id']}",
                     ("fresh", "x"), ("LOCK", "run-2"))
    assert (failed["jobstatus"], failed["jobresultcode"]) == (2, 530)
    assert failed["jobresult"] == {"errorcode": 530,
                                   "errortext": f"tag LOCK already on UserVm with id {web2['id']}"}
    assert sim.tags(web1["id"]) == {} and sim.tags(web2["id"]) == {"lock": "run-1"}
    by_number = tag_job(sim, "createTags", "UserVm", "2", ("lock", "run-3"))
    assert by_number["jobresult"]["errortext"] == "tag lock already on UserVm with id 2"


@pytest.mark.parametrize("resourcetype, resourceids, pairs, code, text", [
    ("Teapot", "WEB1", [("k", "v")], 431, "Invalid resource type Teapot"),
    ("UserVm", "WEB1", [("k", "")], 431, "Value for the key k is either null or empty"),
    ("UserVm", "WEB1", [("k", None)], 431, "Value for the key k is either null or empty"),
    ("UserVm", "nope", [("k", "v")], 431, "Unable to find resource by uuid nope and type UserVm"),
    ("UserVm", "99", [("k", "v")], 431, "Unable to find resource by id 99 and type UserVm"),
    ("LoadBalancer", "WEB1", [("k", "v")], 431,
     "Unable to find resource by uuid WEB1 and type LoadBalancer"),
    ("Zone", "ZONE", [("k", "v")], 431, "The resource type Zone doesn't support resource tags"),
])
def test_create_tags_job_errors(sim: Simulator, resourcetype: str, resourceids: str,
                                pairs: list[tuple[str, Any]], code: int, text: str) -> None:
    web1 = sim.add_vm("web1")
    names = {"WEB1": web1["id"], "ZONE": sim.zone_id}
    failed = tag_job(sim, "createTags", resourcetype, names.get(resourceids, resourceids), *pairs)
    text = text.replace("WEB1", web1["id"])
    assert failed["jobresult"] == {"errorcode": code, "errortext": text}
    assert sim.tags(web1["id"]) == {}
    assert rows(sim, type="CREATE_TAGS") == [("Scheduled", "INFO", "creating tags"),
                                             ("Completed", "ERROR",
                                              "Error while creating resource tags")]


def test_untaggable_option_refuses_like_a_type_without_tag_support() -> None:
    with Simulator(job_seconds=0.05, untaggable=("loadbalancer",)) as sim:
        failed = tag_job(sim, "createTags", "LoadBalancer", sim.lb_id, ("k", "v"))
        assert failed["jobresult"] == {
            "errorcode": 431,
            "errortext": "The resource type LoadBalancer doesn't support resource tags"}
        web1 = sim.add_vm("web1")
        assert tag_job(sim, "createTags", "UserVm", web1["id"], ("k", "v"))["jobstatus"] == 1


@pytest.mark.parametrize("pairs, left", [
    ([("Owner", "SSH-scale")], {"lock": "run-1"}),               # key and value, any case
    ([("owner", None)], {"lock": "run-1"}),                        # key alone: any value
    ([], {}),                                                      # no tags[...]: all of them
    ([("owner", "other"), ("lock", None)], {"owner": "ssh-scale"}),
])
def test_delete_tags_matches_case_insensitively(sim: Simulator, pairs: list[tuple[str, Any]],
                                                left: dict[str, str]) -> None:
    web1 = sim.add_vm("web1")
    sim.set_tag(web1["id"], "owner", "ssh-scale")
    sim.set_tag(web1["id"], "lock", "run-1")
    done = tag_job(sim, "deleteTags", "UserVm", web1["id"], *pairs)
    assert (done["jobstatus"], done["jobresult"]) == (1, {"success": True})
    assert sim.tags(web1["id"]) == left
    assert rows(sim, type="DELETE_TAGS") == [
        ("Scheduled", "INFO", "Deleting tags"),
        ("Completed", "INFO", "Successfully completed deleting resource tags")]


def test_delete_tags_nothing_matched_fails_and_never_removes_a_newer_value(
        sim: Simulator) -> None:
    sim.job_seconds = 0.2
    web1 = sim.add_vm("web1")
    sim.set_tag(web1["id"], "lock", "run-1")
    jobid = ok(sim, "deleteTags", resourcetype="UserVm", resourceids=web1["id"],
               **tag_args(("lock", "run-1")))["jobid"]
    sim.set_tag(web1["id"], "lock", "run-2")                    # another run took the lock
    sim.settle()
    assert job(sim, jobid)["jobresult"] == {"errorcode": 530, "errortext": "Failed to delete tags"}
    assert sim.tags(web1["id"]) == {"lock": "run-2"}
    assert tag_job(sim, "deleteTags", "UserVm", "nope")["jobresult"]["errorcode"] == 530
    assert tag_job(sim, "deleteTags", "Teapot", web1["id"])["jobresult"] == {
        "errorcode": 431, "errortext": "Invalid resource type Teapot"}


# What each server version says when a tag job fails, written from the upstream sources that
# cloudstack_sim/versions.py cites: (a duplicate key's errortext, a deleteTags that matched
# nothing, the errorcode and jobresultcode an InvalidParameterValueException gets in a job,
# "by uuid" for an unknown non-numeric id).
ENTITY_EXISTS = "Entity already exists: "
ALREADY_ON = "tag LOCK already on UserVm with id {id}"
CONFORM = "Unable to find any tags which conform to specified delete parameters."
TAG_FAILURES = {
    "4.5": (ENTITY_EXISTS, "Unable to find tags by parameters specified", (530, 530), "id"),
    "4.11": (ALREADY_ON, CONFORM, (530, 530), "uuid"),
    "4.12": (ENTITY_EXISTS, CONFORM, (530, 530), "uuid"),
    "4.15": (ALREADY_ON, "Failed to delete tags", (431, 431), "uuid"),
    "4.19": (ALREADY_ON, "Failed to delete tags", (431, 431), "uuid"),
}


def failure(answer: dict[str, Any]) -> tuple[int, int, int, str]:
    """A failed job's (jobstatus, jobresultcode, errorcode, errortext)."""
    return (answer["jobstatus"], answer["jobresultcode"], answer["jobresult"]["errorcode"],
            answer["jobresult"]["errortext"])


def test_tag_job_failures_are_worded_as_each_version_words_them(every_sim: Simulator) -> None:
    sim = every_sim
    duplicate, nothing, (code, result_code), how = TAG_FAILURES[sim.cloudstack]
    web1 = sim.add_vm("web1")
    sim.set_tag(web1["id"], "lock", "run-1")
    taken = tag_job(sim, "createTags", "UserVm", web1["id"], ("LOCK", "run-2"))
    assert failure(taken) == (2, 530, 530, duplicate.format(id=web1["id"]))
    missed = tag_job(sim, "deleteTags", "UserVm", web1["id"], ("lock", "run-2"))
    assert failure(missed) == (2, 530, 530, nothing)
    assert sim.tags(web1["id"]) == {"lock": "run-1"}
    empty = tag_job(sim, "createTags", "UserVm", web1["id"], ("k", ""))
    assert failure(empty) == (2, result_code, code, "Value for the key k is either null or empty")
    unknown = tag_job(sim, "createTags", "UserVm", "nope", ("k", "v"))
    assert failure(unknown)[3] == f"Unable to find resource by {how} nope and type UserVm"
    assert rows(sim, type="CREATE_TAGS")[-1] == ("Completed", "ERROR",
                                                 "Error while creating resource tags")


def test_a_finished_job_shows_its_completion_from_4_15(every_sim: Simulator) -> None:
    sim = every_sim
    done = run_job(sim, "createTags", resourcetype="LoadBalancer", resourceids=sim.lb_id,
                   **tag_args(("pool", "web")))
    assert ("completed" in done) is not before(sim, "4.15")
    assert done["jobresult"] == {"success": True} and done["jobresultcode"] == 0


def test_list_tags_filters_and_pages(sim: Simulator) -> None:
    web1, web2 = sim.add_vm("web1"), sim.add_vm("web2")
    sim.set_tag(web1["id"], "owner", "ssh-scale")
    sim.set_tag(web2["id"], "owner", "someone")
    sim.set_tag(web2["id"], "lock", "run-1")
    sim.set_tag(sim.lb_id, "owner", "ssh-scale")

    def listed(**params: str) -> list[tuple[str, str, str]]:
        return [(t["resourceid"], t["key"], t["value"])
                for t in ok(sim, "listTags", **params).get("tag", [])]

    assert len(listed()) == 4
    assert listed(resourcetype="loadbalancer") == [(sim.lb_id, "owner", "ssh-scale")]
    assert listed(resourceid=web2["id"]) == [(web2["id"], "owner", "someone"),
                                             (web2["id"], "lock", "run-1")]
    assert listed(key="OWNER", value="ssh-scale") == [(web1["id"], "owner", "ssh-scale"),
                                                      (sim.lb_id, "owner", "ssh-scale")]
    assert listed(key="nope") == []
    assert ok(sim, "listTags", page="2", pagesize="3") == {
        "count": 4, "tag": ok(sim, "listTags")["tag"][3:]}


def test_list_filters_by_tags_or_their_pairs(sim: Simulator) -> None:
    web1, web2 = sim.add_vm("web1"), sim.add_vm("web2")
    sim.add_vm("web3")
    sim.set_tag(web1["id"], "role", "web")
    sim.set_tag(web2["id"], "role", "db")
    sim.set_tag(web2["id"], "owner", "ssh-scale")
    other = sim.add_lb_rule("api")
    sim.set_tag(other, "owner", "ssh-scale")

    def names(command: str, key: str, *pairs: tuple[str, Any]) -> list[str]:
        answer = ok(sim, command, **tag_args(*pairs))
        return [item["name"] for item in answer.get(key, [])]

    vms = "listVirtualMachines", "virtualmachine"
    assert names(*vms, ("role", "web")) == ["web1"]
    assert names(*vms, ("role", "web"), ("owner", "ssh-scale")) == ["web1", "web2"]
    assert names(*vms, ("role", "nothing")) == []
    assert names("listLoadBalancerRules", "loadbalancerrule", ("owner", "ssh-scale")) == ["api"]
    for command in ("listVirtualMachines", "listLoadBalancerRules"):
        response = request(sim, command, **tag_args(("role", None)))
        assert response.status_code == 431
        error = response.json()[f"{command.lower()}response"]
        assert (error["cserrorcode"], error["errortext"]) == (4350,
                                                              "No value is passed in for key role")


@pytest.mark.parametrize("command, params, missing", [
    ("createTags", {"resourcetype": "UserVm", "resourceids": "x"}, "tags"),
    ("createTags", {"resourceids": "x", **tag_args(("k", "v"))}, "resourcetype"),
    ("deleteTags", {"resourcetype": "UserVm"}, "resourceids"),
])
def test_tag_commands_missing_parameters(sim: Simulator, command: str, params: dict[str, str],
                                         missing: str) -> None:
    response = request(sim, command, **params)
    assert response.status_code == 431
    assert response.json()[f"{command.lower()}response"]["errortext"] == (
        f"Unable to execute API command {command.lower()} due to missing parameter {missing}")


def test_tag_commands_are_signed_and_faulted_like_any_other(sim: Simulator) -> None:
    web1 = sim.add_vm("web1")
    client = cs.CloudStack(endpoint=sim.url, key=sim.api_key, secret=sim.secret_key,
                           poll_interval=0.02)
    result = client.createTags(resourcetype="UserVm", resourceids=web1["id"],
                               tags=[{"key": "a[1]", "value": "x y*z"}], fetch_result=True)
    assert result["success"] is True and sim.tags(web1["id"]) == {"a[1]": "x y*z"}
    assert request(sim, "listTags", secret="wrong").json() == {"listtagsresponse": {
        "uuidList": [], "errorcode": 401, "errortext": BAD_SIGNATURE}}
    sim.inject(Fault("http_error", "createTags"))
    assert request(sim, "createTags", resourcetype="UserVm", resourceids=web1["id"],
                   **tag_args(("b", "1"))).status_code == 503
    sim.inject(Fault("job_fail", "createTags", errortext="DB down"))
    failed = tag_job(sim, "createTags", "UserVm", web1["id"], ("b", "1"))
    assert failed["jobresult"] == {"errorcode": 533, "errortext": "DB down"}
    assert sim.tags(web1["id"]) == {"a[1]": "x y*z"}
    sim.inject(Fault("job_hang", "deleteTags"))
    jobid = ok(sim, "deleteTags", resourcetype="UserVm", resourceids=web1["id"])["jobid"]
    sim.settle(timeout=1)
    sim.age(3600)
    assert job(sim, jobid)["jobstatus"] == 0 and sim.tags(web1["id"]) == {"a[1]": "x y*z"}


def test_expunge_drops_the_tags(sim: Simulator) -> None:
    web1 = sim.add_vm("web1")
    sim.set_tag(web1["id"], "owner", "ssh-scale")
    run_job(sim, "destroyVirtualMachine", id=web1["id"])
    assert sim.tags(web1["id"]) == {"owner": "ssh-scale"}            # Destroyed, not expunged
    run_job(sim, "destroyVirtualMachine", id=web1["id"], expunge="true")
    assert sim.tags(web1["id"]) == {} and ok(sim, "listTags") == {}


def test_tag_helpers_seed_without_jobs_or_events(sim: Simulator) -> None:
    web1 = sim.add_vm("web1")
    sim.set_tag(web1["id"], "lock", "run-1")
    sim.set_tag(web1["id"], "LOCK", "run-2")                        # replaces, any case
    assert sim.tags(web1["id"]) == {"LOCK": "run-2"}
    sim.delete_tag(web1["id"], "lock")
    assert sim.tags(web1["id"]) == {} and sim.events == [] and sim.pending_jobs() == 0
    with pytest.raises(KeyError):
        sim.delete_tag(web1["id"], "lock")
    with pytest.raises(KeyError):
        sim.set_tag("nope", "k", "v")
