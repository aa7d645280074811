"""True UTC from the broker's clock. Pure logic, no I/O.

MT5 stamps ticks and bars with the trade server's wall clock written as if it
were UTC (often UTC+2 in winter, UTC+3 in summer). With ``"auto"`` the offset
is estimated from fresh ticks against our wall clock, rounded to 15 minutes,
and re-estimated all the time, so a daylight-saving switch is followed.
"""

from __future__ import annotations

__all__ = ["UtcOffset"]

_QUARTER_MS = 15 * 60 * 1000


class UtcOffset:
    """Broker-time -> UTC in milliseconds: ``utc = broker - offset_ms``.

    Feed it only the newest tick that just arrived (a live market), never
    history: the server clock stands still when no ticks arrive (weekends).
    The poller observes before it converts a batch, so the first ticks after
    a daylight-saving switch already get the new offset.
    """

    def __init__(self, fixed_seconds: int | None = None) -> None:
        self.fixed = fixed_seconds is not None
        self.offset_ms = (fixed_seconds or 0) * 1000
        self.known = self.fixed

    def observe(self, broker_msc: int, wall_ms: int) -> bool:
        """Feed the newest fresh tick time and the wall clock; True if the offset changed."""
        if self.fixed:
            return False
        estimate = round((broker_msc - wall_ms) / _QUARTER_MS) * _QUARTER_MS
        if self.known and estimate == self.offset_ms:
            return False
        self.offset_ms, self.known = estimate, True
        return True
