"""MT5Client against a real nats-server and a fake mt5d RPC service (nats.micro, canned replies).

Checks the result structs (attribute access, ``_asdict()``), paging, error classes coming back across the wire,
no-responder and timeout handling, and the stream iterators."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import msgspec
import nats
import nats.micro
import pytest
from mt5d import MT5Client, subjects
from mt5d.actors.logic.replies import (
    account_reply,
    error_response,
    page_candles,
    page_ticks,
    parse_request,
)
from mt5d.codec import Codec
from mt5d.errors import (
    MT5CircuitBreakerOpen,
    MT5ConnectionError,
    MT5DataError,
    MT5StateError,
    MT5Error,
    MT5TimeoutError,
    MT5ValidationError,
)
from mt5d.market import Candle, HealthEvent, Tick
from mt5d.rpc import (
    ACCOUNT_INFO_FIELDS,
    CandlesRequest,
    PriceReply,
    PriceRequest,
    Quote,
    ReconnectReply,
    SymbolSpec,
    SymbolsReply,
    TicksRequest,
)

pytestmark = pytest.mark.anyio

ACCOUNT = "10001234"
PAGE_BYTES = 6 * 1024  # small pages, so the client has to follow them


@pytest.fixture
def anyio_backend():
    return "asyncio"  # nats-py is asyncio-only


# -- the fake daemon -------------------------------------------------------------

def tick(symbol: str, i: int, per_ms: int = 4) -> Tick:
    ms = 1_700_000_000_000 + i // per_ms
    return Tick(symbol=symbol, time_msc_broker=ms + 7_200_000, time_utc_ms=ms, bid=1.1 + i * 1e-5,
                ask=1.1002 + i * 1e-5, last=0.0, volume=0, volume_real=0.0, flags=6)


def candle(symbol: str, tf: str, i: int, closed: bool = True) -> Candle:
    t = 1_700_000_000 + i * 60
    return Candle(symbol=symbol, timeframe=tf, time_broker=t + 7200, time_utc_ms=t * 1000,
                  close_time_utc_ms=(t + 60) * 1000, open=1.0, high=1.2, low=0.9, close=1.1 + i,
                  tick_volume=i, spread=3, real_volume=0, closed=closed)


HISTORY_TICKS = [tick("EURUSD", i) for i in range(1500)]
HISTORY_BARS = [candle("EURUSD", "M1", i) for i in range(299)] + [candle("EURUSD", "M1", 299, closed=False)]
ACCOUNT_INFO = {f: 0 for f in ACCOUNT_INFO_FIELDS} | {
    "login": 10001234, "leverage": 500, "margin": 12.5, "margin_free": 987.5, "balance": 1000.0,
    "equity": 1000.0, "name": "Sim", "server": "Sim-Demo", "currency": "USD", "company": "mt5d",
    "trade_allowed": True}
HEALTH = HealthEvent(account=ACCOUNT, time_utc_ms=1, event="probe", connection_ok=True, auth_ok=True,
                     data_feed_ok=True, latency_ms=0.42, breaker="closed")


def make_handlers(codec: Codec):
    async def answer(req, fn):
        try:
            await req.respond(codec.encode(fn(req.data)))
        except MT5Error as err:  # what the real service does: map, never leak
            await req.respond_error(*error_response(err))

    def account(data):
        return account_reply(ACCOUNT_INFO)  # as the daemon does with account_info()

    def price(data):
        req = parse_request(data, PriceRequest)
        if "OPEN" in req.wanted:
            raise MT5CircuitBreakerOpen("circuit breaker open; retry in 60 s")
        known = {s: Quote(tick=tick(s, 1), age_ms=3) for s in req.wanted if s in ("EURUSD", "EURUSD.m")}
        return PriceReply(prices=known, missing=[s for s in req.wanted if s not in known])

    def candles(data):
        req = parse_request(data, CandlesRequest)
        if req.symbol != "EURUSD":
            raise MT5ValidationError(f"unknown symbol {req.symbol!r}", -4)
        if req.mode == "range":
            bars = [c for c in HISTORY_BARS if req.start <= c.time_utc_ms <= req.end]
        else:
            end = req.end if req.end is not None else 1 << 62
            bars = [c for c in HISTORY_BARS if c.time_utc_ms <= end][-req.count:]
        return page_candles(bars, codec, PAGE_BYTES)

    def ticks(data):
        req = parse_request(data, TicksRequest)
        answer = [t for t in HISTORY_TICKS if req.start <= t.time_utc_ms <= req.end]
        at_start = sum(1 for t in answer if t.time_utc_ms == req.start)
        answer = answer[min(req.skip, at_start):][: req.count]
        return page_ticks(req, answer, codec, PAGE_BYTES)

    def symbols(data):
        return SymbolsReply(symbols=[SymbolSpec(symbol="EURUSD.m", digits=5, point=1e-5, spread=12, trade_mode=4,
                                                description="Euro vs Dollar", currency_base="EUR",
                                                currency_profit="USD")])

    return {
        "account": account, "price": price, "candles": candles, "ticks": ticks, "symbols": symbols,
        "health": lambda data: HEALTH, "reconnect": lambda data: ReconnectReply(ok=True),
    }, answer


@pytest.fixture(params=["json", "msgpack"])
async def fake(request, nats_url):
    """A connection with a fake mt5d for ACCOUNT in this encoding, a service whose handlers
    crash for account "broken", and a subscriber that never answers for account "silent"."""
    conn = await nats.connect(nats_url)
    codec = Codec(request.param)
    handlers, answer = make_handlers(codec)
    svc = await nats.micro.add_service(conn, name="mt5d", version="0.1.0")
    group = svc.add_group(name=subjects.rpc_group("mt5", ACCOUNT))
    for name, fn in handlers.items():
        await group.add_endpoint(name=name, handler=lambda req, fn=fn: answer(req, fn))

    async def crash(req):
        raise RuntimeError("boom")  # nats.micro answers "500" by itself

    broken = await nats.micro.add_service(conn, name="broken", version="0.1.0")
    await broken.add_group(name=subjects.rpc_group("mt5", "broken")).add_endpoint(name="account", handler=crash)

    async def swallow(msg):
        pass

    await conn.subscribe("mt5.silent.rpc.>", cb=swallow)
    await conn.flush()
    yield SimpleNamespace(nc=conn, encoding=request.param)
    await svc.stop()
    await broken.stop()
    await conn.close()


@pytest.fixture
def nc(fake):
    return fake.nc


@pytest.fixture
def codec(fake):
    return Codec(fake.encoding)


@pytest.fixture
def client(fake):
    return MT5Client(fake.nc, account=ACCOUNT, encoding=fake.encoding)


# -- request-reply -----------------------------------------------------------------

async def test_account_shapes(client):
    info = await client.get_account_info()
    assert set(info._asdict()) == set(ACCOUNT_INFO_FIELDS) | {"margin_used"}
    assert info.login == 10001234 and info.trade_allowed is True and info.name == "Sim"
    assert info._asdict()["balance"] == info.balance == 1000.0
    with pytest.raises(AttributeError):
        info.balance = 0.0  # frozen
    assert await client.get_leverage() == 500
    assert await client.get_margin_used() == 12.5
    assert await client.get_margin_free() == 987.5


async def test_prices(client):
    p = await client.get_price("EURUSD.m")
    assert p.symbol == "EURUSD.m" and p.age_ms == 3 and p.source == "daemon"  # no stream: the RPC
    assert {"bid", "ask", "last", "time", "time_msc", "time_utc_ms", "volume", "flags"} <= set(p._asdict())
    assert p.time == p.time_msc // 1000 and p.bid == tick("EURUSD.m", 1).bid
    prices = await client.get_prices(["EURUSD", "EURUSD.m", "NOPE"])
    assert set(prices) == {"EURUSD", "EURUSD.m"}
    with pytest.raises(MT5StateError, match="no price"):  # the fake says nothing; the daemon says why
        await client.get_price("NOPE")


async def test_candles_follow_pages(client):
    bars = await client.get_candles("EURUSD", "M1", 250)
    assert len(bars) == 250
    assert [b.tick_volume for b in bars] == list(range(50, 300))  # oldest first, no gap, no repeat
    assert bars[-1].closed is False and all(b.closed for b in bars[:-1])
    assert {"open", "high", "low", "close", "tick_volume", "spread", "real_volume", "time_utc_ms"} <= set(
        bars[0]._asdict())
    assert bars[0].time == bars[0].time_broker
    first = HISTORY_BARS[10].time_utc_ms
    ranged = await client.get_candles("EURUSD", 1, start=first, end=HISTORY_BARS[209].time_utc_ms)  # minutes
    assert [b.tick_volume for b in ranged] == list(range(10, 210))
    default = await client.get_candles("EURUSD", "M1")
    assert len(default) == 100 and default[-1] == HISTORY_BARS[-1]


async def test_ticks_follow_pages_across_shared_milliseconds(client):
    start, end = HISTORY_TICKS[3].time_utc_ms, HISTORY_TICKS[1203].time_utc_ms
    got = await client.get_ticks("EURUSD", start, end)
    assert got == [t for t in HISTORY_TICKS if start <= t.time_utc_ms <= end]
    few = await client.get_ticks("EURUSD", start, end, count=900)
    assert len(few) == 900 and few[0].time_utc_ms == start


async def test_symbols_health_probe_reconnect(client):
    (spec,) = await client.get_symbols()
    assert spec.symbol == "EURUSD.m" and spec.digits == 5
    assert await client.get_health() == HEALTH
    status = await client.probe()
    assert status == HEALTH and status.latency_ms == 0.42 and status.connection_ok and status.data_feed_ok
    assert client.is_connected  # the connection is up and the daemon's latest health says connected
    assert await client.reconnect() is True


async def test_error_replies_raise_the_same_class(client):
    with pytest.raises(MT5CircuitBreakerOpen, match="circuit breaker open"):
        await client.get_price("OPEN")
    with pytest.raises(MT5ValidationError) as info:
        await client.get_candles("XAUUSD", "M1", 10)
    assert info.value.code == -4


async def test_invalid_requests_fail_before_the_wire(client):
    with pytest.raises(MT5ValidationError, match="timeframe"):
        await client.get_candles("EURUSD", "M7")
    with pytest.raises(MT5ValidationError, match=r"\$\.count"):
        await client.get_candles("EURUSD", "M1", 0)


async def test_uncaught_service_exception_is_an_mt5_error(nc):
    with pytest.raises(MT5Error) as info:
        await MT5Client(nc, account="broken").get_account_info()
    assert info.value.status == 500


async def test_no_responders_is_a_connection_error_and_silence_a_timeout(nc):
    with pytest.raises(MT5ConnectionError, match="no mt5d"):
        await MT5Client(nc, account="nobody").get_leverage()
    with pytest.raises(MT5TimeoutError, match="within"):
        await MT5Client(nc, account="silent", timeout=0.2).get_leverage()


# -- streams -----------------------------------------------------------------------

async def test_tick_stream(nc, codec, client):
    sub = subjects.Subjects("mt5", ACCOUNT)
    wanted = [tick("EURUSD.m", 1), tick("#AAPL", 2)]
    async with client.ticks(["EURUSD.m", "#AAPL"]) as stream:
        await nc.publish(sub.tick("GBPUSD"), codec.encode(tick("GBPUSD", 0)))  # not subscribed
        for t in wanted:
            await nc.publish(sub.tick(t.symbol), codec.encode(t))
        got = [await asyncio.wait_for(stream.__anext__(), 5) for _ in wanted]
    assert got == wanted
    assert [t async for t in stream] == []  # closed: iteration ends


async def test_candle_and_health_streams(nc, codec, client):
    sub = subjects.Subjects("mt5", ACCOUNT)
    closed, forming = candle("EURUSD.m", "M15", 1), candle("EURUSD.m", "M15", 2, closed=False)
    async with client.candles("EURUSD.m", "M15", forming=True) as stream, client.health_events() as health:
        await nc.publish(sub.candle("EURUSD.m", "M15"), codec.encode(closed))
        assert await asyncio.wait_for(stream.__anext__(), 5) == closed
        await nc.publish(sub.candle_forming("EURUSD.m", "M15"), codec.encode(forming))
        assert await asyncio.wait_for(stream.__anext__(), 5) == forming
        await nc.publish(sub.health(), codec.encode(HEALTH))
        assert await asyncio.wait_for(health.__anext__(), 5) == HEALTH


async def test_all_ticks_and_a_malformed_message(nc, client):
    sub = subjects.Subjects("mt5", ACCOUNT)
    async with client.ticks() as stream:
        await nc.publish(sub.tick("X.y"), msgspec.json.encode({"symbol": "X.y"}))
        with pytest.raises(MT5DataError, match="Tick"):
            await asyncio.wait_for(stream.__anext__(), 5)
