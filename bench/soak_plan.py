"""The soak's random choices, pure: a seeded random.Random -> the scenario of a server mode and,
step by step, what to break before the runs (load, API faults, refused or failing deploys, a
broken template, sick members, garbled or silent SSH answers, stuck VMs, strangers in the pool's
instance group) and how to run them (one or two monitors, overlapping, killed with SIGKILL or
SIGTERM at a random API call). Which VM or address a choice falls on is drawn as a number in
[0, 1) and resolved against the cloud when the step runs, so a seed draws the same sequence
whatever the timing made of the cloud."""

from __future__ import annotations

import random
import signal
from dataclasses import dataclass
from typing import Optional

from bench.soak_world import API_TIMEOUT, Kill, Scenario
from cloudstack_sim import Fault

READS = ("listVirtualMachines", "listLoadBalancerRuleInstances", "listLoadBalancerRules",
         "queryAsyncJobResult", "listEvents", "listTags")
CHANGES = ("assignToLoadBalancerRule", "removeFromLoadBalancerRule", "destroyVirtualMachine",
           "createTags", "deleteTags")
DEPLOY = "deployVirtualMachine"
#: How CloudStack refuses a deploy at once: parameter, permission, internal, resource
#: allocation, insufficient capacity; or a proxy's 5xx.
REFUSALS = (431, 432, 530, 532, 533, 500, 502, 503)
SLOW = API_TIMEOUT + 1.0  # seconds: beyond [account] timeout, so the call times out
GARBLED = ("Welcome to Ubuntu 22.04.3 LTS\n0.10 0.20 0.30 1/99 9\n",
           "not a number 2/123 4567\n", "Welcome to Ubuntu 22.04.3 LTS\n", "")
STUCK_STATES = ("Starting", "Stopping")
MAX_STRANGERS = 2


@dataclass(frozen=True)
class Episode:
    """A fault armed on every step for `steps` steps (a cloud refusing for a while)."""

    kind: str
    label: str
    fault: Fault
    steps: int


@dataclass(frozen=True)
class RunPlan:
    """One run of a step: which monitor, after how long, its arguments, and its kill."""

    monitor: int
    delay: float
    args: tuple[str, ...]
    kill: Optional[Kill]


@dataclass(frozen=True)
class StepPlan:
    """What one step does before and with its runs."""

    delta: float  # virtual seconds since the previous step
    demand: float  # the pool's total load, shared by the members in service
    faults: tuple[tuple[str, str, Fault], ...] = ()  # (kind, label, fault): this step only
    episode: Optional[Episode] = None  # starts now
    broken_steps: int = 0  # the config deploys the broken template for this many steps
    sick: Optional[tuple[float, int]] = None  # (which member, for how many steps)
    garble: Optional[tuple[str, float]] = None  # (the answer, share of the measured hosts)
    silence: bool = False  # all measured hosts but one answer too late
    stick: Optional[tuple[str, float]] = None  # (state, which VM of the tool)
    stranger: Optional[tuple[str, bool]] = None  # (state, in the load balancer)
    release_hung: bool = False
    runs: tuple[RunPlan, ...] = ()


def draw_scenario(rng: random.Random, job_seconds: float = 0.05) -> Scenario:
    """The knobs of one server mode's config."""
    min_size = rng.choice((2, 3))
    return Scenario(
        min_size=min_size, max_size=min_size + rng.choice((1, 2, 3)),
        policy=rng.choice(("threshold", "threshold", "target")),
        monitor_members=rng.random() < 0.6, health=rng.random() < 0.6,
        refresh=rng.random() < 0.5, cooldown_out=rng.choice((0, 60, 120)),
        cooldown_in=rng.choice((0, 120, 300)), unhealthy_runs=rng.choice((2, 3)),
        max_backoff=rng.choice((600, 3600, 3600)), broken_is_own=rng.random() < 0.5,
        job_seconds=job_seconds)


def draw_step(rng: random.Random, scenario: Scenario, demand: float,
              strangers: int, calm: bool = False) -> StepPlan:
    """The next step; `calm` (the end of a soak) breaks nothing and only lets time pass."""
    runs = _draw_runs(rng, calm)
    if calm:
        return StepPlan(delta=rng.choice((60.0, 300.0)), demand=_calm_demand(scenario),
                        release_hung=True, runs=runs)
    return StepPlan(
        delta=rng.choice((300.0, 900.0, 1800.0)) if rng.random() < 0.06 else 60.0,
        demand=_next_demand(rng, scenario, demand),
        faults=tuple(_draw_fault(rng) for _ in range(_count(rng, 0.3))),
        episode=_draw_episode(rng) if rng.random() < 0.06 else None,
        broken_steps=rng.randint(3, 15) if rng.random() < 0.04 else 0,
        sick=(rng.random(), rng.randint(1, 6)) if rng.random() < 0.05 else None,
        garble=(rng.choice(GARBLED), rng.random()) if rng.random() < 0.08 else None,
        silence=rng.random() < 0.04,
        stick=(rng.choice(STUCK_STATES), rng.random()) if rng.random() < 0.03 else None,
        stranger=(rng.choice(("Running", "Error")), rng.random() < 0.5)
        if strangers < MAX_STRANGERS and rng.random() < 0.015 else None,
        release_hung=rng.random() < 0.3, runs=runs)


def _count(rng: random.Random, chance: float) -> int:
    """How many one-step faults: each further one as likely as the first."""
    count = 0
    while rng.random() < chance and count < 3:
        count += 1
    return count


def _next_demand(rng: random.Random, scenario: Scenario, demand: float) -> float:
    ceiling = (scenario.max_size + 1) * 4.5
    if rng.random() < 0.1:
        return rng.uniform(0, ceiling)
    return min(ceiling, max(0.0, demand + rng.gauss(0, 1.5)))


def _calm_demand(scenario: Scenario) -> float:
    """A load between the thresholds (2 per VM) on the smallest pool."""
    return 2.0 * scenario.min_size


def _draw_fault(rng: random.Random) -> tuple[str, str, Fault]:
    """(kind, label, fault): what the figures count, what a violation lists, the fault."""
    kind = rng.choice(("http_error", "html", "slow", "slow_after", "job_fail", "job_hang",
                       "refused deploy", "deploy timeout"))
    if kind == "refused deploy":
        status = rng.choice(REFUSALS)
        return kind, f"deploy refused with HTTP {status}", Fault("http_error", DEPLOY,
                                                                 status=status)
    if kind == "deploy timeout":
        return kind, "deploy call times out", Fault("slow", DEPLOY, delay=SLOW)
    if kind in ("job_fail", "job_hang"):
        command = rng.choice((DEPLOY, *CHANGES))
        times = rng.randint(1, 2) if kind == "job_fail" else 1
        return kind, f"{kind} on {command} x{times}", Fault(kind, command, times=times)
    command = rng.choice(READS + CHANGES)
    if kind in ("slow", "slow_after"):
        return kind, f"{kind} {SLOW:g} s on {command}", Fault(kind, command, delay=SLOW)
    times = rng.choice((1, 2, 4))
    status = rng.choice((500, 502, 503)) if kind == "http_error" else 502
    return kind, f"{kind} {status} on {command} x{times}", Fault(kind, command, times=times,
                                                                 status=status)


def _draw_episode(rng: random.Random) -> Episode:
    steps = rng.randint(2, 15)
    if rng.random() < 0.5:
        status = rng.choice(REFUSALS)
        return Episode("refused deploys", f"every deploy refused with HTTP {status} for "
                       f"{steps} steps", Fault("http_error", DEPLOY, times=-1, status=status),
                       steps)
    return Episode("failing deploy jobs", f"every deploy job fails for {steps} steps",
                   Fault("job_fail", DEPLOY, times=-1), steps)


def _draw_runs(rng: random.Random, calm: bool) -> tuple[RunPlan, ...]:
    """Monitor a runs every step; monitor b often too, overlapping; either may be killed."""
    runs = [RunPlan(0, 0.0, _args(rng), None if calm else _draw_kill(rng))]
    if rng.random() < 0.35:
        runs.append(RunPlan(1, rng.uniform(0, 0.8), _args(rng),
                            None if calm else _draw_kill(rng)))
    return tuple(runs)


def _args(rng: random.Random) -> tuple[str, ...]:
    return ("--json",) if rng.random() < 0.85 else ()


def _draw_kill(rng: random.Random) -> Optional[Kill]:
    if rng.random() >= 0.2:
        return None
    sig = signal.SIGKILL if rng.random() < 0.6 else signal.SIGTERM
    calls = rng.randint(0, 12)  # a quiet run makes 2-4 calls, an action 20-40
    return Kill(sig, calls, 0.0 if calls else rng.uniform(0, 0.6))
