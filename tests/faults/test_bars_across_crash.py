"""A real ``mt5d run`` killed with SIGKILL while M1, M5 and H1 bars close: the next start
publishes each of them once, though none of those timeframes had published a candle before.

The sim's broker clock is set (``fixed:+HH:MM:SS``) so the daemon starts half a minute
before a broker hour ends; the daemon's own offset is the same to the minute, floored, so
its clock is a few seconds behind the broker's (a drifting trade server), never ahead.
"""

from __future__ import annotations

import math
import signal
import time

import msgspec
import pytest

from mt5d.daemon.terminal.mt5_constants import TIMEFRAMES
from mt5d.daemon.terminal.sim import SimTerminal
from tests.integration.helpers import Collector, CliProcess, eventually, unique_account

pytestmark = pytest.mark.anyio
SYMBOLS = ["EURUSD", "GBPUSD", "USDJPY"]
TFS = {"M1": 60, "M5": 300, "H1": 3600}
LEAD = 30  # broker seconds from launch to the hour boundary: room for a slow start on a loaded machine


@pytest.fixture
def anyio_backend():
    return "asyncio"


def _hhmmss(seconds: int) -> str:
    return f"+{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _config(url: str, account: str, state_dir, offset_s: int) -> str:
    return f"""
[terminal]
backend = "sim"
login = 10001234
operation_timeout = 2.0
connection_timeout = 2.0
[terminal.sim]
seed = 11
ticks_per_second = 20.0
broker_tz = "fixed:{_hhmmss(offset_s)}"
[stream]
symbols = {SYMBOLS!r}
timeframes = {list(TFS)!r}
poll_interval = 0.05
server_utc_offset = "{_hhmmss(offset_s - offset_s % 60)[:6]}"
state_dir = "{state_dir}"
[nats]
url = "{url}"
account = "{account}"
[logging]
level = "INFO"
"""


def _state(path) -> dict:
    try:
        return msgspec.json.decode(path.read_bytes())
    except (FileNotFoundError, msgspec.DecodeError):
        return {}


async def test_bars_closed_while_killed_are_published_once_after_restart(nats_url, tmp_path):
    account = unique_account("barcrash")
    # Broker time at launch: LEAD seconds before an hour boundary.
    now = time.time()
    hour = math.ceil((now + 7200 + LEAD + 1) / 3600) * 3600  # broker clock about UTC+2..3
    offset_s = int(hour - LEAD - now)
    sim = SimTerminal(seed=11, ticks_per_second=20.0, broker_tz=f"fixed:{_hhmmss(offset_s)}")
    assert sim.initialize()
    cfg = tmp_path / "config.toml"
    cfg.write_text(_config(nats_url, account, tmp_path, offset_s))
    state_path = tmp_path / f"capture-{account}.json"
    log_path = tmp_path / "mt5d.log"
    keys = {f"{s}|{tf}" for s in SYMBOLS for tf in TFS}

    col = await Collector(account).start(nats_url)
    try:
        first = CliProcess(cfg, log_path)
        try:
            # Tracking has started (every symbol and timeframe is in the saved state)...
            await eventually(lambda: keys <= set(_state(state_path).get("bars", {})) or first.proc.poll() is not None,
                             timeout=LEAD - 3)
        finally:
            first.stop(signal.SIGKILL)
        broker_at_kill = sim.broker_time_msc() // 1000
        assert broker_at_kill < hour, "the first run took too long to start tracking (no bar closed while down)"
        assert not col.candles, "a candle was published before the kill"
        tracked = _state(state_path)["bars"]

        # Down across the hour: M1, M5 and H1 bars close meanwhile (+2 s grace, +1 s for the bars).
        await eventually(lambda: sim.broker_time_msc() // 1000 >= hour + 3, timeout=LEAD + 10, step=0.1)
        restarted_at = sim.broker_time_msc() // 1000
        expected = {}  # (symbol, tf) -> the bars that closed while mt5d was down
        for symbol in SYMBOLS:
            for tf in TFS:
                last = tracked[f"{symbol}|{tf}"]
                rates = sim.copy_rates_range(symbol, TIMEFRAMES[tf], last + 1, restarted_at)
                closed = [r for r in rates.tolist() if broker_at_kill < r[0] + TFS[tf] <= restarted_at - 2]
                assert closed, (symbol, tf, last)  # the hour boundary closed one of each
                expected[(symbol, tf)] = closed

        second = CliProcess(cfg, log_path)
        try:
            def arrived() -> bool:
                got = {(c.symbol, c.timeframe, c.time_broker) for c in col.candles}
                return all((s, tf, r[0]) in got for (s, tf), bars in expected.items() for r in bars)

            await col.wait_for(lambda: arrived() or second.proc.poll() is not None, timeout=30)
            assert second.proc.poll() is None, "the second run exited"
            # And NATS confirmed them (so a clean stop now repeats nothing on either side).
            newest = {f"{s}|{tf}": bars[-1][0] for (s, tf), bars in expected.items()}
            await eventually(lambda: all(_state(state_path).get("bars", {}).get(k, 0) >= t
                                         for k, t in newest.items()), timeout=10)
        finally:
            assert second.stop() == 0
        await col.nc.flush()
    finally:
        await col.close()

    for (symbol, tf), bars in expected.items():
        got = [c for c in col.candles if c.symbol == symbol and c.timeframe == tf
               and bars[0][0] <= c.time_broker <= bars[-1][0]]
        assert [(c.time_broker, c.open, c.high, c.low, c.close, c.tick_volume) for c in got] == \
            [(t, o, h, lo, c, v) for t, o, h, lo, c, v, _spread, _rv in bars], (symbol, tf)
        assert all(c.closed for c in got)
    everything = [(c.symbol, c.timeframe, c.time_broker) for c in col.candles]
    assert len(everything) == len(set(everything)), "a candle was published twice"
