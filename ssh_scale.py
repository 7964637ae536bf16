"""ssh_scale.py: the cron entry point of ssh-scale, and its stable public names.

The work is done by the package `sshscale` (its docstring maps the modules); this module keeps
`python -m ssh_scale` and `import ssh_scale` working for scripts written against version 1.

  * * * * * /usr/bin/ssh_scale.py -c /etc/ssh-scale/web.idcfrc >> /var/log/ssh_scale-web.log 2>&1
"""

import sys

from sshscale import __version__
from sshscale.cli import main
from sshscale.config import load_settings, settings_from_config
from sshscale.decide import aggregate_load, decide
from sshscale.errors import ConfigError, ExitStatus, LockBusy, ScaleError, SshError
from sshscale.measure import parse_load
from sshscale.model import (
    Action,
    Decision,
    History,
    HostLoad,
    Measurement,
    Pool,
    Report,
    Settings,
    Vm,
)
from sshscale.run import run_once

__all__ = ["Action", "ConfigError", "Decision", "ExitStatus", "History", "HostLoad",
           "LockBusy", "Measurement", "Pool", "Report", "ScaleError", "Settings", "SshError",
           "Vm", "__version__", "aggregate_load", "decide", "load_settings", "main",
           "parse_load", "run_once", "settings_from_config"]

if __name__ == "__main__":
    sys.exit(main())
