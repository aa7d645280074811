"""Scheduled terminal faults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Fault", "FAULT_KINDS", "as_fault"]

FAULT_KINDS = ("disconnect", "ipc_timeout", "hang", "auth", "stall", "restart")


@dataclass(frozen=True)
class Fault:
    """A fault active while ``start + at <= now < start + at + duration`` (seconds of sim time).

    ``start`` is the sim's ``clock()`` at construction.
    """

    kind: str
    at: float
    duration: float

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r} (one of {', '.join(FAULT_KINDS)})")
        if not (self.at >= 0):
            raise ValueError("fault 'at' must be >= 0")
        if not (self.duration > 0):
            raise ValueError("fault 'duration' must be > 0")


def as_fault(f: Any) -> Fault:
    """A Fault from a Fault, a (kind, at, duration) tuple, a mapping or an object with those fields."""
    if isinstance(f, Fault):
        return f
    if isinstance(f, dict):
        return Fault(str(f["kind"]), float(f["at"]), float(f["duration"]))
    if isinstance(f, (tuple, list)):
        kind, at, duration = f
        return Fault(str(kind), float(at), float(duration))
    return Fault(str(f.kind), float(f.at), float(f.duration))
