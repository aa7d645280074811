"""Candle-close detection and bar boundaries (broker seconds)."""

import calendar

import numpy as np

from mt5d.actors.logic.bars import CandleTracker, bar_end, bar_start
from mt5d.daemon.terminal.mt5_constants import RATE_DTYPE


def rates(times):
    arr = np.zeros(len(times), dtype=RATE_DTYPE)
    arr["time"] = times
    arr["close"] = 1.0
    return arr


def test_bar_boundaries():
    t = calendar.timegm((2026, 11, 24, 13, 47, 12))
    assert bar_start("M1", t) == calendar.timegm((2026, 11, 24, 13, 47, 0))
    assert bar_start("M15", t) == calendar.timegm((2026, 11, 24, 13, 45, 0))
    assert bar_start("H4", t) == calendar.timegm((2026, 11, 24, 12, 0, 0))
    assert bar_start("D1", t) == calendar.timegm((2026, 11, 24, 0, 0, 0))
    assert bar_start("W1", t) == calendar.timegm((2026, 11, 22, 0, 0, 0))  # a Sunday
    assert bar_start("MN1", t) == calendar.timegm((2026, 11, 1, 0, 0, 0))
    assert bar_end("MN1", bar_start("MN1", t)) == calendar.timegm((2026, 12, 1, 0, 0, 0))
    dec = calendar.timegm((2026, 12, 5, 0, 0, 0))
    assert bar_end("MN1", bar_start("MN1", dec)) == calendar.timegm((2027, 1, 1, 0, 0, 0))


def test_bar_published_once_when_a_newer_bar_exists():
    tr = CandleTracker("M1", last_closed=0, next_check=120)
    assert not tr.due(newest_tick_s=119, now_broker_s=119)
    assert tr.due(newest_tick_s=120, now_broker_s=120)
    out = tr.closed(rates([0, 60, 120]), now_broker_s=120)
    assert list(out["time"]) == [60]
    assert tr.next_check == 180
    # The same bars again (e.g. after a reconnect) publish nothing twice.
    assert len(tr.closed(rates([0, 60, 120]), now_broker_s=121)) == 0


def test_quiet_bar_closes_by_the_clock_after_grace():
    tr = CandleTracker("M1", last_closed=0, next_check=120, grace=2)
    assert not tr.due(newest_tick_s=70, now_broker_s=121)
    assert tr.due(newest_tick_s=70, now_broker_s=122)
    out = tr.closed(rates([0, 60]), now_broker_s=122)
    assert list(out["time"]) == [60]


def test_bars_closed_during_an_outage_all_published_in_order():
    tr = CandleTracker("M1", last_closed=60, next_check=180)
    out = tr.closed(rates([0, 60, 120, 180, 240, 300]), now_broker_s=310)
    assert list(out["time"]) == [120, 180, 240]
    assert tr.fetch_count(now_broker_s=1000) == (1000 - 240) // 60 + 2
