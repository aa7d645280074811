"""The connection actor: the terminal's one owner.

Every terminal call in the process comes here as a request on a bounded
channel and runs on the terminal thread, behind the circuit breaker and a
timeout. Requests come in two lanes: the stream's (poll cycles, probes) is
always served before the rpc lane's (history and account requests, which
split long reads into short hops), so a due poll cycle waits for at most one
rpc hop, never behind a queue of history work; an rpc hop not started by its
``start_by`` is answered "busy" instead. The actor (re)connects when needed,
selects the streamed symbols, opens their depth of market (``market_book_add``,
at every connect, since a terminal session drops the subscriptions; released
when the actor stops), counts failures, and turns every state change into one log line and one
``StateChange`` for the health actor (which publishes it on NATS).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Literal, TypeVar

import anyio
import msgspec
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectSendStream

from mt5d.actors.logic.breaker import BreakerPolicy
from mt5d.actors.logic.gate import Gate
from mt5d.actors.messages import send
from mt5d.daemon.telemetry import Telemetry
from mt5d.daemon.terminal.api import TerminalApi
from mt5d.daemon.terminal.thread import TerminalThread
from mt5d.errors import (
    MT5AuthError,
    MT5BusyError,
    MT5ConnectionError,
    MT5DataError,
    MT5Error,
    MT5InitError,
    MT5TimeoutError,
    MT5ValidationError,
)
from mt5d.market import EventKind

__all__ = ["Connection", "ConnStatus", "StateChange", "Credentials", "AuthGaveUp"]

log = logging.getLogger("mt5d.connection")
T = TypeVar("T")


class ConnStatus(msgspec.Struct, frozen=True):
    """A read-only snapshot of the connection, for the other actors."""

    connected: bool
    auth_ok: bool | None
    breaker: str
    wedged: bool
    last_error: str
    generation: int
    retry_after: float | None = None
    selected: tuple[str, ...] = ()  # the symbols selected at the last connect
    unknown: frozenset[str] = frozenset()  # configured symbols the terminal refused
    books: tuple[str, ...] = ()  # the symbols whose depth of market is open (market_book_add)


class StateChange(msgspec.Struct, frozen=True):
    """One state change, for the health actor to publish."""

    event: EventKind
    detail: str = ""


class AuthGaveUp(Exception):
    """Authentication kept failing past its retries: exit with its own code."""


@dataclass(frozen=True)
class Credentials:
    login: int
    password: Any  # daemon.secrets.Secret or None; revealed only on the terminal thread
    server: str
    path: str

    def __repr__(self) -> str:
        return f"Credentials(login={self.login}, server={self.server!r}, password=<hidden>)"


Lane = Literal["stream", "rpc"]


@dataclass
class _Request:
    fn: Callable[[TerminalApi], Any] | None  # None: forced reconnect
    timeout: float | None
    reply: MemoryObjectSendStream
    lane: Lane = "stream"
    order: int = 0  # rpc lane: the request's arrival number (its hops keep its place)
    start_by: float | None = None  # rpc lane: not started by then (anyio time): refused as busy


class Connection:
    """Owns the terminal thread, the breaker and the connect sequence."""

    def __init__(
        self,
        *,
        module: Any,
        credentials: Credentials,
        symbols: tuple[str, ...],
        policy: BreakerPolicy,
        connection_timeout: float,
        operation_timeout: float,
        events: MemoryObjectSendStream[StateChange],
        thread: TerminalThread | None = None,
        max_auth_failures: int = 3,
        rand: Callable[[], float] = random.random,
        queue_size: int = 64,
        telemetry: Telemetry | None = None,
        books: tuple[str, ...] = (),
    ) -> None:
        self._tel = telemetry or Telemetry.disabled()
        self._book_symbols = tuple(books)
        self._books: tuple[str, ...] = ()  # whose book is open (market_book_add succeeded)
        self._books_refused: set[str] = set()
        self._api = self._tel.instrument(TerminalApi(module))  # terminal_call per function
        self._module = module
        self._creds = credentials
        self._symbols = symbols
        self._gate = Gate(policy, rand)
        self._connection_timeout = connection_timeout
        self._operation_timeout = operation_timeout
        self._events = events
        self.thread = thread or TerminalThread()
        self.thread.on_unwedged = self._note_wedged
        self._max_auth_failures = max_auth_failures
        self._send, self._recv = anyio.create_memory_object_stream[_Request](queue_size)
        # The two lanes the actor serves from (see _next): stream first, then rpc.
        self._stream_lane: deque[_Request] = deque()
        self._rpc_lane: list[tuple[int, int, _Request]] = []
        self._filed = itertools.count()
        self._selected: tuple[str, ...] = ()
        self._unknown: frozenset[str] = frozenset()
        self._connected = False
        self._auth_ok: bool | None = None
        self._auth_failures = 0
        self._generation = 0
        self._last_error = ""
        self._was_wedged = False

    # ---- the handle other actors use ---------------------------------
    async def run_call(self, fn: Callable[[TerminalApi], T], *, timeout: float | None = None,
                       lane: Lane = "stream", order: int = 0, start_by: float | None = None) -> T:
        """Run ``fn(api)`` on the terminal thread (one hop; many calls allowed).

        ``lane``: "stream" (poll cycles, probes: served first) or "rpc" (request work,
        in ``order``, one hop at a time between stream hops: keep its hops short).
        ``start_by``: an rpc hop still queued then is refused with ``MT5BusyError``
        (the terminal is serving more than it can within the requester's deadline)."""
        reply_send, reply_recv = anyio.create_memory_object_stream(1)  # (not [tuple]: typing's call costs µs)
        # One span per request (a poll hop, a probe, an RPC's fetch), in the caller's task.
        with self._tel.span("terminal.reconnect" if fn is None else f"terminal.{getattr(fn, '__name__', 'call')}"):
            async with reply_recv:
                await send(self._send, _Request(fn, timeout, reply_send, lane, order, start_by))
                result, error = await reply_recv.receive()
            if error is not None:
                raise error
        return result

    async def reconnect(self) -> None:
        """Forced reconnect (an operator action): shutdown, then connect again."""
        await self.run_call(None)  # type: ignore[arg-type]

    def selected_symbols(self) -> tuple[str, ...]:
        """The symbols selected at the last connect (safe on the terminal thread too)."""
        return self._selected

    def status(self) -> ConnStatus:
        kind, retry_after = self._gate.describe(anyio.current_time())
        return ConnStatus(
            connected=self._connected,
            auth_ok=self._auth_ok,
            breaker=kind,
            wedged=self.thread.wedged,
            last_error=self._last_error,
            generation=self._generation,
            retry_after=retry_after,
            selected=self._selected,
            unknown=self._unknown,
            books=self._books,
        )

    # ---- the actor ------------------------------------------------------
    async def run(self, *, task_status: TaskStatus = anyio.TASK_STATUS_IGNORED) -> None:
        self.thread.start()
        if not self._connected:
            try:
                await self._guarded(None, None, first=True)
            except MT5Error:
                pass  # recorded; the breaker state is known, so we are "up"
        elif self._book_symbols and not self._books:
            try:  # restarted by the supervisor while connected: the books were released on the way out
                await self._open_books()
            except MT5Error:
                pass
        task_status.started()
        try:
            while (req := await self._next()) is not None:
                if req.reply.statistics().open_receive_streams == 0:
                    req.reply.close()  # the requester gave up while it was queued: no work for nobody
                    continue
                try:
                    outcome = (await self._guarded(req.fn, req.timeout), None)
                except MT5Error as err:
                    outcome = (None, err)
                try:
                    req.reply.send_nowait(outcome)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    pass  # the requester gave up (cancelled); nothing to do
                finally:
                    req.reply.close()
        finally:
            await self._release_books()

    async def _next(self) -> _Request | None:
        """The next request to serve (None: the channel closed): the stream lane first,
        then rpc work by arrival. Everything queued is taken into the two lanes first
        (each caller has at most one request out: one per poller, probe and rpc task)."""
        while True:
            if not self._stream_lane and not self._rpc_lane:
                try:
                    self._file(await self._recv.receive())
                except anyio.EndOfStream:
                    return None
            while True:
                try:
                    self._file(self._recv.receive_nowait())
                except (anyio.WouldBlock, anyio.EndOfStream):
                    break
            if self._stream_lane:
                return self._stream_lane.popleft()
            self._refuse_late(anyio.current_time())
            if self._rpc_lane:
                return heapq.heappop(self._rpc_lane)[2]

    def _file(self, req: _Request) -> None:
        if req.lane == "stream":
            self._stream_lane.append(req)
        else:
            heapq.heappush(self._rpc_lane, (req.order, next(self._filed), req))

    def _refuse_late(self, now: float) -> None:
        """Answer "busy" to the rpc hops not started by their ``start_by``."""
        late = [item for item in self._rpc_lane if item[2].start_by is not None and now > item[2].start_by]
        if not late:
            return
        gone = {seq for _, seq, _ in late}
        self._rpc_lane = [item for item in self._rpc_lane if item[1] not in gone]
        heapq.heapify(self._rpc_lane)
        for _, _, req in late:
            try:
                req.reply.send_nowait((None, MT5BusyError(
                    "mt5d is busy: the terminal is serving earlier requests; retry shortly")))
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass
            finally:
                req.reply.close()

    async def _guarded(self, fn, timeout, *, first: bool = False) -> Any:
        now = anyio.current_time()
        before = self._gate.kind
        if fn is None and not first:
            self._gate.force_close(now)  # an operator's forced reconnect tries now
        try:
            self._gate.request(now)  # raises MT5CircuitBreakerOpen
        finally:
            self._note_breaker(before)
        before = self._gate.kind
        try:
            if fn is None and not first:
                await self._disconnect("reconnect requested")
            if not self._connected:
                await self._connect()
            if fn is None:
                result = None
            else:
                result = await self._call(lambda: fn(self._api), timeout or self._operation_timeout)
        except MT5Error as err:
            self._on_error(err, anyio.current_time())
            self._note_breaker(before)
            raise
        except Exception as exc:
            # A result our code could not handle: one failure, not a dead actor
            # (a crash here would leave a half-open breaker waiting for its trial).
            log.error("terminal request failed unexpectedly", exc_info=exc)
            err = MT5DataError("the terminal returned something mt5d could not handle", 0)
            self._on_error(err, anyio.current_time())
            self._note_breaker(before)
            raise err from None
        self._gate.success(anyio.current_time())
        self._note_breaker(before)
        return result

    async def _call(self, fn: Callable[[], T], timeout: float) -> T:
        try:
            return await self.thread.call(fn, timeout)
        finally:
            self._note_wedged()

    def _note_wedged(self) -> None:
        wedged = self.thread.wedged
        if wedged != self._was_wedged:
            self._was_wedged = wedged
            if wedged:
                self._change("wedged", "a terminal call did not return in time; the terminal thread is stuck",
                             level=logging.ERROR)
            else:
                self._change("unwedged", "the stuck terminal call returned")

    async def _connect(self) -> None:
        creds, symbols = self._creds, self._symbols
        password = creds.password.reveal() if creds.password is not None else None

        def connect(api: TerminalApi):
            api.initialize(path=creds.path or None, login=creds.login or None, password=password,
                           server=creds.server or None, timeout_ms=int(self._connection_timeout * 1000))
            info = api.terminal_info()
            if not info.connected:
                raise MT5ConnectionError("terminal is not connected to the broker", -10004)
            account = api.account_info()
            selected, unknown = [], []
            for symbol in symbols:
                try:
                    api.symbol_info(symbol)  # -4: the terminal does not offer it
                    api.symbol_select(symbol, True)
                    selected.append(symbol)
                except MT5ValidationError:
                    unknown.append(symbol)
            return account.login, tuple(selected), unknown, self._book_add(api, selected)

        log.info("connecting", extra={"login": creds.login, "server": creds.server, "path": creds.path or None})
        # The whole sequence gets the connection timeout (plus the symbol selection).
        login, selected, unknown, books = await self._call(lambda: connect(self._api), self._connection_timeout)
        self._connected, self._selected = True, selected
        self._note_books(*books)
        self._generation += 1
        if self._auth_ok is not True:
            self._change("auth_ok", f"logged in as {login}")
        self._auth_ok, self._auth_failures = True, 0
        self._change("connected", f"connected to the terminal ({len(selected)} symbols selected)")
        for symbol in unknown:
            if symbol not in self._unknown:
                self._unknown |= {symbol}
                self._change("symbol_unknown", f"symbol {symbol!r} is not offered by the terminal; not streamed",
                             level=logging.ERROR)

    # ---- depth of market ---------------------------------------------------
    def _book_add(self, api: TerminalApi, selected) -> tuple[tuple[str, ...], list[tuple[str, str]]]:
        """On the terminal thread: market_book_add for the book symbols; (opened, refused with why)."""
        opened, refused = [], []
        for symbol in self._book_symbols:
            if symbol not in selected:
                continue
            try:
                api.market_book_add(symbol)
                opened.append(symbol)
            except MT5ValidationError as err:
                refused.append((symbol, err.message))
        return tuple(opened), refused

    def _note_books(self, opened: tuple[str, ...], refused: list[tuple[str, str]]) -> None:
        self._books = opened
        for symbol, why in refused:
            if symbol not in self._books_refused:
                self._books_refused.add(symbol)
                self._change("book_unavailable", f"no depth of market for {symbol!r}: {why}", level=logging.ERROR)

    async def _open_books(self) -> None:
        selected = self._selected
        self._note_books(*await self._call(lambda: self._book_add(self._api, selected), self._operation_timeout))

    async def _release_books(self) -> None:
        """On stop: market_book_release for every open book (best effort, never blocking the stop for long)."""
        books, self._books = self._books, ()
        if not books or not self._connected or self.thread.wedged:
            return

        def release(api: TerminalApi) -> None:
            for symbol in books:
                try:
                    api.market_book_release(symbol)
                except MT5ValidationError:
                    pass  # not open any more (the session changed): nothing to release

        with anyio.move_on_after(self._operation_timeout, shield=True):
            try:
                await self.thread.call(lambda: release(self._api), self._operation_timeout)
            except MT5Error:
                pass

    async def _disconnect(self, why: str) -> None:
        if self._connected:
            self._connected = False
            self._change("disconnected", why, level=logging.WARNING)
        try:
            await self.thread.call(self._module.shutdown, self._operation_timeout)
        except MT5Error:
            pass

    def _on_error(self, err: MT5Error, now: float) -> None:
        self._last_error = f"{type(err).__name__}: {err.message}"
        if isinstance(err, MT5AuthError):
            self._auth_ok = False
            self._auth_failures += 1
            self._connected = False
            self._gate.auth_failure(now)
            log.error("authentication failed", extra={"login": self._creds.login, "server": self._creds.server,
                                                     "attempt": self._auth_failures, "code": err.code})
            self._change("auth_failed", err.message, log_it=False)
            if self._auth_failures >= self._max_auth_failures:
                raise AuthGaveUp(f"authentication failed {self._auth_failures} times")
            return
        if not err.counts_as_failure:
            # The terminal answered (a caller's mistake): that is not a failure.
            self._gate.success(now)
            return
        if isinstance(err, (MT5ConnectionError, MT5InitError, MT5TimeoutError)) and self._connected:
            self._connected = False
            self._change("disconnected", err.message, level=logging.WARNING)
        log.warning("terminal call failed", extra={"error": type(err).__name__, "code": err.code,
                                                   "detail": err.message})
        self._gate.failure(now)

    def _note_breaker(self, before: str) -> None:
        after = self._gate.kind
        if after != before:
            self._tel.breaker_state(after)
            level = logging.WARNING if after != "closed" else logging.INFO
            self._change(_BREAKER_EVENTS[after], f"circuit breaker {before} -> {after}", level=level)

    def _change(self, event: EventKind, detail: str, *, level: int = logging.INFO, log_it: bool = True) -> None:
        if log_it:
            log.log(level, event, extra={"detail": detail})
        try:
            self._events.send_nowait(StateChange(event, detail))
        except anyio.WouldBlock:
            log.warning("health event queue full; state change not published", extra={"health_event": event})
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass


_BREAKER_EVENTS: dict[str, EventKind] = {
    "closed": "breaker_closed", "open": "breaker_open", "half_open": "breaker_half_open"}


def probe(api: TerminalApi) -> Any:
    """The health probe: one cheap call that also checks the broker link."""
    info = api.terminal_info()
    if not info.connected:
        err = MT5ConnectionError("terminal lost its broker connection", -10004)
        err.terminal_info = info  # what the health event reports (connected False)
        raise err
    return info
