"""The cloud -> Pool, History and the cloud's time. Two list calls per run (the rule's members,
the account's VMs, both with their tags); the rule's tags (and the event log for what they do
not hold yet) only when decide() asks for the history; and the one place that corrects this
machine's clock by the skew the API's Date header shows."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import math
import re
import socket
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

from idcf_api import Client
from sshscale.config import lookup_ssh_config
from sshscale.facts import POOL, UPGRADED, history_from_tags
from sshscale.fleet import checked_members, outdated, ssh_checks, with_checks
from sshscale.logs import note
from sshscale.measure import Host, measure
from sshscale.model import GONE, Check, History, Measurement, Observation, Pool, Settings, Vm
from sshscale.ownership import Owner, judge, name_stem, named_by
from sshscale.probe import probe

__all__ = ["build_pool", "cloud_time", "history_from_events", "member_hosts",
           "monitored_names", "observe", "parse_time", "read_history", "read_pool",
           "read_rule_tags", "reread_pool", "resolved_addresses", "tag_pairs", "vm_from_api"]

EVENT_TYPES = ("LB.ASSIGN.TO.RULE", "LB.REMOVE.FROM.RULE")
EVENT_PAGES = 2  # newest first: the last scale is on the first page but in a very busy account
IGNORED_SKEW = 5.0  # seconds: the Date header's resolution plus the answer's latency
_ID_WORD = re.compile(r"[A-Za-z0-9_-]+")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


# --- parsing (pure) ---------------------------------------------------------------------------


def parse_time(text: Optional[str]) -> Optional[datetime]:
    """A CloudStack date (2013-05-10T17:27:52+0900) as an aware datetime, or None."""
    if not text:
        return None
    for fmt in ("%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S.%f%z"):
        try:
            return datetime.strptime(text.replace("Z", "+0000"), fmt)
        except ValueError:
            continue
    return None


def vm_from_api(data: Mapping[str, Any], settings: Settings, *, in_lb: bool,
                ips: Sequence[str] = (), monitored_names: Sequence[str] = (),
                upgrading: bool = False) -> Vm:
    """A Vm from a listVirtualMachines / listLoadBalancerRuleInstances object; whether it is
    the pool's is proven from its name, instance group and tags (sshscale/ownership.py;
    `upgrading`: no VM of the pool carries its name or tag yet). The monitored VM is never
    taken as one an earlier version deployed (names compare case-insensitively)."""
    nic_ips = [n.get("ipaddress") for n in data.get("nic") or [] if n.get("ipaddress")]
    all_ips = list(ips) + [ip for ip in nic_ips if ip not in ips]
    names = {str(n).lower() for n in (data.get("name"), data.get("displayname"),
                                      data.get("instancename"), *all_ips) if n}
    monitored = any(n.lower() in names for n in monitored_names if n)
    tags = tuple(tag_pairs(data))
    verdict = judge(data.get("name"), data.get("group"), {k.lower(): v for k, v in tags},
                    in_lb, settings.load_balancer, settings.group,
                    upgrading=upgrading and not monitored)
    managed = verdict.ours
    return Vm(
        id=str(data.get("id")), name=str(data.get("name", "")), state=str(data.get("state", "")),
        created=parse_time(data.get("created")), ip=all_ips[0] if all_ips else None,
        in_lb=in_lb, managed=managed, monitored=monitored,
        jobid=data.get("jobid"), tags=tags,
        outdated=managed and outdated(data, settings.launch),
        legacy=verdict.owner is Owner.LEGACY, doubt=verdict.why)


def tag_pairs(data: Mapping[str, Any]) -> list[tuple[str, str]]:
    """A resource's tags from a list answer, as (key, value) pairs."""
    return [(str(t["key"]), str(t.get("value", ""))) for t in data.get("tags") or []
            if isinstance(t, Mapping) and "key" in t]


def build_pool(members: Sequence[Mapping[str, Any]], listed: Sequence[Mapping[str, Any]],
               settings: Settings, monitored_names: Sequence[str],
               upgraded: bool = True) -> Pool:
    """Merge the LB member list (lbvmips form) and the listed VMs into a Pool: every member,
    and of the VMs outside the load balancer those proven the pool's and those carrying part
    of its identity (reported, never touched). Members an earlier version deployed are
    recognised only during the upgrade: the rule does not say `upgraded` (ssh-scale:upgraded)
    and no VM carries the pool's name or tag yet."""
    member_data = [(item.get("loadbalancerruleinstance", item), item) for item in members]
    upgrading = not upgraded and \
        not any(_proven(data, settings) for data, _ in member_data) and \
        not any(_proven(data, settings) for data in listed)
    vms: dict[str, Vm] = {}
    for data, item in member_data:
        vm = vm_from_api(data, settings, in_lb=True, ips=item.get("lbvmipaddresses") or (),
                         monitored_names=monitored_names, upgrading=upgrading)
        vms[vm.id] = vm
    for data in listed:
        if str(data.get("id")) in vms:
            continue
        vm = vm_from_api(data, settings, in_lb=False, monitored_names=monitored_names)
        if vm.state not in GONE and (vm.managed or vm.doubt):
            vms[vm.id] = vm
    return Pool(tuple(vms.values()))


def _proven(data: Mapping[str, Any], settings: Settings) -> bool:
    """The VM carries the pool's name or tag (whatever else it carries)."""
    tags = {k.lower(): v for k, v in tag_pairs(data)}
    return named_by(data.get("name"), settings.load_balancer) or \
        (tags.get(POOL) or "").strip().lower() == settings.load_balancer.strip().lower()


def history_from_events(events: Sequence[Mapping[str, Any]], settings: Settings,
                        pool: Pool) -> History:
    """Last scale-out end and last scale-in from listEvents objects: the fallback for a pool
    whose load balancer has no time tags yet (hints, not facts).

    An LB event belongs to this pool when its resourceid is the rule (CloudStack 4.17+), or
    its description names the rule's ID as a whole word; an event of a failed action (level
    ERROR, "Error while ...") is no scale action. Without an assign event, the newest managed
    member's creation time stands in for the last scale-out (a lower bound)."""
    last_out = last_in = None
    for event in sorted(events, key=lambda e: parse_time(e.get("created")) or _EPOCH):
        when = parse_time(event.get("created"))
        kind = str(event.get("type", ""))
        if when is None or event.get("state", "Completed") != "Completed" or \
                kind not in EVENT_TYPES or _failed(event):
            continue
        words = set(_ID_WORD.findall(str(event.get("description", ""))))
        if event.get("resourceid") != settings.load_balancer and \
                settings.load_balancer not in words:
            continue
        if kind == "LB.ASSIGN.TO.RULE":
            last_out = when
        else:
            last_in = when
    if last_out is None:
        created = [v.created for v in pool.members if v.managed and v.created]
        last_out = max(created, default=None)
    return History(last_out, last_in)


def _failed(event: Mapping[str, Any]) -> bool:
    return str(event.get("level", "INFO")).upper() == "ERROR" or \
        str(event.get("description", "")).startswith("Error while")


# --- reading the cloud -----------------------------------------------------------------------


def read_pool(client: Client, settings: Settings, monitored_names: Sequence[str],
              whole_group: bool = False) -> Pool:
    """Two list calls at once: the rule's members (with their LB IPs) and the VMs named with
    the pool's stem (narrow, whatever else the account holds). When a member of the pool's
    instance group is not named so (a VM an earlier version deployed, or someone else's), or
    `whole_group` (a read-only look, which reports what else is in the group), a third: the
    whole instance group."""
    in_zone = {"zoneid": settings.launch.get("zoneid"), **settings.scope}
    with ThreadPoolExecutor(max_workers=2) as pool:
        members = pool.submit(client.list, "listLoadBalancerRuleInstances",
                              id=settings.load_balancer, lbvmips="true")
        named = pool.submit(client.list, "listVirtualMachines",
                            name=name_stem(settings.load_balancer), **in_zone)
        members_data, listed = members.result(), named.result()
    groupid = _group_id(members_data, settings, unnamed_only=not whole_group)
    if groupid is not None:
        listed = listed + client.list("listVirtualMachines", groupid=groupid, **in_zone)
    upgraded = True
    if any(_unproven_member(item, settings) for item in members_data):
        upgraded = UPGRADED in read_rule_tags(client, settings)
    return build_pool(members_data, listed, settings, monitored_names, upgraded=upgraded)


def _unproven_member(item: Mapping[str, Any], settings: Settings) -> bool:
    """A member in the pool's instance group with neither its name nor its tag: an earlier
    version's VM, or someone's."""
    data = item.get("loadbalancerruleinstance", item)
    return data.get("group") == settings.group and not _proven(data, settings)


def _group_id(members: Sequence[Mapping[str, Any]], settings: Settings,
              unnamed_only: bool) -> Optional[str]:
    """The pool's instance group's id, as a member in it shows it (with unnamed_only: only
    a member the pool's stem does not name shows it)."""
    for item in members:
        data = item.get("loadbalancerruleinstance", item)
        if data.get("group") == settings.group and data.get("groupid") and not (
                unnamed_only and named_by(data.get("name"), settings.load_balancer)):
            return str(data["groupid"])
    return None


def read_rule_tags(client: Client, settings: Settings) -> dict[str, str]:
    """The load-balancer rule's tags, keys lowercased (CloudStack compares them so)."""
    rules = client.list("listLoadBalancerRules", id=settings.load_balancer, **settings.scope)
    return {key.lower(): value for key, value in tag_pairs(rules[0] if rules else {})}


def read_history(client: Client, settings: Settings, pool: Pool, now: datetime) -> History:
    """The pool's history from the load-balancer rule's tags; a time no tag holds yet comes
    from the event log (the assign and remove events since the longest cooldown, a day more
    as the filter takes a date; at most EVENT_PAGES pages of each), except for policy =
    target, which has no cooldowns and whose estimate only looks at the last minutes: the
    tags alone, which every scale of this version writes."""
    history = history_from_tags(read_rule_tags(client, settings))
    if (history.last_scale_out and history.last_scale_in) or settings.policy == "target":
        return history
    horizon = max(settings.cooldown_in, settings.cooldown_out, settings.job_timeout)
    since = (now - timedelta(seconds=horizon) - timedelta(days=1)).strftime("%Y-%m-%d")
    found = [event for kind in EVENT_TYPES
             for event in client.list("listEvents", max_pages=EVENT_PAGES, type=kind,
                                      startdate=since, **settings.scope)]
    events = history_from_events(found, settings, pool)
    return replace(history, last_scale_out=history.last_scale_out or events.last_scale_out,
                   last_scale_in=history.last_scale_in or events.last_scale_in)


def monitored_names(settings: Settings, ssh_config: Optional[Any]) -> list[str]:
    """Names and addresses from the config that identify the monitored VM among the pool
    members: [monitoring] host, its ~/.ssh/config HostName, and the addresses they resolve
    to (the VM an SSH connection to it reaches)."""
    names = list(settings.hosts)
    names += [lookup_ssh_config(ssh_config, h).get("hostname", h) for h in settings.hosts]
    return names + resolved_addresses(names)


def resolved_addresses(names: Sequence[str]) -> list[str]:
    """The addresses host names resolve to (an address stays as it is; a name that does not
    resolve adds nothing)."""
    addresses: list[str] = []
    for name in dict.fromkeys(names):
        with contextlib.suppress(ValueError):
            ipaddress.ip_address(name)
            continue
        with contextlib.suppress(OSError, UnicodeError):
            addresses += [str(info[4][0]) for info in socket.getaddrinfo(name, None)]
    return list(dict.fromkeys(addresses))


def member_hosts(pool: Pool, settings: Settings, now: datetime) -> list[Host]:
    """Running members old enough to report a meaningful load (monitor_members = yes), at
    their address; a managed one (not the monitored VM) with its id, for its host key."""
    hosts = []
    for vm in pool.members:
        age = (now - vm.created).total_seconds() if vm.created else math.inf
        if vm.state != "Running" or not vm.ip:
            note("measure", f"{vm.name} skipped ({vm.state})")
        elif age < settings.boot_grace:
            note("measure", f"{vm.name} skipped ({age:.0f} s old, boot_grace "
                            f"{settings.boot_grace:g} s)")
        else:
            hosts.append(Host(vm.ip, vm.id if vm.managed and not vm.monitored else None))
    return hosts


def cloud_time(local: datetime, client: Client) -> datetime:
    """The cloud's time: the local time corrected by the skew seen in the API's Date
    headers (with a warning line), so cooldowns and boot_grace compare like with like on a
    monitor VM whose clock is off. Call it once per run, after the first API answer."""
    skew = client.clock_skew
    if abs(skew) <= IGNORED_SKEW:
        return local
    note("clock", f"this machine's clock is {abs(skew):.0f} s "
                  f"{'behind' if skew > 0 else 'ahead of'} the cloud's; cooldowns use the "
                  "cloud's", logging.WARNING)
    return local + timedelta(seconds=skew)


def observe(settings: Settings, client: Client, ssh_config: Optional[Any],
            now: datetime, dry_run: bool = False) -> Observation:
    """Measure and read the pool; in parallel when the hosts are known up front. With
    monitor_members the members are measured instead of [monitoring] host, which then only
    identifies the monitored VM. [health] check = http probes the members while SSH measures.
    `now` is this machine's time; the Observation carries the cloud's, and its pool each
    member's health check. A dry run records no new host key."""
    names = monitored_names(settings, ssh_config)
    with ThreadPoolExecutor(max_workers=1) as executor:
        if settings.monitor_members:
            pool = read_pool(client, settings, names, whole_group=dry_run)
            now = cloud_time(now, client)
            measuring = executor.submit(measure, member_hosts(pool, settings, now), settings,
                                        ssh_config, dry_run)
        else:
            measuring = executor.submit(measure, [Host(h) for h in settings.hosts], settings,
                                        ssh_config, dry_run)
            pool = read_pool(client, settings, names, whole_group=dry_run)
            now = cloud_time(now, client)
        checks = _probe_members(pool, settings, now)
        measurement = measuring.result()
    # When no host answered, the run ends with these errors as its one error line: logged
    # here too, they would show twice in a cron log (>> log 2>&1).
    level = logging.WARNING if measurement.answered else logging.DEBUG
    for host in measurement.hosts:
        if host.error:
            note("ssh", host.error, level)
    if settings.health_check == "ssh":
        checks = ssh_checks(pool, measurement, settings, now)
    pool = with_checks(_mark_reached(pool, measurement, settings), checks)
    return Observation(measurement, pool, now)


def _probe_members(pool: Pool, settings: Settings, now: datetime) -> dict[str, Check]:
    """check = http: the members past [health] grace, probed (nothing otherwise)."""
    if settings.health_check != "http":
        return {}
    return probe(checked_members(pool, settings, now), settings)


def reread_pool(observation: Observation, settings: Settings, client: Client,
                ssh_config: Optional[Any]) -> Observation:
    """The observation with the pool read again (same measurement, same time, the members'
    health checks kept): what a run acts on once it holds the pool's lease."""
    pool = read_pool(client, settings, monitored_names(settings, ssh_config))
    checks = {vm.id: vm.check for vm in observation.pool.vms if vm.check is not None}
    return replace(observation, pool=with_checks(
        _mark_reached(pool, observation.measurement, settings), checks))


def _mark_reached(pool: Pool, measurement: Measurement, settings: Settings) -> Pool:
    """The address an SSH connection to [monitoring] host reached names the monitored VM."""
    reached = {h.address for h in measurement.hosts if h.address and h.host in settings.hosts}
    return Pool(tuple(replace(v, monitored=v.monitored or v.ip in reached) for v in pool.vms))
