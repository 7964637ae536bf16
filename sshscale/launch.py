"""Launching VMs, the first half of every scale-out and replacement: the launch records the
budget counts (written before any deploy: no launch without its record), deploys that carry
the pool's identity (a name with its stem, its instance group; then its tag), read back by
name when a deploy call fails or times out, the wait for every job, and the assign of every
VM that came up. Every refused or failed deploy grows the failed-deploy backoff. Launcher is
also the base of the Actor: the steps both need (jobs, the lease's deadline, the pool's facts,
the load balancer)."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Callable, Optional

import idcf_api
from idcf_api import Client, JobFailed, JobTimeout
from sshscale.errors import LeaseExpired, ScaleError, TagError
from sshscale.facts import (
    BACKOFF,
    BUDGET,
    LAUNCH_WINDOW,
    NOISY,
    POOL,
    SCALE_OUT,
    TRIES,
    UPGRADED,
    backoff_after_failure,
    backoff_key,
    history_from_tags,
    launch_key,
    scale_out_value,
    time_value,
)
from sshscale.fleet import LAUNCH_IDS, outdated
from sshscale.interrupts import step
from sshscale.logs import ACTION, note
from sshscale.model import IN_SERVICE, Deploy, History, Settings, shown_time, vm_count
from sshscale.observe import parse_time
from sshscale.ownership import vm_name
from sshscale.tags import LOAD_BALANCER, USER_VM, TagWriter, read_tags, refused

__all__ = ["Awaited", "Launcher"]

TOKEN_BYTES = 3  # the random part of a VM name: 6 hex digits


@dataclass(frozen=True)
class Awaited:
    """What the deploys' jobs came to: the VMs that came up (with their creation times) and
    the first failure, if any."""

    vm_ids: tuple[str, ...]
    created: tuple[datetime, ...]
    failure: Optional[Exception]


class Launcher:
    """Deploys, waits, assigns and keeps the pool's facts, stopping before any change once
    the run's lease on the pool is (almost) over."""

    def __init__(self, client: Client, settings: Settings, history: History,
                 clock: Callable[[], datetime], deadline: Optional[datetime] = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        """`clock` tells the cloud's time; no change is started from `deadline` on (when the
        run's lease on the pool is about to end)."""
        self.client, self.settings, self.history = client, settings, history
        self.clock, self.deadline, self.sleep = clock, deadline, sleep
        self.tags = TagWriter(client, settings)
        # What the action touched, for the run's report (also when it fails half way): the
        # decision's VMs and those deployed; the pool's size afterwards, once known.
        self.vm_ids: list[str] = []
        self.count_after: Optional[int] = None

    # --- steps -------------------------------------------------------------------------------

    def wait(self, jobid: str, what: str, timeout: Optional[float] = None) -> dict:
        last = {"status": None}

        def on_poll(answer: dict) -> None:
            status = answer.get("jobstatus")
            if status != last["status"]:
                note("query job", f"jobid: {jobid}, jobstatus: {status} ({what})")
                last["status"] = status

        return self.client.wait(jobid, timeout=self.settings.job_timeout if timeout is None
                                else timeout, on_poll=on_poll)

    def check_lease(self) -> None:
        """Change nothing once the lease is (almost) over: another monitor may take over."""
        if self.deadline is not None and self.clock() >= self.deadline:
            raise LeaseExpired("the pool's lease ran out during the action; stopped before "
                               "the next change (the next run repairs what is left)")

    def change(self, command: str, **params: Any) -> dict:
        self.check_lease()
        return self.client.call(command, **params)

    def record(self, facts: Mapping[str, str], what: str,
               also_delete: Sequence[str] = ()) -> None:
        """Keep facts on the load-balancer rule; a failure is a warning, not the run's end
        (the action itself is done)."""
        try:
            self.check_lease()
            self.tags.replace(LOAD_BALANCER, self.settings.load_balancer, facts, also_delete)
        except (idcf_api.CloudStackError, ScaleError) as exc:
            note("tags", f"could not record {what} on the load balancer: {exc}",
                 logging.WARNING)

    def new_count(self, count: int) -> str:
        self.count_after = count
        note("now vm count", str(count), ACTION)
        return f"pool has {vm_count(count)}"

    # --- deploys -----------------------------------------------------------------------------

    def start_deploys(self, count: int) -> tuple[Deploy, ...]:
        """Record the launches, then deploy VMs with [launch_config], each named with the pool's
        stem (which proves them the pool's from the start: they are tagged once up). A
        refused deploy call is read back by its name: a VM that exists was accepted after
        all; else the deploy failed (the backoff grows; its error is raised), and no further
        one is started."""
        tokens = [secrets.token_hex(TOKEN_BYTES) for _ in range(count)]
        self._record_launches(tokens)
        started: list[Deploy] = []
        failure: Optional[Exception] = None
        for token in tokens:
            try:
                started.append(self._deploy(vm_name(self.settings.load_balancer, token)))
            except idcf_api.CloudStackError as exc:
                failure = exc
                break
        self.vm_ids += [d.vm_id for d in started]
        if failure is not None:
            self.back_off()
            if not started:
                raise failure
            note("scale out", f"deployVirtualMachine: {failure}; going on with "
                              f"{vm_count(len(started))}", logging.ERROR)
        return tuple(started)

    def _deploy(self, name: str) -> Deploy:
        params = {**self.settings.launch, "name": name}
        params.setdefault("group", self.settings.group)
        try:
            answer = self.change("deployVirtualMachine", **params)
        except idcf_api.CloudStackError as exc:
            found = self.client.list("listVirtualMachines", name=name,
                                     zoneid=self.settings.launch.get("zoneid"),
                                     **self.settings.scope)
            mine = [vm for vm in found if str(vm.get("name", "")).lower() == name]
            if not mine:
                raise
            note("scale out", f"deployVirtualMachine: {exc}, but {name} exists: the cloud "
                              "took the deploy", logging.WARNING)
            return Deploy(str(mine[0].get("id")), str(mine[0].get("jobid") or ""), name)
        return Deploy(str(answer.get("id", "")), str(answer["jobid"]), name)

    def _record_launches(self, tokens: Sequence[str]) -> None:
        """One record per launch on the load-balancer rule, before the deploys (a failure here
        launches nothing); then the records older than an hour and the budget's notice go."""
        now = self.clock()
        self.check_lease()
        records = {launch_key(t): time_value(now) for t in tokens}
        if not self.history.upgraded:  # this version acts on the pool: it says so once
            records[UPGRADED] = time_value(now)
        try:
            self.tags.create(LOAD_BALANCER, self.settings.load_balancer, records)
        except TagError as exc:
            why = "the cloud keeps no tags on the load-balancer rule, so neither the launch " \
                "budget nor the failed-deploy backoff can be kept: " if refused(exc) else ""
            raise ScaleError(f"no VM is launched without its record: {why}{exc}") from None
        stale = [key for key, when in self.history.launches if when <= now - LAUNCH_WINDOW]
        if self.history.budget_notice is not None:
            stale.append(BUDGET)
        if stale:
            try:
                self.tags.delete(LOAD_BALANCER, self.settings.load_balancer,
                                 dict.fromkeys(stale))
            except (idcf_api.CloudStackError, ScaleError) as exc:
                note("tags", f"could not prune old launch records: {exc}", logging.WARNING)

    def tag_new(self, vm_ids: Sequence[str], tags: Mapping[str, str]) -> None:
        """The new VMs' tags: the pool's id (their name already proves them ours: a failure
        is a warning) and the caller's."""
        try:
            self.tags.create(USER_VM, vm_ids, {POOL: self.settings.load_balancer, **tags})
        except (idcf_api.CloudStackError, ScaleError) as exc:
            note("tags", f"could not tag {', '.join(vm_ids)} as the pool's: {exc}",
                 logging.WARNING)

    def await_deploys(self, deploys: Sequence[Deploy]) -> Awaited:
        """Wait for every deploy's job, all within one job_timeout. A failed one destroys the
        VM it left (Error); the others are still waited for. (The caller records a failure,
        under the lease: join.)"""
        deadline = time.monotonic() + self.settings.job_timeout
        up: list[str] = []
        created: list[datetime] = []
        failure: Optional[Exception] = None
        for deploy in deploys:
            try:
                data = self._await_one(deploy, max(deadline - time.monotonic(), 0.001))
            except (idcf_api.CloudStackError, ScaleError) as exc:
                failure = failure or exc
                continue
            up.append(deploy.vm_id)
            when = parse_time(data.get("created"))
            if when is not None:
                created.append(when)
        return Awaited(tuple(up), tuple(created), failure)

    def _await_one(self, deploy: Deploy, timeout: float) -> dict:
        """The deployed VM's data once its job succeeded; raises when it did not."""
        if deploy.jobid:
            try:
                result = self.wait(deploy.jobid, f"deploy {deploy.name or deploy.vm_id}",
                                   timeout)
            except JobFailed as exc:
                self.destroy_failed(exc.instance_id or deploy.vm_id)
                raise
            except JobTimeout as exc:  # said as job_timeout, which the shared deadline is
                raise JobTimeout(exc.jobid, self.settings.job_timeout) from None
            data = result.get("virtualmachine") or {}
        else:  # a deploy read back after its call failed: its state now
            found = self.client.list("listVirtualMachines", id=deploy.vm_id, **self.settings.scope)
            data = found[0] if found else {}
            if data.get("state") != "Running":
                raise ScaleError(f"{deploy.name} is {data.get('state', 'gone')} after its "
                                 "deploy (the next run repairs it)")
        self._check_current(deploy.vm_id, data)
        return data

    def _check_current(self, vm_id: str, data: Mapping[str, Any]) -> None:
        """With refresh = yes, a new VM must match [launch_config] as the cloud names it, or
        each refresh would replace it again: such a VM is destroyed, and the deploy fails."""
        if not self.settings.refresh or not outdated(data, self.settings.launch):
            return
        self.destroy_failed(vm_id)
        found = ", ".join(f"{key} {data.get(key)}" for key in LAUNCH_IDS)
        raise ScaleError(f"the new VM {vm_id} has {found}, not [launch_config]'s: with refresh "
                         "= yes it would be replaced again and again (give [launch_config] the "
                         "IDs the cloud lists: idcf-compute-api listTemplates / "
                         "listServiceOfferings)")

    def destroy_failed(self, vm_id: str) -> None:
        if not vm_id:
            return
        note("destroy", f"{vm_id} (left by the failed deploy)", ACTION)
        try:
            self.destroy_and_wait(vm_id, vm_id)
        except idcf_api.CloudStackError as exc:
            note("destroy", f"could not destroy {vm_id}: {exc} (the next run retries)",
                 logging.ERROR)

    def destroy_and_wait(self, vm_id: str, label: str) -> None:
        answer = self.change("destroyVirtualMachine", id=vm_id,
                             expunge=self.settings.expunge or None)
        self.wait(str(answer["jobid"]), f"destroy {label}")

    def back_off(self) -> None:
        """One more failed deploy: the next one waits (1 min, then 2, 4, ... max_backoff)."""
        backoff = backoff_after_failure(self.history.backoff, self.clock(),
                                        self.settings.max_backoff)
        note("backoff", f"{backoff.failures} failed deploy(s) in a row: the next deploy waits "
                        f"until {shown_time(backoff.until, self.settings.zone)}", logging.WARNING)
        try:
            self.check_lease()
            self.tags.write_backoff(LOAD_BALANCER, self.settings.load_balancer, BACKOFF, backoff,
                                    self.history.backoff_keys)
        except (idcf_api.CloudStackError, ScaleError) as exc:
            note("tags", f"could not record the failed-deploy backoff on the load balancer: "
                         f"{exc}", logging.WARNING)
        self.history = replace(self.history, backoff=backoff,
                               backoff_keys=(backoff_key(BACKOFF, backoff.failures),))

    # --- joining the load balancer -----------------------------------------------------------

    def finish_deploys(self, deploys: Sequence[Deploy], pool_count: Optional[int],
                       noisy: bool = False) -> str:
        """Wait for a scale-out's deploys, then add every VM that came up to the load balancer
        (see join)."""
        with step(f"during the deploy of {vm_count(len(deploys))}"):
            awaited = self.await_deploys(deploys)
        return self.join(awaited, pool_count, noisy)

    def join(self, awaited: Awaited, pool_count: Optional[int], noisy: bool = False) -> str:
        """Tag every VM that came up as the pool's and add it to the load balancer (a failed
        deploy does not keep the others out), and record the scale (and, noisy, that the
        target policy found the load noisy). The new count is pool_count plus the new VMs, or,
        when other runs may have changed the pool meanwhile (None), the members in service
        read again. Raises a failed deploy's error after the assign (and grows the backoff)."""
        if awaited.vm_ids:
            self.tag_new(awaited.vm_ids, {TRIES: "0"})  # on trial until healthy
            self.assign(awaited.vm_ids)
            # with health checks a deploy's job is no proof: the first check passed ends the
            # backoff (upkeep); without, the job is all there is
            self.joined(deploy_seconds=self._deploy_seconds(awaited.created),
                        ends_backoff=awaited.failure is None and
                        self.settings.health_check == "none", noisy=noisy)
        if awaited.failure is not None:
            self.back_off()
            if awaited.vm_ids:
                self._count(pool_count, len(awaited.vm_ids))
            raise awaited.failure
        return self._count(pool_count, len(awaited.vm_ids))

    def _count(self, pool_count: Optional[int], added: int) -> str:
        if pool_count is None:
            members = self.client.list("listLoadBalancerRuleInstances",
                                       id=self.settings.load_balancer)
            return self.new_count(sum(m.get("state") in IN_SERVICE for m in members))
        return self.new_count(pool_count + added)

    def _deploy_seconds(self, created: Sequence[datetime]) -> Optional[float]:
        """How long the deploys took: from the newest VM's creation to now."""
        if not created:
            return None
        return max(0.0, (self.clock() - max(created)).total_seconds())

    def joined(self, deploy_seconds: Optional[float], ends_backoff: bool,
               noisy: bool = False) -> None:
        """VMs joined the pool: the scale-out cooldown starts; a deploy's duration is kept (an
        adopt keeps the last one); a good deploy ends the backoff; a noisy scale-out marks the
        pool noisy (in the same calls)."""
        seconds = deploy_seconds if deploy_seconds is not None else self._recorded_seconds()
        now = self.clock()
        facts = {SCALE_OUT: scale_out_value(now, seconds)}
        if noisy:
            facts[NOISY] = time_value(now)
        self.record(facts, "the scale-out time",
                    also_delete=(BACKOFF, *self.history.backoff_keys) if ends_backoff else ())

    def _recorded_seconds(self) -> Optional[float]:
        """The deploy duration recorded last (an adopt keeps it): from the history, or, for a
        repair that read none, from the rule's tag."""
        if self.history.deploy_seconds is not None:
            return self.history.deploy_seconds
        try:
            held = read_tags(self.client, self.settings, LOAD_BALANCER,
                             [self.settings.load_balancer], [SCALE_OUT])
        except idcf_api.CloudStackError:
            return None
        value = next((tags.get(SCALE_OUT) for tags in held.values()), None)
        return history_from_tags({SCALE_OUT: value} if value else {}).deploy_seconds

    def assign(self, vm_ids: Sequence[str]) -> None:
        """Add the VMs to the load balancer. CloudStack fails the whole job when one of them
        is mapped already (530 "Failed to assign load balancer rule"), as a VM another run
        adopted is: after any failure the members are read back, and only the missing ones
        assigned again."""
        note("assign to lb", f"{','.join(vm_ids)} -> {self.settings.load_balancer}")
        with step(f"while adding {', '.join(vm_ids)} to the load balancer"):
            try:
                self._assign_job(vm_ids)
            except idcf_api.CloudStackError:
                members = {str(m.get("id")) for m in self.client.list(
                    "listLoadBalancerRuleInstances", id=self.settings.load_balancer)}
                missing = [v for v in vm_ids if v not in members]
                if len(missing) == len(vm_ids):
                    raise
                note("assign to lb", f"{len(vm_ids) - len(missing)} of them already in the "
                                     "load balancer (another run adopted them)")
                if missing:
                    self._assign_job(missing)

    def _assign_job(self, vm_ids: Sequence[str]) -> None:
        answer = self.change("assignToLoadBalancerRule", id=self.settings.load_balancer,
                             virtualmachineids=",".join(vm_ids))
        self.wait(str(answer["jobid"]), "assign")

