"""The Simulator: a CloudStack management server on loopback. Its lifecycle (start, stop), the
request pipeline (signature, faults, command) and the helpers tests use to seed, break, inspect
and settle the cloud."""

from __future__ import annotations

import itertools
import json
import threading
import time
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Optional

from . import tags, views
from .commands import COMMANDS
from .faults import REQUEST_FAULTS, Fault, FaultBook
from .params import ApiError
from .records import DEFAULT_IPS, VM_STATES, Tag, check_loopback
from .server import Answer, ApiHttpServer
from .signing import DEFAULT_API_KEY, DEFAULT_SECRET_KEY, verify_request
from .state import Cloud
from .versions import CLOUDSTACK_VERSIONS, SERVERS

__all__ = ["API_PATH", "Call", "Route", "Simulator"]

API_PATH = "/client/api"
_BAD_SIGNATURE = "unable to verify user credentials and/or request signature"
# ApiServer.commandAvailable: the role checker refused the command (verifyRequest, API keys).
_DENIED = "The given command '{}' either does not exist, is not available for user."
_INTERNAL_ERROR = "Internal error executing command, please contact your system administrator"
_HTML_BODY = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
_NOT_FOUND_BODY = b"<html><body><h1>404 Not Found</h1></body></html>"
_XML_BODY = b'<?xml version="1.0"?><error>json only in simulator</error>'
_JSON_TYPE = "application/json; charset=UTF-8"
_HTML_TYPE = "text/html; charset=UTF-8"

#: A path served beside the API: the request's parameters -> (HTTP status, JSON body).
Route = Callable[[dict[str, str]], tuple[int, Any]]


@dataclass
class Call:
    """One request the simulator received; status is 0 until it is answered."""

    command: str
    params: dict[str, str]
    status: int
    method: str
    time: float


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


def _resource_types(names: Iterable[str]) -> frozenset[str]:
    try:
        return frozenset(tags.resource_type(name) for name in names)
    except ApiError as exc:
        raise ValueError(f"untaggable: {exc.text}") from None


def _lowered(params: dict[str, str]) -> dict[str, str]:
    # ParamUnpackWorker lowercases names; the first spelling of a name wins.
    lowered: dict[str, str] = {}
    for name, value in params.items():
        lowered.setdefault(name.lower(), value)
    return lowered


class Simulator:
    """A CloudStack management server on loopback with one zone, offering, a featured and an own
    template, and an LB rule. `cloudstack` picks the server version whose answers it gives
    (see CLOUDSTACK_VERSIONS); `untaggable` names resource types that refuse tags."""

    def __init__(self, api_key: str = DEFAULT_API_KEY, secret_key: str = DEFAULT_SECRET_KEY, *,
                 host: str = "127.0.0.1", port: int = 0, job_seconds: float = 1.0,
                 ip_addresses: Optional[Sequence[str]] = None,
                 timezone_offset_hours: int = 9, admin: bool = False,
                 cloudstack: str = "4.19", untaggable: Iterable[str] = ()) -> None:
        if job_seconds < 0:
            raise ValueError(f"job_seconds {job_seconds}: expected >= 0")
        if cloudstack not in CLOUDSTACK_VERSIONS:
            raise ValueError(f"cloudstack {cloudstack!r}: expected one of "
                             f"{', '.join(CLOUDSTACK_VERSIONS)}")
        self.cloudstack = cloudstack
        self.api_key = api_key
        self.secret_key = secret_key
        self.host = check_loopback(host, "host")
        #: Seconds added to the HTTP Date header (see skew_clock).
        self.clock_skew = 0.0
        #: Seconds added to the clock that checks a signature's `expires` (see skew_clock).
        self.signature_skew = 0.0
        self.calls: list[Call] = []
        self._requested_port = port
        self._server: Optional[ApiHttpServer] = None
        self._thread: Optional[threading.Thread] = None
        self._stopping = threading.Event()
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)    # a request was acted on
        self._faults = FaultBook()
        self._routes: dict[str, Route] = {}
        self._in_flight: dict[int, float] = {}             # token -> when it will act
        self._tokens = itertools.count()
        self._tz = timezone(timedelta(hours=timezone_offset_hours))
        self._cloud = Cloud(job_seconds=job_seconds,
                            ip_addresses=list(DEFAULT_IPS if ip_addresses is None
                                              else ip_addresses),
                            tz=self._tz, admin=admin, faults=self._faults,
                            server=SERVERS[cloudstack],
                            untaggable=_resource_types(untaggable))
        self.zone_id = self._cloud.zone_id
        self.offering_id = self._cloud.offering_id
        self.network_id = self._cloud.network_id
        #: The featured template (public); own_template_id is the account's own one.
        self.template_id = self._cloud.template_id
        self.own_template_id = self._cloud.own_template_id
        self.lb_id = self.add_lb_rule("web")

    # ----------------------------------------------------------------- settings

    @property
    def job_seconds(self) -> float:
        """How long each new async job runs."""
        return self._cloud.job_seconds

    @job_seconds.setter
    def job_seconds(self, seconds: float) -> None:
        self._cloud.job_seconds = seconds

    @property
    def admin(self) -> bool:
        """Root-admin visibility: only admins see a VM's "instancename"."""
        return self._cloud.admin

    @admin.setter
    def admin(self, value: bool) -> None:
        self._cloud.admin = value

    @property
    def page_size(self) -> int:
        """The cloud's default.page.size: the default and the largest pagesize accepted."""
        return self._cloud.page_size

    @page_size.setter
    def page_size(self, size: int) -> None:
        self._cloud.page_size = size

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
        self._server = ApiHttpServer((self.host, self._requested_port), self)
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

    def config_sections(self) -> dict[str, dict[str, str]]:
        """A config for this simulator: [account], [launch_config] and [scalling] keys."""
        return {
            "account": {"host": self.url, "api_key": self.api_key,
                        "secret_key": self.secret_key},
            "launch_config": {"zoneid": self.zone_id, "serviceofferingid": self.offering_id,
                              "templateid": self.template_id},
            "scalling": {"load_balancer": self.lb_id},
        }

    # ----------------------------------------------------------- test helpers

    def add_vm(self, name: str, *, ip: Optional[str] = None, state: str = "Running",
               group: Optional[str] = None, in_lb: bool = True,
               created: Optional[datetime] = None, displayname: Optional[str] = None,
               lb_id: Optional[str] = None) -> dict:
        """Seed an existing VM (no job, no event; a naive `created` is in the simulator's
        timezone), with in_lb a member of the rule lb_id (default self.lb_id); returns its
        JSON. Raises ValueError for a bad state or address, KeyError for an unknown rule."""
        _check_state(state)
        if ip is not None:
            ip = check_loopback(ip, "VM address")
        if created is None:
            when = self._cloud.stamp(time.time())
        else:
            when = (created if created.tzinfo else created.replace(tzinfo=self._tz)).timestamp()
        with self._lock:
            rule = self._cloud.rules[lb_id or self.lb_id]
            if ip is None:
                ip = self._cloud.addresses.allocate()
                if ip is None:
                    raise ValueError("no free VM address left in ip_addresses")
            self._cloud.addresses.claim(ip)
            vm = self._cloud.new_vm(name=name, displayname=displayname, state=state, ip=ip,
                                    group=group, created=when, template_id=self.template_id)
            if in_lb:
                rule.members.append(vm.id)
            return views.vm_json(self._cloud, vm)

    def add_route(self, path: str, route: Route) -> None:
        """Serve `path` beside the API with route(params) -> (status, JSON body): unsigned and
        not recorded in calls (the trial's /sim/load, which sets the load its VMs report)."""
        with self._lock:
            self._routes[path] = route

    def add_lb_rule(self, name: str) -> str:
        """Add another load-balancer rule; returns its id."""
        with self._lock:
            return self._cloud.add_rule(name).id

    def vms(self, include_gone: bool = False) -> list[dict]:
        """JSON of the VMs in creation order; Destroyed and expunged ones only with include_gone."""
        with self._lock:
            self._cloud.advance(time.time())
            shown = self._cloud.vms.values() if include_gone else self._cloud.listed_vms()
            return [views.vm_json(self._cloud, vm) for vm in shown]

    def lb_members(self, lb_id: Optional[str] = None) -> list[dict]:
        """JSON of the VMs an LB rule lists (default self.lb_id), in assignment order. KeyError."""
        with self._lock:
            self._cloud.advance(time.time())
            return [views.vm_json(self._cloud, vm)
                    for vm in self._cloud.visible_members(lb_id or self.lb_id)]

    def calls_of(self, command: str) -> list[Call]:
        """The received calls of one command (case-insensitive), in order."""
        with self._lock:
            return [c for c in self.calls if c.command.lower() == command.lower()]

    @property
    def events(self) -> list[dict]:
        """JSON of the events emitted so far, oldest first."""
        with self._lock:
            self._cloud.advance(time.time())
            return [views.event_json(self._cloud, e) for e in self._cloud.events]

    def job(self, jobid: str) -> dict[str, Any]:
        """One async job as the simulator keeps it: jobid, command, status (0 pending, 1 done,
        2 failed), hung, and created/due/completed in epoch seconds (completed None while
        pending). Raises KeyError for an unknown jobid."""
        with self._lock:
            self._cloud.advance(time.time())
            job = self._cloud.jobs[jobid]
            return {"jobid": job.id, "command": job.command, "status": job.status,
                    "hung": job.hang, "created": job.created, "due": job.due,
                    "completed": job.completed}

    def internal_id(self, resource_id: str) -> int:
        """The internal number of a VM or LB rule, as event texts name it. KeyError."""
        with self._lock:
            table: dict[str, Any] = {**self._cloud.vms, **self._cloud.rules}
            return int(table[resource_id].seq)

    def tags(self, resource_id: str) -> dict[str, str]:
        """The tags on a VM or LB rule as {key: value}."""
        with self._lock:
            self._cloud.advance(time.time())
            return {tag.key: tag.value for tag in self._cloud.tags_of(resource_id)}

    def set_tag(self, resource_id: str, key: str, value: str) -> None:
        """Seed a tag on a VM or LB rule (no job, no event), replacing one with the same key
        (any case). Raises KeyError for an unknown resource."""
        with self._lock:
            kind = self._kind_of(resource_id)
            self._drop_tag(resource_id, key)
            self._cloud.tags.append(Tag(self._cloud.next_id("tag"), key, value, kind,
                                        resource_id))

    def delete_tag(self, resource_id: str, key: str) -> None:
        """Remove a tag (key in any case) without a job or event. KeyError if there is none."""
        with self._lock:
            if not self._drop_tag(resource_id, key):
                raise KeyError(f"no tag {key!r} on {resource_id}")

    def _kind_of(self, resource_id: str) -> str:
        if resource_id in self._cloud.vms:
            return "UserVm"
        if resource_id in self._cloud.rules:
            return "LoadBalancer"
        raise KeyError(f"no VM or LB rule with id {resource_id}")

    def _drop_tag(self, resource_id: str, key: str) -> bool:
        kept = [tag for tag in self._cloud.tags
                if tag.resource_id != resource_id or tag.key.lower() != key.lower()]
        dropped = len(kept) != len(self._cloud.tags)
        self._cloud.tags[:] = kept
        return dropped

    def set_service_state(self, vm_id: str, state: Optional[str],
                          lb_id: Optional[str] = None) -> None:
        """Set (None: clear) a member's service state, as a health check would. KeyError unless
        the VM is a member of the rule (default self.lb_id)."""
        with self._lock:
            rule = self._cloud.rules[lb_id or self.lb_id]
            if vm_id not in rule.members:
                raise KeyError(f"VM {vm_id} is not a member of LB rule {rule.id}")
            if state is None:
                rule.service_states.pop(vm_id, None)
            else:
                rule.service_states[vm_id] = state

    def deny(self, *commands: str) -> None:
        """Refuse these API names to the account, as a role without them does: each call is
        a 401 and listApis leaves them out (deny "listApis" for a cloud without the API
        discovery plugin's answer)."""
        with self._lock:
            self._cloud.denied.update(commands)

    def inject(self, fault: Fault) -> None:
        """Apply fault to the next fault.times matching requests (-1: forever)."""
        with self._lock:
            self._faults.add(fault)

    def clear_faults(self) -> None:
        """Forget every injected fault."""
        with self._lock:
            self._faults.clear()

    def age(self, seconds: float) -> None:
        """Move every stored timestamp (VMs, events, jobs) seconds into the past."""
        with self._lock:
            self._cloud.age(seconds)

    def skew_clock(self, seconds: float, *, signatures: bool = False,
                   records: bool = False) -> None:
        """From now on the HTTP Date header is `seconds` off the real time (0 undoes it); with
        signatures, so is the clock that checks `expires` (a client on the real clock is then
        as far off as a monitor whose clock is off: more than its lifetime behind, refused);
        with records, so are the times the cloud stamps from now on (VMs created, events), as
        on a cloud whose own clock is that far ahead. Records stamped before keep their times
        (move them with age())."""
        self.clock_skew = float(seconds)
        self.signature_skew = float(seconds) if signatures else 0.0
        with self._lock:
            self._cloud.record_skew = float(seconds) if records else 0.0

    def set_state(self, vm_id: str, state: str) -> None:
        """Force a VM's state. Raises KeyError for an unknown VM, ValueError for a bad state."""
        _check_state(state)
        with self._lock:
            if vm_id not in self._cloud.vms:
                raise KeyError(f"no VM with id {vm_id}")
            self._cloud.vms[vm_id].state = state

    def release_hung(self) -> int:
        """Let every hung job (a job_hang fault) finish now, as a slow server's finally
        would; returns how many there were."""
        with self._changed:
            now = time.time()
            hung = [job for job in self._cloud.pending.values() if job.hang]
            for job in hung:
                job.hang, job.due = False, now
            self._cloud.advance(now)
            self._changed.notify_all()
            return len(hung)

    def pending_jobs(self) -> int:
        """How many async jobs are not finished (hung ones included)."""
        with self._lock:
            self._cloud.advance(time.time())
            return len(self._cloud.pending)

    def settle(self, timeout: float = 10) -> None:
        """Wait until every request received has been acted on and every job that can finish
        has finished. Hung jobs never do; a request a `slow` fault holds beyond the timeout is
        left in flight like them. Raises TimeoutError when the rest is not done in time."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                now = time.time()
                self._cloud.advance(now)
                left = deadline - time.monotonic()
                jobs = [job.due for job in self._cloud.pending.values() if not job.hang]
                requests = [due for due in self._in_flight.values() if due - now <= left]
                if not jobs and not requests:
                    return
                if left <= 0:
                    raise TimeoutError(f"{len(jobs)} job(s) and {len(requests)} request(s) "
                                       f"still pending after {timeout} s")
                # Requests notify when they have acted; jobs fall due at known times.
                wake = min(jobs) - now if jobs else left
                self._changed.wait(min(max(wake, 0.001), left))

    # ----------------------------------------------------------- HTTP handling

    def handle_http(self, method: str, target: str, body: str) -> Answer:
        """The answer to one request; it is in flight (see settle) until it has been acted on."""
        received = time.time()
        parts = urllib.parse.urlsplit(target)
        params = _parse_params(parts.query, body)
        with self._lock:
            route = self._routes.get(parts.path)
        if route is not None:
            status, reply = route(params)
            return Answer(status, _JSON_TYPE, _to_json(reply))
        call = Call(command=params.get("command", ""),
                    params={k: v for k, v in params.items()
                            if k.lower() not in ("signature", "apikey")},
                    status=0, method=method, time=received)
        with self._lock:
            self.calls.append(call)
            token = next(self._tokens)
            self._in_flight[token] = received
        try:
            answer = (self._answer(params, token) if parts.path == API_PATH
                      else Answer(404, _HTML_TYPE, _NOT_FOUND_BODY))
            with self._lock:
                call.status = answer.status
        finally:
            with self._changed:
                del self._in_flight[token]
                self._changed.notify_all()
        if answer.delay_after:
            self._stopping.wait(answer.delay_after)
        return answer

    def _answer(self, params: dict[str, str], token: int) -> Answer:
        wants_json = params.get("response", "").lower() == "json"
        name = params.get("command", "")
        # The server looks API names up case-sensitively (s_apiNameCmdClassMap).
        command = name.lower() if name in COMMANDS else ""
        fault: Optional[Fault] = None
        if not command:
            status, headers = 401, {}
            body = ApiError(401, _BAD_SIGNATURE, None).body("errorresponse")
        elif not verify_request(params, {self.api_key: self.secret_key},
                                datetime.now(timezone.utc) +
                                timedelta(seconds=self.signature_skew)):
            status, headers = 401, {}
            body = ApiError(401, _BAD_SIGNATURE, None).body(f"{command}response")
        elif name in self._cloud.denied:
            status, headers = 401, {}
            body = ApiError(401, _DENIED.format(name), None).body(f"{command}response")
        else:
            with self._lock:
                fault = self._faults.take(command, REQUEST_FAULTS)
            if fault is not None and fault.kind == "html":
                return Answer(fault.status, _HTML_TYPE, _HTML_BODY)
            if fault is not None and fault.kind == "http_error":
                status, headers = fault.status, {}
                body = ApiError(fault.status, _INTERNAL_ERROR).body(f"{command}response")
            else:
                if fault is not None and fault.kind == "slow":
                    self._hold(token, fault.delay)
                status, body, headers = self._run(name, command, params)
        delay_after = fault.delay if fault is not None and fault.kind == "slow_after" else 0.0
        if not wants_json:
            return Answer(status, "text/xml; charset=UTF-8", _XML_BODY, headers, delay_after)
        return Answer(status, _JSON_TYPE, _to_json(body), headers, delay_after)

    def _hold(self, token: int, delay: float) -> None:
        """Sleep delay seconds (or until stop) before acting, and tell settle() so."""
        with self._lock:
            self._in_flight[token] = time.time() + delay
        self._stopping.wait(delay)

    def _run(self, name: str, command: str,
             params: dict[str, str]) -> tuple[int, dict, dict[str, str]]:
        envelope = f"{command}response"
        with self._lock:
            self._cloud.advance(time.time())
            try:
                return 200, {envelope: COMMANDS[name](self._cloud, command, _lowered(params))}, {}
            except ApiError as exc:
                return exc.code, exc.body(envelope), {"X-Description": _header_safe(exc.text)}
            except Exception as exc:  # a simulator bug still gets a server-like answer
                text = f"{_INTERNAL_ERROR} (simulator bug: {exc!r})"
                return 530, ApiError(530, text).body(envelope), {}


def _check_state(state: str) -> None:
    if state not in VM_STATES:
        raise ValueError(f"state {state!r}: expected one of {', '.join(VM_STATES)}")
