"""A restart of mt5d loses no tick: capture resumes where NATS last confirmed it."""

from __future__ import annotations

import time

import pytest

from mt5d.daemon.app import Daemon
from tests.integration.helpers import assert_same_as_history, Collector, make_config, running, unique_account

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def test_restart_resumes_from_the_saved_cursor(nats_url, tmp_path):
    account = unique_account("resume")
    cfg = make_config(nats_url, account, stream={"symbols": ["EURUSD", "#AAPL"], "timeframes": ["M1"],
                                                 "state_dir": str(tmp_path)},
                      terminal={"sim": {"ticks_per_second": 30.0}})
    col = await Collector(account).start(nats_url)
    try:
        first = Daemon(cfg)
        async with running(first):
            await col.wait_for(lambda: len(col.ticks["EURUSD"]) >= 20, timeout=10)
        stopped_at = len(col.ticks["EURUSD"])
        assert (tmp_path / f"capture-{account}.json").exists()
        # The second run's clocks are 5 s later: 5 s of ticks happened while mt5d was down.
        second = Daemon(cfg, wall_clock=lambda: time.time() + 5.0)
        async with running(second):
            await col.wait_for(lambda: len(col.ticks["EURUSD"]) >= stopped_at + 200, timeout=10)
    finally:
        await col.close()
    for symbol in ("EURUSD", "#AAPL"):
        got = [(t.time_msc_broker, t.index_in_ms, t.bid, t.ask) for t in col.ticks[symbol]]
        assert_same_as_history(second.module, symbol, got)
