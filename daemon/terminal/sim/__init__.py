"""The simulated MetaTrader 5 terminal.

``SimTerminal`` has the function set of the ``MetaTrader5`` package (same
names, signatures, result types and ``last_error()`` pairs); the module
``mt5d.daemon.terminal.mt5sim`` exposes one at module level like the package.

Market
------
Ticks are a pure function of (seed, symbol, time): two sims with one seed,
started at different times, return identical ticks for any interval (see
``market.py`` for the model). Times are broker wall-clock (``broker_tz``,
default EET = UTC+2 / UTC+3 in EU summer time) written as if UTC; no ticks
exist in the spring-forward broker hour nor in the UTC hour after the autumn
switch, so broker time is monotonic. Only ticks whose time is <= now exist.
Bars of every timeframe are aggregated from the sim's own ticks (OHLC of bid,
tick_volume = tick count, spread = minimum spread in points, real_volume = sum
of tick volumes, 0 for FX); position 0 is the forming bar; a bar without ticks
does not exist. History starts 2020-01-01 (broker time); ``maxbars`` is 100000.

Errors (``last_error()`` after the call; success sets ``(1, 'Success')``)
---------------------------------------------------------------------------
=====================================================  ===========  ===================================================
situation                                              returns      last_error()
=====================================================  ===========  ===================================================
any call before initialize() / after shutdown()        None/False   (-10004, 'No IPC connection')
argument of the wrong type (symbol not str, ...)       None/False   (-2, 'Invalid arguments') or (-2, 'Invalid "login" argument') etc.
unknown timeframe, count <= 0, start_pos < 0, flags    None         (-2, 'Terminal: Invalid params')
symbol_info(unknown)                                   None         (-4, 'Terminal: Not found')
symbol_info_tick / copy_ticks_* unknown symbol         None         (-4, 'Terminal: Not found')
symbol_info_tick / copy_ticks_* not in Market Watch    None         (-4, 'Terminal: Not found')
copy_ticks_* with no ticks in the range                empty array  (1, 'Success')
copy_ticks_* that could hold > 5,000,000 ticks         None         (-3, 'Terminal: Out of memory')
copy_rates_* unknown symbol or not in Market Watch     None         (-1, 'Terminal: Call failed')
copy_rates_from_pos start_pos beyond history/maxbars   None         (-1, 'Terminal: Call failed')
copy_rates_range / copy_rates_from: nothing in range   empty array  (1, 'Success')
symbol_select(unknown)                                 False        (-1, 'Terminal: Call failed')
initialize/login: wrong login, password or server      False        (-6, 'Terminal: Authorization failed')
market_book_*                                          see sim/book.py (its own table)
order_send/order_check: request not a dict, bad type   None         (-2, 'Invalid arguments') / (-2, 'Invalid "volume" argument')
history_*_get/_total without a date range or ticket    None         (-2, 'Invalid arguments')
=====================================================  ===========  ===================================================

Codes come from the real package (``RES_E_*``) and the descriptions are the
strings of its ``_core`` module. Pairs confirmed by public reports against
live terminals: (-4, 'Terminal: Not found') for symbol_info/symbol_info_tick/
copy_ticks_range misses, (-1, 'Terminal: Call failed') for bar-read misses
(also beyond maxbars), (-10004, 'No IPC connection') before initialize. The
Market Watch miss on ticks and symbol_select(unknown) are choices.
Trading (positions, orders, deals, order_send/check, order_calc_*) is an order
engine with MT5's semantics: see ``trading.py`` (its retcode table) and
``[[terminal.sim.trades]]`` in the config; ``*_get`` with no match return ().

Other details: copy_ticks_range covers date_from*1000 <= time_msc <=
date_to*1000 (both ends inclusive, as MQL5 CopyTicksRange); a selected symbol
that never ticked (ticks_per_second=0) gives an all-zero Tick; symbol_info of a
symbol outside Market Watch works but carries no prices; shutdown() returns
None; last_error() starts as (1, 'Success') and is never blocked by faults.
``SimSymbol.feed`` lets a symbol share another's quotes (EURUSD.m = EURUSD
with a wider spread). Depth of market: ``sim/book.py`` (a book per tick,
``SimSymbol.book_depth`` levels a side, subscriptions per IPC session).
``symbol_info`` carries every field of the package's ``SymbolInfo``; the
contract terms of each asset class (stops level, swap mode and triple-swap
day, filling) come from ``sim/specs.py``.

Faults (``Fault(kind, at, duration)``; active while start+at <= now < start+at+duration)
-----------------------------------------------------------------------------------------
===========  ==================================================================================
kind         behaviour
===========  ==================================================================================
disconnect   The IPC session breaks at the window start. The first call after that (inside
             the window) fails (-10002, 'IPC recv failed'), later ones (-10004, 'No IPC
             connection') until initialize() is called again -- also after the window ends.
             initialize() inside the window succeeds (the terminal process is alive) but the
             terminal is off the trade server: terminal_info().connected is False (ping 0),
             version() works, every other call fails (-10001, 'IPC send failed') until the
             window ends. Market Watch and the account survive.
ipc_timeout  Every call (initialize too) fails (-10005, 'IPC timeout'); the session survives.
hang         Every call (except last_error) blocks the calling thread until the window ends
             (polling the injected clock, 1 ms real sleeps), then runs normally.
             ``release_hangs()`` makes blocked and later hung calls return at once, failing
             (-10005, 'IPC timeout').
auth         initialize(login=...) and login() fail (-6, 'Terminal: Authorization failed');
             initialize() without credentials and the running session keep working.
stall        Connected, every call succeeds, but no ticks exist in the window (so no bars
             either); symbol_info_tick returns the last tick before it. Still a pure function.
restart      The terminal restarts: calls fail (-10004, 'No IPC connection'), initialize()
             fails (-10003, 'IPC initialize failed, MetaTrader 5 x64 not found'). Afterwards
             the state is fresh: initialize() and symbol_select() are needed again (Market
             Watch back to its defaults, default account). Tick history is unchanged.
===========  ==================================================================================
"""

from mt5d.daemon.terminal.sim.clock import BrokerClock
from mt5d.daemon.terminal.sim.faults import FAULT_KINDS, Fault
from mt5d.daemon.terminal.sim.market import HISTORY_START, MAX_TICKS_PER_REQUEST
from mt5d.daemon.terminal.sim.symbols import SimSymbol, default_symbols, synthetic_symbols
from mt5d.daemon.terminal.sim.terminal import BUILD, MAXBARS, SimTerminal

__all__ = [
    "SimTerminal",
    "SimSymbol",
    "Fault",
    "FAULT_KINDS",
    "BrokerClock",
    "default_symbols",
    "synthetic_symbols",
    "HISTORY_START",
    "MAX_TICKS_PER_REQUEST",
    "MAXBARS",
    "BUILD",
]
