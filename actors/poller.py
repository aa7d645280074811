"""The poller: every tick exactly once, in order, and every bar at its close.

One terminal hop per cycle covers every symbol: a cheap change check
(``symbol_info_tick``), then ``copy_ticks_from`` from the cursor's second for
the symbols that moved, then the bars of the timeframes whose bar may have
closed. The hop is a plan of collector steps (``mt5d.daemon.terminal.hop``)
that runs next to the terminal (inside the rpyc bridge: one round trip) and
returns only what is new. The cycle's result goes to the publisher as one batch. Cursors only
advance when the batch is handed over; if NATS is down the publisher stops
taking batches, this send blocks, and the terminal's history is the buffer.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Callable

import anyio
import numpy as np
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectSendStream

from mt5d.actors.books import Books, book_reads
from mt5d.actors.logic.bars import CandleTracker, bar_end, bar_start
from mt5d.actors.logic.history import candles_from_rates, has_nan, tick_rows, ticks_from_rows
from mt5d.actors.connection import Connection
from mt5d.actors.logic.cursor import TickCursor
from mt5d.actors.messages import Batch, send
from mt5d.actors.prices import PriceCache
from mt5d.actors.logic.utc import UtcOffset
from mt5d.daemon.telemetry import Telemetry
from mt5d.daemon.terminal.api import TerminalApi
from mt5d.daemon.terminal.mt5_constants import RATE_DTYPE, TIMEFRAMES
from mt5d.errors import MT5DataError, MT5Error, MT5ValidationError

__all__ = ["Poller"]

log = logging.getLogger("mt5d.poller")

FETCH_COUNT = 10_000  # ticks per copy_ticks_from; a full fetch is followed by another
IDLE_AFTER = 1.0  # seconds without a tick before polling at the idle interval
# With a precise start (``start_at``), the loop wakes this much before a cycle is due and the
# terminal thread sleeps the rest: a loop's timer fires 0-2 ms late, a different amount each
# time (epoll counts whole milliseconds), and that jitter stretched some periods to 12 ms.
EARLY = 0.002


def sleep_until_monotonic(deadline: float) -> None:
    """A precise start on the terminal thread (``time.sleep`` keeps to ~0.1 ms)."""
    rest = deadline - time.monotonic()
    if rest > 0:
        time.sleep(rest)


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
        gate=None,  # hot standby: async () -> (term, seed or None); returns while this daemon leads
        start_at: Callable[[float], None] | None = None,  # on the terminal thread: wait until (monotonic)
    ) -> None:
        self._start_at = start_at  # None (virtual time): the loop's own timer starts each cycle
        self._books = books  # depth of market: read in the same hop (actors/books.py)
        self._account = account
        self._gate = gate
        self.term = 0
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
        # The plan's per-symbol parts (see _plan_for), kept between cycles.
        self._symbols: tuple[str, ...] | None = None
        self._index: dict[str, int] = {}
        self._plan_cursors: list[tuple[int, int, bool] | None] = []  # (last_msc, seen, moved last cycle)
        self._moved = False
        self._horizon: tuple[int, int] | None = None  # the earliest next_check of all trackers (and with grace)
        self._newest_max = 0  # the newest tick's broker second, any symbol
        self._untracked: set[str] = set()
        self.last_tick_at: float | None = None  # anyio time of the last new tick
        self._started = 0.0  # perf_counter at the cycle's start (its terminal hop's, with start_at)
        self.cycles = 0
        self.ticks_out = 0

    async def run(self, *, task_status: TaskStatus = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        quiet_since = due = anyio.current_time()
        interval = self._poll
        while True:
            if self._gate is not None:
                term, seed = await self._gate()
                if seed is not None:  # a takeover: go on from what the stream holds
                    self.reseed(*seed)
                self.term = term
            # A fixed rate: each cycle is due one interval after the one before was due, not
            # after it started. Every wake-up is late (epoll counts whole milliseconds), and
            # timing from the start adds that to every period, and so to every tick's wait.
            if anyio.current_time() - due > interval:
                due = anyio.current_time()  # more than a period late (a stall, a gate): afresh
            try:
                batch = await self.cycle(due if self._start_at is not None else None)
            except MT5Error as err:
                # The connection actor logged and counted it; the breaker decides when to retry.
                log.debug("poll cycle failed", extra={"error": type(err).__name__, "detail": err.message})
                batch = None
            else:
                self._tel.poll_cycle(time.perf_counter() - self._started)
            # A batch with only cursors or bars still goes out: it is where capture
            # starts (a symbol's first cursor, a timeframe's first tracked bar), saved on confirm.
            if batch is not None and (batch.ticks or batch.candles or batch.forming or batch.books or batch.account
                                      or batch.cursors or batch.bars):
                batch.term = self.term
                await send(self._out, batch)
            if batch is not None and batch.ticks:
                quiet_since = anyio.current_time()
                self.last_tick_at = quiet_since
            interval = self._poll if anyio.current_time() - quiet_since < IDLE_AFTER else self._idle
            due += interval
            await anyio.sleep_until(due - EARLY if self._start_at is not None else due)

    def reseed(self, cursors: dict[str, TickCursor], bars: dict[tuple[str, str], int]) -> None:
        """Capture goes on from these cursors and last closed bars (the stream's, at a takeover);
        a symbol without a cursor starts from its newest tick."""
        self.cursors = dict(cursors)
        self._resume_bars = dict(bars)
        self.trackers.clear()
        self._newest_s.clear()
        # The plan caches the cursors: rebuild it from these, or the hop goes on from the old ones.
        self._symbols = None
        self._horizon = None

    async def cycle(self, start_at: float | None = None) -> Batch:
        """One hop to the terminal for every symbol, starting at ``start_at`` (the loop's
        time) if given; returns what is new."""
        self._started = time.perf_counter()
        # The loop's clock may not be time.monotonic (trio's is offset): convert here, on the loop.
        wake_at = None if start_at is None else time.monotonic() + start_at - anyio.current_time()
        symbols = self._conn.selected_symbols()
        if symbols is not self._symbols:
            self._plan_for(symbols)
        wall = self._wall()
        now_broker_s = int(wall + self.utc.offset_ms / 1000) if self.utc.known else None
        # Bars need a broker clock: with no tick seen yet (auto offset unknown) there are none to close.
        due = [] if now_broker_s is None or not self._bars_may_be_due(now_broker_s) else [
            (key, tr) for key, tr in self.trackers.items()
            if tr.due(self._newest_s.get(key[0], 0), now_broker_s) and key[0] in self._index]
        # A symbol's bars are tracked from its first tick on (no tick, no bar).
        new_trackers = [(s, tf) for s in symbols if s in self._untracked and self._newest_s.get(s)
                        for tf in self._timeframes if (s, tf) not in self.trackers] if self._untracked else []
        forming = self._forming_due(symbols) if self._forming_interval else []
        requests = ([("due", key, tr.fetch_count(now_broker_s) if now_broker_s else 2) for key, tr in due]
                    + [("new", key, 2) for key in new_trackers] + [("forming", key, 1) for key in forming])
        cursors = tuple(self._plan_cursors)
        # Moved last cycle: fetched without the change check (see hop.ticks); the flag lasts one cycle.
        self._plan_cursors = [c if c is None or not c[2] else (c[0], c[1], False) for c in cursors] \
            if self._moved else self._plan_cursors
        self._moved = False
        book_symbols = (self._books.due(self._conn.status().books, anyio.current_time())
                        if self._books is not None and self._books.symbols else [])
        # Account tracking needs UTC for its times: it starts once the broker offset is known.
        account = (self._account.prepare(anyio.current_time(), now_broker_s)
                   if self._account is not None and now_broker_s is not None else None)
        plan = (("ticks", (symbols, cursors, FETCH_COUNT)),
                ("rates", tuple((s, TIMEFRAMES[tf], count) for _, (s, tf), count in requests)),
                ("books", tuple(book_symbols)), ("account", account))

        def hop(api: TerminalApi):
            if wake_at is not None:
                self._start_at(wake_at)
                self._started = time.perf_counter()  # (the cycle's time leaves the wait out)
            steps = api.cycle(plan)[0]
            (ticks, tick_errors), (rates, rate_errors), (books, book_errors), (account_read, account_errors) = steps
            # Inside the hop, so that the connection actor counts a failed terminal as a failure.
            for _, _, err in (*tick_errors, *rate_errors, *book_errors):
                if not isinstance(err, MT5ValidationError):
                    raise err  # the terminal itself failed: the whole cycle fails
            for _, _, err in account_errors:
                raise err  # no symbol to blame: the account is the terminal's
            return (ticks, tick_errors, _bars(requests, rates, rate_errors),
                    book_reads(book_symbols, books, book_errors) if book_symbols else None, account_read)

        ticks, tick_errors, bars, reads, account_read = await self._conn.run_call(hop)
        batch = self._absorb(symbols, ticks, tick_errors, bars, wall)
        if reads:
            batch.books = self._books.absorb(reads, self.utc)
        if account_read is not None:
            batch.account = self._account.absorb(account_read, anyio.current_time(), int(wall * 1000),
                                                 self.utc.offset_ms)
            batch.deal_cursor = self._account.deal_cursor if any(k == "deal" for k, _, _ in batch.account) else None
        return batch

    def _bars_may_be_due(self, now_broker_s: int) -> bool:
        """Whether any tracker could be due, without asking each one every cycle."""
        if self._horizon is None:
            if not self.trackers:
                return False
            trs = self.trackers.values()
            self._horizon = (min(tr.next_check for tr in trs), min(tr.next_check + tr.grace for tr in trs))
        by_tick, by_clock = self._horizon
        return self._newest_max >= by_tick or now_broker_s >= by_clock

    def _plan_for(self, symbols: tuple[str, ...]) -> None:
        """The per-symbol parts of the plan, rebuilt only when the selection changes."""
        self._symbols = symbols
        self._index = {s: i for i, s in enumerate(symbols)}
        self._plan_cursors = [None if (c := self.cursors.get(s)) is None else (c.last_msc, c.seen, False)
                              for s in symbols]
        self._untracked = {s for s in symbols if any((s, tf) not in self.trackers for tf in self._timeframes)}

    def _forming_due(self, symbols) -> list[tuple[str, str]]:
        now = anyio.current_time()
        due = []
        for key in self.trackers:
            if key[0] in self._index and now - self._forming_at.get(key, 0.0) >= self._forming_interval:
                self._forming_at[key] = now
                due.append(key)
        return due

    def _absorb(self, symbols, ticks, tick_errors, bars, wall) -> Batch:
        batch = Batch()
        wall_ms = int(wall * 1000)
        bad = []
        arr, rows = ticks
        if arr is not None and self.utc.observe(int(arr["time_msc"].max()), wall_ms):
            log.info("broker clock offset", extra={"offset_seconds": self.utc.offset_ms / 1000})
        off = self.utc.offset_ms
        out = batch.ticks
        pos = 0
        fetched = tick_rows(arr) if arr is not None else []
        check_nan = arr is not None and has_nan(arr)
        # (locals: this runs for every symbol that moved, every cycle)
        cursors, plan, newest_s, saved, newest = self.cursors, self._plan_cursors, self._newest_s, batch.cursors, {}
        for i, n, last_msc, seen, is_start in rows:
            symbol = symbols[i]
            before = plan[i]
            cursors[symbol] = saved[symbol] = TickCursor(last_msc, seen)  # (a start's: where capture starts)
            plan[i] = (last_msc, seen, not is_start)
            newest_s[symbol] = last_msc // 1000
            if is_start:
                if not self.utc.known and last_msc:
                    self.utc.observe(last_msc, wall_ms)
                continue
            fresh_ticks, nan = ticks_from_rows(symbol, fetched[pos:pos + n], before, off, check_nan)
            pos += n
            if nan:
                log.error("terminal returned ticks with NaN prices; skipped",
                          extra={"symbol": symbol, "count": nan, "error": "MT5DataError"})
            if fresh_ticks:
                out += fresh_ticks
                newest[symbol] = fresh_ticks[-1]
        if rows:
            self._moved = True
            self._newest_max = max(self._newest_max, max(r[2] for r in rows) // 1000)
        if newest:
            self._prices.update_all(newest.values())
        bad.extend((symbols[i], err.message) for i, _, err in tick_errors)
        now_broker_s = (wall_ms + off) // 1000
        if bars:
            self._horizon = None  # trackers moved on
        for kind, (symbol, tf), got in bars:
            if kind == "due":
                tracker = self.trackers[(symbol, tf)]
                closed = tracker.closed(got, now_broker_s)
                if len(closed):
                    batch.candles.extend(candles_from_rates(symbol, tf, closed, off, True))
                    batch.bars[(symbol, tf)] = tracker.last_closed
            elif kind == "new":
                # Recorded from the moment tracking starts, not at the first publish: a bar
                # that closes while mt5d is down is then published by the next start.
                batch.bars[(symbol, tf)] = self._track(symbol, tf, got, now_broker_s)
            else:
                batch.forming.extend(candles_from_rates(symbol, tf, got, off, False))
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

    def _track(self, symbol: str, tf: str, rates: np.ndarray, now_broker_s: int) -> int:
        """Start tracking a symbol's bars from what the terminal has (or from a previous run);
        the open time of the last bar counted as published."""
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
        if all((symbol, t) in self.trackers for t in self._timeframes):
            self._untracked.discard(symbol)
        return last_closed


def _bars(requests, rates, errors) -> list[tuple[str, tuple[str, str], np.ndarray]]:
    """Each bar request's own bars, ``(kind, (symbol, timeframe), rates)``; a refused
    request has none (a refused forming bar is left out)."""
    failed = {j for j, _, _ in errors}
    out, pos = [], 0
    arr, counts = rates
    for j, ((kind, key, _), n) in enumerate(zip(requests, counts)):
        got = arr[pos:pos + n] if n else _NO_RATES
        pos += n
        if j in failed:
            if kind == "forming":
                continue
            got = _NO_RATES  # no bars (yet): the tracker starts from the clock
        elif n and not math.isfinite(got["close"][-1]):
            raise MT5DataError(f"bars for {key[0]}: NaN prices", 0)
        out.append((kind, key, got))
    return out


_NO_RATES = np.empty(0, dtype=RATE_DTYPE)
