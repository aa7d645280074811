"""One poll cycle's terminal calls, run next to the terminal: one hop for every collector.

This module runs where the terminal is: in mt5d on the terminal thread (native
package, sim), or inside the rpyc bridge, where mt5d sends its source (after
the cursor logic's) once at connect, so that a whole cycle is one round trip.
So it uses only the MetaTrader5 function set, numpy, the stdlib and
``new_ticks``, and returns plain data: failures as raw ``last_error()`` pairs
(the daemon translates them at its boundary, ``TerminalApi.cycle``), and only
what is new, as one numpy array per collector (pickled as its bytes).

A cycle is a plan, ``((collector, args), ...)``. The result is one
``(value, errors)`` per step, in plan order, and the seconds spent in each
terminal function; an error is ``(index, symbol, function, code, description)``
with ``code`` None for a result of the wrong type. A collector is a function
``(mt5, timed, args) -> (value, errors)`` in ``COLLECTORS`` (ticks, rates,
books, account): another kind of poll is one more entry here and one more step
in the poller's plan, in the same hop. Terminal structures (positions, deals,
the account) come back as tables ``(typename, fields, rows)``, so that no
MetaTrader5 type has to exist where they are unpickled (``namedtuples()``
turns them back).
"""

from __future__ import annotations

import time as _time

import numpy as _np

if "new_ticks" not in globals():  # inside the bridge the cursor module's source ran in this namespace first
    from mt5d.actors.logic.cursor import TickCursor, new_ticks

__all__ = ["COLLECTORS", "TICK_FIELDS", "RATE_FIELDS", "namedtuples", "run"]

TICK_FIELDS = ("time", "bid", "ask", "last", "volume", "time_msc", "flags", "volume_real")
RATE_FIELDS = ("time", "open", "high", "low", "close", "tick_volume", "spread", "real_volume")
_COPY_TICKS_ALL = -1


def run(mt5, plan) -> tuple[list, dict[str, float]]:
    seconds: dict[str, float] = {}

    def timed(function: str, s: float) -> None:
        seconds[function] = seconds.get(function, 0.0) + s

    return [COLLECTORS[name](mt5, timed, args) for name, args in plan], seconds


def _is(arr, fields) -> bool:
    return isinstance(arr, _np.ndarray) and arr.dtype.names == fields


def ticks(mt5, timed, args):
    """New ticks of every symbol that moved since its cursor.

    ``args``: (symbols, cursors, count), a cursor being ``(last_msc, seen,
    moved)`` (``moved``: the symbol had new ticks last cycle) or None (start:
    everything up to now counts as published). The cheap change check
    (``symbol_info_tick``) spares a ``copy_ticks_from`` for a symbol that did
    not move; a symbol that moved last cycle most likely moved again, so it is
    fetched without the check (the fetch and the cursor decide what is new).
    Value: (the new ticks of all symbols in one array or None, rows ``(index,
    count, last_msc, seen, is_start)`` for each symbol whose cursor moved, in
    symbol order; its ticks are the next ``count`` of the array).
    """
    symbols, cursors, count = args
    errors: list = []
    last_error = mt5.last_error
    info_tick = mt5.symbol_info_tick
    want = []
    t0 = _time.perf_counter()
    for i, c in enumerate(cursors):
        if c is not None and c[2]:
            want.append((i, 0))
            continue
        latest = info_tick(symbols[i])
        if latest is None:
            errors.append((i, symbols[i], "symbol_info_tick", *last_error()))
        elif c is None or latest.time_msc != c[0]:
            want.append((i, latest.time_msc))
    t1 = _time.perf_counter()
    timed("symbol_info_tick", t1 - t0)
    fetch = mt5.copy_ticks_from
    parts, rows = [], []
    for i, latest_msc in want:
        symbol, c = symbols[i], cursors[i]
        arr = fetch(symbol, c[0] // 1000 if c else latest_msc // 1000, count, _COPY_TICKS_ALL)
        if arr is None:
            errors.append((i, symbol, "copy_ticks_from", *last_error()))
            continue
        if not (isinstance(arr, _np.ndarray) and arr.dtype.names == TICK_FIELDS):  # (_is, inline: per symbol)
            errors.append((i, symbol, "copy_ticks_from", None, "unexpected result type"))
            continue
        if c is None:
            _, start = new_ticks(arr, TickCursor(0, 0))
            if not len(arr):
                start = TickCursor(latest_msc, 1)
            rows.append((i, 0, start.last_msc, start.seen, True))
            continue
        fresh, cursor = new_ticks(arr, c)
        if len(arr) >= count:  # a full fetch: there is more (rare; one symbol at a time)
            more, cursor, failed = _fetch_since(mt5, symbol, TickCursor(*cursor[:2]), count)
            if failed:
                errors.append((i, symbol, *failed))
                continue
            fresh = _joined([fresh, more])
        if len(fresh):
            parts.append(fresh)
            rows.append((i, len(fresh), cursor.last_msc, cursor.seen, False))
    timed("copy_ticks_from", _time.perf_counter() - t1)
    return (_joined(parts), rows), errors


def _fetch_since(mt5, symbol, cursor, count):
    """Every tick after ``cursor``: ``(array, cursor, None)``, or a failure
    ``(None, None, (function, code, description))``."""
    chunks = []
    frm = cursor.from_second
    while True:
        arr = mt5.copy_ticks_from(symbol, frm, count, _COPY_TICKS_ALL)
        if arr is None:
            return None, None, ("copy_ticks_from", *mt5.last_error())
        if not _is(arr, TICK_FIELDS):
            return None, None, ("copy_ticks_from", None, "unexpected result type")
        fresh, cursor = new_ticks(arr, cursor)
        if len(fresh):
            chunks.append(fresh)
        if len(arr) < count:
            break
        if cursor.from_second == frm:
            # One second holds more than a full fetch: take that second whole, then go on.
            whole = mt5.copy_ticks_range(symbol, frm, frm + 1, _COPY_TICKS_ALL)
            if whole is None:
                return None, None, ("copy_ticks_range", *mt5.last_error())
            if not _is(whole, TICK_FIELDS):
                return None, None, ("copy_ticks_range", None, "unexpected result type")
            fresh, cursor = new_ticks(whole, cursor)
            if len(fresh):
                chunks.append(fresh)
            frm += 1
        else:
            frm = cursor.from_second
    if not chunks:
        return arr[:0], cursor, None
    return _joined(chunks), cursor, None


def _joined(parts):
    """One array of ``parts`` (same dtype), or None. Joined as bytes: numpy
    concatenates a structured dtype field by field, ~20x slower."""
    if len(parts) <= 1:
        return parts[0] if parts else None
    return _np.frombuffer(b"".join(parts), dtype=parts[0].dtype)


def rates(mt5, timed, args):
    """The newest bars: ``args`` is ((symbol, timeframe, count), ...), each a
    ``copy_rates_from_pos(symbol, timeframe, 0, count)``. Value: (all bars in
    one array or None, the number of bars of each request)."""
    errors: list = []
    if not args:
        return (None, ()), errors
    fn, last_error = mt5.copy_rates_from_pos, mt5.last_error
    parts, counts = [], []
    t0 = _time.perf_counter()
    for i, (symbol, timeframe, count) in enumerate(args):
        arr = fn(symbol, timeframe, 0, count)
        if arr is None:
            errors.append((i, symbol, "copy_rates_from_pos", *last_error()))
            arr = None
        elif not _is(arr, RATE_FIELDS):
            errors.append((i, symbol, "copy_rates_from_pos", None, "unexpected result type"))
            arr = None
        counts.append(0 if arr is None else len(arr))
        if arr is not None and len(arr):
            parts.append(arr)
    timed("copy_rates_from_pos", _time.perf_counter() - t0)
    return (_joined(parts), tuple(counts)), errors


def books(mt5, timed, args):
    """Depth of market: ``args`` is (symbol, ...). Value: rows ``(index, time_msc,
    entries)``, the time being the symbol's newest quote just before the book was
    read (the book has none of its own), the entries plain ``(type, price,
    volume, volume_dbl)`` tuples."""
    errors: list = []
    if not args:
        return (), errors
    info_tick, get, last_error = mt5.symbol_info_tick, mt5.market_book_get, mt5.last_error
    quoted = []
    t0 = _time.perf_counter()
    for i, symbol in enumerate(args):
        tick = info_tick(symbol)
        if tick is None:
            errors.append((i, symbol, "symbol_info_tick", *last_error()))
        else:
            quoted.append((i, symbol, tick.time_msc))
    t1 = _time.perf_counter()
    timed("symbol_info_tick", t1 - t0)
    rows = []
    for i, symbol, msc in quoted:
        book = get(symbol)
        if book is None:
            errors.append((i, symbol, "market_book_get", *last_error()))
            continue
        try:
            rows.append((i, msc, tuple(tuple(entry) for entry in book)))
        except TypeError:
            errors.append((i, symbol, "market_book_get", None, "unexpected result type"))
    timed("market_book_get", _time.perf_counter() - t1)
    return tuple(rows), errors


HORIZON_S = 86400  # deal history reads end this far past the broker's now


class _Refused(Exception):
    """A terminal call of the account step failed: ``args`` is the error row."""


def _table(rows) -> tuple:
    """Terminal structures as ``(typename, fields, rows)`` (see ``namedtuples``)."""
    if not rows:
        return ("", (), ())
    return (type(rows[0]).__name__, tuple(rows[0]._fields), tuple(tuple(r) for r in rows))


def account(mt5, timed, args):
    """Positions, orders, deals and the account (``actors/account.py`` diffs them).

    ``args``: None (not this cycle) or (now_broker_s, deal cursor ``(time_msc,
    ticket)`` or None, deals counted in the cursor's window at the last read,
    (positions_total, orders_total) at the last read, tickets of the orders
    known open, want_details, want_account). Cheap counts every cycle; the
    listings only when a count changed or when asked. Value: a dict of
    AccountRead's fields, listings as tables.
    """
    if args is None:
        return None, []
    now_broker_s, cursor, window_seen, counts, known_orders, want_details, want_account = args
    clock = _time.perf_counter

    def call(function, *a, listing=False, **kw):
        """One terminal call, timed; a failure raises ``_Refused`` (None with code 1 is an
        empty listing: the terminal's "nothing found")."""
        t0 = clock()
        res = getattr(mt5, function)(*a, **kw)
        timed(function, clock() - t0)
        if res is None:
            code, description = mt5.last_error()
            if listing and int(code) == 1:
                return ()
            raise _Refused(function, code, description)
        return res

    try:
        pt, ot = int(call("positions_total")), int(call("orders_total"))
        read = {"positions_total": pt, "orders_total": ot, "new_deals": _table(()), "positions": None,
                "orders": None, "history": _table(()), "account": None, "first_cursor": None}
        horizon = now_broker_s + HORIZON_S
        if cursor is None:
            # First start ever: what the terminal has now counts as published; deals begin after it.
            recent = call("history_deals_get", now_broker_s - HORIZON_S, horizon, listing=True)
            cursor = max(((d.time_msc, d.ticket) for d in recent), default=((now_broker_s - HORIZON_S) * 1000, 0))
            read["first_cursor"] = cursor
        read["window_from"] = frm = cursor[0] // 1000
        n = read["deals_in_window"] = int(call("history_deals_total", frm, horizon))
        new_deals = []
        if n != window_seen:
            deals = call("history_deals_get", frm, horizon, listing=True)
            read["deals_in_window"] = len(deals)
            new_deals = sorted((d for d in deals if (d.time_msc, d.ticket) > cursor),
                               key=lambda d: (d.time_msc, d.ticket))
            read["new_deals"] = _table(new_deals)
        changed = bool(new_deals) or counts != (pt, ot)
        if changed or want_details:
            read["positions"] = _table(call("positions_get", listing=True))
            orders = call("orders_get", listing=True)
            read["orders"] = _table(orders)
            active = {o.ticket for o in orders}
            wanted = (set(known_orders) - active) | {d.order for d in new_deals if d.order and d.order not in active}
            history = []
            for ticket in sorted(wanted):
                hit = call("history_orders_get", ticket=ticket, listing=True)
                if hit:
                    history.append(hit[0])
            read["history"] = _table(history)
        if changed or want_account:
            read["account"] = _table((call("account_info"),))
    except _Refused as refused:
        return None, [(0, "", *refused.args)]
    return read, []


_TYPES: dict = {}


def namedtuples(table) -> tuple:
    """A table ``(typename, fields, rows)`` as namedtuples (one class per typename and fields)."""
    typename, fields, rows = table
    if not rows:
        return ()
    cls = _TYPES.get((typename, fields))
    if cls is None:
        from collections import namedtuple

        cls = _TYPES[(typename, fields)] = namedtuple(typename, fields)
    return tuple(cls(*r) for r in rows)


COLLECTORS = {"ticks": ticks, "rates": rates, "books": books, "account": account}
