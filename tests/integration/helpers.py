"""Test helpers: a daemon in-process against a real nats-server, and a collecting subscriber."""

from __future__ import annotations

import contextlib
import itertools
from collections import defaultdict

import anyio
import nats

from mt5d.daemon.app import Daemon
from mt5d.daemon.config import parse_config
from mt5d.daemon.tools.rpyc_bridge import RpycBridge  # noqa: F401  (re-exported for the tests)
from mt5d.codec import Codec
from mt5d.market import Candle, HealthEvent, Tick

_ids = itertools.count(1)


def unique_account(name: str) -> str:
    return f"t{next(_ids)}{name}"


def make_config(nats_url: str, account: str, **sections):
    raw = {
        "terminal": {"backend": "sim", "login": 10001234, "operation_timeout": 2.0, "connection_timeout": 2.0},
        "stream": {"poll_interval": 0.02, "idle_poll_interval": 0.1},
        "nats": {"url": nats_url, "account": account},
        "health": {"interval": 0.2},
        "breaker": {"max_failures": 2, "backoff_base_seconds": 0.5, "backoff_max_seconds": 2.0},
    }
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return parse_config(raw, env={})


class Collector:
    """Subscribes to one account's subjects and keeps what arrives, decoded with schemas only."""

    def __init__(self, account: str, encoding: str = "json") -> None:
        self.account = account
        self.codec = Codec(encoding)
        self.ticks: dict[str, list[Tick]] = defaultdict(list)
        self.candles: list[Candle] = []
        self.health: list[HealthEvent] = []
        self.subjects: set[str] = set()
        self._changed = anyio.Event()
        self.nc = None

    async def start(self, url: str) -> "Collector":
        self.nc = await nats.connect(url)
        dec_tick, dec_candle, dec_health = (self.codec.decoder(t) for t in (Tick, Candle, HealthEvent))

        async def on_tick(msg):
            t = dec_tick.decode(msg.data)
            self.ticks[t.symbol].append(t)
            self.subjects.add(msg.subject)
            self._poke()

        async def on_candle(msg):
            self.candles.append(dec_candle.decode(msg.data))
            self.subjects.add(msg.subject)
            self._poke()

        async def on_health(msg):
            self.health.append(dec_health.decode(msg.data))
            self._poke()

        await self.nc.subscribe(f"mt5.{self.account}.tick.>", cb=on_tick, pending_msgs_limit=1_000_000)
        await self.nc.subscribe(f"mt5.{self.account}.candle.>", cb=on_candle)
        await self.nc.subscribe(f"mt5.{self.account}.health", cb=on_health)
        # Two flushes: nats-py's PING can overtake SUBs still in its buffer.
        await self.nc.flush()
        await self.nc.flush()
        return self

    def _poke(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for(self, predicate, timeout: float, what: str = "condition"):
        with anyio.fail_after(timeout):
            while not predicate():
                await self._changed.wait()

    async def close(self) -> None:
        if self.nc is not None:
            await self.nc.drain()


@contextlib.asynccontextmanager
async def running(daemon: Daemon):
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        try:
            yield daemon
        finally:
            tg.cancel_scope.cancel()



async def eventually(predicate, timeout: float, step: float = 0.02) -> None:
    """Await a condition nothing signals (another process's state), checking every ``step``."""
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(step)


def assert_same_as_history(module, symbol: str, got: list[tuple[int, int, float, float]]) -> None:
    """``got`` — (time_msc, index_in_ms, bid, ask) as received — is exactly the terminal's
    history from its first tick to its last: nothing missing, nothing twice, in order."""
    hist = module.copy_ticks_range(symbol, got[0][0] // 1000, got[-1][0] // 1000 + 1, -1)
    expected, k, prev = [], 0, None
    for m, b, a in zip(hist["time_msc"].tolist(), hist["bid"].tolist(), hist["ask"].tolist()):
        k = k + 1 if m == prev else 0
        prev = m
        if got[0][0] <= m <= got[-1][0]:
            expected.append((m, k, b, a))
    start = expected.index(got[0])
    assert got == expected[start:], f"{symbol}: {len(got)} received vs {len(expected) - start} in history"
