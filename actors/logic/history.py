"""Terminal history as wire messages: the one tick, bar, position, order and deal conversion.

The poller (what streams) and the RPC service (what a requester pages through)
both turn the terminal's numpy arrays into ``Tick`` and ``Candle`` here, so a
tick fetched later is the tick the stream published: same UTC, same
``index_in_ms``, same NaN filter. ``fetch_ticks`` and ``fetch_bars`` read long
histories in short terminal hops (``HOP_SECONDS``), so the poll cycle, served
before history work, never waits behind more than one.
"""

from __future__ import annotations

import time
from typing import Any, Awaitable, Callable

import numpy as np

from mt5d.actors.logic.bars import bar_end
from mt5d.actors.logic.cursor import TickCursor, new_ticks
from mt5d.daemon.terminal.mt5_constants import COPY_TICKS_ALL, RATE_DTYPE, TICK_DTYPE
from mt5d.account import Deal, Order, Position
from mt5d.market import Candle, Tick

__all__ = ["ticks_from_array", "ticks_from_rows", "tick_rows", "has_nan", "candles_from_rates", "fetch_ticks",
           "fetch_bars", "HopSize", "timed", "HOP_SECONDS", "FIRST_FETCH", "position_from_mt5", "order_from_mt5", "deal_from_mt5"]

# A history hop on the terminal thread takes about this long (its size adapts to the terminal).
HOP_SECONDS = 0.01
# The first hops: a tick fetch of this many, a bar read of this many (short even where
# bars are costly: a long D1 history not read before).
FIRST_FETCH = 1024
FIRST_BARS = 32
MAX_TICKS_PER_HOP = 100_000
MAX_BARS_PER_HOP = 5000
# One terminal hop: run fn(api) on the terminal thread, its result back.
Hop = Callable[[Callable[[Any], Any]], Awaitable[Any]]


TICK_COLUMNS = ("bid", "ask", "last", "volume", "time_msc", "flags", "volume_real")


def tick_rows(arr: np.ndarray) -> list[tuple]:
    """``arr``'s ticks as plain rows of ``TICK_COLUMNS``: one ``tolist`` per column
    (a structured array's own ``tolist`` costs ~5x as much per row)."""
    return list(zip(*[arr[f].tolist() for f in TICK_COLUMNS]))


def ticks_from_array(symbol: str, fresh: np.ndarray, after: TickCursor | None,
                     off_ms: int) -> tuple[list[Tick], int]:
    """Ticks new since ``after`` (oldest first, contiguous) as wire ticks, and how many
    were left out for a NaN price (a result that makes no sense; never published).

    UTC is broker time minus the offset; ``index_in_ms`` goes on from the ticks of
    ``after``'s millisecond already published (``after.seen`` of them)."""
    return ticks_from_rows(symbol, tick_rows(fresh), after, off_ms)


def ticks_from_rows(symbol: str, rows: list, after: tuple[int, int] | None, off_ms: int,
                    check_nan: bool = True) -> tuple[list[Tick], int]:
    """``ticks_from_array`` of ``tick_rows(array)`` (made once for a cycle's joined array);
    ``after`` a ``TickCursor`` or a tuple that starts ``(last_msc, seen)``; ``check_nan``
    False: the caller knows that no price is NaN."""
    prev_msc, k = (after[0], after[1] - 1) if after else (-1, -1)
    out: list[Tick] = []
    append = out.append
    nan = 0
    for bid, ask, last, volume, msc, flags, volume_real in rows:
        k = k + 1 if msc == prev_msc else 0
        prev_msc = msc
        if check_nan and not (bid == bid and ask == ask and last == last):
            nan += 1
            continue
        append(Tick(symbol=symbol, time_msc_broker=msc, time_utc_ms=msc - off_ms, bid=bid, ask=ask,
                    last=last, volume=volume, volume_real=volume_real, flags=flags, index_in_ms=k))
    return out, nan


def has_nan(arr: np.ndarray) -> bool:
    """Whether any of ``arr``'s ticks has a NaN price (one pass for a whole cycle's ticks)."""
    return bool(np.isnan(arr["bid"]).any() or np.isnan(arr["ask"]).any() or np.isnan(arr["last"]).any())


def candles_from_rates(symbol: str, tf: str, rates: np.ndarray, off_ms: int, closed: bool = True) -> list[Candle]:
    """Terminal bars (oldest first) as wire candles, with UTC from the broker offset."""
    out = []
    for t, o, h, lo, c, tick_volume, spread, real_volume in rates.tolist():
        out.append(Candle(symbol=symbol, timeframe=tf, time_broker=t, time_utc_ms=t * 1000 - off_ms,
                          close_time_utc_ms=bar_end(tf, t) * 1000 - off_ms, open=o, high=h, low=lo, close=c,
                          tick_volume=tick_volume, spread=spread, real_volume=real_volume, closed=closed))
    return out


async def fetch_ticks(run: Hop, symbol: str, start_b: int, end_b: int, skip: int, limit: int,
                      now_broker_s: int) -> np.ndarray:
    """Ticks with broker ``time_msc`` in [start_b, end_b], oldest first, the first
    ``skip`` of those at ``start_b`` itself left out, at most ``limit``: the ticks new
    since ``TickCursor(start_b, skip)``. ``run(fn)`` runs ``fn(api)`` as one hop on
    the terminal thread.

    ``copy_ticks_from`` with a count (so the terminal never materialises more
    than we can use, whatever the range: a year of ticks is never loaded for
    one page), continued from a tick cursor (whole seconds in, several ticks per
    millisecond: the poller's de-duplication), one call per hop, the count
    growing while calls stay short (``HOP_SECONDS``): a short range costs one
    small call, a long one never holds the terminal for long."""
    if start_b > end_b or start_b // 1000 > now_broker_s + 86400:
        return np.empty(0, dtype=TICK_DTYPE)  # nothing can be there (and no absurd date reaches the terminal)
    cursor = TickCursor(start_b, skip)
    chunks: list[np.ndarray] = []
    got = 0
    size, pad = HopSize(FIRST_FETCH, MAX_TICKS_PER_HOP), 64
    while got < limit:
        want = limit - got
        # Beyond what is wanted: the ticks of the cursor's second up to the cursor come back too.
        n = min(size.n, want) + min(cursor.seen, 100_000) + pad
        frm = cursor.from_second
        arr, took = await run(timed(lambda api, frm=frm, n=n: api.copy_ticks_from(symbol, frm, n, COPY_TICKS_ALL)))
        size.after(n, took)
        fresh, _ = new_ticks(arr, cursor)
        k = int(np.searchsorted(fresh["time_msc"], end_b, side="right"))
        take = min(k, want)
        if take:
            # The cursor after the ticks taken: new_ticks on the fetch cut after them.
            kept, cursor = new_ticks(arr[: len(arr) - len(fresh) + take], cursor)
            chunks.append(kept)
            got += take
        if k < len(fresh) or len(arr) < n:
            break  # past the end of the range, or no newer ticks exist
        if not take:
            pad = 4 * n  # the cursor's second holds more than n ticks before the cursor: ask for more
    if not chunks:
        return np.empty(0, dtype=TICK_DTYPE)
    return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)


async def fetch_bars(run: Hop, symbol: str, code: int, to_s: int | None, count: int, from_s: int = 0) -> np.ndarray:
    """Up to ``count`` bars opened in [from_s, to_s] (``to_s`` None: up to the forming
    bar), oldest first, read newest first in hops of about ``HOP_SECONDS``: the
    newest hop fixes the snapshot (a bar that opens meanwhile is not in it), older
    ones go on back from the oldest bar read, by time (never by position, which a
    new bar shifts)."""
    chunks: list[np.ndarray] = []
    got, size = 0, HopSize(FIRST_BARS, MAX_BARS_PER_HOP, least=16)
    while got < count:
        k = min(size.n, count - got)
        if to_s is None:
            rates, took = await run(timed(lambda api, k=k: api.copy_rates_from_pos(symbol, code, 0, k)))
        else:
            rates, took = await run(timed(lambda api, k=k, to=to_s: api.copy_rates_from(symbol, code, to, k)))
            rates = rates[rates["time"] <= to_s]
        size.after(k, took)
        kept = rates[rates["time"] >= from_s] if from_s else rates
        if len(kept):
            chunks.append(kept)
            got += len(kept)
        if len(rates) < k or len(kept) < len(rates):
            break  # the start of history, or of the range
        to_s = int(rates["time"][0]) - 1
    if not chunks:
        return np.empty(0, dtype=RATE_DTYPE)
    chunks.reverse()
    return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)


def timed(fn: Callable[[Any], Any]) -> Callable[[Any], tuple[Any, float]]:
    """``fn`` and how long it took, measured where it runs (the terminal thread)."""
    def hop(api):
        t0 = time.perf_counter()
        result = fn(api)
        return result, time.perf_counter() - t0

    return hop


class HopSize:
    """How much the next hop asks for: grows while hops take under HOP_SECONDS (at
    most 8x at a time), shrinks when one takes longer."""

    def __init__(self, first: int, most: int, least: int = 64) -> None:
        self.n, self._most, self._least = first, most, least

    def after(self, asked: int, took: float) -> None:
        scaled = int(asked * HOP_SECONDS / max(took, 1e-4))
        self.n = max(self._least, min(self._most, 8 * asked, scaled))


# -- positions, orders, deals: the terminal's namedtuples as wire structs (stream and RPC) ---

def position_from_mt5(p, off_ms: int) -> Position:
    return Position(ticket=p.ticket, symbol=p.symbol, type=p.type, volume=p.volume, price_open=p.price_open,
                    sl=p.sl, tp=p.tp, price_current=p.price_current, swap=p.swap, profit=p.profit,
                    time_msc_broker=p.time_msc, time_utc_ms=p.time_msc - off_ms,
                    time_update_msc_broker=p.time_update_msc, time_update_utc_ms=p.time_update_msc - off_ms,
                    identifier=p.identifier, magic=p.magic, reason=p.reason, comment=p.comment,
                    external_id=p.external_id)


def order_from_mt5(o, off_ms: int) -> Order:
    done = o.time_done_msc
    return Order(ticket=o.ticket, symbol=o.symbol, type=o.type, state=o.state, volume_initial=o.volume_initial,
                 volume_current=o.volume_current, price_open=o.price_open, sl=o.sl, tp=o.tp,
                 price_current=o.price_current, price_stoplimit=o.price_stoplimit,
                 time_setup_msc_broker=o.time_setup_msc, time_setup_utc_ms=o.time_setup_msc - off_ms,
                 time_done_msc_broker=done, time_done_utc_ms=done - off_ms if done else 0,
                 time_expiration_broker=o.time_expiration, type_time=o.type_time, type_filling=o.type_filling,
                 magic=o.magic, position_id=o.position_id, position_by_id=o.position_by_id, reason=o.reason,
                 comment=o.comment, external_id=o.external_id)


def deal_from_mt5(d, off_ms: int, epoch: int = 0, seq: int = 0) -> Deal:
    return Deal(ticket=d.ticket, order=d.order, symbol=d.symbol, type=d.type, entry=d.entry, volume=d.volume,
                price=d.price, profit=d.profit, commission=d.commission, swap=d.swap, fee=d.fee,
                time_msc_broker=d.time_msc, time_utc_ms=d.time_msc - off_ms, position_id=d.position_id,
                magic=d.magic, reason=d.reason, comment=d.comment, external_id=d.external_id, epoch=epoch, seq=seq)
