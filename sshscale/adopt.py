"""`ssh_scale.py --adopt VM [VM ...]`: hand existing VMs (the 2013 tool's, or any made by
hand) over to the pool, one at a time. A VM belongs to the pool when it is in the pool's
instance group ([launch_config] group) and carries the tag ssh-scale:pool = the load-balancer
rule's id: --adopt tags it first, then sets the group (updateVirtualMachine), so that a
half-done adoption never hands the pool a VM it does not fully own.

Every VM named is checked before anything changes; the command is refused (exit 2) for a VM
that does not exist in the zone, is the monitored VM, carries another pool's tag or group,
is not Running, has a job under way, serves another load-balancer rule (a scale-in would
take it from there too), or that the next run would destroy (outside the load balancer while
the pool is full). The changes are made under the config's lock and the pool's lease, each VM
read again first; a VM outside the load balancer is added to it last (a run finds the pool's
VMs through the load balancer and the pool's name: one outside both would never be seen).
After a failed or timed-out call the VM is read back, and what the cloud holds decides: a step
it shows done counts as done, else the command stops (exit 1) saying what the VM now holds.
Never inferred from an error's wording.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Optional

from idcf_api import CloudStackError, Client
from sshscale.errors import ConfigError, LeaseBusy, LockBusy, ScaleError, TagError, message_of
from sshscale.facts import POOL
from sshscale.fleet import outdated, protected
from sshscale.interrupts import step
from sshscale.launch import Launcher
from sshscale.lease import pool_lease
from sshscale.logs import note
from sshscale.model import History, Pool, Settings, Vm, vm_count
from sshscale.observe import build_pool, cloud_time, monitored_names, tag_pairs, vm_from_api
from sshscale.ownership import pool_key, stem_key
from sshscale.run import run_lock
from sshscale.schedule import effective_bounds
from sshscale.tags import USER_VM, TagWriter

__all__ = ["AdoptFailed", "AdoptRefused", "Candidate", "adopt", "check", "pool_mark",
           "resolve"]

DEFAULT_GROUP_PREFIX = "ssh_scale-"  # Settings.group's default: another pool's when it differs


class AdoptRefused(ConfigError):
    """A VM named to --adopt may not be adopted (nothing was changed)."""


class AdoptFailed(ScaleError):
    """An adoption could not be made or finished (the message says what the VM holds)."""


@dataclass(frozen=True)
class Candidate:
    """A VM named to --adopt, as the cloud lists it, and the pool it would join."""

    data: Mapping[str, Any]
    vm: Vm
    pool: Pool
    other_rules: tuple[str, ...] = ()  # the other load-balancer rules it serves, as "name (id)"

    @property
    def label(self) -> str:
        return f"{self.vm.name} ({self.vm.id})"


# --- pure: which VM, and may it be adopted ----------------------------------------------------


def pool_mark(data: Mapping[str, Any]) -> Optional[str]:
    """The VM's ssh-scale:pool tag (keys compare case-insensitively), or None."""
    return next((value for key, value in tag_pairs(data) if key.lower() == POOL), None)


def resolve(name: str, vms: Sequence[Mapping[str, Any]], zone: str) -> Mapping[str, Any]:
    """The VM a --adopt argument names: its id, else its name or display name (in any case);
    raises AdoptRefused when none or several match."""
    found = [vm for vm in vms if str(vm.get("id")) == name]
    if not found:
        lowered = name.lower()
        found = [vm for vm in vms if lowered in (str(vm.get("name", "")).lower(),
                                                 str(vm.get("displayname", "")).lower())]
    if not found:
        raise AdoptRefused(f"{name}: no such VM in zone {zone} (idcf-compute-api "
                           f"listVirtualMachines --zoneid={zone} -t id,name,state,group)")
    if len(found) > 1:
        ids = ", ".join(str(vm.get("id")) for vm in found)
        raise AdoptRefused(f"{name}: {len(found)} VMs have this name ({ids}); give the id")
    return found[0]


def _same_rule(mark: Optional[str], rule: str) -> bool:
    """A pool tag names this rule (ids compare case-insensitively, as the cloud's do)."""
    return mark is not None and mark.strip().lower() == rule.strip().lower()


def owned(candidate: Candidate, settings: Settings) -> bool:
    """Whether the VM belongs to the pool already: its group and its tag, in the load
    balancer."""
    return candidate.data.get("group") == settings.group and candidate.vm.in_lb and \
        _same_rule(pool_mark(candidate.data), settings.load_balancer)


def check(candidate: Candidate, settings: Settings, max_size: int, joining: int = 0) -> None:
    """Raises AdoptRefused when the VM may not be adopted; `joining`: VMs outside the load
    balancer this command adopts before it (the next runs add one per run)."""
    vm, data, label = candidate.vm, candidate.data, candidate.label
    mark, group = pool_mark(data), str(data.get("group") or "")
    if vm.monitored:
        raise AdoptRefused(f"{label} is the monitored VM ([monitoring] host): ssh-scale never "
                           "manages it")
    if mark is not None and not _same_rule(mark, settings.load_balancer):
        raise AdoptRefused(f"{label} carries {POOL}={mark}: it belongs to the pool of load "
                           f"balancer {mark}")
    if stem_key(vm.name) not in (None, pool_key(settings.load_balancer)):
        raise AdoptRefused(f"{label} is named with another ssh-scale pool's stem: it belongs "
                           "to that pool")
    if group != settings.group and group.startswith(DEFAULT_GROUP_PREFIX):
        raise AdoptRefused(f"{label} is in instance group {group}, another ssh-scale pool's")
    if candidate.other_rules:
        raise AdoptRefused(f"{label} is a member of load-balancer rule "
                           f"{', '.join(candidate.other_rules)}: a scale-in would take it from "
                           "there too; remove it from that rule first")
    if vm.state == "Stopped":
        raise AdoptRefused(f"{label} is Stopped: the next run would destroy a Stopped VM of "
                           "the pool as a broken leftover; start it first (idcf-compute-api "
                           f"startVirtualMachine --id={vm.id} --wait)")
    if vm.state != "Running":
        raise AdoptRefused(f"{label} is {vm.state}: only a Running VM can be adopted")
    if vm.jobid:
        raise AdoptRefused(f"{label} has a job under way ({vm.jobid}); try again once it "
                           "has finished")
    committed = _others(candidate, settings) + joining
    if not vm.in_lb and committed >= max_size:
        raise AdoptRefused(f"{label} is not in the load balancer and the pool is full "
                           f"({committed} VMs of max_size {max_size}): the next run would "
                           "destroy it; raise max_size, or add it to the load balancer first")


def _others(candidate: Candidate, settings: Settings) -> int:
    """What max_size bounds without this VM: the members in service and the pool's VMs
    outside the load balancer (one per run is added while the pool is below max_size; the
    rest are destroyed)."""
    counted = not candidate.vm.in_lb and candidate.data.get("group") == settings.group
    return candidate.pool.committed - int(counted)


def next_runs(candidate: Candidate, settings: Settings, max_size: int) -> str:
    """What the next runs do with the adopted VM."""
    vm = candidate.vm
    if vm.in_lb:
        text = ("a member of the load balancer, managed from the next run on (a scale-in may "
                f"remove it: termination_policy {settings.termination_policy})")
        if protected(vm):
            text = "a member of the load balancer, managed and protected (never scaled in)"
    else:
        text = (f"added to the load balancer (the pool had {vm_count(candidate.pool.count)}, "
                f"max_size {max_size})")
    if outdated(candidate.data, settings.launch):
        text += ("; its template or service offering is not [launch_config]'s: it is "
                 "outdated (refresh = yes replaces it)")
    return text


# --- reading the cloud ------------------------------------------------------------------------


def _candidates(client: Client, settings: Settings, names: Sequence[str],
                monitored: Sequence[str]) -> list[Candidate]:
    """The named VMs as the cloud lists them now, with the pool (two list calls)."""
    vms = client.list("listVirtualMachines", zoneid=settings.launch.get("zoneid"), **settings.scope)
    members = client.list("listLoadBalancerRuleInstances", id=settings.load_balancer,
                          lbvmips="true")
    pool = build_pool(members, vms, settings, monitored)
    ips = {str(m.get("loadbalancerruleinstance", m).get("id")): m.get("lbvmipaddresses") or ()
           for m in members}
    found = []
    for name in names:
        data = resolve(name, vms, str(settings.launch.get("zoneid")))
        vm_id = str(data.get("id"))
        vm = vm_from_api(data, settings, in_lb=vm_id in ips, ips=ips.get(vm_id, ()),
                         monitored_names=monitored)
        found.append(Candidate(data, vm, pool, _other_rules(client, settings, vm_id)))
    return found


def _other_rules(client: Client, settings: Settings, vm_id: str) -> tuple[str, ...]:
    """The load-balancer rules besides the pool's that the VM is assigned to."""
    rules = client.list("listLoadBalancerRules", virtualmachineid=vm_id, **settings.scope)
    return tuple(f"{rule.get('name')} ({rule.get('id')})" for rule in rules
                 if not _same_rule(str(rule.get("id")), settings.load_balancer))


def _read_back(client: Client, settings: Settings, vm_id: str) -> Optional[Mapping[str, Any]]:
    """The VM as the cloud holds it now (None when it is gone or cannot be read)."""
    try:
        found = client.list("listVirtualMachines", id=vm_id, **settings.scope)
    except CloudStackError as exc:
        note("adopt", f"could not read {vm_id} back: {message_of(exc)}")
        return None
    return found[0] if found else None


def _holds(data: Optional[Mapping[str, Any]], vm_id: str) -> str:
    if data is None:
        return (f"unknown (check: idcf-compute-api listVirtualMachines --id={vm_id} "
                "-t id,name,group,tags)")
    return (f"group {data.get('group') or '(none)'}, {POOL} "
            f"{pool_mark(data) or '(none)'}, state {data.get('state')}")


# --- acting -----------------------------------------------------------------------------------


@contextlib.contextmanager
def _exclusive(config: str, client: Client, settings: Settings,
               now: datetime) -> Iterator[None]:
    """The config's lock and the pool's lease, as a run that acts takes them; another run
    holding either is a failure here (nothing was changed), not a quiet exit."""
    try:
        with run_lock(config), pool_lease(client, settings, now):
            yield
    except (LockBusy, LeaseBusy) as exc:
        raise AdoptFailed(f"{exc}; nothing was changed: try again in a minute") from None


def _hand_over(client: Client, settings: Settings, candidate: Candidate) -> None:
    """Tag the VM, then set its group, each only when missing; after a failed call the VM is
    read back and a step the cloud shows done counts as done."""
    vm = candidate.vm
    tags = TagWriter(client, settings)
    steps: list[tuple[str, Callable[[], Any], Callable[[Mapping[str, Any]], bool]]] = [
        (f"tag {POOL}={settings.load_balancer}",
         lambda: tags.create(USER_VM, vm.id, {POOL: settings.load_balancer}),
         lambda data: _same_rule(pool_mark(data), settings.load_balancer)),
        (f"group {candidate.data.get('group') or '(none)'} -> {settings.group}",
         lambda: client.call("updateVirtualMachine", id=vm.id, group=settings.group),
         lambda data: data.get("group") == settings.group),
    ]
    for what, change, done in steps:
        if done(candidate.data):
            continue
        note("adopt", f"{vm.name}: {what}")
        try:
            change()
        except (CloudStackError, TagError) as exc:  # a tag call has read back already
            data = _read_back(client, settings, vm.id)
            if data is not None and done(data):
                note("adopt", f"{vm.name}: {message_of(exc)}; the cloud shows it done")
                continue
            raise AdoptFailed(f"{candidate.label}: {message_of(exc)}; the VM now holds "
                              f"{_holds(data, vm.id)} (run --adopt again to finish)") from None
    if not vm.in_lb:
        _join(client, settings, candidate)


def _join(client: Client, settings: Settings, candidate: Candidate) -> None:
    """Add the adopted VM to the load balancer as a run's repair does (after a failure the
    members are read back: the VM in them counts as done)."""
    try:
        Launcher(client, settings, History(), clock=lambda: datetime.now(timezone.utc)
                 ).assign([candidate.vm.id])
    except CloudStackError as exc:
        raise AdoptFailed(f"{candidate.label}: {message_of(exc)}; it is the pool's but not "
                          "in the load balancer (run --adopt again to add it)") from None


def adopt(settings: Settings, client: Client, names: Sequence[str], config: str, *,
          ssh_config: Optional[Any] = None, dry_run: bool = False,
          clock: Callable[[], datetime]) -> int:
    """Check every named VM, then (unless dry_run) adopt them one at a time under the lock
    and the lease; returns how many were adopted (or would be). Raises AdoptRefused (exit 2)
    before any change, AdoptFailed or the API's errors (exit 1)."""
    names = list(dict.fromkeys(names))
    monitored = monitored_names(settings, ssh_config)
    with step("while reading the VMs to adopt", changing=False):
        candidates = _candidates(client, settings, names, monitored)
        now = cloud_time(clock(), client)
    max_size = effective_bounds(settings, now).max_size
    todo = _checked(candidates, settings, max_size)
    if dry_run:
        for candidate in todo:
            note("dry run", f"would adopt {candidate.label}: then "
                            f"{next_runs(candidate, settings, max_size)}")
        return len(todo)
    if not todo:
        return 0
    adopted = 0
    with step("while adopting VMs", left="a VM half adopted (tagged, not yet in the group) "
                                        "is not the pool's: run --adopt again"), \
            _exclusive(config, client, settings, now):
        for before in todo:
            try:
                ready = _checked(_candidates(client, settings, [before.vm.id], monitored),
                                 settings, max_size)
            except AdoptRefused as exc:
                raise AdoptFailed(f"{exc} (it changed since it was checked; {adopted} VM(s) "
                                  "adopted before it)") from None
            for candidate in ready:
                _hand_over(client, settings, candidate)
                note("adopt", f"{candidate.label} now belongs to this pool: "
                              f"{next_runs(candidate, settings, max_size)}")
            adopted += 1
    return adopted


def _checked(candidates: Sequence[Candidate], settings: Settings,
             max_size: int) -> list[Candidate]:
    """The candidates to adopt (those the pool owns already are said so and left out);
    raises AdoptRefused naming every VM refused."""
    todo, refusals, joining = [], [], 0
    for candidate in candidates:
        if owned(candidate, settings):
            note("adopt", f"{candidate.label} belongs to this pool already; nothing to do")
            continue
        try:
            check(candidate, settings, max_size, joining)
        except AdoptRefused as exc:
            refusals.append(str(exc))
            continue
        todo.append(candidate)
        joining += int(not candidate.vm.in_lb)
    if refusals:
        raise AdoptRefused("; ".join(refusals) + ("; nothing was changed" if len(candidates) > 1
                                                  else ""))
    return todo
