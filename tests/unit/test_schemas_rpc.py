"""RPC requests: validation errors are MT5ValidationError with a message naming the field;
error replies round-trip to the same class; bulk replies page within a size budget."""

from __future__ import annotations

from collections import namedtuple

import msgspec
import pytest
from mt5d.actors.logic.replies import (
    account_reply,
    error_response,
    page_candles,
    page_ticks,
    parse_request,
    symbol_spec,
)
from mt5d.codec import Codec
from mt5d.errors import (
    MT5BusyError,
    MT5CircuitBreakerOpen,
    MT5ConnectionError,
    MT5DataError,
    MT5Error,
    MT5TimeoutError,
    MT5ValidationError,
)
from mt5d.market import Candle, Tick
from mt5d.rpc import (
    ACCOUNT_INFO_FIELDS,
    ENDPOINTS,
    ERROR_CODE_HEADER,
    ERROR_HEADER,
    MAX_REQUEST_BYTES,
    AccountRequest,
    CandlesRequest,
    PriceRequest,
    TicksRequest,
    check_timeframe,
    error_from_reply,
    validate_request,
)

J, M = Codec("json"), Codec("msgpack")


def bad(data: bytes, type_) -> str:
    with pytest.raises(MT5ValidationError) as info:
        parse_request(data, type_)
    # no chained msgspec error: a printed traceback shows only the safe message
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__
    return info.value.message


def test_empty_body_means_defaults():
    assert parse_request(b"", AccountRequest) == AccountRequest()
    assert parse_request(b"  ", AccountRequest) == AccountRequest()


def test_candles_defaults_and_modes():
    req = parse_request(b'{"symbol": "EURUSD"}', CandlesRequest)
    assert (req.timeframe, req.count, req.mode) == ("M15", 100, "latest")
    assert parse_request(b'{"symbol":"X","end":5,"count":3}', CandlesRequest).mode == "before"
    assert parse_request(b'{"symbol":"X","start":1,"end":5}', CandlesRequest).mode == "range"
    assert parse_request(M.encode(CandlesRequest(symbol="X", timeframe="H4", count=7)), CandlesRequest).count == 7


@pytest.mark.parametrize(
    "body, words",
    [
        (b'{"symbol": "EURUSD", "count": 0}', ["$.count", ">= 1"]),
        (b'{"symbol": "EURUSD", "count": 5001}', ["$.count", "<= 5000"]),
        (b'{"symbol": "EURUSD", "count": "10"}', ["$.count"]),
        (b'{"count": 10}', ["symbol"]),
        (b'{"symbol": ""}', ["$.symbol"]),
        (b'{"symbol": "EURUSD", "timeframe": "M7"}', ["timeframe", "M15"]),
        (b'{"symbol": "EURUSD", "start": 10}', ["end"]),
        (b'{"symbol": "EURUSD", "start": 10, "end": 5}', ["before"]),
        (b'{"symbol": "EURUSD", "start": 1, "end": 5, "count": 5}', ["not both"]),
        (b'{"symbol": "EURUSD", "start": -1, "end": 5}', ["$.start"]),
        (b"[1, 2]", ["object"]),
        (b'{"symbol": ', ["malformed"]),
        (b"\xff\x00garbage", ["request"]),
    ],
)
def test_candles_request_errors(body, words):
    message = bad(body, CandlesRequest)
    for w in words:
        assert w in message, message
    assert "Traceback" not in message


def test_ticks_request():
    req = parse_request(b'{"symbol":"X","start":1,"end":2}', TicksRequest)
    assert (req.count, req.skip) == (100_000, 0)
    assert "$.count" in bad(b'{"symbol":"X","start":1,"end":2,"count":100001}', TicksRequest)
    assert "before" in bad(b'{"symbol":"X","start":3,"end":2}', TicksRequest)
    assert "$.skip" in bad(b'{"symbol":"X","start":1,"end":2,"skip":-1}', TicksRequest)


def test_price_request():
    assert parse_request(b'{"symbol":"X"}', PriceRequest).wanted == ["X"]
    assert parse_request(b'{"symbols":["X","Y.m"]}', PriceRequest).wanted == ["X", "Y.m"]
    assert "exactly one" in bad(b"{}", PriceRequest)
    assert "exactly one" in bad(b'{"symbol":"X","symbols":["Y"]}', PriceRequest)
    assert "$.symbols" in bad(b'{"symbols":[]}', PriceRequest)


def test_oversized_request():
    body = b'{"symbol": "' + b"x" * MAX_REQUEST_BYTES + b'"}'
    assert "too large" in bad(body, CandlesRequest)


def test_validate_request_checks_constraints_of_built_requests():
    with pytest.raises(MT5ValidationError, match=r"\$\.count"):
        validate_request(CandlesRequest(symbol="X", count=0))
    assert validate_request(CandlesRequest(symbol="X")).count == 100


def test_check_timeframe():
    assert check_timeframe("MN1") == "MN1"
    with pytest.raises(MT5ValidationError) as info:
        check_timeframe("x" * 1000)
    assert len(info.value.message) < 200


def test_endpoints_table():
    assert set(ENDPOINTS) == {"account", "price", "candles", "ticks", "symbols", "health", "reconnect",
                              "book", "symbol", "terminal", "positions", "orders", "deals", "history_orders"}


@pytest.mark.parametrize("endpoint,body", [
    ("positions", b'{"ticket": 0}'),
    ("positions", b'{"ticket": 9223372036854775808}'),
    ("positions", b'{"group": ""}'),
    ("positions", b'{"group": "a\\u0000"}'),
    ("orders", b'{"group": "' + b"*" * 257 + b'"}'),
    ("orders", b'{"symbol": ""}'),
    ("deals", b'{}'),
    ("deals", b'{"start": 10, "end": 5}'),
    ("deals", b'{"start": -1, "end": 5}'),
    ("deals", b'{"start": 0, "end": 5, "count": 0}'),
    ("deals", b'{"start": 0, "end": 5, "count": 10001}'),
    ("history_orders", b'{"start": 0, "end": 5, "position": -3}'),
    ("history_orders", b'{"start": 0, "end": "5"}'),
])
def test_account_requests_refuse_hostile_input(endpoint, body):
    with pytest.raises(MT5ValidationError):
        parse_request(body, ENDPOINTS[endpoint][0])


def test_history_pages_continue_after_the_last_item():
    from mt5d.account import Deal
    from mt5d.actors.logic.replies import page_history
    from mt5d.rpc import DealsReply, DealsRequest

    deals = [Deal(ticket=i, order=0, symbol="EURUSD", type=0, entry=0, volume=0.1, price=1.0, profit=0.0,
                  commission=0.0, swap=0.0, fee=0.0, time_msc_broker=1000 + i // 3, time_utc_ms=1000 + i // 3)
             for i in range(300)]
    req = DealsRequest(start=1000, end=2000)
    codec = Codec("json")
    one = page_history(req, deals, lambda d: d.time_utc_ms, DealsReply, codec, 1024 * 1024)
    assert one.deals == deals and not one.more
    page = page_history(req, deals, lambda d: d.time_utc_ms, DealsReply, codec, 20_000)
    assert page.more and 0 < len(page.deals) < 300
    last = page.deals[-1].time_utc_ms
    assert page.next_start == last and page.next_skip == sum(1 for d in page.deals if d.time_utc_ms == last)
    cut = page_history(req, deals[:10], lambda d: d.time_utc_ms, DealsReply, codec, 1024 * 1024, truncated=True)
    assert cut.more and cut.deals == deals[:10] and cut.next_start == deals[9].time_utc_ms


@pytest.mark.parametrize("err", [MT5ValidationError("bad symbol"), MT5CircuitBreakerOpen("breaker open", 0),
                                 MT5TimeoutError("slow", -10005), MT5ConnectionError("ipc\nlost", -10004)])
def test_error_round_trip(err):
    code, description, body = error_response(err)
    assert code == str(err.status) and "\n" not in description
    back = error_from_reply({ERROR_HEADER: description, ERROR_CODE_HEADER: code}, body)
    assert type(back) is type(err) and back.message == err.message and back.code == err.code


def test_unexpected_exception_says_nothing_inside():
    code, description, body = error_response(KeyError("secret internals"))
    assert code == "500" and "secret" not in description and b"secret" not in body
    assert type(error_from_reply({ERROR_CODE_HEADER: "500"}, body)) is MT5Error


def test_bare_micro_error_and_success():
    err = error_from_reply({ERROR_HEADER: "no such thing", ERROR_CODE_HEADER: "503"}, b"")
    assert isinstance(err, MT5BusyError) and err.message == "no such thing"
    assert error_from_reply(None, b"{}") is None
    assert error_from_reply({"Other": "x"}, b"{}") is None


def test_account_reply_from_namedtuple():
    AccountInfo = namedtuple("AccountInfo", ACCOUNT_INFO_FIELDS)
    values = {f: 0 for f in ACCOUNT_INFO_FIELDS} | {"name": "n", "server": "s", "currency": "USD",
                                                       "company": "c", "leverage": 100, "margin": 12.5,
                                                       "margin_free": 87.5, "trade_allowed": True}
    reply = account_reply(AccountInfo(**values))
    assert reply.margin_used == 12.5 and reply.leverage == 100 and reply.fifo_close is False
    with pytest.raises(MT5DataError):
        account_reply({"login": 1})


def test_symbol_spec_from_symbol_info():
    spec = symbol_spec({"name": "EURUSD.m", "digits": 5, "point": 1e-5, "spread": 12, "trade_mode": 4,
                        "description": "Euro", "currency_base": "EUR", "currency_profit": "USD", "extra": 1})
    assert spec.symbol == "EURUSD.m" and spec.digits == 5


def _ticks(n: int, per_ms: int = 3) -> list[Tick]:
    return [Tick(symbol="EURUSD", time_msc_broker=i // per_ms, time_utc_ms=1000 + i // per_ms, bid=1.1, ask=1.2,
                 last=0.0, volume=0, volume_real=0.0, flags=6) for i in range(n)]


@pytest.mark.parametrize("codec", [J, M], ids=["json", "msgpack"])
def test_page_ticks_cursor_covers_everything_once(codec):
    ticks, budget = _ticks(500), 8 * 1024
    req = TicksRequest(symbol="EURUSD", start=1000, end=10**6)
    seen: list[Tick] = []
    for _ in range(100):
        # what the daemon does for one request: skip/count applied to the full answer
        answer = [t for t in ticks if t.time_utc_ms >= req.start]
        at_start = [t for t in answer if t.time_utc_ms == req.start]
        answer = answer[min(req.skip, len(at_start)):][: req.count]
        reply = page_ticks(req, answer, codec, budget)
        assert len(codec.encode(reply)) <= budget
        seen += reply.ticks
        if not reply.more:
            break
        req = TicksRequest(symbol="EURUSD", start=reply.next_start, end=req.end, skip=reply.next_skip)
    assert seen == ticks


def test_page_ticks_fits_without_paging():
    ticks = _ticks(10)
    reply = page_ticks(TicksRequest(symbol="EURUSD", start=0, end=1), ticks, J, 1 << 20)
    assert reply.ticks == ticks and not reply.more


def test_page_candles_keeps_the_newest():
    candles = [Candle(symbol="X", timeframe="M1", time_broker=i * 60, time_utc_ms=i * 60_000,
                      close_time_utc_ms=(i + 1) * 60_000, open=1, high=1, low=1, close=1, tick_volume=1,
                      spread=0, real_volume=0, closed=True) for i in range(1, 200)]
    reply = page_candles(candles, J, 8 * 1024)
    assert reply.more and reply.candles == candles[-len(reply.candles):]
    assert reply.next_end == reply.candles[0].time_utc_ms - 1
    assert len(J.encode(reply)) <= 8 * 1024
    assert not page_candles(candles, J, 1 << 20).more


def test_requests_ignore_unknown_fields():
    # a newer client may send a field this daemon does not know
    assert parse_request(msgspec.json.encode({"symbol": "X", "new": 1}), CandlesRequest).symbol == "X"
