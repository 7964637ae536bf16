"""The error hierarchy of ssh_scale.py and the one place that maps an exception to an exit
status and a one-line message."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Optional

import idcf_api
from sshscale.interrupts import INTERRUPTED, TERMINATED, Terminated, stopped_message, \
    stopped_status

__all__ = ["CloudConfigError", "ConfigError", "ExitStatus", "LeaseBusy", "LeaseExpired",
           "LockBusy", "ScaleError", "SshError", "TagError", "Terminated", "exit_status",
           "expected", "message_of"]


class ScaleError(Exception):
    """Base of the autoscaler's own errors (the API client's are idcf_api.CloudStackError)."""


class ConfigError(ScaleError):
    """The config file, ~/.ssh/config, an option or an input file is unusable."""


class CloudConfigError(ScaleError):
    """A config value names nothing this account has in the cloud (a zone, template, ...), or
    something a run cannot use: found by reading the cloud (--check, a dry run, a call the
    cloud refused for a parameter)."""


class SshError(ScaleError):
    """No monitored host could be measured."""


class TagError(ScaleError):
    """A tag call failed and the tags read back afterwards are not as asked: `found` is what
    the cloud holds ({resource id: {key (lowercased): value}}), `cause` the call's error."""

    def __init__(self, command: str, kind: str, resource_ids: Sequence[str],
                 tags: Mapping[str, Optional[str]], cause: idcf_api.CloudStackError,
                 found: Mapping[str, Mapping[str, str]]) -> None:
        held = "; ".join(f"{key}={value}" for values in found.values()
                         for key, value in values.items())
        super().__init__(f"{command} {', '.join(tags)} on {kind} {','.join(resource_ids)}: "
                         f"{cause} (read back: {held or 'not there'})")
        self.cause, self.found = cause, {rid: dict(v) for rid, v in found.items()}


class LockBusy(ScaleError):
    """Another run holds the lock for this config."""


class LeaseBusy(LockBusy):
    """Another run, on this monitor or another, holds the pool's lease (it is acting)."""


class LeaseExpired(ScaleError):
    """This run's lease on the pool ran out during its action: it stopped changing things."""


class ExitStatus(enum.IntEnum):
    """What ssh_scale.py exits with."""

    OK = 0
    FAILURE = 1
    USAGE = 2
    INTERRUPTED = INTERRUPTED
    TERMINATED = TERMINATED


def exit_status(exc: BaseException) -> ExitStatus:
    """The exit status for an exception that ended a run."""
    if isinstance(exc, LockBusy):
        return ExitStatus.OK
    if isinstance(exc, (ConfigError, idcf_api.ConfigError)):
        return ExitStatus.USAGE
    if isinstance(exc, KeyboardInterrupt):  # Ctrl-C, or SIGTERM (Terminated)
        return ExitStatus(stopped_status(exc))
    return ExitStatus.FAILURE


def expected(exc: BaseException) -> bool:
    """True for the failures a run can meet (all but bugs and answers we do not understand)."""
    return isinstance(exc, (ScaleError, idcf_api.CloudStackError, OSError, KeyboardInterrupt))


def message_of(exc: BaseException) -> str:
    """The one line that says what went wrong and what to check."""
    if isinstance(exc, idcf_api.JobTimeout):
        return f"{exc}; the next run repairs what it left"
    if isinstance(exc, KeyboardInterrupt):
        return stopped_message(exc)
    if isinstance(exc, (ScaleError, idcf_api.CloudStackError)):
        return str(exc)
    if isinstance(exc, OSError):
        return f"{exc.filename or 'I/O'}: {exc.strerror or exc}"
    return (f"unexpected {exc.__class__.__name__}: {exc} (run with -v for details; "
            "please report it)")
