"""Configuration: every broken file exits 2 with a line naming section and key, and sends
nothing to the cloud; valid files in both spellings load with documented defaults."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Callable

import pytest

from sshscale.cli import main
from sshscale.config import load_settings
from sshscale.measure import make_target, read_ssh_config
from sshscale.target import targets
from tests.conftest import assert_no_secrets, base_sections, render, write_config

Sections = dict[str, dict[str, str]]


def setting(section: str, key: str, value: str) -> Callable[[Sections], None]:
    def change(sections: Sections) -> None:
        sections[section][key] = value
    return change


def removing(section: str, key: str = "") -> Callable[[Sections], None]:
    def change(sections: Sections) -> None:
        if key:
            del sections[section][key]
        else:
            del sections[section]
    return change


def renaming(old: str, new: str) -> Callable[[Sections], None]:
    def change(sections: Sections) -> None:
        sections[new] = sections.pop(old)
    return change


def duplicating(old: str, new: str) -> Callable[[Sections], None]:
    def change(sections: Sections) -> None:
        sections[new] = dict(sections[old])
    return change


def targeting(*settings: tuple[str, str, str]) -> Callable[[Sections], None]:
    """policy = target (without the threshold policy's cooldowns), then (section, key, value)s."""
    def change(sections: Sections) -> None:
        sections["scalling"]["policy"] = "target"
        for name in ("scalling_policy_out", "scalling_policy_in"):
            sections[name].pop("cooldown", None)
        for section, key, value in settings:
            sections[section][key] = value
    return change


BROKEN = [
    # (id, change, expected text in the one error line)
    ("no-host", removing("account", "host"), "[account] host: missing"),
    ("empty-host", setting("account", "host", ""), "[account] host: missing"),
    ("host-not-url", setting("account", "host", "compute.example.com"), "[account] host:"),
    ("host-ftp", setting("account", "host", "ftp://127.0.0.1/x"), "[account] host:"),
    ("no-api-key", removing("account", "api_key"), "[account] api_key: missing"),
    ("empty-secret", setting("account", "secret_key", " "), "[account] secret_key: missing"),
    ("account-unknown", setting("account", "apikey", "x"), "[account] apikey: unknown key"),
    ("bad-verify", setting("account", "verify", "maybe"), "[account] verify"),
    ("bad-timeout", setting("account", "timeout", "-3"), "[account] timeout"),
    ("no-account", removing("account"), "[account] host: missing"),
    ("no-monitoring", removing("monitoring"), "[monitoring]: missing section"),
    ("no-mon-host", removing("monitoring", "host"), "[monitoring] host: missing"),
    ("empty-mon-host", setting("monitoring", "host", ""), "[monitoring] host: empty"),
    ("no-key", removing("monitoring", "private_key_path"),
     "[monitoring] private_key_path: missing"),
    ("key-missing", setting("monitoring", "private_key_path", "/nonexistent/id_rsa"),
     "[monitoring] private_key_path: /nonexistent/id_rsa: no such file"),
    ("bad-port", setting("monitoring", "port", "ssh"), "[monitoring] port: expected an integer"),
    ("port-range", setting("monitoring", "port", "70000"), "[monitoring] port:"),
    ("bad-policy", setting("monitoring", "host_key_policy", "yes"),
     "[monitoring] host_key_policy: expected one of"),
    ("bad-timeout-mon", setting("monitoring", "connect_timeout", "0"),
     "[monitoring] connect_timeout:"),
    ("mon-typo", setting("monitoring", "pass_phase", "x"),
     "[monitoring] pass_phase: unknown key (did you mean pass_phrase?)"),
    ("bad-aggregate", setting("monitoring", "aggregate", "median"), "[monitoring] aggregate"),
    ("bad-bool", setting("monitoring", "per_cpu", "sometimes"), "[monitoring] per_cpu"),
    ("no-launch", removing("launch_config"), "[launch_config]: missing section"),
    ("no-zone", removing("launch_config", "zoneid"), "[launch_config] zoneid: missing"),
    ("empty-template", setting("launch_config", "templateid", ""),
     "[launch_config] templateid: empty"),
    ("no-offering", removing("launch_config", "serviceofferingid"),
     "[launch_config] serviceofferingid: missing"),
    ("startvm-false", setting("launch_config", "startvm", "false"),
     "[launch_config] startvm: must be true"),
    ("startvm-no", setting("launch_config", "startvm", "no"),
     "[launch_config] startvm: must be true"),
    ("launch-name", setting("launch_config", "name", "web"),
     "[launch_config] name: host names are unique in a network"),
    ("no-scaling", removing("scalling"), "[scalling]: missing section"),
    ("no-min", removing("scalling", "min_size"), "[scalling] min_size: missing"),
    ("max-five", setting("scalling", "max_size", "five"),
     "[scalling] max_size: expected an integer, got 'five'"),
    ("min-float", setting("scalling", "min_size", "1.5"), "[scalling] min_size: expected an"),
    ("min-zero", setting("scalling", "min_size", "0"), "[scalling] min_size:"),
    ("min-negative", setting("scalling", "min_size", "-1"), "[scalling] min_size:"),
    ("min-gt-max", setting("scalling", "min_size", "5"),
     "[scalling] min_size: 5 is greater than max_size 3"),
    ("no-lb", removing("scalling", "load_balancer"), "[scalling] load_balancer: missing"),
    ("scaling-typo", setting("scalling", "max_sise", "3"),
     "[scalling] max_sise: unknown key (did you mean max_size?)"),
    ("bad-expunge", setting("scalling", "expunge", "2"), "[scalling] expunge"),
    ("negative-drain", setting("scalling", "drain_seconds", "-5"), "[scalling] drain_seconds"),
    ("bad-job-timeout", setting("scalling", "job_timeout", "nan"), "[scalling] job_timeout"),
    ("both-spellings", duplicating("scalling", "scaling"),
     "both [scalling] and [scaling]"),
    ("no-out", removing("scalling_policy_out"), "[scalling_policy_out]: missing section"),
    ("no-threshold-out", removing("scalling_policy_out", "threshold"),
     "[scalling_policy_out] threshold: missing"),
    ("threshold-text", setting("scalling_policy_out", "threshold", "high"),
     "[scalling_policy_out] threshold: expected a number"),
    ("threshold-negative", setting("scalling_policy_in", "threshold", "-1"),
     "[scalling_policy_in] threshold:"),
    ("in-ge-out", setting("scalling_policy_in", "threshold", "3.0"),
     "[scalling_policy_in] threshold: 3 must be below"),
    ("bad-period", setting("scalling_policy_in", "period", "10"),
     "[scalling_policy_in] period: expected 1, 5 or 15"),
    ("bad-step", setting("scalling_policy_out", "step", "2"), "[scalling_policy_out] step"),
    ("bad-cooldown", setting("scalling_policy_out", "cooldown", "soon"),
     "[scalling_policy_out] cooldown"),
    ("policy-both", duplicating("scalling_policy_in", "scaling_policy_in"),
     "both [scalling_policy_in] and [scaling_policy_in]"),
    # [scalling] policy and the target policy's keys
    ("bad-scaling-policy", setting("scalling", "policy", "tracking"),
     "[scalling] policy: expected one of threshold, target, got 'tracking'"),
    ("target-with-cooldown", setting("scalling", "policy", "target"),
     "[scalling_policy_out] cooldown: only used with [scalling] policy = threshold "
     "(this config has policy = target)"),
    ("target-with-period", targeting(("scalling_policy_in", "period", "5")),
     "[scalling_policy_in] period: only used with [scalling] policy = threshold"),
    ("target-with-step", targeting(("scalling_policy_out", "step", "proportional")),
     "[scalling_policy_out] step: only used with [scalling] policy = threshold"),
    ("threshold-with-target", setting("scalling_policy_out", "target", "2.5"),
     "[scalling_policy_out] target: only used with [scalling] policy = target "
     "(this config has policy = threshold)"),
    ("threshold-with-stabilization", setting("scalling_policy_in", "stabilization", "60"),
     "[scalling_policy_in] stabilization: only used with [scalling] policy = target"),
    ("target-zero", targeting(("scalling_policy_out", "target", "0")),
     "[scalling_policy_out] target: expected a number greater than 0, got '0'"),
    ("target-text", targeting(("scalling_policy_out", "target", "high")),
     "[scalling_policy_out] target: expected a number, got 'high'"),
    ("target-in-zero", targeting(("scalling_policy_in", "target", "0")),
     "[scalling_policy_in] target: expected a number greater than 0"),
    ("target-in-ge-threshold", targeting(("scalling_policy_in", "target", "3")),
     "[scalling_policy_in] target: 3 must be below [scalling_policy_out] threshold 3"),
    ("target-in-ge-target", targeting(("scalling_policy_out", "target", "2"),
                                      ("scalling_policy_in", "target", "2.5")),
     "[scalling_policy_in] target: 2.5 must be below [scalling_policy_out] target 2"),
    ("forecast-negative", targeting(("scalling_policy_out", "forecast", "-1")),
     "[scalling_policy_out] forecast: expected a duration of at least 0 s, got '-1'"),
    ("stabilization-nan", targeting(("scalling_policy_in", "stabilization", "nan")),
     "[scalling_policy_in] stabilization: expected a duration of at least 0 s, got 'nan'"),
    ("target-typo", targeting(("scalling_policy_in", "stabilisation", "60")),
     "[scalling_policy_in] stabilisation: unknown key (did you mean stabilization?)"),
]


@pytest.mark.parametrize("change, expected", [b[1:] for b in BROKEN],
                         ids=[b[0] for b in BROKEN])
def test_broken_config_exits_2_naming_section_and_key(sim, key, tmp_path, capsys, change,
                                                      expected):
    sections = copy.deepcopy(base_sections(sim, key))
    change(sections)
    path = write_config(tmp_path / "idcfrc", sections)
    assert main(["-c", str(path)]) == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith("ssh_scale.py: error: ")
    assert expected in err
    assert "Traceback" not in out + err
    assert_no_secrets(out, err)
    assert sim.calls == []


@pytest.mark.parametrize("content, expected", [
    (None, "no such file"),
    ("just some text\n", "not a valid INI file"),
    ("[account]\nhost = a\nhost = b\n", "not a valid INI file"),
    (b"\xff\xfe\x00garbage", "not a text file"),
])
def test_unusable_file_exits_2(sim, home, tmp_path, capsys, content, expected):
    path = tmp_path / "idcfrc"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    assert main(["-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1
    assert sim.calls == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_exits_2(sim, key, tmp_path, capsys):
    path = write_config(tmp_path / "idcfrc", base_sections(sim, key))
    path.chmod(0)
    assert main(["-c", str(path)]) == 2
    assert "permission denied" in capsys.readouterr().err


def test_directory_as_config_exits_2(sim, home, tmp_path, capsys):
    assert main(["-c", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_valid_config_defaults_and_both_spellings(sim, key, tmp_path):
    sections = base_sections(sim, key)
    for old in ("scalling", "scalling_policy_out", "scalling_policy_in"):
        sections[old.replace("scalling", "scaling")] = sections.pop(old)
    sections["shared_with_other_tool"] = {"anything": "goes"}
    settings = load_settings(str(write_config(tmp_path / "rc", sections)))
    assert settings.command == "cat /proc/loadavg"
    assert (settings.port, settings.connect_timeout, settings.host_key_policy) == (
        None, 10.0, "accept-new")
    assert (settings.job_timeout, settings.expunge, settings.protect_unmanaged) == (
        900.0, False, True)
    assert (settings.period_out, settings.period_in, settings.step_out) == (1, 1, "1")
    assert settings.group == f"ssh_scale-{sim.lb_id}"
    assert "secret" not in repr(settings) or "sim-secret-key" not in repr(settings)


def test_target_policy_defaults_derive_from_the_thresholds(sim, key, tmp_path):
    sections = base_sections(sim, key)
    targeting()(sections)
    settings = load_settings(str(write_config(tmp_path / "rc", sections)))
    assert (settings.policy, settings.target_out, settings.target_in) == ("target", None, None)
    assert targets(settings) == (3.0, 2.5)
    assert (settings.forecast, settings.stabilization) == (240.0, 600.0)
    default = load_settings(str(write_config(tmp_path / "rc0", base_sections(sim, key))))
    assert default.policy == "threshold"


def test_target_policy_keys_override_the_defaults(sim, key, tmp_path):
    sections = base_sections(sim, key)
    targeting(("scalling_policy_out", "target", "2.4"), ("scalling_policy_out", "forecast", "0"),
              ("scalling_policy_in", "target", "1.5"),
              ("scalling_policy_in", "stabilization", "120"))(sections)
    sections["scaling"] = sections.pop("scalling")  # the other spelling works alike
    settings = load_settings(str(write_config(tmp_path / "rc", sections)))
    assert targets(settings) == (2.4, 1.5)
    assert (settings.forecast, settings.stabilization) == (0.0, 120.0)


def test_config_path_from_environment(sim, key, tmp_path, monkeypatch):
    path = write_config(tmp_path / "via-env", base_sections(sim, key))
    monkeypatch.setenv("IDCFRC", str(path))
    assert load_settings().source == str(path)


def test_default_config_path_shown_with_tilde(sim, key, home):
    write_config(home / ".idcfrc", base_sections(sim, key))
    assert load_settings().source == "~/.idcfrc"


def test_key_from_ssh_config_identityfile(sim, key, home, tmp_path):
    (home / ".ssh" / "config").write_text(
        f"Host web-vm\n  HostName 127.0.0.9\n  IdentityFile {key}\n")
    sections = base_sections(sim, None, host="web-vm")
    del sections["monitoring"]["private_key_path"]
    settings = load_settings(str(write_config(tmp_path / "rc", sections)),
                                       ssh_config=read_ssh_config())
    target = make_target("web-vm", settings, read_ssh_config())
    assert (target.hostname, target.key_path) == ("127.0.0.9", str(key))


def test_group_readable_config_warns(sim, key, tmp_path, capsys):
    path = write_config(tmp_path / "idcfrc", base_sections(sim, key, port=1))
    path.chmod(0o644)
    main(["-c", str(path), "-q"])
    out = capsys.readouterr().out
    assert "readable by group or others" in out and "chmod 600" in out


def test_launch_displayname_is_passed_to_every_deploy(sim, key, tmp_path):
    sections = base_sections(sim, key)
    sections["launch_config"]["displayname"] = "web"
    settings = load_settings(str(write_config(tmp_path / "rc", sections)))
    assert settings.launch["displayname"] == "web"


def test_render_round_trip_is_ini(sim, key):
    assert "[scalling]" in render(base_sections(sim, key))


def test_sample_config_is_valid(sim, key, tmp_path):
    text = (Path(__file__).parent.parent / "sample.idcfrc").read_text()
    text = text.replace("~/.ssh/id_rsa", str(key))
    path = tmp_path / "sample"
    path.write_text(text)
    settings = load_settings(str(path))
    assert settings.min_size >= 1 and settings.threshold_in < settings.threshold_out
    assert settings.policy == "target"  # the recommended setting
