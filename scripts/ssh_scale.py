#!/usr/bin/env python3
"""Launcher of the ssh_scale.py command; the module ssh_scale does the work.

A console-script wrapper named ssh_scale.py would shadow the module of the same name (the
script's folder comes first on sys.path), so this launcher drops its own folder first.
"""

import os
import sys

_here = os.path.dirname(os.path.realpath(__file__))
sys.path[:] = [p for p in sys.path if os.path.realpath(p or os.curdir) != _here]

from ssh_scale import main  # noqa: E402

sys.exit(main())
