"""The soak (bench/soak.py) in make test: a short seeded run of the attacking long-run check,
and the virtual clock it relies on (the simulator's Date header moves the tool's time)."""

from __future__ import annotations

import time

from bench.soak import loadavg, readme_exit_codes, soak_segment, summary
from bench.soak_world import Scenario, open_world
from tests import sshd_support

SEED, MODE, RUNS, CALM = 5, "4.19", 12, 1
HOUR = 3600


def test_readme_lists_the_exit_codes_the_soak_allows():
    assert readme_exit_codes() == {0, 1, 2, 130, 143}


def test_virtual_clock_moves_the_time_the_tool_writes():
    sshd_support.require_sshd()
    scenario = Scenario(min_size=2, max_size=4, policy="threshold", monitor_members=False,
                        health=False, refresh=False, cooldown_out=120, cooldown_in=300,
                        unhealthy_runs=3, max_backoff=3600, broken_is_own=False,
                        job_seconds=0.05)
    with open_world("4.19", scenario) as world:
        world.write_config(world.good_template)
        world.set_answers(dict.fromkeys(world.addresses, loadavg(4.2)), ())
        world.sim.skew_clock(HOUR)
        run = world.run(0, world.monitors[0], ("--json",))
        assert run.returncode == 0, run.stderr
        assert "behind the cloud's" in run.stderr
        written = int(world.sim.tags(world.sim.lb_id)["ssh-scale:scale-out"].split()[0])
        assert abs(written - (time.time() + HOUR)) < 120


def test_short_soak_finds_no_violation():
    sshd_support.require_sshd()
    segment = soak_segment(MODE, SEED, 0, RUNS, CALM)
    assert segment.runs >= RUNS
    assert not segment.violations, summary([segment])
