"""Fault injection: what a test asks the simulator to break (a 5xx, an HTML page, a slow answer,
a failing or never-ending job) and the book that hands each fault to the requests it matches."""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass
from typing import Optional

__all__ = ["FAULT_KINDS", "JOB_FAULTS", "REQUEST_FAULTS", "Fault", "FaultBook"]

FAULT_KINDS = ("http_error", "html", "slow", "job_fail", "job_hang", "slow_after")
REQUEST_FAULTS = frozenset({"http_error", "html", "slow", "slow_after"})
JOB_FAULTS = frozenset({"job_fail", "job_hang"})


@dataclass
class Fault:
    """A fault to inject into matching requests (after signature verification)."""

    kind: str
    command: Optional[str] = None
    times: int = 1
    status: int = 503
    delay: float = 5.0
    errortext: str = "Insufficient capacity"

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"fault kind {self.kind!r}: expected one of {', '.join(FAULT_KINDS)}")
        if self.times == 0 or self.times < -1:
            raise ValueError(f"fault times {self.times}: expected a positive count or -1")


@dataclass
class _Armed:
    fault: Fault
    remaining: int


class FaultBook:
    """The injected faults in order; each is used up after `times` matches (-1: never)."""

    def __init__(self) -> None:
        self._armed: list[_Armed] = []

    def add(self, fault: Fault) -> None:
        """Arm fault for its next `times` matching requests."""
        self._armed.append(_Armed(fault, fault.times))

    def clear(self) -> None:
        """Forget every fault."""
        self._armed.clear()

    def take(self, command: str, kinds: Container[str]) -> Optional[Fault]:
        """The first armed fault of one of kinds for command (lowercased), counting one use."""
        for armed in self._armed:
            fault = armed.fault
            if fault.kind in kinds and (fault.command is None or fault.command.lower() == command):
                if armed.remaining > 0:
                    armed.remaining -= 1
                    if armed.remaining == 0:
                        self._armed.remove(armed)
                return fault
        return None
