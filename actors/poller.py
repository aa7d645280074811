"""The poller: every tick exactly once, in order, and every bar at its close.

One terminal-thread hop per cycle covers every symbol: a cheap change check
(``symbol_info_tick``), then ``copy_ticks_from`` from the cursor's second for
the symbols that moved, then the bars of the timeframes whose bar may have
closed. The cycle's result goes to the publisher as one batch. Cursors only
advance when the batch is handed over; if NATS is down the publisher stops
taking batches, this send blocks, and the terminal's history is the buffer.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import anyio
import numpy as np
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectSendStream

from mt5d.actors.books import Books, read_books
from mt5d.actors.logic.bars import CandleTracker, bar_end, bar_start
from mt5d.actors.logic.history import candles_from_rates, ticks_from_array
from mt5d.actors.connection import Connection
from mt5d.actors.logic.cursor import TickCursor, new_ticks
from mt5d.actors.messages import Batch
from mt5d.actors.prices import PriceCache
from mt5d.actors.logic.utc import UtcOffset
from mt5d.daemon.telemetry import Telemetry
from mt5d.daemon.terminal.api import TerminalApi
from mt5d.daemon.terminal.mt5_constants import COPY_TICKS_ALL, RATE_DTYPE, TIMEFRAMES
from mt5d.errors import MT5Error, MT5ValidationError

__all__ = ["Poller", "collect"]

log = logging.getLogger("mt5d.poller")

FETCH_COUNT = 10_000  # ticks per copy_ticks_from; a full fetch is followed by another
IDLE_AFTER = 1.0  # seconds without a tick before polling at the idle interval


class Poller:
    def __init__(
        self,
        *,
        conn: Connection,
        timeframes: tuple[str, ...],
        out: MemoryObjectSendStream[Batch],
        prices: PriceCache,
        utc: UtcOffset,
        poll_interval: float,
        idle_interval: float,
        wall_clock: Callable[[], float] = time.time,
        forming_interval: float = 0.0,
        telemetry: Telemetry | None = None,
        resume: tuple[dict, dict] = ({}, {}),
        books: Books | None = None,
        account=None,  # actors.account.AccountTracker: positions/orders/deals/account in the same hop
    ) -> None:
        self._books = books  # depth of market: read in the same hop (actors/books.py)
        self._account = account
        self._tel = telemetry or Telemetry.disabled()
        self._conn = conn
        self._timeframes = timeframes
        self._out = out
        self._prices = prices
        self.utc = utc
        self._poll = poll_interval
        self._idle = idle_interval
        self._wall = wall_clock
        self._forming_interval = forming_interval
        # Survive actor restarts and reconnects: capture resumes from here.
        # (from the capture state of a previous run, if any)
        self.cursors: dict[str, TickCursor] = dict(resume[0])
        self._resume_bars: dict[tuple[str, str], int] = dict(resume[1])
        self.trackers: dict[tuple[str, str], CandleTracker] = {}
        self._newest_s: dict[str, int] = {}
        self._forming_at: dict[tuple[str, str], float] = {}
        self._refused: set[str] = set()
        self.last_tick_at: float | None = None  # anyio time of the last new tick
        self.cycles = 0
        self.ticks_out = 0

    async def run(self, *, task_status: TaskStatus = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        quiet_since = anyio.current_time()
        while True:
            started = anyio.current_time()
            t0 = time.perf_counter()
            try:
                batch = await self.cycle()
            except MT5Error as err:
                # The connection actor logged and counted it; the breaker decides when to retry.
                log.debug("poll cycle failed", extra={"error": type(err).__name__, "detail": err.message})
                batch = None
            else:
                self._tel.poll_cycle(time.perf_counter() - t0)
            if batch is not None and (batch.ticks or batch.candles or batch.forming or batch.books or batch.account):
                await self._out.send(batch)
            if batch is not None and batch.ticks:
                quiet_since = anyio.current_time()
                self.last_tick_at = quiet_since
            interval = self._poll if anyio.current_time() - quiet_since < IDLE_AFTER else self._idle
            await anyio.sleep_until(started + interval)

    async def cycle(self) -> Batch:
        """One hop to the terminal for every symbol; returns what is new."""
        symbols = self._conn.status().selected
        cursors = {s: self.cursors.get(s) for s in symbols}
        wall = self._wall()
        now_broker_s = int(wall + self.utc.offset_ms / 1000) if self.utc.known else None
        # Bars need a broker clock: with no tick seen yet (auto offset unknown) there are none to close.
        due = [] if now_broker_s is None else [
            (key, tr) for key, tr in self.trackers.items()
            if key[0] in cursors and tr.due(self._newest_s.get(key[0], 0), now_broker_s)
        ]
        # A symbol's bars are tracked from its first tick on (no tick, no bar).
        new_trackers = [(s, tf) for s in symbols for tf in self._timeframes
                        if (s, tf) not in self.trackers and self._newest_s.get(s)]
        forming = self._forming_due(symbols) if self._forming_interval else []
        book_symbols = self._books.due(self._conn.status().books, anyio.current_time()) if self._books else []
        # Account tracking needs UTC for its times: it starts once the broker offset is known.
        account = (self._account.prepare(anyio.current_time(), now_broker_s)
                   if self._account is not None and now_broker_s is not None else None)

        def hop(api: TerminalApi):
            return (collect(api, cursors, due, new_trackers, forming, now_broker_s),
                    read_books(api, book_symbols) if book_symbols else None,
                    account(api) if account is not None else None)

        (ticks_by_symbol, bars, new_bars, forming_bars, bad), book_reads, account_read = await self._conn.run_call(hop)
        batch = self._absorb(ticks_by_symbol, bars, new_bars, forming_bars, bad, wall)
        if book_reads:
            batch.books = self._books.absorb(book_reads, self.utc)
        if account_read is not None:
            batch.account = self._account.absorb(account_read, anyio.current_time(), int(wall * 1000),
                                                 self.utc.offset_ms)
            batch.deal_cursor = self._account.deal_cursor if any(k == "deal" for k, _, _ in batch.account) else None
        return batch

    def _forming_due(self, symbols) -> list[tuple[str, str]]:
        now = anyio.current_time()
        due = []
        for key in self.trackers:
            if key[0] in symbols and now - self._forming_at.get(key, 0.0) >= self._forming_interval:
                self._forming_at[key] = now
                due.append(key)
        return due

    def _absorb(self, ticks_by_symbol, bars, new_bars, forming_bars, bad, wall) -> Batch:
        batch = Batch()
        wall_ms = int(wall * 1000)
        newest_fresh = 0
        for symbol, (fresh, cursor, is_start) in ticks_by_symbol.items():
            if is_start or not len(fresh):
                continue
            newest_fresh = max(newest_fresh, int(fresh["time_msc"][-1]))
        if newest_fresh and self.utc.observe(newest_fresh, wall_ms):
            log.info("broker clock offset", extra={"offset_seconds": self.utc.offset_ms / 1000})
        off = self.utc.offset_ms
        out = batch.ticks
        for symbol, (fresh, cursor, is_start) in ticks_by_symbol.items():
            before = self.cursors.get(symbol)
            self.cursors[symbol] = cursor
            self._newest_s[symbol] = cursor.last_msc // 1000
            if len(fresh):
                batch.cursors[symbol] = cursor
            if is_start:
                if not self.utc.known and cursor.last_msc:
                    self.utc.observe(cursor.last_msc, wall_ms)
                continue
            if not len(fresh):
                continue
            ticks, nan = ticks_from_array(symbol, fresh, before, off)
            if nan:
                log.error("terminal returned ticks with NaN prices; skipped",
                          extra={"symbol": symbol, "count": nan, "error": "MT5DataError"})
            if ticks:
                out.extend(ticks)
                self._prices.update(ticks[-1])
        now_broker_s = (wall_ms + off) // 1000
        for (symbol, tf), rates in new_bars.items():
            if len(rates) >= 2:
                last_closed, forming = int(rates["time"][-2]), int(rates["time"][-1])
            elif len(rates) == 1:
                last_closed, forming = int(rates["time"][-1]) - 1, int(rates["time"][-1])
            else:
                last_closed = forming = bar_start(tf, now_broker_s)
            resumed = self._resume_bars.pop((symbol, tf), None)
            if resumed is not None and resumed < last_closed:
                # Bars closed while mt5d was down: look at once, from where it stopped.
                last_closed, forming = resumed, resumed
            self.trackers[(symbol, tf)] = CandleTracker(tf, last_closed, bar_end(tf, forming))
        for (symbol, tf), rates in bars.items():
            tracker = self.trackers[(symbol, tf)]
            closed = tracker.closed(rates, now_broker_s)
            if len(closed):
                batch.candles.extend(candles_from_rates(symbol, tf, closed, off, True))
                batch.bars[(symbol, tf)] = tracker.last_closed
        for (symbol, tf), rates in forming_bars.items():
            batch.forming.extend(candles_from_rates(symbol, tf, rates, off, False))
        # Once per symbol, not once per cycle: a refused symbol stays refused for a while.
        refused = {symbol for symbol, _ in bad}
        for symbol, message in bad:
            if symbol not in self._refused:
                log.error("symbol refused by the terminal; the others keep streaming",
                          extra={"symbol": symbol, "detail": message})
        for symbol in self._refused - refused:
            log.info("symbol served again", extra={"symbol": symbol})
        self._refused = refused
        self.ticks_out += len(batch.ticks)
        self.cycles += 1
        return batch


def collect(api: TerminalApi, cursors, due, new_trackers, forming, now_broker_s):
    """Runs on the terminal thread: every terminal call of one cycle, batched per
    function (over the rpyc bridge a batch is one round trip)."""
    ticks: dict[str, tuple[np.ndarray, TickCursor, bool]] = {}
    bad: list[tuple[str, str]] = []

    def usable(symbol, result) -> bool:
        if isinstance(result, MT5ValidationError):
            bad.append((symbol, result.message))
            return False
        if isinstance(result, MT5Error):
            raise result  # the terminal itself failed: the whole cycle fails
        return True

    symbols = list(cursors)
    want = []  # symbols that moved (the cheap check), or start
    for symbol, latest in zip(symbols, api.batch("symbol_info_tick", [(s,) for s in symbols])):
        cursor = cursors[symbol]
        if usable(symbol, latest) and (cursor is None or latest.time_msc != cursor.last_msc):
            want.append((symbol, cursor, latest))
    fetched = api.batch("copy_ticks_from", [
        (s, c.from_second if c else latest.time_msc // 1000, FETCH_COUNT, COPY_TICKS_ALL) for s, c, latest in want])
    for (symbol, cursor, latest), arr in zip(want, fetched):
        if not usable(symbol, arr):
            continue
        if cursor is None:
            # Start: everything up to the newest tick counts as already published.
            _, start = new_ticks(arr, TickCursor(0, 0))
            ticks[symbol] = (arr[:0], start if len(arr) else TickCursor(latest.time_msc, 1), True)
            continue
        fresh, cursor = new_ticks(arr, cursor)
        if len(arr) >= FETCH_COUNT:  # a full fetch: there is more (rare; one symbol at a time)
            more, cursor = _fetch_since(api, symbol, cursor)
            fresh = np.concatenate([fresh, more]) if len(more) else fresh
        ticks[symbol] = (fresh, cursor, False)

    requests = ([("due", key, (tracker.fetch_count(now_broker_s) if now_broker_s else 2)) for key, tracker in due]
                + [("new", key, 2) for key in new_trackers] + [("forming", key, 1) for key in forming])
    results = api.batch("copy_rates_from_pos",
                        [(s, TIMEFRAMES[tf], 0, count) for _, (s, tf), count in requests], args_fail=True)
    bars, new_bars, forming_bars = {}, {}, {}
    for (kind, key, _), rates in zip(requests, results):
        ok = not isinstance(rates, MT5ValidationError)
        if not ok and kind == "forming":
            continue
        if isinstance(rates, MT5Error) and ok:
            raise rates
        {"due": bars, "new": new_bars, "forming": forming_bars}[kind][key] = rates if ok else _no_rates()
    return ticks, bars, new_bars, forming_bars, bad


def _no_rates() -> np.ndarray:
    return np.empty(0, dtype=RATE_DTYPE)


def _fetch_since(api: TerminalApi, symbol: str, cursor: TickCursor) -> tuple[np.ndarray, TickCursor]:
    """Every tick after ``cursor``; when a fetch returns its full count, fetch on."""
    chunks = []
    frm = cursor.from_second
    while True:
        arr = api.copy_ticks_from(symbol, frm, FETCH_COUNT, COPY_TICKS_ALL)
        fresh, cursor = new_ticks(arr, cursor)
        if len(fresh):
            chunks.append(fresh)
        if len(arr) < FETCH_COUNT:
            break
        if cursor.from_second == frm:
            # One second holds more than a full fetch: take that second whole, then go on.
            arr = api.copy_ticks_range(symbol, frm, frm + 1, COPY_TICKS_ALL)
            fresh, cursor = new_ticks(arr, cursor)
            if len(fresh):
                chunks.append(fresh)
            frm += 1
        else:
            frm = cursor.from_second
    if not chunks:
        return arr[:0], cursor
    return (chunks[0] if len(chunks) == 1 else np.concatenate(chunks)), cursor
