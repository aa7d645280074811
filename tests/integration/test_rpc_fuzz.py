"""Hostile payloads at every RPC endpoint of a running daemon (real nats-server, sim terminal).

Hypothesis (bounded: 200 examples, no deadline) throws random bytes, JSON of
the wrong types, huge numbers, deep nesting, oversized bodies, MessagePack
garbage and near-valid requests with hostile field values. Every request must
get a well-formed reply (decodes as the endpoint's reply type) or a
well-formed error reply (code header, ErrorReply JSON body naming a known
class, a one-line message without internals, never 500); afterwards the
service still answers normal requests, and the tick stream kept flowing the
whole time without a gap (compared with the terminal's own history).

Hypothesis runs in a worker thread; each example makes its request on the
event loop (``anyio.from_thread.run``), so the daemon keeps running in the
loop between examples and a failing example still shrinks.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import anyio
import anyio.from_thread
import anyio.to_thread
import msgspec
import nats
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mt5d.daemon.app import Daemon
from mt5d import MT5Client
from mt5d.codec import decode_any
from mt5d.errors import MT5ValidationError
from mt5d.market import TIMEFRAMES
from mt5d.rpc import (
    ENDPOINTS,
    ERROR_CODE_HEADER,
    ERROR_HEADER,
    MAX_CANDLES,
    MAX_REQUEST_BYTES,
    MAX_TICKS,
    ErrorReply,
)
from tests.integration.helpers import Collector, closed_window, make_config, running, unique_account

pytestmark = pytest.mark.anyio

SYMBOLS = ["EURUSD", "GBPUSD", "EURUSD.m"]
BOOKS = ["EURUSD", "EURUSD.m"]
ERROR_KINDS = {"MT5ValidationError", "MT5CircuitBreakerOpen", "MT5TimeoutError", "MT5ConnectionError",
               "MT5DataError", "MT5InitError", "MT5AuthError", "MT5StateError"}
MAX_EXAMPLES = 200


@pytest.fixture
def anyio_backend():
    return "asyncio"


# -- payload strategies -------------------------------------------------------------------

HUGE = st.one_of(st.integers(min_value=-(2**70), max_value=2**70), st.just(2**63), st.just(2**64 - 1),
                 st.just(-(2**63) - 1), st.just(10**30))
SCALARS = st.one_of(
    st.none(), st.booleans(), HUGE, st.integers(-5, MAX_TICKS + 5), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40), st.sampled_from(["EURUSD", "EURUSD.m", "#AAPL", "*", ">", "EURUSD\x00", "мт5", "",
                                           " EURUSD", "EURUSD ", "..", "a" * 64, "a" * 65, "M15", "m15", "H0",
                                           "MN1", "W1"]),
)
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=5)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=5), max_leaves=15)
FIELDS = st.sampled_from(["symbol", "symbols", "timeframe", "count", "start", "end", "skip", "ticket", "group",
                          "position"])
now_ms = int(time.time() * 1000)
NEAR_VALID_VALUE = st.one_of(
    SCALARS,
    st.sampled_from(SYMBOLS), st.sampled_from(list(TIMEFRAMES)),
    st.integers(0, MAX_CANDLES + 2), st.integers(now_ms - 30 * 86400_000, now_ms + 86400_000),
    st.lists(st.sampled_from(SYMBOLS + ["NOPE", ""]), max_size=4),
    st.lists(st.text(max_size=3), min_size=0, max_size=1100),  # over MAX_PRICE_SYMBOLS sometimes
    # group masks: wildcard chains (no regex backtracking), exclusions, controls, oversized
    st.sampled_from(["*", "*,!EUR*", "!*", ",,,", "*" * 256, "*a" * 128, "*" * 300, "EUR\x00", "\n", "[", "(?:"]),
    st.integers(-(2**64), 2**64),  # tickets out of range
)
NEAR_VALID = st.dictionaries(FIELDS, NEAR_VALID_VALUE, max_size=6)


def _json(obj) -> bytes:
    return json.dumps(obj, allow_nan=True).encode()  # NaN/Infinity: not JSON, must be refused cleanly


def _msgpack(obj) -> bytes:
    try:
        return msgspec.msgpack.encode(obj)
    except (OverflowError, msgspec.EncodeError, TypeError):
        return b"\xc1"  # the one byte msgpack never uses


# Valid requests per endpoint: near-valid payloads override some of their fields.
VALID = {
    "account": {}, "symbols": {}, "health": {}, "reconnect": {},
    "price": {"symbols": SYMBOLS},
    "candles": {"symbol": "EURUSD", "timeframe": "M15", "count": 20},
    "ticks": {"symbol": "EURUSD", "start": now_ms - 120_000, "end": now_ms, "count": 500},
    "book": {"symbols": BOOKS}, "symbol": {"symbol": "EURUSD"}, "terminal": {},
    "positions": {}, "orders": {"symbol": "EURUSD"},
    "deals": {"start": now_ms - 3_600_000, "end": now_ms + 60_000},
    "history_orders": {"start": now_ms - 3_600_000, "end": now_ms + 60_000, "group": "*USD*"},
}


def payloads(endpoint: str):
    base = VALID[endpoint]
    mutated = NEAR_VALID.map(lambda d: {**base, **d})
    return st.one_of(
        PAYLOADS,
        mutated.map(_json),
        mutated.map(_msgpack),
        st.just(base).map(_json),
    )


PAYLOADS = st.one_of(
    st.binary(max_size=300),  # random bytes
    st.binary(min_size=1, max_size=200).map(lambda b: b"\x80" + b),  # msgpack-looking garbage
    st.binary(min_size=1, max_size=200).map(lambda b: b"\xde\xff\xff" + b),  # a map claiming 65535 entries
    JSON_VALUES.map(_json),  # JSON of the wrong shapes and types
    JSON_VALUES.map(_msgpack),
    NEAR_VALID.map(_json),  # the right field names, hostile values
    NEAR_VALID.map(_msgpack),
    st.integers(1, 100_000).map(lambda n: b"[" * n + b"]" * n),  # deep nesting
    st.integers(1, 5000).map(lambda n: b'{"symbol":' * n + b'"EURUSD"' + b"}" * n),
    st.integers(1, 100_000).map(lambda n: b"\x91" * n + b"\xc0"),  # deep msgpack nesting
    st.integers(MAX_REQUEST_BYTES - 20, MAX_REQUEST_BYTES + 20).map(
        lambda n: b'{"symbol":"' + b"A" * n + b'"}'),  # oversized, around the limit
    st.integers(MAX_REQUEST_BYTES, 900_000).map(lambda n: b" " * n + b"{}"),  # oversized whitespace
    st.integers(1, 400).map(lambda n: b'{"count":' + b"9" * n + b',"symbol":"EURUSD"}'),  # huge number
    st.text(max_size=200).map(lambda s: s.encode("utf-8", "surrogatepass")),
)


# -- the test ----------------------------------------------------------------------------

# The event loop (nats-py's client ids) uses `random` in its own thread while Hypothesis
# draws in the worker thread; Hypothesis notices the global random state moving and warns.
@pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")
async def test_hostile_payloads_get_clean_replies_and_streaming_goes_on(nats_url):
    account = unique_account("fuzz")
    cfg = make_config(nats_url, account, stream={"symbols": SYMBOLS, "timeframes": ["M1"], "books": BOOKS},
                      terminal={"sim": {"ticks_per_second": 20.0, "trades": [
                          {"at": 0.5, "action": "buy", "symbol": "EURUSD", "volume": 0.1},
                          {"at": 1.0, "action": "sell", "symbol": "GBPUSD", "volume": 0.2},
                          {"at": 1.5, "action": "buy_limit", "symbol": "EURUSD", "volume": 0.1, "price": 0.5}]}})
    daemon = Daemon(cfg)
    col = await Collector(account).start(nats_url)
    nc = await nats.connect(nats_url)
    arrivals: list[float] = []

    async def on_tick(msg):
        arrivals.append(time.monotonic())

    await nc.subscribe(f"mt5.{account}.tick.>", cb=on_tick)
    await nc.flush()
    seen: Counter = Counter()
    try:
        async with running(daemon):
            await col.wait_for(lambda: set(SYMBOLS) <= set(col.ticks), timeout=10)

            async def one(endpoint: str, payload: bytes) -> None:
                msg = await nc.request(f"mt5.{account}.rpc.{endpoint}", payload, timeout=15)
                code = (msg.headers or {}).get(ERROR_CODE_HEADER)
                if code is None:
                    decode_any(msg.data, ENDPOINTS[endpoint][1])  # a well-formed reply of its type
                    seen[(endpoint, "ok")] += 1
                    return
                err = msgspec.json.decode(msg.data, type=ErrorReply)
                assert code == str(err.code), (code, err)
                assert err.kind in ERROR_KINDS, err
                assert msg.headers[ERROR_HEADER] == " ".join(err.message.split())
                assert "Traceback" not in err.message and "File \"" not in err.message
                assert len(err.message) < 400
                # Only the caller's mistakes: the terminal is healthy, and nothing is a bug (500).
                assert err.code == 400 and err.kind == "MT5ValidationError", (endpoint, payload[:200], err)
                seen[(endpoint, code)] += 1

            ticks_before = len(arrivals)
            t0 = time.monotonic()

            def fuzz() -> None:
                @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
                          suppress_health_check=list(HealthCheck))
                @given(data=st.data())
                def check(data) -> None:
                    endpoint = data.draw(st.sampled_from(list(ENDPOINTS)), label="endpoint")
                    payload = data.draw(payloads(endpoint), label="payload")
                    anyio.from_thread.run(one, endpoint, payload)

                check()

            await anyio.to_thread.run_sync(fuzz)
            t1 = time.monotonic()

            # Every endpoint was hit, and most requests were refused as the caller's mistake.
            assert {e for e, _ in seen} == set(ENDPOINTS), seen
            assert sum(n for (_, c), n in seen.items() if c == "400") > MAX_EXAMPLES // 2, seen

            # The service is still up and answers normal requests.
            client = MT5Client(nc, account=account)
            assert (await client.get_price("EURUSD")).symbol == "EURUSD"
            assert (await client.get_account_info()).login == 10001234
            assert len(await client.get_candles("EURUSD", "M1", 10)) == 10
            assert (await client.probe()).connection_ok is True
            assert (await client.get_book("EURUSD")).symbol == "EURUSD"
            assert (await client.get_symbol("GBPUSD")).name == "GBPUSD"
            assert (await client.get_terminal()).connected
            with pytest.raises(MT5ValidationError):
                await client.get_symbol("NOPE")
            with pytest.raises(MT5ValidationError):
                await client.get_candles("EURUSD", "M7", 10)

            # Streaming went on during the whole run: ticks arrived, never a pause.
            n_during = sum(1 for a in arrivals[ticks_before:] if a <= t1)
            during = [t0] + [a for a in arrivals if t0 <= a <= t1] + [t1]
            longest = max(b - a for a, b in zip(during, during[1:]))
            expected = 20.0 * len(SYMBOLS) * (t1 - t0)
            assert n_during > expected / 4, (n_during, expected)
            assert longest < 2.0, f"the stream paused for {longest:.2f} s during the fuzz run"
            before = len(arrivals)
            await col.wait_for(lambda: len(arrivals) > before + 10, timeout=5)

            # ...and without a gap: what the stream published is the terminal's history.
            streamed = await closed_window(col, "EURUSD")
            start, end = streamed[0].time_utc_ms, streamed[-1].time_utc_ms
            history = await client.get_ticks("EURUSD", start, end)
            tail = [t for t in history if t.time_utc_ms > start]
            assert tail == [t for t in streamed if t.time_utc_ms > start]
    finally:
        await nc.close()
        await col.close()
    print(f"fuzz: {sum(seen.values())} requests in {t1 - t0:.1f} s, replies {dict(sorted(seen.items()))}, "
          f"{n_during} ticks streamed meanwhile, longest gap {longest * 1000:.0f} ms")
