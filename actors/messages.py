"""What actors send each other (in-process only; never on the wire)."""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.market import Candle, HealthEvent, Tick

__all__ = ["Batch", "HealthOut"]


@dataclass(slots=True)
class Batch:
    """Everything one poll cycle found: one channel send per cycle."""

    ticks: list[Tick] = field(default_factory=list)
    candles: list[Candle] = field(default_factory=list)
    forming: list[Candle] = field(default_factory=list)


@dataclass(slots=True)
class HealthOut:
    event: HealthEvent
