"""Health checks and replacement, end to end: the installed command, the simulator, the real
sshd on several loopback addresses (check = ssh) and a real HTTP server per address (check =
http). A member that keeps failing is replaced (deploy first, then drain and destroy) and the
pool keeps its size; what a user sees is asserted: exit code, lines, the cloud afterwards."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from cloudstack_sim import Fault, Simulator
from tests import sshd_support
from tests.conftest import base_sections, run_cli, write_config
from tests.receivers import Receiver
from tests.scenarios import kill_when, outputs, repair
from tests.configs import add_owned, label, labels, unstem

WEB1, M1, M2, M3 = "127.0.2.1", "127.0.2.2", "127.0.2.3", "127.0.2.4"
ADDRESSES = [WEB1, M1, M2, M3]
SPARE = ["127.0.2.20", "127.0.2.21", "127.0.2.22"]
MID = "2.00 2.00 2.00 1/200 999"
GARBAGE = "not a load average"
UNHEALTHY, REPLACE, BACKOFF = "ssh-scale:unhealthy", "ssh-scale:replace", "ssh-scale:backoff"
TRIES, REFRESH_HALTED = "ssh-scale:tries", "ssh-scale:refresh-halted"


@pytest.fixture
def cloud() -> Iterator[Any]:
    with Simulator(job_seconds=0.2, ip_addresses=ADDRESSES + SPARE) as sim:
        yield sim


@pytest.fixture
def servers(tmp_path: Path, key: Path) -> Iterator[Any]:
    """One sshd on every member address, each answering a healthy load unless told."""
    sshd_support.require_sshd()
    with sshd_support.OpenSSHServer(tmp_path / "sshd", addresses=ADDRESSES,
                                    authorized_keys=[key]) as server:
        server.set_output(MID)
        yield server


class HealthServers:
    """A real HTTP server on each member address, one port; what each answers is set per
    address: a status code, or "hang" (accept, read the request, never answer)."""

    def __init__(self, addresses: list[str]) -> None:
        self.answers = dict.fromkeys(addresses, 200)
        self.requests: list[str] = []
        self.released = threading.Event()
        self.servers: list[ThreadingHTTPServer] = []
        port = sshd_support.free_port(addresses[0])
        for address in addresses:
            server = ThreadingHTTPServer((address, port), self._handler())
            server.daemon_threads = True
            self.servers.append(server)
            threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        self.port = port

    def _handler(self) -> type:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the http.server name)
                address = self.connection.getsockname()[0]
                owner.requests.append(f"{address}{self.path}")
                answer = owner.answers[address]
                if answer == "hang":
                    owner.released.wait(30)
                    return
                self.send_response(int(answer))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def close(self) -> None:
        self.released.set()
        for server in self.servers:
            server.shutdown()
            server.server_close()


@pytest.fixture
def http() -> Iterator[HealthServers]:
    """A health endpoint on every member address, the spare ones (new VMs) included."""
    servers = HealthServers(ADDRESSES + SPARE)
    yield servers
    servers.close()


def group(cloud: Any) -> str:
    return f"ssh_scale-{cloud.lb_id}"


def seed(cloud: Any, count: int = 3) -> dict[str, dict]:
    """web1 (the unmanaged 2013 VM) and managed members, older first, an hour and more old."""
    created = datetime.now(timezone.utc) - timedelta(hours=2)
    vms = {"web1": cloud.add_vm("web1", ip=WEB1, created=created)}
    for n in range(1, count):
        vms[f"m{n}"] = add_owned(cloud, f"m{n}", ip=ADDRESSES[n],
                                    created=created + timedelta(minutes=n))
    return vms


def config(tmp_path: Path, cloud: Any, key: Path, port: int, health: dict[str, str],
           **changes: dict[str, str]) -> Path:
    sections = base_sections(cloud, key, host=WEB1, port=port)
    sections["monitoring"]["monitor_members"] = "yes"
    sections["scalling"].update(min_size="1", max_size="3", job_timeout="20")
    sections["health"] = health
    for section, values in changes.items():
        sections.setdefault(section, {}).update(values)
    return write_config(tmp_path / "idcfrc", sections)


def names(cloud: Any) -> list[str]:
    return sorted(labels(cloud.lb_members()))


def run(path: Path, *args: str) -> str:
    """A run that succeeds; its output with the VMs' name stems taken off."""
    done = run_cli("-c", str(path), *args)
    assert done.returncode == 0, done.stdout + done.stderr
    return unstem(outputs(done))


# --- check = ssh --------------------------------------------------------------------------------

def test_member_answering_garbage_is_replaced_after_unhealthy_runs(tmp_path, cloud, key,
                                                                   servers):
    vms = seed(cloud)
    servers.set_output(GARBAGE, M2)
    path = config(tmp_path, cloud, key, servers.port, {"check": "ssh"})
    texts = [run(path) for _ in range(2)]
    assert "m2 failed its check 1 of 3 runs in a row: " in texts[0]
    assert "unusable command output" in texts[0]
    assert "m2 failed its check 2 of 3 runs in a row" in texts[1]
    assert cloud.tags(vms["m2"]["id"])[UNHEALTHY] == "2"
    assert not cloud.calls_of("deployVirtualMachine")
    text = run(path)
    assert "m2 failed its health check 3 run(s) in a row" in text
    assert "replace          : m2 (127.0.2.3): deploying its replacement" in text
    assert "now vm count     : 3" in text
    cloud.settle()
    assert len(cloud.calls_of("deployVirtualMachine")) == 1
    assert len(names(cloud)) == 3 and "m2" not in names(cloud)
    assert vms["m2"]["id"] not in {vm["id"] for vm in cloud.vms()}
    # the replacement is young (grace): not checked; the others pass: a quiet run
    cloud.calls.clear()
    text = run(path)
    assert "decision         : none" in text
    assert sorted(c.command for c in cloud.calls) == ["listLoadBalancerRuleInstances",
                                                      "listVirtualMachines"]


def test_a_member_that_answers_again_is_reset(tmp_path, cloud, key, servers):
    vms = seed(cloud)
    servers.set_output(GARBAGE, M1)
    path = config(tmp_path, cloud, key, servers.port, {"check": "ssh"})
    run(path)
    assert cloud.tags(vms["m1"]["id"])[UNHEALTHY] == "1"
    servers.set_output(MID, M1)
    run(path)
    assert UNHEALTHY not in cloud.tags(vms["m1"]["id"])
    writes = [c.command for c in cloud.calls if c.command in ("createTags", "deleteTags")]
    assert writes == ["createTags", "deleteTags"]


def test_most_members_failing_replaces_nothing_and_says_so(tmp_path, cloud, key, servers):
    seed(cloud)
    servers.set_output(GARBAGE, M1)
    servers.set_output(GARBAGE, M2)
    path = config(tmp_path, cloud, key, servers.port,
                  {"check": "ssh", "unhealthy_runs": "1"})
    text = run(path)
    assert "2 of 3 members fail their check, more than max_unhealthy 50%: replacing nothing" \
        in text
    assert not cloud.calls_of("deployVirtualMachine")
    text = run(path)  # the counts stay at unhealthy_runs: nothing more is written
    assert not [c for c in cloud.calls if c.command == "createTags"][1:]


def test_unhealthy_unmanaged_member_is_reported_never_touched(tmp_path, cloud, key, servers):
    vms = seed(cloud)
    servers.set_output(GARBAGE, WEB1)
    path = config(tmp_path, cloud, key, servers.port,
                  {"check": "ssh", "unhealthy_runs": "1"})
    text = run(path)
    assert "web1 failed its check (not managed: reported, never replaced)" in text
    assert cloud.tags(vms["web1"]["id"]) == {}
    assert not [c for c in cloud.calls if not c.command.startswith(("list", "query"))]


def test_failed_replacement_leaves_the_old_vm_and_backs_off(tmp_path, cloud, key, servers):
    vms = seed(cloud)
    servers.set_output(GARBAGE, M2)
    path = config(tmp_path, cloud, key, servers.port,
                  {"check": "ssh", "unhealthy_runs": "1"})
    cloud.inject(Fault("job_fail", command="deployVirtualMachine", times=-1))
    done = run_cli("-c", str(path))
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    cloud.settle()
    assert names(cloud) == ["m1", "m2", "web1"]
    assert REPLACE not in cloud.tags(vms["m2"]["id"])
    assert cloud.tags(cloud.lb_id)[f"{BACKOFF}:1"].startswith("1 ")
    held = run(path)
    assert "replace (m2 failed its health check 1 run(s) in a row" in held
    assert "held back by the failed-deploy backoff" in held
    assert len(cloud.calls_of("deployVirtualMachine")) == 1


@pytest.mark.parametrize("step, repairs", [
    ("marked", 3),      # the replacement is deploying: adopted (at max_size), then finished
    ("assigned", 2),    # the replacement serves: the old VM is taken away
])
def test_crash_during_replacement_is_finished_by_the_next_runs(tmp_path, cloud, key, servers,
                                                              step, repairs):
    vms = seed(cloud)
    servers.set_output(GARBAGE, M2)
    path = config(tmp_path, cloud, key, servers.port,
                  {"check": "ssh", "unhealthy_runs": "1"})
    old = vms["m2"]["id"]
    reached = {
        "marked": lambda: REPLACE in cloud.tags(old),
        "assigned": lambda: bool(cloud.calls_of("assignToLoadBalancerRule")),
    }[step]
    kill_when(path, reached)
    texts = [unstem(t) for t in repair(path, cloud, runs=repairs)]
    assert any("replaced m2, which is still in the load balancer" in t for t in texts)
    assert len(cloud.calls_of("deployVirtualMachine")) == 1
    assert len(names(cloud)) == 3 and "m2" not in names(cloud)
    assert old not in {vm["id"] for vm in cloud.vms()}


# --- check = http -------------------------------------------------------------------------------

def test_http_check_replaces_failing_members_one_per_run(tmp_path, cloud, key, servers, http):
    vms = seed(cloud, count=4)
    http.answers.update({M2: 500, M3: "hang"})
    path = config(tmp_path, cloud, key, servers.port,
                  {"check": "http", "url": f"http://{{ip}}:{http.port}/healthz",
                   "timeout": "1", "unhealthy_runs": "1"},
                  monitoring={"monitor_members": "no"}, scalling={"max_size": "4"})
    text = run(path)
    assert f"m2 failed its check 1 of 1 runs in a row: http://{M2}:{http.port}/healthz: " \
           "HTTP 500" in text
    assert f"m3 failed its check 1 of 1 runs in a row: http://{M3}:{http.port}/healthz: no " \
           "answer within 1 s" in text
    assert "replace          : m2" in text  # the older one first, one per run
    assert sorted(http.requests[:4]) == sorted(f"{a}/healthz" for a in ADDRESSES)
    cloud.settle()
    assert "m3" in names(cloud) and "m2" not in names(cloud)
    # one replacement at a time (a tenth of the pool, at least one): m3 waits until m2's
    # replacement has passed its check, after [health] grace (300 s)
    assert "replacing m3 waits: 1 replacement(s) not yet healthy (at most 1 at once)" \
        in run(path)
    cloud.skew_clock(400)
    text = run(path)
    assert "replace          : m3" in text
    cloud.settle()
    assert {"m1", "web1"} <= set(names(cloud)) and len(names(cloud)) == 4
    assert len(cloud.calls_of("deployVirtualMachine")) == 2
    assert {vms["m2"]["id"], vms["m3"]["id"]}.isdisjoint(vm["id"] for vm in cloud.vms())


def test_status_and_json_show_each_members_health(tmp_path, cloud, key, servers, http):
    seed(cloud)
    http.answers[M2] = 503
    path = config(tmp_path, cloud, key, servers.port,
                  {"check": "http", "url": f"http://{{ip}}:{http.port}/healthz"})
    status = run(path, "--status")
    assert "| notes" in status
    assert "failing" in next(line for line in status.splitlines() if "| m2 " in line)
    assert "healthy" in next(line for line in status.splitlines() if "| m1 " in line)
    assert not cloud.calls_of("createTags")  # a read-only look writes no count
    done = run_cli("-c", str(path), "--json")  # a live run: it writes the count
    pool = {label(vm["name"]): vm for vm in json.loads(done.stdout)["pool"]}
    assert pool["m2"]["health"] == {"ok": False, "failures": 1, "detail":
                                    f"http://{M2}:{http.port}/healthz: HTTP 503"}
    assert pool["m1"]["health"]["ok"] and not pool["m1"]["protected"]
    assert len(cloud.calls_of("createTags")) == 1


def test_quiet_run_with_every_fleet_feature_on_costs_two_api_calls(tmp_path, cloud, key,
                                                                   servers, http):
    seed(cloud)
    path = config(tmp_path, cloud, key, servers.port,
                  {"check": "http", "url": f"http://{{ip}}:{http.port}/healthz"},
                  monitoring={"monitor_members": "no"},
                  scalling={"refresh": "yes", "termination_policy": "oldest"})
    text = run(path)
    assert "decision         : none" in text
    assert sorted(c.command for c in cloud.calls) == ["listLoadBalancerRuleInstances",
                                                      "listVirtualMachines"]
    assert servers.exec_count(WEB1) == 1 and len(http.requests) == 3


# --- health replacements and the refresh ------------------------------------------------------

def test_replacements_that_never_become_healthy_stop_after_three(tmp_path, cloud, key,
                                                                 servers, http):
    """A template whose VMs fail from birth: each replacement that fails counts as a failed
    deploy (the backoff grows) and the third in a row is given up, told once."""
    vms = seed(cloud)
    for address in [M1, M3, *SPARE]:  # m1 fails, and so does every new VM (M3, then spares)
        http.answers[address] = 500
    with Receiver() as receiver:
        path = config(tmp_path, cloud, key, servers.port,
                      {"check": "http", "url": f"http://{{ip}}:{http.port}/healthz",
                       "grace": "0", "unhealthy_runs": "1"},
                      notify={"webhook": receiver.url(), "events": "brake"})
        skew = 0
        for _ in range(6):
            run(path)
            skew += 600  # ten minutes pass between runs: every backoff has ended
            cloud.skew_clock(skew)
        assert len(cloud.calls_of("deployVirtualMachine")) == 3
        assert vms["m1"]["id"] not in {vm["id"] for vm in cloud.vms()}
        given_up = [cloud.tags(vm["id"]) for vm in cloud.lb_members()
                    if label(vm["name"]) not in vms]
        assert [tags.get(TRIES) for tags in given_up] == ["3"]
        assert "ssh-scale:given-up" in given_up[0]
        assert [post["event"] for _, post in receiver.posts] == ["brake"]
        assert "3th replacement in a row" in receiver.posts[0][1]["text"]


def test_a_refresh_to_a_template_whose_vms_fail_halts(tmp_path, cloud, key, servers,
                                                      http):
    seed(cloud)
    for address in [M3, *SPARE]:  # where refreshed VMs come up: they fail their check
        http.answers[address] = 500
    with Receiver() as receiver:
        path = config(tmp_path, cloud, key, servers.port,
                      {"check": "http", "url": f"http://{{ip}}:{http.port}/healthz",
                       "grace": "0"},
                      scalling={"refresh": "yes"},
                      launch_config={"templateid": cloud.own_template_id},
                      notify={"webhook": receiver.url(), "events": "brake"})
        assert "refresh: m1" in run(path)
        second = run(path)
        assert "refresh halted" in second
        assert REFRESH_HALTED in cloud.tags(cloud.lb_id)
        third = run(path)
        assert "refresh halted" in third
        assert len(cloud.calls_of("deployVirtualMachine")) == 1
        assert [post["event"] for _, post in receiver.posts] == ["brake"]
