"""Gapless tick capture: which fetched ticks are new. Pure logic, no I/O.

``copy_ticks_from`` takes whole seconds, and many ticks can share one
millisecond, so each fetch re-reads the cursor's second and we skip exactly
what was already published: every tick before the cursor's millisecond, and
the first ``seen`` ticks of that millisecond.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["TickCursor", "new_ticks"]


class TickCursor(NamedTuple):  # a tuple: built for every moved symbol every cycle (a frozen dataclass costs 5x)
    last_msc: int  # time_msc of the newest published tick (broker clock)
    seen: int  # how many ticks of that millisecond were published

    @property
    def from_second(self) -> int:
        return self.last_msc // 1000


def new_ticks(ticks: np.ndarray, cursor: tuple) -> tuple[np.ndarray, tuple]:
    """The unpublished part of ``ticks`` (sorted by time_msc, fetched from the cursor's
    second) and the cursor after publishing it. ``cursor`` is a ``TickCursor`` or any tuple
    that starts ``(last_msc, seen)`` (the poll plan's; no cursor is built for the call).
    With something new the cursor returned is a ``TickCursor``; with nothing new it is the
    one given, as given (so a caller that keeps it makes it a ``TickCursor`` itself)."""
    n = len(ticks)
    if not n:
        return ticks, cursor
    last_msc, seen = cursor[0], cursor[1]
    msc = ticks["time_msc"]
    last = msc[-1]
    # One search for three bounds (the field is strided: each search copies it): the first
    # tick at the cursor's millisecond, the first after it, the first at the newest one.
    start, after, newest = msc.searchsorted((last_msc, last_msc + 1, last)).tolist()
    skip = start + min(seen, after - start)  # skip the ones already seen
    if skip == n:
        return ticks[n:], cursor
    fresh = ticks[skip:]
    last = int(last)
    if last == last_msc:
        return fresh, TickCursor(last, seen + len(fresh))
    return fresh, TickCursor(last, n - newest)
