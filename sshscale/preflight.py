"""The preflight, read-only: `--check` verifies against the cloud and over SSH what a run will
need, one finding per line: the config and key files, the API (the keys, the clock), what
[launch_config] and [scalling] name in the cloud (zone, service offering, template, networks,
the load-balancer rule), the commands a run calls (listApis, where the cloud answers it), the
pool, and SSH to every host a run measures. A dry run asks the launch checks too, and a run
whose call the cloud refused for a parameter (431) asks them which config key to name: the
answer comes from what the cloud lists, never from the error's wording."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import idcf_api
from idcf_api import ApiError, Client, CloudStackError, JobFailed
from sshscale.config import config_warnings, display_path, insecure_permissions
from sshscale.errors import CloudConfigError, SshError
from sshscale.logs import note
from sshscale.measure import (
    Host,
    Target,
    known_host_name,
    load_known_hosts,
    load_private_key,
    measure,
    ssh_targets,
)
from sshscale.model import Pool, Settings, vm_count
from sshscale.observe import IGNORED_SKEW, monitored_names, read_pool

__all__ = ["FAIL", "OK", "RUN_COMMANDS", "SKIP", "WARN", "Finding", "check_launch",
           "command_finding", "explain", "launch_findings", "line", "lister", "network_finding",
           "offering_finding", "rule_finding", "run_checks", "template_finding", "zone_finding"]

OK, WARN, FAIL, SKIP = "ok", "warn", "FAIL", "skip"
PARAMETER_ERROR = 431  # CloudStack's PARAM_ERROR: a parameter names nothing, or is malformed
# Every API command a run may send (observe, act, tags, lease); listApis must show them all.
RUN_COMMANDS = ("listLoadBalancerRuleInstances", "listVirtualMachines", "listLoadBalancerRules",
                "listEvents", "queryAsyncJobResult", "deployVirtualMachine",
                "assignToLoadBalancerRule", "removeFromLoadBalancerRule",
                "destroyVirtualMachine", "createTags", "deleteTags")
ZONE, OFFERING, TEMPLATE, NETWORKS = ("[launch_config] zoneid", "[launch_config] serviceofferingid",
                                      "[launch_config] templateid", "[launch_config] networkids")
RULE = "[scalling] load_balancer"

Answer = Union[list[dict], CloudStackError]


@dataclass(frozen=True)
class Finding:
    """One line of the preflight: ok, warn, FAIL or skip, what was checked, what was found;
    `key` is the config key a failure names (None when the check itself could not run)."""

    status: str
    topic: str
    text: str
    key: Optional[str] = None

    @property
    def failed(self) -> bool:
        return self.status == FAIL


def line(finding: Finding) -> str:
    """The finding as --check prints it."""
    return f"{finding.status:<4}  {finding.topic:<9} {finding.text}"


def lister(path: str) -> str:
    """idcf-compute-api for this config's account: --config PATH unless the path is the one
    idcf-compute-api reads by itself ($IDCFRC, else ~/.idcfrc)."""
    if os.path.realpath(path) == os.path.realpath(idcf_api.config_path()):
        return "idcf-compute-api"
    return f"idcf-compute-api --config {display_path(path)}"


# --- the cloud's answers -> findings (pure) ---------------------------------------------------


def _by_id(items: Sequence[Mapping[str, Any]], value: str) -> list[Mapping[str, Any]]:
    return [item for item in items if str(item.get("id")) == value]


def _missing(topic: str, key: str, kind: str, value: str, items: Sequence[Mapping[str, Any]],
             listing: str) -> Finding:
    """No such object: and when the value is an object's name rather than its id, say so."""
    named = [item for item in items if str(item.get("name")) == value]
    hint = f"; that is the name of {kind} {named[0].get('id')}: give its id" if named else ""
    return Finding(FAIL, topic, f"{key}: no such {kind} {value!r} for this account{hint} "
                                f"({listing})", key)


def zone_finding(zones: Sequence[Mapping[str, Any]], settings: Settings,
                 listing: str) -> Finding:
    """[launch_config] zoneid names an enabled zone."""
    value = settings.launch["zoneid"]
    found = _by_id(zones, value)
    if not found:
        return _missing("zone", ZONE, "zone", value, zones,
                        f"{listing} listZones -t id,name")
    zone = found[0]
    state = zone.get("allocationstate", "Enabled")
    if state != "Enabled":
        return Finding(FAIL, "zone", f"{ZONE}: zone {zone.get('name')} is {state}: nothing can "
                                     "be deployed there", ZONE)
    return Finding(OK, "zone", f"{ZONE}: {zone.get('name')}")


def offering_finding(offerings: Sequence[Mapping[str, Any]], settings: Settings,
                     listing: str) -> Finding:
    """[launch_config] serviceofferingid names an offering this account may use."""
    value = settings.launch["serviceofferingid"]
    found = _by_id(offerings, value)
    if not found:
        return _missing("offering", OFFERING, "service offering", value, offerings,
                        f"{listing} listServiceOfferings -t id,name,displaytext")
    return Finding(OK, "offering", f"{OFFERING}: "
                                   f"{found[0].get('displaytext') or found[0].get('name')}")


def template_finding(templates: Sequence[Mapping[str, Any]], settings: Settings,
                     zones: Sequence[Mapping[str, Any]], listing: str) -> Finding:
    """[launch_config] templateid names a template this account may deploy, ready in the
    zone (a template kept in several zones is listed once per zone)."""
    value, zoneid = settings.launch["templateid"], settings.launch["zoneid"]
    copies = _by_id(templates, value)
    command = f"{listing} listTemplates --templatefilter=executable -t id,name,zonename"
    if not copies:
        return _missing("template", TEMPLATE, "template", value, templates, command)
    name = copies[0].get("name")
    if not _by_id(zones, zoneid):  # the zone check says what is wrong
        return Finding(OK, "template", f"{TEMPLATE}: {name}")
    here = [t for t in copies if str(t.get("zoneid")) == zoneid]
    if not here:
        where = ", ".join(sorted({str(t.get("zonename") or t.get("zoneid")) for t in copies}))
        return Finding(FAIL, "template", f"{TEMPLATE}: template {name} is not in zone "
                                         f"{_zone_name(zones, zoneid)} (it is in {where}; "
                                         f"{command})", TEMPLATE)
    if not any(t.get("isready", True) for t in here):
        return Finding(FAIL, "template", f"{TEMPLATE}: template {name} is not ready in zone "
                                         f"{_zone_name(zones, zoneid)} ({here[0].get('status')})",
                       TEMPLATE)
    return Finding(OK, "template", f"{TEMPLATE}: {name}")


def rule_finding(rules: Sequence[Mapping[str, Any]], settings: Settings,
                 zones: Sequence[Mapping[str, Any]], listing: str) -> Finding:
    """[scalling] load_balancer names a rule of this account, in the zone new VMs go to, not
    being deleted (this account's own rules are the ones it lists and may assign VMs to)."""
    value, zoneid = settings.load_balancer, settings.launch["zoneid"]
    found = _by_id(rules, value)
    if not found:
        return _missing("lb rule", RULE, "load-balancer rule", value, rules,
                        f"{listing} listLoadBalancerRules -t id,name,publicip,zonename")
    rule = found[0]
    name, state = rule.get("name"), rule.get("state", "Active")
    if state == "Revoke":
        return Finding(FAIL, "lb rule", f"{RULE}: rule {name} is being deleted (state Revoke)",
                       RULE)
    if rule.get("zoneid") and str(rule["zoneid"]) != zoneid and _by_id(zones, zoneid):
        return Finding(FAIL, "lb rule", f"{RULE}: rule {name} is in zone "
                                        f"{rule.get('zonename') or rule['zoneid']}, but {ZONE} is "
                                        f"{_zone_name(zones, zoneid)}: new VMs could not join it",
                       RULE)
    return Finding(OK, "lb rule", f"{RULE}: {name} ({rule.get('publicip')}:"
                                  f"{rule.get('publicport')} -> {rule.get('privateport')}), "
                                  f"{state}, zone {_zone_name(zones, zoneid)}")


def network_finding(networks: Sequence[Mapping[str, Any]], rule: Optional[Mapping[str, Any]],
                    settings: Settings, listing: str) -> Finding:
    """[launch_config] networkids, when set, name networks of this account in the zone, the
    load balancer's among them (a VM outside the rule's network cannot join the rule); when
    unset, the deploy picks the network, which is only sure with one network in the zone."""
    zoneid = settings.launch["zoneid"]
    wanted = [n.strip() for n in settings.launch.get("networkids", "").split(",") if n.strip()]
    rule_net = str(rule.get("networkid") or "") if rule else ""
    names = {str(n.get("id")): str(n.get("name")) for n in networks}
    command = f"{listing} listNetworks -t id,name,zonename"
    if not wanted:
        in_zone = [n for n in networks if str(n.get("zoneid")) == zoneid]
        if len(in_zone) > 1:
            return Finding(WARN, "network", f"{NETWORKS}: not set, and this account has "
                                            f"{len(in_zone)} networks in the zone: a deploy may "
                                            "fail or pick another one than the load balancer's; "
                                            f"set networkids = {rule_net or '...'} ({command})",
                           NETWORKS)
        chosen = f"the zone's network {in_zone[0].get('name')}" if in_zone else \
            "the cloud picks or creates the network"
        return Finding(OK, "network", f"{NETWORKS}: not set ({chosen})")
    for network in wanted:
        found = _by_id(networks, network)
        if not found:
            return _missing("network", NETWORKS, "network", network, networks, command)
        if str(found[0].get("zoneid")) != zoneid:
            return Finding(FAIL, "network", f"{NETWORKS}: network {found[0].get('name')} is in "
                                            f"zone {found[0].get('zonename')}, not in {ZONE}'s",
                           NETWORKS)
    if rule_net and rule_net not in wanted:
        return Finding(FAIL, "network", f"{NETWORKS}: the load balancer's network "
                                        f"{names.get(rule_net, rule_net)} ({rule_net}) is not "
                                        "among them: new VMs could not join the rule", NETWORKS)
    return Finding(OK, "network", f"{NETWORKS}: {', '.join(names[n] for n in wanted)}")


def command_finding(allowed: Sequence[str]) -> Finding:
    """The account may call every command a run sends (listApis' answer)."""
    missing = [command for command in RUN_COMMANDS if command not in allowed]
    if missing:
        return Finding(FAIL, "commands", f"this account may not call {', '.join(missing)}, which "
                                         "runs use (its role lacks them: ask the cloud's "
                                         "administrator)")
    return Finding(OK, "commands", f"this account may call the {len(RUN_COMMANDS)} commands a "
                                   "run uses (listApis)")


def _zone_name(zones: Sequence[Mapping[str, Any]], zoneid: str) -> str:
    found = _by_id(zones, zoneid)
    return str(found[0].get("name")) if found else zoneid


def _judged(topic: str, answers: Sequence[Answer], judge: Callable[[], Finding],
            unchecked: Optional[str] = None) -> Finding:
    """The judgement of the answers, or the first read that failed; with `unchecked` (the key
    the read checks, when listZones proved the keys), a 401 for a command no run sends is the
    role lacking it: a warning, as a run does not need it."""
    failed = next((a for a in answers if isinstance(a, CloudStackError)), None)
    if failed is None:
        return judge()
    if unchecked and isinstance(failed, ApiError) and failed.status == 401 and \
            failed.command not in RUN_COMMANDS:
        return Finding(WARN, topic, f"this account may not call {failed.command} (its role "
                                    f"lacks it; no run sends it): {unchecked} not checked")
    return Finding(FAIL, topic, str(failed))


# --- reading the cloud ------------------------------------------------------------------------


def _read(client: Client, command: str, **params: str) -> Answer:
    try:
        return client.list(command, **params)
    except CloudStackError as exc:
        return exc


def launch_findings(settings: Settings, client: Client, path: str,
                    zones: Optional[list[dict]] = None) -> list[Finding]:
    """The zone, service offering, template, networks and load-balancer rule the config names,
    from what this account lists (five list calls at once; `zones`, when already read), in
    the scope a run lists (settings.scope, where CloudStack takes it: not zones, offerings)."""
    scope = settings.scope
    reads: dict[str, tuple[str, dict[str, str]]] = {
        "zones": ("listZones", {}), "offerings": ("listServiceOfferings", {}),
        "templates": ("listTemplates", {"templatefilter": "executable", **scope}),
        "rules": ("listLoadBalancerRules", {"listall": "true", **scope}),
        "networks": ("listNetworks", {"listall": "true", **scope})}
    if zones is not None:
        del reads["zones"]
    with ThreadPoolExecutor(max_workers=len(reads)) as pool:
        futures = {name: pool.submit(_read, client, command, **params)
                   for name, (command, params) in reads.items()}
        got: dict[str, Answer] = {name: future.result() for name, future in futures.items()}
    zone_list = zones if zones is not None else got["zones"]
    known_zones = zone_list if isinstance(zone_list, list) else []
    rules = got["rules"]
    rule = _by_id(rules, settings.load_balancer) if isinstance(rules, list) else []
    listing = lister(path)
    proven = isinstance(zone_list, list)  # listZones answered: the keys are accepted
    return [
        _judged("zone", [zone_list], lambda: zone_finding(known_zones, settings, listing)),
        _judged("offering", [got["offerings"]],
                lambda: offering_finding(got["offerings"], settings, listing),
                OFFERING if proven else None),
        _judged("template", [got["templates"]],
                lambda: template_finding(got["templates"], settings, known_zones, listing),
                TEMPLATE if proven else None),
        _judged("network", [got["networks"]],
                lambda: network_finding(got["networks"], rule[0] if rule else None, settings,
                                        listing), NETWORKS if proven else None),
        _judged("lb rule", [rules], lambda: rule_finding(rules, settings, known_zones, listing)),
    ]


def _described(findings: Sequence[Finding], settings: Settings) -> str:
    return "; ".join(f"{settings.source}: {f.text}" if f.key else f.text for f in findings)


def check_launch(settings: Settings, client: Client, path: str) -> None:
    """A dry run's launch checks: warnings logged; failures raised as one CloudConfigError."""
    findings = launch_findings(settings, client, path)
    for finding in findings:
        if finding.status == WARN:
            note("check", finding.text, logging.WARNING)
    failed = [f for f in findings if f.failed]
    if failed:
        raise CloudConfigError(_described(failed, settings))


def explain(exc: BaseException, settings: Settings, client: Client,
            path: str) -> Optional[CloudConfigError]:
    """For a call the cloud refused for a parameter (431), the config keys that name nothing
    the cloud has, found by reading what it lists; None when that finds nothing wrong."""
    if isinstance(exc, ApiError) and exc.status == PARAMETER_ERROR:
        refused = f"{exc.command} answered HTTP {exc.status}"
    elif isinstance(exc, JobFailed) and exc.errorcode == PARAMETER_ERROR:
        refused = f"job {exc.jobid} failed with errorcode {exc.errorcode}"
    else:
        return None
    wrong = [f for f in launch_findings(settings, client, path) if f.failed and f.key]
    if not wrong:
        return None
    return CloudConfigError(f"{_described(wrong, settings)} ({refused})")


# --- files and SSH ----------------------------------------------------------------------------


def _file_findings(path: str, settings: Settings, reached: Sequence[Target]) -> list[Finding]:
    """The config (readable by its owner only; no near-miss section, no ' #' in a value) and
    each private key (its owner only, as OpenSSH wants; loadable with pass_phrase)."""
    shown = display_path(path)
    found = [Finding(FAIL, "config", f"{shown} is readable by group or others; it holds "
                                     f"secrets: chmod 600 {shown}")
             if insecure_permissions(path) else
             Finding(OK, "config", f"{shown}: readable by its owner only")]
    found += [Finding(WARN, "config", warning) for warning in config_warnings(path)]
    for key in sorted({t.key_path for t in reached}):
        found.append(_key_finding(key, settings.pass_phrase))
    return found


def _key_finding(path: str, pass_phrase: str) -> Finding:
    shown = display_path(path)
    if os.stat(path).st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        return Finding(FAIL, "key", f"{shown} is readable by group or others (OpenSSH refuses "
                                    f"such a key): chmod 600 {shown}",
                       "[monitoring] private_key_path")
    try:
        key = load_private_key(path, pass_phrase)
    except SshError as exc:
        return Finding(FAIL, "key", str(exc), "[monitoring] private_key_path")
    return Finding(OK, "key", f"{shown}: {key.get_name()}, readable by its owner only")


def _ssh_findings(settings: Settings, ssh_config: Optional[Any],
                  pool: Optional[Pool]) -> list[Finding]:
    """SSH to each host a run measures ([monitoring] host; with monitor_members, the Running
    members), with the configured key and host-key policy; nothing is recorded."""
    hosts = [Host(h) for h in settings.hosts]
    if settings.monitor_members and pool is not None:
        hosts += [Host(vm.ip, vm.id if vm.managed and not vm.monitored else None)
                  for vm in pool.members
                  if vm.state == "Running" and vm.ip and vm.ip not in settings.hosts]
    if not hosts:
        return [Finding(WARN, "ssh", "no host to measure (monitor_members = yes and no Running "
                                     "member)")]
    measured = measure(hosts, settings, ssh_config, dry_run=True)
    return [_ssh_finding(target, host.loads, host.error, settings)
            for target, host in zip(ssh_targets(hosts, settings, ssh_config), measured.hosts)]


def _ssh_finding(target: Target, loads: Optional[tuple[float, float, float]],
                 error: Optional[str], settings: Settings) -> Finding:
    if error is not None or loads is None:
        return Finding(FAIL, "ssh", error or f"{target.label}: no load")
    if settings.host_key_policy == "off":
        host_key = "not checked (host_key_policy = off)"
    elif load_known_hosts(target.known_hosts).lookup(known_host_name(target)):
        host_key = f"known ({display_path(target.known_hosts)})"
    else:
        host_key = f"new: the first run records it in {display_path(target.known_hosts)}"
    where = f"{target.hostname}:{target.port}"
    reached = where if target.label == target.hostname else f"{target.label} ({where})"
    load = " ".join(f"{x:.2f}" for x in loads)
    return Finding(OK, "ssh", f"{reached} as {target.user} with "
                              f"{display_path(target.key_path)}: load {load}; host key {host_key}")


def _clock_finding(client: Client) -> Finding:
    skew = client.clock_skew
    if abs(skew) <= IGNORED_SKEW:
        return Finding(OK, "clock", f"within {IGNORED_SKEW:g} s of the cloud's (the API's Date "
                                    "header)")
    return Finding(WARN, "clock", f"this machine's clock is {abs(skew):.0f} s "
                                  f"{'behind' if skew > 0 else 'ahead of'} the cloud's: runs "
                                  "correct for it, but set the clock (NTP)")


def _commands_finding(client: Client) -> Finding:
    try:
        allowed = [str(api.get("name")) for api in client.list("listApis")]
    except CloudStackError as exc:
        return Finding(WARN, "commands", f"this cloud does not list the commands this account "
                                         f"may call ({exc}): not checked")
    return command_finding(allowed)


def _pool_finding(settings: Settings, client: Client,
                  ssh_config: Optional[Any]) -> tuple[Finding, Optional[Pool]]:
    try:
        pool = read_pool(client, settings, monitored_names(settings, ssh_config))
    except CloudStackError as exc:
        return Finding(FAIL, "pool", str(exc)), None
    members = ", ".join(vm.name for vm in pool.members) or "none"
    managed = sum(1 for vm in pool.vms if vm.managed)
    return Finding(OK, "pool", f"{vm_count(len(pool.members))} in the load balancer "
                               f"({members}); {managed} managed (group {settings.group})"), pool


def run_checks(settings: Settings, client: Client, ssh_config: Optional[Any],
               path: str) -> Iterator[Finding]:
    """Every check, in order, as it is done: the files, the API and the clock, the commands,
    what the config names, the pool, SSH. Sends no change and writes no file."""
    reached = ssh_targets([Host(h) for h in settings.hosts or ("*",)], settings, ssh_config)
    yield from _file_findings(path, settings, reached)
    try:
        zones = client.list("listZones")
    except CloudStackError as exc:
        yield Finding(FAIL, "api", str(exc))
        if isinstance(exc, ApiError):  # an answer: its Date header tells the cloud's time
            yield _clock_finding(client)
        yield Finding(SKIP, "cloud", "the commands, the IDs the config names and the pool: "
                                     "they need the API")
        yield from _ssh_findings(settings, ssh_config, None)
        return
    yield Finding(OK, "api", f"{client.account.endpoint}: the keys are accepted (listZones)")
    yield _clock_finding(client)
    yield _commands_finding(client)
    launch = launch_findings(settings, client, path, zones)
    yield from launch
    pool = None
    if not any(f.failed for f in launch):
        finding, pool = _pool_finding(settings, client, ssh_config)
        yield finding
    yield from _ssh_findings(settings, ssh_config, pool)
