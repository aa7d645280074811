"""The RPC service against a real nats-server and a real daemon with the sim terminal.

Every endpoint, every error code (400, 502, 503, 504 from scripted terminal
faults; 500 and the service's own 503 "busy" / 504 deadline at unit level with
a fake connection), a request while the breaker is open, and concurrency (a
slow history call does not hold up ``price`` nor the rest of its endpoint).
Requests go through ``MT5Client`` where it fits, so the client is tested end
to end too; raw requests check the error headers and bodies on the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from types import SimpleNamespace

import anyio
import msgspec
import nats
import pytest

from mt5d.actors.prices import PriceCache
from mt5d.actors.connection import ConnStatus
from mt5d.actors.rpc import RpcService
from mt5d.actors.logic.utc import UtcOffset
from mt5d.daemon.app import Daemon, open_terminal
from mt5d.daemon.terminal.mt5_constants import TIMEFRAMES
from mt5d import MT5Client
from mt5d.codec import Codec
from mt5d.errors import (
    MT5CircuitBreakerOpen,
    MT5ConnectionError,
    MT5Error,
    MT5TimeoutError,
    MT5ValidationError,
)
from mt5d.market import HealthEvent, Tick
from mt5d.rpc import (
    ACCOUNT_INFO_FIELDS,
    ENDPOINTS,
    ERROR_CODE_HEADER,
    ERROR_HEADER,
    MAX_CANDLES,
    MAX_REQUEST_BYTES,
    CandlesReply,
    CandlesRequest,
    ErrorReply,
    PriceReply,
    PriceRequest,
    TicksReply,
)
from tests.integration.helpers import Collector, closed_window, make_config, running, unique_account

pytestmark = pytest.mark.anyio

SYMBOLS = ["EURUSD", "GBPUSD", "EURUSD.m", "#AAPL"]


@pytest.fixture
def anyio_backend():
    return "asyncio"  # nats-py is asyncio-only


@contextlib.asynccontextmanager
async def daemon_client(nats_url: str, name: str, *, module=None, wait_ticks: bool = True, **sections):
    """A running daemon (sim terminal, own account), a client and a collector of its streams."""
    account = unique_account(name)
    sections.setdefault("stream", {})
    sections["stream"] = {"symbols": SYMBOLS, "timeframes": ["M1"], **sections["stream"]}
    cfg = make_config(nats_url, account, **sections)
    if module is not None and callable(module):
        module = module(cfg)
    daemon = Daemon(cfg, module=module)
    col = await Collector(account).start(nats_url)
    nc = await nats.connect(nats_url)
    try:
        async with running(daemon):
            if wait_ticks:
                await col.wait_for(lambda: "EURUSD" in col.ticks, timeout=10, what="a EURUSD tick")
            yield SimpleNamespace(daemon=daemon, client=MT5Client(nc, account=account), nc=nc, col=col,
                                  account=account, cfg=cfg)
    finally:
        await nc.close()
        await col.close()


async def raw(nc, account: str, endpoint: str, payload: bytes, timeout: float = 5.0):
    """A raw request: (error code header or None, headers, body)."""
    msg = await nc.request(f"mt5.{account}.rpc.{endpoint}", payload, timeout=timeout)
    headers = msg.headers or {}
    return headers.get(ERROR_CODE_HEADER), headers, msg.data


def assert_error(code, headers, data, status: int, kind: str, *, contains: str = "") -> ErrorReply:
    assert code == str(status), (code, headers, data)
    err = msgspec.json.decode(data, type=ErrorReply)
    assert err.code == status and err.kind == kind
    assert headers[ERROR_HEADER] == " ".join(err.message.split())
    assert "Traceback" not in err.message and "File \"" not in err.message
    assert contains in err.message, err.message
    return err


# -- every endpoint ------------------------------------------------------------------

async def test_service_discovery_ping_info_stats(nats_url):
    async with daemon_client(nats_url, "disc") as t:
        # Every running mt5d answers $SRV.INFO.mt5d; ours is the one with our account.
        sub = await t.nc.subscribe(t.nc.new_inbox())
        await t.nc.publish("$SRV.INFO.mt5d", b"", reply=sub.subject)
        with anyio.fail_after(5):
            while (info := json.loads((await sub.next_msg(timeout=5)).data))["metadata"].get("account") != t.account:
                pass
        await sub.unsubscribe()
        assert info["name"] == "mt5d" and info["version"]
        ping = json.loads((await t.nc.request(f"$SRV.PING.mt5d.{info['id']}", b"", timeout=2)).data)
        assert ping["id"] == info["id"]
        subjects = {e["name"]: e["subject"] for e in info["endpoints"]}
        assert subjects == {name: f"mt5.{t.account}.rpc.{name}" for name in ENDPOINTS}
        await t.client.get_leverage()
        stats = json.loads((await t.nc.request(f"$SRV.STATS.mt5d.{info['id']}", b"", timeout=2)).data)
        by_name = {e["name"]: e for e in stats["endpoints"]}
        assert by_name["account"]["num_requests"] >= 1


async def test_account_every_field_and_the_old_names(nats_url):
    async with daemon_client(nats_url, "acct") as t:
        info = await t.client.get_account_info()
        assert set(info._asdict()) == set(ACCOUNT_INFO_FIELDS) | {"margin_used"}
        direct = (await t.daemon.conn.run_call(lambda api: api.account_info()))._asdict()
        assert {k: getattr(info, k) for k in ("login", "leverage", "name", "server", "currency", "balance")} == {
            k: direct[k] for k in ("login", "leverage", "name", "server", "currency", "balance")}
        assert info.login == 10001234 and info.margin_used == direct["margin"]
        assert await t.client.get_leverage() == direct["leverage"]
        assert await t.client.get_margin_used() == direct["margin"]
        assert isinstance(await t.client.get_margin_free(), float)


async def test_price_from_the_cache_with_its_age(nats_url):
    async with daemon_client(nats_url, "price") as t:
        await t.col.wait_for(lambda: set(SYMBOLS) <= set(t.col.ticks), timeout=10)
        p = await t.client.get_price("EURUSD.m")
        assert p.symbol == "EURUSD.m" and 0 <= p.age_ms < 5000
        # The cache is updated before a batch is published: the price is the newest streamed tick or newer.
        assert p.time_msc >= t.col.ticks["EURUSD.m"][-1].time_msc_broker
        prices = await t.client.get_prices(["EURUSD", "#AAPL", "NOPE"])
        assert set(prices) == {"EURUSD", "#AAPL"}
        reply = await t.client.call("price", PriceRequest(symbols=["EURUSD", "NOPE", "EURUSD"]), PriceReply)
        assert set(reply.prices) == {"EURUSD"} and reply.missing == ["NOPE"]
        with pytest.raises(MT5ValidationError, match="unknown symbol"):
            await t.client.get_price("NOPE")  # one symbol asked for by name: strict


async def test_candles_latest_before_and_range(nats_url):
    async with daemon_client(nats_url, "candles") as t:
        bars = await t.client.get_candles("EURUSD", "M15", 50)
        assert len(bars) == 50
        assert [b.closed for b in bars] == [True] * 49 + [False]  # the forming bar last
        assert all(b.close_time_utc_ms - b.time_utc_ms == 15 * 60_000 for b in bars)
        assert [b.time_utc_ms for b in bars] == sorted({b.time_utc_ms for b in bars})
        off = t.daemon.poller.utc.offset_ms
        assert all(b.time_broker * 1000 - b.time_utc_ms == off for b in bars)
        rates = await t.daemon.conn.run_call(lambda api: api.copy_rates_from_pos("EURUSD", TIMEFRAMES["M15"], 0, 50))
        assert [b.time_broker for b in bars] == rates["time"].tolist()
        assert [b.close for b in bars[:-1]] == rates["close"].tolist()[:-1]
        assert (await t.client.get_candles("EURUSD", "M15", 50))[-1].closed is False

        # end + count: the bars opened at or before end
        before = await t.client.get_candles("EURUSD", "M15", 5, end=bars[-10].time_utc_ms)
        assert [b.time_utc_ms for b in before] == [b.time_utc_ms for b in bars[-14:-9]]
        assert all(b.closed for b in before)
        # start + end: bars opened in [start, end]
        ranged = await t.client.get_candles("EURUSD", "M15", start=bars[5].time_utc_ms - 1,
                                              end=bars[20].time_utc_ms + 1)
        assert [b.time_utc_ms for b in ranged] == [b.time_utc_ms for b in bars[5:21]]

        # default count, other timeframes, and the bound
        assert len(await t.client.get_candles("GBPUSD", "H1")) == 100
        most = await t.client.get_candles("EURUSD", "M1", MAX_CANDLES)  # over 1 MiB of JSON: paged
        assert len(most) == MAX_CANDLES and most[-1].closed is False
        assert [b.time_broker for b in most] == sorted({b.time_broker for b in most})


async def test_candles_long_range_is_paged_without_gaps(nats_url):
    async with daemon_client(nats_url, "crange") as t:
        now = int(time.time() * 1000)
        start = now - 5 * 86400_000
        bars = await t.client.get_candles("EURUSD", "M1", start=start, end=now)
        assert len(bars) > MAX_CANDLES  # more than one request's bound: the client followed "more"
        times = [b.time_utc_ms for b in bars]
        assert times == sorted(set(times)) and times[0] >= start
        off = t.daemon.poller.utc.offset_ms
        fs, ts = -(-(start + off) // 1000), (now + off) // 1000
        direct = await t.daemon.conn.run_call(lambda api: api.copy_rates_range("EURUSD", TIMEFRAMES["M1"], fs, ts))
        assert [b.time_broker for b in bars] == direct["time"].tolist()
        # One raw reply holds at most MAX_CANDLES bars and says where to go on.
        reply = await t.client.call("candles", CandlesRequest(symbol="EURUSD", timeframe="M1", start=start, end=now),
                                    CandlesReply)
        assert reply.more and len(reply.candles) <= MAX_CANDLES
        assert reply.next_end == reply.candles[0].time_utc_ms - 1


async def test_ticks_are_the_ticks_the_stream_published(nats_url):
    async with daemon_client(nats_url, "ticks", terminal={"sim": {"ticks_per_second": 40.0}}) as t:
        await t.col.wait_for(lambda: len(t.col.ticks["EURUSD"]) >= 60, timeout=10)
        streamed = await closed_window(t.col, "EURUSD")
        start, end = streamed[0].time_utc_ms, streamed[-1].time_utc_ms
        got = await t.client.get_ticks("EURUSD", start, end)
        # The stream's first millisecond may have been cut by our subscription; compare after it.
        first_full = next(i for i, tk in enumerate(streamed) if tk.time_utc_ms != start)
        tail = [tk for tk in got if tk.time_utc_ms > start]
        assert tail == streamed[first_full:]
        assert all(start <= tk.time_utc_ms <= end for tk in got)
        few = await t.client.get_ticks("EURUSD", start, end, count=10)
        assert len(few) == 10 and few[0].time_utc_ms == start
        assert few[0].time == few[0].time_msc // 1000 and few[0]._asdict()["bid"] == few[0].bid


async def test_ticks_skip_inside_one_millisecond_and_paging(nats_url):
    async with daemon_client(nats_url, "tpage", terminal={"sim": {"ticks_per_second": 40.0}}) as t:
        now = int(time.time() * 1000)
        start, end = now - 660_000, now - 60_000
        got = await t.client.get_ticks("EURUSD", start, end)
        off = t.daemon.poller.utc.offset_ms
        direct = await t.daemon.conn.run_call(
            lambda api: api.copy_ticks_range("EURUSD", (start + off) // 1000, (end + off) // 1000 + 1, -1))
        expected = [m - off for m in direct["time_msc"].tolist() if start <= m - off <= end]
        assert 20_000 < len(expected) < 100_000  # far more than one reply holds: paged by the client
        assert [tk.time_utc_ms for tk in got] == expected
        page = msgspec.json.decode((await t.nc.request(
            f"mt5.{t.account}.rpc.ticks", msgspec.json.encode({"symbol": "EURUSD", "start": start, "end": end}),
            timeout=5)).data, type=TicksReply)
        assert page.more and 0 < len(page.ticks) < len(expected) and page.next_start == page.ticks[-1].time_utc_ms
        # A millisecond holding several ticks: skip leaves out that many at start itself.
        ms = next(m for m, n in _runs(expected) if n >= 2)
        at_ms = await t.client.get_ticks("EURUSD", ms, ms)
        assert len(at_ms) >= 2
        skipped = msgspec.json.decode((await t.nc.request(
            f"mt5.{t.account}.rpc.ticks",
            msgspec.json.encode({"symbol": "EURUSD", "start": ms, "end": ms, "skip": 1}), timeout=5)).data,
            type=TicksReply)
        assert skipped.ticks == at_ms[1:]
        # Far past, far future and empty ranges are answered, empty or from the start of history.
        assert await t.client.get_ticks("EURUSD", now + 86400_000, now + 2 * 86400_000) == []
        oldest = await t.client.get_ticks("EURUSD", 0, now, count=5)
        assert len(oldest) == 5 and oldest[0].time_utc_ms < now - 365 * 86400_000


def _runs(values):
    out, prev, n = [], None, 0
    for v in values:
        if v == prev:
            n += 1
        else:
            if prev is not None:
                out.append((prev, n))
            prev, n = v, 1
    out.append((prev, n))
    return out


async def test_symbols(nats_url):
    async with daemon_client(nats_url, "syms") as t:
        specs = await t.client.get_symbols()
        assert [s.symbol for s in specs] == SYMBOLS
        by = {s.symbol: s for s in specs}
        direct = await t.daemon.conn.run_call(lambda api: api.symbol_info("#AAPL"))
        assert by["#AAPL"].digits == direct.digits and by["#AAPL"].point == direct.point
        assert by["#AAPL"].trade_mode == direct.trade_mode and isinstance(by["EURUSD"].spread, int)


async def test_health_probe_and_reconnect(nats_url):
    async with daemon_client(nats_url, "health") as t:
        h = await t.client.get_health()
        assert isinstance(h, HealthEvent) and h.event == "probe" and h.account == t.account
        assert h.connection_ok and h.auth_ok and h.breaker == "closed" and h.latency_ms is not None
        p = await t.client.probe()
        assert isinstance(p, HealthEvent) and p.event == "probe"
        assert p.connection_ok and p.auth_ok and p.data_feed_ok and p.breaker == "closed"
        assert p.latency_ms > 0 and p.wedged is False
        generation = t.daemon.conn.status().generation
        n = len(t.col.health)
        assert await t.client.reconnect() is True
        assert t.daemon.conn.status().generation == generation + 1
        await t.col.wait_for(lambda: any(e.event == "disconnected" for e in t.col.health[n:]), timeout=15)
        # The stream goes on after the reconnect.
        before = len(t.col.ticks["EURUSD"])
        await t.col.wait_for(lambda: len(t.col.ticks["EURUSD"]) > before + 2, timeout=10)


# -- 400: validation -----------------------------------------------------------------

BAD_REQUESTS = [
    ("candles", {"symbol": "NOPE", "timeframe": "M1"}, "unknown symbol"),
    ("ticks", {"symbol": "EURUSD.x", "start": 0, "end": 1}, "unknown symbol"),
    ("price", {"symbol": "NOPE"}, "unknown symbol"),
    ("candles", {"symbol": "EURUSD", "timeframe": "M7"}, "unknown timeframe"),
    ("candles", {"symbol": "EURUSD", "timeframe": "m15"}, "unknown timeframe"),
    ("candles", {"symbol": "EURUSD", "count": 0}, "count"),
    ("candles", {"symbol": "EURUSD", "count": MAX_CANDLES + 1}, "count"),
    ("ticks", {"symbol": "EURUSD", "start": 0, "end": 1, "count": 100_001}, "count"),
    ("ticks", {"symbol": "EURUSD", "start": 5, "end": 1}, "before `start`"),
    ("ticks", {"symbol": "EURUSD", "start": -1, "end": 1}, "start"),
    ("candles", {"symbol": "EURUSD", "start": 1}, "`start` needs `end`"),
    ("candles", {"symbol": "EURUSD", "count": "10"}, "at `$.count`"),
    ("price", {}, "exactly one"),
    ("price", {"symbol": "EURUSD", "symbols": ["GBPUSD"]}, "exactly one"),
    ("price", {"symbols": []}, "symbols"),
    ("candles", {"symbol": ""}, "symbol"),
    ("candles", {"symbol": "X" * 65}, "symbol"),
    ("account", [], "Expected `object`"),
]


async def test_validation_errors_are_400_with_a_safe_message(nats_url):
    async with daemon_client(nats_url, "v400") as t:
        for endpoint, body, text in BAD_REQUESTS:
            code, headers, data = await raw(t.nc, t.account, endpoint, msgspec.json.encode(body))
            assert_error(code, headers, data, 400, "MT5ValidationError", contains=text)
        # malformed, hostile encodings, oversized
        for endpoint, payload, text in [
            ("candles", b'{"symbol": "EURUSD", ', "malformed"),
            ("account", b"\xff\xfe\x00garbage", "request"),  # msgpack garbage
            ("price", b"\x81\xa6symbol\x01", "invalid"),  # msgpack map with a wrong type
            ("ticks", b"[" * 5000 + b"]" * 5000, ""),  # deep nesting
            ("account", b'{"a":' + b"[" * 30000 + b"]" * 30000 + b"}", "nested too deeply"),  # msgspec: RecursionError
            ("account", b"\x81\xa1a" + b"\x91" * 60000 + b"\xc0", "nested too deeply"),
            ("symbols", b"x" * (MAX_REQUEST_BYTES + 1), "too large"),
            ("health", b'{"a": ' + b"1" * 400 + b"}", ""),  # a huge number (ignored field or error)
        ]:
            code, headers, data = await raw(t.nc, t.account, endpoint, payload)
            if endpoint == "health" and code is None:
                assert msgspec.json.decode(data, type=HealthEvent).event == "probe"
                continue
            assert_error(code, headers, data, 400, "MT5ValidationError", contains=text)
        # The client raises the same class, with the terminal untouched.
        with pytest.raises(MT5ValidationError, match="unknown timeframe"):
            await t.client.get_candles("EURUSD", timeframe="M7", count=5)
        with pytest.raises(MT5ValidationError, match="unknown symbol"):
            await t.client.get_ticks("NOPE", 0, 10)
        # The daemon keeps serving and streaming.
        assert (await t.client.get_price("EURUSD")).symbol == "EURUSD"
        before = len(t.col.ticks["EURUSD"])
        await t.col.wait_for(lambda: len(t.col.ticks["EURUSD"]) > before, timeout=5)


# -- 503, 502, 504: from the terminal's faults ---------------------------------------------

async def test_breaker_open_is_503_and_price_still_answers(nats_url):
    async with daemon_client(
        nats_url, "b503", wait_ticks=False,
        terminal={"sim": {"faults": [{"kind": "disconnect", "at": 0, "duration": 120}]}},
        breaker={"max_failures": 1, "backoff_base_seconds": 120, "backoff_max_seconds": 120, "jitter": 0},
    ) as t:
        assert t.daemon.conn.status().breaker == "open"
        with pytest.raises(MT5CircuitBreakerOpen, match="circuit breaker is open"):
            await t.client.get_account_info()
        code, headers, data = await raw(t.nc, t.account, "account", b"")
        assert_error(code, headers, data, 503, "MT5CircuitBreakerOpen", contains="retry in")
        # A streamed symbol while never connected: the breaker answers, not "unknown symbol".
        for endpoint, body in [("candles", {"symbol": "EURUSD", "count": 5}),
                               ("ticks", {"symbol": "EURUSD", "start": 0, "end": 10}),
                               ("symbols", {})]:
            code, headers, data = await raw(t.nc, t.account, endpoint, msgspec.json.encode(body))
            assert_error(code, headers, data, 503, "MT5CircuitBreakerOpen", contains="circuit breaker is open")
        with pytest.raises(MT5ValidationError, match="unknown symbol"):
            await t.client.get_candles("NOPE", "M1", 5)
        # price needs no terminal: it answers (nothing known yet) while the breaker is open
        reply = await t.client.call("price", PriceRequest(symbols=["EURUSD"]), PriceReply)
        assert reply.prices == {} and reply.missing == ["EURUSD"]
        # ... and one streamed symbol asked by name says why it has no price: the breaker.
        with pytest.raises(MT5CircuitBreakerOpen, match="circuit breaker is open"):
            await t.client.get_price("EURUSD")
        # health: a fresh probe that reports the open breaker
        h = await t.client.get_health()
        assert h.breaker == "open" and not h.connection_ok and h.latency_ms is None
        # reconnect is the operator's way through: tried now, fails on the fault (502), breaker open again
        with pytest.raises(MT5ConnectionError):
            await t.client.reconnect()
        assert t.daemon.conn.status().breaker == "open"


async def test_terminal_connection_errors_are_502(nats_url):
    async with daemon_client(
        nats_url, "c502", wait_ticks=False,
        terminal={"sim": {"faults": [{"kind": "disconnect", "at": 0, "duration": 120}]}},
        breaker={"max_failures": 100_000},
    ) as t:
        with pytest.raises(MT5ConnectionError, match="not connected to the broker") as info:
            await t.client.get_account_info()
        assert info.value.code == -10004
        code, headers, data = await raw(t.nc, t.account, "symbols", b"")
        err = assert_error(code, headers, data, 502, "MT5ConnectionError")
        assert err.mt5_code == -10004
        # History needs the broker clock, never seen while never connected: 502 too, saying so.
        with pytest.raises(MT5ConnectionError, match="not connected to the terminal yet"):
            await t.client.get_candles("EURUSD", "M1", 5)
        assert (await t.client.probe()).connection_ok is False


async def test_terminal_timeout_is_504(nats_url):
    async with daemon_client(
        nats_url, "t504", wait_ticks=False,
        terminal={"sim": {"faults": [{"kind": "ipc_timeout", "at": 0, "duration": 120}]}},
        breaker={"max_failures": 100_000},
    ) as t:
        with pytest.raises(MT5TimeoutError, match="IPC timeout") as info:
            await t.client.get_account_info()
        assert info.value.code == -10005
        code, headers, data = await raw(t.nc, t.account, "account", b"{}")
        assert_error(code, headers, data, 504, "MT5TimeoutError")


async def test_hung_terminal_call_is_504_within_the_operation_timeout(nats_url):
    async with daemon_client(
        nats_url, "h504", wait_ticks=True,
        terminal={"operation_timeout": 0.3, "connection_timeout": 1.0,
                  "sim": {"faults": [{"kind": "hang", "at": 4.0, "duration": 120}]}},
        breaker={"max_failures": 100_000},
    ) as t:
        await t.col.wait_for(lambda: any(h.wedged for h in t.col.health), timeout=10)
        t0 = anyio.current_time()
        with pytest.raises(MT5TimeoutError, match="stuck|did not return"):
            await t.client.get_account_info()
        code, headers, data = await raw(t.nc, t.account, "candles",
                                        msgspec.json.encode({"symbol": "EURUSD", "count": 3}))
        assert_error(code, headers, data, 504, "MT5TimeoutError")
        assert anyio.current_time() - t0 < 10.0  # answered, not stuck behind the 120 s hang
        # price is served from the cache all along
        assert (await t.client.get_price("EURUSD")).symbol == "EURUSD"


# -- concurrency -------------------------------------------------------------------------

class GatedTerminal:
    """The sim, except that a history read from long ago blocks until the test opens the gate."""

    def __init__(self, sim) -> None:
        self._sim = sim
        self.gate = threading.Event()
        self.entered = threading.Event()

    def __getattr__(self, name):
        return getattr(self._sim, name)

    def copy_ticks_from(self, symbol, date_from, count, flags):
        if int(date_from) < time.time() - 30 * 86400:  # the poller only reads the last seconds
            self.entered.set()
            self.gate.wait(30)
        return self._sim.copy_ticks_from(symbol, date_from, count, flags)


async def test_slow_history_does_not_hold_up_price_or_its_own_endpoint(nats_url):
    gated: dict[str, GatedTerminal] = {}

    def module(cfg):
        gated["t"] = GatedTerminal(open_terminal(cfg))
        return gated["t"]

    async with daemon_client(nats_url, "conc", module=module, terminal={"operation_timeout": 20.0}) as t:
        term = gated["t"]
        result: dict = {}

        async def slow():
            result["ticks"] = await t.client.get_ticks("EURUSD", 0, int(time.time() * 1000), count=10)

        async with anyio.create_task_group() as tg:
            tg.start_soon(slow)
            assert await anyio.to_thread.run_sync(term.entered.wait, 10), "the history call never started"
            # The terminal thread is busy with the slow call; price does not need it.
            t0 = time.perf_counter()
            for _ in range(20):
                assert (await t.client.get_price("EURUSD")).symbol == "EURUSD"
            assert time.perf_counter() - t0 < 1.0
            # The same endpoint takes more requests meanwhile (this one fails validation at once).
            with pytest.raises(MT5ValidationError):
                await t.client.get_ticks("NOPE", 0, 1)
            ping = await t.nc.request("$SRV.PING.mt5d", b"", timeout=1)
            assert json.loads(ping.data)["name"] == "mt5d"
            assert "ticks" not in result and t.daemon.rpc.in_flight == 1
            term.gate.set()
        assert len(result["ticks"]) == 10
        assert t.daemon.rpc.in_flight == 0


# -- unit level: a fake connection (500, busy 503, the service's own deadline) -------------------

class FakeConn:
    def __init__(self, behaviour) -> None:
        self.behaviour = behaviour

    def status(self) -> ConnStatus:
        return ConnStatus(connected=True, auth_ok=True, breaker="closed", wedged=False, last_error="",
                          generation=1, selected=("EURUSD",))

    def selected_symbols(self):
        return ("EURUSD",)

    async def run_call(self, fn, *, timeout=None, lane="stream", order=0, start_by=None):
        return await self.behaviour()

    async def reconnect(self):
        return await self.behaviour()


FAKE_INFO = {f: 0 for f in ACCOUNT_INFO_FIELDS} | {"name": "n", "server": "s", "currency": "USD", "company": "c",
                                                   "leverage": 30}


class FakeHealth:
    async def measure(self):
        raise ZeroDivisionError("secret internal detail /home/x/password.txt")


@contextlib.asynccontextmanager
async def fake_service(nats_url, behaviour, **rpc):
    account = unique_account("unit")
    cfg = make_config(nats_url, account, rpc=rpc, terminal={"operation_timeout": 0.2, "connection_timeout": 0.2})
    svc_nc = await nats.connect(nats_url)
    nc = await nats.connect(nats_url)
    prices = PriceCache()
    prices.update(Tick(symbol="EURUSD", time_msc_broker=7_200_000, time_utc_ms=0, bid=1.0, ask=1.1, last=0.0,
                       volume=0, volume_real=0.0, flags=6))
    svc = RpcService(nc=svc_nc, cfg=cfg, account=account, conn=FakeConn(behaviour), prices=prices,
                     health=FakeHealth(), codec=Codec("json"), utc=UtcOffset(7200))
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(svc.run)
            yield SimpleNamespace(svc=svc, nc=nc, account=account, client=MT5Client(nc, account=account))
            tg.cancel_scope.cancel()
    finally:
        await nc.close()
        await svc_nc.close()


async def test_unexpected_exception_is_500_without_detail(nats_url, caplog):
    async def boom():
        raise RuntimeError("secret internal detail /home/x/password.txt")

    async with fake_service(nats_url, boom) as f:
        with caplog.at_level(logging.ERROR, logger="mt5d.rpc"):
            for endpoint in ("account", "symbols", "health", "reconnect"):
                code, headers, data = await raw(f.nc, f.account, endpoint, b"")
                err = assert_error(code, headers, data, 500, "MT5Error")
                assert err.message == "internal error" and b"secret" not in data
                assert "secret" not in headers[ERROR_HEADER]
            with pytest.raises(MT5Error, match="internal error"):
                await f.client.get_account_info()
        bugs = [r for r in caplog.records if r.name == "mt5d.rpc" and r.getMessage() == "rpc handler bug"]
        assert bugs and "secret internal detail" in bugs[0].detail  # the detail is in the log only
        assert {r.endpoint for r in bugs} >= {"account", "symbols", "health", "reconnect"}
        # The service is still up.
        assert (await f.client.get_price("EURUSD")).bid == 1.0


async def test_busy_is_503_at_once_and_the_deadline_is_504(nats_url):
    release, two_in = anyio.Event(), anyio.Event()
    entered = []

    async def slow():
        entered.append(1)
        if len(entered) == 2:
            two_in.set()
        await release.wait()
        return FAKE_INFO

    async with fake_service(nats_url, slow, max_in_flight=2) as f:
        results: list = []

        async def call():
            try:
                results.append(await f.client.get_leverage())
            except MT5Error as err:
                results.append(err)

        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            tg.start_soon(call)
            with anyio.fail_after(5):
                await two_in.wait()
            assert f.svc.in_flight == 2
            t0 = time.perf_counter()
            code, headers, data = await raw(f.nc, f.account, "account", b"")
            assert time.perf_counter() - t0 < 0.5
            assert_error(code, headers, data, 503, "MT5BusyError", contains="busy")
            assert f.svc.refused_busy == 1
            # price is answered inline: busy never applies to it
            assert (await f.client.get_price("EURUSD")).symbol == "EURUSD"
        # The two slow ones hit the service's deadline (connection + operation timeout + 1 s).
        assert all(isinstance(r, MT5TimeoutError) for r in results), results
        assert f.svc.in_flight == 0
        release.set()


async def test_request_without_reply_subject_is_ignored(nats_url):
    calls = []

    async def record():
        calls.append(1)
        return FAKE_INFO

    async with fake_service(nats_url, record) as f:
        await f.nc.publish(f"mt5.{f.account}.rpc.account", b"")
        await f.nc.publish(f"mt5.{f.account}.rpc.price", b"garbage")
        await f.nc.flush()
        assert await f.client.get_leverage() == 30  # the service is up and answered the next one
        assert len(calls) == 2  # the one without a reply subject was worked on, its reply dropped quietly


class RecordingNotifier:
    """The systemd notifier's interface, counting what the daemon tells systemd."""

    def __init__(self) -> None:
        self.watchdogs = 0

    def ready(self, status: str = "") -> None: ...

    def status(self, line: str) -> None: ...

    def stopping(self) -> None: ...

    def watchdog(self) -> None:
        self.watchdogs += 1


async def test_health_requests_neither_publish_health_events_nor_feed_the_watchdog(nats_url):
    # The periodic probe runs once at start, then not for an hour: whatever the health
    # stream and the watchdog see after that would have come from the requests.
    account = unique_account("hreq")
    cfg = make_config(nats_url, account, health={"interval": 3600.0},
                      stream={"symbols": SYMBOLS, "timeframes": ["M1"]})
    notifier = RecordingNotifier()
    daemon = Daemon(cfg, notifier=notifier)
    col = await Collector(account).start(nats_url)
    nc = await nats.connect(nats_url)
    try:
        async with running(daemon):
            await col.wait_for(lambda: "EURUSD" in col.ticks and col.health, timeout=10, what="a tick and a probe")
            client = MT5Client(nc, account=account)
            events, watchdogs = len(col.health), notifier.watchdogs
            replies = await asyncio.gather(*(client.probe() for _ in range(64)))  # max_in_flight
            assert all(r.connection_ok is True for r in replies)
            # What the daemon published before its replies is out once later ticks are.
            seen = len(col.ticks["EURUSD"])
            await col.wait_for(lambda: len(col.ticks["EURUSD"]) >= seen + 3, timeout=10, what="later ticks")
            assert len(col.health) == events and notifier.watchdogs == watchdogs
    finally:
        await nc.close()
        await col.close()
