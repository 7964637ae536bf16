"""Configuration: every broken file exits 2 with a line naming section and key, and sends
nothing to the cloud; valid files in both spellings load with documented defaults."""

from __future__ import annotations

import copy
import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Callable

import pytest

from sshscale.cli import main
from sshscale.config import config_warnings, load_settings
from sshscale.measure import make_target, read_ssh_config
from sshscale.target import targets
from tests.conftest import assert_no_secrets, base_sections, render, run_cli, write_config

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


def test_status_shows_the_warnings_a_run_prints(sim, key, tmp_path, capsys):
    # --status printed neither "readable by group or others" nor any other config warning
    sections = base_sections(sim, key, port=1)
    sections["helth"] = {"check": "ssh"}
    path = write_config(tmp_path / "idcfrc", sections)
    path.chmod(0o644)
    main(["-c", str(path), "--status"])
    out, err = capsys.readouterr()
    assert f"ssh_scale.py: warning: {path} is readable by group or others; it holds secrets " \
           "(chmod 600 it)\n" in err
    assert f"ssh_scale.py: warning: {path}: [helth] is not a section ssh_scale.py reads, so " \
           "it is ignored (did you mean [health]?)\n" in err
    assert "decision now" in out and "warning" not in out


@pytest.mark.parametrize("section, near", [
    ("notfy", "notify"), ("helth", "health"), ("metric", "metrics"), ("Monitoring", "monitoring"),
    ("scaling_policy", "scaling_policy_in"), ("schedule-night", "schedule NAME"),
    ("Schedule night", "schedule NAME"), ("schedules night", "schedule NAME"),
    ("schedule_night", "schedule NAME"),
    # other tools' sections are left alone
    ("default", None), ("aws", None), ("profile web", None), ("notes", None), ("heat", None),
])
def test_a_section_named_like_ours_is_a_warning(sim, key, tmp_path, section, near):
    sections = base_sections(sim, key)
    sections[section] = {"some": "value"}
    path = write_config(tmp_path / "idcfrc", sections)
    load_settings(str(path))  # loads: the file may hold other tools' sections
    expected = [f"{path}: [{section}] is not a section ssh_scale.py reads, so it is ignored "
                f"(did you mean [{near}]?)"] if near else []
    assert config_warnings(str(path)) == expected


def test_a_missing_section_names_its_misspelling(sim, key, tmp_path, capsys):
    sections = base_sections(sim, key)
    sections["monitering"] = sections.pop("monitoring")
    assert main(["-c", str(write_config(tmp_path / "idcfrc", sections))]) == 2
    assert capsys.readouterr().err.endswith(
        "[monitoring]: missing section ([monitering] is there: a misspelling?)\n")


def test_a_comment_after_a_value_is_a_warning(sim, key, tmp_path):
    # `group = ssh_scale-<lb>   # marks the VMs` made every managed VM unmanaged, silently
    sections = base_sections(sim, key)
    sections["launch_config"]["group"] = "ssh_scale-web   # marks the VMs"
    sections["monitoring"]["command"] = "cat /proc/loadavg # the remote shell's comment"
    sections["other"] = {"note": "not ours # at all"}
    path = write_config(tmp_path / "idcfrc", sections)
    assert config_warnings(str(path)) == [
        f"{path}: [launch_config] group: the value holds \" #\", which is part of it, not a "
        "comment (comments go on lines of their own)"]
    settings = load_settings(str(path))
    assert settings.group == "ssh_scale-web   # marks the VMs"  # the rule stays the rule


def test_a_run_warns_about_the_config_and_goes_on(tmp_path, sim, key, sshd):
    sim.add_vm("web1", ip="127.0.0.1")
    sections = base_sections(sim, key, port=sshd.port)
    sections["launch_config"]["displayname"] = "web   # the VMs' name"
    sections["metric"] = {"textfile": "/tmp/x.prom"}
    done = run_cli("-c", str(write_config(tmp_path / "idcfrc", sections)))
    assert done.returncode == 0, done.stderr
    warnings = [line[20:] for line in done.stdout.splitlines() if "warning  " in line]
    assert [w.split(": ", 2)[2][:30] for w in warnings] == [
        "[metric] is not a section ssh_", "[launch_config] displayname: t"]
    assert "decision         : none" in done.stdout


SECONDS_KEYS = [  # every duration of the config: (section, key, Settings field)
    ("monitoring", "connect_timeout", "connect_timeout"),
    ("monitoring", "command_timeout", "command_timeout"),
    ("monitoring", "boot_grace", "boot_grace"),
    ("scalling", "job_timeout", "job_timeout"),
    ("scalling", "drain_seconds", "drain_seconds"),
    ("scalling", "max_backoff", "max_backoff"),
    ("scalling_policy_out", "cooldown", "cooldown_out"),
    ("scalling_policy_in", "cooldown", "cooldown_in"),
    ("health", "timeout", "health_timeout"),
    ("health", "grace", "health_grace"),
]
TARGET_SECONDS_KEYS = [("scalling_policy_out", "forecast", "forecast"),
                       ("scalling_policy_in", "stabilization", "stabilization")]


@pytest.mark.parametrize("value, seconds", [("30s", 30), ("2m", 120), ("1.5h", 5400),
                                            ("90", 90), ("90.5", 90.5), ("2 M", 120)])
def test_every_duration_takes_s_m_and_h(sim, key, tmp_path, value, seconds):
    # `cooldown = 30s` was refused while `[schedule NAME] duration = 30m` was accepted
    plain, target = base_sections(sim, key), base_sections(sim, key)
    targeting()(target)
    for sections, keys in ((plain, SECONDS_KEYS), (target, TARGET_SECONDS_KEYS)):
        for section, name, _ in keys:
            sections.setdefault(section, {})[name] = value
        sections["scalling"]["max_backoff"] = "2h"  # at least 60 s
        settings = load_settings(str(write_config(tmp_path / "idcfrc", sections)))
        for section, name, field in keys:
            expected = 7200.0 if name == "max_backoff" else seconds
            assert getattr(settings, field) == expected, (section, name)


@pytest.mark.parametrize("value, message", [
    ("30x", "expected a duration like 90s, 30m or 11h (or a number of seconds), got '30x'"),
    ("-1m", "expected a duration like 90s, 30m or 11h (or a number of seconds), got '-1m'"),
    ("-5", "expected a duration of at least 0 s, got '-5'"),
])
def test_a_bad_duration_names_the_rule(sim, key, tmp_path, capsys, value, message):
    sections = base_sections(sim, key)
    sections["scalling_policy_out"]["cooldown"] = value
    assert main(["-c", str(write_config(tmp_path / "idcfrc", sections))]) == 2
    assert capsys.readouterr().err.endswith(f"[scalling_policy_out] cooldown: {message}\n")


def test_launch_displayname_is_passed_to_every_deploy(sim, key, tmp_path):
    sections = base_sections(sim, key)
    sections["launch_config"]["displayname"] = "web"
    settings = load_settings(str(write_config(tmp_path / "rc", sections)))
    assert settings.launch["displayname"] == "web"


def test_render_round_trip_is_ini(sim, key):
    assert "[scalling]" in render(base_sections(sim, key))


def uncommented(text: str, skip: tuple[str, ...]) -> str:
    """sample.idcfrc with its optional "# key = value" lines uncommented (by removing "# ", as a
    user would), up to the fleet sections, except the keys named in skip."""
    lines = []
    for line in text.partition("# Optional fleet operations")[0].splitlines():
        optional = re.fullmatch(r"# ([a-z_]+) = .*", line)
        lines.append(line[2:] if optional and optional.group(1) not in skip else line)
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("policy, skip", [("target", ("cooldown", "period", "step")),
                                          ("threshold", ("target", "forecast", "stabilization"))])
def test_sample_optional_lines_uncomment_cleanly_to_their_defaults(sim, key, tmp_path, policy,
                                                                   skip):
    # "# optional: group = ssh_scale-<load_balancer>   marks the VMs ..." uncommented kept the
    # explanation in the value: the group changed and every managed VM became unmanaged.
    text = (Path(__file__).parent.parent / "sample.idcfrc").read_text()
    text = text.replace("~/.ssh/id_rsa", str(key)).replace("policy = target",
                                                           f"policy = {policy}")
    original, edited = tmp_path / "sample", tmp_path / "uncommented"
    original.write_text(text)
    edited.write_text(uncommented(text, skip))
    assert edited.read_text().count("\n# ") < text.count("\n# ") - 30  # they were uncommented
    before, after = load_settings(str(original)), load_settings(str(edited))
    assert config_warnings(str(edited)) == []
    assert targets(after) == targets(before)  # the default targets, written out
    assert after.budget() == before.budget()  # the default launch budget, written out
    assert after.port == 22 and before.port is None  # 22 unless ~/.ssh/config says otherwise
    assert after.group == before.group == "ssh_scale-12345"  # set, and the same
    same = {"source": "", "port": None, "target_out": None, "target_in": None, "launch": {},
            "zone": before.zone, "launch_budget": None}
    assert replace(after, **same) == replace(before, **same)


def test_sample_config_is_valid(sim, key, tmp_path):
    text = (Path(__file__).parent.parent / "sample.idcfrc").read_text()
    text = text.replace("~/.ssh/id_rsa", str(key))
    path = tmp_path / "sample"
    path.write_text(text)
    settings = load_settings(str(path))
    assert settings.min_size >= 1 and settings.threshold_in < settings.threshold_out
    assert settings.policy == "target"  # the recommended setting
