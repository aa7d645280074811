"""A typed asyncio client for one mt5d daemon: nats-py and msgspec only.

It keeps the old in-process session manager's API (``MT5SessionManager`` is
this class): ``connect()``, ``is_connected``, ``get_account_info()``,
``get_price()``, ``get_candles(symbol, timeframe=15)``, ``probe(manager)``,
``disconnect()``, ``async with``, and the same error classes. Results are
frozen msgspec structs with attribute access and ``_asdict()``, like the
MetaTrader5 package's namedtuples.

    manager = MT5SessionManager("nats://127.0.0.1:4222", login="10001234")
    await manager.connect()
    price = await manager.get_price("EURUSD")
    print(price.bid, price.ask)
    async with manager.ticks(["EURUSD", "EURUSD.m"]) as stream:
        async for tick in stream:
            ...

With JetStream on in the daemon, prices come from the server's last-value
stream (answerable while mt5d restarts; the RPC when there is none), and
``ticks(..., since="10m")`` / ``candles(..., since=...)`` replay what was
stored, then go on live.

Errors come back as the classes the daemon raised. No daemon answering is
``MT5ConnectionError`` (no responders, or the NATS link is down); an answer
that does not come within ``operation_timeout`` is ``MT5TimeoutError``.

Reply subjects: every request's answer comes back on an inbox
``<inbox_prefix>.<id>``. A client given a NATS user uses ``_INBOX_<user>`` unless
told otherwise (``inbox_prefix=``), the prefix ``ops/nats-server.conf`` lets only
that user subscribe to, so no other user can overhear its replies. A client
built on an existing connection uses that connection's prefix.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, Iterable, TypeVar
from urllib.parse import unquote, urlparse

import msgspec
import nats
import nats.errors

from mt5d.book import Book
from mt5d.account_client import AccountMethods
from mt5d.codec import Codec, Encoding, decode_any
from mt5d.errors import (
    MT5AuthError,
    MT5BusyError,
    MT5CircuitBreakerOpen,
    MT5ConnectionError,
    MT5DataError,
    MT5Error,
    MT5InitError,
    MT5StateError,
    MT5TimeoutError,
    MT5ValidationError,
)
from mt5d.market import TIMEFRAME_CODES, TIMEFRAMES, Candle, HealthEvent, Record, Tick
from mt5d.rpc import (
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
    SymbolSpec,
    SymbolsReply,
    TicksReply,
    TicksRequest,
    BookReply,
    BookRequest,
    SymbolInfo,
    SymbolRequest,
    TerminalInfo,
    error_from_reply,
    timeframe_name,
    validate_request,
)
from mt5d.streams import Stream
from mt5d.stored import LastValues, NotStored, Replay, replay_since
from mt5d.subjects import DEFAULT_PREFIX, Subjects, last_value_stream, stream_name

__all__ = [
    "MT5Client", "MT5SessionManager", "probe", "Stream", "Replay", "open_nats", "inbox_prefix_for",
    "AccountInfo", "Price", "Candle", "Tick", "HealthStatus", "SymbolSpec",
    "TIMEFRAMES", "TIMEFRAME_CODES", "timeframe_name",
    "TIMEFRAME_M1", "TIMEFRAME_M2", "TIMEFRAME_M3", "TIMEFRAME_M4", "TIMEFRAME_M5", "TIMEFRAME_M6",
    "TIMEFRAME_M10", "TIMEFRAME_M12", "TIMEFRAME_M15", "TIMEFRAME_M20", "TIMEFRAME_M30",
    "TIMEFRAME_H1", "TIMEFRAME_H2", "TIMEFRAME_H3", "TIMEFRAME_H4", "TIMEFRAME_H6", "TIMEFRAME_H8",
    "TIMEFRAME_H12", "TIMEFRAME_D1", "TIMEFRAME_W1", "TIMEFRAME_MN1",
    "MT5Error", "MT5InitError", "MT5AuthError", "MT5CircuitBreakerOpen", "MT5TimeoutError",
    "MT5DataError", "MT5ConnectionError", "MT5ValidationError", "MT5StateError", "MT5BusyError",
]

log = logging.getLogger("mt5d.client")

T = TypeVar("T")
_MAX_PAGES = 10_000  # a guard against a daemon that keeps saying "more"
DEFAULT_URL = "nats://127.0.0.1:4222"

# MetaTrader5's TIMEFRAME_* codes (get_candles takes them, minutes, or names).
TIMEFRAME_M1, TIMEFRAME_M2, TIMEFRAME_M3, TIMEFRAME_M4, TIMEFRAME_M5, TIMEFRAME_M6 = (
    TIMEFRAME_CODES[n] for n in ("M1", "M2", "M3", "M4", "M5", "M6"))
TIMEFRAME_M10, TIMEFRAME_M12, TIMEFRAME_M15, TIMEFRAME_M20, TIMEFRAME_M30 = (
    TIMEFRAME_CODES[n] for n in ("M10", "M12", "M15", "M20", "M30"))
TIMEFRAME_H1, TIMEFRAME_H2, TIMEFRAME_H3, TIMEFRAME_H4, TIMEFRAME_H6, TIMEFRAME_H8, TIMEFRAME_H12 = (
    TIMEFRAME_CODES[n] for n in ("H1", "H2", "H3", "H4", "H6", "H8", "H12"))
TIMEFRAME_D1, TIMEFRAME_W1, TIMEFRAME_MN1 = (TIMEFRAME_CODES[n] for n in ("D1", "W1", "MN1"))

# The old manager's names for the results.
AccountInfo = AccountReply  # every account_info() field, plus margin_used
HealthStatus = HealthEvent  # connection_ok, auth_ok, data_feed_ok, latency_ms, breaker, ...


class Price(Record, frozen=True, kw_only=True, gc=False):
    """The newest tick of a symbol: MT5's Tick fields (``time``, ``time_msc`` on the
    broker clock), the UTC time, and how old the daemon's copy is."""

    symbol: str
    time: int  # broker clock, s
    time_msc: int  # broker clock, ms
    time_utc_ms: int
    bid: float
    ask: float
    last: float
    volume: int
    volume_real: float
    flags: int
    index_in_ms: int
    age_ms: int  # since the daemon received it (from the stream: since the server stored it)
    source: str = "daemon"  # "daemon" (its price endpoint) or "stream" (the server's last-value stream)

    @classmethod
    def from_quote(cls, q: Quote, source: str = "daemon") -> "Price":
        t = q.tick
        return cls(symbol=t.symbol, time=t.time_msc_broker // 1000, time_msc=t.time_msc_broker,
                   time_utc_ms=t.time_utc_ms, bid=t.bid, ask=t.ask, last=t.last, volume=t.volume,
                   volume_real=t.volume_real, flags=t.flags, index_in_ms=t.index_in_ms, age_ms=q.age_ms,
                   source=source)


# Settings of the old in-process manager that are the daemon's now.
_DAEMON_SETTINGS = {
    "password": "the MT5 password is the daemon's secret (MT5_PASSWORD, its .env or "
                "$CREDENTIALS_DIRECTORY/mt5-password): it never travels to a client",
    "terminal_path": "the terminal is the daemon's (terminal.path in its config.toml)",
    "server": "the trade server is the daemon's (terminal.server in its config.toml); "
              "give the NATS URL as the first argument",
    "max_failures": "the circuit breaker is the daemon's (breaker.max_failures in its config.toml)",
}


def inbox_prefix_for(user: str | None) -> str:
    """The reply-subject prefix of a NATS user: ``_INBOX_<user>`` (``_INBOX`` without one)."""
    return f"_INBOX_{user}" if user else "_INBOX"


def _url_user(servers: str | list[str]) -> str | None:
    first = servers if isinstance(servers, str) else (servers[0] if servers else "")
    user = urlparse(first).username
    return unquote(user) if user else None


def _safe_url(url: str) -> str:
    """A URL without any user:password part."""
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.rpartition('@')[2]}"
    return url


async def open_nats(servers: str | list[str] = DEFAULT_URL, *, user: str | None = None,
                    nats_password: str | None = None, token: str | None = None, creds: str | None = None,
                    inbox_prefix: str | None = None, connect_timeout: float = 5.0, name: str = "mt5d-client",
                    **options: Any):
    """A nats-py connection set up the way ops/nats-server.conf expects: the inbox
    prefix of the user (``_INBOX_<user>``, the user from ``user=`` or the URL) unless
    ``inbox_prefix`` says otherwise. Raises MT5AuthError when NATS refuses the login,
    MT5ConnectionError when it cannot be reached. ``options`` go to ``nats.connect``."""
    user = user or _url_user(servers)
    prefix = inbox_prefix or inbox_prefix_for(user)
    errors: list[Exception] = []

    async def on_error(err: Exception) -> None:  # nats-py would print a traceback
        errors.append(err)
        # A refused subject is worth a warning; a dropped link is the reconnect logic's business.
        level = logging.WARNING if "permissions violation" in str(err).lower() else logging.DEBUG
        log.log(level, "NATS error", extra={"error": type(err).__name__, "detail": str(err)[:300]})

    opts: dict[str, Any] = dict(servers=servers, name=name, inbox_prefix=prefix, connect_timeout=connect_timeout,
                                error_cb=on_error, max_reconnect_attempts=-1, reconnect_time_wait=0.5)
    if user and not _url_user(servers):
        opts["user"] = user
    if nats_password is not None:
        opts["password"] = nats_password
    if token is not None:
        opts["token"] = token
    if creds is not None:
        opts["user_credentials"] = creds
    opts.update(options)
    shown = ", ".join(_safe_url(s) for s in ([servers] if isinstance(servers, str) else servers))
    try:
        # The first connect tries each server twice and gives up: nats-py would
        # otherwise retry forever (max_reconnect_attempts=-1 covers it too) or keep
        # retrying a refused login. Once up, the link reconnects as configured.
        nc = await nats.connect(**{**opts, "allow_reconnect": False, "max_reconnect_attempts": 1})
    except Exception as err:
        if any("authorization" in str(e).lower() for e in [*errors, err]):
            raise MT5AuthError(f"NATS at {shown} refused the login of {user or 'this client'!s}") from None
        raise MT5ConnectionError(f"cannot reach NATS at {shown} ({type(err).__name__})") from None
    nc.options["allow_reconnect"] = opts.get("allow_reconnect", True)
    nc.options["max_reconnect_attempts"] = opts["max_reconnect_attempts"]
    return nc


class MT5Client(AccountMethods):  # account data: see mt5d.account_client
    """One daemon's account, over NATS.

    ``nc`` is a NATS URL (or a list of them; default ``$NATS_URL`` or
    nats://127.0.0.1:4222), and ``connect()`` opens the connection; or an
    existing nats-py connection, usable at once (``connect()`` then only checks
    the daemon). ``account`` (or ``login``, as the old manager named it) is the
    daemon's account token: its login or its ``nats.account`` alias.

    NATS login when built from a URL: ``user`` (or in the URL) with
    ``nats_password``, ``token`` or ``creds`` (a .creds file); ``inbox_prefix``
    (default ``_INBOX_<user>``) is where replies come back. ``operation_timeout``
    (alias ``timeout``) bounds every request; ``connection_timeout`` the NATS connect.
    """

    def __init__(
        self,
        nc: Any = None,
        *,
        account: str | int | None = None,
        login: str | int | None = None,
        prefix: str = DEFAULT_PREFIX,
        encoding: Encoding = "json",
        timeout: float | None = None,
        operation_timeout: float | None = None,
        connection_timeout: float = 5.0,
        queue_size: int = 65536,
        user: str | None = None,
        nats_password: str | None = None,
        token: str | None = None,
        creds: str | None = None,
        inbox_prefix: str | None = None,
        stream: str | None = None,
        last_value: bool = True,
        **settings: Any,
    ) -> None:
        refused = [k for k in settings if k in _DAEMON_SETTINGS or k.startswith("backoff_")]
        if refused:
            k = refused[0]
            why = _DAEMON_SETTINGS.get(k, f"the breaker's backoff is the daemon's (breaker.{k} in its config.toml)")
            raise TypeError(f"{type(self).__name__}() does not take `{k}`: {why}. A client needs only the "
                            f"NATS URL (or connection) and the account.")
        if settings:
            raise TypeError(f"{type(self).__name__}() got an unexpected keyword argument {next(iter(settings))!r}")
        if account is None and login is None:
            raise TypeError(f"{type(self).__name__}() needs `account` (or `login`): the daemon's account token")
        if account is not None and login is not None and str(account) != str(login):
            raise TypeError("`account` and `login` name the same thing: give one")
        if timeout is not None and operation_timeout is not None and timeout != operation_timeout:
            raise TypeError("`timeout` and `operation_timeout` are the same setting: give one")
        self.subjects = Subjects(prefix, account if account is not None else login)
        self.account = self.subjects.account
        # JetStream (when the daemon has it on): the stream to replay, and prices from its last values.
        self.stream = stream or stream_name(self.account)
        self._last_value = last_value
        self._last: LastValues | None = None
        self.codec = Codec(encoding)
        self.timeout = next((t for t in (operation_timeout, timeout) if t is not None), 5.0)
        self.connection_timeout = connection_timeout
        self._queue_size = queue_size
        self._health: HealthEvent | None = None
        self._health_sub = None
        if nc is None or isinstance(nc, (str, list, tuple)):
            self._servers = list(nc) if isinstance(nc, (list, tuple)) else (nc or os.environ.get("NATS_URL", DEFAULT_URL))
            self._connect_opts = dict(user=user, nats_password=nats_password, token=token, creds=creds,
                                      inbox_prefix=inbox_prefix)
            self._nc = None
            self._own = True
        else:
            if any(v is not None for v in (user, nats_password, token, creds)):
                raise TypeError("a client on an existing connection logs in with it: drop user/nats_password/token/creds")
            if inbox_prefix is not None and inbox_prefix != _prefix_of(nc):
                raise TypeError(f"the connection's inbox prefix is {_prefix_of(nc)!r}: give inbox_prefix= to "
                                f"nats.connect(), not here")
            self._nc = nc
            self._own = False
        self._open = not self._own  # a borrowed connection is usable at once

    def __repr__(self) -> str:
        return f"{type(self).__name__}(account={self.account!r}, connected={self.is_connected})"

    # -- lifecycle ----------------------------------------------------------------

    @property
    def nc(self):
        """The NATS connection (None before ``connect()`` when built from a URL)."""
        return self._nc

    @property
    def inbox_prefix(self) -> str | None:
        """Where this client's replies come back (``<prefix>.<id>``)."""
        if self._nc is not None:
            return _prefix_of(self._nc)
        return self._connect_opts["inbox_prefix"] or inbox_prefix_for(
            self._connect_opts["user"] or _url_user(self._servers))

    @property
    def is_connected(self) -> bool:
        """The NATS link is up and the daemon's latest health says its terminal is connected."""
        return (self._open and self._nc is not None and self._nc.is_connected
                and self._health is not None and self._health.connection_ok)

    @property
    def health(self) -> HealthStatus | None:
        """The daemon's latest health (its events, or the last probe), None before any."""
        return self._health

    async def connect(self) -> "MT5Client":
        """Open the NATS connection (when built from a URL), follow the daemon's health
        events and check that the daemon answers. Raises MT5ConnectionError (no NATS,
        no daemon), MT5AuthError (NATS refused the login), MT5TimeoutError (no answer)."""
        await self._open_link()
        await self.probe()
        return self

    async def _open_link(self) -> None:
        """(Re)open our own connection if it is closed, and follow the health events on it."""
        if self._own and (self._nc is None or self._nc.is_closed):
            self._health_sub = None  # it belonged to the closed connection
            self._nc = await open_nats(self._servers, connect_timeout=self.connection_timeout,
                                       **self._connect_opts)
        self._open = True
        if self._health_sub is None:
            self._health_sub = await self._nc.subscribe(self.subjects.health(), cb=self._on_health)

    async def disconnect(self) -> None:
        """Stop following health; close the connection if this client opened it.
        Requests raise MT5StateError until ``connect()`` again."""
        self._open = False
        sub, self._health_sub = self._health_sub, None
        if sub is not None:
            try:
                await sub.unsubscribe()
            except nats.errors.Error:
                pass
        if self._own and self._nc is not None:
            nc, self._nc = self._nc, None
            try:
                await nc.drain()
            except nats.errors.Error:
                await nc.close()
        self._health = None

    async def reconnect(self, *, timeout: float | None = None) -> bool:
        """Make the daemon reconnect its terminal now (an operator action); first
        reopen this client's own NATS connection if it was closed or disconnected."""
        await self._open_link()
        return (await self.call("reconnect", None, ReconnectReply, timeout=timeout)).ok

    async def __aenter__(self) -> "MT5Client":
        return await self.connect()

    async def __aexit__(self, *exc) -> None:
        await self.disconnect()

    async def _on_health(self, msg) -> None:
        try:
            self._note_health(decode_any(msg.data, HealthEvent))
        except msgspec.DecodeError:
            log.warning("undecodable health event", extra={"subject": msg.subject})

    def _note_health(self, h: HealthEvent) -> None:
        if self._health is None or h.time_utc_ms >= self._health.time_utc_ms:
            self._health = h

    # -- request-reply ----------------------------------------------------------

    async def call(self, endpoint: str, request: Request | None, reply_type: type[T],
                   *, timeout: float | None = None) -> T:
        """One request to ``<prefix>.<account>.rpc.<endpoint>``, decoded as ``reply_type``."""
        if request is not None:
            request = validate_request(request)  # the daemon's checks, without a round trip
        nc = self._nc
        if not self._open or nc is None:
            raise MT5StateError("not connected: call `await manager.connect()` first")
        data = b"" if request is None else self.codec.encode(request)
        subject = self.subjects.rpc(endpoint)
        timeout = self.timeout if timeout is None else timeout
        try:
            msg = await nc.request(subject, data, timeout=timeout)
        except nats.errors.NoRespondersError:
            raise MT5ConnectionError(f"no mt5d answers on {subject}: is the daemon running?") from None
        except (nats.errors.TimeoutError, asyncio.TimeoutError):
            if not nc.is_connected:
                raise MT5ConnectionError("the NATS link is down (reconnecting)") from None
            raise MT5TimeoutError(f"mt5d did not answer {endpoint} within {timeout:g} s") from None
        except (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError):
            raise MT5ConnectionError("the NATS connection is closed") from None
        err = error_from_reply(msg.headers, msg.data)
        if err is not None:
            raise err
        try:
            return decode_any(msg.data, reply_type)
        except msgspec.DecodeError as e:
            raise MT5DataError(f"malformed {endpoint} reply: {e}") from None

    async def get_account_info(self) -> AccountInfo:
        """Every ``account_info()`` field (``.balance``, ``.equity``, ``.name``, ...)."""
        return await self.call("account", None, AccountReply)

    async def get_leverage(self) -> int:
        return (await self.get_account_info()).leverage

    async def get_margin_used(self) -> float:
        return (await self.get_account_info()).margin_used

    async def get_margin_free(self) -> float:
        return (await self.get_account_info()).margin_free

    async def _stored_prices(self, symbols: list[str]) -> dict[str, Price] | None:
        """From the last-value stream (Direct Get: any server answers, mt5d running or not);
        None when there is no such stream (JetStream off in the daemon)."""
        if not self._last_value:
            return None
        if not self._open or self._nc is None:
            raise MT5StateError("not connected: call `await manager.connect()` first")
        last = self._last
        if last is None or last._nc is not self._nc:  # kept: it learns whether multi_last is allowed
            last = self._last = LastValues(self._nc, last_value_stream(self.stream), timeout=min(self.timeout, 2.0))
        try:
            found = await last.ticks({s: self.subjects.tick(s) for s in symbols})
        except NotStored:
            return None
        return {s: Price.from_quote(Quote(tick=t, age_ms=age), "stream") for s, (t, age) in found.items()}

    async def get_price(self, symbol: str) -> Price:
        """The latest tick of ``symbol`` (``.bid``, ``.ask``, ``.time``, ``.age_ms``, ``.source``, ...):
        from the last-value stream when there is one, else from the daemon."""
        validate_request(PriceRequest(symbol=symbol))
        stored = await self._stored_prices([symbol])
        if stored and symbol in stored:
            return stored[symbol]
        # One symbol: the daemon's own checks apply (an unknown symbol is an error, not "missing").
        reply = await self.call("price", PriceRequest(symbol=symbol), PriceReply)
        quote = reply.prices.get(symbol)
        if quote is None:  # an older daemon: the current one says why instead
            raise MT5StateError(f"no price known for {symbol!r} yet")
        return Price.from_quote(quote)

    async def get_prices(self, symbols: Iterable[str]) -> dict[str, Price]:
        """symbol -> latest tick; symbols without a known price are left out. Many symbols at
        one point in time from the last-value stream (``multi_last``); the rest from the daemon."""
        wanted = list(dict.fromkeys([symbols] if isinstance(symbols, str) else symbols))
        validate_request(PriceRequest(symbols=wanted))
        out = await self._stored_prices(wanted) or {}
        wanted = [s for s in wanted if s not in out]
        if not wanted:
            return out
        try:
            reply = await self.call("price", PriceRequest(symbols=wanted), PriceReply)
        except (MT5TimeoutError, MT5ConnectionError):
            if out:
                return out  # mt5d is away: what the stream has is the answer
            raise
        out.update({s: Price.from_quote(q) for s, q in reply.prices.items()})
        return out

    async def get_candles(self, symbol: str, timeframe: str | int = "M15", count: int | None = DEFAULT_CANDLES,
                          *, start: int | None = None, end: int | None = None) -> list[Candle]:
        """Bars oldest first; the newest may be the forming one (``closed`` False).
        ``timeframe``: minutes (15), a TIMEFRAME_* code or a name ("M15").
        ``count`` newest bars, or ``end`` + ``count``, or ``start`` + ``end`` (UTC ms)."""
        tf = timeframe_name(timeframe)
        req = validate_request(CandlesRequest(symbol=symbol, timeframe=tf,
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
            req = CandlesRequest(symbol=symbol, timeframe=tf, count=remaining, start=req.start, end=reply.next_end)
        return [c for page in reversed(pages) for c in page]  # pages come newest first

    async def get_ticks(self, symbol: str, start: int, end: int, count: int = MAX_TICKS) -> list[Tick]:
        """Ticks with UTC ms time in [start, end], oldest first, at most ``count``; follows pages."""
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

    async def get_symbols(self) -> list[SymbolSpec]:
        """Specs of the symbols the daemon serves."""
        return (await self.call("symbols", None, SymbolsReply)).symbols

    async def get_health(self) -> HealthStatus:
        """A fresh probe by the daemon (also what ``is_connected`` goes by next)."""
        h = await self.call("health", None, HealthEvent)
        self._note_health(h)
        return h

    async def probe(self) -> HealthStatus:
        """The old ``probe()``: ``.connection_ok``, ``.auth_ok``, ``.data_feed_ok``, ``.latency_ms``,
        plus ``.breaker``, ``.wedged``, ``.detail``."""
        return await self.get_health()

    # -- streams ----------------------------------------------------------------

    def _stream_nc(self):
        if not self._open or self._nc is None:
            raise MT5StateError("not connected: call `await manager.connect()` first")
        return self._nc

    def ticks(self, symbols: str | Iterable[str] | None = None, *,
              since: Any = None) -> Stream[Tick] | Replay[Tick]:
        """Ticks of ``symbols`` (one subscription each), or of every symbol when None.

        ``since`` (epoch ms UTC, an aware datetime, a timedelta or "10m"): first
        the stored ticks from then on, then live, none missed and none twice
        (needs the daemon's JetStream stream)."""
        if symbols is None:
            subjects = [self.subjects.all_ticks()]
        else:
            subjects = [self.subjects.tick(s) for s in ([symbols] if isinstance(symbols, str) else symbols)]
        if since is not None:
            return Replay(self._stream_nc().jetstream(), self.stream, subjects, Tick,
                          since_ms=replay_since(since), queue_size=self._queue_size)
        return Stream(self._stream_nc(), subjects, Tick, self._queue_size)

    def candles(self, symbol: str, timeframe: str | int = "M15", *, forming: bool = False,
                since: Any = None) -> Stream[Candle] | Replay[Candle]:
        """Closed bars of one symbol/timeframe; with ``forming`` also the forming-bar updates.
        ``since``: the stored closed bars opened from then on, then live (not with ``forming``)."""
        tf = timeframe_name(timeframe)
        subjects = [self.subjects.candle(symbol, tf)]
        if since is not None:
            if forming:
                raise MT5ValidationError("since: the forming bar is not stored (use forming=False)")
            return Replay(self._stream_nc().jetstream(), self.stream, subjects, Candle,
                          since_ms=replay_since(since), queue_size=self._queue_size)
        if forming:
            subjects.append(self.subjects.candle_forming(symbol, tf))
        return Stream(self._stream_nc(), subjects, Candle, self._queue_size)

    def health_events(self) -> Stream[HealthEvent]:
        return Stream(self._stream_nc(), [self.subjects.health()], HealthEvent, self._queue_size)

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
        return Stream(self._stream_nc(), subjects, Book, self._queue_size)


# The old in-process manager's name: one class.
MT5SessionManager = MT5Client


async def probe(manager: MT5Client) -> HealthStatus:
    """The old module-level ``probe(manager)``: the daemon's fresh health."""
    return await manager.probe()


def _prefix_of(nc) -> str:
    prefix = getattr(nc, "_inbox_prefix", None)  # nats-py keeps it as a bytearray
    if isinstance(prefix, (bytes, bytearray)):
        return prefix.decode()
    return str(prefix) if prefix is not None else "_INBOX"
