"""Test helpers: a daemon in-process against a real nats-server, and a collecting subscriber."""

from __future__ import annotations

import contextlib
import itertools
import signal
import subprocess
import sys
from collections import defaultdict

import anyio
import anyio.abc
import nats

from mt5d.daemon.app import Daemon
from mt5d.daemon.config import parse_config
from mt5d.daemon.tools.rpyc_bridge import RpycBridge  # noqa: F401  (re-exported for the tests)
from mt5d.codec import Codec
from mt5d.market import Candle, HealthEvent, Tick

_ids = itertools.count(1)


def unique_account(name: str) -> str:
    return f"t{next(_ids)}{name}"


def make_config(nats_url: str, account: str, /, **sections):
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
        self.nc = await nats.connect(url.split(","), max_reconnect_attempts=-1, reconnect_time_wait=0.2)
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



async def closed_window(col: Collector, symbol: str, timeout: float = 10.0) -> list[Tick]:
    """What ``col`` received of ``symbol`` up to its newest millisecond, returned once a
    later tick arrived: a symbol's ticks arrive in order, so then no tick of that window
    is still on its way (a batch can reach a subscriber in several reads; judging the
    window while its last millisecond is half in would see a "missing" tick)."""
    end = col.ticks[symbol][-1].time_utc_ms
    await col.wait_for(lambda: col.ticks[symbol][-1].time_utc_ms > end, timeout, what=f"a {symbol} tick after {end}")
    return [t for t in col.ticks[symbol] if t.time_utc_ms <= end]


async def stored_messages(js, subject: str, timeout: float = 30.0) -> list:
    """Every message a JetStream stream holds on ``subject``, in order: read until the
    consumer has none pending (a closed window: never "whatever came within a second")."""
    sub = await js.subscribe(subject, ordered_consumer=True)
    out = []
    try:
        with anyio.fail_after(timeout):
            while True:
                msg = await sub.next_msg(timeout=timeout)
                out.append(msg)
                if msg.metadata.num_pending == 0:
                    return out
    finally:
        await sub.unsubscribe()


async def eventually(predicate, timeout: float, step: float = 0.02) -> None:
    """Await a condition nothing signals (another process's state), checking every ``step``."""
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(step)


def assert_same_as_history(module, symbol: str, got: list[tuple[int, int, float, float]]) -> None:
    """``got`` — (time_msc, index_in_ms, bid, ask) as received — is exactly the terminal's
    history from its first tick to its last: nothing missing, nothing twice, in order.

    The window is closed at both ends by what was received: a daemon stopped in the
    middle of a batch leaves the rest of its last millisecond unpublished, and that is
    outside the window, not a loss."""
    hist = module.copy_ticks_range(symbol, got[0][0] // 1000, got[-1][0] // 1000 + 1, -1)
    expected, k, prev = [], 0, None
    for m, b, a in zip(hist["time_msc"].tolist(), hist["bid"].tolist(), hist["ask"].tolist()):
        k = k + 1 if m == prev else 0
        prev = m
        if got[0][:2] <= (m, k) <= got[-1][:2]:
            expected.append((m, k, b, a))
    if got != expected:  # the window is [got[0], got[-1]]: expected starts and ends with them
        at = next((i for i, (g, e) in enumerate(zip(got, expected)) if g != e), min(len(got), len(expected)))
        raise AssertionError(f"{symbol}: {len(got)} received vs {len(expected)} in history; first difference at "
                             f"{at}: got {got[max(0, at - 2):at + 3]} expected {expected[max(0, at - 2):at + 3]}")


class AccountCollector:
    """Subscribes to one account's account/position/order/deal subjects; keeps (received wall ms, message)."""

    def __init__(self, account: str, encoding: str = "json") -> None:
        from mt5d.account import AccountSnapshot, Deal, OrderEvent, PositionEvent

        self.account = account
        self.codec = Codec(encoding)
        self._types = {"account": AccountSnapshot, "position": PositionEvent, "order": OrderEvent, "deal": Deal}
        self.got: dict[str, list] = defaultdict(list)
        self.subjects: list[str] = []
        self._changed = anyio.Event()
        self.nc = None

    async def start(self, url: str) -> "AccountCollector":
        import time

        self.nc = await nats.connect(url)
        for kind, typ in self._types.items():
            dec = self.codec.decoder(typ)

            async def on_msg(msg, kind=kind, dec=dec):
                self.got[kind].append((int(time.time() * 1000), dec.decode(msg.data)))
                self.subjects.append(msg.subject)
                self._changed.set()
                self._changed = anyio.Event()

            await self.nc.subscribe(f"mt5.{self.account}.{kind}" + ("" if kind == "account" else ".*"), cb=on_msg)
        await self.nc.flush()
        await self.nc.flush()
        return self

    def of(self, kind: str) -> list:
        return [m for _, m in self.got[kind]]

    async def wait_for(self, predicate, timeout: float):
        with anyio.fail_after(timeout):
            while not predicate():
                await self._changed.wait()

    async def close(self) -> None:
        if self.nc is not None:
            await self.nc.drain()


def future_level(sim, symbol: str, side: str, after: float, until: float) -> tuple[float, float]:
    """(level, at): the lowest (side "ask_min"/"bid_min") or highest ("bid_max"/"ask_max") price the
    sim's symbol reaches between ``after`` and ``until`` seconds after its start (a pure function
    of time, read from a second sim whose clock is already there), and the price at ``after``."""
    import numpy as np

    from mt5d.daemon.terminal.sim import SimTerminal

    peek = SimTerminal(seed=sim.seed, ticks_per_second=sim.ticks_per_second, clock=lambda: sim.start + until)
    peek.initialize()
    a_ms, b_ms = sim.broker_time_msc(sim.start + after), sim.broker_time_msc(sim.start + until)
    ticks = peek.copy_ticks_range(symbol, a_ms // 1000, b_ms // 1000 + 1, -1)
    ticks = ticks[(ticks["time_msc"] > a_ms) & (ticks["time_msc"] <= b_ms)]
    field, fn = side.split("_")
    then = SimTerminal(seed=sim.seed, ticks_per_second=sim.ticks_per_second, clock=lambda: sim.start + after)
    then.initialize()
    at = float(getattr(then.symbol_info_tick(symbol), field))
    # No tick in the window (a quiet stretch): the price stays where it was at ``after``.
    return (float(getattr(np, fn)(ticks[field])) if len(ticks) else at), at


async def stored_ticks(js, stream: str, subject: str) -> list[tuple[int, int, float, float]]:
    """Every tick a JetStream stream holds on ``subject``, in order, as (time_msc, index_in_ms, bid, ask)."""
    import msgspec
    import nats.js.errors

    try:
        last = (await js.get_last_msg(stream, subject)).seq
    except nats.js.errors.NotFoundError:
        return []
    sub = await js.subscribe(subject, ordered_consumer=True, stream=stream)
    got = []
    try:
        while True:
            msg = await sub.next_msg(timeout=10)
            t = msgspec.json.decode(msg.data)
            got.append((t["time_msc_broker"], t["index_in_ms"], t["bid"], t["ask"]))
            if msg.metadata.sequence.stream >= last:
                return got
    finally:
        await sub.unsubscribe()


async def stored_count(js, stream: str) -> int:
    return (await js.stream_info(stream)).state.messages


class DaemonProcess:
    """A daemon in a child process (the bench's child runner), so it can be SIGKILLed for real."""

    def __init__(self, raw: dict, log_path) -> None:
        self.raw = raw
        self.log_path = log_path
        self.proc = None

    async def start(self, timeout: float = 60.0) -> "DaemonProcess":
        import json
        import subprocess
        import sys

        self._log = open(self.log_path, "ab")
        self.proc = await anyio.open_process(
            [sys.executable, "-m", "mt5d.daemon.tools.bench", "child", json.dumps(self.raw)],
            stdout=subprocess.PIPE, stderr=self._log)
        buf = b""
        with anyio.fail_after(timeout):
            while b'"ready"' not in buf:
                chunk = await self.proc.stdout.receive()
                buf += chunk
        return self

    def kill(self) -> None:
        """SIGKILL: no clean stop, the lease is not released."""
        self.proc.kill()

    async def stop(self, timeout: float = 30.0) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
        with anyio.fail_after(timeout):
            await self.proc.wait()
        await self.proc.aclose()
        self._log.close()


def reference_terminal(cfg):
    """A terminal identical to the daemon's (same seed, symbols, rate): the history to compare with."""
    from mt5d.daemon.app import open_terminal

    module = open_terminal(cfg)
    module.initialize()
    for symbol in cfg.stream.symbols:
        module.symbol_select(symbol, True)
    return module


async def lease_holder(js, bucket: str) -> str | None:
    """The node name in the hot-standby lease, or None when nobody holds it."""
    import nats.js.errors

    try:
        kv = await js.key_value(bucket)
        entry = await kv.get("leader")
    except (nats.js.errors.NotFoundError, nats.js.errors.BucketNotFoundError, nats.js.errors.KeyDeletedError):
        return None
    except Exception:
        return None
    return entry.value.decode() if entry.value else None


class CliProcess:
    """``mt5d run --config PATH`` as a child process, its output appended to ``log_path``."""

    def __init__(self, config_path, log_path) -> None:
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "mt5d.daemon.cli", "run", "--config", str(config_path)],
                                     stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout: float = 20.0) -> int:
        """Signal it (SIGTERM: a clean stop; SIGKILL: a crash) and wait; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        finally:
            self.log.close()


class SlowLink:
    """A TCP proxy in front of a real nats-server that delays everything the server sends by
    ``delay`` seconds, in order (a slow network or a starved server, as the client sees it)."""

    def __init__(self, target_port: int, delay: float) -> None:
        self._target, self._delay = target_port, delay
        self.port = 0

    async def run(self, *, task_status=anyio.TASK_STATUS_IGNORED) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        async with listener:
            task_status.started()
            await listener.serve(self._pair)

    async def _pair(self, client) -> None:
        server = await anyio.connect_tcp("127.0.0.1", self._target)
        send, receive = anyio.create_memory_object_stream[tuple[float, bytes]](10_000)
        async with client, server, anyio.create_task_group() as tg:
            tg.start_soon(self._copy, client, server)
            tg.start_soon(self._read_late, server, send)
            tg.start_soon(self._write_late, receive, client)

    @staticmethod
    async def _copy(src, dst) -> None:
        with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            async for chunk in src:
                await dst.send(chunk)

    async def _read_late(self, src, send) -> None:
        async with send:
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                async for chunk in src:
                    await send.send((anyio.current_time() + self._delay, chunk))

    @staticmethod
    async def _write_late(receive, dst) -> None:
        async with receive:
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                async for due, chunk in receive:
                    await anyio.sleep(max(0.0, due - anyio.current_time()))  # the link's delay itself
                    await dst.send(chunk)
