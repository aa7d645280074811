"""A typed asyncio client for one mt5d daemon: nats-py and msgspec only.

Method names and return shapes are those of the old in-process session
manager (plain dicts with MT5's field names), so code written against it moves
over by swapping the object. Errors come back as the same ``mt5d.errors``
classes the daemon raised; no answer at all (timeout, no responders) is
``MT5TimeoutError``.

    nc = await nats.connect("nats://127.0.0.1:4222")
    mt5 = MT5Client(nc, account="10001234")
    print(await mt5.get_price("EURUSD"))
    async with mt5.ticks(["EURUSD", "EURUSD.m"]) as stream:
        async for tick in stream:
            ...
"""

from __future__ import annotations

import asyncio
from typing import Any, Generic, Iterable, TypeVar

import msgspec
import nats.errors

from mt5d.book import Book
from mt5d.codec import Codec, Encoding, decode_any
from mt5d.errors import MT5ConnectionError, MT5DataError, MT5TimeoutError, MT5ValidationError
from mt5d.market import Candle, HealthEvent, Tick
from mt5d.rpc import (
    ACCOUNT_INFO_FIELDS,
    DEFAULT_CANDLES,
    MAX_TICKS,
    AccountReply,
    CandlesReply,
    CandlesRequest,
    PriceReply,
    PriceRequest,
    Quote,
    ReconnectReply,
    Request,
    SymbolsReply,
    TicksReply,
    TicksRequest,
    BookReply,
    BookRequest,
    SymbolInfo,
    SymbolRequest,
    TerminalInfo,
    error_from_reply,
    validate_request,
)
from mt5d.subjects import DEFAULT_PREFIX, Subjects

__all__ = ["MT5Client", "Stream", "tick_dict", "candle_dict"]

T = TypeVar("T")
_MAX_PAGES = 10_000  # a guard against a daemon that keeps saying "more"


def tick_dict(tick: Tick) -> dict[str, Any]:
    """MT5's tick fields (``time``/``time_msc`` on the broker clock) plus symbol and UTC."""
    return {
        "symbol": tick.symbol,
        "time": tick.time_msc_broker // 1000,
        "time_msc": tick.time_msc_broker,
        "time_utc_ms": tick.time_utc_ms,
        "bid": tick.bid,
        "ask": tick.ask,
        "last": tick.last,
        "volume": tick.volume,
        "volume_real": tick.volume_real,
        "flags": tick.flags,
    }


def candle_dict(c: Candle) -> dict[str, Any]:
    """MT5's rate fields (``time`` = bar open, broker clock, s), ``volume`` = tick_volume, plus UTC."""
    return {
        "time": c.time_broker,
        "open": c.open,
        "high": c.high,
        "low": c.low,
        "close": c.close,
        "volume": c.tick_volume,
        "tick_volume": c.tick_volume,
        "spread": c.spread,
        "real_volume": c.real_volume,
        "time_utc_ms": c.time_utc_ms,
        "close_time_utc_ms": c.close_time_utc_ms,
        "closed": c.closed,
    }


def _quote_dict(q: Quote) -> dict[str, Any]:
    return {**tick_dict(q.tick), "age_ms": q.age_ms}


class Stream(Generic[T]):
    """Decoded messages of some subjects, as an async iterator.

    Use ``async with`` (subscribed on entry, so nothing published after it is
    missed; unsubscribed on exit), or plain ``async for`` and ``close()``.
    A full local queue drops the newest message and counts it in ``dropped``,
    as NATS itself does for a slow consumer. A payload that does not decode
    raises MT5DataError (a contract mismatch should be loud)."""

    def __init__(self, nc, subjects: list[str], type: type[T], queue_size: int) -> None:
        self._nc, self._subjects, self._type = nc, subjects, type
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(queue_size)
        self._subs: list = []
        self._closed = False
        self.dropped = 0

    async def _on_msg(self, msg) -> None:
        try:
            self._queue.put_nowait(msg.data)
        except asyncio.QueueFull:
            self.dropped += 1

    async def start(self) -> "Stream[T]":
        if not self._subs and not self._closed:
            for subject in self._subjects:
                self._subs.append(await self._nc.subscribe(subject, cb=self._on_msg))
            # The server has the interest before we return. Twice: nats-py's PING
            # can overtake SUBs still in its buffer.
            await self._nc.flush()
            await self._nc.flush()
        return self

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for sub in self._subs:
            try:
                await sub.unsubscribe()
            except nats.errors.Error:
                pass  # connection already closed: nothing left to undo
        if self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(None)  # wakes a reader waiting in __anext__

    async def __aenter__(self) -> "Stream[T]":
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def __aiter__(self) -> "Stream[T]":
        return self

    async def __anext__(self) -> T:
        if self._closed:
            raise StopAsyncIteration
        await self.start()
        data = await self._queue.get()
        if data is None:
            raise StopAsyncIteration
        try:
            return decode_any(data, self._type)
        except msgspec.DecodeError as err:
            raise MT5DataError(f"undecodable {self._type.__name__} message: {err}") from None


class MT5Client:
    def __init__(
        self,
        nc,
        *,
        account: str | int,
        prefix: str = DEFAULT_PREFIX,
        encoding: Encoding = "json",
        timeout: float = 5.0,
        queue_size: int = 65536,
    ) -> None:
        self._nc = nc
        self.subjects = Subjects(prefix, account)
        self.codec = Codec(encoding)
        self.timeout = timeout
        self._queue_size = queue_size

    # -- request-reply ----------------------------------------------------------

    async def call(self, endpoint: str, request: Request | None, reply_type: type[T],
                   *, timeout: float | None = None) -> T:
        """One request to ``<prefix>.<account>.rpc.<endpoint>``, decoded as ``reply_type``."""
        if request is not None:
            request = validate_request(request)  # the daemon's checks, without a round trip
        data = b"" if request is None else self.codec.encode(request)
        subject = self.subjects.rpc(endpoint)
        timeout = self.timeout if timeout is None else timeout
        try:
            msg = await self._nc.request(subject, data, timeout=timeout)
        except nats.errors.NoRespondersError:
            raise MT5TimeoutError(f"no mt5d answers on {subject}") from None
        except (nats.errors.TimeoutError, asyncio.TimeoutError):
            raise MT5TimeoutError(f"mt5d did not answer {endpoint} within {timeout:g} s") from None
        except nats.errors.ConnectionClosedError:
            raise MT5ConnectionError("the NATS connection is closed") from None
        err = error_from_reply(msg.headers, msg.data)
        if err is not None:
            raise err
        try:
            return decode_any(msg.data, reply_type)
        except msgspec.DecodeError as e:
            raise MT5DataError(f"malformed {endpoint} reply: {e}") from None

    async def get_account_info(self) -> dict[str, Any]:
        """Every ``account_info()`` field."""
        reply = await self.call("account", None, AccountReply)
        return {f: getattr(reply, f) for f in ACCOUNT_INFO_FIELDS}

    async def get_leverage(self) -> int:
        return (await self.call("account", None, AccountReply)).leverage

    async def get_margin_used(self) -> float:
        return (await self.call("account", None, AccountReply)).margin_used

    async def get_margin_free(self) -> float:
        return (await self.call("account", None, AccountReply)).margin_free

    async def get_price(self, symbol: str) -> dict[str, Any]:
        """The latest tick of ``symbol`` (``tick_dict`` shape plus ``age_ms``)."""
        reply = await self.call("price", PriceRequest(symbol=symbol), PriceReply)
        quote = reply.prices.get(symbol)
        if quote is None:
            raise MT5ValidationError(f"no price known for {symbol!r}")
        return _quote_dict(quote)

    async def get_prices(self, symbols: Iterable[str]) -> dict[str, dict[str, Any]]:
        """symbol -> latest tick; symbols without a known price are left out."""
        reply = await self.call("price", PriceRequest(symbols=list(symbols)), PriceReply)
        return {s: _quote_dict(q) for s, q in reply.prices.items()}

    async def get_candles(self, symbol: str, timeframe: str = "M15", count: int | None = DEFAULT_CANDLES,
                          *, start: int | None = None, end: int | None = None) -> list[dict[str, Any]]:
        """Bars oldest first; the newest may be the forming one (``closed`` False).
        ``count`` newest bars, or ``end`` + ``count``, or ``start`` + ``end`` (UTC ms)."""
        return [candle_dict(c) for c in await self.fetch_candles(symbol, timeframe, count, start=start, end=end)]

    async def fetch_candles(self, symbol: str, timeframe: str = "M15", count: int | None = DEFAULT_CANDLES,
                            *, start: int | None = None, end: int | None = None) -> list[Candle]:
        """``get_candles`` as Candle structs; follows the daemon's pages."""
        req = validate_request(CandlesRequest(symbol=symbol, timeframe=timeframe,
                                              count=None if start is not None else count, start=start, end=end))
        pages: list[list[Candle]] = []
        for _ in range(_MAX_PAGES):
            reply = await self.call("candles", req, CandlesReply)
            pages.append(reply.candles)
            remaining = None if req.count is None else req.count - len(reply.candles)
            if not reply.more or not reply.candles or (remaining is not None and remaining <= 0):
                break
            if req.start is not None and reply.next_end < req.start:
                break
            req = CandlesRequest(symbol=symbol, timeframe=timeframe, count=remaining, start=req.start,
                                 end=reply.next_end)
        return [c for page in reversed(pages) for c in page]  # pages come newest first

    async def get_ticks(self, symbol: str, start: int, end: int, count: int = MAX_TICKS) -> list[dict[str, Any]]:
        """Ticks with UTC ms time in [start, end], oldest first, at most ``count``."""
        return [tick_dict(t) for t in await self.fetch_ticks(symbol, start, end, count)]

    async def fetch_ticks(self, symbol: str, start: int, end: int, count: int = MAX_TICKS) -> list[Tick]:
        """``get_ticks`` as Tick structs; follows the daemon's pages."""
        req = TicksRequest(symbol=symbol, start=start, end=end, count=count)
        out: list[Tick] = []
        for _ in range(_MAX_PAGES):
            reply = await self.call("ticks", req, TicksReply)
            out.extend(reply.ticks)
            remaining = count - len(out)
            if not reply.more or not reply.ticks or remaining <= 0:
                break
            req = TicksRequest(symbol=symbol, start=reply.next_start, end=end, count=remaining,
                               skip=reply.next_skip)
        return out

    async def get_symbols(self) -> list[dict[str, Any]]:
        """Specs of the symbols the daemon serves (SymbolSpec fields)."""
        reply = await self.call("symbols", None, SymbolsReply)
        return [msgspec.structs.asdict(s) for s in reply.symbols]

    async def get_health(self) -> HealthEvent:
        return await self.call("health", None, HealthEvent)

    async def probe(self) -> dict[str, Any]:
        """The old ``probe()`` shape: connection, auth, data_feed, latency_ms, breaker (+ wedged)."""
        h = await self.get_health()
        return {
            "connection": h.connection_ok,
            "auth": h.auth_ok,
            "data_feed": h.data_feed_ok,
            "latency_ms": h.latency_ms,
            "breaker": h.breaker,
            "wedged": h.wedged,
        }

    async def reconnect(self, *, timeout: float | None = None) -> bool:
        """Ask the daemon to reconnect its terminal now (an operator action)."""
        return (await self.call("reconnect", None, ReconnectReply, timeout=timeout)).ok

    # -- streams ----------------------------------------------------------------

    def ticks(self, symbols: str | Iterable[str] | None = None) -> Stream[Tick]:
        """Ticks of ``symbols`` (one subscription each), or of every symbol when None."""
        if symbols is None:
            subjects = [self.subjects.all_ticks()]
        else:
            subjects = [self.subjects.tick(s) for s in ([symbols] if isinstance(symbols, str) else symbols)]
        return Stream(self._nc, subjects, Tick, self._queue_size)

    def candles(self, symbol: str, timeframe: str = "M15", *, forming: bool = False) -> Stream[Candle]:
        """Closed bars of one symbol/timeframe; with ``forming`` also the forming-bar updates."""
        subjects = [self.subjects.candle(symbol, timeframe)]
        if forming:
            subjects.append(self.subjects.candle_forming(symbol, timeframe))
        return Stream(self._nc, subjects, Candle, self._queue_size)

    def health_events(self) -> Stream[HealthEvent]:
        return Stream(self._nc, [self.subjects.health()], HealthEvent, self._queue_size)

    # -- depth of market, symbol specification, terminal state -------------------------
    # (structs with MT5's field names, read like the package's own results: ``.volume_min``)

    async def get_book(self, symbol: str) -> Book:
        """The newest depth of market of ``symbol`` (one of the daemon's ``stream.books``)."""
        reply = await self.call("book", BookRequest(symbol=symbol), BookReply)
        quote = reply.books.get(symbol)
        if quote is None:
            raise MT5ValidationError(f"no book known for {symbol!r} yet")
        return quote.book

    async def get_books(self, symbols: Iterable[str]) -> dict[str, Book]:
        """symbol -> newest book; symbols without a known book are left out."""
        reply = await self.call("book", BookRequest(symbols=list(symbols)), BookReply)
        return {s: q.book for s, q in reply.books.items()}

    async def get_symbol(self, symbol: str) -> SymbolInfo:
        """Every ``symbol_info()`` field of any symbol the terminal offers."""
        return await self.call("symbol", SymbolRequest(symbol=symbol), SymbolInfo)

    async def get_terminal(self) -> TerminalInfo:
        """``terminal_info()``: connected, trade_allowed, ping_last, build, ... (no paths)."""
        return await self.call("terminal", None, TerminalInfo)

    def books(self, symbols: str | Iterable[str] | None = None) -> Stream[Book]:
        """Depth-of-market snapshots of ``symbols`` (each time one changed), or of every book when None."""
        if symbols is None:
            subjects = [self.subjects.all_books()]
        else:
            subjects = [self.subjects.book(s) for s in ([symbols] if isinstance(symbols, str) else symbols)]
        return Stream(self._nc, subjects, Book, self._queue_size)
