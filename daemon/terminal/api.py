"""The terminal boundary: the one place raw MT5 results become typed errors.

``TerminalApi`` wraps any object with the MetaTrader5 function set (the
native package, an rpyc bridge's remote module, or the sim) and runs on the
terminal thread only. A ``None``/``False`` result is read together with
``last_error()`` right away, on the same thread, and translated once.
Nothing above this module sees raw codes or ``None``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from mt5d.daemon.terminal import hop
from mt5d.daemon.terminal.hop import RATE_FIELDS, TICK_FIELDS
from mt5d.errors import MT5DataError, MT5Error, error_for_code

__all__ = ["TerminalApi", "translate_error", "checked_book"]


def translate_error(code: int, description: str, what: str, *, args_fail: bool = False) -> MT5Error:
    """Map an MT5 ``last_error()`` pair to the error family.

    The message names the operation and the terminal's own short description
    (e.g. "IPC timeout"), which carries no credentials; arguments stay out.
    ``args_fail``: for history reads and symbol selection the terminal answers
    a request it cannot serve (no such bars, unknown symbol) with a generic
    -1; that is the caller's mistake, not a terminal failure.
    """
    if code == -6:  # the broker's own wording may echo the login: say it our way
        description = "authorization refused by the broker"
    return error_for_code(code, f"{what} failed: {description} ({code})", args_fail=args_fail)


def _as_int(value: Any) -> int:
    return int(value.timestamp()) if hasattr(value, "timestamp") else int(value)


class TerminalApi:
    """Typed calls on one MT5 module; every method raises an ``MT5Error`` on failure."""

    def __init__(self, module: Any, *, copy_result=None) -> None:
        self._mt5 = module
        # rpyc: turn a remote result into a local one in one round trip.
        self._copy = copy_result or (lambda value: value)

    def _check(self, result: Any, what: str, *, args_fail: bool = False) -> Any:
        if result is None or result is False:
            code, description = self._mt5.last_error()
            raise translate_error(int(code), str(description), what, args_fail=args_fail)
        return self._copy(result)

    def cycle(self, plan) -> tuple[list[tuple[Any, list[tuple[int, str, MT5Error]]]], dict[str, float]]:
        """One poll cycle's terminal calls (``hop.run``, one plan step per collector).

        Over the rpyc bridge the plan runs inside the bridge, one round trip;
        other backends run it here. Returns one ``(value, [(index, function,
        error)])`` per step, every failure translated, and the seconds spent
        in each terminal function.
        """
        remote = getattr(self._mt5, "mt5d_cycle", None)
        if remote is None:
            steps, seconds = hop.run(self._mt5, plan)
        else:
            result = remote(plan)
            if result is None:
                code, description = self._mt5.last_error()
                raise translate_error(int(code), str(description), "poll cycle")
            steps, seconds = result
        out = []
        for value, errors in steps:
            translated = []
            for index, symbol, function, code, description in errors:
                what = f"{function}({symbol})"
                if code is None:
                    err: MT5Error = MT5DataError(f"{what}: {description}", 0)
                else:
                    err = translate_error(int(code), str(description), what, args_fail=function in _ARGS_FAIL)
                translated.append((index, function, err))
            out.append((value, translated))
        return out, seconds

    # connection -------------------------------------------------------
    def initialize(self, *, path: str | None, login: int | None, password: str | None,
                   server: str | None, timeout_ms: int) -> None:
        kwargs: dict[str, Any] = {"timeout": timeout_ms}
        if login:
            kwargs.update(login=login, password=password or "", server=server or "")
        if path:
            self._check(self._mt5.initialize(path, **kwargs), "initialize")
        else:
            self._check(self._mt5.initialize(**kwargs), "initialize")

    def shutdown(self) -> None:
        self._mt5.shutdown()

    def terminal_info(self):
        return self._check(self._mt5.terminal_info(), "terminal_info")

    def account_info(self):
        return self._check(self._mt5.account_info(), "account_info")

    # symbols ----------------------------------------------------------
    def symbol_info(self, symbol: str):
        return self._check(self._mt5.symbol_info(symbol), f"symbol_info({symbol})")

    def symbol_select(self, symbol: str, enable: bool = True) -> None:
        self._check(self._mt5.symbol_select(symbol, enable), f"symbol_select({symbol})", args_fail=True)

    def symbol_info_tick(self, symbol: str):
        return self._check(self._mt5.symbol_info_tick(symbol), f"symbol_info_tick({symbol})")

    # depth of market ----------------------------------------------------
    def market_book_add(self, symbol: str) -> None:
        self._check(self._mt5.market_book_add(symbol), f"market_book_add({symbol})", args_fail=True)

    def market_book_get(self, symbol: str) -> tuple:
        book = self._check(self._mt5.market_book_get(symbol), f"market_book_get({symbol})", args_fail=True)
        return checked_book(book, symbol)

    def market_book_release(self, symbol: str) -> None:
        self._check(self._mt5.market_book_release(symbol), f"market_book_release({symbol})", args_fail=True)

    # history ----------------------------------------------------------
    def copy_ticks_from(self, symbol: str, from_sec: int, count: int, flags: int = -1) -> np.ndarray:
        arr = self._check(self._mt5.copy_ticks_from(symbol, _as_int(from_sec), count, flags),
                          f"copy_ticks_from({symbol})")
        return _checked_ticks(arr, symbol)

    def copy_ticks_range(self, symbol: str, from_sec: int, to_sec: int, flags: int = -1) -> np.ndarray:
        arr = self._check(self._mt5.copy_ticks_range(symbol, _as_int(from_sec), _as_int(to_sec), flags),
                          f"copy_ticks_range({symbol})")
        return _checked_ticks(arr, symbol)

    def copy_rates_from_pos(self, symbol: str, timeframe: int, pos: int, count: int) -> np.ndarray:
        arr = self._check(self._mt5.copy_rates_from_pos(symbol, timeframe, pos, count),
                          f"copy_rates_from_pos({symbol})", args_fail=True)
        return _checked_rates(arr, symbol)

    def copy_rates_from(self, symbol: str, timeframe: int, from_sec: int, count: int) -> np.ndarray:
        """``count`` bars opened at or before ``from_sec`` (broker seconds), oldest first."""
        arr = self._check(self._mt5.copy_rates_from(symbol, timeframe, _as_int(from_sec), count),
                          f"copy_rates_from({symbol})", args_fail=True)
        return _checked_rates(arr, symbol)

    def copy_rates_range(self, symbol: str, timeframe: int, from_sec: int, to_sec: int) -> np.ndarray:
        arr = self._check(self._mt5.copy_rates_range(symbol, timeframe, _as_int(from_sec), _as_int(to_sec)),
                          f"copy_rates_range({symbol})", args_fail=True)
        return _checked_rates(arr, symbol)

    # account ------------------------------------------------------------
    # An empty answer may come back as None with last_error() (1, 'Success')
    # from some terminal builds: that is "nothing", not a failure.
    def _listing(self, result: Any, what: str) -> tuple:
        if result is None:
            code, description = self._mt5.last_error()
            if int(code) == 1:
                return ()
            raise translate_error(int(code), str(description), what)
        return tuple(self._copy(result))

    def _count(self, result: Any, what: str) -> int:
        if result is None:
            code, description = self._mt5.last_error()
            raise translate_error(int(code), str(description), what)
        return int(self._copy(result))

    def positions_total(self) -> int:
        return self._count(self._mt5.positions_total(), "positions_total")

    def orders_total(self) -> int:
        return self._count(self._mt5.orders_total(), "orders_total")

    def positions_get(self, **filters: Any) -> tuple:
        return self._listing(self._mt5.positions_get(**filters), "positions_get")

    def orders_get(self, **filters: Any) -> tuple:
        return self._listing(self._mt5.orders_get(**filters), "orders_get")

    def history_deals_total(self, from_sec: int, to_sec: int) -> int:
        return self._count(self._mt5.history_deals_total(from_sec, to_sec), "history_deals_total")

    def history_deals_get(self, from_sec: int | None = None, to_sec: int | None = None, **filters: Any) -> tuple:
        args = () if from_sec is None else (from_sec, to_sec)
        return self._listing(self._mt5.history_deals_get(*args, **filters), "history_deals_get")

    def history_orders_get(self, from_sec: int | None = None, to_sec: int | None = None, **filters: Any) -> tuple:
        args = () if from_sec is None else (from_sec, to_sec)
        return self._listing(self._mt5.history_orders_get(*args, **filters), "history_orders_get")


# A refusal of these is the caller's mistake (no such bars, unknown symbol), see translate_error.
_ARGS_FAIL = frozenset({"copy_rates_from_pos", "copy_rates_from", "copy_rates_range", "symbol_select",
                        "market_book_add", "market_book_get", "market_book_release"})


def _checked_ticks(arr: Any, symbol: str) -> np.ndarray:
    # Prices are checked per new tick by whoever converts them (the poller
    # skips NaN ticks): re-read ticks would pay a numpy pass every cycle.
    if not isinstance(arr, np.ndarray) or arr.dtype.names != TICK_FIELDS:
        raise MT5DataError(f"ticks for {symbol}: unexpected result type", 0)
    return arr


def _checked_rates(arr: Any, symbol: str) -> np.ndarray:
    if not isinstance(arr, np.ndarray) or arr.dtype.names != RATE_FIELDS:
        raise MT5DataError(f"bars for {symbol}: unexpected result type", 0)
    if len(arr) and not math.isfinite(float(arr["close"][-1])):
        raise MT5DataError(f"bars for {symbol}: NaN prices", 0)
    return arr


def checked_book(book: Any, symbol: str) -> tuple:
    """A tuple of (type, price, volume, volume_dbl) entries with finite prices."""
    try:
        book = tuple(book)
        for entry in book:
            kind, price, _volume, volume_dbl = entry
            if not (math.isfinite(float(price)) and math.isfinite(float(volume_dbl))) or int(kind) not in (1, 2, 3, 4):
                raise ValueError
    except (TypeError, ValueError):
        raise MT5DataError(f"book for {symbol}: unexpected result", 0) from None
    return book

