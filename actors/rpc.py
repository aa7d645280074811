"""The RPC service: account data, prices and history over NATS request-reply.

``nats.micro`` service "mt5d", endpoints under ``<prefix>.<account>.rpc.``
(``$SRV.PING/INFO/STATS`` come with it). The contract (requests, replies,
error replies, paging) is ``mt5d.rpc``; this module only answers.

nats.micro calls one handler at a time per endpoint, so a handler never
waits on the terminal: it parses and checks the request (cheap, answered at
once when invalid), then hands the work to a task of the service's own task
group and returns. At most ``rpc.max_in_flight`` requests are being worked on;
past that a request is refused at once with 503 "busy" instead of queueing
without bound. ``price`` and ``book`` are answered inline from the poller's
caches (no terminal round trip, no await but the reply), so they are never
stuck behind history requests. Everything that needs the terminal goes through
``Connection.run_call`` (the one terminal thread, behind the breaker) in its rpc
lane: after the stream's poll cycles, in arrival order, long history reads in
short hops; a request the terminal has not started on within half the deadline
gets 503 "busy" too.

Errors: an ``MT5Error`` becomes its status (validation 400, breaker open or
busy 503, timeout 504, connection/terminal/data 502) with its safe message;
anything else is a bug on our side and becomes 500 "internal error". The
detail goes to the ``mt5d.rpc`` log, never into the reply.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import logging
import time
from typing import Any, Awaitable, Callable

import anyio
import anyio.lowlevel
import msgspec
import nats.micro
import numpy as np
from anyio.abc import TaskStatus
from mt5d import __version__
from mt5d.actors.logic.bars import CLOSE_GRACE_S, bar_end
from mt5d.actors.logic.cursor import TickCursor
from mt5d.actors.logic.history import (
    candles_from_rates,
    deal_from_mt5,
    fetch_bars,
    fetch_ticks,
    order_from_mt5,
    position_from_mt5,
    ticks_from_array,
)
from mt5d.actors.logic.replies import (
    account_reply,
    error_response,
    page_candles,
    page_history,
    page_ticks,
    parse_request,
    symbol_info_reply,
    symbol_spec,
    terminal_info_reply,
)
from mt5d.actors.logic.utc import UtcOffset
from mt5d.daemon.terminal.groups import group_matcher
from mt5d.codec import Codec
from mt5d.daemon.terminal.api import TerminalApi
from mt5d.daemon.terminal.mt5_constants import TIMEFRAMES
from mt5d.errors import (
    MT5BusyError,
    MT5CircuitBreakerOpen,
    MT5ConnectionError,
    MT5Error,
    MT5StateError,
    MT5TimeoutError,
    MT5ValidationError,
)
from mt5d.market import Candle, Tick
from mt5d.rpc import (
    ENDPOINTS,
    MAX_CANDLES,
    REPLY_HEADROOM,
    AccountReply,
    BookQuote,
    BookReply,
    BookRequest,
    CandlesReply,
    CandlesRequest,
    DealsReply,
    DealsRequest,
    HistoryOrdersReply,
    HistoryOrdersRequest,
    OrdersReply,
    OrdersRequest,
    PositionsReply,
    PositionsRequest,
    PriceReply,
    PriceRequest,
    Quote,
    ReconnectReply,
    SymbolsReply,
    TicksReply,
    TicksRequest,
    SymbolInfo,
    TerminalInfo,
)
from mt5d.subjects import rpc_group

__all__ = ["RpcService", "SERVICE_NAME"]

log = logging.getLogger("mt5d.rpc")

SERVICE_NAME = "mt5d"
# Hot standby: answered by the lease holder only (the terminal's account, an operator action,
# what the leader's poller keeps: prices, books, positions and orders).
LEADER_ONLY = ("account", "reconnect", "price", "book", "positions", "orders")
# The request a task works on: its arrival number (its place in the rpc lane) and
# whether its work has reached the terminal yet.
_WORK: contextvars.ContextVar["_Work | None"] = contextvars.ContextVar("mt5d_rpc_work", default=None)
# History is converted to wire structs this many at a time, yielding between slices.
CONVERT_SLICE = 1000
# "busy" refusals are logged at most this often (with the running count).
BUSY_LOG_EVERY = 10.0


_NO_SPAN = contextlib.nullcontext()


def _shown(text: str, limit: int = 40) -> str:
    """User input echoed in a message: ASCII repr, cut short."""
    r = ascii(text)
    return r if len(r) <= limit else r[: limit - 3] + "..."


class RpcService:
    """The ``mt5d`` nats.micro service of one account."""

    def __init__(
        self,
        *,
        nc,
        cfg,
        account: str,
        conn,
        prices,
        health,
        codec: Codec,
        utc: UtcOffset | None = None,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,  # the PriceCache's clock
        telemetry=None,  # daemon.telemetry.Telemetry: a span and a count per request (None: off)
        books=None,  # actors.books.Books: the newest book per symbol (None: no books streamed)
        tracker=None,  # actors.account.AccountTracker: the streams' view of positions and orders
        lease=None,  # actors.lease.Lease: hot standby; LEADER_ONLY endpoints only while leading
    ) -> None:
        self._books = books
        self._tracker = tracker
        self._lease = lease
        self._meta: dict[str, str] = {"account": account}
        self._role_event = anyio.Event()
        self._nc = nc
        self._cfg = cfg
        self._account = account
        self._conn = conn
        self._prices = prices
        self._health = health
        self._codec = codec
        self._utc = utc if utc is not None else UtcOffset(None)
        self._wall = wall_clock
        self._mono = monotonic
        self._tel = telemetry
        self._max_in_flight = cfg.rpc.max_in_flight
        term = cfg.terminal
        # A request may need a connect first, then its own call: never wait longer than both.
        self._deadline = term.connection_timeout + term.operation_timeout + 1.0
        # Waiting longer than this for the terminal to start on a request leaves too little of the deadline.
        self._busy_after = self._deadline / 2
        self._tg: anyio.abc.TaskGroup | None = None
        self._tick_size: dict[str, int] = {}
        self.in_flight = 0
        self._arrivals = itertools.count(1)
        self.refused_busy = 0
        self._busy_logged_at = float("-inf")
        self.service: nats.micro.Service | None = None
        self._work: dict[str, Callable[[Any], Awaitable[Any]]] = {
            "account": self._account_info,
            "candles": self._candles,
            "ticks": self._ticks,
            "symbols": self._symbols,
            "health": self._probe,
            "reconnect": self._reconnect,
            "symbol": self._symbol_info,
            "terminal": self._terminal_info,
            "positions": self._positions,
            "orders": self._orders,
            "deals": self._deals,
            "history_orders": self._history_orders,
        }

    # ---- the actor ------------------------------------------------------
    async def run(self, *, task_status: TaskStatus = anyio.TASK_STATUS_IGNORED) -> None:
        svc = await nats.micro.add_service(
            self._nc, name=SERVICE_NAME, version=__version__,
            description="mt5d: account data, prices and history of one MetaTrader 5 terminal",
            metadata=self._meta,
        )
        self.service = svc
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                group = svc.add_group(name=rpc_group(self._cfg.nats.prefix, self._account))
                for name in ENDPOINTS:
                    if self._lease is None or name not in LEADER_ONLY:
                        await group.add_endpoint(name=name, handler=self._handler(name))
                if self._lease is not None:
                    await self._apply_role(group)
                    tg.start_soon(self._follow_role, group)
                await self._until_server_has_our_subscriptions()
                log.info("rpc service up", extra={"group": rpc_group(self._cfg.nats.prefix, self._account),
                                                  "endpoints": list(ENDPOINTS),
                                                  "max_in_flight": self._max_in_flight})
                task_status.started()
                await anyio.sleep_forever()
        finally:
            self._tg = None
            with anyio.move_on_after(2, shield=True):
                try:
                    await svc.stop()
                except Exception as err:  # the connection may already be closed
                    log.debug("rpc service stop failed", extra={"error": type(err).__name__})

    # ---- hot standby: what only the leader answers ---------------------------
    def role_changed(self) -> None:
        self._role_event.set()

    async def _follow_role(self, group) -> None:
        while True:
            await self._role_event.wait()
            self._role_event = anyio.Event()
            await self._apply_role(group)

    async def _apply_role(self, group) -> None:
        """Leader-only endpoints subscribed while leading, unsubscribed otherwise; role in $SRV.INFO."""
        leading = self._lease.role == "leader"
        self._meta["role"] = self._lease.role
        self._meta["lease_revision"] = str(self._lease.term)
        # nats.micro (2.16) has no public way to stop one endpoint: its Endpoint's own _start/_stop.
        present = {ep._name: ep for ep in self.service._endpoints}
        for name in LEADER_ONLY:
            ep = present.get(name)
            if leading and ep is None:
                await group.add_endpoint(name=name, handler=self._handler(name))
            elif leading and ep._subscription is None:
                await ep._start()
            elif not leading and ep is not None and ep._subscription is not None:
                await ep._stop()

    async def _until_server_has_our_subscriptions(self, timeout: float = 5.0) -> None:
        """Return once the server routes to the endpoints' subscriptions.

        ``nc.flush()`` is not enough: nats-py (2.16) writes its PING straight to the
        socket while SUBs may still wait in its pending buffer for the flusher task,
        so the PONG can come back before the server has seen them. A message we
        publish to ourselves travels behind the SUBs: once it is back, they are in."""
        echoed = anyio.Event()

        async def on_echo(msg) -> None:
            echoed.set()

        # Under our own rpc group: the daemon's NATS permissions (ops/nats-server.conf)
        # let it subscribe there and publish under mt5.>, not publish to _INBOX.
        token = self._nc.new_inbox().rpartition(".")[2]
        subject = f"{rpc_group(self._cfg.nats.prefix, self._account)}._ready.{token}"
        sub = await self._nc.subscribe(subject, cb=on_echo)
        try:
            await self._nc.publish(sub.subject, b"")
            with anyio.fail_after(timeout):
                await echoed.wait()
        finally:
            await sub.unsubscribe()

    def _handler(self, name: str):
        async def handle(req) -> None:
            await self._accept(name, req)

        return handle

    # ---- intake: runs on nats.micro's per-endpoint task; never waits on the terminal
    async def _accept(self, name: str, req) -> None:
        span = self._tel.rpc(name, req.subject).begin() if self._tel is not None else None
        try:
            request = parse_request(req.data, ENDPOINTS[name][0])
            if name in ("price", "book"):
                reply = self._price(request) if name == "price" else self._book(request)
                await self._respond(name, req, self._codec.encode(reply), span)
                return
            self._precheck(request)
        except Exception as err:  # noqa: BLE001 - every failure becomes an error reply
            await self._fail(name, req, err, span)
            return
        tg = self._tg
        if tg is None:
            await self._fail(name, req, MT5BusyError("mt5d is starting or stopping; retry shortly"), span)
            return
        if self.in_flight >= self._max_in_flight:
            self._note_busy(name)
            await self._fail(name, req, MT5BusyError(
                f"mt5d is busy ({self.in_flight} requests in flight); retry shortly"), span, log_it=False)
            return
        self.in_flight += 1
        tg.start_soon(self._serve, name, req, request, span, name=f"rpc.{name}")

    async def _serve(self, name: str, req, request, span) -> None:
        _WORK.set(_Work(next(self._arrivals)))  # this task's own context: its hops keep its place in the rpc lane
        try:
            try:
                with anyio.move_on_after(self._deadline) as scope, (span.use() if span is not None else _NO_SPAN):
                    reply = await self._work[name](request)
                if scope.cancelled_caught:
                    raise MT5TimeoutError(f"{name} did not complete within {self._deadline:g} s")
                data = self._codec.encode(reply)
            except Exception as err:  # noqa: BLE001 - cancellation (a BaseException) passes through
                busy = isinstance(err, MT5BusyError)  # counted and logged like the intake's refusals
                if busy:
                    self._note_busy(name)
                await self._fail(name, req, err, span, log_it=not busy)
                return
            await self._respond(name, req, data, span)
        finally:
            self.in_flight -= 1
            if span is not None:
                span.end("cancelled")  # a no-op once the reply was recorded; else shutdown cut it short

    async def _respond(self, name: str, req, data: bytes, span=None) -> None:
        if span is not None:
            span.end()
        try:
            await req.respond(data)
        except ValueError:
            pass  # published without a reply subject: nobody to answer
        except Exception as err:  # noqa: BLE001 - too big, connection closed...: the caller times out
            log.warning("rpc reply not sent", extra={"endpoint": name, "error": type(err).__name__,
                                                     "detail": str(err)[:200], "bytes": len(data)})

    def _note_busy(self, name: str) -> None:
        """Refusals are counted, and logged at most every BUSY_LOG_EVERY seconds (an
        overload must not turn into a flood of log lines on top)."""
        self.refused_busy += 1
        now = anyio.current_time()
        if now - self._busy_logged_at >= BUSY_LOG_EVERY:
            log.warning("rpc busy: requests refused", extra={
                "endpoint": name, "refused_total": self.refused_busy, "max_in_flight": self._max_in_flight})
            self._busy_logged_at = now

    async def _fail(self, name: str, req, err: BaseException, span=None, *, log_it: bool = True) -> None:
        if span is not None:
            span.end(err)
        if not log_it:
            pass
        elif isinstance(err, MT5Error):
            level = logging.INFO if err.status < 500 else logging.WARNING
            log.log(level, "rpc request failed", extra={
                "endpoint": name, "status": err.status, "error": type(err).__name__,
                "mt5_code": err.code, "detail": err.message[:500], "request_bytes": len(req.data)})
        else:
            log.error("rpc handler bug", extra={"endpoint": name, "error": type(err).__name__,
                                                "detail": str(err)[:500], "request_bytes": len(req.data)},
                      exc_info=err)
        code, description, body = error_response(err)
        try:
            await req.respond_error(code, description, data=body)
        except ValueError:
            pass  # no reply subject
        except Exception as e:  # noqa: BLE001
            log.warning("rpc error reply not sent", extra={"endpoint": name, "error": type(e).__name__})

    # ---- checks ---------------------------------------------------------
    def _precheck(self, request) -> None:
        symbol = getattr(request, "symbol", None)
        if isinstance(request, (CandlesRequest, TicksRequest)):
            self._check_symbol(symbol)

    def _known_symbols(self) -> tuple[str, ...]:
        st = self._conn.status()
        if st.selected:
            return st.selected
        # Not connected yet: the configured symbols the terminal has not refused
        # (the request then meets the breaker, not a misleading "unknown symbol").
        return tuple(s for s in self._cfg.stream.symbols if s not in st.unknown)

    def _check_symbol(self, symbol: str) -> None:
        if symbol not in self._known_symbols():
            raise MT5ValidationError(f"unknown symbol {_shown(symbol)}: not one of the symbols this daemon streams")

    def _offset_ms(self) -> int:
        """The broker clock's offset from UTC, which history requests need before
        they can call the terminal. Unknown until the poller's first cycle: then
        say why (the breaker, no connection) rather than something vaguer."""
        if self._utc.known:
            return self._utc.offset_ms
        raise self._not_ready("the broker clock offset is not known yet; retry in a moment")

    def _not_ready(self, otherwise: str) -> MT5Error:
        """Why something the terminal gives is missing: the breaker, no connection, or ``otherwise``."""
        st = self._conn.status()
        if st.breaker == "open":
            wait = f"; retry in {st.retry_after:.0f} s" if st.retry_after is not None else ""
            return MT5CircuitBreakerOpen(f"circuit breaker is open: the terminal is not being called{wait}")
        if not st.connected:
            return MT5ConnectionError("not connected to the terminal yet" +
                                      (f" (last error: {st.last_error})" if st.last_error else ""))
        return MT5StateError(otherwise)

    def _max_payload(self) -> int:
        return int(getattr(self._nc, "max_payload", 0) or 1024 * 1024)

    # ---- endpoints --------------------------------------------------------
    def _price(self, req: PriceRequest) -> PriceReply:
        if req.symbol is not None:
            self._check_symbol(req.symbol)
        now = self._mono()
        prices: dict[str, Quote] = {}
        missing: list[str] = []
        for symbol in dict.fromkeys(req.wanted):
            hit = self._prices.get(symbol)
            if hit is None:
                missing.append(symbol)
                continue
            tick, received = hit
            prices[symbol] = Quote(tick=tick, age_ms=max(0, int((now - received) * 1000)))
        if req.symbol is not None and missing:
            # One symbol asked, streamed, but no tick yet: say why, as the old get_price raised.
            raise self._not_ready(f"no tick of {_shown(req.symbol)} received yet; retry in a moment")
        return PriceReply(prices=prices, missing=missing)

    def _book(self, req: BookRequest) -> BookReply:
        streamed = self._books.symbols if self._books is not None else ()
        if req.symbol is not None and req.symbol not in streamed:
            raise MT5ValidationError(f"unknown symbol {_shown(req.symbol)}: not one of the books this daemon streams")
        now = self._mono()
        books: dict[str, BookQuote] = {}
        missing: list[str] = []
        for symbol in dict.fromkeys(req.wanted):
            hit = self._books.get(symbol) if self._books is not None else None
            if hit is None:
                missing.append(symbol)
                continue
            book, received = hit
            books[symbol] = BookQuote(book=book, age_ms=max(0, int((now - received) * 1000)))
        return BookReply(books=books, missing=missing)

    async def _symbol_info(self, req) -> SymbolInfo:
        symbol = req.symbol
        return symbol_info_reply(await self._terminal(lambda api: api.symbol_info(symbol)))

    async def _terminal_info(self, req) -> TerminalInfo:
        return terminal_info_reply(await self._terminal(lambda api: api.terminal_info()))

    async def _account_info(self, req) -> AccountReply:
        info = await self._terminal(lambda api: api.account_info())
        return account_reply(info)

    async def _symbols(self, req) -> SymbolsReply:
        conn = self._conn

        def hop(api: TerminalApi):
            out, refused = [], []
            # Read on the terminal thread, after any (re)connect ahead of this hop selected them.
            for symbol in conn.selected_symbols():
                try:
                    out.append((symbol, api.symbol_info(symbol)))
                except MT5ValidationError:
                    refused.append(symbol)
            return out, refused

        infos, refused = await self._terminal(hop)
        if refused:
            log.warning("symbol_info refused", extra={"symbols": refused})
        specs = []
        for symbol, info in infos:
            spec = symbol_spec(info)
            specs.append(spec if spec.symbol == symbol else msgspec.structs.replace(spec, symbol=symbol))
        return SymbolsReply(symbols=specs)

    async def _probe(self, req):
        return await self._health.measure()

    async def _reconnect(self, req) -> ReconnectReply:
        log.warning("reconnect requested over rpc", extra={"account": self._account})
        await self._conn.reconnect()
        return ReconnectReply(ok=True)

    async def _candles(self, req: CandlesRequest) -> CandlesReply:
        off = self._offset_ms()
        symbol, tf = req.symbol, req.timeframe
        code = TIMEFRAMES[tf]
        # No bar opens in the future: absurd dates never reach the terminal.
        horizon_s = int(self._wall() + off / 1000) + 86400
        more_in_range = False
        rates = None
        if req.mode == "latest":
            rates = await fetch_bars(self._terminal, symbol, code, None, req.count)
        elif req.mode == "before":
            to_s = min((req.end + off) // 1000, horizon_s)
            if to_s >= 0:
                rates = await fetch_bars(self._terminal, symbol, code, to_s, req.count)
        else:
            from_s = max(0, -((-(req.start + off)) // 1000))  # bars opened at or after start
            to_s = min((req.end + off) // 1000, horizon_s)
            if from_s <= to_s:
                # At most the range's newest MAX_CANDLES bars, and "more" for an older part.
                rates = await fetch_bars(self._terminal, symbol, code, to_s, MAX_CANDLES, from_s)
                more_in_range = len(rates) >= MAX_CANDLES and int(rates["time"][0]) > from_s
        candles = await self._to_candles(symbol, tf, rates, off)
        reply = page_candles(candles, self._codec, self._max_payload())
        if more_in_range and not reply.more and reply.candles:
            reply = CandlesReply(candles=reply.candles, more=True, next_end=reply.candles[0].time_utc_ms - 1)
        return reply

    # ---- account data -------------------------------------------------------
    @staticmethod
    def _matches(req: PositionsRequest):
        match = group_matcher(req.group) if req.group else None
        return lambda x: ((req.symbol is None or x.symbol == req.symbol) and (req.ticket is None or x.ticket == req.ticket)
                          and (match is None or match(x.symbol)))

    async def _view(self, req: PositionsRequest):
        """The positions and orders as the streams last described them (epoch/seq for a mirror);
        read from the terminal when account tracking is off."""
        tr = self._tracker
        if tr is not None:
            view = tr.view
            if not view.synced:
                self._offset_ms()  # the clearer reason first (breaker, not connected)
                raise MT5BusyError("mt5d is starting: the account state is not read yet; retry shortly")
            return view.positions, view.orders, view.epoch, view.seq
        off = self._offset_ms()
        positions, orders = await self._terminal(lambda api: (api.positions_get(), api.orders_get()))
        return (tuple(position_from_mt5(p, off) for p in positions), tuple(order_from_mt5(o, off) for o in orders),
                0, 0)

    async def _positions(self, req: PositionsRequest) -> PositionsReply:
        positions, _, epoch, seq = await self._view(req)
        keep = self._matches(req)
        return PositionsReply(positions=[p for p in positions if keep(p)], epoch=epoch, seq=seq)

    async def _orders(self, req: OrdersRequest) -> OrdersReply:
        _, orders, epoch, seq = await self._view(req)
        keep = self._matches(req)
        return OrdersReply(orders=[o for o in orders if keep(o)], epoch=epoch, seq=seq)

    async def _history(self, req: DealsRequest, fn: str):
        """History deals or orders with UTC time in [start, end] (ms), as terminal rows, oldest first."""
        off = self._offset_ms()
        now_broker_s = int(self._wall() + off / 1000)
        # Whole broker seconds around the range (clamped: no absurd date reaches the terminal).
        a = max(0, (req.start + off) // 1000)
        b = min((req.end + off) // 1000 + 1, now_broker_s + 86400)
        if a > b:
            return [], off
        kwargs = {"group": req.group} if req.group else {}
        if req.position is not None:
            rows = await self._terminal(lambda api: getattr(api, fn)(position=req.position))
        else:
            rows = await self._terminal(lambda api: getattr(api, fn)(a, b, **kwargs))
        return rows, off

    def _cut(self, req: DealsRequest, items: list, time_of):
        items = [x for x in items if req.start <= time_of(x) <= req.end
                 and (req.symbol is None or x.symbol == req.symbol)]
        if req.skip:
            at_start = sum(1 for x in items[: req.skip] if time_of(x) == req.start)
            items = items[at_start:]
        return items[: req.count], len(items) > req.count

    async def _deals(self, req: DealsRequest) -> DealsReply:
        rows, off = await self._history(req, "history_deals_get")
        deals = sorted((deal_from_mt5(d, off) for d in rows), key=lambda d: (d.time_msc_broker, d.ticket))
        time_of = lambda d: d.time_utc_ms  # noqa: E731
        items, truncated = self._cut(req, deals, time_of)
        return page_history(req, items, time_of, DealsReply, self._codec, self._max_payload(), truncated=truncated)

    async def _history_orders(self, req: HistoryOrdersRequest) -> HistoryOrdersReply:
        rows, off = await self._history(req, "history_orders_get")
        orders = sorted((order_from_mt5(o, off) for o in rows), key=lambda o: (o.time_setup_msc_broker, o.ticket))
        time_of = lambda o: o.time_setup_utc_ms  # noqa: E731
        items, truncated = self._cut(req, orders, time_of)
        return page_history(req, items, time_of, HistoryOrdersReply, self._codec, self._max_payload(),
                            truncated=truncated)

    async def _terminal(self, fn: Callable[[TerminalApi], Any]) -> Any:
        """One hop on the terminal thread, in the connection's rpc lane, keeping this
        request's place. The first hop must start within ``busy_after``: a request
        still queued then is more than the terminal can serve within the deadline,
        and gets 503 busy rather than a 504 later."""
        work = _WORK.get()
        if work is None or work.started:
            return await self._conn.run_call(fn, lane="rpc", order=work.order if work else 0)
        result = await self._conn.run_call(fn, lane="rpc", order=work.order,
                                           start_by=anyio.current_time() + self._busy_after)
        work.started = True
        return result

    async def _to_candles(self, symbol: str, tf: str, rates, off_ms: int) -> list[Candle]:
        if rates is None or not len(rates):
            return []
        now_broker_s = int(self._wall() + off_ms / 1000)
        out: list[Candle] = []
        for i in range(0, len(rates), CONVERT_SLICE):  # in slices: the stream's tasks run between them
            out.extend(candles_from_rates(symbol, tf, rates[i:i + CONVERT_SLICE], off_ms))
            await anyio.lowlevel.checkpoint()
        last = out[-1]
        if now_broker_s < bar_end(tf, last.time_broker) + CLOSE_GRACE_S:
            out[-1] = msgspec.structs.replace(last, closed=False)  # the forming bar
        return out

    async def _ticks(self, req: TicksRequest) -> TicksReply:
        off = self._offset_ms()
        symbol = req.symbol
        now_broker_s = int(self._wall() + off / 1000)
        # No tick is newer than now: clamp (keeps absurd values out of int64 and the terminal).
        end_b = min(req.end + off, (now_broker_s + 86400) * 1000)
        start_b = max(0, req.start + off)
        # Never materialise more than one reply can carry: past ``limit`` ticks the
        # encoded reply is surely over max_payload, so page_ticks cuts and says "more".
        max_payload = self._max_payload()
        limit = min(req.count, (max_payload - REPLY_HEADROOM) // self._min_tick_bytes(symbol) + 1)
        arr = await fetch_ticks(self._terminal, symbol, start_b, end_b, req.skip, limit, now_broker_s)
        # The poller's conversion: the stream never carried NaN-priced ticks either.
        ticks: list[Tick] = []
        after = TickCursor(start_b, req.skip)
        msc = arr["time_msc"]
        i = 0
        while i < len(arr):  # in slices cut between milliseconds: the stream's tasks run between them
            j = min(len(arr), i + CONVERT_SLICE)
            j = int(np.searchsorted(msc, msc[j - 1], side="right")) if j < len(arr) else j
            part, _ = ticks_from_array(symbol, arr[i:j], after, off)
            ticks.extend(part)
            after = TickCursor(int(msc[j - 1]), 0)  # the next slice starts on a new millisecond
            i = j
            await anyio.lowlevel.checkpoint()
        return page_ticks(req, ticks, self._codec, max_payload)

    def _min_tick_bytes(self, symbol: str) -> int:
        """A lower bound of what one more tick adds to an encoded TicksReply (zeros encode shortest)."""
        size = self._tick_size.get(symbol)
        if size is None:
            zero = Tick(symbol=symbol, time_msc_broker=0, time_utc_ms=0, bid=0.0, ask=0.0, last=0.0, volume=0,
                        volume_real=0.0, flags=0)
            one = len(self._codec.encode(TicksReply(ticks=[zero], more=True)))
            two = len(self._codec.encode(TicksReply(ticks=[zero, zero], more=True)))
            size = max(1, two - one)
            if len(self._tick_size) < 4096:
                self._tick_size[symbol] = size
        return size




class _Work:
    __slots__ = ("order", "started")

    def __init__(self, order: int) -> None:
        self.order, self.started = order, False
