"""Benchmark 3: how long after an async job completes does the client notice?

Twenty deployVirtualMachine jobs with durations spread evenly over 0.3-3.0 s are submitted to
the simulator one after the other; each is then awaited at once by idcf_api.Client.wait in its
own thread (polls at 0.2 s, growing x1.5 to 1 s). The simulator does not publish a job's exact
completion instant (queryAsyncJobResult's `completed` has one-second resolution), so it is
computed as the time the simulator received the submitting request (its call log) plus the
job_seconds the job was created with; the simulator's private due time is read only to report
how far that estimate is off. Delay = time wait() returned - completion instant.

Reference: the 2013 tool polled every 10 s. Three jobs (0.3, 1.65, 3.0 s) are awaited by such a
poller at the same time, and the median over the twenty durations is also computed analytically
(first poll that can see the job is 10 s after submission: delay = 10 - duration).

    .venv/bin/python bench/bench_jobs.py
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Result, median, ratio, say, spread, summary_table  # noqa: E402
from cloudstack_sim import DEFAULT_API_KEY, DEFAULT_SECRET_KEY, Simulator  # noqa: E402
from idcf_api import Account, Client  # noqa: E402

JOBS = 20
SHORTEST, LONGEST = 0.3, 3.0
LEGACY_INTERVAL = 10.0
LEGACY_DURATIONS = (0.3, 1.65, 3.0)
LEGACY_MAX_POLLS = 3  # bounded: every job here ends within the first poll interval
WAIT_TIMEOUT = 30.0
GOAL = 1.0


@dataclass
class Job:
    """One submitted job and what its waiter saw."""

    jobid: str
    duration: float
    due: float  # submit time (simulator's call log) + duration, epoch seconds
    internal_due: Optional[float] = None
    noticed: Optional[float] = None
    polls: int = 0

    @property
    def delay(self) -> float:
        assert self.noticed is not None, f"job {self.jobid} was not noticed"
        return self.noticed - self.due


def durations(count: int = JOBS) -> list[float]:
    """count durations evenly spread over SHORTEST..LONGEST, in a fixed interleaved order."""
    even = [SHORTEST + (LONGEST - SHORTEST) * i / (count - 1) for i in range(count)]
    return even[0::2] + even[1::2]


def account(sim: Simulator) -> Account:
    """The simulator's account, read timeouts as the tool uses them."""
    return Account(sim.url, DEFAULT_API_KEY, DEFAULT_SECRET_KEY)


def submit(sim: Simulator, client: Client, duration: float) -> Job:
    """Start one deploy job that takes `duration` seconds in the simulator."""
    sim.job_seconds = duration  # read when the simulator creates the job
    answer = client.call("deployVirtualMachine", serviceofferingid=sim.offering_id,
                         templateid=sim.template_id, zoneid=sim.zone_id)
    jobid = str(answer["jobid"])
    received = sim.calls_of("deployVirtualMachine")[-1].time
    return Job(jobid, duration, received + duration, internal_due=sim.job(jobid)["due"])


def await_with_client(job: Job, sim: Simulator) -> None:
    """The tool's way: Client.wait, then note the time."""
    Client(account(sim)).wait(job.jobid, timeout=WAIT_TIMEOUT)
    job.noticed = time.time()


def await_like_2013(job: Job, sim: Simulator) -> None:
    """The 2013 tool's way: sleep 10 s, query, repeat (bounded)."""
    client = Client(account(sim))
    for _ in range(LEGACY_MAX_POLLS):
        time.sleep(LEGACY_INTERVAL)
        if int(client.call("queryAsyncJobResult", jobid=job.jobid).get("jobstatus", 0)) != 0:
            job.noticed = time.time()
            return


def start_waiters(sim: Simulator, client: Client, spans: Sequence[float],
                  waiter: Callable[[Job, Simulator], None]) -> list[tuple[Job, threading.Thread]]:
    """Submit each job and start its waiter thread right away."""
    started = []
    for duration in spans:
        job = submit(sim, client, duration)
        thread = threading.Thread(target=waiter, args=(job, sim), daemon=True)
        thread.start()
        started.append((job, thread))
    return started


def finish(started: Sequence[tuple[Job, threading.Thread]], sim: Simulator) -> list[Job]:
    """Join every waiter (bounded) and count its polls from the simulator's log."""
    deadline = time.monotonic() + WAIT_TIMEOUT + LEGACY_INTERVAL * LEGACY_MAX_POLLS
    for _job, thread in started:
        thread.join(max(0.0, deadline - time.monotonic()))
    polls = [c.params.get("jobid") for c in sim.calls_of("queryAsyncJobResult")]
    jobs = [job for job, _ in started]
    for job in jobs:
        job.polls = polls.count(job.jobid)
    return jobs


def measure() -> tuple[list[Job], list[Job]]:
    """The twenty Client.wait jobs and the three 10-s-poller jobs, run at the same time."""
    with Simulator() as sim:
        client = Client(account(sim))
        legacy = start_waiters(sim, client, LEGACY_DURATIONS, await_like_2013)
        fast = start_waiters(sim, client, durations(), await_with_client)
        return finish(fast, sim), finish(legacy, sim)


def schedule_delay(duration: float, first: float = 0.2, growth: float = 1.5,
                   cap: float = 1.0) -> float:
    """Client.wait's delay for a job of this duration if requests took no time: polls at 0,
    0.2, 0.5, 0.95, 1.625, 2.625, ... s after submission."""
    poll, interval = 0.0, first
    while poll < duration:
        poll += interval
        interval = min(interval * growth, cap)
    return poll - duration


def analytic_legacy_median(spans: Sequence[float]) -> float:
    """Median delay of a 10-s poller over these durations (request latency ignored)."""
    return median([LEGACY_INTERVAL - d for d in spans])


def report(fast: Sequence[Job], legacy: Sequence[Job]) -> list[Result]:
    """Print the figures and return the summary row."""
    delays = [j.delay for j in fast]
    legacy_delays = [j.delay for j in legacy]
    analytic = analytic_legacy_median(durations())
    offsets = [abs(j.internal_due - j.due) * 1000 for j in fast + list(legacy)
               if j.internal_due is not None]
    figure, simulated = median(delays), median(legacy_delays)
    expected = median([schedule_delay(j.duration) for j in fast])
    say(f"  Client.wait, {len(fast)} jobs   median {figure:.3f} s (spread {spread(delays)} s, "
        f"{median([j.polls for j in fast]):.0f} polls median); its poll schedule alone would "
        f"give {expected:.3f} s")
    say(f"  2013 10-s poller, {len(legacy)} jobs   simulated median {simulated:.3f} s "
        f"({', '.join(f'{d:.2f}' for d in legacy_delays)} s); analytic median over the "
        f"{len(fast)} durations {analytic:.2f} s   ratio {ratio(figure, analytic):.2f}x")
    if offsets:
        say(f"  completion instant = call-log receive time + job_seconds; differs from the "
            f"simulator's internal due time by at most {max(offsets):.2f} ms")
    return [Result(f"3. job-completion notice delay (median of {len(fast)})", f"{figure:.3f} s",
                   f"2013 10-s polling: {analytic:.2f} s analytic, {simulated:.2f} s simulated "
                   f"({len(legacy)} jobs)", f"{ratio(figure, analytic):.2f}x",
                   f"<= {GOAL:g} s", figure <= GOAL)]


def run() -> list[Result]:
    """Benchmark 3; returns its summary row."""
    say(f"== 3. job-completion notice delay: {JOBS} jobs of {SHORTEST}-{LONGEST} s, "
        f"Client.wait vs the 2013 tool's {LEGACY_INTERVAL:g}-s polling")
    fast, legacy = measure()
    return report(fast, legacy)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run benchmark 3 alone and print its summary."""
    del argv
    say(summary_table(run()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
