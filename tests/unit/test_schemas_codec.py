"""Codec round trips in both encodings, sniffing, and additive schema evolution."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mt5d.codec import Codec, decode_any, decode_any_json_line, sniff
from mt5d.market import Candle, HealthEvent, Tick
from mt5d.rpc import CandlesReply, ErrorReply, PriceReply, Quote

TICK = Tick(symbol="EURUSD.m", time_msc_broker=1_700_007_200_123, time_utc_ms=1_700_000_000_123,
            bid=1.08123, ask=1.08125, last=0.0, volume=0, volume_real=0.0, flags=6)
CANDLE = Candle(symbol="#AAPL", timeframe="M15", time_broker=1_700_007_200, time_utc_ms=1_700_000_000_000,
                close_time_utc_ms=1_700_000_900_000, open=1.0, high=2.0, low=0.5, close=1.5,
                tick_volume=10, spread=2, real_volume=0, closed=False)
HEALTH = HealthEvent(account="10001234", time_utc_ms=1_700_000_000_000, event="breaker_open",
                     connection_ok=False, auth_ok=True, data_feed_ok=False, latency_ms=None,
                     breaker="open", wedged=False, detail="3 failures")
SAMPLES = [TICK, CANDLE, HEALTH, PriceReply(prices={"EURUSD.m": Quote(tick=TICK, age_ms=5)}, missing=["X"]),
           CandlesReply(candles=[CANDLE], more=True, next_end=5), ErrorReply(code=400, kind="K", message="m")]


@pytest.mark.parametrize("encoding", ["json", "msgpack"])
@pytest.mark.parametrize("obj", SAMPLES, ids=lambda o: type(o).__name__)
def test_round_trip(encoding, obj):
    codec = Codec(encoding)
    data = codec.encode(obj)
    assert codec.decode(data, type(obj)) == obj
    assert decode_any(data, type(obj)) == obj
    assert sniff(data) == encoding


@given(bid=st.floats(allow_nan=False, allow_infinity=False), msc=st.integers(0, 2**62),
       symbol=st.text(min_size=1), flags=st.integers(0, 2**32 - 1))
def test_tick_round_trip_property(bid, msc, symbol, flags):
    t = Tick(symbol=symbol, time_msc_broker=msc, time_utc_ms=msc, bid=bid, ask=bid, last=bid,
             volume=flags, volume_real=bid, flags=flags)
    for enc in ("json", "msgpack"):
        c = Codec(enc)
        assert c.decode(c.encode(t), Tick) == t


def test_json_is_readable_and_named():
    doc = json.loads(Codec("json").encode(TICK))
    assert doc["symbol"] == "EURUSD.m" and doc["time_utc_ms"] == 1_700_000_000_123
    assert TICK.time_broker == 1_700_007_200


def test_unknown_fields_are_ignored_and_new_fields_have_defaults():
    # A newer daemon added a field: an older subscriber still decodes.
    newer = {**msgspec.to_builtins(TICK), "future_field": [1, 2]}
    assert Codec("json").decode(msgspec.json.encode(newer), Tick) == TICK
    # An older daemon did not send the health fields added later.
    old = {k: v for k, v in msgspec.to_builtins(HEALTH).items()
           if k not in ("detail", "wedged", "latency_ms")}
    h = decode_any(msgspec.msgpack.encode(old), HealthEvent)
    assert h.detail == "" and h.latency_ms is None


def test_bad_encoding_and_bad_payload():
    with pytest.raises(ValueError):
        Codec("xml")  # type: ignore[arg-type]
    with pytest.raises(msgspec.ValidationError):
        Codec("json").decode(b'{"symbol": 1}', Tick)


def test_decode_any_json_line():
    assert json.loads(decode_any_json_line(Codec("msgpack").encode(TICK)))["bid"] == 1.08123
    assert json.loads(decode_any_json_line(Codec("json").encode(CANDLE)))["closed"] is False
    assert decode_any_json_line(b"{not json") == repr(b"{not json")
