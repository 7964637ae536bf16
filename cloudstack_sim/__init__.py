"""A CloudStack API simulator on loopback: verifies signatures like the management server, keeps
VMs, load-balancer members, async jobs and events, and can inject faults. Used by the tests, the
demo and the benchmarks. It imports nothing of ours: it is the oracle the client is tested against.

Modules, in the order a request flows through them:
  server     HTTP on loopback; hands each request to the Simulator
  simulator  the Simulator: lifecycle, request pipeline, helpers for tests
  signing    signature verification (ApiServer.verifyRequest), also usable alone
  faults     Fault and the book that hands faults to matching requests
  commands   one function per API command, in the COMMANDS table
  params     ApiError and the shared parameter checks and paging
  state      the state machine: async jobs, the VM states they move through, their events
  tags       resource tags: types, the unique index, createTags/deleteTags, filters
  views      the JSON of each object, in the server's field order
  records    the cloud's records (VMs, LB rules, jobs, events, tags, addresses) and queries
  versions   what each server version (--cloudstack) says and shows differently
  cli        the cloudstack-sim command (also `python -m cloudstack_sim`)
  trial      --ssh: the VMs answer SSH with a shared demand (load_sshd), the trial's config
"""

from .cli import main
from .commands import COMMANDS, TEMPLATE_FILTERS
from .faults import FAULT_KINDS, Fault
from .simulator import API_PATH, Call, Simulator
from .signing import (
    DEFAULT_API_KEY,
    DEFAULT_SECRET_KEY,
    compute_signature,
    java_url_encode,
    parse_expires,
    verify_request,
)
from .records import MAX_PAGE_SIZE, VM_STATES
from .versions import CLOUDSTACK_VERSIONS

__all__ = ["API_PATH", "CLOUDSTACK_VERSIONS", "COMMANDS", "DEFAULT_API_KEY", "DEFAULT_SECRET_KEY",
           "FAULT_KINDS", "MAX_PAGE_SIZE", "TEMPLATE_FILTERS", "VM_STATES", "Call", "Fault",
           "Simulator", "compute_signature", "java_url_encode", "main", "parse_expires",
           "verify_request"]
