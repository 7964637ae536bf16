"""`python -m cloudstack_sim`: the cloudstack-sim command."""

import sys

from .cli import main

sys.exit(main())
