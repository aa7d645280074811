"""A drop-in ``MetaTrader5`` module backed by the simulated terminal.

    import mt5d.daemon.terminal.mt5sim as mt5
    mt5.initialize()
    ticks = mt5.copy_ticks_from("EURUSD", time.time() + 7200 - 60, 1000, mt5.COPY_TICKS_ALL)

Every function of the MetaTrader5 package and every constant is here at
module level. Calls go to one module-level ``SimTerminal`` built on first use
(wall clock) from the environment:

    MT5SIM_SEED (42), MT5SIM_TPS (4.0), MT5SIM_LOGIN (10001234),
    MT5SIM_PASSWORD (unset: any password), MT5SIM_SERVER ("MT5Sim-Demo"),
    MT5SIM_BROKER_TZ ("EET"), MT5SIM_SYNTHETIC (0 extra synthetic symbols)

``configure(**kwargs)`` replaces it (SimTerminal keyword arguments, on top of
the environment defaults; or ``configure(terminal=an_existing_sim)``).
The module can also be served as ``MetaTrader5`` by an rpyc classic server.
"""

from __future__ import annotations

import functools
import inspect
import os
import threading
from typing import Any

from mt5d.daemon.terminal.mt5_constants import *  # noqa: F403 - the package's constants
from mt5d.daemon.terminal.mt5_constants import __author__, __version__  # noqa: F401
from mt5d.daemon.terminal.sim import SimTerminal, default_symbols, synthetic_symbols

_FUNCTIONS = (
    "initialize", "login", "shutdown", "version", "last_error", "account_info", "terminal_info",
    "symbols_total", "symbols_get", "symbol_info", "symbol_info_tick", "symbol_select",
    "market_book_add", "market_book_get", "market_book_release",
    "copy_rates_from", "copy_rates_from_pos", "copy_rates_range", "copy_ticks_from", "copy_ticks_range",
    "orders_total", "orders_get", "order_calc_margin", "order_calc_profit", "order_check", "order_send",
    "positions_total", "positions_get", "history_orders_total", "history_orders_get",
    "history_deals_total", "history_deals_get",
)

_lock = threading.Lock()
_sim: SimTerminal | None = None


def _env_kwargs() -> dict[str, Any]:
    env = os.environ
    kw: dict[str, Any] = {
        "seed": int(env.get("MT5SIM_SEED", "42")),
        "ticks_per_second": float(env.get("MT5SIM_TPS", "4.0")),
        "login": int(env.get("MT5SIM_LOGIN", "10001234")),
        "password": env.get("MT5SIM_PASSWORD") or None,
        "server": env.get("MT5SIM_SERVER", "MT5Sim-Demo"),
        "broker_tz": env.get("MT5SIM_BROKER_TZ", "EET"),
    }
    extra = int(env.get("MT5SIM_SYNTHETIC", "0"))
    if extra:
        kw["symbols"] = list(default_symbols()) + list(synthetic_symbols(extra))
    return kw


def terminal() -> SimTerminal:
    """The module's SimTerminal (built on first use)."""
    global _sim
    sim = _sim
    if sim is None:
        with _lock:
            if _sim is None:
                _sim = SimTerminal(**_env_kwargs())
            sim = _sim
    return sim


def configure(terminal: SimTerminal | None = None, **kwargs: Any) -> SimTerminal:
    """Replace the module's SimTerminal: a given one, or one built from the env defaults + ``kwargs``."""
    global _sim
    if terminal is None:
        kw = _env_kwargs()
        kw.update(kwargs)
        terminal = SimTerminal(**kw)
    with _lock:
        old, _sim = _sim, terminal
    if old is not None and old is not terminal:
        old.release_hangs()
    return terminal


def release_hangs() -> None:
    """Let calls blocked by a ``hang`` fault return (see SimTerminal.release_hangs)."""
    if _sim is not None:
        _sim.release_hangs()


def _delegate(name: str):
    method = getattr(SimTerminal, name)

    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(terminal(), name)(*args, **kwargs)

    call.__qualname__ = name
    call.__module__ = __name__
    sig = inspect.signature(method)
    call.__signature__ = sig.replace(parameters=list(sig.parameters.values())[1:])
    del call.__wrapped__
    return call


for _name in _FUNCTIONS:
    globals()[_name] = _delegate(_name)
del _name
