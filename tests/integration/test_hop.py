"""The poll cycle's hop: the same plan gives the same answer in process and inside the rpyc bridge.

The hop runs next to the terminal (on the terminal thread, or inside the
bridge as one round trip) and returns only what is new: exactly the ticks
after each cursor, the bars asked for, and each failure as its own translated
error, so one refused symbol never hides the others.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import numpy as np
import pytest

from mt5d.daemon.terminal.api import TerminalApi
from mt5d.daemon.terminal.backends import RpycTerminal
from mt5d.daemon.terminal.mt5_constants import TIMEFRAMES
from mt5d.daemon.terminal.sim import SimTerminal, default_symbols
from mt5d.daemon.tools.rpyc_bridge import RpycBridge
from mt5d.errors import MT5ConnectionError, MT5ValidationError

SYMBOLS = ("EURUSD", "EURUSD.m", "#AAPL", "XAUUSD")
SIM = dict(seed=5, ticks_per_second=50.0)


class CountingRpyc(RpycTerminal):
    """The rpyc backend, counting its round trips into the bridge."""

    trips = 0

    def _round_trip(self, which, *args):
        self.trips += 1
        return super()._round_trip(which, *args)


@pytest.fixture(params=["sim", "rpyc"])
def backend(request):
    if request.param == "sim":
        sim = SimTerminal(symbols=list(default_symbols()), clock=time.time, **SIM)
        yield sim, None
        return
    bridge = RpycBridge(**SIM)
    try:
        yield CountingRpyc("127.0.0.1", bridge.port, request_timeout=30.0), bridge
    finally:
        bridge.stop()


def connected(module) -> TerminalApi:
    api = TerminalApi(module)
    api.initialize(path=None, login=None, password=None, server=None, timeout_ms=5000)
    for s in SYMBOLS:
        api.symbol_select(s, True)
    return api


def history(api: TerminalApi, symbol: str, after: tuple[int, int], upto_msc: int) -> list[tuple]:
    """The terminal's own ticks after cursor ``after`` = (last_msc, seen), up to ``upto_msc``."""
    arr = api.copy_ticks_range(symbol, after[0] // 1000, upto_msc // 1000 + 1, -1)
    rows = [(int(m), float(b), float(a)) for m, b, a in zip(arr["time_msc"], arr["bid"], arr["ask"])
            if m <= upto_msc]
    skip = next(i for i, r in enumerate(rows) if r[0] >= after[0]) + after[1]
    return rows[skip:]


def per_symbol(symbols, value) -> dict[str, tuple]:
    arr, rows = value
    out, pos = {}, 0
    for i, n, last_msc, seen, is_start in rows:
        got = arr[pos:pos + n] if n else arr[:0] if arr is not None else []
        pos += n
        out[symbols[i]] = ([(int(m), float(b), float(a)) for m, b, a in
                            zip(got["time_msc"], got["bid"], got["ask"])] if n else [], (last_msc, seen), is_start)
    return out


def test_a_cycle_returns_exactly_the_ticks_after_each_cursor(backend):
    api = connected(backend[0])
    # Cursors 3 s back: at the first tick of each symbol's millisecond there, one of it seen.
    cursors = []
    for s in SYMBOLS:
        now_msc = api.symbol_info_tick(s).time_msc
        back = api.copy_ticks_range(s, now_msc // 1000 - 4, now_msc // 1000 - 3, -1)
        cursors.append((int(back["time_msc"][-1]), 1, False))
    for moved in (False, True):  # with the change check, and fetched at once
        plan_cursors = tuple((c[0], c[1], moved) for c in cursors)
        steps, seconds = api.cycle((("ticks", (SYMBOLS, plan_cursors, 10_000)), ("rates", ())))
        (value, errors), (rates, rate_errors) = steps
        assert errors == [] and rate_errors == [] and rates == (None, ())
        got = per_symbol(SYMBOLS, value)
        assert set(got) == set(SYMBOLS)
        for s, c in zip(SYMBOLS, cursors):
            ticks, cursor, is_start = got[s]
            assert not is_start and len(ticks) > 10
            assert ticks == history(api, s, c[:2], cursor[0])
            assert cursor[0] == ticks[-1][0]
        assert seconds["copy_ticks_from"] > 0
    # From the cursors it returned: nothing twice.
    after = tuple((got[s][1][0], got[s][1][1], True) for s in SYMBOLS)
    (value, _), _ = api.cycle((("ticks", (SYMBOLS, after, 10_000)), ("rates", ())))[0]
    for s, (ticks, _, _) in per_symbol(SYMBOLS, value).items():
        assert not ticks or ticks[0][0] >= got[s][1][0]


def test_start_cursors_and_bars_come_back_as_asked(backend):
    api = connected(backend[0])
    plan = (("ticks", (SYMBOLS, (None,) * len(SYMBOLS), 10_000)),
            ("rates", (("EURUSD", TIMEFRAMES["M1"], 3), ("#AAPL", TIMEFRAMES["H1"], 2))))
    (value, errors), ((arr, counts), rate_errors) = api.cycle(plan)[0]
    assert errors == [] and rate_errors == []
    starts = per_symbol(SYMBOLS, value)
    assert all(is_start and ticks == [] for ticks, _, is_start in starts.values())
    assert counts == (3, 2)
    m1, h1 = arr[:3], arr[3:]
    # The newest bars, oldest first: the forming one last (a minute may have ended since).
    newest = int(api.copy_rates_from_pos("EURUSD", TIMEFRAMES["M1"], 0, 1)["time"][0])
    assert list(np.diff(m1["time"])) == [60, 60] and newest - int(m1["time"][-1]) in (0, 60)
    ref = api.copy_rates_from_pos("#AAPL", TIMEFRAMES["H1"], 0, 2)
    assert list(h1["time"]) == list(ref["time"]) or int(h1["time"][-1]) == int(ref["time"][0])
    assert np.array_equal(h1[:1], ref[:1]) or int(h1["time"][-1]) == int(ref["time"][0])  # a closed bar is final


def test_a_refused_symbol_is_its_own_error_and_the_others_still_come(backend):
    api = connected(backend[0])
    symbols = ("EURUSD", "NOSUCH", "XAUUSD")
    start = tuple(None for _ in symbols)
    plan = (("ticks", (symbols, start, 10_000)), ("rates", (("NOSUCH", TIMEFRAMES["M1"], 2),)))
    (value, errors), ((_, counts), rate_errors) = api.cycle(plan)[0]
    assert [(i, f, type(e)) for i, f, e in errors] == [(1, "symbol_info_tick", MT5ValidationError)]
    assert "NOSUCH" in errors[0][2].message
    assert set(per_symbol(symbols, value)) == {"EURUSD", "XAUUSD"}
    assert counts == (0,) and [(i, type(e)) for i, _, e in rate_errors] == [(0, MT5ValidationError)]


def test_a_lost_bridge_fails_the_cycle_as_a_connection_error():
    bridge = RpycBridge(**SIM)
    api = connected(RpycTerminal("127.0.0.1", bridge.port, request_timeout=30.0))
    api.cycle((("ticks", (SYMBOLS, (None,) * len(SYMBOLS), 10_000)), ("rates", ())))
    bridge.stop()
    with pytest.raises(MT5ConnectionError, match="poll cycle"):
        api.cycle((("ticks", (SYMBOLS, (None,) * len(SYMBOLS), 10_000)), ("rates", ())))


class CountingLink:
    """A loopback TCP proxy for one connection, counting the bytes the far side sends back."""

    def __init__(self, target_port: int) -> None:
        self.received = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._serve, args=(target_port,), daemon=True).start()

    def _serve(self, target_port: int) -> None:
        client, _ = self._listener.accept()
        self._listener.close()
        server = socket.create_connection(("127.0.0.1", target_port))
        threading.Thread(target=self._pipe, args=(client, server, False), daemon=True).start()
        self._pipe(server, client, True)

    def _pipe(self, src, dst, count: bool) -> None:
        with contextlib.suppress(OSError):  # the other direction ended first and closed both
            while data := src.recv(65536):
                if count:
                    self.received += len(data)  # before it is passed on: counted once the client has it
                dst.sendall(data)
        src.close()
        dst.close()


def test_the_bridge_sends_its_answers_uncompressed():
    """rpyc zlib-compresses every frame over 3 kB, both ways; the bridge's answers (a poll
    cycle's ticks, every history page) go in frames of mt5d's own, as they are: on loopback,
    compression is CPU on both sides for no bytes saved."""
    bridge = RpycBridge(**SIM)
    try:
        link = CountingLink(bridge.port)
        api = connected(RpycTerminal("127.0.0.1", link.port, request_timeout=30.0))
        now_s = int(api.symbol_info_tick("EURUSD").time)
        before = link.received
        arr = api.copy_ticks_range("EURUSD", now_s - 600, now_s, -1)
        assert len(arr) > 1000  # ~50 ticks/s: compressible, far over the threshold
        assert link.received - before >= arr.nbytes
    finally:
        bridge.stop()


def test_books_come_back_as_plain_entries_and_a_symbol_without_depth_is_refused(backend):
    api = connected(backend[0])
    api.market_book_add("XAUUSD")
    symbols = ("XAUUSD", "EURUSD.m")  # EURUSD.m has no depth of market
    _, _, (rows, errors) = api.cycle((("ticks", ((), (), 10_000)), ("rates", ()), ("books", symbols)))[0]
    assert [(i, f, type(e)) for i, f, e in errors] == [(1, "market_book_get", MT5ValidationError)]
    [(i, msc, entries)] = rows
    assert i == 0 and msc <= api.symbol_info_tick("XAUUSD").time_msc
    assert entries and all(type(e) is tuple and len(e) == 4 for e in entries)
    assert {e[0] for e in entries} <= {1, 2, 3, 4}  # BOOK_TYPE_SELL, _BUY, _SELL_MARKET, _BUY_MARKET


def held(p) -> tuple:
    """A position without what moves with the price."""
    return tuple(v for f, v in p._asdict().items() if f not in ("price_current", "profit", "swap"))


def test_the_account_is_read_in_the_same_hop_and_comes_back_as_the_terminals_structures(backend):
    from mt5d.actors.account import account_read

    module = backend[0]
    api = connected(module)
    for side in (0, 1):
        assert module.order_send({"action": 1, "symbol": "EURUSD", "type": side, "volume": 0.1}).retcode == 10009
    now_s = api.symbol_info_tick("EURUSD").time  # broker seconds
    plan = (("ticks", (SYMBOLS, (None,) * len(SYMBOLS), 10_000)), ("rates", (("EURUSD", TIMEFRAMES["M1"], 2),)),
            ("books", ()), ("account", (now_s, None, -1, None, (), True, True)))
    trips = getattr(module, "trips", 0)
    steps, _ = api.cycle(plan)
    if isinstance(module, CountingRpyc):
        assert module.trips == trips + 1  # ticks, bars and the account: one round trip
    value, errors = steps[3]
    assert errors == []
    read = account_read(value)
    positions = api.positions_get()
    assert [held(p) for p in read.positions] == [held(p) for p in positions]
    assert [p._fields for p in read.positions] == [p._fields for p in positions]
    assert type(read.positions[0]).__name__ == "TradePosition"
    assert read.positions_total == 2 and read.orders == () and read.new_deals == []  # the first start: a baseline
    info = api.account_info()
    assert (read.account.login, read.account.balance, read.account.leverage) == (info.login, info.balance,
                                                                                 info.leverage)
    newest = api.history_deals_get(now_s - 86400, now_s + 86400)[-1]
    assert read.first_cursor == (newest.time_msc, newest.ticket)
    # A deal after the cursor comes back whole, with its order from the history.
    assert module.order_send({"action": 1, "symbol": "EURUSD", "type": 1, "volume": 0.1,
                              "position": positions[0].ticket}).retcode == 10009
    args = (now_s, read.first_cursor, read.deals_in_window, (2, 0), (), False, False)
    (value, errors), = api.cycle((("account", args),))[0]
    read = account_read(value)
    closing = api.history_deals_get(now_s - 86400, now_s + 86400)[-1]
    assert errors == [] and read.new_deals == [closing]
    assert [held(p) for p in read.positions] == [held(p) for p in api.positions_get()]
    assert read.history[closing.order] == api.history_orders_get(ticket=closing.order)[0]
