"""The broker's clock: true UTC -> the trade server's wall time written as if UTC.

``broker_tz``:
  * ``"EET"`` (default): UTC+2 in winter, UTC+3 during EU summer time (last
    Sunday of March 01:00 UTC to last Sunday of October 01:00 UTC), the usual
    "New York close" broker clock. Computed here, without the OS tz database.
  * ``"fixed:+HH:MM"`` / ``"fixed:-HH:MM"``, or ``"UTC"``: a constant offset;
    ``"fixed:+HH:MM:SS"`` for a server clock that is also some seconds off
    (real trade servers drift; tests use it to put the broker clock just
    before a minute or an hour boundary).

At the spring switch broker time jumps from 03:00 to 04:00: that broker hour
does not exist (no ticks, no bars). At the autumn switch it would repeat
03:00-04:00; to keep broker time monotonic the sim pauses the market for the
UTC hour after the switch (real FX is closed then anyway), during which the
"broker now" stands still just before 04:00. With that pause, broker time is
a strictly increasing function of UTC over every instant that can carry a tick.
"""

from __future__ import annotations

import calendar
import math
import re
import time

__all__ = ["BrokerClock"]

_FIXED = re.compile(r"^fixed:([+-])(\d{1,2}):?(\d{2})(?::(\d{2}))?$")


def _last_sunday(year: int, month: int) -> int:
    """Day of month of the last Sunday of (year, month)."""
    last = calendar.monthrange(year, month)[1]
    wd = calendar.weekday(year, month, last)  # Monday=0 .. Sunday=6
    return last - (wd + 1) % 7


class BrokerClock:
    """UTC <-> broker wall clock for one ``broker_tz`` setting."""

    def __init__(self, tz: str = "EET") -> None:
        self.tz = tz
        spec = tz.strip()
        if spec.upper() in ("EET", "EU", "EET/EEST"):
            self.fixed: int | None = None
            self.winter, self.summer = 7200, 10800
        elif spec.upper() in ("UTC", "GMT"):
            self.fixed = 0
        else:
            m = _FIXED.match(spec)
            if not m:
                raise ValueError(f"broker_tz must be 'EET', 'UTC' or 'fixed:+HH:MM[:SS]', not {tz!r}")
            sign, hh, mm, ss = m.groups()
            off = int(hh) * 3600 + int(mm) * 60 + int(ss or 0)
            if off > 14 * 3600 or int(mm) >= 60 or int(ss or 0) >= 60:
                raise ValueError(f"broker_tz offset out of range: {tz!r}")
            self.fixed = -off if sign == "-" else off
        self._years: dict[int, tuple[int, int]] = {}
        # Fast path: (lo, hi, offset) of the UTC interval last looked up.
        self._iv = (0.0, -1.0, 0)

    # -- switches ---------------------------------------------------------
    def switches(self, year: int) -> tuple[int, int]:
        """(spring, autumn) switch instants of ``year`` in UTC epoch seconds (EET only)."""
        got = self._years.get(year)
        if got is None:
            spring = calendar.timegm((year, 3, _last_sunday(year, 3), 1, 0, 0))
            autumn = calendar.timegm((year, 10, _last_sunday(year, 10), 1, 0, 0))
            got = self._years[year] = (spring, autumn)
        return got

    def _interval(self, u: float) -> tuple[float, float, int]:
        if self.fixed is not None:
            return (-math.inf, math.inf, self.fixed)
        year = time.gmtime(u).tm_year
        spring, autumn = self.switches(year)
        if u < spring:
            return (float(self.switches(year - 1)[1]), float(spring), self.winter)
        if u < autumn:
            return (float(spring), float(autumn), self.summer)
        return (float(autumn), float(self.switches(year + 1)[0]), self.winter)

    def utc_offset_seconds(self, u: float) -> int:
        """Broker clock minus UTC at the UTC instant ``u`` (seconds)."""
        lo, hi, off = self._iv
        if lo <= u < hi:
            return off
        self._iv = iv = self._interval(u)
        return iv[2]

    def in_pause(self, u: float) -> bool:
        """True in the UTC hour after the autumn switch (no ticks then)."""
        if self.fixed is not None:
            return False
        autumn = self.switches(time.gmtime(u).tm_year)[1]
        return autumn <= u < autumn + 3600

    def broker_ms(self, u: float) -> int:
        """The newest broker millisecond that exists at UTC ``u`` ("broker now", inclusive)."""
        lo, hi, off = self._iv
        if not (lo <= u < hi):
            self._iv = (lo, hi, off) = self._interval(u)
        if self.fixed is None and off == self.winter and u < lo + 3600:  # the pause after the autumn switch
            return int(lo + self.summer) * 1000 - 1
        return math.floor(u * 1000.0) + off * 1000

    def broker_ms_start(self, u: float) -> int:
        """Broker ms of the first instant at or after UTC ``u`` (for window starts/ends)."""
        if self.fixed is None and self.in_pause(u):
            autumn = self.switches(time.gmtime(u).tm_year)[1]
            return (autumn + self.summer) * 1000
        return math.floor(u * 1000.0) + self.utc_offset_seconds(u) * 1000

    def spring_gap(self, year: int) -> tuple[int, int] | None:
        """Broker seconds [start, end) that do not exist in ``year`` (spring forward)."""
        if self.fixed is not None:
            return None
        spring = self.switches(year)[0]
        return (spring + self.winter, spring + self.summer)
