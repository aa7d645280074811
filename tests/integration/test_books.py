"""Depth of market, symbol specifications and the terminal's state, end to end: a real nats-server,
the daemon with the sim terminal, a subscriber and ``MT5Client``.

The sim's book is a pure function of its newest tick (``sim/book.py``), so
every book a subscriber receives can be checked against the terminal's own
tick history; a scripted ``stall`` freezes the market, so the newest book and
``symbol_info`` can be compared with the sim exactly.
"""

from __future__ import annotations

import json
import time

import anyio
import msgspec
import pytest

from mt5d.actors.books import book_from_entries
from mt5d.book import Book
from mt5d.daemon.terminal import mt5_constants as C
from mt5d.daemon.terminal.sim.book import book_for
from mt5d.errors import MT5ValidationError
from mt5d.rpc import TERMINAL_INFO_HIDDEN, BookReply, BookRequest, SymbolInfo, TerminalInfo
from tests.integration.test_rpc import assert_error, daemon_client, raw

pytestmark = pytest.mark.anyio

BOOKS = ["EURUSD", "#AAPL", "EURUSD.m"]  # EURUSD.m: no depth of market (an empty book)
INTERVAL = 0.1


@pytest.fixture
def anyio_backend():
    return "asyncio"


def _sim_symbol(daemon, name):
    return next(s for s in daemon.module._symbols if s.name == name)


def assert_book_of_history(daemon, book: Book) -> None:
    """``book`` is the sim's book for one of its ticks at or just after the book's time (the tick
    is read just before the book, so a tick arriving in between makes the book newer, never older)."""
    sim, symbol = daemon.module, book.symbol
    t = book.time_msc_broker
    hist = sim.copy_ticks_range(symbol, t // 1000, t // 1000 + 2, -1)
    candidates = [C.Tick._make(row.item()) for row in hist if int(row["time_msc"]) >= t]
    for tick in candidates:
        if book_from_entries(symbol, book_for(_sim_symbol(daemon, symbol), sim.seed, tick), t,
                             book.time_utc_ms) == book:
            return
    raise AssertionError(f"{symbol} book at {t} is not the sim's book for any tick from then on")


async def test_books_stream_every_change_throttled_never_crossed_never_older(nats_url):
    async with daemon_client(nats_url, "books", stream={"books": BOOKS, "book_interval": INTERVAL},
                             terminal={"sim": {"ticks_per_second": 20.0}}) as t:
        got: dict[str, list[tuple[float, Book]]] = {s: [] for s in BOOKS}
        async with t.client.books() as stream:
            with anyio.fail_after(30):
                async for book in stream:
                    got[book.symbol].append((time.monotonic(), book))
                    if len(got["EURUSD"]) >= 40 and len(got["#AAPL"]) >= 20:
                        break
        for symbol in ("EURUSD", "#AAPL"):
            books = [b for _, b in got[symbol]]
            times = [b.time_msc_broker for b in books]
            assert times == sorted(times), f"{symbol}: a book older than the one before"
            for a, b in zip(books, books[1:]):
                assert (a.bids, a.asks) != (b.bids, b.asks), "a book published again without a change"
            for b in books:
                assert not b.crossed and len(b.bids) == len(b.asks) == 10
                assert [lv.price for lv in b.bids] == sorted((lv.price for lv in b.bids), reverse=True)
                assert [lv.price for lv in b.asks] == sorted(lv.price for lv in b.asks)
                assert b.time_msc_broker - b.time_utc_ms == t.daemon.poller.utc.offset_ms
                assert_book_of_history(t.daemon, b)
            # Throttled: never more than one book per interval (a little slack for delivery jitter).
            span = got[symbol][-1][0] - got[symbol][0][0]
            assert len(books) <= span / INTERVAL + 3, (symbol, len(books), span)
        # No depth: an empty book, once (maybe before we subscribed), never repeated.
        assert [(b.bids, b.asks) for _, b in got["EURUSD.m"]] in ([], [((), ())])
        empty = await t.client.get_book("EURUSD.m")
        assert empty.bids == () and empty.asks == ()
        # The book endpoint answers from the cache: the newest book, with its age.
        reply = await t.client.call("book", BookRequest(symbols=["EURUSD", "#AAPL", "EURUSD"]), BookReply)
        assert set(reply.books) == {"EURUSD", "#AAPL"} and reply.missing == []
        assert reply.books["EURUSD"].book.time_msc_broker >= got["EURUSD"][-1][1].time_msc_broker
        assert 0 <= reply.books["EURUSD"].age_ms < 5000
        assert (await t.client.get_book("#AAPL")).symbol == "#AAPL"
        assert set(await t.client.get_books(["EURUSD", "GBPUSD"])) == {"EURUSD"}
        with pytest.raises(MT5ValidationError, match="unknown symbol"):
            await t.client.get_book("GBPUSD")  # streamed, but not a book symbol
        sim = t.daemon.module
    # Stopped: the daemon released its books (the terminal session itself stays).
    assert sim.market_book_get("EURUSD") is None and sim.last_error() == (-1, "Terminal: Call failed")


async def test_books_resume_after_a_disconnect(nats_url):
    faults = [{"kind": "disconnect", "at": 3.0, "duration": 2.0}]
    async with daemon_client(nats_url, "bookdc", stream={"books": ["EURUSD"], "book_interval": INTERVAL},
                             terminal={"sim": {"ticks_per_second": 20.0, "faults": faults}}) as t:
        sim = t.daemon.module
        fault_end_ms = sim.broker_time_msc(sim.start + 5.0)
        seen: list[Book] = []
        async with t.client.books("EURUSD") as stream:
            with anyio.fail_after(30):
                async for book in stream:
                    seen.append(book)
                    if book.time_msc_broker > fault_end_ms + 1000 and len(seen) >= 5:
                        break
        assert "disconnected" in [e.event for e in t.col.health]
        times = [b.time_msc_broker for b in seen]
        assert times == sorted(times)
        for b in seen:
            assert not b.crossed
            assert_book_of_history(t.daemon, b)


async def test_symbol_is_the_terminals_symbol_info_field_for_field(nats_url):
    # A stall freezes the market (no ticks, so no price moves): the reply and the sim's own
    # symbol_info can be compared exactly. The stall may begin before the daemon's first tick
    # on a loaded machine, so no tick is awaited: only the stall, on the sim's (wall) clock.
    faults = [{"kind": "stall", "at": 1.5, "duration": 120.0}]
    async with daemon_client(nats_url, "symbol", wait_ticks=False, terminal={"sim": {"faults": faults}}) as t:
        sim = t.daemon.module
        await anyio.sleep(max(0.0, sim.start + 2.0 - time.time()))
        for name in ("EURUSD", "XAUUSD", "US30", "#AAPL", "BTCUSD"):  # FX, metal, index, stock, not streamed
            info = await t.client.get_symbol(name)
            assert isinstance(info, SymbolInfo)
            direct = await t.daemon.conn.run_call(lambda api: api.symbol_info(name))
            assert msgspec.structs.asdict(info) == direct._asdict()
            assert tuple(msgspec.structs.asdict(info)) == direct._fields  # the package's order
        eur = await t.client.get_symbol("EURUSD")
        assert eur.trade_contract_size == 100000.0 and eur.volume_step == 0.01 and eur.ticks_bookdepth == 10
        assert eur.bid > 0 and eur.ask > eur.bid
        code, headers, data = await raw(t.nc, t.account, "symbol", b'{"symbol": "NOPE"}')
        assert_error(code, headers, data, 400, "MT5ValidationError", contains="symbol_info(NOPE)")
        with pytest.raises(MT5ValidationError):
            await t.client.get_symbol("EURUSD\x00")


async def test_terminal_state_and_nothing_of_the_host(nats_url):
    async with daemon_client(nats_url, "term") as t:
        info = await t.client.get_terminal()
        assert isinstance(info, TerminalInfo)
        direct = (await t.daemon.conn.run_call(lambda api: api.terminal_info()))._asdict()
        mine = msgspec.structs.asdict(info)
        assert set(mine) == set(direct) - set(TERMINAL_INFO_HIDDEN)
        assert {k: v for k, v in mine.items() if k != "ping_last"} == {
            k: direct[k] for k in mine if k != "ping_last"}
        assert info.connected and info.trade_allowed and info.ping_last > 0 and info.build > 0
        code, headers, data = await raw(t.nc, t.account, "terminal", b"")
        assert code is None
        body = json.loads(data)
        assert not any(k in body for k in TERMINAL_INFO_HIDDEN) and "C:\\\\" not in data.decode()


async def test_books_over_the_rpyc_bridge(nats_url):
    """The same stream with the sim behind an rpyc classic bridge (a book is a tuple of structures:
    the bridge sends it as rows and the daemon rebuilds the BookInfo entries)."""
    from tests.integration.helpers import RpycBridge

    bridge = RpycBridge(seed=42, ticks_per_second=20.0)
    try:
        async with daemon_client(nats_url, "bookrpyc", stream={"books": ["EURUSD"], "book_interval": INTERVAL},
                                 terminal={"backend": "rpyc", "rpyc_port": bridge.port}) as t:
            seen: list[Book] = []
            async with t.client.books("EURUSD") as stream:
                with anyio.fail_after(20):
                    async for book in stream:
                        seen.append(book)
                        if len(seen) >= 10:
                            break
            times = [b.time_msc_broker for b in seen]
            assert times == sorted(times)
            assert all(len(b.bids) == len(b.asks) == 10 and not b.crossed for b in seen)
            assert (await t.client.get_symbol("EURUSD")).ticks_bookdepth == 10
    finally:
        bridge.stop()
