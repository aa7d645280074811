"""Gapless capture: exactly the unpublished ticks, whatever the fetch boundaries."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mt5d.actors.logic.cursor import TickCursor, new_ticks
from mt5d.daemon.terminal.mt5_constants import TICK_DTYPE


def ticks(mscs):
    arr = np.zeros(len(mscs), dtype=TICK_DTYPE)
    arr["time_msc"] = mscs
    arr["time"] = np.asarray(mscs) // 1000
    arr["bid"] = np.arange(len(mscs))  # identity: position in the full history
    return arr


def test_skips_ticks_already_published_in_the_boundary_millisecond():
    history = ticks([999, 1000, 1000, 1000, 1500, 1500])
    fresh, cur = new_ticks(history[:3], TickCursor(0, 0))
    assert list(fresh["bid"]) == [0, 1, 2]
    assert cur == TickCursor(1000, 2)
    # Re-read from the cursor's whole second: one more tick of ms 1000 arrived.
    fetched = history[1:]
    fresh, cur = new_ticks(fetched, cur)
    assert list(fresh["bid"]) == [3, 4, 5]
    assert cur == TickCursor(1500, 2)


def test_nothing_new_keeps_cursor():
    history = ticks([1000, 1000])
    _, cur = new_ticks(history, TickCursor(0, 0))
    fresh, again = new_ticks(history, cur)
    assert len(fresh) == 0 and again == cur


@settings(max_examples=300, deadline=None)
@given(
    gaps=st.lists(st.integers(0, 700), min_size=1, max_size=120),
    cuts=st.lists(st.integers(1, 120), min_size=1, max_size=20),
)
def test_any_sequence_of_fetches_publishes_each_tick_once_in_order(gaps, cuts):
    """However the terminal's history grows between fetches, the union of what
    is published is the history, once, in order (ticks often share a ms)."""
    history = ticks(np.cumsum(gaps) + 10_000)
    cursor, out, visible = TickCursor(0, 0), [], 0
    for cut in sorted(set(min(c, len(history)) for c in cuts)) + [len(history)]:
        visible = max(visible, cut)
        frm = cursor.from_second * 1000
        fetched = history[:visible][history["time_msc"][:visible] >= frm]
        fresh, cursor = new_ticks(fetched, cursor)
        out.extend(fresh["bid"].tolist())
    assert out == list(range(len(history)))
