"""mt5d killed with SIGKILL and started again: the deals made meanwhile are published once, none twice.

The terminal outlives mt5d here, as a real one does: the sim runs behind an
rpyc bridge (its own process) with a scripted trade every 2 s.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.helpers import AccountCollector, RpycBridge, eventually, unique_account

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def anyio_backend():
    return "asyncio"


def _config(path: Path, nats_url: str, account: str, port: int, state_dir: Path) -> Path:
    path.write_text(f"""
[terminal]
backend = "rpyc"
rpyc_port = {port}
login = 10001234
connection_timeout = 3.0
operation_timeout = 3.0
[stream]
symbols = ["EURUSD"]
timeframes = []
poll_interval = 0.05
idle_poll_interval = 0.1
state_dir = "{state_dir}"
[account]
interval = 0.2
[nats]
url = "{nats_url}"
account = "{account}"
[rpc]
enabled = false
""")
    return path


def _start(config: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mt5d.daemon.cli", "run", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)


async def test_sigkill_and_restart_publish_every_deal_once(nats_url, tmp_path):
    account = unique_account("kill")
    # A deal every 2 s for a minute: buy at even steps, close it at odd ones.
    script = []
    for i in range(30):
        k = len(script) + 1
        script.append({"at": 3.0 + 4 * i, "action": "buy", "symbol": "EURUSD", "volume": 0.1})
        script.append({"at": 5.0 + 4 * i, "action": "close", "ticket": k})
    bridge = RpycBridge(seed=11, ticks_per_second=8.0, trades=script)
    state = tmp_path / "state"
    state.mkdir()
    config = _config(tmp_path / "config.toml", nats_url, account, bridge.port, state)
    col = await AccountCollector(account).start(nats_url)
    proc = _start(config)
    try:
        await col.wait_for(lambda: len(col.of("deal")) >= 2, timeout=30)
        # Kill right after the newest deal is on disk (the next one is ~2 s away).
        last = col.of("deal")[-1]
        state_file = state / f"capture-{account}.json"

        def saved() -> bool:
            try:
                return tuple(json.loads(state_file.read_text()).get("deals") or ()) == (last.time_msc_broker,
                                                                                       last.ticket)
            except (OSError, ValueError):
                return False

        await eventually(saved, timeout=5)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        before = len(col.of("deal"))
        down_from = time.time()
        # Down long enough for two or three deals to happen at the terminal.
        await eventually(lambda: time.time() - down_from > 5.0, timeout=10, step=0.1)
        restarted_ms = int(time.time() * 1000)
        proc = _start(config)
        await col.wait_for(lambda: len(col.of("deal")) >= before + 4, timeout=30)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        await col.close()
        bridge.stop()
    got = [d.ticket for d in col.of("deal")]
    assert len(got) == len(set(got)), f"a deal was published twice: {got}"
    assert got == sorted(got) and got[-1] - got[0] == len(got) - 1, f"a deal is missing: {got}"
    # the deals of the downtime came after the restart (different epochs), none lost
    epochs = [d.epoch for d in col.of("deal")]
    assert len(set(epochs)) == 2 and epochs == sorted(epochs)
    assert len([d for d in col.of("deal") if d.epoch == epochs[-1]]) >= 4
    made_while_down = [d for d in col.of("deal") if down_from * 1000 < d.time_utc_ms < restarted_ms]
    assert len(made_while_down) >= 2 and all(d.epoch == epochs[-1] for d in made_while_down)
