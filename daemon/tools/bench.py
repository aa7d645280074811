"""``mt5d bench``: throughput, CPU, latency, completeness and memory, on this machine.

Every phase runs the daemon as a child process (so its CPU and memory are its
own) with the sim terminal, against an embedded nats-server, and a nats-py
subscriber in this process receiving what it publishes:

- saturation: a sim offering 170,000 ticks/s (about what one Python subscriber
  takes; more, and the server cuts it off as a slow consumer); ticks/s that
  reach the subscriber and daemon CPU per tick, next to a raw nats-py loop
  publishing pre-encoded payloads of the same size through the same server to
  the same subscriber (the ratio is the daemon's efficiency). The sim's cache
  holds two minutes of those ticks: ~1 GB in that daemon child;
- realistic: 50 symbols, 10,000 ticks/s in all, 10 ms poll: CPU % (and the
  daemon's own share, without the CPU inside the terminal's functions), latency
  from a tick's time in the terminal to its receipt, RSS;
- realistic over rpyc: the same load with the sim behind the rpyc loopback
  bridge (the deployment on Linux): the daemon's process CPU (the terminal is
  in the bridge's process) and latency;
- naive: the loop users would write (``symbol_info_tick`` -> JSON -> NATS every
  10 ms) at the same load, in its own process: its CPU and what it delivers;
- floor: what any design pays at that load before it builds a tick, in a
  process of its own: waking every 10 ms, then writing the PUB lines of 100
  ticks at each wake, then a no-op terminal-thread round trip before the write,
  then a bridge's round trip instead (loopback TCP to another process, a poll
  cycle's plan out and its answer back);
- idle: 50 symbols (10 of them with a book), no ticks, 10 ms poll: CPU %, with
  account tracking on (the default) and off;
- books: 10 symbols with a 10-level book each, 10 ticks/s (so 10 book
  changes/s) per symbol, 100 ms throttle, 10 ms poll: CPU % with and without
  the books and books/s reaching a subscriber; and (with the call costs) the
  book part of one poll cycle in µs;
- completeness: ticks received vs the terminal's history over the run, across
  a scripted disconnect and a nats-server restart (judged by a JetStream
  stream on the tick subjects), next to a naive ``symbol_info_tick`` loop;
- jetstream: the saturation phase with ``[jetstream]`` on: ticks/s stored
  (acknowledged by the stream) and daemon CPU per tick, next to the core
  path's figures of the same run;
- failover: two daemons with ``[ha]`` on (default TTL), the leader SIGKILLed
  5 times: time from the kill to the first tick from the new leader (p50,
  max), ticks lost and duplicates stored (the stream vs the sim's history).

And one poll cycle on a virtual clock (``phase_cycle``): its CPU in µs, and the
Python opcodes it runs (own, and inside the terminal's functions). The count is the
same on any machine at any load: a change's effect on the daemon's Python work
shows in one run, where CPU figures on a shared machine need paired repeats.

Saturation, realistic (both), naive and floor run ``REPEATS`` times: each figure is
the median, with ``<key>_min`` and ``<key>_max`` beside it.

``--faults SECONDS`` runs the fault soak instead (``fault_soak.py``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
import msgspec
from mt5d.client import open_nats
import numpy as np

from mt5d.daemon.natsserver import NatsServer
from mt5d.subjects import DEFAULT_PREFIX, Subjects, escape_token, last_value_stream, stream_name

SYMBOLS_50 = 50
SATURATION_TPS = 3400.0  # per symbol: 170,000 ticks/s offered, near what one Python subscriber takes
ACCOUNT = "bench"
SUBJECTS = Subjects(DEFAULT_PREFIX, ACCOUNT)  # the bench daemons' subjects (nats.prefix left at its default)


def _naive_subject(symbol: str = ">") -> str:
    """The naive loop's own subjects, ``<prefix>.<account>.naive.<symbol>`` (``>``: all of them).

    A baseline script's subjects, not the daemon's: deliberately no kind of the grammar in
    ``mt5d.subjects`` (a benchmark adds no product subject). Only the ``<prefix>.<account>.``
    head is taken from ``Subjects`` (inside its ``everything()``), and the symbol is escaped
    as the grammar escapes it."""
    head = SUBJECTS.everything().removesuffix(">")
    return head + "naive." + (symbol if symbol == ">" else escape_token(symbol))


# ---- the daemon child ----------------------------------------------------------
def _child_main(raw_json: str) -> int:
    """Run a daemon until SIGTERM; print its CPU and memory figures as JSON."""
    from mt5d.daemon.app import Daemon, settle_gc
    from mt5d.daemon.config import parse_config
    from mt5d.daemon.app import open_terminal

    cfg = parse_config(msgspec.json.decode(raw_json), env={})
    # In process, the CPU inside the terminal's own functions is the terminal's, not mt5d's.
    module = open_terminal(cfg) if cfg.terminal.backend == "sim" else None
    timed = _TimedTerminal(module) if module is not None else None
    daemon = Daemon(cfg, module=timed)
    out: dict = {}

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(daemon.run)
            settle_gc()  # as mt5d run does
            per_call, inside = _TimedTerminal.overhead() if timed else (0.0, 0.0)
            cpu0, term0 = time.process_time(), timed.cpu_seconds if timed else 0.0
            calls0 = timed.calls if timed else 0
            wall0, pub0 = time.perf_counter(), daemon.publisher.published
            profile = os.environ.get("MT5D_BENCH_PROFILE")  # cProfile of the event loop's thread, to this file
            if profile:
                import cProfile

                prof = cProfile.Profile()
                prof.enable()
            print('{"ready": true}', flush=True)
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    break
            if profile:
                prof.disable()
                prof.dump_stats(profile)
            calls = (timed.calls if timed else 0) - calls0
            out.update(
                wall=time.perf_counter() - wall0,
                # Without the bench's own counting of the terminal's CPU (see _TimedTerminal).
                cpu=time.process_time() - cpu0 - calls * per_call,
                terminal_cpu=(timed.cpu_seconds if timed else 0.0) - term0 - calls * inside,
                terminal_calls=calls,
                counting_us_per_call=round(per_call * 1e6, 3),
                published=daemon.publisher.published - pub0,
                rss_mb=_rss_mb(),
            )
            tg.cancel_scope.cancel()

    anyio.run(main)
    print(msgspec.json.encode(out).decode(), flush=True)
    return 0


class _TimedTerminal:
    """The terminal module with the CPU time spent inside its functions counted (bench only).

    Counting costs two ``thread_time`` calls per terminal call (about a µs
    each here); ``overhead()`` measures that on a no-op so the figures can
    leave the instrument's own cost out.
    """

    def __init__(self, module) -> None:
        self._module = module
        self.cpu_seconds = 0.0
        self.calls = 0

    def __getattr__(self, name: str):
        attr = getattr(self._module, name)
        if not callable(attr) or name.startswith("_"):
            return attr
        self.__dict__[name] = call = self._wrap(attr)
        return call

    def _wrap(self, fn):
        clock = time.thread_time

        def call(*args, **kwargs):
            c0 = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                self.cpu_seconds += clock() - c0
                self.calls += 1

        return call

    @staticmethod
    def overhead(n: int = 20_000) -> tuple[float, float]:
        """CPU seconds per call the counting adds: (in all, of it counted as inside the terminal)."""
        probe = _TimedTerminal(None)
        noop = probe._wrap(lambda: None)
        direct = lambda: None  # noqa: E731
        c0 = time.thread_time()
        for _ in range(n):
            direct()
        c1 = time.thread_time()
        for _ in range(n):
            noop()
        c2 = time.thread_time()
        return max(0.0, ((c2 - c1) - (c1 - c0)) / n), probe.cpu_seconds / n


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


class Child:
    def __init__(self, raw: dict) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mt5d.daemon.tools.bench", "child", msgspec.json.encode(raw).decode()],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        line = self.proc.stdout.readline()
        if not line or not msgspec.json.decode(line).get("ready"):
            raise RuntimeError("bench daemon did not start")

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> dict:
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=30)
        return msgspec.json.decode(out.strip().splitlines()[-1])


def _config(url: str, *, tps: float, poll: float, symbols: int = SYMBOLS_50, faults=(), msg_id=False,
            books: int = 0, account: bool = True, rpyc_port: int = 0, acct: str = ACCOUNT,
            jetstream: dict | None = None, ha: dict | None = None) -> dict:
    from mt5d.daemon.terminal.sim import SimTerminal, synthetic_symbols

    names = [s.name for s in synthetic_symbols(symbols)]
    # A fixed broker offset: without ticks "auto" never learns it, and account tracking waits for it.
    off = SimTerminal(seed=7).utc_offset_seconds(time.time())
    terminal = ({"backend": "rpyc", "login": 10001234, "rpyc_host": "127.0.0.1", "rpyc_port": rpyc_port} if rpyc_port else
                {"backend": "sim", "login": 1, "sim": {
                    "seed": 7, "synthetic_symbols": symbols, "ticks_per_second": tps, "faults": list(faults)}})
    extra = {}
    if jetstream is not None:
        extra["jetstream"] = jetstream
    if ha is not None:
        extra["ha"] = ha
    return {**extra,
        "account": {"enabled": account},
        "terminal": terminal,
        "stream": {"symbols": names, "timeframes": ["M1"], "poll_interval": poll, "idle_poll_interval": max(poll, 0.25),
                   "books": names[:books], "book_interval": 0.1,
                   "server_utc_offset": f"{'+' if off >= 0 else '-'}{abs(off) // 3600:02d}:{abs(off) % 3600 // 60:02d}"},
        "nats": {"url": url, "account": acct, "msg_id": msg_id},
        "health": {"interval": 1.0},
        "breaker": {"max_failures": 2, "backoff_base_seconds": 1.0, "backoff_max_seconds": 4.0},
        "logging": {"level": "ERROR"},
    }


# ---- the subscriber ------------------------------------------------------------------
class Receiver:
    def __init__(self) -> None:
        self.count = 0
        self.latencies: list[float] = []
        self.keep_latency = False
        self.payload_sizes = 0

    async def start(self, url: str, subject: str):
        self.nc = await open_nats(url, pending_size=64 * 1024 * 1024)
        time_utc = msgspec.json.Decoder(_TimeOnly)

        async def on_msg(msg):
            self.count += 1
            if self.keep_latency:
                self.latencies.append(time.time() * 1000 - time_utc.decode(msg.data).time_utc_ms)
            else:
                self.payload_sizes += len(msg.data)

        await self.nc.subscribe(subject, cb=on_msg, pending_msgs_limit=10_000_000, pending_bytes_limit=-1)
        await self.nc.flush()
        return self


class _TimeOnly(msgspec.Struct):
    time_utc_ms: int


async def _window(seconds: float) -> None:
    await anyio.sleep(seconds)


# ---- phases --------------------------------------------------------------------------
async def phase_saturation(url: str, seconds: float) -> dict:
    rx = await Receiver().start(url, SUBJECTS.all_ticks())
    child = Child(_config(url, tps=SATURATION_TPS, poll=0.01))
    await anyio.sleep(4.0)  # warm up (the sim makes each symbol's current minute at its first look: ~3 s)
    n0 = rx.count
    size0 = rx.payload_sizes
    t0 = time.perf_counter()
    await _window(seconds)
    stats = child.stop()
    n, dt = rx.count - n0, time.perf_counter() - t0
    size = (rx.payload_sizes - size0) / max(n, 1)
    daemon_rate = n / dt
    raw_rate = await _raw_loop(url, rx, int(size), seconds)
    await rx.nc.close()
    return {
        "saturation_ticks_per_s": round(daemon_rate),
        "saturation_cpu_us_per_tick": round(stats["cpu"] / max(stats["published"], 1) * 1e6, 2),
        # Without the CPU inside the terminal's functions (the sim re-reading each cursor's second).
        "saturation_own_cpu_us_per_tick": round((stats["cpu"] - stats["terminal_cpu"]) / max(stats["published"], 1)
                                                * 1e6, 2),
        "saturation_offered_ticks_per_s": round(SATURATION_TPS * SYMBOLS_50),
        "raw_loop_msgs_per_s": round(raw_rate),
        "saturation_ratio": round(daemon_rate / raw_rate, 3),
        "payload_bytes": int(size),
    }


async def _raw_loop(url: str, rx: Receiver, size: int, seconds: float) -> float:
    """Pre-encoded payloads of the same size, as fast as nats-py publishes them, to the same subscriber."""
    pub = await open_nats(url, pending_size=2 * 1024 * 1024)
    payload = b"x" * size
    subjects = [SUBJECTS.tick(f"RAW{i:03d}") for i in range(SYMBOLS_50)]
    n0 = rx.count
    t0 = time.perf_counter()
    end = t0 + seconds
    i = 0
    while time.perf_counter() < end:
        for subject in subjects:
            await pub.publish(subject, payload)
        i += 1
        if i % 20 == 0:
            await pub.flush()
    await pub.flush()
    sent_dt = time.perf_counter() - t0
    with anyio.move_on_after(10):
        while rx.count - n0 < i * len(subjects):
            await anyio.sleep(0.05)
    dt = time.perf_counter() - t0
    await pub.close()
    return (rx.count - n0) / max(dt, sent_dt)


async def phase_realistic(url: str, seconds: float, *, soak: float = 0.0, rpyc: bool = False) -> dict:
    """50 symbols at 10,000 ticks/s, 10 ms poll: the sim in process, or over the rpyc loopback bridge."""
    bridge = None
    if rpyc:
        from mt5d.daemon.tools.rpyc_bridge import RpycBridge

        bridge = RpycBridge(seed=7, synthetic_symbols=SYMBOLS_50, ticks_per_second=10_000 / SYMBOLS_50)
    try:
        rx = await Receiver().start(url, SUBJECTS.all_ticks())
        child = Child(_config(url, tps=10_000 / SYMBOLS_50, poll=0.01, rpyc_port=bridge.port if bridge else 0))
        await anyio.sleep(2.0)
        rx.keep_latency = True
        rx.latencies.clear()
        rss_start = child.rss_mb()
        n0, t0 = rx.count, time.perf_counter()
        rss_samples = [rss_start]
        end = t0 + max(seconds, soak)
        while time.perf_counter() < end:
            await anyio.sleep(min(5.0, end - time.perf_counter()))
            rss_samples.append(child.rss_mb())
        stats = child.stop()
        dt = time.perf_counter() - t0
        await rx.nc.close()
    finally:
        if bridge is not None:
            bridge.stop()
    lat = np.array(rx.latencies)

    def pct(q: float) -> float | None:
        return round(float(np.percentile(lat, q)), 2) if len(lat) else None

    if rpyc:  # the terminal is in the bridge's process: the daemon's whole process CPU is its own
        return {
            "rpyc_realistic_ticks_per_s": round((rx.count - n0) / dt),
            "rpyc_realistic_cpu_pct": round(stats["cpu"] / stats["wall"] * 100, 2),
            "rpyc_latency_p50_ms": pct(50), "rpyc_latency_p99_ms": pct(99), "rpyc_latency_p999_ms": pct(99.9),
        }
    # Growth over the second half of the run (the first half includes warm-up allocations).
    half = rss_samples[len(rss_samples) // 2]
    return {
        "realistic_ticks_per_s": round((rx.count - n0) / dt),
        "realistic_cpu_pct": round(stats["cpu"] / stats["wall"] * 100, 2),
        "realistic_own_cpu_pct": round((stats["cpu"] - stats["terminal_cpu"]) / stats["wall"] * 100, 2),
        "realistic_terminal_cpu_pct": round(stats["terminal_cpu"] / stats["wall"] * 100, 2),
        "latency_p50_ms": pct(50), "latency_p99_ms": pct(99), "latency_p999_ms": pct(99.9),
        "rss_mb": round(stats["rss_mb"], 1),
        "rss_growth_pct": round((rss_samples[-1] - half) / half * 100, 2) if half else None,
        "rss_window_s": round(dt, 1),
    }


async def phase_naive(url: str, seconds: float) -> dict:
    """The loop users write themselves, at the realistic load: every 10 ms, ``symbol_info_tick``
    for each of 50 symbols, a changed one as JSON to NATS. Its process CPU and what it delivers."""
    rx = await Receiver().start(url, _naive_subject())
    proc = subprocess.Popen([sys.executable, "-m", "mt5d.daemon.tools.bench", "naive", url],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("naive loop did not start")
        await anyio.sleep(2.0)
        cpu0, n0, t0 = _proc_cpu(proc.pid), rx.count, time.perf_counter()
        await anyio.sleep(seconds)
        cpu, n, dt = _proc_cpu(proc.pid) - cpu0, rx.count - n0, time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait(10)
    await rx.nc.close()
    return {"naive_cpu_pct": round(cpu / dt * 100, 2), "naive_ticks_per_s": round(n / dt)}


def _naive_main(url: str) -> int:
    import json

    from mt5d.daemon.terminal.sim import SimTerminal, synthetic_symbols

    syms = list(synthetic_symbols(SYMBOLS_50))
    sim = SimTerminal(seed=7, symbols=syms, ticks_per_second=10_000 / SYMBOLS_50, clock=time.time)
    sim.initialize()
    names = [s.name for s in syms]
    for name in names:
        sim.symbol_select(name, True)

    async def main() -> None:
        nc = await open_nats(url)
        last = dict.fromkeys(names, 0)
        print("ready", flush=True)
        while True:
            for name in names:
                t = sim.symbol_info_tick(name)
                if t is not None and t.time_msc != last[name]:
                    last[name] = t.time_msc
                    await nc.publish(_naive_subject(name), json.dumps(t._asdict()).encode())
            await anyio.sleep(0.01)

    anyio.run(main)
    return 0


FLOOR_MODES = ("wake", "write", "hop_write", "bridge_write")
# bridge_write: the terminal thread's round trip is a poll cycle's over the rpyc bridge instead,
# a plan out and its answer back, sizes as measured at the realistic load (a peer process echoes).
BRIDGE_ASK, BRIDGE_ANSWER = 1536, 7168
_BRIDGE_PEER = f"""
import socket
server = socket.create_server(("127.0.0.1", 0))
print(server.getsockname()[1], flush=True)
conn, _ = server.accept()
conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
answer = bytes({BRIDGE_ANSWER})
while True:
    got = 0
    while got < {BRIDGE_ASK}:
        chunk = conn.recv({BRIDGE_ASK} - got)
        if not chunk:
            raise SystemExit
        got += len(chunk)
    conn.sendall(answer)
"""


async def phase_floor(url: str, seconds: float) -> dict:
    """What any design pays at the realistic load before it builds one tick: a process that wakes
    every 10 ms (``wake``), and writes the PUB lines of a cycle's 100 ticks to NATS at each wake
    (``write``), after a no-op round trip through a terminal thread (``hop_write``), or after a
    terminal-thread round trip that is a bridge's (``bridge_write``: a loopback TCP round trip to
    another process, a poll cycle's plan out and its answer back). Process CPU."""
    rx = await Receiver().start(url, SUBJECTS.all_ticks())
    out = {}
    try:
        for mode in FLOOR_MODES:
            proc = await anyio.run_process([sys.executable, "-m", "mt5d.daemon.tools.bench", "floor", url, mode,
                                            str(seconds)], stderr=subprocess.DEVNULL)
            out[f"floor_{mode}_cpu_pct"] = msgspec.json.decode(proc.stdout)["cpu_pct"]
    finally:
        await rx.nc.close()
    return out


def _floor_main(url: str, mode: str, seconds: float) -> int:
    from mt5d.codec import Codec
    from mt5d.daemon.terminal.thread import TerminalThread
    from mt5d.market import Tick

    codec = Codec("json")
    ticks = [Tick(symbol=f"S{i % SYMBOLS_50}", time_msc_broker=1_764_660_000_123 + i, time_utc_ms=1_764_652_800_123 + i,
                  bid=1.16234, ask=1.16245, last=0.0, volume=0, volume_real=0.0, flags=6) for i in range(100)]
    blob = b"".join(b"PUB %b %d\r\n%b\r\n" % (SUBJECTS.tick(t.symbol).encode(), len(d), d)
                    for t in ticks for d in [codec.encode(t)])
    thread = TerminalThread()
    call = lambda: None  # noqa: E731
    peer = None
    if mode == "bridge_write":
        peer = subprocess.Popen([sys.executable, "-c", _BRIDGE_PEER], stdout=subprocess.PIPE, text=True)
        sock = socket.create_connection(("127.0.0.1", int(peer.stdout.readline())))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ask = bytes(BRIDGE_ASK)

        def call() -> None:
            sock.sendall(ask)
            got = 0
            while got < BRIDGE_ANSWER:
                got += len(sock.recv(BRIDGE_ANSWER - got))

    async def main() -> float:
        nc = await open_nats(url)
        await anyio.sleep(1.0)
        c0, t0 = time.process_time(), time.perf_counter()
        due = t0
        while time.perf_counter() - t0 < seconds:
            if mode in ("hop_write", "bridge_write"):
                await thread.call(call, 5.0)
            if mode != "wake":
                await nc._send_command(blob)
                await nc._flush_pending()
            due += 0.01
            await anyio.sleep(max(0.0, due - time.perf_counter()))
        cpu = (time.process_time() - c0) / (time.perf_counter() - t0) * 100
        await nc.close()
        return cpu

    print(msgspec.json.encode({"cpu_pct": round(anyio.run(main), 2)}).decode(), flush=True)
    thread.stop()
    if peer is not None:
        peer.kill()
    return 0


async def phase_idle(url: str, seconds: float) -> dict:
    """Idle CPU with account tracking on (the default) and off: medians of 3 alternating runs each."""
    runs: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(3):
        for account in (True, False):
            child = Child(_config(url, tps=0.0, poll=0.01, books=BOOK_SYMBOLS, account=account))
            await anyio.sleep(2.0)
            stats0 = _proc_cpu(child.proc.pid)
            t0 = time.perf_counter()
            await anyio.sleep(seconds / 3)
            cpu = _proc_cpu(child.proc.pid) - stats0
            dt = time.perf_counter() - t0
            child.stop()
            runs[account].append(cpu / dt * 100)
    return {"idle_cpu_pct": round(float(np.median(runs[True])), 2),
            "idle_cpu_pct_no_account": round(float(np.median(runs[False])), 2)}


BOOK_SYMBOLS = 10


async def phase_books(url: str, seconds: float) -> dict:
    """10 symbols at 10 ticks/s each, with and without their books: CPU % and books/s received."""
    rx = await Receiver().start(url, SUBJECTS.all_books())
    out = {}
    for books in (BOOK_SYMBOLS, 0):
        child = Child(_config(url, tps=10.0, poll=0.01, symbols=BOOK_SYMBOLS, books=books))
        await anyio.sleep(2.0)
        n0, cpu0, t0 = rx.count, _proc_cpu(child.proc.pid), time.perf_counter()
        await anyio.sleep(seconds)
        cpu, dt = _proc_cpu(child.proc.pid) - cpu0, time.perf_counter() - t0
        n = rx.count - n0
        child.stop()
        key = "books" if books else "nobooks"
        out[f"{key}_cpu_pct"] = round(cpu / dt * 100, 2)
        if books:
            out["books_per_s"] = round(n / dt, 1)
    await rx.nc.close()
    out["books_extra_cpu_pct"] = round(out["books_cpu_pct"] - out["nobooks_cpu_pct"], 2)
    return out


def _proc_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def phase_completeness(server: NatsServer, seconds: float) -> dict:
    """Ticks that reached the server (a JetStream stream) vs the terminal's history."""
    from nats.js.api import StreamConfig

    from mt5d.daemon.terminal.sim import SimTerminal, synthetic_symbols

    url = server.url
    nc = await open_nats(url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name="BENCHTICKS", subjects=[SUBJECTS.all_ticks()],
                                     duplicate_window=120.0))
    nsym = 10
    faults = [{"kind": "disconnect", "at": seconds * 0.25, "duration": 3.0}]
    raw = _config(url, tps=50.0, poll=0.01, symbols=nsym, faults=faults, msg_id=True)
    child = Child(raw)
    naive = _NaiveLoop(nsym)
    async with anyio.create_task_group() as tg:
        tg.start_soon(naive.run)
        await anyio.sleep(seconds * 0.6)
        server.stop()  # a nats-server outage in the middle of the run
        await anyio.sleep(2.0)
        server.start()
        await anyio.sleep(seconds * 0.4)
        naive.stop = True
    child.stop()
    # Read back everything the stream holds, per symbol.
    got: dict[str, list[tuple]] = {}
    names = [s.name for s in synthetic_symbols(nsym)]
    for name in names:
        sub = await js.subscribe(SUBJECTS.tick(name), ordered_consumer=True)
        seq = []
        while True:
            try:
                msg = await sub.next_msg(timeout=1.0)
            except Exception:
                break
            t = msgspec.json.decode(msg.data)
            seq.append((t["time_msc_broker"], t["bid"], t["ask"]))
        await sub.unsubscribe()
        got[name] = seq
    await nc.close()
    sim = SimTerminal(seed=7, symbols=list(synthetic_symbols(nsym)), ticks_per_second=50.0,
                      faults=[], clock=time.time)
    sim.initialize()
    for name in names:
        sim.symbol_select(name, True)
    total = matched = 0
    ordered_exact = True
    naive_seen = naive_total = 0
    for name in names:
        seq = got[name]
        if not seq:
            ordered_exact = False
            continue
        hist = sim.copy_ticks_range(name, seq[0][0] // 1000, seq[-1][0] // 1000 + 1, -1)
        expect = [(int(m), float(b), float(a)) for m, b, a in zip(hist["time_msc"], hist["bid"], hist["ask"])
                  if seq[0][0] <= m <= seq[-1][0]]
        # The daemon starts publishing after the first tick of its start millisecond.
        start = expect.index(seq[0])
        expect = expect[start:]
        total += len(expect)
        matched += sum(1 for a, b in zip(seq, expect) if a == b)
        ordered_exact &= seq == expect
        lo, hi = naive.window
        naive_hist = sim.copy_ticks_range(name, lo // 1000, hi // 1000 + 1, -1)
        in_window = {(int(m), float(b), float(a)) for m, b, a in zip(naive_hist["time_msc"], naive_hist["bid"],
                                                                      naive_hist["ask"]) if lo <= m <= hi}
        naive_total += len(in_window)
        naive_seen += len(in_window & naive.seen.get(name, set()))
    return {
        "completeness": round(matched / total, 6) if total else 0.0,
        "completeness_exact_order": ordered_exact,
        "completeness_ticks": total,
        "naive_completeness": round(naive_seen / naive_total, 4) if naive_total else 0.0,
    }


class _NaiveLoop:
    """The usual approach: poll symbol_info_tick every 10 ms on an identical terminal."""

    def __init__(self, nsym: int) -> None:
        from mt5d.daemon.terminal.sim import SimTerminal, synthetic_symbols

        self.symbols = [s.name for s in synthetic_symbols(nsym)]
        self.sim = SimTerminal(seed=7, symbols=list(synthetic_symbols(nsym)), ticks_per_second=50.0, clock=time.time)
        self.sim.initialize()
        for s in self.symbols:
            self.sim.symbol_select(s, True)
        self.seen: dict[str, set] = {}
        self.stop = False
        self.window = (0, 0)

    async def run(self) -> None:
        lo = hi = 0
        while not self.stop:
            for s in self.symbols:
                t = self.sim.symbol_info_tick(s)
                if t is not None:
                    self.seen.setdefault(s, set()).add((int(t.time_msc), float(t.bid), float(t.ask)))
                    lo = lo or int(t.time_msc)
                    hi = max(hi, int(t.time_msc))
            await anyio.sleep(0.01)
        self.window = (lo, hi)


# ---- JetStream ------------------------------------------------------------------------
async def phase_jetstream(url: str, seconds: float, core: dict) -> dict:
    """The saturation phase again, with every tick stored and acknowledged."""
    account = "benchjs"
    nc = await open_nats(url)
    js = nc.jetstream()
    child = Child(_config(url, tps=2000.0, poll=0.01, acct=account, jetstream={"enabled": True}))
    stream = stream_name(account)
    await anyio.sleep(2.0)  # warm up
    stored0, t0 = (await js.stream_info(stream)).state.messages, time.perf_counter()
    await _window(seconds)
    stored1, dt = (await js.stream_info(stream)).state.messages, time.perf_counter() - t0
    stats = child.stop()
    # A poll cycle's batch counts as published once all of it is acked: per tick, use what the stream holds.
    stored_all = (await js.stream_info(stream)).state.messages
    await js.delete_stream(stream)  # the bench's own data: nothing to keep
    await js.delete_stream(last_value_stream(stream))
    await nc.close()
    rate = (stored1 - stored0) / dt
    return {
        "jetstream_ticks_per_s": round(rate),
        "jetstream_cpu_us_per_tick": round(stats["cpu"] / max(stored_all, 1) * 1e6, 2),
        "jetstream_vs_core": round(rate / max(core["saturation_ticks_per_s"], 1), 3),
    }


class _AsyncChild:
    """A bench daemon child started without blocking the event loop (the failover phase times things)."""

    def __init__(self, raw: dict) -> None:
        self.raw = raw
        self.proc = None

    async def start(self) -> "_AsyncChild":
        self.proc = await anyio.open_process(
            [sys.executable, "-m", "mt5d.daemon.tools.bench", "child", msgspec.json.encode(self.raw).decode()],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        buf = b""
        with anyio.fail_after(60):
            while b'"ready"' not in buf:
                buf += await self.proc.stdout.receive()
        return self

    async def kill(self) -> None:
        self.proc.kill()
        await self.proc.wait()
        await self.proc.aclose()

    async def stop(self) -> None:
        self.proc.terminate()
        with anyio.fail_after(30):
            await self.proc.wait()
        await self.proc.aclose()


async def phase_failover(url: str, kills: int = 5) -> dict:
    """Kill the leader ``kills`` times; the time until the new leader's first tick reaches a subscriber."""
    from mt5d.daemon.config import HaConfig, parse_config
    from mt5d.daemon.app import open_terminal

    account, ttl = "benchha", HaConfig().ttl
    subj, stream = Subjects(DEFAULT_PREFIX, account), stream_name(account)
    nsym = 5
    raws = {n: _config(url, tps=20.0, poll=0.01, symbols=nsym, acct=account, jetstream={"enabled": True},
                       ha={"enabled": True, "node": n}) for n in ("a", "b")}
    nc = await open_nats(url)
    js = nc.jetstream()
    first_tick = {"term": 0, "at": 0.0}
    term_seen = anyio.Event()

    async def on_tick(msg) -> None:
        term = int((msg.headers or {}).get("Mt5d-Lease", 0))
        if term > first_tick["term"]:
            first_tick.update(term=term, at=time.perf_counter())
            term_seen.set()

    await nc.subscribe(subj.all_ticks(), cb=on_tick)
    children = {n: await _AsyncChild(raw).start() for n, raw in raws.items()}
    kv = None
    times = []
    try:
        with anyio.fail_after(30):
            while kv is None:
                try:
                    kv = await js.key_value(f"mt5_{account}_lease")
                except Exception:
                    await anyio.sleep(0.1)
        for _ in range(kills):
            with anyio.fail_after(30):
                while True:  # a leader that publishes
                    try:
                        leader = (await kv.get("leader")).value.decode()
                        break
                    except Exception:
                        await anyio.sleep(0.05)
                await term_seen.wait()
            await anyio.sleep(1.0)  # a steady stream before the kill
            old_term, term_seen = first_tick["term"], anyio.Event()
            killed_at = time.perf_counter()
            await children[leader].kill()
            with anyio.fail_after(ttl + 30):
                while first_tick["term"] <= old_term:
                    await term_seen.wait()
            times.append(first_tick["at"] - killed_at)
            children[leader] = await _AsyncChild(raws[leader]).start()  # back, as a follower
        await anyio.sleep(1.0)
    finally:
        for c in children.values():
            await c.stop()
    # Read back what the stream holds, per symbol, against the sim's own history.
    cfg = parse_config(raws["a"], env={})
    sim = open_terminal(cfg)
    sim.initialize()
    lost = dupes = total = 0
    for name in cfg.stream.symbols:
        sim.symbol_select(name, True)
        sub = await js.subscribe(subj.tick(name), ordered_consumer=True, stream=stream)
        seq = []
        while True:
            try:
                msg = await sub.next_msg(timeout=1.0)
            except Exception:
                break
            t = msgspec.json.decode(msg.data)
            seq.append((t["time_msc_broker"], t["index_in_ms"]))
        await sub.unsubscribe()
        if not seq:
            continue
        hist = sim.copy_ticks_range(name, seq[0][0] // 1000, seq[-1][0] // 1000 + 1, -1)
        expect, k, prev = [], 0, None
        for m in hist["time_msc"].tolist():
            k = k + 1 if m == prev else 0
            prev = m
            if seq[0] <= (m, k) <= seq[-1]:
                expect.append((m, k))
        total += len(expect)
        lost += len(set(expect) - set(seq))
        dupes += len(seq) - len(set(seq))
    await js.delete_stream(stream)
    await js.delete_stream(last_value_stream(stream))
    await js.delete_key_value(f"mt5_{account}_lease")
    await nc.close()
    return {
        "failover_ttl_s": ttl,
        "failover_p50_s": round(float(np.median(times)), 3),
        "failover_max_s": round(max(times), 3),
        "failover_kills": len(times),
        "failover_ticks": total,
        "failover_lost": lost,
        "failover_duplicates": dupes,
    }


# ---- one poll cycle, taken apart --------------------------------------------------------
async def phase_cycle(cycles: int = 300, runs: int = 7) -> dict:
    """Where a poll cycle's CPU goes, without the noise of a shared machine: 50 symbols at
    200 ticks/s each, the sim on a virtual clock stepped 10 ms a cycle (every run does the
    same work), the real Poller, Connection (its terminal thread inline) and Publisher
    (``encode_batch`` on an unconnected client: the PUB lines of the batch). Min over ``runs``
    of the µs per cycle: the whole cycle, of it inside the terminal's functions, and the
    batch's PUB lines; then one ``run_call`` round trip through a real terminal thread."""
    from types import SimpleNamespace

    import nats

    from mt5d.actors.account import AccountTracker
    from mt5d.actors.connection import Connection, Credentials
    from mt5d.actors.logic.breaker import BreakerPolicy
    from mt5d.actors.logic.utc import UtcOffset
    from mt5d.actors.poller import Poller
    from mt5d.actors.prices import PriceCache
    from mt5d.actors.publisher import Publisher
    from mt5d.codec import Codec
    from mt5d.daemon.terminal.sim import SimTerminal, synthetic_symbols
    from mt5d.daemon.terminal.thread import TerminalThread

    async def one(inline: bool, opcodes: int = 0) -> SimpleNamespace:
        # 10 s into a minute: no run crosses one (the sim makes each minute at its first look).
        clock = [float(int(time.time()) // 60 * 60 + 10)]
        symbols = list(synthetic_symbols(SYMBOLS_50))
        sim = SimTerminal(seed=7, ticks_per_second=200.0, symbols=symbols, clock=lambda: clock[0])
        timed = _TimedTerminal(sim)
        changes, changes_rx = anyio.create_memory_object_stream(1000)
        conn = Connection(module=timed, credentials=Credentials(0, None, "", ""),
                          symbols=tuple(s.name for s in symbols), policy=BreakerPolicy(), connection_timeout=5.0,
                          operation_timeout=5.0, events=changes, thread=TerminalThread(inline=inline))
        out, batches = anyio.create_memory_object_stream(cycles + 100)
        poller = Poller(conn=conn, timeframes=("M1",), out=out, prices=PriceCache(), utc=UtcOffset(7200),
                        poll_interval=0.01, idle_interval=0.25, wall_clock=lambda: clock[0],
                        account=AccountTracker(interval=0.25, heartbeat=10.0, epoch=1))
        _, health = anyio.create_memory_object_stream(1)
        publisher = Publisher(nc=nats.NATS(), subjects=Subjects(DEFAULT_PREFIX, ACCOUNT), codec=Codec("json"),
                              batches=batches, health=health)
        got = SimpleNamespace(cycle=0.0, terminal=0.0, messages=0.0, ticks=0, hop=0.0, opcodes=None)
        async with anyio.create_task_group() as tg:
            await tg.start(conn.run)
            if not inline:  # the thread hop alone: a no-op call through a real terminal thread
                noop = lambda api: None  # noqa: E731
                for _ in range(50):
                    await conn.run_call(noop)
                c0 = time.process_time()
                for _ in range(cycles):
                    await conn.run_call(noop)
                got.hop = (time.process_time() - c0) / cycles
                tg.cancel_scope.cancel()
                return got
            for _ in range(20):  # warm up: cursors and bar trackers in place
                clock[0] += 0.01
                await poller.cycle()
            if opcodes:
                got.opcodes = await _count_opcodes(opcodes, poller, publisher, clock)
                tg.cancel_scope.cancel()
                return got
            per_call, inside = _TimedTerminal.overhead()
            for _ in range(cycles):
                clock[0] += 0.01
                t0, n0, c0 = timed.cpu_seconds, timed.calls, time.thread_time()
                batch = await poller.cycle()
                c1 = time.thread_time()
                publisher.encode_batch(batch)
                got.messages += time.thread_time() - c1
                calls = timed.calls - n0  # without the bench's own counting (see _TimedTerminal)
                got.cycle += c1 - c0 - calls * per_call
                got.terminal += timed.cpu_seconds - t0 - calls * inside
                got.ticks += len(batch.ticks)
            tg.cancel_scope.cancel()
        return got

    runs_ = [await one(True) for _ in range(runs)]
    hops = [(await one(False)).hop for _ in range(3)]
    own_ops, sim_ops, ticks = (await one(True, opcodes=50)).opcodes
    us = lambda v: round(v / cycles * 1e6, 1)  # noqa: E731
    return {
        "cycle_ticks": round(runs_[0].ticks / cycles, 1),
        "cycle_us": min(us(r.cycle) for r in runs_),
        "cycle_terminal_us": min(us(r.terminal) for r in runs_),
        "cycle_own_us": min(us(r.cycle - r.terminal) for r in runs_),
        "cycle_messages_us": min(us(r.messages) for r in runs_),
        "run_call_thread_us": round(min(hops) * 1e6, 1),
        "cycle_own_opcodes": own_ops, "cycle_terminal_opcodes": sim_ops, "cycle_opcodes_ticks": ticks,
    }


async def _count_opcodes(cycles: int, poller, publisher, clock: list[float]) -> tuple[int, int, float]:
    """Python opcodes per poll cycle (and its encoding), the daemon's own and those inside the
    terminal's functions, and the ticks per cycle: the same work gives the same count on any
    machine at any load, so a change's effect on the Python work shows without repeats (the
    work in C, numpy, msgspec and the kernel, is not in it)."""
    counts = {"own": 0, "terminal": 0}
    sim_dir = os.sep + os.path.join("terminal", "sim") + os.sep
    root = str(Path(__file__).resolve().parents[2]) + os.sep  # the mt5d package's

    def ours(name: str) -> bool:  # (a checkout may hold its venv: its libraries are not ours)
        return name.startswith(root) and "site-packages" not in name[len(root):]

    def tracer(frame, event, arg):
        name = frame.f_code.co_filename
        if name == __file__:
            return None  # the bench's own counting wrapper (_TimedTerminal): the instrument's
        # A library's code (numpy's, say) counts as its nearest mt5d caller's.
        f = frame
        while f is not None and not ours(f.f_code.co_filename):
            f = f.f_back
        kind = "terminal" if f is not None and sim_dir in f.f_code.co_filename else "own"
        frame.f_trace_opcodes = True

        def local(frame, event, arg):
            if event == "opcode":
                counts[kind] += 1
            return local
        return local

    ticks = 0
    for _ in range(cycles):
        clock[0] += 0.01
        sys.settrace(tracer)  # (this thread: the terminal runs inline here)
        try:
            batch = await poller.cycle()
            publisher.encode_batch(batch)
        finally:
            sys.settrace(None)
        ticks += len(batch.ticks)
    return round(counts["own"] / cycles), round(counts["terminal"] / cycles), round(ticks / cycles, 1)


# ---- terminal call costs ------------------------------------------------------------
def phase_calls(calls: int = 2000) -> dict:
    """One terminal call (symbol_info_tick) and one 50-symbol poll cycle, per backend."""
    from mt5d.actors.books import Books, book_reads
    from mt5d.actors.logic.utc import UtcOffset
    from mt5d.actors.poller import FETCH_COUNT
    from mt5d.daemon.terminal.api import TerminalApi
    from mt5d.daemon.terminal.backends import RpycTerminal
    from mt5d.daemon.terminal.sim import SimTerminal, synthetic_symbols

    names = [s.name for s in synthetic_symbols(SYMBOLS_50)]
    opts = dict(seed=7, ticks_per_second=200.0, synthetic_symbols=SYMBOLS_50)

    def measure(module) -> tuple[float, float, float]:
        api = TerminalApi(module)
        api.initialize(path=None, login=None, password=None, server=None, timeout_ms=5000)
        for name in names:
            api.symbol_select(name, True)
        book_names = names[:BOOK_SYMBOLS]
        for name in book_names:
            api.market_book_add(name)
        t0 = time.perf_counter()
        for _ in range(calls):
            api.symbol_info_tick(names[0])
        per_call = (time.perf_counter() - t0) / calls
        cursors = [(api.symbol_info_tick(n).time_msc, 0, False) for n in names]
        symbols = tuple(names)
        took = []
        for _ in range(max(20, calls // 100)):
            t0 = time.perf_counter()
            (((_, rows), _), _, _), _ = api.cycle((("ticks", (symbols, tuple(cursors), FETCH_COUNT)),
                                                   ("rates", ()), ("books", ())))
            took.append(time.perf_counter() - t0)
            cursors = [(c[0], c[1], False) for c in cursors]
            for i, _, last_msc, seen, _ in rows:
                cursors[i] = (last_msc, seen, True)  # moved: fetched without the check next cycle
            time.sleep(0.01)  # a 10 ms poll interval: each cycle finds ~2 new ticks per symbol
        # The book part of a cycle: read 10 books (the hop) and turn the changed ones into messages.
        books, utc = Books(tuple(book_names), 0.1), UtcOffset(7200)
        cycles = len(took)
        spent = 0.0
        for i in range(cycles):
            t0 = time.perf_counter()
            due = books.due(book_names, round(i * 0.01, 6))  # a 10 ms poll: each book read every 10th cycle
            if due:
                _, _, (rows, errors) = api.cycle((("ticks", ((), (), FETCH_COUNT)), ("rates", ()),
                                                  ("books", tuple(due))))[0]
                books.absorb(book_reads(due, rows, errors), utc)
            spent += time.perf_counter() - t0
            time.sleep(0.01)
        return per_call, float(np.median(took)), spent / cycles

    def account_cost(module, positions: int = 0) -> str:
        """What account tracking adds to one poll cycle (its part of the hop plus absorb):
        "median / mean" µs over cycles 10 ms apart (the mean includes the re-reads every interval)."""
        from mt5d.actors.account import AccountTracker

        api = TerminalApi(module)
        for i in range(positions):
            module.order_send({"action": 1, "symbol": names[i % len(names)], "type": i % 2, "volume": 0.01,
                               "sl": 0.0})
        off = SimTerminal(seed=7).utc_offset_seconds(time.time())  # the sim's broker clock (both backends)
        tracker = AccountTracker(interval=0.25, heartbeat=10.0, epoch=1)
        samples = []
        for i in range(max(50, calls // 20)):
            now = time.monotonic()
            t0 = time.perf_counter()
            (read, _), = api.cycle((("account", tracker.prepare(now, int(time.time()) + off)),))[0]
            tracker.absorb(read, now, int(time.time() * 1000), off * 1000)
            samples.append(time.perf_counter() - t0)
            time.sleep(0.01)
        rest = np.array(samples[5:]) * 1e6
        return f"{np.median(rest):.1f} / {rest.mean():.1f}"

    out = {}
    # 200 ticks/s on the 50 poll symbols; the 10 book symbols' books change with their ticks.
    sim = SimTerminal(seed=7, ticks_per_second=200.0, symbols=list(synthetic_symbols(SYMBOLS_50)), clock=time.time)
    out["sim_call_us"], out["sim_cycle50_us"], out["sim_books10_us"] = (round(v * 1e6, 1) for v in measure(sim))
    out["sim_account_quiet_us"] = account_cost(sim)
    busy = SimTerminal(seed=7, ticks_per_second=200.0, symbols=list(synthetic_symbols(SYMBOLS_50)), clock=time.time)
    busy.initialize()
    for name in names:
        busy.symbol_select(name, True)
    out["sim_account_10pos_us"] = account_cost(busy, positions=10)
    try:
        from mt5d.daemon.tools.rpyc_bridge import RpycBridge

        bridge = RpycBridge(**opts)
    except (ImportError, RuntimeError):
        return out  # rpyc not installed (the rpyc extra)
    try:
        remote = RpycTerminal("127.0.0.1", bridge.port, request_timeout=30.0)
        out["rpyc_call_us"], out["rpyc_cycle50_us"], out["rpyc_books10_us"] = (
            round(v * 1e6, 1) for v in measure(remote))
        out["rpyc_account_quiet_us"] = account_cost(remote)
    finally:
        bridge.stop()
    return out


# ---- report --------------------------------------------------------------------------
REPEATS = 3


def _median(runs: list[dict]) -> dict:
    """Each figure as the median of the runs (with ``_min``/``_max`` beside it when there are several)."""
    out: dict = {}
    for key in runs[0]:
        values = [r[key] for r in runs if r.get(key) is not None]
        if not values or not isinstance(values[0], (int, float)) or isinstance(values[0], bool):
            out[key] = runs[0][key]
            continue
        med = float(np.median(values))
        out[key] = round(med) if all(isinstance(v, int) for v in values) else round(med, 3)
        if len(runs) > 1:
            out[f"{key}_min"], out[f"{key}_max"] = min(values), max(values)
    return out


async def run_bench(quick: bool, soak: float) -> dict:
    scale = 0.25 if quick else 1.0
    results: dict = {"repeats": REPEATS}
    try:
        import rpyc  # noqa: F401  (the rpyc extra)

        has_rpyc = True
    except ImportError:
        has_rpyc = False
    with tempfile.TemporaryDirectory() as tmp:
        server = NatsServer(jetstream=True, store_dir=str(Path(tmp) / "js")).start()
        try:
            results.update(_median([await phase_saturation(server.url, 10 * scale) for _ in range(REPEATS)]))
            results.update(_median([await phase_jetstream(server.url, 10 * scale, results) for _ in range(REPEATS)]))
            results.update(_median([await phase_realistic(server.url, 15 * scale, soak=soak if i == 0 else 0.0)
                                    for i in range(REPEATS)]))
            if has_rpyc:
                results.update(_median([await phase_realistic(server.url, 15 * scale, rpyc=True)
                                        for _ in range(REPEATS)]))
            results.update(_median([await phase_naive(server.url, 10 * scale) for _ in range(REPEATS)]))
            results.update(_median([await phase_floor(server.url, 10 * scale) for _ in range(REPEATS)]))
            results.update(await phase_idle(server.url, 20 * scale))
            results.update(await phase_books(server.url, 15 * scale))
            results.update(await phase_completeness(server, 30 * scale))
            results.update(await phase_failover(server.url, 2 if quick else 5))
            results.update(phase_calls(500 if quick else 2000))
            results.update(await phase_cycle(100 if quick else 300))
        finally:
            server.stop()
    return results


def _range(r: dict, key: str) -> str:
    if key not in r:
        return "-"
    if f"{key}_min" in r:
        return f'{r[key]} ({r[f"{key}_min"]}–{r[f"{key}_max"]})'
    return str(r[key])


def _table(r: dict) -> str:
    g = lambda key: _range(r, key)  # noqa: E731 - median (min–max)
    rows = [
        (f"figures: median (min–max) of {r['repeats']} runs where repeated", ""),
        ("saturation: ticks/s to a subscriber", g("saturation_ticks_per_s")),
        ("saturation: ticks/s offered by the sim", g("saturation_offered_ticks_per_s")),
        ("saturation: daemon CPU µs per tick (whole / own)",
         f'{g("saturation_cpu_us_per_tick")} / {g("saturation_own_cpu_us_per_tick")}'),
        ("saturation: raw nats-py loop msgs/s", g("raw_loop_msgs_per_s")),
        ("saturation ratio (target >= 0.8)", g("saturation_ratio")),
        ("jetstream: ticks/s stored (acked)", r["jetstream_ticks_per_s"]),
        ("jetstream: daemon CPU µs per tick", r["jetstream_cpu_us_per_tick"]),
        ("jetstream / core saturation (target >= 0.5)", r["jetstream_vs_core"]),
        ("realistic: ticks/s (50 symbols)", g("realistic_ticks_per_s")),
        ("realistic: CPU % of a core (whole process)", g("realistic_cpu_pct")),
        ("realistic: own CPU % (target <= 5)", g("realistic_own_cpu_pct")),
        ("realistic: inside terminal calls CPU %", g("realistic_terminal_cpu_pct")),
        ("latency p50 ms", g("latency_p50_ms")),
        ("latency p99 ms (target <= 12)", g("latency_p99_ms")),
        ("latency p99.9 ms (target <= 20)", g("latency_p999_ms")),
        ("rpyc bridge: ticks/s", g("rpyc_realistic_ticks_per_s")),
        ("rpyc bridge: daemon process CPU % (target <= 10)", g("rpyc_realistic_cpu_pct")),
        ("rpyc bridge: latency p50 ms", g("rpyc_latency_p50_ms")),
        ("rpyc bridge: latency p99 ms (target <= 12)", g("rpyc_latency_p99_ms")),
        ("rpyc bridge: latency p99.9 ms (target <= 20)", g("rpyc_latency_p999_ms")),
        ("naive loop: process CPU % (sim in process)", g("naive_cpu_pct")),
        ("naive loop: ticks/s delivered", g("naive_ticks_per_s")),
        ("floor CPU %: a wake every 10 ms / + one write of 100 ticks / + a terminal-thread round trip",
         f'{g("floor_wake_cpu_pct")} / {g("floor_write_cpu_pct")} / {g("floor_hop_write_cpu_pct")}'),
        ("floor CPU %: the round trip a bridge's instead (1.5 kB out, 7 kB back, loopback TCP)",
         g("floor_bridge_write_cpu_pct")),
        ("RSS MB / growth % (target < 5)", f'{r["rss_mb"]} / {r["rss_growth_pct"]} over {r["rss_window_s"]} s'),
        ("idle: CPU % with account tracking (10 of 50 symbols with books; target <= 2)", r["idle_cpu_pct"]),
        ("idle: CPU % without account tracking", r["idle_cpu_pct_no_account"]),
        ("books: 10 symbols x 10 changes/s, CPU % with / without books",
         f'{r["books_cpu_pct"]} / {r["nobooks_cpu_pct"]} (+{r["books_extra_cpu_pct"]})'),
        ("books: books/s to a subscriber (throttle 100 ms: <= 100)", r["books_per_s"]),
        ("book part of a poll cycle µs (10 books): sim / rpyc",
         f'{r["sim_books10_us"]} / {r.get("rpyc_books10_us", "-")}'),
        ("completeness (target 1.0, exact order)", f'{r["completeness"]} ({r["completeness_exact_order"]}, '
                                                   f'{r["completeness_ticks"]} ticks)'),
        ("naive symbol_info_tick loop completeness", r["naive_completeness"]),
        (f'failover: kill -> first tick of the new leader p50 / max s (TTL {r["failover_ttl_s"]} s, '
         f'target <= TTL + 1)', f'{r["failover_p50_s"]} / {r["failover_max_s"]} over {r["failover_kills"]} kills'),
        ("failover: ticks lost / duplicates stored (target 0 / 0)",
         f'{r["failover_lost"]} / {r["failover_duplicates"]} of {r["failover_ticks"]}'),
        ("terminal call µs: sim in process / rpyc loopback", f'{r["sim_call_us"]} / {r.get("rpyc_call_us", "-")}'),
        ("50-symbol poll cycle µs: sim / rpyc (rpyc target <= 2000)",
         f'{r["sim_cycle50_us"]} / {r.get("rpyc_cycle50_us", "-")}'),
        ("account tracking µs per cycle, median / mean: quiet, sim", r["sim_account_quiet_us"]),
        ("account tracking µs per cycle, median / mean: quiet, rpyc", r.get("rpyc_account_quiet_us", "-")),
        ("account tracking µs per cycle, median / mean: 10 positions, sim", r["sim_account_10pos_us"]),
        (f'one poll cycle, virtual clock (50 symbols, {r["cycle_ticks"]} ticks): µs whole / in terminal functions'
         ' / own', f'{r["cycle_us"]} / {r["cycle_terminal_us"]} / {r["cycle_own_us"]} (min of 7)'),
        ("the cycle's PUB lines µs / a run_call round trip through the terminal thread µs (process CPU)",
         f'{r["cycle_messages_us"]} / {r["run_call_thread_us"]}'),
        (f'one poll cycle and its PUB lines, Python opcodes ({r["cycle_opcodes_ticks"]} ticks): own / in terminal'
         ' functions (any machine: no noise)', f'{r["cycle_own_opcodes"]} / {r["cycle_terminal_opcodes"]}'),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main(args) -> int:
    if getattr(args, "faults", 0):
        from mt5d.daemon.tools.fault_soak import passed, run_fault_soak, table

        echo = (lambda *a: None) if args.json else (lambda line: print(line, flush=True))
        results = anyio.run(lambda: run_fault_soak(args.faults, seed=args.seed, echo=echo))
        print(msgspec.json.encode(results).decode() if args.json else table(results))
        return 0 if passed(results) else 1
    results = anyio.run(run_bench, args.quick, args.soak)
    print(msgspec.json.encode(results).decode() if args.json else _table(results))
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "child":
        sys.exit(_child_main(sys.argv[2]))
    if len(sys.argv) >= 5 and sys.argv[1] == "floor":
        sys.exit(_floor_main(sys.argv[2], sys.argv[3], float(sys.argv[4])))
    if len(sys.argv) >= 3 and sys.argv[1] == "naive":
        sys.exit(_naive_main(sys.argv[2]))
    print("usage: mt5d bench [--json] [--soak SECONDS]", file=sys.stderr)
    sys.exit(2)
