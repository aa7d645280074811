"""The latest tick per symbol, kept by the poller and read by the RPC service."""

from __future__ import annotations

import time

from mt5d.market import Tick

__all__ = ["PriceCache"]


class PriceCache:
    def __init__(self, clock=time.monotonic) -> None:
        self._latest: dict[str, tuple[Tick, float]] = {}
        self._clock = clock
        self.last_update = 0.0

    def update(self, tick: Tick) -> None:
        self.update_all((tick,))

    def update_all(self, ticks) -> None:
        """Store ``ticks`` (at most one per symbol: a poll cycle's newest) as their symbols' newest, received now."""
        now = self._clock()
        latest = self._latest
        for tick in ticks:
            latest[tick.symbol] = (tick, now)
        self.last_update = now

    def get(self, symbol: str) -> tuple[Tick, float] | None:
        """The newest tick of ``symbol`` and when it was received (monotonic)."""
        return self._latest.get(symbol)

    def symbols(self) -> list[str]:
        return list(self._latest)
