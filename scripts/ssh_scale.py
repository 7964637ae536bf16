#!/usr/bin/env python3
"""Launcher of the ssh_scale.py command; the module ssh_scale does the work.

A console-script wrapper named ssh_scale.py would shadow the module of the same name (the
script's folder comes first on sys.path), so this launcher drops its own folder first.
"""

import os
import sys

# Both: the folder this file is in, and the one it was started from (an editable install's
# wrapper execs this file from the bin folder).
_mine = {os.path.dirname(os.path.realpath(f)) for f in (__file__, sys.argv[0]) if f}
sys.path[:] = [p for p in sys.path if os.path.realpath(p or os.curdir) not in _mine]

from ssh_scale import main  # noqa: E402

sys.exit(main())
