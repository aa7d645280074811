"""The simulated market: ticks, bars and the broker clock (manual clocks, no sleeps)."""

from __future__ import annotations

import calendar
import datetime as dt
import time

import numpy as np
import pytest

from mt5d.daemon.terminal import mt5_constants as C
from mt5d.daemon.terminal.sim import BrokerClock, Fault, SimTerminal

T0 = calendar.timegm((2026, 3, 10, 12, 0, 20))  # a Tuesday in winter: broker = UTC+2
SPRING = calendar.timegm((2026, 3, 29, 1, 0, 0))
AUTUMN = calendar.timegm((2026, 10, 25, 1, 0, 0))
H = 3600


class ManualClock:
    def __init__(self, t: float) -> None:
        self.t = float(t)

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def make(t: float = T0, **kw) -> tuple[SimTerminal, ManualClock]:
    clk = ManualClock(t)
    sim = SimTerminal(clock=clk, **kw)
    assert sim.initialize()
    return sim, clk


def minute_ticks(sim: SimTerminal, symbol: str, start: int, seconds: int = 60) -> np.ndarray:
    arr = sim.copy_ticks_range(symbol, start, start + seconds, C.COPY_TICKS_ALL)
    return arr[arr["time_msc"] < (start + seconds) * 1000]


def aggregate(ticks: np.ndarray, digits: int) -> tuple:
    scale = 10**digits
    spread = np.rint((ticks["ask"] - ticks["bid"]) * scale).astype(int)
    return (float(ticks["bid"][0]), float(ticks["bid"].max()), float(ticks["bid"].min()),
            float(ticks["bid"][-1]), len(ticks), int(spread.min()), int(ticks["volume"].sum()))


def bar_tuple(bar) -> tuple:
    return (float(bar["open"]), float(bar["high"]), float(bar["low"]), float(bar["close"]),
            int(bar["tick_volume"]), int(bar["spread"]), int(bar["real_volume"]))


def combine(bars: np.ndarray) -> tuple:
    return (float(bars["open"][0]), float(bars["high"].max()), float(bars["low"].min()),
            float(bars["close"][-1]), int(bars["tick_volume"].sum()), int(bars["spread"].min()),
            int(bars["real_volume"].sum()))


# -- dtypes and shapes -----------------------------------------------------------
def test_result_dtypes_are_the_real_ones():
    sim, _ = make()
    ticks = sim.copy_ticks_from("EURUSD", T0 + 2 * H - 60, 10, C.COPY_TICKS_ALL)
    assert ticks.dtype == C.TICK_DTYPE
    assert ticks.dtype.names == ("time", "bid", "ask", "last", "volume", "time_msc", "flags", "volume_real")
    assert [ticks.dtype[n].str for n in ticks.dtype.names] == ["<i8", "<f8", "<f8", "<f8", "<u8", "<i8", "<u4", "<f8"]
    rates = sim.copy_rates_from_pos("EURUSD", C.TIMEFRAME_M5, 0, 10)
    assert rates.dtype.names == ("time", "open", "high", "low", "close", "tick_volume", "spread", "real_volume")
    assert [rates.dtype[n].str for n in rates.dtype.names] == ["<i8", "<f8", "<f8", "<f8", "<f8", "<u8", "<i4", "<u8"]
    assert len(rates) == 10


def test_ticks_are_well_formed_and_only_up_to_now():
    sim, clk = make()
    now_b = (T0 + 2 * H) * 1000
    ticks = sim.copy_ticks_range("EURUSD", T0 + 2 * H - 600, T0 + 2 * H + 600, C.COPY_TICKS_ALL)
    assert len(ticks) > 100
    assert ticks["time_msc"].max() <= now_b
    assert np.all(np.diff(ticks["time_msc"]) >= 0)
    assert np.array_equal(ticks["time"], ticks["time_msc"] // 1000)
    assert np.all(ticks["ask"] > ticks["bid"])
    assert np.all(ticks["flags"] == C.TICK_FLAG_BID | C.TICK_FLAG_ASK)
    assert np.all(ticks["last"] == 0) and np.all(ticks["volume"] == 0)
    pts = ticks["bid"] * 1e5
    assert np.allclose(pts, np.rint(pts), atol=1e-6)  # 5 digits
    # one-minute reads (the poller's case) agree with long reads
    minute = (T0 + 2 * H) // 60 * 60
    assert np.array_equal(sim.copy_ticks_from("EURUSD", minute, 100000, C.COPY_TICKS_ALL),
                          ticks[ticks["time"] >= minute])
    assert np.array_equal(sim.copy_ticks_from("EURUSD", minute, 3, C.COPY_TICKS_ALL), ticks[ticks["time"] >= minute][:3])
    # The newest tick is symbol_info_tick.
    tick = sim.symbol_info_tick("EURUSD")
    assert tuple(ticks[-1].item()) == tuple(tick)
    assert tick._asdict()["time_msc"] == int(ticks["time_msc"][-1])


def test_many_ticks_share_a_millisecond():
    sim, _ = make()
    ticks = sim.copy_ticks_range("EURUSD", T0 + 2 * H - 900, T0 + 2 * H, C.COPY_TICKS_ALL)
    same = np.mean(ticks["time_msc"][1:] == ticks["time_msc"][:-1])
    assert 0.15 < same < 0.5
    # re-reading from the start of a second returns the ticks of that second again
    sec = int(ticks["time"][len(ticks) // 2])
    again = sim.copy_ticks_from("EURUSD", sec, 5, C.COPY_TICKS_ALL)
    assert again["time"][0] == sec
    assert tuple(again[0].item()) == tuple(ticks[ticks["time"] == sec][0].item())


def test_copy_ticks_from_honours_count_and_start():
    sim, _ = make()
    start = T0 + 2 * H - 300
    ticks = sim.copy_ticks_from("EURUSD", start, 50, C.COPY_TICKS_ALL)
    assert len(ticks) == 50
    assert ticks["time_msc"][0] >= start * 1000
    full = sim.copy_ticks_range("EURUSD", start, T0 + 2 * H, C.COPY_TICKS_ALL)
    assert np.array_equal(ticks, full[:50])
    # datetimes: aware -> its timestamp, naive -> taken as UTC
    aware = dt.datetime.fromtimestamp(start, dt.timezone.utc)
    naive = aware.replace(tzinfo=None)
    assert np.array_equal(sim.copy_ticks_from("EURUSD", aware, 50, C.COPY_TICKS_ALL), ticks)
    assert np.array_equal(sim.copy_ticks_from("EURUSD", naive, 50, C.COPY_TICKS_ALL), ticks)
    # a window in the future is empty, not an error
    future = sim.copy_ticks_from("EURUSD", T0 + 3 * H, 10, C.COPY_TICKS_ALL)
    assert len(future) == 0 and sim.last_error() == (1, "Success")


def test_trade_ticks_only_on_exchange_like_cfds():
    sim, _ = make()
    assert len(sim.copy_ticks_from("EURUSD", T0 + 2 * H - 60, 100, C.COPY_TICKS_TRADE)) == 0
    us30 = sim.copy_ticks_from("US30", T0 + 2 * H - 60, 100, C.COPY_TICKS_TRADE)
    assert len(us30) > 0
    flags = C.TICK_FLAG_BID | C.TICK_FLAG_ASK | C.TICK_FLAG_LAST | C.TICK_FLAG_VOLUME
    assert np.all(us30["flags"] == flags)
    assert np.all((us30["last"] >= us30["bid"]) & (us30["last"] <= us30["ask"]))
    assert np.all(us30["volume"] > 0) and np.array_equal(us30["volume_real"], us30["volume"].astype(float))
    info = sim.copy_ticks_from("US30", T0 + 2 * H - 60, 100, C.COPY_TICKS_INFO)
    assert np.array_equal(info, sim.copy_ticks_from("US30", T0 + 2 * H - 60, 100, C.COPY_TICKS_ALL))


# -- determinism -------------------------------------------------------------------
def test_ticks_are_a_pure_function_of_seed_symbol_and_time():
    a, _ = make(T0)
    b, _ = make(T0 + 5000)  # started later: more history exists, the common part is identical
    lo, hi = T0 + 2 * H - 1800, T0 + 2 * H
    for sym in ("EURUSD", "USDJPY", "US30"):
        ta = a.copy_ticks_range(sym, lo, hi, C.COPY_TICKS_ALL)
        # b reads the later half first (generation order must not matter)
        b.copy_ticks_range(sym, lo + 900, hi, C.COPY_TICKS_ALL)
        tb = b.copy_ticks_range(sym, lo, hi, C.COPY_TICKS_ALL)
        assert len(ta) > 0 and np.array_equal(ta, tb)
        ra = a.copy_rates_range(sym, C.TIMEFRAME_M1, lo, hi - 60)
        rb = b.copy_rates_range(sym, C.TIMEFRAME_M1, lo, hi - 60)
        assert np.array_equal(ra, rb)
    c, _ = make(T0, seed=43)
    assert not np.array_equal(a.copy_ticks_range("EURUSD", lo, hi, -1), c.copy_ticks_range("EURUSD", lo, hi, -1))


def test_history_does_not_change_as_time_passes():
    sim, clk = make()
    start = T0 + 2 * H - 120
    before = sim.copy_ticks_from("EURUSD", start, 100000, C.COPY_TICKS_ALL)
    clk.advance(30.5)
    after = sim.copy_ticks_from("EURUSD", start, 100000, C.COPY_TICKS_ALL)
    assert len(after) > len(before)
    assert np.array_equal(after[: len(before)], before)


def test_suffixed_symbol_shares_the_feed_with_its_own_spread():
    sim, _ = make()
    sim.symbol_select("EURUSD.m", True)
    a = sim.copy_ticks_range("EURUSD", T0 + 2 * H - 60, T0 + 2 * H, C.COPY_TICKS_ALL)
    b = sim.copy_ticks_range("EURUSD.m", T0 + 2 * H - 60, T0 + 2 * H, C.COPY_TICKS_ALL)
    assert np.array_equal(a["time_msc"], b["time_msc"]) and np.array_equal(a["bid"], b["bid"])
    assert np.all(b["ask"] - b["bid"] > a["ask"] - a["bid"])


def test_quiet_market_has_no_ticks():
    sim, _ = make(ticks_per_second=0)
    assert len(sim.copy_ticks_from("EURUSD", T0, 1000, C.COPY_TICKS_ALL)) == 0
    tick = sim.symbol_info_tick("EURUSD")
    assert tick.time == 0 and tick.bid == 0.0
    assert sim.copy_rates_from_pos("EURUSD", C.TIMEFRAME_M1, 0, 10) is None
    assert sim.last_error() == (-1, "Terminal: Call failed")


# -- broker clock ------------------------------------------------------------------
def test_eu_dst_offsets_2026():
    clock = BrokerClock("EET")
    assert clock.utc_offset_seconds(SPRING - 1) == 2 * H  # 29 March 2026 00:59:59 UTC
    assert clock.utc_offset_seconds(SPRING) == 3 * H
    assert clock.utc_offset_seconds(AUTUMN - 1) == 3 * H  # 25 October 2026
    assert clock.utc_offset_seconds(AUTUMN) == 2 * H
    assert clock.utc_offset_seconds(calendar.timegm((2025, 3, 30, 0, 59, 59))) == 2 * H
    assert clock.utc_offset_seconds(calendar.timegm((2025, 3, 30, 1, 0, 0))) == 3 * H
    assert clock.utc_offset_seconds(calendar.timegm((2025, 10, 26, 1, 0, 0))) == 2 * H
    assert clock.utc_offset_seconds(calendar.timegm((2026, 12, 31, 23, 0, 0))) == 2 * H
    sim, _ = make()
    assert sim.utc_offset_seconds(SPRING) == 3 * H
    assert BrokerClock("fixed:+03:00").utc_offset_seconds(AUTUMN) == 3 * H
    assert BrokerClock("fixed:-05:30").utc_offset_seconds(SPRING) == -(5 * H + 1800)
    assert BrokerClock("UTC").utc_offset_seconds(SPRING) == 0
    with pytest.raises(ValueError):
        BrokerClock("Europe/Athens")


def test_spring_forward_hour_has_no_ticks_and_no_bar():
    sim, clk = make(SPRING + 1200)
    b_switch = SPRING + 3 * H  # broker 04:00; 03:00-04:00 broker does not exist
    ticks = sim.copy_ticks_range("EURUSD", b_switch - 2 * H, b_switch + 600, C.COPY_TICKS_ALL)
    t = ticks["time"]
    assert np.any(t < b_switch - H) and np.any(t >= b_switch)
    assert not np.any((t >= b_switch - H) & (t < b_switch))
    bars = sim.copy_rates_range("EURUSD", C.TIMEFRAME_H1, b_switch - 2 * H, b_switch)
    assert list(bars["time"]) == [b_switch - 2 * H, b_switch]
    assert sim.symbol_info_tick("EURUSD").time_msc <= (SPRING + 1200 + 3 * H) * 1000


def test_autumn_switch_keeps_broker_time_monotonic():
    sim, clk = make(AUTUMN - 120)
    b_switch = AUTUMN + 3 * H  # broker 04:00 on both sides of the switch
    clk.t = AUTUMN + 1800  # in the pause (the UTC hour after the switch)
    during = sim.copy_ticks_from("EURUSD", b_switch - 600, 100000, C.COPY_TICKS_ALL)
    last = sim.symbol_info_tick("EURUSD")
    assert during["time_msc"].max() < b_switch * 1000
    assert tuple(during[-1].item()) == tuple(last)
    clk.t = AUTUMN + 3599.9  # still paused: nothing new
    assert np.array_equal(sim.copy_ticks_from("EURUSD", b_switch - 600, 100000, C.COPY_TICKS_ALL), during)
    assert sim.symbol_info_tick("EURUSD") == last
    clk.t = AUTUMN + H + 600  # trading again at broker 04:10 (UTC+2)
    after = sim.copy_ticks_from("EURUSD", b_switch - 600, 100000, C.COPY_TICKS_ALL)
    assert np.array_equal(after[: len(during)], during)
    assert after["time_msc"][len(during)] >= b_switch * 1000
    assert np.all(np.diff(after["time_msc"]) >= 0)
    assert after["time_msc"].max() <= (AUTUMN + H + 600 + 2 * H) * 1000
    assert sim.utc_offset_seconds(clk.t) == 2 * H


def test_tick_time_is_broker_time():
    sim, clk = make()
    for _ in range(5):
        tick = sim.symbol_info_tick("EURUSD")
        assert 0 <= (clk.t + 2 * H) * 1000 - tick.time_msc < 60_000
        clk.advance(7.3)


# -- bars --------------------------------------------------------------------------
@pytest.mark.parametrize("symbol", ["EURUSD", "US30", "XAUUSD"])
def test_m1_bars_are_the_aggregate_of_their_ticks(symbol):
    sim, _ = make()
    sim.symbol_select(symbol, True)
    digits = sim.symbol_info(symbol).digits
    base = (T0 + 2 * H) // 60 * 60 - 30 * 60
    bars = sim.copy_rates_range(symbol, C.TIMEFRAME_M1, base, base + 29 * 60)
    assert len(bars) == 30
    for bar in bars[::7]:
        ticks = minute_ticks(sim, symbol, int(bar["time"]))
        assert bar_tuple(bar) == aggregate(ticks, digits)
    if symbol == "EURUSD":
        assert np.all(bars["real_volume"] == 0)
    if symbol == "US30":
        assert np.all(bars["real_volume"] > 0)


def test_higher_timeframes_are_the_aggregate_of_m1():
    sim, _ = make()
    now_b = T0 + 2 * H
    hour = now_b // H * H - 3 * H
    m1 = sim.copy_rates_range("EURUSD", C.TIMEFRAME_M1, hour, hour + H - 1)
    h1 = sim.copy_rates_range("EURUSD", C.TIMEFRAME_H1, hour, hour)
    assert len(h1) == 1 and bar_tuple(h1[0]) == combine(m1)
    m15 = sim.copy_rates_range("EURUSD", C.TIMEFRAME_M15, hour, hour + H - 1)
    assert len(m15) == 4
    for i, bar in enumerate(m15):
        assert bar_tuple(bar) == combine(m1[i * 15:(i + 1) * 15])
    day = now_b // 86400 * 86400 - 86400
    h1s = sim.copy_rates_range("EURUSD", C.TIMEFRAME_H1, day, day + 86399)
    d1 = sim.copy_rates_range("EURUSD", C.TIMEFRAME_D1, day, day)
    assert len(h1s) == 24 and bar_tuple(d1[0]) == combine(h1s)
    h4 = sim.copy_rates_range("EURUSD", C.TIMEFRAME_H4, day, day + 86399)
    assert list(h4["time"]) == [day + i * 4 * H for i in range(6)]
    assert bar_tuple(h4[2]) == combine(h1s[8:12])


def test_forming_bar_is_position_zero():
    sim, clk = make()
    now_b = int(clk.t) + 2 * H
    minute = now_b // 60 * 60
    forming = sim.copy_rates_from_pos("EURUSD", C.TIMEFRAME_M1, 0, 3)
    assert list(forming["time"]) == [minute - 120, minute - 60, minute]
    so_far = sim.copy_ticks_from("EURUSD", minute, 100000, C.COPY_TICKS_ALL)
    assert bar_tuple(forming[-1]) == aggregate(so_far, 5)
    assert forming["close"][-1] == sim.symbol_info_tick("EURUSD").bid
    clk.advance(60)
    closed = sim.copy_rates_from_pos("EURUSD", C.TIMEFRAME_M1, 1, 1)
    assert closed["time"][0] == minute
    assert bar_tuple(closed[0]) == aggregate(minute_ticks(sim, "EURUSD", minute), 5)
    assert closed["tick_volume"][0] >= forming["tick_volume"][-1]
    # H1 forming bar follows too
    h1 = sim.copy_rates_from_pos("EURUSD", C.TIMEFRAME_H1, 0, 1)
    m1 = sim.copy_rates_range("EURUSD", C.TIMEFRAME_M1, now_b // H * H, now_b + 60)
    assert bar_tuple(h1[0]) == combine(m1)


def test_rates_requests_agree():
    sim, clk = make()
    now_b = int(clk.t) + 2 * H
    pos = sim.copy_rates_from_pos("EURUSD", C.TIMEFRAME_M5, 0, 50)
    frm = sim.copy_rates_from("EURUSD", C.TIMEFRAME_M5, now_b, 50)
    rng = sim.copy_rates_range("EURUSD", C.TIMEFRAME_M5, int(pos["time"][0]), now_b)
    assert np.array_equal(pos, frm) and np.array_equal(pos, rng)
    older = sim.copy_rates_from("EURUSD", C.TIMEFRAME_M5, int(pos["time"][10]), 5)
    assert np.array_equal(older, pos[6:11])
    w1 = sim.copy_rates_from_pos("EURUSD", C.TIMEFRAME_W1, 0, 3)
    assert all(dt.datetime.fromtimestamp(int(t), dt.timezone.utc).weekday() == 6 for t in w1["time"])
    mn = sim.copy_rates_from_pos("EURUSD", C.TIMEFRAME_MN1, 0, 3)
    assert [dt.datetime.fromtimestamp(int(t), dt.timezone.utc).day for t in mn["time"]] == [1, 1, 1]
    d1 = sim.copy_rates_range("EURUSD", C.TIMEFRAME_D1, int(mn["time"][-1]), now_b)
    assert bar_tuple(mn[-1]) == combine(d1)


def test_deep_history_answers_quickly():
    sim, _ = make()
    for tf in ("M1", "M15", "H1", "H4", "D1", "W1", "MN1"):
        t = time.perf_counter()
        rates = sim.copy_rates_from_pos("EURUSD", C.TIMEFRAMES[tf], 0, 3000)
        assert rates is not None and len(rates) > 0, tf
        assert np.all(np.diff(rates["time"]) > 0)
        assert time.perf_counter() - t < 3.0, tf  # typically < 0.4 s cold; generous for slow CI
    assert len(sim.copy_rates_from_pos("EURUSD", C.TIMEFRAME_M1, 0, 3000)) == 3000
    assert sim.copy_rates_from_pos("EURUSD", C.TIMEFRAME_M1, 100000, 1) is None
    assert sim.last_error() == (-1, "Terminal: Call failed")


def test_stall_window_has_no_ticks_and_no_bars():
    sim, clk = make(faults=[Fault("stall", 60, 150)])
    clk.advance(300)
    lo_b, hi_b = T0 + 2 * H + 60, T0 + 2 * H + 210
    ticks = sim.copy_ticks_range("EURUSD", lo_b - 60, hi_b + 60, C.COPY_TICKS_ALL)
    t = ticks["time_msc"]
    assert np.any(t < lo_b * 1000) and np.any(t >= hi_b * 1000)
    assert not np.any((t >= lo_b * 1000) & (t < hi_b * 1000))
    plain, _ = make(T0 + 300)
    ref = plain.copy_ticks_range("EURUSD", lo_b - 60, hi_b + 60, C.COPY_TICKS_ALL)
    keep = (ref["time_msc"] < lo_b * 1000) | (ref["time_msc"] >= hi_b * 1000)
    assert np.array_equal(ref[keep], ticks)
    m1 = sim.copy_rates_range("EURUSD", C.TIMEFRAME_M1, lo_b - 120, hi_b + 60)
    for bar in m1:
        assert bar_tuple(bar) == aggregate(minute_ticks(sim, "EURUSD", int(bar["time"])), 5)
    inside = [m for m in range(lo_b // 60 * 60 + 60, hi_b - 59, 60)]  # minutes wholly in the stall
    assert inside and not set(inside) & set(m1["time"].tolist())
    assert lo_b // 60 * 60 in m1["time"] and hi_b // 60 * 60 in m1["time"]  # cut minutes keep their ticks
    # During the stall, the last tick stays the one before it.
    sim2, clk2 = make(faults=[Fault("stall", 60, 150)])
    clk2.advance(100)
    assert sim2.symbol_info_tick("EURUSD").time_msc < lo_b * 1000
