"""Depth of market through the connection actor and the poller on virtual time (trio's MockClock), sim terminal.

Judged by what the poller hands the publisher: every book is the sim's book at
its time, never crossed, never older than the one before; every change of the
sim's book is published within the throttle interval plus a poll; books come
back after a disconnect and a terminal restart; the books are released on stop.
"""

from __future__ import annotations

import calendar
from collections import defaultdict

import anyio
import pytest
import trio.testing

from mt5d.actors.books import Books
from mt5d.actors.connection import Connection, Credentials, StateChange
from mt5d.actors.logic.breaker import BreakerPolicy
from mt5d.actors.logic.utc import UtcOffset
from mt5d.actors.messages import Batch
from mt5d.actors.poller import Poller
from mt5d.actors.prices import PriceCache
from mt5d.actors.books import book_from_entries
from mt5d.daemon.terminal import mt5_constants as C
from mt5d.daemon.terminal.sim import Fault, SimTerminal, default_symbols
from mt5d.daemon.terminal.sim.book import book_for
from mt5d.daemon.terminal.thread import TerminalThread

pytestmark = pytest.mark.anyio

SYMBOLS = ("EURUSD", "#AAPL", "EURUSD.m", "GBPUSD")
BOOKS = ("EURUSD", "#AAPL", "EURUSD.m")  # EURUSD.m has no depth (an empty book)
BASE = calendar.timegm((2026, 3, 10, 9, 0, 0))


@pytest.fixture
def anyio_backend():
    return "trio", {"clock": trio.testing.MockClock(autojump_threshold=0)}


class Rig:
    def __init__(self, *, faults=(), tps=20.0, interval=0.2, poll=0.05, terminal=SimTerminal) -> None:
        self.wall = lambda: BASE + anyio.current_time()
        self.symbols = [s for s in default_symbols() if s.name in SYMBOLS]
        self.sim = terminal(seed=5, clock=self.wall, ticks_per_second=tps, faults=list(faults),
                            symbols=self.symbols)
        self.changes_send, self.changes_recv = anyio.create_memory_object_stream[StateChange](1000)
        self.out_send, self.out_recv = anyio.create_memory_object_stream[Batch](4)
        self.conn = Connection(
            module=self.sim, credentials=Credentials(login=10001234, password=None, server="", path=""),
            symbols=SYMBOLS, policy=BreakerPolicy(max_failures=2, backoff_base_seconds=2.0, backoff_max_seconds=8.0),
            connection_timeout=5.0, operation_timeout=5.0, events=self.changes_send,
            thread=TerminalThread(inline=True), rand=lambda: 0.5, books=BOOKS,
        )
        self.books = Books(BOOKS, interval, clock=anyio.current_time)
        self.interval, self.poll = interval, poll
        self.poller = Poller(conn=self.conn, timeframes=(), out=self.out_send, prices=PriceCache(),
                             utc=UtcOffset(), poll_interval=poll, idle_interval=0.5, wall_clock=self.wall,
                             books=self.books)
        self.got = defaultdict(list)  # symbol -> [(virtual time published, Book)]
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
            for b in batch.books:
                self.got[b.symbol].append((anyio.current_time(), b))

    async def _watch(self) -> None:
        async for change in self.changes_recv:
            self.changes.append(change.event)

    def sym(self, name):
        return next(s for s in self.symbols if s.name == name)

    def assert_books_are_the_sims(self, symbol: str) -> None:
        got = self.got[symbol]
        assert got, f"no books for {symbol}"
        times = [b.time_msc_broker for _, b in got]
        assert times == sorted(times), "a book older than the one before"
        hist = self.sim.copy_ticks_range(symbol, times[0] // 1000, times[-1] // 1000 + 1, -1)
        last_of_ms = {}
        for row in hist:
            last_of_ms[int(row["time_msc"])] = row  # the newest tick of each millisecond
        for (_, a), (_, b) in zip(got, got[1:]):
            assert (a.bids, a.asks) != (b.bids, b.asks), "published again without a change"
        for _, book in got:
            assert not book.crossed
            row = last_of_ms[book.time_msc_broker]
            tick = C.Tick._make(row.item())
            entries = book_for(self.sym(symbol), self.sim.seed, tick)
            assert book == book_from_entries(symbol, entries, book.time_msc_broker, book.time_utc_ms)
            assert book.time_msc_broker - book.time_utc_ms == 7_200_000  # winter: UTC+2
            if entries:
                assert book.bids[0].price == float(row["bid"]) and book.asks[0].price == float(row["ask"])


async def test_every_change_published_throttled_exact_and_in_order():
    rig = Rig(tps=20.0, interval=0.2, poll=0.05)
    await rig.run_for(30)
    for symbol in ("EURUSD", "#AAPL"):
        rig.assert_books_are_the_sims(symbol)
        got = rig.got[symbol]
        sent = [t for t, _ in got]
        assert all(b - a >= rig.interval - 1e-9 for a, b in zip(sent, sent[1:])), "throttle not kept"
        assert len(got) > 30 / 0.3  # ~20 ticks/s: nearly every throttle slot carries a change
        # Every tick (a change of the book) is covered within interval + one poll by a book as new or newer.
        first_ms = got[0][1].time_msc_broker
        hist = rig.sim.copy_ticks_range(symbol, first_ms // 1000, (BASE + 29 + 7200), -1)
        for msc in {int(m) for m in hist["time_msc"] if m >= first_ms}:
            utc_s = (msc - 7_200_000) / 1000 - BASE  # virtual time of the tick
            later = [t for t, b in got if b.time_msc_broker >= msc]
            assert later and later[0] <= utc_s + rig.interval + 2 * rig.poll + 1e-6, (symbol, msc)
    # A symbol without depth: one empty book, never repeated.
    assert [(b.bids, b.asks) for _, b in rig.got["EURUSD.m"]] == [((), ())]
    assert "GBPUSD" not in rig.got  # not in stream.books
    # Stopped: the books were released (the session is still open).
    assert rig.sim.market_book_get("EURUSD") is None and rig.sim.last_error() == (-1, "Terminal: Call failed")


async def test_books_resume_after_a_disconnect_and_a_terminal_restart():
    faults = [Fault("disconnect", 5.0, 3.0), Fault("restart", 20.0, 6.0)]
    rig = Rig(faults=faults)
    await rig.run_for(45)
    for event in ("disconnected", "connected"):
        assert event in rig.changes
    for symbol in ("EURUSD", "#AAPL"):
        rig.assert_books_are_the_sims(symbol)
        sent = [t for t, _ in rig.got[symbol]]
        assert any(t < 5 for t in sent) and any(12 < t < 20 for t in sent) and any(t > 30 for t in sent)
        assert not any(20 < t < 26 for t in sent)  # the terminal was down
    assert "book_unavailable" not in rig.changes


class _NoDepthFor(SimTerminal):
    """A terminal whose broker refuses the depth of market of #AAPL (MarketBookAdd fails)."""

    def market_book_add(self, symbol=None):
        if symbol == "#AAPL":
            self._last_error = (-1, "Terminal: Call failed")
            return False
        return super().market_book_add(symbol)


async def test_a_refused_book_is_reported_once_and_the_others_go_on():
    rig = Rig(faults=[Fault("disconnect", 5.0, 3.0)], terminal=_NoDepthFor)
    await rig.run_for(15)
    assert rig.changes.count("book_unavailable") == 1  # reported once, not at every reconnect
    assert "connected" in rig.changes and "disconnected" in rig.changes
    assert "#AAPL" not in rig.got
    rig.assert_books_are_the_sims("EURUSD")
