"""ssh-scale: scale a CloudStack load-balancer pool by the load average read over SSH.

The modules follow one run's data path:

  config    ~/.idcfrc (+ ~/.ssh/config for key files) -> validated Settings
  measure   hosts -> Measurement, one SSH exec per host (paramiko)
  observe   the cloud -> Pool, History and the cloud's time (the API client, idcf_api);
            with [health] check = http, probe's GETs of the members; whose VM it is
            (ownership, pure: proven by name, instance group and tag)
  upkeep    the VM tags this run's observations change (marks, pure): health failure counts,
            an earlier version's VMs tagged as the pool's, replacements proven or given up,
            stuck VMs
  decide    Measurement + Pool + History + Settings + now -> Decision (pure; fleet's rules
            for protection, termination policy, replacement and refresh; target: the target
            policy's estimate and plan), within the bounds in force (schedule: the
            [schedule NAME] windows open now, pure)
  act       one Decision -> cloud calls (launch: deploys with the pool's identity, the
            launch records, the assign), the pool's facts kept in tags (facts: keys and
            values, pure; tags: the createTags/deleteTags jobs, read back after a failure)
  lease     the pool's lease: one acting run across monitors
  run       one run: lock, observe, keep the VM tags, decide (reading History only when
            needed), lease, act; a target scale-out's deploys finished after the lock
  views     Report -> log lines, the --status table, the --json object
  preflight --check: what a run needs, checked read-only (files, API, clock, commands, the
            IDs the config names, SSH); a dry run's launch checks; the config key behind a
            call the cloud refused (431)
  cli       argv -> a live run, a replay, the history, an adoption or a check -> exit status
            (the only module that knows them all); after a live run, its outputs: journal
            (the run journal, one line per run), notify ([notify] webhook and command) and
            metrics ([metrics] textfile for Prometheus), which cannot change it
  history   --history: the run journal -> a table of actions, failures and holds, a plot
  adopt     --adopt: existing VMs handed over to the pool (tag, then group; under the lease)

Below them: model (the data types), errors (the error hierarchy and exit statuses), logs
(the 2013 line format), fleet_config (the optional [schedule NAME], [notify] and [metrics]
sections, for config), interrupts (what a Ctrl-C or SIGTERM stopped, in one line). Beside
them: replay/ (what-if replays on a virtual clock, using decide unchanged) and demo (`make
demo`). idcf_api.py is the signed CloudStack client (layer 0) and
cloudstack_sim/ the simulator the tests compare against; neither imports this package.
"""

from __future__ import annotations

import os
import sys
from types import TracebackType
from typing import Optional

__all__ = ["__version__"]

__version__ = "1.1.0"
STARTING = "ssh_scale.py: error: interrupted (Ctrl-C) while starting; nothing was changed\n"


def _stopped_while_starting(kind: type[BaseException], value: BaseException,
                            traceback: Optional[TracebackType]) -> None:
    """Ctrl-C before main() runs (while the console script imports sshscale.cli) ends in the
    line main() prints for it, not a traceback."""
    if issubclass(kind, KeyboardInterrupt):
        sys.stderr.write(STARTING)
        sys.stderr.flush()
        os._exit(130)
    sys.__excepthook__(kind, value, traceback)


# Only for the command (its console script, the packages' /usr/bin/ssh_scale.py, python -m
# ssh_scale), never for a program or a test that imports the package.
if os.path.basename(getattr(sys, "argv", [""])[0] or "") == "ssh_scale.py":
    sys.excepthook = _stopped_while_starting
