"""The signed client and idcf-compute-api, against the simulator over real HTTP."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path

import pytest
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
