"""Ctrl-C and SIGTERM: a run that is stopped says in one line what it was doing.

Code that changes the cloud, or reads it, names its step (`with step("during the drain of
web-3")`); an interruption inside carries the innermost step out to main(), which prints e.g.

  ssh_scale.py: error: terminated (SIGTERM) during the drain of web-3; the next run finishes it

The console script imports sshscale.cli, and its main() everything else: this module is all
it needs before then, so it imports nothing heavy (Ctrl-C during the imports is one line too).
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any

__all__ = ["INTERRUPTED", "TERMINATED", "Terminated", "ignore_sigterm", "step",
           "stopped_message", "stopped_status", "terminate_on_sigterm"]

INTERRUPTED = 130  # the exit statuses: 128 + SIGINT, 128 + SIGTERM
TERMINATED = 143
_STEP = "ssh_scale_step"  # the attribute an interruption carries its step in: (what, left)


class Terminated(KeyboardInterrupt):
    """The run got SIGTERM (systemd stop or timeout). A KeyboardInterrupt, so that it unwinds
    the run as Ctrl-C does and no `except Exception` on its way swallows it."""


@contextlib.contextmanager
def step(what: str, changing: bool = True, left: str = "") -> Iterator[None]:
    """Name what an interruption inside the block stops ("during the drain of web-3"); the
    innermost step wins. A changing step leaves work the next run finishes; a step that
    only reads leaves nothing; `left`, when given, says instead what is left to do."""
    try:
        yield
    except KeyboardInterrupt as exc:
        if not hasattr(exc, _STEP):
            setattr(exc, _STEP, (what, left or ("the next run finishes it" if changing
                                                else "nothing was changed")))
        raise


def stopped_message(exc: KeyboardInterrupt) -> str:
    """The one line for an interrupted run: the signal, the step, what is left."""
    head = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted (Ctrl-C)"
    if not hasattr(exc, _STEP):
        return head
    what, left = getattr(exc, _STEP)
    return f"{head} {what}; {left}"


def stopped_status(exc: KeyboardInterrupt) -> int:
    """The exit status for an interrupted run: 143 for SIGTERM, else 130."""
    return TERMINATED if isinstance(exc, Terminated) else INTERRUPTED


def terminate_on_sigterm() -> None:
    """SIGTERM (systemd stop or timeout) stops the run like Ctrl-C: one line, never a
    traceback. Only the main thread can set a handler; elsewhere (tests) nothing changes."""
    def raise_terminated(signum: int, frame: Any) -> None:
        raise Terminated()

    with contextlib.suppress(ValueError):  # not the main thread
        signal.signal(signal.SIGTERM, raise_terminated)


def ignore_sigterm() -> None:
    """The run is over and has said so: a SIGTERM from now on changes nothing. Ignored rather
    than handled, as Python puts a handled signal back to its default (death, no line) while
    the interpreter shuts down."""
    with contextlib.suppress(ValueError):  # not the main thread
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
