"""A CloudStack API simulator on loopback: verifies signatures like the management server, keeps
VMs, load-balancer members, async jobs and events, and can inject faults. Used by the tests, the
demo and the benchmarks."""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import ipaddress
import json
import re
import signal
import socket
import sys
import threading
import time
import urllib.parse
import uuid
from collections import deque
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional

DEFAULT_API_KEY = "sim-api-key"
DEFAULT_SECRET_KEY = "sim-secret-key"
API_PATH = "/client/api"
MAX_PAGE_SIZE = 500
VM_STATES = ("Starting", "Running", "Stopping", "Stopped", "Destroyed", "Expunging", "Migrating",
             "Error", "Unknown", "Shutdown")
FAULT_KINDS = ("http_error", "html", "slow", "job_fail", "job_hang", "slow_after")
TEMPLATE_FILTERS = ("featured", "self", "selfexecutable", "sharedexecutable", "executable",
                    "community", "all")

_LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
_DEFAULT_IPS = tuple(f"127.0.1.{n}" for n in range(1, 255))
_HIDDEN_STATES = frozenset({"Destroyed", "Expunging"})          # listVirtualMachines, normal user
_LB_HIDDEN_STATES = frozenset({"Destroyed", "Expunging", "Error", "Unknown"})
_REQUEST_FAULTS = frozenset({"http_error", "html", "slow", "slow_after"})
_JOB_FAULTS = frozenset({"job_fail", "job_hang"})
_BAD_SIGNATURE = "unable to verify user credentials and/or request signature"
_INTERNAL_ERROR = "Internal error executing command, please contact your system administrator"
_HTML_BODY = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
_NOT_FOUND_BODY = b"<html><body><h1>404 Not Found</h1></body></html>"
_XML_BODY = b'<?xml version="1.0"?><error>json only in simulator</error>'
_JSON_TYPE = "application/json; charset=UTF-8"
_URL_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-*_")
_HOSTNAME = re.compile(r"[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_JOB_CLASSES = {
    "deployvirtualmachine": "org.apache.cloudstack.api.command.user.vm.DeployVMCmd",
    "destroyvirtualmachine": "org.apache.cloudstack.api.command.user.vm.DestroyVMCmd",
    "assigntoloadbalancerrule":
        "org.apache.cloudstack.api.command.user.loadbalancer.AssignToLoadBalancerRuleCmd",
    "removefromloadbalancerrule":
        "org.apache.cloudstack.api.command.user.loadbalancer.RemoveFromLoadBalancerRuleCmd",
}

# The forms DateUtil.parseTZDateString accepts for `expires` (see CLOUDSTACK-API.md section 1).
_DATE_TIME = r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})"
_EXPIRES_FORMS = (
    # ISO_OFFSET_DATE_TIME: seconds and fraction optional, offset Z or +hh:mm[:ss]
    re.compile(_DATE_TIME + r"(?::(\d{2})(?:\.(\d{1,9}))?)?(Z|[+-]\d{2}:\d{2}(?::\d{2})?)"),
    # yyyy-MM-dd'T'HH:mm:ssZ
    re.compile(_DATE_TIME + r":(\d{2})()([+-]\d{4})"),
    # yyyy-MM-dd'T'HH:mm:ss.SSSSSSX and .SSSSSSZ
    re.compile(_DATE_TIME + r":(\d{2})\.(\d{6})(Z|[+-]\d{2}(?:\d{2})?)"),
    # legacy yyyy-MM-dd'T'HH:mm:ss'Z'Z
    re.compile(_DATE_TIME + r":(\d{2})()Z([+-]\d{4})"),
)


class _ApiError(Exception):
    """An API error answered with HTTP status == errorcode."""

    def __init__(self, code: int, text: str, cserrorcode: Optional[int] = 9999) -> None:
        super().__init__(text)
        self.code = code
        self.text = text
        self.cserrorcode = cserrorcode

    def body(self, envelope: str) -> dict[str, Any]:
        inner: dict[str, Any] = {"uuidList": [], "errorcode": self.code}
        if self.cserrorcode is not None:
            inner["cserrorcode"] = self.cserrorcode
        inner["errortext"] = self.text
        return {envelope: inner}


@dataclass
class Call:
    """One request the simulator received; status is 0 until it is answered."""

    command: str
    params: dict[str, str]
    status: int
    method: str
    time: float


@dataclass
class Fault:
    """A fault to inject into matching requests (after signature verification)."""

    kind: str
    command: Optional[str] = None
    times: int = 1
    status: int = 503
    delay: float = 5.0
    errortext: str = "Insufficient capacity"

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"fault kind {self.kind!r}: expected one of {', '.join(FAULT_KINDS)}")
        if self.times == 0 or self.times < -1:
            raise ValueError(f"fault times {self.times}: expected a positive count or -1")


@dataclass
class _ActiveFault:
    fault: Fault
    remaining: int


@dataclass
class _Vm:
    id: str
    seq: int
    name: str
    displayname: str
    state: str
    ip: str
    created: float
    group: Optional[str]
    groupid: Optional[str]
    nic_id: str
    extra: dict[str, str] = field(default_factory=dict)
    job_id: Optional[str] = None
    removed: bool = False

    @property
    def instancename(self) -> str:
        return f"i-2-{self.seq}-VM"


@dataclass
class _Job:
    id: str
    seq: int
    command: str
    created: float
    due: float
    hang: bool = False
    fail: Optional[str] = None
    vm_id: Optional[str] = None
    rule_id: Optional[str] = None
    vm_ids: list[str] = field(default_factory=list)
    start: bool = True
    expunge: bool = False
    prev_state: str = ""
    status: int = 0
    result_code: int = 0
    result: Optional[dict[str, Any]] = None
    completed: Optional[float] = None


@dataclass
class _Event:
    id: str
    seq: int
    type: str
    description: str
    resource_id: str
    resource_type: str
    time: float


@dataclass
class _Answer:
    status: int
    content_type: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    delay_after: float = 0.0


def java_url_encode(value: str) -> str:
    """Encode value like Java URLEncoder.encode(value, "UTF-8") with "+" replaced by "%20"."""
    return "".join(
        chr(b) if b in _URL_SAFE else "%20" if b == 0x20 else f"%{b:02X}"
        for b in value.encode("utf-8", "surrogatepass")
    )


def compute_signature(params: Mapping[str, str], secret_key: str) -> str:
    """Signature of params as the management server computes it (`signature` itself excluded)."""
    unsigned = "&".join(
        f"{name}={java_url_encode(params[name])}"
        for name in sorted(params) if name.lower() != "signature"
    )
    digest = hmac.new(secret_key.encode("utf-8"), unsigned.lower().encode("utf-8"), hashlib.sha1)
    return base64.b64encode(digest.digest()).decode("ascii")


def _offset_seconds(text: str) -> int:
    if text == "Z":
        return 0
    digits = text[1:].replace(":", "")
    hours, minutes, seconds = int(digits[0:2]), int(digits[2:4] or 0), int(digits[4:6] or 0)
    total = hours * 3600 + minutes * 60 + seconds
    return -total if text[0] == "-" else total


def parse_expires(text: str) -> Optional[datetime]:
    """Parse `expires` in a form DateUtil.parseTZDateString accepts; None if none fits."""
    for form in _EXPIRES_FORMS:
        match = form.fullmatch(text)
        if match is None:
            continue
        year, month, day, hour, minute, second, fraction, offset = match.groups()
        try:
            zone = timezone(timedelta(seconds=_offset_seconds(offset)))
            micros = int((fraction or "0")[:6].ljust(6, "0"))
            return datetime(int(year), int(month), int(day), int(hour), int(minute),
                            int(second or 0), micros, tzinfo=zone)
        except ValueError:
            return None
    return None


def verify_request(params: Mapping[str, str], secrets: Mapping[str, str], now: datetime) -> bool:
    """Check an API-key request like ApiServer.verifyRequest; secrets maps apiKey to secret key."""
    found: dict[str, str] = {}
    for name in sorted(params):
        if name.lower() in ("signature", "apikey", "signatureversion", "expires"):
            found[name.lower()] = params[name]
    signature, api_key = found.get("signature"), found.get("apikey")
    if signature is None or api_key is None:
        return False
    if found.get("signatureversion") == "3":
        expires = parse_expires(found.get("expires", ""))
        if expires is None or expires < now:
            return False
    secret = secrets.get(api_key)
    if secret is None:
        return False
    expected = compute_signature(params, secret)
    return hmac.compare_digest(expected.encode("utf-8"), signature.encode("utf-8"))


def _new_id() -> str:
    return str(uuid.uuid4())


def _invalid_value(command: str, name: str, value: str) -> _ApiError:
    return _ApiError(431, f"Unable to execute API command {command} due to invalid value. "
                          f"Invalid parameter {name} value={value} due to incorrect long value "
                          "format, or entity does not exist or due to incorrect parameter "
                          "annotation for the field in api cmd class.")


def _parse_params(query: str, body: str) -> dict[str, str]:
    """Query string then form body, first value of each repeated name, `+` decoded as a space."""
    params: dict[str, str] = {}
    for source in (query, body):
        for name, values in urllib.parse.parse_qs(source, keep_blank_values=True).items():
            params.setdefault(name, values[0])
    return params


def _to_json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _header_safe(text: str) -> str:
    return text.encode("latin-1", "replace").decode("latin-1").replace("\r", " ").replace("\n", " ")


def _is_true(value: Optional[str], default: bool) -> bool:
    # Java Boolean.valueOf: only "true" (any case) is true.
    return default if value is None else value.lower() == "true"


def _check_loopback(address: str, what: str) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise ValueError(f"{what} {address!r} is not an IP address") from None
    if ip not in _LOOPBACK:
        raise ValueError(f"{what} {address} is outside 127.0.0.0/8 (the simulator stays on "
                         "loopback)")
    return str(ip)


_API_NAMES = frozenset((
    "listZones", "listServiceOfferings", "listTemplates", "listLoadBalancerRules",
    "listLoadBalancerRuleInstances", "listVirtualMachines", "listEvents", "deployVirtualMachine",
    "destroyVirtualMachine", "assignToLoadBalancerRule", "removeFromLoadBalancerRule",
    "queryAsyncJobResult"))


class Simulator:
    """A CloudStack management server on loopback with one zone, offering, template and LB rule."""

    def __init__(self, api_key: str = DEFAULT_API_KEY, secret_key: str = DEFAULT_SECRET_KEY, *,
                 host: str = "127.0.0.1", port: int = 0, job_seconds: float = 1.0,
                 ip_addresses: Optional[Sequence[str]] = None,
                 timezone_offset_hours: int = 9, admin: bool = False) -> None:
        if job_seconds < 0:
            raise ValueError(f"job_seconds {job_seconds}: expected >= 0")
        self.api_key = api_key
        self.secret_key = secret_key
        self.host = _check_loopback(host, "host")
        self.job_seconds = job_seconds
        #: Root-admin visibility: only admins see a VM's "instancename".
        self.admin = admin
        #: The cloud's default.page.size: the default and the largest pagesize accepted.
        self.page_size = MAX_PAGE_SIZE
        ips = list(_DEFAULT_IPS if ip_addresses is None else ip_addresses)
        self._fresh_ips = deque(_check_loopback(ip, "VM address") for ip in ips)
        self._freed_ips: deque[str] = deque()
        self._used_ips: set[str] = set()
        self._tz = timezone(timedelta(hours=timezone_offset_hours))
        self._requested_port = port
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None
        self._stopping = threading.Event()
        self._lock = threading.RLock()
        self.calls: list[Call] = []
        self._faults: list[_ActiveFault] = []
        self._vms: dict[str, _Vm] = {}
        self._jobs: dict[str, _Job] = {}
        self._pending: dict[str, _Job] = {}
        self._events: list[_Event] = []
        self._groups: dict[str, str] = {}
        self._rules: dict[str, dict[str, Any]] = {}
        self._members: dict[str, list[str]] = {}
        self._seq = 0
        self._account_id, self._user_id, self._domain_id = (_new_id() for _ in range(3))
        self._network_id, self._ostype_id = _new_id(), _new_id()
        created = self._format_time(time.time())
        self.zone_id = _new_id()
        self._zone = {
            "id": self.zone_id, "name": "jp-east-t1v", "dns1": "8.8.8.8",
            "internaldns1": "127.0.0.53", "networktype": "Advanced",
            "securitygroupsenabled": False, "allocationstate": "Enabled",
            "zonetoken": _new_id(), "dhcpprovider": "VirtualRouter",
            "localstorageenabled": False, "tags": [],
        }
        self.offering_id = _new_id()
        self._offering = {
            "id": self.offering_id, "name": "S2", "displaytext": "S2 (1 vCPU, 2 GB RAM)",
            "cpunumber": 1, "cpuspeed": 2400, "memory": 2048, "created": created,
            "storagetype": "shared", "offerha": False, "limitcpuuse": False,
            "isvolatile": False, "issystem": False, "defaultuse": False, "iscustomized": False,
        }
        self.template_id = _new_id()
        self._template = {
            "id": self.template_id, "name": "CentOS 7", "displaytext": "CentOS 7",
            "ispublic": True, "created": created, "isready": True, "passwordenabled": False,
            "format": "QCOW2", "isfeatured": True, "crossZones": False,
            "ostypeid": self._ostype_id, "ostypename": "CentOS 7", "account": "system",
            "zoneid": self.zone_id, "zonename": "jp-east-t1v", "status": "Download Complete",
            "size": 16106127360, "templatetype": "BUILTIN", "hypervisor": "KVM",
            "domain": "ROOT", "domainid": self._domain_id, "isextractable": False, "tags": [],
        }
        self.lb_id = self.add_lb_rule("web")
        self._commands: dict[str, Callable[[str, dict[str, str]], dict[str, Any]]] = {
            "listzones": self._list_zones,
            "listserviceofferings": self._list_service_offerings,
            "listtemplates": self._list_templates,
            "listloadbalancerrules": self._list_lb_rules,
            "listloadbalancerruleinstances": self._list_lb_instances,
            "listvirtualmachines": self._list_vms,
            "listevents": self._list_events,
            "deployvirtualmachine": self._deploy_vm,
            "destroyvirtualmachine": self._destroy_vm,
            "assigntoloadbalancerrule": self._lb_change,
            "removefromloadbalancerrule": self._lb_change,
            "queryasyncjobresult": self._query_job,
        }

    # ----------------------------------------------------------------- lifecycle

    @property
    def port(self) -> int:
        """The TCP port the server listens on; valid after start()."""
        if self._server is None:
            raise RuntimeError("the simulator is not running; call start() first")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The API endpoint, http://127.0.0.1:PORT/client/api; valid after start()."""
        return f"http://{self.host}:{self.port}{API_PATH}"

    def start(self) -> Simulator:
        """Listen on host:port and serve in a background thread. Raises OSError if it can't bind."""
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server((self.host, self._requested_port), self)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        name=f"cloudstack-sim:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close open connections and wake requests sleeping in a slow fault."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        server.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ----------------------------------------------------------- test helpers

    def add_vm(self, name: str, *, ip: Optional[str] = None, state: str = "Running",
               group: Optional[str] = None, in_lb: bool = True,
               created: Optional[datetime] = None, displayname: Optional[str] = None) -> dict:
        """Seed an existing VM (no job, no event; a naive `created` is in the simulator's
        timezone); returns its JSON. Raises ValueError for a bad state or address."""
        if state not in VM_STATES:
            raise ValueError(f"state {state!r}: expected one of {', '.join(VM_STATES)}")
        if ip is not None:
            ip = _check_loopback(ip, "VM address")
        if created is None:
            when = time.time()
        else:
            when = (created if created.tzinfo else created.replace(tzinfo=self._tz)).timestamp()
        with self._lock:
            if ip is None:
                ip = self._allocate_ip()
                if ip is None:
                    raise ValueError("no free VM address left in ip_addresses")
            self._used_ips.add(ip)
            vm = self._new_vm(name=name, displayname=displayname, state=state, ip=ip,
                              group=group, created=when)
            if in_lb:
                self._members[self.lb_id].append(vm.id)
            return self._vm_json(vm)

    def add_lb_rule(self, name: str) -> str:
        """Add another load-balancer rule; returns its id."""
        with self._lock:
            rule_id = _new_id()
            self._rules[rule_id] = {
                "id": rule_id, "name": name, "publicipid": _new_id(),
                "publicip": f"203.0.113.{10 + len(self._rules)}", "publicport": "80",
                "privateport": "80", "algorithm": "roundrobin", "networkid": self._network_id,
                "account": "sim", "domainid": self._domain_id, "domain": "ROOT",
                "state": "Active", "zoneid": self.zone_id, "zonename": "jp-east-t1v",
                "protocol": "tcp", "tags": [],
            }
            self._members[rule_id] = []
            return rule_id

    def vms(self, include_gone: bool = False) -> list[dict]:
        """JSON of the VMs in creation order; Destroyed and expunged ones only with include_gone."""
        with self._lock:
            self._advance(time.time())
            return [self._vm_json(vm) for vm in self._vms.values()
                    if include_gone or (not vm.removed and vm.state not in _HIDDEN_STATES)]

    def lb_members(self, lb_id: Optional[str] = None) -> list[dict]:
        """JSON of the VMs an LB rule lists (default self.lb_id), in assignment order. KeyError."""
        with self._lock:
            self._advance(time.time())
            return [self._vm_json(vm) for vm in self._visible_members(lb_id or self.lb_id)]

    def calls_of(self, command: str) -> list[Call]:
        """The received calls of one command (case-insensitive), in order."""
        with self._lock:
            return [c for c in self.calls if c.command.lower() == command.lower()]

    @property
    def events(self) -> list[dict]:
        """JSON of the events emitted so far, oldest first."""
        with self._lock:
            self._advance(time.time())
            return [self._event_json(e) for e in self._events]

    def inject(self, fault: Fault) -> None:
        """Apply fault to the next fault.times matching requests (-1: forever)."""
        with self._lock:
            self._faults.append(_ActiveFault(fault, fault.times))

    def clear_faults(self) -> None:
        """Forget every injected fault."""
        with self._lock:
            self._faults.clear()

    def age(self, seconds: float) -> None:
        """Move every stored timestamp (VMs, events, jobs) seconds into the past."""
        with self._lock:
            for vm in self._vms.values():
                vm.created -= seconds
            for event in self._events:
                event.time -= seconds
            for job in self._jobs.values():
                job.created -= seconds
                job.due -= seconds
                if job.completed is not None:
                    job.completed -= seconds

    def set_state(self, vm_id: str, state: str) -> None:
        """Force a VM's state. Raises KeyError for an unknown VM, ValueError for a bad state."""
        if state not in VM_STATES:
            raise ValueError(f"state {state!r}: expected one of {', '.join(VM_STATES)}")
        with self._lock:
            if vm_id not in self._vms:
                raise KeyError(f"no VM with id {vm_id}")
            self._vms[vm_id].state = state

    def pending_jobs(self) -> int:
        """How many async jobs are not finished (hung ones included)."""
        with self._lock:
            self._advance(time.time())
            return len(self._pending)

    def settle(self, timeout: float = 10) -> None:
        """Wait until every job that can finish has finished (hung jobs never do). TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                now = time.time()
                self._advance(now)
                waiting = [job.due for job in self._pending.values() if not job.hang]
            if not waiting:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{len(waiting)} job(s) still pending after {timeout} s")
            time.sleep(min(max(min(waiting) - now, 0.001), left))

    # ----------------------------------------------------------- HTTP handling

    def _handle_http(self, method: str, target: str, body: str) -> _Answer:
        received = time.time()
        parts = urllib.parse.urlsplit(target)
        params = _parse_params(parts.query, body)
        call = Call(command=params.get("command", ""),
                    params={k: v for k, v in params.items()
                            if k.lower() not in ("signature", "apikey")},
                    status=0, method=method, time=received)
        with self._lock:
            self.calls.append(call)
        if parts.path != API_PATH:
            answer = _Answer(404, "text/html; charset=UTF-8", _NOT_FOUND_BODY)
        else:
            answer = self._answer(params)
        with self._lock:
            call.status = answer.status
        if answer.delay_after:
            self._stopping.wait(answer.delay_after)
        return answer

    def _answer(self, params: dict[str, str]) -> _Answer:
        wants_json = params.get("response", "").lower() == "json"
        # The server looks API names up case-sensitively (s_apiNameCmdClassMap).
        command = params.get("command", "")
        command = command.lower() if command in _API_NAMES else ""
        fault: Optional[Fault] = None
        if command not in self._commands:
            status, headers = 401, {}
            body = _ApiError(401, _BAD_SIGNATURE, None).body("errorresponse")
        elif not verify_request(params, {self.api_key: self.secret_key},
                                datetime.now(timezone.utc)):
            status, headers = 401, {}
            body = _ApiError(401, _BAD_SIGNATURE, None).body(f"{command}response")
        else:
            with self._lock:
                fault = self._take_fault(command, _REQUEST_FAULTS)
            if fault is not None and fault.kind == "html":
                return _Answer(fault.status, "text/html; charset=UTF-8", _HTML_BODY)
            if fault is not None and fault.kind == "http_error":
                status, headers = fault.status, {}
                body = _ApiError(fault.status, _INTERNAL_ERROR).body(f"{command}response")
            else:
                if fault is not None and fault.kind == "slow":
                    self._stopping.wait(fault.delay)
                status, body, headers = self._run(command, params)
        delay_after = fault.delay if fault is not None and fault.kind == "slow_after" else 0.0
        if not wants_json:
            return _Answer(status, "text/xml; charset=UTF-8", _XML_BODY, headers, delay_after)
        return _Answer(status, _JSON_TYPE, _to_json(body), headers, delay_after)

    def _run(self, command: str, params: dict[str, str]) -> tuple[int, dict, dict[str, str]]:
        # ParamUnpackWorker lowercases names; the first spelling of a name wins.
        lowered: dict[str, str] = {}
        for name, value in params.items():
            lowered.setdefault(name.lower(), value)
        envelope = f"{command}response"
        with self._lock:
            self._advance(time.time())
            try:
                return 200, {envelope: self._commands[command](command, lowered)}, {}
            except _ApiError as exc:
                return exc.code, exc.body(envelope), {"X-Description": _header_safe(exc.text)}
            except Exception as exc:  # a simulator bug still gets a server-like answer
                text = f"{_INTERNAL_ERROR} (simulator bug: {exc!r})"
                return 530, _ApiError(530, text).body(envelope), {}

    def _take_fault(self, command: str, kinds: Container[str]) -> Optional[Fault]:
        for active in self._faults:
            fault = active.fault
            if fault.kind in kinds and (fault.command is None or fault.command.lower() == command):
                if active.remaining > 0:
                    active.remaining -= 1
                    if active.remaining == 0:
                        self._faults.remove(active)
                return fault
        return None

    # ------------------------------------------------------- parameter checks

    @staticmethod
    def _required(command: str, params: dict[str, str], name: str) -> str:
        value = params.get(name, "")
        if value == "":
            raise _ApiError(431, f"Unable to execute API command {command} due to missing "
                                 f"parameter {name}")
        return value

    @staticmethod
    def _known(command: str, name: str, value: str, known: Container[str]) -> str:
        if value not in known:
            raise _invalid_value(command, name, value)
        return value

    def _page(self, command: str, params: dict[str, str], items: list[dict],
              key: str) -> dict[str, Any]:
        page_text, size_text = params.get("page"), params.get("pagesize")
        if size_text is None and page_text is not None:
            raise _ApiError(431, '"pagesize" parameter is required when "page" is specified')
        page = self._integer(command, "page", page_text) if page_text is not None else None
        size = (self._integer(command, "pagesize", size_text) if size_text is not None
                else self.page_size)
        if page is None and size != -1 and size_text is not None:
            raise _ApiError(431, '"page" parameter is required when "pagesize" is specified')
        if size > self.page_size:
            raise _ApiError(431, "Page size can't exceed max allowed page size value: "
                                 f"{self.page_size}", 4350)
        if size == -1 and page is not None:
            raise _ApiError(431, "Can't specify page parameter when pagesize is -1 (Unlimited)",
                            4350)
        if not items:
            return {}
        if size == -1:
            shown = items
        else:
            start = size * (page - 1) if page is not None and page > 0 else 0
            shown = items[start:start + max(size, 0)]
        return {"count": len(items), key: shown} if shown else {"count": len(items)}

    @staticmethod
    def _integer(command: str, name: str, value: str) -> int:
        try:
            return int(value)
        except ValueError:
            raise _invalid_value(command, name, value) from None

    # -------------------------------------------------------------- commands

    def _list_zones(self, command: str, params: dict[str, str]) -> dict[str, Any]:
        if "id" in params:
            self._known(command, "id", params["id"], {self.zone_id})
        items = [] if params.get("name", self._zone["name"]) != self._zone["name"] else [self._zone]
        return self._page(command, params, items, "zone")

    def _list_service_offerings(self, command: str, params: dict[str, str]) -> dict[str, Any]:
        if "id" in params:
            self._known(command, "id", params["id"], {self.offering_id})
        name = params.get("name", self._offering["name"])
        items = [self._offering] if name == self._offering["name"] else []
        return self._page(command, params, items, "serviceoffering")

    def _list_templates(self, command: str, params: dict[str, str]) -> dict[str, Any]:
        flt = self._required(command, params, "templatefilter")
        if flt not in TEMPLATE_FILTERS:
            raise _ApiError(431, "No enum constant "
                                 f"com.cloud.template.VirtualMachineTemplate.TemplateFilter.{flt}")
        for name, known in (("id", {self.template_id}), ("zoneid", {self.zone_id})):
            if name in params:
                self._known(command, name, params[name], known)
        visible = flt in ("featured", "executable", "all")
        return self._page(command, params, [self._template] if visible else [], "template")

    def _list_lb_rules(self, command: str, params: dict[str, str]) -> dict[str, Any]:
        if "id" in params:
            self._known(command, "id", params["id"], self._rules)
        items = [rule for rule in self._rules.values()
                 if params.get("id", rule["id"]) == rule["id"]
                 and params.get("name", rule["name"]) == rule["name"]]
        return self._page(command, params, items, "loadbalancerrule")

    def _list_lb_instances(self, command: str, params: dict[str, str]) -> dict[str, Any]:
        rule_id = self._known(command, "id", self._required(command, params, "id"), self._rules)
        if not _is_true(params.get("applied"), True):
            return {}
        members = self._visible_members(rule_id)
        if not members:
            return {}
        if _is_true(params.get("lbvmips"), False):
            items = [{"loadbalancerruleinstance": self._vm_json(vm), "lbvmipaddresses": [vm.ip]}
                     for vm in members]
            return {"count": len(items), "lbrulevmidip": items}
        return {"count": len(members),
                "loadbalancerruleinstance": [self._vm_json(vm) for vm in members]}

    def _list_vms(self, command: str, params: dict[str, str]) -> dict[str, Any]:
        vms = [vm for vm in self._vms.values()
               if not vm.removed and vm.state not in _HIDDEN_STATES]
        if "id" in params:
            wanted = self._known(command, "id", params["id"], self._vms)
            vms = [vm for vm in vms if vm.id == wanted]
        if "ids" in params:
            ids = {self._known(command, "ids", one, self._vms)
                   for one in params["ids"].split(",") if one}
            vms = [vm for vm in vms if vm.id in ids]
        if "name" in params:  # a LIKE %name% match, as QueryManagerImpl does
            vms = [vm for vm in vms if params["name"].lower() in vm.name.lower()]
        state = params.get("state", "")
        if state and state.lower() != "present":
            vms = [vm for vm in vms if vm.state.lower() == state.lower()]
        for name, known in (("zoneid", {self.zone_id}), ("templateid", {self.template_id}),
                            ("serviceofferingid", {self.offering_id})):
            if name in params:
                self._known(command, name, params[name], known)
        if "groupid" in params:
            groupid = self._known(command, "groupid", params["groupid"],
                                  set(self._groups.values()))
            vms = [vm for vm in vms if vm.groupid == groupid]
        if params.get("keyword"):
            word = params["keyword"].lower()
            vms = [vm for vm in vms
                   if any(word in text.lower() for text in (vm.name, vm.displayname, vm.state))]
        return self._page(command, params, [self._vm_json(vm) for vm in vms], "virtualmachine")

    def _list_events(self, command: str, params: dict[str, str]) -> dict[str, Any]:
        events = sorted(self._events, key=lambda e: (int(e.time), e.seq), reverse=True)
        if params.get("type"):
            events = [e for e in events if e.type.lower() == params["type"].lower()]
        if params.get("startdate"):
            start = self._parse_date(command, params["startdate"])
            events = [e for e in events if int(e.time) >= start]
        if params.get("enddate"):
            end = self._parse_date(command, params["enddate"])
            events = [e for e in events if int(e.time) <= end]
        if params.get("level", "INFO").upper() != "INFO":      # every simulated event is INFO
            events = []
        if params.get("keyword"):  # LIKE %keyword% over type, description and level
            word = params["keyword"].lower()
            events = [e for e in events if word in e.type.lower()
                      or word in e.description.lower() or word in "info"]
        return self._page(command, params, [self._event_json(e) for e in events], "event")

    def _parse_date(self, command: str, value: str) -> int:
        for pattern in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d"):
            try:
                return int(datetime.strptime(value, pattern).replace(tzinfo=self._tz).timestamp())
            except ValueError:
                continue
        raise _ApiError(431, f"Unable to parse date {value} for command {command}, please pass "
                             "dates in the format mentioned in the api documentation")

    def _deploy_vm(self, command: str, params: dict[str, str]) -> dict[str, Any]:
        for name, known in (("zoneid", {self.zone_id}), ("serviceofferingid", {self.offering_id}),
                            ("templateid", {self.template_id})):
            self._known(command, name, self._required(command, params, name), known)
        name = params.get("name") or None
        if name is not None:
            if not _HOSTNAME.fullmatch(name):
                raise _ApiError(431, "Invalid name. Vm name can contain ASCII letters 'a' through "
                                     "'z', the digits '0' through '9', and the hyphen ('-'), must "
                                     "be between 1 and 63 characters long, and can't start or end "
                                     'with "-" and can\'t start with digit', 4350)
            if any(vm.name.lower() == name.lower() for vm in self._vms.values()
                   if not vm.removed and vm.state not in _HIDDEN_STATES):
                raise _ApiError(431, f"The vm with hostName {name} already exists in the network "
                                     "domain: cs2cloud.internal; network=sim-network", 4350)
        ip = self._allocate_ip()
        if ip is None:
            raise _ApiError(533, "Insufficient address capacity: no free guest IP address in "
                                 "network sim-network")
        known_params = {"command", "response", "signatureversion", "expires", "zoneid",
                        "serviceofferingid", "templateid", "name", "displayname", "group"}
        vm = self._new_vm(name=name, displayname=params.get("displayname") or None,
                          state="Stopped", ip=ip, group=params.get("group") or None,
                          created=time.time(),
                          extra={k: v for k, v in params.items() if k not in known_params})
        job = self._new_job(command, vm=vm, start=_is_true(params.get("startvm"), True))
        return {"id": vm.id, "jobid": job.id}

    def _destroy_vm(self, command: str, params: dict[str, str]) -> dict[str, Any]:
        vm_id = self._known(command, "id", self._required(command, params, "id"), self._vms)
        vm = self._vms[vm_id]
        if vm.removed:
            raise _ApiError(431, f"Unable to find a virtual machine with specified vmId {vm_id}",
                            4350)
        job = self._new_job(command, vm=vm, expunge=_is_true(params.get("expunge"), False))
        if vm.state == "Running":
            vm.state = "Stopping"
        return {"jobid": job.id}

    def _lb_change(self, command: str, params: dict[str, str]) -> dict[str, Any]:
        rule_id = self._known(command, "id", self._required(command, params, "id"), self._rules)
        vm_ids = [one for one in params.get("virtualmachineids", "").split(",") if one]
        vm_ids += [value for name, value in sorted(params.items())
                   if re.fullmatch(r"vmidipmap\[\d+\]\.vmid", name)]
        if not vm_ids:
            raise _ApiError(431, f"Unable to execute API command {command} due to missing "
                                 "parameter virtualmachineids")
        live = {vm.id for vm in self._vms.values() if not vm.removed}
        for one in vm_ids:
            self._known(command, "virtualmachineids", one, live)
            if command == "assigntoloadbalancerrule" and \
                    self._vms[one].state in _HIDDEN_STATES:
                raise _ApiError(431, f"Unable to execute API command {command}: VM {one} is "
                                     f"{self._vms[one].state}", 4350)
        job = self._new_job(command, rule_id=rule_id, vm_ids=list(dict.fromkeys(vm_ids)))
        return {"jobid": job.id}

    def _query_job(self, command: str, params: dict[str, str]) -> dict[str, Any]:
        job_id = self._known(command, "jobid", self._required(command, params, "jobid"),
                             self._jobs)
        return self._job_json(self._jobs[job_id])

    # ------------------------------------------------------------ state, jobs

    def _allocate_ip(self) -> Optional[str]:
        for pool in (self._fresh_ips, self._freed_ips):
            while pool:
                ip = pool.popleft()
                if ip not in self._used_ips:
                    self._used_ips.add(ip)
                    return ip
        return None

    def _new_vm(self, *, name: Optional[str], displayname: Optional[str], state: str, ip: str,
                group: Optional[str], created: float,
                extra: Optional[dict[str, str]] = None) -> _Vm:
        self._seq += 1
        instancename = f"i-2-{self._seq}-VM"
        groupid = None
        if group is not None:
            groupid = self._groups.setdefault(group, _new_id())
        vm = _Vm(id=_new_id(), seq=self._seq, name=name or instancename,
                 displayname=displayname or name or instancename, state=state, ip=ip,
                 created=created, group=group, groupid=groupid, nic_id=_new_id(),
                 extra=dict(extra or {}))
        self._vms[vm.id] = vm
        return vm

    def _new_job(self, command: str, *, vm: Optional[_Vm] = None, rule_id: Optional[str] = None,
                 vm_ids: Optional[list[str]] = None, start: bool = True,
                 expunge: bool = False) -> _Job:
        fault = self._take_fault(command, _JOB_FAULTS)
        now = time.time()
        self._seq += 1
        job = _Job(id=_new_id(), seq=self._seq, command=command, created=now,
                   due=now + self.job_seconds,
                   hang=fault is not None and fault.kind == "job_hang",
                   fail=fault.errortext if fault is not None and fault.kind == "job_fail" else None,
                   vm_id=vm.id if vm is not None else None, rule_id=rule_id,
                   vm_ids=vm_ids or [], start=start, expunge=expunge,
                   prev_state=vm.state if vm is not None else "")
        if vm is not None:
            vm.job_id = job.id
        self._jobs[job.id] = job
        self._pending[job.id] = job
        return job

    def _advance(self, now: float) -> None:
        """Move VMs through their jobs' middle states (a deploy: Stopped, then Starting from a
        third of the job; a destroy: Stopping, then Stopped from half of it), then finish
        every job whose time has come, in the order they fall due."""
        for job in self._pending.values():
            vm = self._vms.get(job.vm_id) if job.vm_id is not None else None
            if vm is None:
                continue
            elapsed = (now - job.created) / max(job.due - job.created, 1e-9)
            if job.command == "deployvirtualmachine" and vm.state == "Stopped" and elapsed >= 1 / 3:
                vm.state = "Starting"
            if job.command == "destroyvirtualmachine" and vm.state == "Stopping" and elapsed >= .5:
                vm.state = "Stopped"
        due = [job for job in self._pending.values() if not job.hang and job.due <= now]
        for job in sorted(due, key=lambda j: (j.due, j.seq)):
            self._finish(job)

    def _finish(self, job: _Job) -> None:
        del self._pending[job.id]
        job.completed = job.due
        vm = self._vms.get(job.vm_id) if job.vm_id is not None else None
        if vm is not None and vm.job_id == job.id:
            vm.job_id = None
        if job.fail is not None:
            job.status, job.result_code = 2, 533
            job.result = {"errorcode": 533, "errortext": job.fail}
            if vm is not None and job.command == "deployvirtualmachine" and \
                    vm.state in ("Stopped", "Starting"):
                vm.state = "Error"
            if vm is not None and job.command == "destroyvirtualmachine" and \
                    vm.state in ("Stopping", "Stopped"):
                vm.state = job.prev_state
            return
        job.status = 1
        if job.command == "deployvirtualmachine" and vm is not None:
            if vm.state in ("Stopped", "Starting"):
                vm.state = "Running" if job.start else "Stopped"
            job.result = {"virtualmachine": self._vm_json(vm)}
            self._emit("VM.CREATE", f"Successfully completed starting Vm. Vm Id: {vm.id}",
                       vm.id, "VirtualMachine", job.completed)
        elif job.command == "destroyvirtualmachine" and vm is not None:
            vm.state = "Destroyed"
            for members in self._members.values():
                if vm.id in members:
                    members.remove(vm.id)
            job.result = {"virtualmachine": self._vm_json(vm)}
            if job.expunge and not vm.removed:
                vm.removed, vm.state = True, "Expunging"
                self._used_ips.discard(vm.ip)
                self._freed_ips.append(vm.ip)
            self._emit("VM.DESTROY", f"Successfully completed destroying Vm. Vm Id: {vm.id}",
                       vm.id, "VirtualMachine", job.completed)
        elif job.rule_id is not None:
            members = self._members[job.rule_id]
            present = [one for one in job.vm_ids if one in self._vms and not self._vms[one].removed]
            if job.command == "assigntoloadbalancerrule":
                members.extend(one for one in present if one not in members)
                event, verb = "LB.ASSIGN.TO.RULE", "assigning to"
            else:
                members[:] = [one for one in members if one not in present]
                event, verb = "LB.REMOVE.FROM.RULE", "removing from"
            job.result = {"success": True}
            self._emit(event, f"Successfully completed {verb} load balancer. Load balancer Id: "
                              f"{job.rule_id}, Vm Ids: {','.join(job.vm_ids)}",
                       job.rule_id, "LoadBalancerRule", job.completed)

    def _emit(self, kind: str, description: str, resource_id: str, resource_type: str,
              when: float) -> None:
        self._seq += 1
        self._events.append(_Event(id=_new_id(), seq=self._seq, type=kind,
                                   description=description, resource_id=resource_id,
                                   resource_type=resource_type, time=when))

    def _visible_members(self, rule_id: str) -> list[_Vm]:
        return [self._vms[one] for one in self._members[rule_id]
                if not self._vms[one].removed and self._vms[one].state not in _LB_HIDDEN_STATES]

    # ------------------------------------------------------------------- JSON

    def _format_time(self, when: float) -> str:
        return datetime.fromtimestamp(when, self._tz).strftime("%Y-%m-%dT%H:%M:%S%z")

    def _vm_json(self, vm: _Vm) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": vm.id, "name": vm.name, "displayname": vm.displayname, "account": "sim",
            "userid": self._user_id, "username": "sim", "domainid": self._domain_id,
            "domain": "ROOT", "created": self._format_time(vm.created), "state": vm.state,
            "haenable": False,
        }
        if vm.group is not None:
            out["groupid"], out["group"] = vm.groupid, vm.group
        out.update({
            "zoneid": self.zone_id, "zonename": self._zone["name"],
            "templateid": self.template_id, "templatename": self._template["name"],
            "templatedisplaytext": self._template["displaytext"], "passwordenabled": False,
            "serviceofferingid": self.offering_id, "serviceofferingname": self._offering["name"],
            "cpunumber": self._offering["cpunumber"], "cpuspeed": self._offering["cpuspeed"],
            "memory": self._offering["memory"], "guestosid": self._ostype_id,
            "rootdeviceid": 0, "rootdevicetype": "ROOT", "securitygroup": [],
            "nic": [{
                "id": vm.nic_id, "networkid": self._network_id, "networkname": "sim-network",
                "netmask": "255.0.0.0", "gateway": "127.0.0.1", "ipaddress": vm.ip,
                "traffictype": "Guest", "type": "Isolated", "isdefault": True,
                "macaddress": "02:00:" + ":".join(f"{b:02x}" for b in vm.seq.to_bytes(4, "big")),
                "secondaryip": [], "extradhcpoption": [],
            }],
            "hypervisor": "KVM", "affinitygroup": [], "isdynamicallyscalable": False,
            "ostypeid": self._ostype_id, "tags": [],
        })
        if vm.extra.get("keypair"):
            out["keypair"] = vm.extra["keypair"]
        if self.admin:
            out["instancename"] = vm.instancename
        if vm.job_id is not None:
            out["jobid"], out["jobstatus"] = vm.job_id, 0
        return out

    def _event_json(self, event: _Event) -> dict[str, Any]:
        return {
            "id": event.id, "username": "sim", "type": event.type, "level": "INFO",
            "description": event.description, "account": "sim", "domainid": self._domain_id,
            "domain": "ROOT", "created": self._format_time(event.time), "state": "Completed",
            "resourceid": event.resource_id, "resourcetype": event.resource_type,
        }

    def _job_json(self, job: _Job) -> dict[str, Any]:
        out: dict[str, Any] = {
            "accountid": self._account_id, "userid": self._user_id,
            "cmd": _JOB_CLASSES[job.command], "jobprocstatus": 0,
            "jobresultcode": job.result_code,
        }
        if job.status != 0:
            out["jobresulttype"], out["jobresult"] = "object", job.result
        if job.vm_id is not None:
            out["jobinstancetype"], out["jobinstanceid"] = "VirtualMachine", job.vm_id
        out["created"] = self._format_time(job.created)
        if job.completed is not None:
            out["completed"] = self._format_time(job.completed)
        out["jobid"], out["jobstatus"] = job.id, job.status
        return out


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False          # stop() must not wait for keep-alive or sleeping handlers
    request_queue_size = 128        # ~30 clients connect at once

    def __init__(self, address: tuple[str, int], simulator: Simulator) -> None:
        self.simulator = simulator
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, connection: socket.socket, open_: bool) -> None:
        with self._connections_lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_connections(self) -> None:
        """Hang up on keep-alive clients so no stale handler answers after stop()."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that hang up (timeouts during slow faults) are expected; stay quiet.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "cloudstack-sim"
    timeout = 120                   # idle keep-alive connections go away eventually
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def do_GET(self) -> None:
        self._serve("")

    def do_POST(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.send_error(400, "bad Content-Length")
            return
        self._serve(self.rfile.read(max(length, 0)).decode("utf-8", "replace"))

    def _serve(self, body: str) -> None:
        answer = self.server.simulator._handle_http(self.command, self.path, body)
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(answer.body)))
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(answer.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _ini_snippet(sim: Simulator) -> str:
    return "\n".join([
        f"# cloudstack-sim serving {sim.url} (Ctrl-C stops); paste into ~/.idcfrc",
        "[account]",
        f"host = {sim.url}",
        f"api_key = {sim.api_key}",
        f"secret_key = {sim.secret_key}",
        "",
        "[launch_config]",
        f"zoneid = {sim.zone_id}",
        f"serviceofferingid = {sim.offering_id}",
        f"templateid = {sim.template_id}",
        "",
        "[scalling]",
        f"load_balancer = {sim.lb_id}",
    ])


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cloudstack-sim", description=__doc__)
    parser.add_argument("--port", type=int, default=8080,
                        help="TCP port on 127.0.0.1 (default 8080; 0 picks a free one)")
    parser.add_argument("--job-seconds", type=float, default=1.0,
                        help="how long each async job runs (default 1.0)")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY, help="accepted apiKey")
    parser.add_argument("--secret-key", default=DEFAULT_SECRET_KEY, help="its secret key")
    parser.add_argument("--vms", type=int, default=0, metavar="N",
                        help="seed N Running VMs in the LB rule, named web1..webN")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the simulator until Ctrl-C (130) or SIGTERM (0); 1 if it cannot listen."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port {args.port}: expected 0..65535")
    if args.job_seconds < 0:
        parser.error(f"--job-seconds {args.job_seconds}: expected >= 0")
    if args.vms < 0:
        parser.error(f"--vms {args.vms}: expected >= 0")
    sim = Simulator(args.api_key, args.secret_key, port=args.port, job_seconds=args.job_seconds)
    try:
        sim.start()
    except OSError as exc:
        print(f"cloudstack-sim: error: cannot listen on 127.0.0.1:{args.port}: "
              f"{exc.strerror or exc} (choose another --port)", file=sys.stderr)
        return 1
    stop = threading.Event()
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set()) if in_main_thread else None
    try:
        for n in range(1, args.vms + 1):
            sim.add_vm(f"web{n}")
        print(_ini_snippet(sim), flush=True)
        while not stop.wait(0.5):
            pass
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        sim.stop()
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
