"""Gapless tick capture: which fetched ticks are new. Pure logic, no I/O.

``copy_ticks_from`` takes whole seconds, and many ticks can share one
millisecond, so each fetch re-reads the cursor's second and we skip exactly
what was already published: every tick before the cursor's millisecond, and
the first ``seen`` ticks of that millisecond.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["TickCursor", "new_ticks"]


@dataclass(frozen=True, slots=True)
class TickCursor:
    last_msc: int  # time_msc of the newest published tick (broker clock)
    seen: int  # how many ticks of that millisecond were published

    @property
    def from_second(self) -> int:
        return self.last_msc // 1000


def new_ticks(ticks: np.ndarray, cursor: TickCursor) -> tuple[np.ndarray, TickCursor]:
    """The unpublished part of ``ticks`` (sorted by time_msc, fetched from
    ``cursor.from_second``) and the cursor after publishing it."""
    if not len(ticks):
        return ticks, cursor
    msc = ticks["time_msc"]
    # First index at the cursor's millisecond, then skip the ones already seen.
    start = int(msc.searchsorted(cursor.last_msc, "left"))
    at_cursor = int(msc.searchsorted(cursor.last_msc, "right")) - start
    skip = start + min(cursor.seen, at_cursor)
    fresh = ticks[skip:]
    if not len(fresh):
        return fresh, cursor
    last = int(msc[-1])
    if last == cursor.last_msc:
        seen = cursor.seen + len(fresh)
    else:
        seen = len(ticks) - int(msc.searchsorted(last, "left"))
    return fresh, TickCursor(last, seen)
