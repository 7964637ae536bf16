"""Logging in the 2013 tool's line format ("2026-11-28 10:37:23 now_la           : 4.20"),
secrets redacted from every record."""

from __future__ import annotations

import logging
from typing import Any

import idcf_api

__all__ = ["ACTION", "LABEL_WIDTH", "TIME_FORMAT", "configure", "log", "note"]

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
LABEL_WIDTH = 17
# The level of the lines -q keeps besides warnings and errors: a run's decision, the changes
# it makes to the pool (scale out +1, scale in -1, destroy, replace) and their outcome (now vm
# count); not the steps between (query job, assign to lb, drain).
ACTION = logging.WARNING

log = logging.getLogger("ssh_scale")


def note(label: str, text: str, level: int = logging.INFO) -> None:
    """Log one "label : text" line, the 2013 tool's shape."""
    log.log(level, "%-*s: %s", LABEL_WIDTH, label, text)


def configure(verbose: bool, quiet: bool, stream: Any,
              silent: bool = False) -> idcf_api.RedactingFilter:
    """The 2013 line format on the given stream, secrets redacted; returns the filter so that
    secrets read later (from the config) can be added to it. `silent` (a view such as
    --status that prints its own lines) logs nothing unless `verbose`."""
    redactor = idcf_api.install_redacting_handler(
        stream, logging.Formatter("%(asctime)s %(message)s", TIME_FORMAT), verbose)
    log.setLevel(logging.DEBUG if verbose else logging.CRITICAL + 1 if silent
                 else logging.WARNING if quiet else logging.INFO)
    for noisy in ("paramiko", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.CRITICAL)
    return redactor
