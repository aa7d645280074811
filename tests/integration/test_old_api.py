"""Code written for the old in-process session manager runs unchanged against MT5Client.

The functions in the first part are example code as it was written against
the old manager (``manager.get_account_info()``, ``get_leverage()``,
``get_price("EURUSD")``, ``get_candles(...)``, ``probe()``, ``reconnect()``,
``except MT5ValidationError`` for an unknown symbol). Nothing in them knows
about NATS; only the construction of ``manager`` changed:

    # before: manager = MT5SessionManager(login=..., password=..., server=...); await manager.start()
    # now:    manager = MT5Client(await nats.connect(url), account="10001234")
"""

from __future__ import annotations

import math

import nats
import pytest

from mt5d.daemon.app import Daemon
from mt5d import MT5Client
from mt5d.errors import MT5ValidationError
from tests.integration.helpers import Collector, make_config, running, unique_account

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


# ---- the old example code, unchanged ----------------------------------------------------

async def account_summary(manager) -> str:
    info = await manager.get_account_info()
    leverage = await manager.get_leverage()
    used = await manager.get_margin_used()
    free = await manager.get_margin_free()
    return (f"{info['login']} {info['name']} ({info['server']}): balance {info['balance']:.2f} "
            f"{info['currency']}, equity {info['equity']:.2f}, leverage 1:{leverage}, "
            f"margin used {used:.2f}, free {free:.2f}")


async def mid_price(manager, symbol: str) -> float | None:
    try:
        tick = await manager.get_price(symbol)
    except MT5ValidationError:
        return None  # unknown symbol
    return (tick["bid"] + tick["ask"]) / 2


async def quote_board(manager, symbols: list[str]) -> dict[str, tuple[float, float]]:
    prices = await manager.get_prices(symbols)
    return {symbol: (p["bid"], p["ask"]) for symbol, p in prices.items()}


async def sma_signal(manager, symbol: str, timeframe: str = "M15", count: int = 50) -> dict:
    candles = await manager.get_candles(symbol, timeframe=timeframe, count=count)
    closed = [c for c in candles if c.get("closed", True)]
    closes = [c["close"] for c in closed]
    sma = sum(closes) / len(closes)
    last = candles[-1]
    return {"sma": sma, "last_close": last["close"], "above": last["close"] > sma,
            "bars": len(candles), "first_time": candles[0]["time"], "last_time": last["time"]}


async def watchdog(manager) -> dict:
    status = await manager.probe()
    if not (status["connection"] and status["auth"]):
        await manager.reconnect()
        status = await manager.probe()
    return status


async def operator_reconnect(manager) -> bool:
    ok = await manager.reconnect()
    status = await manager.probe()
    return ok and status["connection"]


# ---- the test: only the construction differs -----------------------------------------------

async def test_old_examples_run_against_the_client(nats_url):
    account = unique_account("old")
    cfg = make_config(nats_url, account,
                      stream={"symbols": ["EURUSD", "GBPUSD", "USDJPY"], "timeframes": ["M1"]})
    daemon = Daemon(cfg)
    col = await Collector(account).start(nats_url)
    nc = await nats.connect(nats_url)
    try:
        async with running(daemon):
            await col.wait_for(lambda: {"EURUSD", "GBPUSD", "USDJPY"} <= set(col.ticks), timeout=10)

            manager = MT5Client(nc, account=account)  # the one changed line

            summary = await account_summary(manager)
            assert summary.startswith("10001234 ") and "leverage 1:" in summary and "margin used" in summary

            mid = await mid_price(manager, "EURUSD")
            assert mid is not None and 0.5 < mid < 2.0
            assert await mid_price(manager, "NOPE") is None  # MT5ValidationError, as before

            board = await quote_board(manager, ["EURUSD", "GBPUSD", "USDJPY", "NOPE"])
            assert set(board) == {"EURUSD", "GBPUSD", "USDJPY"}
            assert all(bid < ask for bid, ask in board.values())

            signal = await sma_signal(manager, "EURUSD", timeframe="M15", count=50)
            assert signal["bars"] == 50 and math.isfinite(signal["sma"])
            assert signal["last_time"] - signal["first_time"] == 49 * 15 * 60  # MT5's `time`, in seconds

            status = await watchdog(manager)
            assert status["connection"] and status["auth"] and status["breaker"] == "closed"
            assert isinstance(status["latency_ms"], float) and "data_feed" in status

            assert await operator_reconnect(manager) is True
    finally:
        await nc.close()
        await col.close()
