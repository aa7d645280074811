"""The daemon's side of the RPC contract: parsing requests, error replies, results
as replies, and paging bulk replies to fit a NATS message. The contract itself
(``mt5d.rpc``) has only what a client needs.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

import msgspec
from mt5d.codec import Codec, decode_any
from mt5d.errors import MT5DataError, MT5ValidationError
from mt5d.market import Candle, Tick
from mt5d.rpc import (
    MAX_REQUEST_BYTES,
    REPLY_HEADROOM,
    AccountReply,
    CandlesReply,
    ErrorReply,
    Request,
    TERMINAL_INFO_HIDDEN,
    SymbolInfo,
    SymbolSpec,
    TerminalInfo,
    TicksReply,
    TicksRequest,
)

__all__ = ["parse_request", "error_response", "account_reply", "symbol_spec", "page_ticks", "page_candles",
           "symbol_info_reply", "terminal_info_reply", "page_history"]

R = TypeVar("R", bound=Request)


def parse_request(data: bytes, type: type[R]) -> R:
    """Decode, type-check and ``checked()`` a request body, in either encoding.

    Every problem is an MT5ValidationError whose message names the field
    (msgspec's ``- at `$.count``` suffix) and never carries a traceback."""
    if len(data) > MAX_REQUEST_BYTES:
        raise MT5ValidationError(f"request too large: {len(data)} bytes (at most {MAX_REQUEST_BYTES})")
    if not bytes(data).strip():
        data = b"{}"
    try:
        req = decode_any(data, type)
    except msgspec.ValidationError as err:
        raise MT5ValidationError(f"invalid request: {str(err)[:200]}") from None
    except msgspec.DecodeError as err:
        raise MT5ValidationError(f"malformed request: {str(err)[:200]}") from None
    except RecursionError:  # deep nesting, even inside an unknown field
        raise MT5ValidationError("malformed request: nested too deeply") from None
    return req.checked()


_JSON = msgspec.json.Encoder()


def error_response(err: BaseException) -> tuple[str, str, bytes]:
    """``(code, description, body)`` for ``await request.respond_error(*error_response(err))``."""
    reply = ErrorReply.from_error(err)
    # Header values must stay on one line.
    description = " ".join(reply.message.split()) or reply.kind
    return str(reply.code), description, _JSON.encode(reply)


def account_reply(info: Any) -> AccountReply:
    """Daemon side: an ``account_info()`` result (namedtuple or dict) as the reply."""
    d = dict(info._asdict() if hasattr(info, "_asdict") else info)
    try:
        return msgspec.convert({**d, "margin_used": d.get("margin")}, AccountReply, strict=False)
    except msgspec.ValidationError as err:
        raise MT5DataError(f"account_info has an unexpected shape: {err}") from None


def symbol_spec(info: Any) -> SymbolSpec:
    """Daemon side: a ``symbol_info()`` result (namedtuple or dict) as a SymbolSpec."""
    d = dict(info._asdict() if hasattr(info, "_asdict") else info)
    d.setdefault("symbol", d.get("name"))
    try:
        return msgspec.convert(d, SymbolSpec, strict=False)
    except msgspec.ValidationError as err:
        raise MT5DataError(f"symbol_info has an unexpected shape: {err}") from None


def symbol_info_reply(info: Any) -> SymbolInfo:
    """A ``symbol_info()`` result (namedtuple or dict) as the reply."""
    d = dict(info._asdict() if hasattr(info, "_asdict") else info)
    try:
        return msgspec.convert(d, SymbolInfo, strict=False)
    except msgspec.ValidationError as err:
        raise MT5DataError(f"symbol_info has an unexpected shape: {err}") from None


def terminal_info_reply(info: Any) -> TerminalInfo:
    """A ``terminal_info()`` result as the reply, the hidden fields left out."""
    d = dict(info._asdict() if hasattr(info, "_asdict") else info)
    for name in TERMINAL_INFO_HIDDEN:
        d.pop(name, None)
    try:
        return msgspec.convert(d, TerminalInfo, strict=False)
    except msgspec.ValidationError as err:
        raise MT5DataError(f"terminal_info has an unexpected shape: {err}") from None


def _fit(n: int, build: Callable[[int], Any], codec: Codec, max_bytes: int) -> int:
    """The largest k <= n with len(encode(build(k))) within max_bytes - REPLY_HEADROOM."""
    budget = max_bytes - REPLY_HEADROOM
    while True:
        size = len(codec.encode(build(n)))
        if size <= budget:
            return n
        if n <= 1:
            raise MT5DataError("a single item does not fit in one NATS message")
        n = max(1, min(n - 1, int(n * budget / size * 0.95)))  # proportional guess, then verify


def page_ticks(req: TicksRequest, ticks: list[Tick], codec: Codec, max_bytes: int) -> TicksReply:
    """Daemon side: the reply to ``req`` given its full answer ``ticks`` (oldest first,
    skip and count applied), cut to fit ``max_bytes`` (the connection's max_payload)."""
    n = _fit(len(ticks), lambda k: TicksReply(ticks=ticks[:k], more=k < len(ticks)), codec, max_bytes)
    if n == len(ticks):
        return TicksReply(ticks=ticks)
    kept = ticks[:n]
    last = kept[-1].time_utc_ms
    same = 0
    for t in reversed(kept):
        if t.time_utc_ms != last:
            break
        same += 1
    skip = same + (req.skip if last == req.start else 0)
    return TicksReply(ticks=kept, more=True, next_start=last, next_skip=skip)


def page_candles(candles: list[Candle], codec: Codec, max_bytes: int) -> CandlesReply:
    """Daemon side: like ``page_ticks`` for bars, keeping the newest ones."""
    total = len(candles)
    n = _fit(total, lambda k: CandlesReply(candles=candles[total - k:], more=k < total), codec, max_bytes)
    if n == total:
        return CandlesReply(candles=candles)
    kept = candles[total - n:]
    return CandlesReply(candles=kept, more=True, next_end=kept[0].time_utc_ms - 1)


def page_history(req, items: list, time_of: Callable[[Any], int], build: Callable[..., Any],
                 codec: Codec, max_bytes: int, *, truncated: bool = False):
    """Daemon side: ``items`` (oldest first, skip and count applied) as a reply of ``build`` (DealsReply
    or HistoryOrdersReply: its first field takes the items), cut to fit ``max_bytes``; like page_ticks.
    ``truncated``: the count cut the answer short (more follows after the last item)."""
    name = build.__struct_fields__[0]
    n = _fit(len(items), lambda k: build(**{name: items[:k]}, more=k < len(items)), codec, max_bytes)
    if n == len(items) and not (truncated and items):
        return build(**{name: items})
    kept = items[:n]
    last = time_of(kept[-1])
    same = 0
    for x in reversed(kept):
        if time_of(x) != last:
            break
        same += 1
    skip = same + (req.skip if last == req.start else 0)
    return build(**{name: kept}, more=True, next_start=last, next_skip=skip)
