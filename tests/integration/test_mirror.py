"""TerminalState: a mirror driven by the streams equals the request-reply snapshots at 20 random
moments of a two-minute scripted run (sim time, run 4x faster than the wall clock)."""

from __future__ import annotations

import random
import time

import anyio
import nats
import pytest

from mt5d import MT5Client, TerminalState
from mt5d.daemon.app import Daemon
from mt5d.daemon.terminal.sim import SimTerminal
from tests.integration.helpers import eventually, make_config, running, unique_account

pytestmark = pytest.mark.anyio
SPEED = 4.0  # sim seconds per wall second
RUN = 120.0  # sim seconds


@pytest.fixture
def anyio_backend():
    return "asyncio"


def busy_script(rng: random.Random, sim: SimTerminal) -> list[dict]:
    """A trade about every 1.5 sim seconds: opens, partial closes, SL/TP changes, pending orders."""
    script, t = [], 2.0
    opened: list[int] = []
    pending: list[int] = []
    while t < RUN:
        k = len(script) + 1
        roll = rng.random()
        symbol = rng.choice(["EURUSD", "GBPUSD", "USDJPY"])
        if roll < 0.3 or not opened:
            script.append({"at": t, "action": rng.choice(["buy", "sell"]), "symbol": symbol, "volume": 0.3})
            opened.append(k)
        elif roll < 0.45:
            script.append({"at": t, "action": "close", "ticket": rng.choice(opened), "volume": 0.1})
        elif roll < 0.55:
            script.append({"at": t, "action": "close", "ticket": opened.pop(rng.randrange(len(opened)))})
        elif roll < 0.7:
            far = {"EURUSD": 0.5, "GBPUSD": 0.6, "USDJPY": 50.0}[symbol]
            script.append({"at": t, "action": "buy_limit", "symbol": symbol, "volume": 0.1, "price": far})
            pending.append(k)
        elif roll < 0.8 and pending:
            script.append({"at": t, "action": "cancel", "ticket": pending.pop(0)})
        else:
            # an SL far away on a position (refused harmlessly if it was a sell or closed)
            script.append({"at": t, "action": "modify", "ticket": rng.choice(opened), "sl": 0.01})
        t += rng.uniform(0.5, 2.5)
    return script


def same(mirror: TerminalState, positions, orders) -> bool:
    key_p = lambda p: (p.ticket, p.symbol, p.type, p.volume, p.price_open, p.sl, p.tp)  # noqa: E731
    key_o = lambda o: (o.ticket, o.symbol, o.type, o.state, o.volume_current, o.price_open, o.sl, o.tp)  # noqa: E731
    return (sorted(map(key_p, mirror.positions.values())) == sorted(map(key_p, positions))
            and sorted(map(key_o, mirror.orders.values())) == sorted(map(key_o, orders)))


async def test_mirror_equals_snapshots_at_random_moments(nats_url):
    rng = random.Random(2026)
    acct = unique_account("mirror")
    t_start = time.time()
    fast = lambda: t_start + (time.time() - t_start) * SPEED  # noqa: E731
    sim = SimTerminal(seed=3, ticks_per_second=4.0, clock=fast)
    sim.add_trades(busy_script(rng, sim))
    cfg = make_config(nats_url, acct, stream={"symbols": ["EURUSD", "GBPUSD", "USDJPY"], "timeframes": [],
                                              "poll_interval": 0.05, "idle_poll_interval": 0.05},
                      **{"account": {"interval": 0.1, "heartbeat": 1.0}})
    daemon = Daemon(cfg, module=sim, wall_clock=fast)
    nc = await nats.connect(nats_url)
    client = MT5Client(nc, account=acct)
    moments = sorted(rng.uniform(5.0, RUN) / SPEED for _ in range(20))  # wall seconds after start
    checked = []
    try:
        async with running(daemon):
            await eventually(lambda: daemon.tracker.view.synced, timeout=10)
            async with TerminalState(client) as mirror:
                for at in moments:
                    await eventually(lambda: time.time() - t_start >= at, timeout=RUN, step=0.01)
                    for _attempt in range(200):
                        pos = await client.fetch_positions()
                        orders = await client.fetch_orders()
                        # the mirror has caught up with both snapshots...
                        with anyio.fail_after(5):
                            while mirror.seq < max(pos.seq, orders.seq) or mirror.epoch != pos.epoch:
                                await anyio.sleep(0.005)
                        again = await client.fetch_positions()
                        # ...and nothing happened since (else: take them again)
                        if again.seq == orders.seq == mirror.seq:
                            assert same(mirror, again.positions, orders.orders), (at, mirror.positions, again.positions)
                            checked.append((len(again.positions), len(orders.orders)))
                            break
                    else:
                        raise AssertionError(f"no quiet moment to compare at {at:.1f} s")
                assert mirror.resyncs == 0
    finally:
        await nc.close()
    assert len(checked) == 20
    assert sum(1 for p, o in checked if p) >= 10 and any(o for _, o in checked)  # there was something to mirror
