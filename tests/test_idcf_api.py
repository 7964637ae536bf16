"""The signed client and idcf-compute-api, against the simulator over real HTTP."""

from __future__ import annotations

import json
import re
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import requests
from cs.client import CloudStack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import idcf_api
from cloudstack_sim import DEFAULT_API_KEY, DEFAULT_SECRET_KEY, Fault, Simulator
from idcf_api import Account, ApiError, Client, JobFailed, JobTimeout, TransportError
from tests.conftest import assert_no_secrets

DOC_KEY = "plgWJfZK4gyS3mOMTVmjUVg-X-jlWlnfaUJ9GAbBbf9EdM-kAYMmAiLqzzq1ElZLYq_u38zCm0bewzGUdP66mg"
DOC_SECRET = ("VDaACYb0LV9eNjTetIOElcVQkvJck_J_QljX_FcHRj87ZKiy0z0ty0ZsYBkoXkY9b7eq1EhwJaw7FF3"
              "akA3KBQ")


def no_sleep(_: float) -> None:
    """Retries and polls without waiting (the simulator's clock still runs)."""


@pytest.fixture
def client(sim: Simulator) -> Client:
    return Client(Account(sim.url, DEFAULT_API_KEY, DEFAULT_SECRET_KEY, timeout=5),
                  sleep=no_sleep)


# --- signing --------------------------------------------------------------------------------

def test_sign_matches_cloudstack_docs_example():
    params = {"command": "listUsers", "response": "json", "apikey": DOC_KEY}
    assert idcf_api.signing_string(params) == (
        "apikey=plgwjfzk4gys3momtvmjuvg-x-jlwlnfauj9gabbbf9edm-kaymmailqzzq1elzlyq_u38zcm0bewzgud"
        "p66mg&command=listusers&response=json")
    assert idcf_api.sign(params, DOC_SECRET) == "TTpdDq/7j/J58XCRHomKoQXEQds="


def test_sign_sorts_case_sensitively_like_the_server():
    # The server sorts original-case names before lowercasing: "templateId" < "templatefilter".
    s = idcf_api.signing_string({"templatefilter": "a", "templateId": "b"})
    assert s == "templateid=b&templatefilter=a"


@pytest.mark.parametrize("value, encoded", [
    ("a b", "a%20b"), ("~", "%7e"), ("*", "*"), ("a+b", "a%2bb"), ("x/y:z", "x%2fy%3az"),
    ("日本", "%e6%97%a5%e6%9c%ac"), ("-_.", "-_."), ("a,b", "a%2cb"),
])
def test_java_urlencoder_semantics(value, encoded):
    assert idcf_api.signing_string({"k": value}) == f"k={encoded}"


def cs_signature(params: dict[str, str], secret: str) -> str:
    data = dict(params)
    CloudStack("http://127.0.0.1:1/client/api", "key", secret)._sign(data)
    return data["signature"]


names = st.text(alphabet=st.characters(whitelist_categories=("Lu", "Ll", "Nd")), min_size=1,
                max_size=12).filter(lambda n: n.isascii() and n.lower() != "signature")
values = st.text(max_size=30)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(names, values, min_size=1, max_size=6))
def test_sign_agrees_with_cs_except_for_tilde(params):
    ours = idcf_api.sign(params, DOC_SECRET)
    theirs = cs_signature(params, DOC_SECRET)
    if any("~" in v for v in params.values()):
        # cs keeps "~" unescaped (Python's quote); Java's URLEncoder, which the server uses,
        # escapes it as %7E. The server wins: see test_tilde_value_accepted_by_server.
        assert ours != theirs
    else:
        assert ours == theirs


def test_signature_named_parameter_is_never_signed():
    # The server skips "signature" in any case; cs would sign a "SIGNATURE" parameter.
    assert idcf_api.signing_string({"SIGNATURE": "x", "a": "b"}) == "a=b"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(text=st.text(min_size=1, max_size=40).filter(lambda t: "\x00" not in t and t.strip()))
def test_any_value_round_trips_through_the_server(client, sim, text):
    answer = client.call("deployVirtualMachine", zoneid=sim.zone_id, templateid=sim.template_id,
                         serviceofferingid=sim.offering_id, displayname=text, startvm=False)
    vm = client.list("listVirtualMachines", id=answer["id"])[0]
    assert vm["displayname"] == text


def test_tilde_value_accepted_by_server(client, sim):
    answer = client.call("listVirtualMachines", keyword="~home")
    assert answer == {}
    assert sim.calls[-1].status == 200


def test_v3_expires_is_signed_and_plus_hhmm():
    query = idcf_api.signed_params("listZones", {}, Account("http://h/", "k", "s", expires=60),
                                   datetime(2026, 1, 1, tzinfo=timezone.utc))
    assert query["signatureVersion"] == "3"
    assert query["expires"] == "2026-01-01T00:01:00+0000"
    assert query["response"] == "json"


def test_expired_signature_is_rejected_by_server(sim):
    old = Account(sim.url, DEFAULT_API_KEY, DEFAULT_SECRET_KEY, expires=1)
    query = idcf_api.signed_params("listZones", {}, old,
                                   datetime(2020, 1, 1, tzinfo=timezone.utc))
    import requests
    response = requests.get(sim.url, params=query, timeout=5)
    assert response.status_code == 401


def test_long_values_go_by_post(client, sim):
    client.call("listVirtualMachines", keyword="x" * 3000)
    client.call("listVirtualMachines", keyword="100%+ & =")
    assert [(c.method, c.status) for c in sim.calls] == [("POST", 200), ("GET", 200)]


# --- answers ----------------------------------------------------------------------------------

def test_call_unwraps_and_list_returns_objects(client, sim):
    zones = client.list("listZones")
    assert [z["id"] for z in zones] == [sim.zone_id]
    assert client.call("listZones")["count"] == 1


def test_empty_list_is_empty(client):
    assert client.list("listVirtualMachines") == []
    assert client.call("listVirtualMachines") == {}


def test_list_pages_past_500(client, sim):
    for i in range(1203):
        sim.add_vm(f"vm{i}", ip="127.0.9.9", in_lb=False)
    vms = client.list("listVirtualMachines")
    assert len(vms) == 1203 and len({v["id"] for v in vms}) == 1203
    assert [c.params.get("page") for c in sim.calls] == [None, "2", "3"]
    assert sim.calls[1].params["pagesize"] == "500"


def test_list_follows_a_small_server_page_size(client, sim):
    sim.page_size = 3
    for i in range(7):
        sim.add_vm(f"vm{i}", ip="127.0.9.9", in_lb=False)
    vms = client.list("listVirtualMachines")
    assert len({v["id"] for v in vms}) == 7
    assert [c.params.get("pagesize") for c in sim.calls] == [None, "3", "3"]


def test_a_list_that_changes_between_pages_is_read_again(sim):
    """A VM destroyed while the pages are read moves every later VM one page up: the one that
    moved onto the page already read would be missed. The total changed, so the list is read
    again from the start (and the simulator is then left alone)."""
    sim.page_size = 3
    vms = [sim.add_vm(f"vm{i}", ip="127.0.9.9", in_lb=False) for i in range(7)]
    session = requests.Session()
    request = session.request

    def destroy_after_the_first_page(method: str, url: str, **kwargs: Any) -> Any:
        answer = request(method, url, **kwargs)
        if len(sim.calls_of("listVirtualMachines")) == 1:
            sim.set_state(vms[0]["id"], "Destroyed")  # another actor, between the pages
        return answer

    session.request = destroy_after_the_first_page  # type: ignore[method-assign]
    client = Client(Account(sim.url, DEFAULT_API_KEY, DEFAULT_SECRET_KEY, timeout=5),
                    session=session, sleep=no_sleep)
    names = {vm["name"] for vm in client.list("listVirtualMachines")}
    assert names == {f"vm{i}" for i in range(1, 7)}
    assert [c.params.get("page") for c in sim.calls] == [None, "2", None, "2"]


def test_small_list_costs_one_request(client, sim):
    for i in range(7):
        sim.add_vm(f"vm{i}", ip="127.0.9.9", in_lb=False)
    assert len(client.list("listVirtualMachines")) == 7
    assert len(sim.calls) == 1


def test_lbvmips_list_variant(client, sim):
    sim.add_vm("web1", ip="127.0.1.50")
    items = client.list("listLoadBalancerRuleInstances", id=sim.lb_id, lbvmips=True)
    assert items[0]["lbvmipaddresses"] == ["127.0.1.50"]


def test_api_error_carries_codes(client):
    with pytest.raises(ApiError) as caught:
        client.call("listTemplates")
    err = caught.value
    assert (err.status, err.errorcode, err.cserrorcode) == (431, 431, 9999)
    assert "missing parameter templatefilter" in err.errortext
    assert str(err).startswith("listTemplates: HTTP 431")


def test_bad_key_is_401_without_secret_in_message(sim):
    bad = Client(Account(sim.url, DEFAULT_API_KEY, "wrong-secret"), sleep=no_sleep)
    with pytest.raises(ApiError) as caught:
        bad.call("listZones")
    assert caught.value.status == 401
    assert len(sim.calls) == 1  # 4xx is not retried
    assert_no_secrets(str(caught.value), extra=("wrong-secret",))


def test_html_answer_is_a_clear_transport_error(client, sim):
    sim.inject(Fault("html", command="deployVirtualMachine", status=502))
    with pytest.raises(TransportError) as caught:
        client.call("deployVirtualMachine", zoneid=sim.zone_id, templateid=sim.template_id,
                    serviceofferingid=sim.offering_id)
    assert "non-JSON answer (text/html)" in str(caught.value)
    assert len(sim.calls_of("deployVirtualMachine")) == 1  # a mutation is never retried


# --- retries ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["http_error", "html"])
def test_reads_are_retried_on_5xx_and_html(client, sim, kind):
    sim.inject(Fault(kind, command="listZones", times=2))
    assert len(client.list("listZones")) == 1
    assert [c.status for c in sim.calls] == [503, 503, 200]


def test_reads_give_up_after_bounded_retries(client, sim):
    sim.inject(Fault("http_error", command="listZones", times=-1))
    with pytest.raises(ApiError):
        client.list("listZones")
    assert len(sim.calls) == 1 + idcf_api.READ_RETRIES


def test_slow_read_times_out_and_is_retried(sim):
    quick = Client(Account(sim.url, DEFAULT_API_KEY, DEFAULT_SECRET_KEY, timeout=0.3),
                   sleep=no_sleep, retries=1)
    sim.inject(Fault("slow", command="listZones", delay=1.0, times=-1))
    with pytest.raises(TransportError) as caught:
        quick.list("listZones")
    assert "no answer within 0.3 s" in str(caught.value)


def test_mutation_not_retried_on_5xx(client, sim):
    sim.inject(Fault("http_error", command="destroyVirtualMachine"))
    vm = sim.add_vm("web9")
    with pytest.raises(ApiError):
        client.call("destroyVirtualMachine", id=vm["id"])
    assert len(sim.calls_of("destroyVirtualMachine")) == 1


def test_connection_refused_is_transport_error_without_secrets():
    closed = Client(Account("http://127.0.0.1:9/client/api", "the-key", "the-secret",
                            timeout=2), sleep=no_sleep, retries=1)
    with pytest.raises(TransportError) as caught:
        closed.list("listZones")
    text = str(caught.value)
    assert "http://127.0.0.1:9/client/api" in text
    assert "the-key" not in text and "signature" not in text.lower()


# --- async jobs -----------------------------------------------------------------------------

def deploy(client: Client, sim: Simulator) -> dict:
    return client.call("deployVirtualMachine", zoneid=sim.zone_id, templateid=sim.template_id,
                       serviceofferingid=sim.offering_id)


def test_wait_returns_jobresult(client, sim):
    answer = deploy(client, sim)
    result = Client(client.account).wait(answer["jobid"], timeout=10)
    assert result["virtualmachine"]["state"] == "Running"


def test_wait_raises_job_failed_with_errortext(client, sim):
    sim.inject(Fault("job_fail", command="deployVirtualMachine", errortext="No capacity"))
    answer = deploy(client, sim)
    with pytest.raises(JobFailed) as caught:
        Client(client.account).wait(answer["jobid"], timeout=10)
    assert caught.value.errortext == "No capacity" and caught.value.errorcode == 533
    assert caught.value.instance_id == answer["id"]


def test_wait_times_out(client, sim):
    sim.inject(Fault("job_hang", command="deployVirtualMachine"))
    answer = deploy(client, sim)
    with pytest.raises(JobTimeout) as caught:
        Client(client.account).wait(answer["jobid"], timeout=0.5)
    assert "still pending after 0.5 s" in str(caught.value)


def test_wait_polls_at_most_about_once_a_second(client, sim):
    sim_slow = Simulator(job_seconds=2.0).start()
    try:
        c = Client(Account(sim_slow.url, DEFAULT_API_KEY, DEFAULT_SECRET_KEY))
        c.wait(deploy(c, sim_slow)["jobid"], timeout=10)
        polls = sim_slow.calls_of("queryAsyncJobResult")
        gaps = [b.time - a.time for a, b in zip(polls, polls[1:])]
        assert 3 <= len(polls) <= 10 and max(gaps) < 1.3
    finally:
        sim_slow.stop()


# --- redaction --------------------------------------------------------------------------------

def test_debug_log_redacts_key_and_signature(sim, capsys):
    idcf_api.configure_logging(True, [DEFAULT_API_KEY, DEFAULT_SECRET_KEY])
    logging.getLogger("urllib3").setLevel(logging.DEBUG)
    c = Client(Account(sim.url, DEFAULT_API_KEY, DEFAULT_SECRET_KEY), sleep=no_sleep)
    c.list("listZones")
    err = capsys.readouterr().err
    assert "listZones" in err and "***" in err
    assert_no_secrets(err)


def test_redact_removes_signature_parameters():
    text = "GET /client/api?apiKey=abc&signature=x%2By&command=listZones secret!"
    assert idcf_api.redact(text, ["secret!"]) == (
        "GET /client/api?apiKey=***&signature=***&command=listZones ***")


def test_account_repr_hides_secrets():
    assert "s3cr3t" not in repr(Account("http://h/", "k3y", "s3cr3t"))


# --- account settings ---------------------------------------------------------------------

def test_environment_alone_is_enough(sim, home, monkeypatch):
    monkeypatch.setenv("CLOUDSTACK_ENDPOINT", sim.url)
    monkeypatch.setenv("CLOUDSTACK_KEY", DEFAULT_API_KEY)
    monkeypatch.setenv("CLOUDSTACK_SECRET", DEFAULT_SECRET_KEY)
    assert idcf_api.load_account().endpoint == sim.url


def test_environment_overrides_file_with_original_names(sim, home, monkeypatch):
    (home / ".idcfrc").write_text("[account]\nhost = http://127.0.0.1:1/x\napi_key = a\n"
                                  "secret_key = b\n")
    monkeypatch.setenv("IDCF_COMPUTE_HOST", sim.url)
    monkeypatch.setenv("IDCF_COMPUTE_API_KEY", "env-key")
    account = idcf_api.load_account()
    assert (account.endpoint, account.api_key, account.secret_key) == (sim.url, "env-key", "b")


# --- the command ------------------------------------------------------------------------------

@pytest.fixture
def rc(sim: Simulator, home: Path) -> Path:
    path = home / ".idcfrc"
    path.write_text(f"[account]\nhost = {sim.url}\napi_key = {DEFAULT_API_KEY}\n"
                    f"secret_key = {DEFAULT_SECRET_KEY}\n")
    return path


def test_cli_json_keeps_envelope(rc, sim, capsys):
    assert idcf_api.main(["listZones"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["listzonesresponse"]["zone"][0]["id"] == sim.zone_id


def test_cli_table_in_given_column_order(rc, sim, capsys):
    assert idcf_api.main(["listZones", "-t", "name,id"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("+-") and lines[0].endswith("-+")
    assert lines[1].split("|")[1].strip() == "name"
    assert lines[3].split("|")[2].strip() == sim.zone_id
    assert len(lines) == 5


def test_cli_table_all_keys_and_noheaders(rc, capsys):
    assert idcf_api.main(["listZones", "-t", "--noheaders"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and "jp-east-t1v" in lines[1]


def test_cli_csv(rc, sim, capsys):
    assert idcf_api.main(["listLoadBalancerRules", "-c", "id,name,publicip"]) == 0
    assert capsys.readouterr().out.splitlines() == ["id,name,publicip",
                                                    f"{sim.lb_id},web,203.0.113.10"]


def test_cli_empty_list_says_no_data(rc, capsys):
    assert idcf_api.main(["listVirtualMachines", "-t", "id,name"]) == 0
    assert "no data" in capsys.readouterr().out


def test_cli_parameters_both_forms_and_wait(rc, sim, capsys):
    args = ["deployVirtualMachine", f"--serviceofferingid={sim.offering_id}",
            f"templateid={sim.template_id}", f"--zoneid={sim.zone_id}",
            "--displayname=web 3", "--wait"]
    assert idcf_api.main(args) == 0
    body = json.loads(capsys.readouterr().out)
    vm = body["queryasyncjobresultresponse"]["jobresult"]["virtualmachine"]
    assert vm["displayname"] == "web 3" and vm["state"] == "Running"


def test_cli_api_error_exit_1(rc, capsys):
    assert idcf_api.main(["listTemplates"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("idcf-compute-api: error: listTemplates: HTTP 431, errorcode 431")
    assert "Traceback" not in err


def test_cli_job_failure_exit_1(rc, sim, capsys):
    sim.inject(Fault("job_fail", command="deployVirtualMachine"))
    args = ["deployVirtualMachine", f"--serviceofferingid={sim.offering_id}",
            f"--templateid={sim.template_id}", f"--zoneid={sim.zone_id}", "--wait"]
    assert idcf_api.main(args) == 1
    assert "Insufficient capacity" in capsys.readouterr().err


@pytest.mark.parametrize("argv, text", [
    (["listZones", "--bogus"], "unrecognized arguments"),
    ([], "required"),
    (["listZones", "--bad name=1"], "bad parameter name"),
])
def test_cli_usage_errors_exit_2(rc, capsys, argv, text):
    assert idcf_api.main(argv) == 2
    assert text in capsys.readouterr().err


def test_cli_config_error_exit_2(home, capsys):
    assert idcf_api.main(["listZones"]) == 2
    err = capsys.readouterr().err
    assert "[account] host: missing (or set CLOUDSTACK_ENDPOINT)" in err


def test_cli_into_a_closed_pipe_is_quiet(rc, sim):
    import subprocess
    import sys
    for i in range(300):  # an answer far larger than a pipe's buffer
        sim.add_vm(f"vm{i}", ip="127.0.9.9", in_lb=False)
    script = "import idcf_api, sys; sys.exit(idcf_api.main(['listVirtualMachines']))"
    done = subprocess.run(f"{sys.executable} -c \"{script}\" | head -c 1", shell=True,
                          capture_output=True, text=True, env={**__import__("os").environ},
                          check=False)
    assert "Traceback" not in done.stderr and done.stdout == "{"


def test_cli_help_and_version(capsys):
    assert idcf_api.main(["--version"]) == 0
    assert idcf_api.__version__ in capsys.readouterr().out
    assert idcf_api.main(["--help"]) == 0
    assert "listLoadBalancerRules -t id,name,publicip" in capsys.readouterr().out


def test_cli_verbose_never_prints_secrets(rc, capsys):
    assert idcf_api.main(["listZones", "-v"]) == 0
    out, err = capsys.readouterr()
    assert "listZones" in err
    assert_no_secrets(out, err)


def test_clock_skew_from_the_date_header(client, sim):
    sim.skew_clock(-3600)
    assert client.clock_skew == 0.0
    client.list("listZones")
    assert -3610 < client.clock_skew < -3590


# --- every error: one redacted line and its exit status --------------------------------------

class FutureError(idcf_api.CloudStackError):
    """A member of the family that main() does not name."""


@pytest.mark.parametrize("error, status", [
    (idcf_api.UsageError("bad words"), 2),
    (idcf_api.ConfigError("bad file"), 2),
    (TransportError("no route"), 1),
    (ApiError("listZones", 530, 530, 9999, "boom"), 1),
    (JobFailed("j1", 530, "boom"), 1),
    (JobTimeout("j1", 5), 1),
    (FutureError("new kind"), 1),
    (RuntimeError("a bug"), 1),
    (KeyboardInterrupt(), 130),
])
def test_cli_maps_every_error_to_one_line(rc, capsys, monkeypatch, error, status):
    def fails(self, command, **params):
        error.args = (f"{error.args[0] if error.args else ''} {DEFAULT_SECRET_KEY}\nsecond",)
        raise error

    monkeypatch.setattr(Client, "request", fails)
    assert idcf_api.main(["listZones"]) == status
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("idcf-compute-api: error: ")
    assert "Traceback" not in err
    assert ("second" in err) != isinstance(error, KeyboardInterrupt)  # newlines folded
    assert_no_secrets(out, err)


def test_cli_unexpected_error_traceback_only_with_verbose(rc, capsys, monkeypatch):
    def fails(self, command, **params):
        raise ValueError(f"apiKey={DEFAULT_API_KEY}&signature=abc {DEFAULT_SECRET_KEY}")

    monkeypatch.setattr(Client, "request", fails)
    assert idcf_api.main(["listZones"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("idcf-compute-api: error: unexpected ValueError: ")
    assert "Traceback" not in err
    assert idcf_api.main(["listZones", "-v"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "in fails" in err
    assert_no_secrets(err)


# --- one version ------------------------------------------------------------------------------

def test_version_comes_from_the_installed_distribution(capsys):
    import importlib.metadata
    assert idcf_api.__version__ == importlib.metadata.version("ssh-scale")
    assert idcf_api.main(["--version"]) == 0
    assert capsys.readouterr().out == f"idcf-compute-api {idcf_api.__version__}\n"


def test_version_without_an_installed_distribution(monkeypatch):
    import importlib.metadata

    def missing(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    assert idcf_api.installed_version() == "0+unknown"


def test_idcf_api_imports_nothing_of_sshscale():
    import subprocess
    import sys
    script = ("import sys, idcf_api; idcf_api.explain_unauthorized('x', 0, 0); "
              "print(sorted(m for m in sys.modules if m.split('.')[0] in "
              "('sshscale', 'ssh_scale', 'cloudstack_sim')))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True)
    assert done.stdout == "[]\n"


# --- -c is CSV here, not the config -------------------------------------------------------

@pytest.mark.parametrize("flag, value", [
    ("-c", "cfg/other.ini"), ("-t", "other.idcfrc"), ("-c", "myrc"), ("--csv", "existing"),
])
def test_cli_read_with_a_config_path_as_fields_points_to_config(rc, sim, capsys, tmp_path,
                                                                 monkeypatch, flag, value):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "existing").write_text("[account]\n")
    assert idcf_api.main([flag, value, "listZones"]) == 0
    err = capsys.readouterr().err
    assert f"use --config {value}" in err and str(rc) in err
    assert len(sim.calls) == 1


@pytest.mark.parametrize("flag", ["-c", "-t"])
def test_cli_change_with_a_config_path_as_fields_is_refused_unsent(rc, sim, capsys, flag):
    args = [flag, "cfg/other.ini", "deployVirtualMachine", f"--zoneid={sim.zone_id}",
            f"--templateid={sim.template_id}", f"--serviceofferingid={sim.offering_id}"]
    assert idcf_api.main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "use --config cfg/other.ini" in err
    assert sim.calls == [] and sim.add_vm  # nothing was sent


@pytest.mark.parametrize("home_rc, status, error", [
    ("wrong-account", 1, "listZones: HTTP 401"),     # ~/.idcfrc of another account
    (None, 2, "/.idcfrc: no such file"),             # no ~/.idcfrc at all
])
def test_cli_a_failed_command_with_a_config_as_fields_points_to_config(
        sim, home, capsys, monkeypatch, tmp_path, home_rc, status, error):
    # `idcf-compute-api -c trial.idcfrc listZones`: the hint came only with an answer
    monkeypatch.chdir(tmp_path)
    (tmp_path / "trial.idcfrc").write_text(f"[account]\nhost = {sim.url}\n")
    if home_rc:
        (home / ".idcfrc").write_text(f"[account]\nhost = {sim.url}\napi_key = other\n"
                                      "secret_key = other-secret\n")
    assert idcf_api.main(["-c", "trial.idcfrc", "listZones"]) == status
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and error in err
    assert err.rstrip().endswith("-c trial.idcfrc: -c takes output fields, so the account was "
                                 f"the one in {home}/.idcfrc; for the account in trial.idcfrc "
                                 "use --config trial.idcfrc")
    assert_no_secrets(err, extra=("other-secret",))


def test_cli_field_matching_no_key_is_noted(rc, capsys):
    assert idcf_api.main(["listZones", "-c", "id,nmae"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[0] == "id,nmae"
    assert "-c nmae: no such key in the answer (did you mean name?)" in err
    assert "--config" in err


# --- a 401 explained --------------------------------------------------------------------------

def test_cli_unknown_command_is_sent_and_its_401_names_close_commands(rc, sim, capsys):
    assert idcf_api.main(["listZone"]) == 1
    err = capsys.readouterr().err
    assert [c.status for c in sim.calls] == [401]  # sent: the list may be older than the server
    assert err.startswith("idcf-compute-api: error: listZone: HTTP 401")
    assert "listZone is not an API command of CloudStack" in err
    assert err.rstrip().endswith("(did you mean listZones?)")


def test_cli_401_for_a_known_command_points_to_the_keys(sim, home, capsys):
    (home / ".idcfrc").write_text(f"[account]\nhost = {sim.url}\napi_key = {DEFAULT_API_KEY}\n"
                                  "secret_key = not-the-secret\n")
    assert idcf_api.main(["listZones"]) == 1
    err = capsys.readouterr().err
    assert "check [account] api_key and secret_key" in err
    assert_no_secrets(err, extra=("not-the-secret",))


def test_401_hint_for_a_clock_too_slow_for_the_signature():
    hint = idcf_api.explain_unauthorized("listZones", clock_skew=3600.0, expires=600)
    assert "clock is 3600 s behind" in hint
    assert "clock" not in idcf_api.explain_unauthorized("listZones", 3600.0, 0)


def test_401_hint_without_the_names_module(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "cloudstack_commands", None)  # import fails
    assert "api_key" in idcf_api.explain_unauthorized("listZone", 0.0, 600)


def test_command_names_are_cloudstack_api_names():
    from cloudstack_commands import NAMES
    used = {"listZones", "listServiceOfferings", "listTemplates", "listLoadBalancerRules",
            "listLoadBalancerRuleInstances", "listVirtualMachines", "listEvents",
            "deployVirtualMachine", "destroyVirtualMachine", "assignToLoadBalancerRule",
            "removeFromLoadBalancerRule", "queryAsyncJobResult", "createTags", "deleteTags",
            "listTags", "listApis"}
    assert used <= NAMES and len(NAMES) > 800
    assert all(re.fullmatch(r"[a-z][A-Za-z0-9]+", name) for name in NAMES)


@pytest.mark.parametrize("word, hint", [
    ("listzones", " (did you mean listZones?)"),
    ("listVirtualMachine", " (did you mean listVirtualMachines or stopVirtualMachine?)"),
    ("zzzz", ""),
])
def test_did_you_mean_ignores_case_and_names_the_closest(word, hint):
    from cloudstack_commands import NAMES
    assert idcf_api.did_you_mean(word, NAMES, most=3) == hint


# --- TLS and DNS failures -------------------------------------------------------------------

ZONES = {"listzonesresponse": {"count": 1, "zone": [{"id": "z1", "name": "tls-zone"}]}}


def make_certificate(directory: Path, ip_in_certificate: bool) -> tuple[Path, Path]:
    """A self-signed certificate for localhost (and 127.0.0.1 when asked), and its key."""
    import ipaddress
    from datetime import timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    if ip_in_certificate:
        names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    now = datetime.now(timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture(params=[True, False], ids=["ip-in-cert", "name-only-cert"])
def tls_server(request, tmp_path):
    """An HTTPS server on 127.0.0.1 with a self-signed certificate, answering listZones."""
    import ssl
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Answer(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(ZONES).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    cert, key = make_certificate(tmp_path, ip_in_certificate=request.param)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/client/api", cert, request.param
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def failing_list(account: Account) -> tuple[str, list[float]]:
    """The TransportError text of a listZones, and the retry delays it slept."""
    slept: list[float] = []
    with pytest.raises(TransportError) as caught:
        Client(account, sleep=slept.append).list("listZones")
    return str(caught.value), slept


def test_untrusted_certificate_is_one_line_with_the_fix_and_no_retry(tls_server):
    url, _, _ = tls_server
    text, slept = failing_list(Account(url, "the-key", "the-secret"))
    assert text.startswith(f"listZones: {url}: TLS certificate not accepted (")
    assert re.search(r"self.signed certificate", text)
    assert text.endswith("; if the API uses a private CA, set [account] verify = /path/to/ca.pem")
    assert slept == [] and "_ssl.c" not in text and text.count("(") == text.count(")")


def test_certificate_for_another_name_says_which_name_to_use(tls_server):
    url, cert, ip_in_certificate = tls_server
    account = Account(url, "the-key", "the-secret", verify=str(cert))
    if ip_in_certificate:  # the fix the message gives works
        assert Client(account).list("listZones") == ZONES["listzonesresponse"]["zone"]
        return
    text, slept = failing_list(account)
    assert "mismatch" in text and "127.0.0.1" in text
    assert text.endswith("; put the name the certificate is issued for in [account] host")
    assert slept == []


def test_cli_tls_failure_exit_1_one_line(tls_server, home, capsys):
    url, _, _ = tls_server
    (home / ".idcfrc").write_text(f"[account]\nhost = {url}\napi_key = {DEFAULT_API_KEY}\n"
                                  f"secret_key = {DEFAULT_SECRET_KEY}\n")
    assert idcf_api.main(["listZones"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "[account] verify = /path/to/ca.pem" in err
    assert_no_secrets(err)


@pytest.mark.parametrize("code, retried", [("EAI_NONAME", False), ("EAI_AGAIN", True)])
def test_dns_failure_named_and_retried_only_when_temporary(monkeypatch, code, retried):
    import socket
    real = socket.getaddrinfo

    def resolve(host, *args, **kwargs):
        # Answer for .invalid here, as a resolver would, so that no query leaves the machine.
        if str(host).endswith(".invalid"):
            raise socket.gaierror(getattr(socket, code), f"resolver said {code}")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    text, slept = failing_list(Account("https://nonexistent.invalid/client/api", "the-key",
                                       "the-secret"))
    assert text.startswith("listZones: https://nonexistent.invalid/client/api: ")
    assert f"resolver said {code}" in text
    if retried:
        assert "temporary DNS failure" in text and len(slept) == idcf_api.READ_RETRIES
    else:
        assert text.endswith("; check [account] host") and slept == []


def test_connection_refused_is_retried_for_reads():
    text, slept = failing_list(Account("http://127.0.0.1:9/client/api", "the-key", "the-secret",
                                       timeout=2))
    assert "connection refused; is the API server up? check [account] host" in text
    assert len(slept) == idcf_api.READ_RETRIES


# --- --help reads as plain text -------------------------------------------------------------

def test_cli_help_is_plain_text(capsys):
    assert idcf_api.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "``" not in out and ":class:" not in out
    assert "130 interrupted" in out and "from --config PATH" in out
