"""~/.idcfrc (and, for key files, ~/.ssh/config) -> validated Settings.

Where each value comes from, first match wins:
  * the config file: `-c PATH`, else $IDCFRC, else ~/.idcfrc;
  * [account] host, api_key, secret_key: the environment variables CLOUDSTACK_ENDPOINT,
    CLOUDSTACK_KEY, CLOUDSTACK_SECRET (or IDCF_COMPUTE_HOST, IDCF_COMPUTE_API_KEY,
    IDCF_COMPUTE_SECRET_KEY), then the file;
  * [monitoring] user, port, private_key_path: the file, then ~/.ssh/config for the host
    (User, Port, IdentityFile), then the login name and port 22;
  * every other key: the file, then the default declared on Settings.
Sections have a 2013 spelling ([scalling], [scalling_policy_out], ...) and a modern one; one
file may use either, not both. Optional: any number of [schedule NAME] windows, [notify] and
[metrics]. Unknown keys of our sections are errors with a hint; other
sections are ignored (the file is shared with idcf-compute-api and other tools).
"""

from __future__ import annotations

import configparser
import contextlib
import hashlib
import difflib
import math
import os
import re
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import MISSING, fields
from typing import Any, Optional

import idcf_api
from sshscale.errors import ConfigError
from sshscale.fleet import HEALTH_CHECKS, TERMINATION_POLICIES, parse_limit
from sshscale.fleet_config import NOTIFY_KEYS, local_zone, metrics_textfile, notify, schedules
from sshscale.model import PERIODS, Settings

__all__ = ["config_digest", "config_warnings", "display_path", "insecure_permissions",
           "key_path_for", "load_settings", "lookup_ssh_config", "parse_seconds",
           "settings_from_config"]

ALIASES = {
    "scaling": ("scalling", "scaling"),
    "policy_out": ("scalling_policy_out", "scaling_policy_out"),
    "policy_in": ("scalling_policy_in", "scaling_policy_in"),
}
KNOWN_KEYS = {
    "monitoring": ("host", "user", "private_key_path", "pass_phrase", "port", "connect_timeout",
                   "command_timeout", "command", "host_key_policy", "monitor_members",
                   "boot_grace", "min_reporting", "quorum", "aggregate", "per_cpu",
                   "max_parallel"),
    "scaling": ("min_size", "max_size", "load_balancer", "job_timeout", "expunge",
                "drain_seconds", "protect_unmanaged", "max_backoff", "launch_budget",
                "termination_policy", "refresh", "policy"),
    "policy_out": ("threshold", "cooldown", "period", "step", "target", "forecast"),
    "policy_in": ("threshold", "cooldown", "period", "target", "stabilization"),
    "health": ("check", "url", "timeout", "unhealthy_runs", "grace", "max_unhealthy"),
    "notify": NOTIFY_KEYS,
    "metrics": ("textfile",),
}
POLICIES = ("threshold", "target")
# Keys only one policy reads: set for the other, they are an error rather than silently unused.
POLICY_KEYS = {
    "threshold": {"policy_out": ("cooldown", "period", "step"),
                  "policy_in": ("cooldown", "period")},
    "target": {"policy_out": ("target", "forecast"), "policy_in": ("target", "stabilization")},
}
# Every section this tool reads (besides [schedule NAME]); another one is another tool's.
SECTIONS = ("account", "launch_config", *(n for spellings in ALIASES.values() for n in spellings),
            *(name for name in KNOWN_KEYS if name not in ALIASES))
# Values where " #" is no mistake: a comment for the remote shell; a secret (never shown).
HASH_ALLOWED = (("monitoring", "command"), ("monitoring", "pass_phrase"))
NEAR_MISS = 0.85  # difflib's similarity from which a section name is taken for a misspelling
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600}
REQUIRED_LAUNCH_KEYS = ("serviceofferingid", "templateid", "zoneid")
HOST_KEY_POLICIES = ("accept-new", "strict", "off")
DEFAULTS = {f.name: f.default for f in fields(Settings) if f.default is not MISSING}


class _Section:
    """Typed, validated access to one INI section; errors name file, section and key."""

    def __init__(self, source: str, name: str, values: Mapping[str, str]) -> None:
        self.source, self.name, self.values = source, name, values

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: [{self.name}] {key}: {message}")

    def text(self, key: str, default: Optional[str] = None) -> str:
        value = self.values.get(key, "").strip()
        if value:
            return value
        if default is None:
            raise self.error(key, "missing" if key not in self.values else "empty")
        return default

    def number(self, key: str, default: Optional[float] = None, minimum: float = 0.0,
               above: bool = False) -> float:
        raw = self.text(key, None if default is None else repr(default))
        try:
            value = float(raw)
        except ValueError:
            raise self.error(key, f"expected a number, got {raw!r}") from None
        if not math.isfinite(value) or value < minimum or (above and value == minimum):
            relation = "greater than" if above else "at least"
            raise self.error(key, f"expected a number {relation} {minimum:g}, got {raw!r}")
        return value

    def seconds(self, key: str, default: Optional[float] = None, minimum: float = 0.0,
                above: bool = False) -> float:
        """A duration: a number of seconds, or one with an s, m or h suffix (90s, 30m, 11h)."""
        raw = self.text(key, None if default is None else repr(default))
        value = parse_seconds(raw)
        if value is None:
            raise self.error(key, f"expected a duration like 90s, 30m or 11h (or a number of "
                                  f"seconds), got {raw!r}")
        if not math.isfinite(value) or value < minimum or (above and value == minimum):
            relation = "greater than" if above else "of at least"
            raise self.error(key, f"expected a duration {relation} {minimum:g} s, got {raw!r}")
        return value

    def integer(self, key: str, default: Optional[int] = None, minimum: int = 0) -> int:
        raw = self.text(key, None if default is None else str(default))
        if not re.fullmatch(r"[+-]?\d+", raw):
            raise self.error(key, f"expected an integer, got {raw!r}")
        if int(raw) < minimum:
            raise self.error(key, f"expected an integer of at least {minimum}, got {raw!r}")
        return int(raw)

    def boolean(self, key: str, default: bool) -> bool:
        raw = self.text(key, "yes" if default else "no").lower()
        if raw in ("yes", "true", "on", "1"):
            return True
        if raw in ("no", "false", "off", "0"):
            return False
        raise self.error(key, f"expected yes or no, got {raw!r}")

    def choice(self, key: str, default: str, choices: Sequence[str]) -> str:
        raw = self.text(key, default).lower()
        if raw not in choices:
            raise self.error(key, f"expected one of {', '.join(choices)}, got {raw!r}")
        return raw

    def check_known(self, known: Sequence[str]) -> None:
        for key in self.values:
            if key not in known:
                raise self.error(key, "unknown key" + idcf_api.did_you_mean(key, known))


def config_digest(path: str) -> str:
    """A short name for a config file, from its real path: the same for cron, systemd and a
    login shell, through a symlink, and across an editor replacing the file."""
    return hashlib.sha1(os.path.realpath(path).encode()).hexdigest()[:16]


def parse_seconds(text: str) -> Optional[float]:
    """Seconds from a plain number (as always) or a number with an s, m or h suffix; None when
    it is neither. Every duration key of the config reads this way."""
    with contextlib.suppress(ValueError):
        return float(text)
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smh])", text.strip().lower())
    return float(match.group(1)) * DURATION_UNITS[match.group(2)] if match else None


def display_path(path: str) -> str:
    """The path with the home directory shown as ~."""
    home = os.path.expanduser("~")
    return "~" + path[len(home):] if home != "/" and path.startswith(home + "/") else path


def _section(parser: configparser.ConfigParser, source: str, logical: str,
             required: bool = True) -> _Section:
    names = ALIASES.get(logical, (logical,))
    present = [n for n in names if parser.has_section(n)]
    if len(present) > 1:
        raise ConfigError(f"{source}: both [{present[0]}] and [{present[1]}]: "
                          "keep one spelling of the section")
    if not present:
        if required:
            misspelt = [f"[{n}]" for n in parser.sections() if _near_miss(n) in names]
            hint = f" ({', '.join(misspelt)} is there: a misspelling?)" if misspelt else ""
            raise ConfigError(f"{source}: [{names[0]}]: missing section{hint}")
        return _Section(source, names[0], {})
    section = _Section(source, present[0], dict(parser[present[0]]))
    if logical in KNOWN_KEYS:
        section.check_known(KNOWN_KEYS[logical])
    return section


def settings_from_config(parser: configparser.ConfigParser, source: str,
                         environ: Optional[Mapping[str, str]] = None,
                         ssh_config: Optional[Any] = None, check_key: bool = True) -> Settings:
    """Validate a parsed config into Settings; raises ConfigError naming section and key.
    Absent optional keys take the defaults declared on Settings. `ssh_config` is anything
    with OpenSSH's `lookup(host)` (paramiko.SSHConfig), used to find the key file."""
    default = DEFAULTS
    with _client_config_errors():
        account = idcf_api.account_from_config(parser, source, environ)
    mon = _section(parser, source, "monitoring")
    launch = _section(parser, source, "launch_config")
    scaling = _section(parser, source, "scaling")
    out = _section(parser, source, "policy_out")
    inn = _section(parser, source, "policy_in")
    _check_launch(launch)
    monitor_members = mon.boolean("monitor_members", default["monitor_members"])
    hosts = tuple(h.strip() for h in mon.text("host", "" if monitor_members else None)
                  .split(",") if h.strip())
    min_size = scaling.integer("min_size", minimum=1)
    max_size = scaling.integer("max_size", minimum=1)
    if min_size > max_size:
        raise scaling.error("min_size", f"{min_size} is greater than max_size {max_size}")
    threshold_out = out.number("threshold", above=True)
    threshold_in = inn.number("threshold")
    if threshold_in >= threshold_out:
        raise inn.error("threshold", f"{threshold_in:g} must be below "
                        f"[{out.name}] threshold {threshold_out:g}")
    port = mon.integer("port", 0, minimum=1) if mon.values.get("port") else None
    if port is not None and port > 65535:
        raise mon.error("port", f"expected a port number (1-65535), got {port}")
    settings = Settings(
        source=source, account=account, hosts=hosts,
        user=mon.values.get("user", "").strip() or None,
        private_key_path=_expand(mon.values.get("private_key_path", "").strip()) or None,
        pass_phrase=mon.values.get("pass_phrase", ""),
        launch=dict(launch.values),
        min_size=min_size, max_size=max_size,
        load_balancer=scaling.text("load_balancer"),
        threshold_out=threshold_out, threshold_in=threshold_in,
        port=port,
        connect_timeout=mon.seconds("connect_timeout", default["connect_timeout"], above=True),
        command_timeout=mon.seconds("command_timeout", default["command_timeout"], above=True),
        command=mon.text("command", default["command"]),
        host_key_policy=mon.choice("host_key_policy", default["host_key_policy"],
                                   HOST_KEY_POLICIES),
        monitor_members=monitor_members,
        boot_grace=mon.seconds("boot_grace", default["boot_grace"]),
        min_reporting=mon.integer("min_reporting", default["min_reporting"], minimum=1),
        quorum=_limit(mon, "quorum", default["quorum"], positive=True),
        aggregate=mon.choice("aggregate", default["aggregate"], ("mean", "max")),
        per_cpu=mon.boolean("per_cpu", default["per_cpu"]),
        max_parallel=mon.integer("max_parallel", default["max_parallel"], minimum=1),
        job_timeout=scaling.seconds("job_timeout", default["job_timeout"], above=True),
        expunge=scaling.boolean("expunge", default["expunge"]),
        drain_seconds=scaling.seconds("drain_seconds", default["drain_seconds"]),
        protect_unmanaged=scaling.boolean("protect_unmanaged", default["protect_unmanaged"]),
        max_backoff=scaling.seconds("max_backoff", default["max_backoff"], minimum=60.0),
        launch_budget=scaling.integer("launch_budget", 0, minimum=1)
        if scaling.values.get("launch_budget", "").strip() else None,
        cooldown_out=out.seconds("cooldown", default["cooldown_out"]),
        cooldown_in=inn.seconds("cooldown", default["cooldown_in"]),
        period_out=_period(out, default["period_out"]),
        period_in=_period(inn, default["period_in"]),
        step_out=out.choice("step", default["step_out"], ("1", "proportional")),
        **_fleet_settings(_section(parser, source, "health", required=False), scaling,
                          monitor_members),
        schedules=schedules(parser, _Section, environ, scaling, max_size),
        notify=notify(_section(parser, source, "notify", required=False)),
        metrics_textfile=metrics_textfile(_section(parser, source, "metrics", required=False)),
        **_policy_settings(scaling, out, inn, threshold_out),
        zone=local_zone(os.environ if environ is None else environ),
    )
    _check_identities(settings, launch, mon, ssh_config)
    if check_key:
        _check_key_file(settings, mon, ssh_config)
    return settings


def _check_identities(settings: Settings, launch: _Section, mon: _Section,
                      ssh_config: Optional[Any]) -> None:
    """Refuse a config whose identities collide: a deployed VM must never pass for the
    monitored VM (which is never scaled in nor repaired), nor a measured host be missing."""
    displayname = launch.values.get("displayname", "").strip()
    for host in settings.hosts:
        hostname = lookup_ssh_config(ssh_config, host).get("hostname", host)
        for name, what in ((host, "host"), (hostname, "host's ~/.ssh/config HostName")):
            if displayname and displayname.lower() == str(name).lower():
                raise ConfigError(f"{settings.source}: [{launch.name}] displayname "
                                  f"{displayname!r} is [{mon.name}] {what} too: every VM "
                                  "deployed would count as the monitored VM (give the deployed "
                                  "VMs another displayname)")
    if not settings.monitor_members and settings.min_reporting > len(settings.hosts):
        raise mon.error("min_reporting", f"{settings.min_reporting} is more than the "
                                         f"{len(settings.hosts)} host(s) of [{mon.name}] host: "
                                         "the load rules would never act")
    if "account" in launch.values and "domainid" not in launch.values:
        raise launch.error("account", "needs domainid too (CloudStack takes both or neither)")
    if "projectid" in launch.values and "account" in launch.values:
        raise launch.error("projectid", "and account exclude each other: a VM belongs to a "
                                        "project or to an account")


@contextlib.contextmanager
def _client_config_errors() -> Iterator[None]:
    """The API client's config errors (account, INI syntax) as ours."""
    try:
        yield
    except idcf_api.ConfigError as exc:
        raise ConfigError(str(exc)) from None


def _check_launch(launch: _Section) -> None:
    for key in REQUIRED_LAUNCH_KEYS:
        launch.text(key)
    if launch.values.get("startvm", "true").strip().lower() != "true":
        raise launch.error("startvm", "must be true (or absent): the pool needs running VMs")
    if "name" in launch.values:
        raise launch.error("name", "host names are unique in a network, so every deploy after "
                                   "the first would fail; use displayname (the cloud then "
                                   "names each VM itself)")


def _fleet_settings(health: _Section, scaling: _Section,
                    monitor_members: bool) -> dict[str, Any]:
    """[health] and the fleet keys of [scalling]: health checks, termination policy, refresh."""
    default = DEFAULTS
    check = health.choice("check", default["health_check"], HEALTH_CHECKS)
    if check == "ssh" and not monitor_members:
        raise health.error("check", "ssh needs [monitoring] monitor_members = yes (only a "
                                    "member measured over SSH can fail its measurement)")
    url = health.text("url", default["health_url"])
    try:
        probe = url.format(ip="127.0.0.1")
    except (KeyError, IndexError, ValueError):
        probe = ""
    if "{ip}" not in url or not probe.startswith(("http://", "https://")):
        raise health.error("url", "expected an http:// or https:// URL with {ip} where the "
                                  f"member's address goes, got {url!r}")
    limit = _limit(health, "max_unhealthy", default["max_unhealthy"])
    return dict(
        health_check=check, health_url=url,
        health_timeout=health.seconds("timeout", default["health_timeout"], above=True),
        unhealthy_runs=health.integer("unhealthy_runs", default["unhealthy_runs"], minimum=1),
        health_grace=health.seconds("grace", default["health_grace"]),
        max_unhealthy=limit,
        termination_policy=scaling.choice("termination_policy", default["termination_policy"],
                                          TERMINATION_POLICIES),
        refresh=scaling.boolean("refresh", default["refresh"]),
    )


def _limit(section: _Section, key: str, default: str, positive: bool = False) -> str:
    """A count or a percentage (see fleet.parse_limit); `positive`: not 0."""
    limit = section.text(key, default)
    try:
        amount, _ = parse_limit(limit)
    except ValueError as exc:
        raise section.error(key, str(exc)) from None
    if positive and amount <= 0:
        raise section.error(key, f"expected at least 1 (or 1%), got {limit!r}")
    return limit


def _policy_settings(scaling: _Section, out: _Section, inn: _Section,
                     threshold_out: float) -> dict[str, Any]:
    """[scalling] policy and the target policy's keys; a key of the policy not chosen is an
    error. Unset targets stay None: sshscale.target derives them from the thresholds."""
    policy = scaling.choice("policy", DEFAULTS["policy"], POLICIES)
    for other in (p for p in POLICIES if p != policy):
        for section, logical in ((out, "policy_out"), (inn, "policy_in")):
            for key in POLICY_KEYS[other][logical]:
                if key in section.values:
                    raise section.error(key, f"only used with [{scaling.name}] policy = {other} "
                                             f"(this config has policy = {policy})")
    target_out = out.number("target", 0.0, above=True) if "target" in out.values else None
    target_in = inn.number("target", 0.0, above=True) if "target" in inn.values else None
    upper, name = (threshold_out, "threshold") if target_out is None else (target_out, "target")
    if target_in is not None and target_in >= upper:
        raise inn.error("target", f"{target_in:g} must be below [{out.name}] {name} {upper:g}")
    return {"policy": policy, "target_out": target_out, "target_in": target_in,
            "forecast": out.seconds("forecast", DEFAULTS["forecast"]),
            "stabilization": inn.seconds("stabilization", DEFAULTS["stabilization"])}


def _period(section: _Section, default: int) -> int:
    period = section.integer("period", default, minimum=1)
    if period not in PERIODS:
        raise section.error("period", f"expected 1, 5 or 15 (minutes), got {period}")
    return period


def _expand(path: str) -> str:
    return os.path.expanduser(path) if path else ""


def lookup_ssh_config(ssh_config: Optional[Any], host: str) -> dict[str, Any]:
    """OpenSSH options for a host from ~/.ssh/config ({} when there is none)."""
    if ssh_config is None:
        return {}
    try:
        return dict(ssh_config.lookup(host))
    except Exception as exc:  # paramiko raises assorted errors for odd files
        raise ConfigError(f"~/.ssh/config: cannot resolve {host}: {exc}") from None


def key_path_for(settings: Settings, options: Mapping[str, Any]) -> Optional[str]:
    """[monitoring] private_key_path, else the first IdentityFile of ~/.ssh/config."""
    if settings.private_key_path:
        return settings.private_key_path
    files = options.get("identityfile") or []
    return os.path.expanduser(files[0]) if files else None


def _check_key_file(settings: Settings, mon: _Section, ssh_config: Optional[Any]) -> None:
    for host in settings.hosts or ("*",):
        path = key_path_for(settings, lookup_ssh_config(ssh_config, host))
        if path is None:
            raise mon.error("private_key_path", "missing (and no IdentityFile in ~/.ssh/config "
                                                f"for {host})")
        if not os.path.isfile(path):
            raise mon.error("private_key_path", f"{path}: no such file")
        if not os.access(path, os.R_OK):
            raise mon.error("private_key_path", f"{path}: not readable")


def load_settings(path: Optional[str] = None, environ: Optional[Mapping[str, str]] = None,
                  ssh_config: Optional[Any] = None, check_key: bool = True) -> Settings:
    """Read and validate the config file (-c, else $IDCFRC, else ~/.idcfrc); the key file
    is not needed (nor checked) for an offline replay."""
    resolved = idcf_api.config_path(path, environ)
    with _client_config_errors():
        parser = idcf_api.read_config(resolved)
    return settings_from_config(parser, display_path(resolved), environ, ssh_config, check_key)


def _near_miss(name: str) -> Optional[str]:
    """The section this tool reads that `name` looks like a misspelling of ("notify" for
    notfy, "schedule NAME" for schedule-night), or None: the section is ours, or another
    tool's (the file is shared)."""
    if name in SECTIONS or name.startswith("schedule "):
        return None
    lowered = name.lower()
    close = difflib.get_close_matches(lowered, SECTIONS, n=1, cutoff=NEAR_MISS)
    if close:
        return close[0]
    head = re.split(r"[\s_\-:.]+", lowered)[0]
    similar = difflib.SequenceMatcher(None, head, "schedule").ratio()
    return "schedule NAME" if similar >= NEAR_MISS else None


def _ours(section: str) -> bool:
    return section in SECTIONS or section.startswith("schedule ")


def config_warnings(path: str) -> list[str]:
    """What a run warns about in a loaded config, one line each (the run goes on): a section
    named like one this tool reads, which is ignored; a " #" inside a value of ours (a "#"
    after a value is part of it: comments go on lines of their own)."""
    source = display_path(path)
    with _client_config_errors():
        parser = idcf_api.read_config(path)
    lines = [f"{source}: [{name}] is not a section ssh_scale.py reads, so it is ignored (did "
             f"you mean [{near}]?)" for name in parser.sections()
             if (near := _near_miss(name)) is not None]
    for name in filter(_ours, parser.sections()):
        kind = name.split(" ")[0]
        lines += [f"{source}: [{name}] {key}: the value holds \" #\", which is part of it, not a "
                  "comment (comments go on lines of their own)"
                  for key, value in parser[name].items()
                  if (kind, key) not in HASH_ALLOWED and re.search(r"\s#", value)]
    return lines


def insecure_permissions(path: str) -> bool:
    """True when the file (which holds secrets) is readable or writable by group or others."""
    try:
        return bool(os.stat(path).st_mode & (stat.S_IRWXG | stat.S_IRWXO))
    except OSError:
        return False
