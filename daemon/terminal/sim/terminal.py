"""SimTerminal: the MetaTrader5 function set over the simulated market.

See the package docstring (``mt5d.daemon.terminal.sim``) for the error-code and
fault tables.
"""

from __future__ import annotations

import calendar
import datetime as _dt
import math
import threading
import time
from typing import Any, Callable, Sequence

import numpy as np

from mt5d.daemon.terminal import mt5_constants as C
from mt5d.daemon.terminal.sim._hash import mix
from mt5d.daemon.terminal.sim.book import book_for
from mt5d.daemon.terminal.sim.specs import class_spec
from mt5d.daemon.terminal.sim.clock import BrokerClock
from mt5d.daemon.terminal.sim.faults import Fault, as_fault
from mt5d.daemon.terminal.groups import filter_group as _filter_group
from mt5d.daemon.terminal.sim.market import (
    DAY_MS,
    MAX_TICKS_PER_REQUEST,
    HISTORY_START,
    HISTORY_START_DAY,
    Market,
    SymbolModel,
    bar_open,
    month_start,
    week_start,
)
from mt5d.daemon.terminal.sim.symbols import SimSymbol, default_symbols
from mt5d.daemon.terminal.sim.trading import ScriptedTrade, TradeArgError, Trading

__all__ = ["SimTerminal", "MAXBARS", "BUILD"]

MAXBARS = 100000
BUILD = 4755
BUILD_DATE = "14 Feb 2025"
COMPANY = "MT5Sim Ltd."

# (code, description) pairs, as the real package reports them.
OK = (C.RES_S_OK, C.ERROR_DESCRIPTIONS[C.RES_S_OK])
E_FAIL = (C.RES_E_FAIL, C.ERROR_DESCRIPTIONS[C.RES_E_FAIL])
E_PARAMS = (C.RES_E_INVALID_PARAMS, C.ERROR_DESCRIPTIONS[C.RES_E_INVALID_PARAMS])
E_ARGS = (C.RES_E_INVALID_PARAMS, "Invalid arguments")
E_MEMORY = (C.RES_E_NO_MEMORY, C.ERROR_DESCRIPTIONS[C.RES_E_NO_MEMORY])
E_NOT_FOUND = (C.RES_E_NOT_FOUND, C.ERROR_DESCRIPTIONS[C.RES_E_NOT_FOUND])
E_AUTH = (C.RES_E_AUTH_FAILED, C.ERROR_DESCRIPTIONS[C.RES_E_AUTH_FAILED])
E_UNSUPPORTED = (C.RES_E_UNSUPPORTED, C.ERROR_DESCRIPTIONS[C.RES_E_UNSUPPORTED])
E_SEND = (C.RES_E_INTERNAL_FAIL_SEND, C.ERROR_DESCRIPTIONS[C.RES_E_INTERNAL_FAIL_SEND])
E_RECV = (C.RES_E_INTERNAL_FAIL_RECEIVE, C.ERROR_DESCRIPTIONS[C.RES_E_INTERNAL_FAIL_RECEIVE])
E_INIT = (C.RES_E_INTERNAL_FAIL_INIT, C.ERROR_DESCRIPTIONS[C.RES_E_INTERNAL_FAIL_INIT])
E_NO_IPC = (C.RES_E_INTERNAL_FAIL_CONNECT, C.ERROR_DESCRIPTIONS[C.RES_E_INTERNAL_FAIL_CONNECT])
E_TIMEOUT = (C.RES_E_INTERNAL_FAIL_TIMEOUT, C.ERROR_DESCRIPTIONS[C.RES_E_INTERNAL_FAIL_TIMEOUT])

_ZERO_TICK = C.Tick(0, 0.0, 0.0, 0.0, 0, 0, 0, 0.0)
_USD_RATE = {"USD": 1.0, "EUR": 1.085, "GBP": 1.27, "JPY": 1 / 150.5, "CHF": 1 / 0.88, "CAD": 1 / 1.36,
             "AUD": 0.66, "NZD": 0.61, "XAU": 2350.0, "XAG": 28.5, "BTC": 65000.0}

# call classes for the fault gate
_DATA, _INFO, _INIT, _FREE = 0, 1, 2, 3


class _Fail(Exception):
    """Internal: a call fails with this (code, description)."""

    def __init__(self, err: tuple[int, str]) -> None:
        self.err = err


def _seconds(value: Any) -> int:
    """A date argument as whole seconds: datetime (aware -> timestamp, naive -> as UTC) or number."""
    if isinstance(value, _dt.datetime):
        if value.tzinfo is not None and value.utcoffset() is not None:
            return math.floor(value.timestamp())
        return calendar.timegm(value.timetuple())
    if isinstance(value, _dt.date):
        return calendar.timegm(value.timetuple())
    if isinstance(value, bool):
        raise _Fail(E_ARGS)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)) and math.isfinite(value):
        return math.floor(value)
    raise _Fail(E_ARGS)


def _int_arg(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise _Fail(E_ARGS)
    return int(value)


class SimTerminal:
    """A simulated MetaTrader 5 terminal with the MetaTrader5 package's function set.

    ``clock()`` returns true UTC epoch seconds (wall time in production, a
    manual clock in tests). Ticks and bars are a pure function of
    (seed, symbol, time); see ``mt5d.daemon.terminal.sim`` for errors and faults.
    """

    def __init__(
        self,
        *,
        seed: int = 42,
        clock: Callable[[], float] = time.time,
        symbols: Sequence[SimSymbol] | None = None,
        ticks_per_second: float = 4.0,
        faults: Sequence[Fault] = (),
        login: int = 10001234,
        password: str | None = None,
        server: str = "MT5Sim-Demo",
        broker_tz: str = "EET",
        account_mode: str = "hedging",
        balance: float = 10000.0,
        leverage: int = 100,
        commission_per_lot: float = 0.0,
        fill_volume: float = 0.0,
        trade_allowed: bool = True,
        trades: Sequence[ScriptedTrade | dict] = (),
    ) -> None:
        self._clock = clock
        self.start = float(clock())
        self.seed = int(seed)
        self.ticks_per_second = float(ticks_per_second)
        self.broker = BrokerClock(broker_tz)
        self._symbols: tuple[SimSymbol, ...] = tuple(symbols) if symbols is not None else default_symbols()
        self._login = int(login)
        self._password = password
        self._server = server
        self.faults: tuple[Fault, ...] = tuple(as_fault(f) for f in faults)
        self._windows = [(f.kind, self.start + f.at, self.start + f.at + f.duration) for f in self.faults]
        self._hangs = [(a, b) for k, a, b in self._windows if k == "hang"]
        self._events = sorted((a, b, k) for k, a, b in self._windows if k in ("disconnect", "restart"))
        stalls = [(self.broker.broker_ms_start(a), self.broker.broker_ms_start(b))
                  for k, a, b in self._windows if k == "stall"]
        self._market = Market(self._symbols, self.seed, self.ticks_per_second, self.broker, stalls)
        self._models: dict[str, SymbolModel] = self._market.models
        self._lock = threading.RLock()
        self._book_cache: dict[str, tuple] = {}  # symbol -> (tick, its book)
        self._released = threading.Event()
        self._last_error: tuple[int, str] = OK
        self._next_event = 0
        script = [t if isinstance(t, ScriptedTrade) else ScriptedTrade(**t) for t in trades]
        # The account lives on the trade server: it survives terminal restarts and disconnects.
        self.trading = Trading(
            symbols={s.name: s for s in self._symbols}, quote=self._quote_at, ticks=self._ticks_between,
            static_rates=_USD_RATE, start_bms=self.broker.broker_ms(self.start), mode=account_mode,
            balance=balance, leverage=leverage, commission_per_lot=commission_per_lot, fill_volume=fill_volume,
            script=[(self.broker.broker_ms(self.start + t.at), t) for t in script],
        )
        self.trading.trade_allowed = bool(trade_allowed)
        self._fresh_state()

    def _fresh_state(self) -> None:
        self._initialized = False
        self._session_since = -math.inf
        self._pending_recv = False
        self._account = self._login
        self._path: str | None = None
        self._selected = {s.name for s in self._symbols if s.selected}
        self._books: set[str] = set()  # market_book_add'ed in this IPC session

    # -- public helpers ---------------------------------------------------------
    def utc_offset_seconds(self, utc_epoch: float) -> int:
        """Broker clock minus UTC (seconds) at a UTC instant."""
        return self.broker.utc_offset_seconds(float(utc_epoch))

    def broker_time_msc(self, utc_epoch: float | None = None) -> int:
        """The newest broker millisecond that exists at a UTC instant (default: now)."""
        return self.broker.broker_ms(self._clock() if utc_epoch is None else float(utc_epoch))

    def release_hangs(self) -> None:
        """Let calls blocked by a ``hang`` fault return (failing with an IPC timeout), now and later."""
        self._released.set()

    def add_trades(self, trades: Sequence[ScriptedTrade | dict]) -> None:
        """More scripted trades (``at`` seconds after this sim's start), as if from the config."""
        script = [t if isinstance(t, ScriptedTrade) else ScriptedTrade(**t) for t in trades]
        with self._lock:
            self.trading.schedule([(self.broker.broker_ms(self.start + t.at), t) for t in script])

    def _quote_at(self, symbol: str, bms: int):
        return self._market.last_tick(self._models[symbol], bms, C.Tick._make)

    def _ticks_between(self, symbol: str, a_ms: int, b_ms: int):
        return self._market.ticks(self._models[symbol], a_ms, b_ms, MAX_TICKS_PER_REQUEST, b_ms, C.COPY_TICKS_ALL)

    @property
    def symbol_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self._symbols)

    # -- the fault gate ---------------------------------------------------------
    def _wait_hangs(self, now: float) -> float:
        while True:
            end = None
            for a, b in self._hangs:
                if a <= now < b:
                    end = b if end is None else max(end, b)
            if end is None:
                return now
            while now < end:
                if self._released.is_set():
                    raise _Fail(E_TIMEOUT)
                self._released.wait(0.001)
                now = self._clock()

    def _advance(self, now: float) -> None:
        ev = self._events
        while self._next_event < len(ev) and ev[self._next_event][0] <= now:
            a, b, kind = ev[self._next_event]
            self._next_event += 1
            if kind == "restart":
                self._fresh_state()
            elif self._initialized and self._session_since < a:
                self._initialized = False
                self._books.clear()
                self._pending_recv = now < b

    def _gate(self, cls: int) -> float:
        """Fault and session checks for one call; returns ``now`` or raises _Fail."""
        now = self._clock()
        if not self._windows:
            if cls != _INIT and cls != _FREE and not self._initialized:
                raise _Fail(E_NO_IPC)
            return now
        self._advance(now)
        for kind, a, b in self._windows:
            if a <= now < b:
                if kind == "restart":
                    raise _Fail(E_INIT if cls == _INIT else E_NO_IPC)
                if kind == "ipc_timeout" and cls != _FREE:
                    raise _Fail(E_TIMEOUT)
        if cls == _INIT or cls == _FREE:
            return now
        if self._pending_recv:
            self._pending_recv = False
            raise _Fail(E_RECV)
        if not self._initialized:
            raise _Fail(E_NO_IPC)
        if cls == _DATA and self._disconnected(now):
            raise _Fail(E_SEND)
        return now

    def _disconnected(self, now: float) -> bool:
        for kind, a, b in self._windows:
            if kind == "disconnect" and a <= now < b:
                return True
        return False

    def _auth_fault(self, now: float) -> bool:
        for kind, a, b in self._windows:
            if kind == "auth" and a <= now < b:
                return True
        return False

    def _call(self, cls: int, fn: Callable[[float], Any], fail: Any = None) -> Any:
        try:
            if self._hangs:
                self._wait_hangs(self._clock())
            with self._lock:
                now = self._gate(cls)
                self.trading.advance(self.broker.broker_ms(now))  # the server side moves on with time
                result = fn(now)
                self._last_error = OK
                return result
        except _Fail as e:
            self._last_error = e.err
            return fail

    def _model(self, symbol: Any, missing: tuple[int, str], unselected: tuple[int, str] | None) -> SymbolModel:
        if not isinstance(symbol, str):
            raise _Fail(E_ARGS)
        mdl = self._models.get(symbol)
        if mdl is None:
            raise _Fail(missing)
        if unselected is not None and symbol not in self._selected:
            raise _Fail(unselected)
        return mdl

    # -- connection -------------------------------------------------------------
    def initialize(self, path: str | None = None, *, login: int | None = None, password: str | None = None,
                   server: str | None = None, timeout: int = 60000, portable: bool = False) -> bool:
        def run(now: float) -> bool:
            if path is not None and not isinstance(path, str):
                raise _Fail((C.RES_E_INVALID_PARAMS, 'Invalid "path" argument'))
            self._check_creds_types(login, password, server, timeout)
            if login:
                if self._auth_fault(now) or not self._creds_ok(login, password, server):
                    raise _Fail(E_AUTH)
                self._account = int(login)
            if path:
                self._path = path
            self._initialized = True
            self._session_since = now
            self._pending_recv = False
            return True

        return self._call(_INIT, run, False)

    def login(self, login: int, password: str | None = None, server: str | None = None,
              timeout: int = 60000) -> bool:
        def run(now: float) -> bool:
            self._check_creds_types(login, password, server, timeout)
            if not login:
                raise _Fail((C.RES_E_INVALID_PARAMS, 'Invalid "login" argument'))
            if self._auth_fault(now) or not self._creds_ok(login, password, server):
                raise _Fail(E_AUTH)
            self._account = int(login)
            return True

        return self._call(_DATA, run, False)

    @staticmethod
    def _check_creds_types(login: Any, password: Any, server: Any, timeout: Any) -> None:
        if login is not None and (isinstance(login, bool) or not isinstance(login, (int, np.integer))):
            raise _Fail((C.RES_E_INVALID_PARAMS, 'Invalid "login" argument'))
        if password is not None and not isinstance(password, str):
            raise _Fail((C.RES_E_INVALID_PARAMS, 'Invalid "password" argument'))
        if server is not None and not isinstance(server, str):
            raise _Fail((C.RES_E_INVALID_PARAMS, 'Invalid "server" argument'))
        if isinstance(timeout, bool) or not isinstance(timeout, (int, np.integer)) or timeout < 0:
            raise _Fail((C.RES_E_INVALID_PARAMS, 'Invalid "timeout" argument'))

    def _creds_ok(self, login: int, password: str | None, server: str | None) -> bool:
        if int(login) != self._login:
            return False
        if self._password is not None and password != self._password:
            return False
        if server and server != self._server:
            return False
        return True

    def shutdown(self) -> None:
        def run(now: float) -> None:
            self._initialized = False
            self._books.clear()
            self._session_since = -math.inf
            self._pending_recv = False

        self._call(_FREE, run)
        return None

    def version(self):
        return self._call(_INFO, lambda now: (500, BUILD, BUILD_DATE))

    def last_error(self) -> tuple[int, str]:
        return self._last_error

    def account_info(self):
        def run(now: float):
            tr = self.trading
            f = tr.figures(self.broker.broker_ms(now))
            margin_mode = (C.ACCOUNT_MARGIN_MODE_RETAIL_HEDGING if tr.mode == "hedging"
                           else C.ACCOUNT_MARGIN_MODE_RETAIL_NETTING)
            return C.AccountInfo(
                login=self._account, trade_mode=C.ACCOUNT_TRADE_MODE_DEMO, leverage=tr.leverage,
                limit_orders=tr.limit_orders, margin_so_mode=C.ACCOUNT_STOPOUT_MODE_PERCENT,
                trade_allowed=True, trade_expert=True, margin_mode=margin_mode, currency_digits=2,
                fifo_close=False, balance=f["balance"], credit=0.0, profit=f["profit"], equity=f["equity"],
                margin=f["margin"], margin_free=f["margin_free"], margin_level=f["margin_level"],
                margin_so_call=50.0, margin_so_so=30.0, margin_initial=0.0, margin_maintenance=0.0, assets=0.0,
                liabilities=0.0, commission_blocked=0.0, name="MT5Sim Demo Account", server=self._server,
                currency="USD", company=COMPANY,
            )

        return self._call(_DATA, run)

    def terminal_info(self):
        def run(now: float):
            connected = not (self._windows and self._disconnected(now))
            ping = 12000 + mix(self.seed ^ int(now)) % 25000 if connected else 0
            return C.TerminalInfo(
                community_account=False, community_connection=False, connected=connected,
                dlls_allowed=False, trade_allowed=self.trading.trade_allowed, tradeapi_disabled=False, email_enabled=False,
                ftp_enabled=False, notifications_enabled=False, mqid=False, build=BUILD, maxbars=MAXBARS,
                codepage=0, ping_last=int(ping), community_balance=0.0, retransmission=0.0,
                company=COMPANY, name="MetaTrader 5", language="English",
                path=self._path or r"C:\Program Files\MT5Sim",
                data_path=r"C:\Users\mt5d\AppData\Roaming\MetaQuotes\Terminal\5A1D0C0F3E4B",
                commondata_path=r"C:\Users\mt5d\AppData\Roaming\MetaQuotes\Terminal\Common",
            )

        return self._call(_INFO, run)

    # -- symbols ----------------------------------------------------------------
    def symbols_total(self):
        return self._call(_DATA, lambda now: len(self._symbols))

    def symbols_get(self, group: str | None = None):
        def run(now: float):
            if group is not None and not isinstance(group, str):
                raise _Fail((C.RES_E_INVALID_PARAMS, 'Invalid "group" argument'))
            names = [s.name for s in self._symbols]
            if group:
                names = _filter_group(names, group)
            bms = self.broker.broker_ms(now)
            return tuple(self._symbol_info(self._models[n], bms) for n in names)

        return self._call(_DATA, run)

    def symbol_info(self, symbol: str):
        def run(now: float):
            mdl = self._model(symbol, E_NOT_FOUND, None)
            return self._symbol_info(mdl, self.broker.broker_ms(now))

        return self._call(_DATA, run)

    def symbol_info_tick(self, symbol: str):
        def run(now: float):
            mdl = self._model(symbol, E_NOT_FOUND, E_NOT_FOUND)
            tick = self._market.last_tick(mdl, self.broker.broker_ms(now), C.Tick._make)
            return _ZERO_TICK if tick is None else tick

        return self._call(_DATA, run)

    def symbol_select(self, symbol: str, enable: bool = True) -> bool:
        def run(now: float) -> bool:
            self._model(symbol, E_FAIL, None)
            if enable:
                self._selected.add(symbol)
            else:
                self._selected.discard(symbol)
            return True

        return self._call(_DATA, run, False)

    def _symbol_info(self, mdl: SymbolModel, bms: int):
        s = mdl.sym
        sel = s.name in self._selected
        tick = (self._market.last_tick(mdl, bms, C.Tick._make) if sel else None) or _ZERO_TICK
        day_o = day_h = day_l = prev_c = 0.0
        if sel and tick.time:
            d = bms // DAY_MS
            times, blk = self._market.bars(mdl, C.TIMEFRAME_D1, d - 7, d, bms)
            if len(times) and times[-1] == d * 86400:
                day_o, day_h, day_l = (int(blk[0, -1]) / mdl.scale10, int(blk[1, -1]) / mdl.scale10,
                                       int(blk[2, -1]) / mdl.scale10)
                if len(times) > 1:
                    prev_c = int(blk[3, -2]) / mdl.scale10
            elif len(times):
                prev_c = int(blk[3, -1]) / mdl.scale10
        point = 1.0 / mdl.scale10
        spread = int(round((tick.ask - tick.bid) * mdl.scale10)) if tick.time else s.spread
        sp = s.spread * point
        tv = point * s.contract_size * _USD_RATE.get(s.currency_profit, 1.0)
        if s.currency_profit != "USD" and tick.bid and s.currency_base == "USD":
            tv = point * s.contract_size / tick.bid
        tv = round(tv, 10)
        change = round((tick.bid - prev_c) / prev_c * 100.0, 2) if prev_c and tick.bid else 0.0
        trades = s.trades and sel
        spec = class_spec(s.category)
        return C.SymbolInfo(
            custom=False, chart_mode=C.SYMBOL_CHART_MODE_BID, select=sel, visible=sel,
            session_deals=0, session_buy_orders=0, session_sell_orders=0,
            volume=int(tick.volume), volumehigh=int(tick.volume) * 10 if trades else 0,
            volumelow=int(tick.volume) if trades else 0, time=int(tick.time), digits=s.digits,
            spread=spread, spread_float=True, ticks_bookdepth=s.book_depth,
            trade_calc_mode=s.calc_mode, trade_mode=C.SYMBOL_TRADE_MODE_FULL, start_time=0, expiration_time=0,
            trade_stops_level=spec.stops_level, trade_freeze_level=spec.freeze_level, trade_exemode=spec.exemode,
            swap_mode=spec.swap_mode, swap_rollover3days=spec.swap_rollover3days,
            margin_hedged_use_leg=False, expiration_mode=spec.expiration_mode, filling_mode=spec.filling_mode,
            order_mode=spec.order_mode,
            order_gtc_mode=C.SYMBOL_ORDERS_GTC, option_mode=C.SYMBOL_OPTION_MODE_EUROPEAN,
            option_right=C.SYMBOL_OPTION_RIGHT_CALL,
            bid=tick.bid, bidhigh=day_h, bidlow=day_l,
            ask=tick.ask, askhigh=round(day_h + sp, s.digits) if day_h else 0.0,
            asklow=round(day_l + sp, s.digits) if day_l else 0.0,
            last=tick.last, lasthigh=round(day_h + sp / 2, s.digits) if trades and day_h else 0.0,
            lastlow=round(day_l + sp / 2, s.digits) if trades and day_l else 0.0,
            volume_real=float(tick.volume_real), volumehigh_real=float(tick.volume) * 10 if trades else 0.0,
            volumelow_real=float(tick.volume) if trades else 0.0, option_strike=0.0, point=point,
            trade_tick_value=tv, trade_tick_value_profit=tv, trade_tick_value_loss=tv,
            trade_tick_size=point, trade_contract_size=s.contract_size, trade_accrued_interest=0.0,
            trade_face_value=0.0, trade_liquidity_rate=0.0, volume_min=s.volume_min, volume_max=s.volume_max,
            volume_step=s.volume_step, volume_limit=0.0, swap_long=s.swap_long, swap_short=s.swap_short,
            margin_initial=0.0, margin_maintenance=0.0, session_volume=0.0, session_turnover=0.0,
            session_interest=0.0, session_buy_orders_volume=0.0, session_sell_orders_volume=0.0,
            session_open=day_o, session_close=prev_c, session_aw=0.0, session_price_settlement=0.0,
            session_price_limit_min=0.0, session_price_limit_max=0.0, margin_hedged=s.contract_size,
            price_change=change, price_volatility=0.0, price_theoretical=0.0, price_greeks_delta=0.0,
            price_greeks_theta=0.0, price_greeks_gamma=0.0, price_greeks_vega=0.0, price_greeks_rho=0.0,
            price_greeks_omega=0.0, price_sensitivity=0.0, basis="", category=s.category,
            currency_base=s.currency_base, currency_profit=s.currency_profit,
            currency_margin=s.currency_margin or s.currency_base, bank="", description=s.description,
            exchange=s.exchange, formula="", isin=s.isin, name=s.name, page="", path=s.path,
        )

    # -- ticks ------------------------------------------------------------------
    @staticmethod
    def _flags(flags: Any) -> int:
        f = _int_arg(flags)
        if f not in (C.COPY_TICKS_ALL, C.COPY_TICKS_INFO, C.COPY_TICKS_TRADE):
            raise _Fail(E_PARAMS)
        return f

    def copy_ticks_from(self, symbol: str, date_from, count: int, flags: int):
        def run(now: float):
            mdl = self._model(symbol, E_NOT_FOUND, E_NOT_FOUND)
            start = _seconds(date_from)
            n = _int_arg(count)
            f = self._flags(flags)
            if n <= 0:
                raise _Fail(E_PARAMS)
            arr = self._market.ticks(mdl, start * 1000, 2**62, n, self.broker.broker_ms(now), f)
            if arr is None:
                raise _Fail(E_MEMORY)
            return arr

        return self._call(_DATA, run)

    def copy_ticks_range(self, symbol: str, date_from, date_to, flags: int):
        def run(now: float):
            mdl = self._model(symbol, E_NOT_FOUND, E_NOT_FOUND)
            a = _seconds(date_from)
            b = _seconds(date_to)
            f = self._flags(flags)
            arr = self._market.ticks(mdl, a * 1000, b * 1000, None, self.broker.broker_ms(now), f)
            if arr is None:
                raise _Fail(E_MEMORY)
            return arr

        return self._call(_DATA, run)

    # -- bars -------------------------------------------------------------------
    @staticmethod
    def _tf(timeframe: Any) -> int:
        tf = _int_arg(timeframe)
        if tf not in C.TIMEFRAME_SECONDS:
            raise _Fail(E_PARAMS)
        return tf

    @staticmethod
    def _horizon_day(tf: int, now_s: int) -> int:
        secs = C.TIMEFRAME_SECONDS[tf]
        if secs is None or secs >= 86400:
            return HISTORY_START_DAY
        return max(HISTORY_START_DAY, (now_s - MAXBARS * secs) // 86400)

    @staticmethod
    def _end_day(tf: int, t: int) -> int:
        """Last broker day whose data can belong to a ``tf`` bar opening at or before ``t``."""
        if tf == C.TIMEFRAME_W1:
            return int(week_start(t)) // 86400 + 6
        if tf == C.TIMEFRAME_MN1:
            ms = int(month_start(np.array([t]))[0])
            nxt = (np.datetime64(ms, "s").astype("datetime64[M]") + 1).astype("datetime64[s]").astype(np.int64)
            return int(nxt) // 86400 - 1
        return t // 86400

    def _bars_back(self, mdl: SymbolModel, tf: int, t_end: int, need: int, bms: int):
        now_s = bms // 1000
        t_end = min(t_end, now_s)
        secs = C.TIMEFRAME_SECONDS[tf] or 31 * 86400
        d_end = self._end_day(tf, t_end)
        horizon = self._horizon_day(tf, now_s)
        span = int(need * secs / 86400 * 1.05) + 2
        while True:
            d0 = max(horizon, d_end - span + 1)
            if tf in (C.TIMEFRAME_W1, C.TIMEFRAME_MN1):
                d0 = max(HISTORY_START_DAY, bar_open(tf, d0 * 86400) // 86400)
            times, blk = self._market.bars(mdl, tf, d0, d_end, bms)
            k = int(np.searchsorted(times, t_end, "right"))
            if k >= need or d0 <= horizon or d0 <= HISTORY_START_DAY:
                lo = max(0, k - need)
                return times[lo:k], blk[:, lo:k]
            span *= 2

    def copy_rates_from(self, symbol: str, timeframe: int, date_from, count: int):
        def run(now: float):
            mdl = self._model(symbol, E_FAIL, E_FAIL)
            tf = self._tf(timeframe)
            t = _seconds(date_from)
            n = _int_arg(count)
            if n <= 0:
                raise _Fail(E_PARAMS)
            times, blk = self._bars_back(mdl, tf, t, min(n, MAXBARS), self.broker.broker_ms(now))
            return self._market.to_rates(mdl, times, blk)

        return self._call(_DATA, run)

    def copy_rates_from_pos(self, symbol: str, timeframe: int, start_pos: int, count: int):
        def run(now: float):
            mdl = self._model(symbol, E_FAIL, E_FAIL)
            tf = self._tf(timeframe)
            pos = _int_arg(start_pos)
            n = _int_arg(count)
            if n <= 0 or pos < 0:
                raise _Fail(E_PARAMS)
            if pos >= MAXBARS:
                raise _Fail(E_FAIL)
            need = min(pos + n, MAXBARS)
            bms = self.broker.broker_ms(now)
            times, blk = self._bars_back(mdl, tf, bms // 1000, need, bms)
            have = len(times)
            if have <= pos:
                raise _Fail(E_FAIL)
            return self._market.to_rates(mdl, times[: have - pos], blk[:, : have - pos])

        return self._call(_DATA, run)

    def copy_rates_range(self, symbol: str, timeframe: int, date_from, date_to):
        def run(now: float):
            mdl = self._model(symbol, E_FAIL, E_FAIL)
            tf = self._tf(timeframe)
            a = _seconds(date_from)
            b = _seconds(date_to)
            bms = self.broker.broker_ms(now)
            now_s = bms // 1000
            b = min(b, now_s)
            if b < a:
                return self._market.to_rates(mdl, np.empty(0, np.int64), np.empty((7, 0), np.int64))
            d0 = max(bar_open(tf, max(a, HISTORY_START)) // 86400, self._horizon_day(tf, now_s))
            times, blk = self._market.bars(mdl, tf, d0, self._end_day(tf, b), bms)
            sel = (times >= a) & (times <= b)
            return self._market.to_rates(mdl, times[sel], blk[:, sel])

        return self._call(_DATA, run)

    # -- trading (see trading.py) -------------------------------------------------
    def _trade(self, fn: Callable[[float], Any]) -> Any:
        def run(now: float):
            try:
                return fn(now)
            except TradeArgError as err:
                raise _Fail((C.RES_E_INVALID_PARAMS, str(err))) from None

        return self._call(_DATA, run)

    @staticmethod
    def _filters(symbol: Any, group: Any, ticket: Any) -> None:
        if symbol is not None and not isinstance(symbol, str):
            raise _Fail((C.RES_E_INVALID_PARAMS, 'Invalid "symbol" argument'))
        if group is not None and not isinstance(group, str):
            raise _Fail((C.RES_E_INVALID_PARAMS, 'Invalid "group" argument'))
        if ticket is not None and (isinstance(ticket, bool) or not isinstance(ticket, (int, np.integer))):
            raise _Fail((C.RES_E_INVALID_PARAMS, 'Invalid "ticket" argument'))

    def orders_total(self):
        return self._call(_DATA, lambda now: len(self.trading.orders))

    def orders_get(self, symbol: str | None = None, group: str | None = None, ticket: int | None = None):
        def run(now: float):
            self._filters(symbol, group, ticket)
            return self.trading.order_tuples(self.broker.broker_ms(now), symbol, group,
                                             None if ticket is None else int(ticket))

        return self._call(_DATA, run)

    def positions_total(self):
        return self._call(_DATA, lambda now: len(self.trading.positions))

    def positions_get(self, symbol: str | None = None, group: str | None = None, ticket: int | None = None):
        def run(now: float):
            self._filters(symbol, group, ticket)
            return self.trading.position_tuples(self.broker.broker_ms(now), symbol, group,
                                                None if ticket is None else int(ticket))

        return self._call(_DATA, run)

    def _history_args(self, date_from, date_to, group, ticket, position) -> tuple[int, int]:
        self._filters(None, group, ticket)
        if position is not None and (isinstance(position, bool) or not isinstance(position, (int, np.integer))):
            raise _Fail((C.RES_E_INVALID_PARAMS, 'Invalid "position" argument'))
        if ticket is not None or position is not None:
            return 0, 0
        if date_from is None or date_to is None:
            raise _Fail(E_ARGS)
        return _seconds(date_from), _seconds(date_to)

    def history_orders_total(self, date_from=None, date_to=None):
        def run(now: float):
            a, b = self._history_args(date_from, date_to, None, None, None)
            return len(self.trading.history_order_tuples(a, b))

        return self._call(_DATA, run)

    def history_orders_get(self, date_from=None, date_to=None, group=None, ticket=None, position=None):
        def run(now: float):
            a, b = self._history_args(date_from, date_to, group, ticket, position)
            return self.trading.history_order_tuples(a, b, group, None if ticket is None else int(ticket),
                                                     None if position is None else int(position))

        return self._call(_DATA, run)

    def history_deals_total(self, date_from=None, date_to=None):
        def run(now: float):
            a, b = self._history_args(date_from, date_to, None, None, None)
            return len(self.trading.history_deal_tuples(a, b))

        return self._call(_DATA, run)

    def history_deals_get(self, date_from=None, date_to=None, group=None, ticket=None, position=None):
        def run(now: float):
            a, b = self._history_args(date_from, date_to, group, ticket, position)
            return self.trading.history_deal_tuples(a, b, group, None if ticket is None else int(ticket),
                                                    None if position is None else int(position))

        return self._call(_DATA, run)

    def order_send(self, request: Any = None):
        return self._trade(lambda now: self.trading.send(request, self.broker.broker_ms(now)))

    def order_check(self, request: Any = None):
        return self._trade(lambda now: self.trading.check(request, self.broker.broker_ms(now)))

    def _calc_args(self, action: Any, symbol: Any, volume: Any, *prices: Any) -> int:
        a = _int_arg(action)
        if a not in (C.ORDER_TYPE_BUY, C.ORDER_TYPE_SELL):
            raise _Fail(E_ARGS)
        self._model(symbol, E_ARGS, None)
        for v in (volume, *prices):
            if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not math.isfinite(v) or v < 0:
                raise _Fail(E_ARGS)
        return a

    def order_calc_margin(self, action: Any = None, symbol: Any = None, volume: Any = None, price: Any = None):
        def run(now: float):
            self._calc_args(action, symbol, volume, price)
            return round(self.trading.margin_of(symbol, float(volume), float(price), self.broker.broker_ms(now)), 2)

        return self._call(_DATA, run)

    def order_calc_profit(self, action: Any = None, symbol: Any = None, volume: Any = None,
                          price_open: Any = None, price_close: Any = None):
        def run(now: float):
            a = self._calc_args(action, symbol, volume, price_open, price_close)
            return round(self.trading.profit_of(symbol, a, float(volume), float(price_open), float(price_close),
                                                self.broker.broker_ms(now)), 2)

        return self._call(_DATA, run)

    # -- depth of market (model and error table: sim/book.py) ---------------------
    def market_book_add(self, symbol: Any = None) -> bool:
        def run(now: float) -> bool:
            self._model(symbol, E_FAIL, E_FAIL)
            self._books.add(symbol)
            return True

        return self._call(_DATA, run, False)

    def market_book_get(self, symbol: Any = None):
        def run(now: float):
            mdl = self._model(symbol, E_FAIL, None)
            if symbol not in self._books:
                raise _Fail(E_FAIL)
            tick = self._market.last_tick(mdl, self.broker.broker_ms(now), C.Tick._make) or _ZERO_TICK
            hit = self._book_cache.get(symbol)
            if hit is None or hit[0] != tick:  # a book changes with the tick, and only then
                hit = self._book_cache[symbol] = (tick, book_for(mdl.sym, self.seed, tick))
            return hit[1]

        return self._call(_DATA, run)

    def market_book_release(self, symbol: Any = None) -> bool:
        def run(now: float) -> bool:
            self._model(symbol, E_FAIL, None)
            if symbol not in self._books:
                raise _Fail(E_FAIL)
            self._books.discard(symbol)
            return True

        return self._call(_DATA, run, False)


