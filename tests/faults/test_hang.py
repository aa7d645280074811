"""A terminal call that hangs: it times out within operation_timeout, health keeps being served."""

from __future__ import annotations

import anyio
import pytest

from mt5d.daemon.app import Daemon
from tests.integration.helpers import Collector, make_config, running, unique_account

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def test_hung_call_times_out_and_health_goes_on(nats_url):
    account = unique_account("hang")
    cfg = make_config(
        nats_url, account,
        terminal={"operation_timeout": 1.0,
                  "sim": {"ticks_per_second": 20.0, "faults": [{"kind": "hang", "at": 1.5, "duration": 5.0}]}},
        stream={"symbols": ["EURUSD"], "timeframes": []},
    )
    daemon = Daemon(cfg)
    col = await Collector(account).start(nats_url)
    try:
        async with running(daemon):
            await col.wait_for(lambda: any(h.wedged for h in col.health), timeout=15)
            t_wedged = anyio.current_time()
            n = len(col.health)
            # Health keeps coming while the terminal thread is stuck.
            await col.wait_for(lambda: len(col.health) >= n + 3, timeout=15)
            assert all(not h.connection_ok for h in col.health[n:n + 3])
            await col.wait_for(lambda: any(h.event == "unwedged" for h in col.health), timeout=10)
            before = len(col.ticks["EURUSD"])
            await col.wait_for(lambda: len(col.ticks["EURUSD"]) > before + 5, timeout=10)
            await col.wait_for(lambda: col.health[-1].connection_ok, timeout=10)
    finally:
        await col.close()
    events = [h.event for h in col.health]
    assert events.index("wedged") < events.index("unwedged")
    timeouts = [h for h in col.health if h.event == "wedged"]
    assert timeouts and "did not return in time" in timeouts[0].detail
    assert anyio.current_time() - t_wedged < 20
