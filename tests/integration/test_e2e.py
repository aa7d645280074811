"""End to end: the daemon with the sim terminal against a real nats-server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest

from mt5d.daemon.app import Daemon
from tests.integration.helpers import Collector, RpycBridge, make_config, running, unique_account

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(params=["sim", "rpyc"])
def terminal(request):
    """Terminal config: the sim in process, or the sim behind a real rpyc classic bridge.
    Returns a function of the sim's options (seed, ticks_per_second, faults) -> [terminal] values."""
    bridges = []

    def make(**sim):
        if request.param == "sim":
            sim.pop("clock_shift", None)  # the in-process sim takes the daemon's wall clock
            return {"backend": "sim", "sim": sim}
        bridge = RpycBridge(**sim)
        bridges.append(bridge)
        return {"backend": "rpyc", "rpyc_port": bridge.port}

    yield make
    for b in bridges:
        b.stop()


async def test_ticks_for_every_symbol_health_and_a_candle_at_bar_close(nats_url, terminal):
    account = unique_account("e2e")
    # Shift the clocks so a minute ends ~2 s after start: a bar close comes quickly.
    shift = (58 - time.time() % 60) % 60
    term = terminal(seed=42, clock_shift=shift)
    wall = lambda: time.time() + shift  # noqa: E731
    cfg = make_config(nats_url, account, stream={"timeframes": ["M1"]}, terminal=term)
    daemon = Daemon(cfg, wall_clock=wall)
    col = await Collector(account).start(nats_url)
    try:
        async with running(daemon):
            symbols = set(cfg.stream.symbols)
            await col.wait_for(lambda: symbols <= set(col.ticks) and col.health, timeout=10)
            await col.wait_for(lambda: col.candles, timeout=10)
    finally:
        await col.close()
    assert {"mt5.%s.tick.EURUSD=2Em" % account, "mt5.%s.tick.=23AAPL" % account} <= col.subjects
    for symbol, ticks in col.ticks.items():
        assert all(t.symbol == symbol for t in ticks)
        mscs = [t.time_msc_broker for t in ticks]
        assert mscs == sorted(mscs)
        # The sim's broker clock is UTC+2 or UTC+3; UTC is derived from it.
        assert all(t.time_msc_broker - t.time_utc_ms in (7_200_000, 10_800_000) for t in ticks)
    h = col.health[-1]
    assert h.connection_ok and h.auth_ok and h.breaker == "closed" and h.latency_ms is not None
    assert h.trade_allowed is True and h.terminal_connected is True and h.ping_ms > 0  # from terminal_info()
    c = col.candles[0]
    assert c.closed and c.timeframe == "M1" and c.low <= min(c.open, c.close) <= max(c.open, c.close) <= c.high
    assert c.close_time_utc_ms - c.time_utc_ms == 60_000


async def test_scripted_disconnect_is_survived_and_visible_in_health(nats_url, terminal, caplog):
    caplog.set_level("INFO", logger="mt5d.connection")
    account = unique_account("fault")
    term = terminal(ticks_per_second=20.0, faults=[{"kind": "disconnect", "at": 2.0, "duration": 3.0}])
    cfg = make_config(nats_url, account, stream={"symbols": ["EURUSD", "GBPUSD"], "timeframes": []}, terminal=term)
    daemon = Daemon(cfg)
    col = await Collector(account).start(nats_url)
    try:
        async with running(daemon):
            await col.wait_for(lambda: any(h.connection_ok for h in col.health), timeout=15)
            up_at = len(col.health)
            await col.wait_for(lambda: any(not h.connection_ok for h in col.health[up_at:]), timeout=15)
            down_at = len(col.health)
            await col.wait_for(
                lambda: any(h.connection_ok and h.breaker == "closed" for h in col.health[down_at:]), timeout=10)
            before = len(col.ticks["EURUSD"])
            await col.wait_for(lambda: len(col.ticks["EURUSD"]) > before + 5, timeout=15)
    finally:
        await col.close()
    events = [h.event for h in col.health]
    assert "disconnected" in events and "breaker_open" in events
    assert "breaker_half_open" in events and "breaker_closed" in events
    # ... and each transition is one log line too.
    logged = [r.getMessage() for r in caplog.records if r.name == "mt5d.connection"]
    for transition in ("breaker_open", "breaker_half_open", "breaker_closed", "disconnected", "connected"):
        assert transition in logged
    # Across the outage the stream has no gap and no repeat.
    mscs = [t.time_msc_broker for t in col.ticks["EURUSD"]]
    assert mscs == sorted(mscs)
    sim_ticks = daemon.module.copy_ticks_range("EURUSD", mscs[0] // 1000, mscs[-1] // 1000 + 1, -1)
    expected = [int(m) for m in sim_ticks["time_msc"] if mscs[0] <= m <= mscs[-1]]
    first = expected.index(mscs[0])
    assert mscs == expected[first:first + len(mscs)]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_run_stops_cleanly_on_signal_with_embedded_server(tmp_path, signum):
    port = _free_port()
    config = (ROOT / "config.toml").read_text().replace("nats://127.0.0.1:4222", f"nats://127.0.0.1:{port}")
    (tmp_path / "config.toml").write_text(config)
    proc = subprocess.Popen([sys.executable, "-m", "mt5d.daemon.cli", "run", "--config", str(tmp_path / "config.toml")],
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    lines = []
    server_pid = None
    deadline = time.monotonic() + 20
    for line in proc.stderr:
        lines.append(line)
        rec = msgspec.json.decode(line)
        if rec.get("event") == "embedded nats-server started":
            server_pid = rec["pid"]
        if rec.get("event") == "mt5d ready":
            break
        assert time.monotonic() < deadline, "daemon did not become ready"
    assert server_pid
    proc.send_signal(signum)
    _, rest = proc.communicate(timeout=15)
    lines += rest.splitlines()
    assert proc.returncode == 0, "".join(lines[-5:])
    assert "Traceback" not in "".join(lines)
    # A stop asked for is no fault: nothing on the way out warns (say, of a lost NATS link).
    stopping = [msgspec.json.decode(line) for line in rest.splitlines() if line.startswith("{")]
    assert any(r.get("event") == "mt5d stopped" for r in stopping)
    assert not [r for r in stopping if r.get("level") in ("WARNING", "ERROR", "CRITICAL")], rest
    # The daemon stops and reaps its nats-server child before it exits.
    with pytest.raises(ProcessLookupError):
        os.kill(server_pid, 0)
