"""Candle-close detection. Pure logic, no I/O.

Bars come from the terminal (never re-aggregated), oldest first, the last one
being the forming bar (position 0). A bar is published once, when it closes:
when a newer bar exists, or when the broker clock is past its end by a small
grace (so a quiet minute still closes on time). Times are broker seconds.
"""

from __future__ import annotations

import calendar
import time
from dataclasses import dataclass

import numpy as np

from mt5d.market import TIMEFRAME_SECONDS

__all__ = ["bar_start", "bar_end", "min_bar_seconds", "CandleTracker", "CLOSE_GRACE_S"]

# A bar counts as closed this long after its end even when no newer bar exists
# (a quiet minute still closes on time; the terminal may add its last tick late).
CLOSE_GRACE_S = 2


def min_bar_seconds(tf: str) -> int:
    """The shortest a bar of ``tf`` can be (a month: 28 days), for counting bars in a span."""
    return TIMEFRAME_SECONDS[tf] or 28 * 86400


def bar_start(tf: str, t: int) -> int:
    """Open time of the bar holding broker second ``t``."""
    if tf == "MN1":
        tm = time.gmtime(t)
        return calendar.timegm((tm.tm_year, tm.tm_mon, 1, 0, 0, 0))
    if tf == "W1":  # MT5 weeks start on Sunday; 1970-01-01 was a Thursday
        days = t // 86400
        return (days - (days + 4) % 7) * 86400
    step = TIMEFRAME_SECONDS[tf]
    return t - t % step


def bar_end(tf: str, start: int) -> int:
    if tf == "MN1":
        tm = time.gmtime(start)
        year, month = (tm.tm_year + 1, 1) if tm.tm_mon == 12 else (tm.tm_year, tm.tm_mon + 1)
        return calendar.timegm((year, month, 1, 0, 0, 0))
    return start + TIMEFRAME_SECONDS[tf]


@dataclass(slots=True)
class CandleTracker:
    """Per symbol and timeframe: the last published closed bar and when to look again."""

    tf: str
    last_closed: int  # open time of the newest published closed bar (broker s)
    next_check: int  # end of the bar forming when we last looked (broker s)
    grace: int = CLOSE_GRACE_S

    def due(self, newest_tick_s: int, now_broker_s: int) -> bool:
        return newest_tick_s >= self.next_check or now_broker_s >= self.next_check + self.grace

    def fetch_count(self, now_broker_s: int, cap: int = 5000) -> int:
        """How many bars (from position 0) cover everything since ``last_closed``."""
        step = min_bar_seconds(self.tf)
        return max(2, min(cap, (now_broker_s - self.last_closed) // step + 2))

    def closed(self, rates: np.ndarray, now_broker_s: int) -> np.ndarray:
        """The bars in ``rates`` that closed since the last call, oldest first."""
        if not len(rates):
            self.next_check = bar_end(self.tf, bar_start(self.tf, now_broker_s))
            return rates
        times = rates["time"]
        newest = int(times[-1])
        newest_end = bar_end(self.tf, newest)
        n = len(rates) if now_broker_s >= newest_end + self.grace else len(rates) - 1
        first = int(np.searchsorted(times[:n], self.last_closed, side="right"))
        out = rates[first:n]
        if len(out):
            self.last_closed = int(out["time"][-1])
        # Look again when the forming bar (or the current period) ends.
        self.next_check = max(newest_end if n < len(rates) else 0,
                              bar_end(self.tf, bar_start(self.tf, now_broker_s)))
        return out
