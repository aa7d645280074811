"""nats-server stops and comes back on the same port: nothing lost, nothing twice, judged by what
reached the server (a JetStream stream on the tick subjects)."""

from __future__ import annotations

import anyio
import msgspec
import nats
import pytest
from nats.js.api import StreamConfig

from mt5d.daemon.app import Daemon
from tests.integration.helpers import (assert_same_as_history, eventually, make_config, running, stored_messages,
                                      unique_account)

pytestmark = pytest.mark.anyio
SYMBOLS = ["EURUSD", "EURUSD.m"]


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def until_stored(js, n, timeout: float, step: float = 0.05) -> None:
    """Wait until the stream holds ``n`` messages (the server signals nothing)."""
    with anyio.fail_after(timeout):
        while (await js.stream_info("TICKS")).state.messages < n():
            await anyio.sleep(step)


async def test_nats_server_restart_loses_and_repeats_nothing(fresh_nats):
    account = unique_account("jsrestart")
    cfg = make_config(fresh_nats.url, account, nats={"msg_id": True},
                      stream={"symbols": SYMBOLS, "timeframes": []},
                      terminal={"sim": {"ticks_per_second": 40.0}})
    admin = await nats.connect(fresh_nats.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    js = admin.jetstream()
    await js.add_stream(StreamConfig(name="TICKS", subjects=[f"mt5.{account}.tick.>"], duplicate_window=120.0))
    daemon = Daemon(cfg)
    async with running(daemon):
        await until_stored(js, lambda: 50, timeout=10)
        fresh_nats.stop()  # the outage: ticks keep coming from the terminal meanwhile
        await eventually(lambda: not daemon.nc.is_connected, timeout=10)
        before = daemon.poller.ticks_out
        await eventually(lambda: daemon.poller.ticks_out > before, timeout=10)  # capture goes on... then holds
        fresh_nats.start()
        await eventually(lambda: daemon.nc.is_connected and admin.is_connected, timeout=15)
        # Everything captured during the outage reaches the stream, and the stream goes on.
        target = daemon.poller.ticks_out + 100
        await until_stored(js, lambda: target, timeout=15)
    # Read back everything the server kept, per symbol, in order (the daemon is stopped: a closed window).
    for symbol, token in (("EURUSD", "EURUSD"), ("EURUSD.m", "EURUSD=2Em")):
        got = []
        for msg in await stored_messages(js, f"mt5.{account}.tick.{token}"):
            t = msgspec.json.decode(msg.data)
            got.append((t["time_msc_broker"], t["index_in_ms"], t["bid"], t["ask"]))
        assert_same_as_history(daemon.module, symbol, got)
    await admin.close()
