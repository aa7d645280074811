"""``mt5d bench --faults SECONDS``: a fault soak judged against the sim's own history.

For SECONDS, a real ``mt5d run`` (sim terminal, ``nats.msg_id`` on, a capture
state directory) streams into a JetStream stream that keeps every tick and
closed candle, while a random (seeded) schedule hits it with terminal
disconnects, IPC timeouts, a terminal restart (the sim's scripted faults),
nats-server restarts, SIGKILL and restart of mt5d, and bursts of maximal
``candles`` and ``ticks`` requests. Then mt5d is stopped and the stream is read
back whole and compared with the sim's history (ticks are a pure function of
seed, symbol and time, so an identical sim here is the ground truth): per
symbol the ticks from the first stored to the last stored, per symbol and
timeframe the closed bars likewise; missing, stored twice, different and out
of order are counted, and printed with what the schedule did.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import anyio
import msgspec
import nats

from mt5d.daemon.natsserver import NatsServer
from mt5d.market import TIMEFRAME_SECONDS
from mt5d.subjects import DEFAULT_PREFIX, Subjects

__all__ = ["run_fault_soak", "schedule", "Event"]

ACCOUNT = "soak"
SEED = 3
TPS = 8.0
SYMBOLS = ["EURUSD", "GBPUSD", "USDJPY", "XAUUSD", "US30", "EURUSD.m", "#AAPL"]
# The soak's timeframes: names from mt5d.market's one table (TIMEFRAME_SECONDS), which has their lengths.
TIMEFRAMES: tuple[str, ...] = ("M1", "M5", "H1")
if not set(TIMEFRAMES) <= TIMEFRAME_SECONDS.keys():
    raise ValueError(f"unknown soak timeframes: {sorted(set(TIMEFRAMES) - TIMEFRAME_SECONDS.keys())}")
SUBJECTS = Subjects(DEFAULT_PREFIX, ACCOUNT)  # the soak daemon's subjects (nats.prefix left at its default)
TERMINAL_FAULTS = ("disconnect", "ipc_timeout", "restart")
KINDS = TERMINAL_FAULTS + ("nats_restart", "kill", "burst")
WEIGHTS = {"disconnect": 3, "ipc_timeout": 3, "restart": 1, "nats_restart": 2, "kill": 2, "burst": 3}


@dataclass(frozen=True)
class Event:
    at: float  # seconds from the soak's start
    kind: str
    duration: float  # the fault window, the outage or the downtime (a burst: 0)


def schedule(seconds: float, rng: random.Random) -> list[Event]:
    """A random schedule with every kind at least once, one event every ~8 s on
    average, none in the first 8 s (a first capture) nor the last 12 (the tail)."""
    lo, hi = 8.0, max(9.0, seconds - 12.0)
    n = max(len(KINDS), int((hi - lo) / 8))
    kinds = list(KINDS) + rng.choices(list(WEIGHTS), weights=list(WEIGHTS.values()), k=n - len(KINDS))
    events = []
    for kind in kinds:
        duration = 0.0 if kind == "burst" else round(rng.uniform(1.0, 5.0), 1)
        events.append(Event(round(rng.uniform(lo, hi), 1), kind, duration))
    return sorted(events, key=lambda e: e.at)


def _toml(cfg: dict, prefix: str = "") -> str:
    """Just enough TOML for the child's config: tables, arrays of tables, scalars, lists."""
    lines, tables = [], []
    for key, value in cfg.items():
        if isinstance(value, dict):
            tables.append((key, value))
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            tables.extend((key, [v]) for v in value)
        else:
            lines.append(f"{key} = {msgspec.json.encode(value).decode()}")
    out = "\n".join(lines) + "\n"
    for key, value in tables:
        name = f"{prefix}{key}"
        if isinstance(value, list):
            out += f"[[{name}]]\n" + _toml(value[0], name + ".")
        else:
            out += f"[{name}]\n" + _toml(value, name + ".")
    return out


def _child_config(url: str, state_dir: Path, faults: list[dict]) -> dict:
    return {
        "terminal": {"backend": "sim", "login": 10001234, "operation_timeout": 3.0, "connection_timeout": 3.0,
                     "sim": {"seed": SEED, "ticks_per_second": TPS, "faults": faults}},
        "stream": {"symbols": SYMBOLS, "timeframes": list(TIMEFRAMES), "state_dir": str(state_dir)},
        "nats": {"url": url, "account": ACCOUNT, "msg_id": True},
        "breaker": {"max_failures": 2, "backoff_base_seconds": 1.0, "backoff_max_seconds": 4.0},
        "logging": {"level": "WARNING"},
    }


class _Mt5d:
    """The mt5d children, one after another (a SIGKILL ends one, the next resumes)."""

    def __init__(self, workdir: Path, url: str, events: list[Event]) -> None:
        self.dir, self.url, self.events = workdir, url, events
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0
        self.launches = 0
        self.unexpected_exits = 0
        self.nats_restarts = 0
        self.scheduled_faults: Counter = Counter()

    def launch(self, now: float) -> None:
        """A new mt5d whose sim carries the terminal faults due before the next kill."""
        next_kill = min((e.at for e in self.events if e.kind == "kill" and e.at > now), default=float("inf"))
        faults = [{"kind": e.kind, "at": round(e.at - now, 1), "duration": e.duration}
                  for e in self.events if e.kind in TERMINAL_FAULTS and now <= e.at < next_kill]
        self.scheduled_faults.update(f["kind"] for f in faults)
        self.launches += 1
        path = self.dir / f"config-{self.launches}.toml"
        path.write_text(_toml(_child_config(self.url, self.dir, faults)))
        log = open(self.dir / "mt5d.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "mt5d.daemon.cli", "run", "--config", str(path)],
                                     stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)


async def _burst(nc, outcomes: Counter, mt5d: "_Mt5d") -> None:
    """7 maximal candles (D1, 5000) and 7 maximal ticks requests at once, as soon as
    mt5d answers (it may be starting after a kill, or waiting for NATS)."""
    with anyio.move_on_after(30):
        while True:
            try:
                reply = await nc.request(SUBJECTS.rpc("price"), b'{"symbol": "EURUSD"}', timeout=2)
                if not (reply.headers or {}).get("Nats-Service-Error-Code"):
                    break
            except Exception:  # noqa: BLE001 - not up yet
                pass
            await anyio.sleep(0.5)
    launch, restarts = mt5d.launches, mt5d.nats_restarts
    now = int(time.time() * 1000)
    reqs = ([("candles", {"symbol": s, "timeframe": "D1", "count": 5000}) for s in SYMBOLS] +
            [("ticks", {"symbol": s, "start": now - 86_400_000, "end": now, "count": 100_000}) for s in SYMBOLS])

    async def one(endpoint: str, body: dict) -> None:
        try:
            msg = await nc.request(SUBJECTS.rpc(endpoint), msgspec.json.encode(body), timeout=30)
            outcomes[(msg.headers or {}).get("Nats-Service-Error-Code", "200")] += 1
        except Exception as err:  # noqa: BLE001 - counted: no responders (mt5d down), timeout...
            # A request in flight when mt5d is killed dies with it: counted apart.
            # So does one whose reply was on its way when nats-server stopped (core NATS keeps nothing).
            why = (" (mt5d killed meanwhile)" if mt5d.launches != launch else
                   " (nats-server restarted meanwhile)" if mt5d.nats_restarts != restarts else "")
            outcomes[type(err).__name__ + why] += 1

    async with anyio.create_task_group() as tg:
        for endpoint, body in reqs:
            tg.start_soon(one, endpoint, body)


async def _read_stream(js) -> list:
    """Every message of the stream, in stream order (an ordered consumer until nothing is pending)."""
    info = await js.stream_info("SOAK")
    if not info.state.messages:
        return []
    sub = await js.subscribe(SUBJECTS.everything(), ordered_consumer=True, pending_msgs_limit=-1,
                             pending_bytes_limit=-1)
    out = []
    try:
        while True:
            msg = await sub.next_msg(timeout=30)
            out.append((msg.subject, msg.data))
            if msg.metadata.num_pending == 0:
                return out
    finally:
        await sub.unsubscribe()


def _judge(messages: list) -> dict:
    """The stream against the sim's history: ticks and closed bars."""
    from mt5d.daemon.terminal.mt5_constants import COPY_TICKS_ALL, TIMEFRAMES as CODES
    from mt5d.daemon.terminal.sim import SimTerminal
    from mt5d.market import Candle, Tick

    tick_of = {SUBJECTS.tick(s): s for s in SYMBOLS}
    dec_t, dec_c = msgspec.json.Decoder(Tick), msgspec.json.Decoder(Candle)
    ticks: dict[str, list] = defaultdict(list)
    bars: dict[tuple[str, str], list] = defaultdict(list)
    for subject, data in messages:
        if subject in tick_of:
            t = dec_t.decode(data)
            ticks[t.symbol].append((t.time_msc_broker, t.index_in_ms, t.bid, t.ask))
        else:
            c = dec_c.decode(data)
            bars[(c.symbol, c.timeframe)].append(
                (c.time_broker, c.open, c.high, c.low, c.close, c.tick_volume, c.closed))
    sim = SimTerminal(seed=SEED, ticks_per_second=TPS, clock=time.time)
    sim.initialize()
    for s in SYMBOLS:
        sim.symbol_select(s, True)
    r = Counter()
    order_kept = True
    for symbol in SYMBOLS:
        got = ticks.get(symbol, [])
        r["symbols_with_ticks"] += bool(got)
        if not got:
            continue
        hist = sim.copy_ticks_range(symbol, got[0][0] // 1000, got[-1][0] // 1000 + 1, COPY_TICKS_ALL)
        expected, k, prev = {}, 0, None
        for m, b, a in zip(hist["time_msc"].tolist(), hist["bid"].tolist(), hist["ask"].tolist()):
            k = k + 1 if m == prev else 0
            prev = m
            if got[0][:2] <= (m, k) <= got[-1][:2]:  # the window: first stored to last stored
                expected[(m, k)] = (b, a)
        keys = [g[:2] for g in got]
        seen = Counter(keys)
        r["ticks_expected"] += len(expected)
        r["ticks_stored"] += len(got)
        r["ticks_missing"] += sum(1 for key in expected if key not in seen)
        r["ticks_twice"] += sum(n - 1 for n in seen.values() if n > 1)
        r["ticks_different"] += sum(1 for m, k, b, a in got if expected.get((m, k), (b, a)) != (b, a))
        r["ticks_not_in_history"] += sum(1 for key in seen if key not in expected)
        order_kept &= all(x < y for x, y in zip(keys, keys[1:]))
    for symbol in SYMBOLS:
        for tf in TIMEFRAMES:
            got = bars.get((symbol, tf), [])
            if not got:
                continue
            rates = sim.copy_rates_range(symbol, CODES[tf], got[0][0], got[-1][0])
            expected = {t: (o, h, lo, c, v) for t, o, h, lo, c, v, _sp, _rv in rates.tolist()}
            times = [g[0] for g in got]
            seen = Counter(times)
            r["bars_expected"] += len(expected)
            r["bars_stored"] += len(got)
            r["bars_missing"] += sum(1 for t in expected if t not in seen)
            r["bars_twice"] += sum(n - 1 for n in seen.values() if n > 1)
            r["bars_different"] += sum(1 for t, o, h, lo, c, v, closed in got
                                       if not closed or expected.get(t) != (o, h, lo, c, v))
            order_kept &= all(x < y for x, y in zip(times, times[1:]))
    out = dict(r)
    out["order_kept"] = order_kept
    return out


async def run_fault_soak(seconds: float, *, seed: int = 1, echo=print) -> dict:
    from nats.js.api import StreamConfig

    rng = random.Random(seed)
    events = schedule(seconds, rng)
    done: Counter = Counter()
    rpc: Counter = Counter()
    with tempfile.TemporaryDirectory(prefix="mt5d-soak-") as tmp:
        work = Path(tmp)
        server = NatsServer(jetstream=True, store_dir=str(work / "js")).start()
        async def quiet(err: Exception) -> None:  # the outages are on purpose
            pass

        admin = await nats.connect(server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2,
                                   pending_size=64 * 1024 * 1024, error_cb=quiet)
        try:
            js = admin.jetstream()
            await js.add_stream(StreamConfig(
                name="SOAK", subjects=[SUBJECTS.all_ticks(), SUBJECTS.all_candles()],
                duplicate_window=seconds + 600.0))
            mt5d = _Mt5d(work, server.url, events)
            t0 = time.monotonic()
            mt5d.launch(0.0)
            async with anyio.create_task_group() as tg:
                for ev in events:
                    while (wait := t0 + ev.at - time.monotonic()) > 0:
                        await anyio.sleep(min(wait, 0.5))
                        if mt5d.proc.poll() is not None:  # as systemd would: start it again
                            mt5d.unexpected_exits += 1
                            mt5d.launch(time.monotonic() - t0)
                    echo(f"  {time.monotonic() - t0:6.1f} s  {ev.kind} {ev.duration or ''}")
                    if ev.kind == "kill":
                        mt5d.kill()
                        await anyio.sleep(ev.duration)
                        mt5d.launch(time.monotonic() - t0)
                    elif ev.kind == "nats_restart":
                        server.stop()
                        mt5d.nats_restarts += 1
                        await anyio.sleep(ev.duration)
                        server.start()
                    elif ev.kind == "burst":
                        tg.start_soon(_burst, admin, rpc, mt5d)
                    done[ev.kind] += 1
                while time.monotonic() - t0 < seconds:
                    await anyio.sleep(0.5)
            code = mt5d.stop()
            messages = await _read_stream(js)
        finally:
            await admin.close()
            server.stop()
        result = _judge(messages)
    result.update(
        seconds=round(seconds),
        seed=seed,
        mt5d_sigkills=done["kill"],
        mt5d_launches=mt5d.launches,
        mt5d_unexpected_exits=mt5d.unexpected_exits,
        mt5d_last_exit_code=code,
        nats_server_restarts=done["nats_restart"],
        terminal_disconnects=mt5d.scheduled_faults["disconnect"],
        terminal_ipc_timeouts=mt5d.scheduled_faults["ipc_timeout"],
        terminal_restarts=mt5d.scheduled_faults["restart"],
        rpc_bursts=done["burst"],
        rpc_replies=dict(rpc),
    )
    return result


def table(r: dict) -> str:
    rows = [
        ("fault soak", f'{r["seconds"]} s, seed {r["seed"]}'),
        ("terminal disconnects / IPC timeouts / restarts",
         f'{r["terminal_disconnects"]} / {r["terminal_ipc_timeouts"]} / {r["terminal_restarts"]}'),
        ("nats-server restarts", r["nats_server_restarts"]),
        ("mt5d SIGKILL + restart (launches, unexpected exits)",
         f'{r["mt5d_sigkills"]} ({r["mt5d_launches"]}, {r["mt5d_unexpected_exits"]})'),
        ("rpc bursts (replies by status)", f'{r["rpc_bursts"]} ({r["rpc_replies"]})'),
        ("ticks: stored / in history", f'{r.get("ticks_stored", 0)} / {r.get("ticks_expected", 0)}'),
        ("ticks: missing / twice / different / not in history",
         f'{r.get("ticks_missing", 0)} / {r.get("ticks_twice", 0)} / {r.get("ticks_different", 0)} / '
         f'{r.get("ticks_not_in_history", 0)}'),
        ("closed bars: stored / in history", f'{r.get("bars_stored", 0)} / {r.get("bars_expected", 0)}'),
        ("closed bars: missing / twice / different",
         f'{r.get("bars_missing", 0)} / {r.get("bars_twice", 0)} / {r.get("bars_different", 0)}'),
        ("order kept", r["order_kept"]),
        ("last mt5d exit code", r["mt5d_last_exit_code"]),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def passed(r: dict) -> bool:
    return (r.get("ticks_stored", 0) > 0 and r.get("bars_stored", 0) > 0 and r["order_kept"]
            and not any(r.get(k, 0) for k in ("ticks_missing", "ticks_twice", "ticks_different",
                                              "ticks_not_in_history", "bars_missing", "bars_twice",
                                              "bars_different")))
