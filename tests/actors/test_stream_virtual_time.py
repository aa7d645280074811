"""The connection actor and the poller on virtual time (trio's MockClock), with the sim terminal.

Judged by what the poller hands the publisher: every tick of the terminal's
history, exactly once and in order, across faults.
"""

from __future__ import annotations

import calendar
import time
from types import SimpleNamespace
from collections import defaultdict

import anyio
import pytest
import trio.testing

import mt5d.actors.poller as poller_mod
from mt5d.actors.logic.breaker import BreakerPolicy
from mt5d.actors.connection import Connection, Credentials, StateChange
from mt5d.actors.messages import Batch
from mt5d.actors.poller import Poller
from mt5d.actors.prices import PriceCache
from mt5d.actors.logic.utc import UtcOffset
from mt5d.daemon.terminal.mt5_constants import TIMEFRAMES
from mt5d.daemon.terminal.sim import Fault, SimTerminal, default_symbols
from mt5d.daemon.terminal.thread import TerminalThread

pytestmark = pytest.mark.anyio

SYMBOLS = ("EURUSD", "EURUSD.m", "#AAPL")


@pytest.fixture
def anyio_backend():
    return "trio", {"clock": trio.testing.MockClock(autojump_threshold=0)}


class Rig:
    def __init__(self, base: float, *, faults=(), tps=20.0, symbols=SYMBOLS, timeframes=("M1",), poll=0.05,
                 gate=None, start_at=None, wrap=None) -> None:
        self.base = base
        self.wall = lambda: base + anyio.current_time()
        self.sim = SimTerminal(seed=11, clock=self.wall, ticks_per_second=tps, faults=list(faults),
                               symbols=[s for s in default_symbols() if s.name in symbols])
        self.changes_send, self.changes_recv = anyio.create_memory_object_stream[StateChange](1000)
        self.out_send, self.out_recv = anyio.create_memory_object_stream[Batch](4)
        self.conn = Connection(
            module=wrap(self.sim) if wrap else self.sim, credentials=Credentials(login=10001234, password=None, server="", path=""),
            symbols=symbols, policy=BreakerPolicy(max_failures=2, backoff_base_seconds=2.0, backoff_max_seconds=8.0),
            connection_timeout=5.0, operation_timeout=5.0, events=self.changes_send,
            thread=TerminalThread(inline=True), rand=lambda: 0.5,
        )
        self.utc = UtcOffset()
        self.poller = Poller(conn=self.conn, timeframes=timeframes, out=self.out_send, prices=PriceCache(),
                             utc=self.utc, poll_interval=poll, idle_interval=0.5, wall_clock=self.wall, gate=gate,
                             start_at=start_at)
        self.ticks = defaultdict(list)
        self.waits_ms: list[float] = []  # from a tick's time to its batch reaching the publisher
        self.candles = []
        self.changes: list[str] = []

    async def run_for(self, seconds: float) -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(self.conn.run)
            await tg.start(self.poller.run)
            tg.start_soon(self._collect)
            tg.start_soon(self._watch)
            await anyio.sleep(seconds)
            tg.cancel_scope.cancel()

    async def _collect(self) -> None:
        async for batch in self.out_recv:
            now_ms = self.wall() * 1000
            for t in batch.ticks:
                self.ticks[t.symbol].append(t)
                self.waits_ms.append(now_ms - t.time_utc_ms)
            self.candles.extend(batch.candles)

    async def _watch(self) -> None:
        async for change in self.changes_recv:
            self.changes.append(change.event)

    def assert_exactly_once(self, symbol: str, dropped=lambda msc: False) -> None:
        """The published ticks are the terminal's history (but the ``dropped`` ones) once, in order."""
        got = self.ticks[symbol]
        assert got, f"no ticks for {symbol}"
        first, last = got[0].time_msc_broker, got[-1].time_msc_broker
        hist = self.sim.copy_ticks_range(symbol, first // 1000, last // 1000 + 1, -1)
        expected = [(int(m), float(b), float(a)) for m, b, a in zip(hist["time_msc"], hist["bid"], hist["ask"])
                    if first <= m <= last]
        seen = [(t.time_msc_broker, t.bid, t.ask) for t in got]
        start = expected.index(seen[0])
        # (symbol, time_msc, index_in_ms) identifies a tick: its position among the ticks of its
        # millisecond (a dropped tick keeps its place).
        mscs = [m for m, _, _ in expected]
        kept = [(row, pos - mscs.index(mscs[pos])) for pos, row in enumerate(expected)
                if pos >= start and not dropped(row[0])]
        assert seen == [row for row, _ in kept], f"{symbol}: {len(seen)} published vs {len(kept)} in history"
        assert [t.index_in_ms for t in got] == [k for _, k in kept]


BASE = calendar.timegm((2026, 3, 10, 9, 0, 0))


async def test_every_tick_once_in_order_with_shared_milliseconds():
    rig = Rig(BASE, tps=50.0)
    await rig.run_for(30)
    for s in SYMBOLS:
        rig.assert_exactly_once(s)
    shared = sum(1 for a, b in zip(rig.ticks["EURUSD"], rig.ticks["EURUSD"][1:])
                 if a.time_msc_broker == b.time_msc_broker)
    assert shared > 10  # the sim puts several ticks in one millisecond
    # Winter: UTC+2.
    assert all(t.time_msc_broker - t.time_utc_ms == 7_200_000 for t in rig.ticks["EURUSD"])


class NanPrices:
    """The terminal, its history with a NaN bid in every tick at a millisecond divisible by 7
    (a result that makes no sense): the poller must leave those out and lose no other."""

    def __init__(self, sim) -> None:
        self._sim = sim

    def __getattr__(self, name):
        return getattr(self._sim, name)

    def copy_ticks_from(self, *args):
        arr = self._sim.copy_ticks_from(*args)
        if arr is not None:
            arr = arr.copy()
            arr["bid"][arr["time_msc"] % 7 == 0] = float("nan")
        return arr


async def test_ticks_with_nan_prices_are_left_out_logged_and_the_rest_go_on(caplog):
    rig = Rig(BASE, tps=50.0, wrap=NanPrices)
    await rig.run_for(10)
    for s in SYMBOLS:
        rig.assert_exactly_once(s, dropped=lambda msc: msc % 7 == 0)
    got = [r for r in caplog.records if r.getMessage() == "terminal returned ticks with NaN prices; skipped"]
    left_out = sum(r.count for r in got)
    assert left_out > 50 and {r.symbol for r in got} == set(SYMBOLS)
    assert all(t.bid == t.bid for ticks in rig.ticks.values() for t in ticks)


async def test_a_late_wake_up_does_not_stretch_the_poll_period():
    """Each cycle is due one poll interval after the one before was due. Every real wake-up
    comes late (epoll rounds up to whole milliseconds, and more on a loaded machine): timed
    from each start, the lateness adds to every period, and so to every tick's wait."""

    async def late_wake_up():  # the gate runs at the top of each cycle: 3 ms late, each time
        await anyio.sleep(0.003)
        return 0, None

    rig = Rig(BASE, tps=200.0, poll=0.01, gate=late_wake_up)
    await rig.run_for(10)
    for s in SYMBOLS:
        rig.assert_exactly_once(s)
    assert len(rig.waits_ms) > 3000
    # Cycles at 3, 13, 23 ... ms: no tick waits more than the 10 ms poll (at 3, 16, 29 ...: 13 ms).
    assert max(rig.waits_ms) <= 10.0


async def test_with_a_precise_start_the_loop_hands_each_hop_over_early_and_it_starts_on_the_grid(monkeypatch):
    """The loop's timers fire late by a varying amount; so the loop wakes ``EARLY`` before a
    cycle is due and the terminal thread waits out the rest, to the cycle's due time."""
    asked = []  # (the loop's time when the hop was handed over, the time it is to start at)

    def start_at(deadline: float) -> None:  # (the terminal thread's wait, inline here)
        asked.append((anyio.current_time(), deadline))

    # The poller's monotonic clock is the virtual one here (it converts the loop's time to it).
    monkeypatch.setattr(poller_mod, "time", SimpleNamespace(monotonic=anyio.current_time,
                                                             perf_counter=time.perf_counter))
    rig = Rig(BASE, tps=200.0, poll=0.01, start_at=start_at)
    await rig.run_for(5)
    for s in SYMBOLS:
        rig.assert_exactly_once(s)
    assert len(asked) > 400
    handed, due = zip(*asked[10:])
    assert all(abs(b - a - 0.01) < 1e-9 for a, b in zip(due, due[1:]))  # a fixed 10 ms grid
    assert all(abs(d - h - poller_mod.EARLY) < 1e-9 for h, d in zip(handed, due))  # handed over early


async def test_more_ticks_than_one_fetch_returns(monkeypatch):
    monkeypatch.setattr(poller_mod, "FETCH_COUNT", 7)
    rig = Rig(BASE, tps=200.0, poll=0.5)
    await rig.run_for(10)
    for s in SYMBOLS:
        rig.assert_exactly_once(s)


async def test_disconnect_and_terminal_restart_fill_the_gap_from_history():
    faults = [Fault("disconnect", 5.0, 3.0), Fault("restart", 20.0, 6.0), Fault("ipc_timeout", 40.0, 2.0)]
    rig = Rig(BASE, faults=faults)
    await rig.run_for(60)
    for s in SYMBOLS:
        rig.assert_exactly_once(s)
    for event in ("disconnected", "breaker_open", "breaker_half_open", "breaker_closed", "connected"):
        assert event in rig.changes
    # Ticks stamped during the outages were published after it, from the terminal's history.
    eur = [t.time_utc_ms for t in rig.ticks["EURUSD"]]
    assert any(BASE * 1000 + 5_500 < m < BASE * 1000 + 7_500 for m in eur)
    assert any(BASE * 1000 + 21_000 < m < BASE * 1000 + 25_000 for m in eur)


async def test_candles_published_once_at_close_and_match_the_terminal():
    rig = Rig(BASE + 30, timeframes=("M1", "M5"), faults=[Fault("disconnect", 100.0, 20.0)])
    await rig.run_for(400)
    for tf, n in (("M1", 6), ("M5", 1)):
        bars = [c for c in rig.candles if c.symbol == "EURUSD" and c.timeframe == tf]
        times = [c.time_broker for c in bars]
        assert len(times) == len(set(times)) and times == sorted(times)
        assert len(bars) >= n
        rates = rig.sim.copy_rates_range("EURUSD", TIMEFRAMES[tf], times[0], times[-1])
        by_time = {int(r["time"]): r for r in rates}
        for c in bars:
            r = by_time[c.time_broker]
            assert (c.open, c.high, c.low, c.close, c.tick_volume) == (
                float(r["open"]), float(r["high"]), float(r["low"]), float(r["close"]), int(r["tick_volume"]))
            assert c.closed
    m1 = [c.time_broker for c in rig.candles if c.symbol == "EURUSD" and c.timeframe == "M1"]
    assert all(b - a == 60 for a, b in zip(m1, m1[1:]))  # none missing, even across the outage


async def test_daylight_saving_switch_of_the_broker_clock():
    # EU autumn switch 2026: 25 October 01:00 UTC (UTC+3 -> UTC+2).
    switch = calendar.timegm((2026, 10, 25, 1, 0, 0))
    rig = Rig(switch - 120, symbols=("EURUSD",), timeframes=(), poll=1.0, tps=2.0)
    await rig.run_for(3 * 3600)
    rig.assert_exactly_once("EURUSD")
    ticks = rig.ticks["EURUSD"]
    for t in ticks:
        true_offset = rig.sim.utc_offset_seconds(t.time_utc_ms / 1000) * 1000
        assert t.time_msc_broker - t.time_utc_ms == true_offset
    assert {t.time_msc_broker - t.time_utc_ms for t in ticks} == {10_800_000, 7_200_000}
    utc = [t.time_utc_ms for t in ticks]
    assert utc == sorted(utc)


async def test_a_request_that_breaks_our_own_code_is_one_failure_not_a_dead_actor():
    from mt5d.errors import MT5DataError

    rig = Rig(BASE)
    async with anyio.create_task_group() as tg:
        await tg.start(rig.conn.run)
        with pytest.raises(MT5DataError):
            await rig.conn.run_call(lambda api: api.terminal_info().no_such_field)
        assert (await rig.conn.run_call(lambda api: api.terminal_info())).connected
        assert rig.conn.status().breaker == "closed"
        tg.cancel_scope.cancel()
