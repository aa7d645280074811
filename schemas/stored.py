"""What the NATS servers keep for a subscriber (JetStream; nats-py and msgspec only).

- Last values: the newest tick per symbol in ``MT5_<account>_LAST``, read with
  Direct Get (any replica answers): one subject with ``last_by_subj``, many at
  one point in time with ``multi_last`` (nats-server >= 2.11, ADR-31).
- Replay: an ordered consumer on ``MT5_<account>`` from a start time, then
  live, de-duplicated on the tick identity at the seam (see ``Replay``).
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import secrets
import time
from typing import Any, TypeVar

import msgspec
import nats.errors

from mt5d.codec import decode_any
from mt5d.errors import MT5DataError
from mt5d.market import Tick
from mt5d.streams import Stream

__all__ = ["LastValues", "Replay", "NotStored", "replay_since", "stored_time_ms", "subscribe_since", "MULTI_LAST_MAX"]

T = TypeVar("T")
MULTI_LAST_MAX = 1024  # subjects per multi_last request (the server's limit)
# Replay starts this long before ``since`` by store time: a tick is stored after its own time,
# and the server's clock may differ a little from the broker-derived UTC.
SINCE_MARGIN_S = 5.0


_LINK_DOWN = (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError,
              nats.errors.ConnectionReconnectingError, nats.errors.OutboundBufferLimitError)


class NotStored(Exception):
    """No stream answers (JetStream off, or no last-value stream): ask the daemon instead."""


def stored_time_ms(ts: str) -> int:
    """``Nats-Time-Stamp`` (RFC 3339, nanoseconds, UTC) as epoch ms."""
    head, _, frac = ts.rstrip("Z").partition(".")
    base = _dt.datetime.fromisoformat(head).replace(tzinfo=_dt.timezone.utc)
    return int(base.timestamp()) * 1000 + int((frac + "000")[:3])


class LastValues:
    """Direct Get on the last-value stream of one account.

    Many subjects: one ``multi_last`` request (one point in time). A user whose
    NATS permissions allow Direct Get only with the subject in the API subject
    (readers in ops/nats-server.conf: a request body naming subjects could name
    account data) gets no answer to it; after that first timeout this object
    reads one subject per request, all at once."""

    def __init__(self, nc, stream: str, *, timeout: float, multi_last: bool = True) -> None:
        self._nc = nc
        self._stream = stream
        self._timeout = timeout
        self.multi_last = multi_last

    async def ticks(self, subjects: dict[str, str]) -> dict[str, tuple[Tick, int]]:
        """symbol -> (newest stored tick, age in ms) for ``subjects`` (symbol -> subject); absent ones left out."""
        return await self.last(subjects, Tick)

    async def last(self, subjects: dict[Any, str], type: type[T]) -> dict[Any, tuple[T, int]]:
        """key -> (newest stored message decoded as ``type``, age in ms), for ``subjects`` (key -> subject)."""
        out: dict[Any, tuple[T, int]] = {}
        items = list(subjects.items())
        if len(items) == 1:
            key, subject = items[0]
            msg = await self._request(f"$JS.API.DIRECT.GET.{self._stream}.{subject}", b"")
            if msg is not None:
                out[key] = self._decoded(msg, type)
            return out
        if self.multi_last:
            try:
                return await self._multi(items, type)
            except NotStored:
                if not self._nc.is_connected:
                    raise
                self.multi_last = False  # refused (or unanswered): one subject per request from now on
        msgs = await asyncio.gather(*(self._request(f"$JS.API.DIRECT.GET.{self._stream}.{subj}", b"")
                                      for _, subj in items))
        return {key: self._decoded(msg, type) for (key, _), msg in zip(items, msgs) if msg is not None}

    async def _multi(self, items, type) -> dict:
        out = {}
        by_subject = {subj: key for key, subj in items}
        for i in range(0, len(items), MULTI_LAST_MAX):
            chunk = [subj for _, subj in items[i:i + MULTI_LAST_MAX]]
            for msg in await self._batch({"multi_last": chunk, "batch": len(chunk)}):
                key = by_subject.get(msg.headers.get("Nats-Subject", ""))
                if key is not None:
                    out[key] = self._decoded(msg, type)
        return out

    def _decoded(self, msg, type):
        try:
            item = decode_any(msg.data, type)
        except msgspec.DecodeError as err:
            raise MT5DataError(f"undecodable stored {type.__name__}: {err}") from None
        stamp = msg.headers.get("Nats-Time-Stamp")
        age = max(0, int(time.time() * 1000) - stored_time_ms(stamp)) if stamp else 0
        return item, age

    async def _request(self, subject: str, payload: bytes):
        try:
            msg = await self._nc.request(subject, payload, timeout=self._timeout)
        except (nats.errors.NoRespondersError, nats.errors.TimeoutError, asyncio.TimeoutError, *_LINK_DOWN):
            raise NotStored(self._stream) from None  # the caller asks the daemon, which says what is wrong
        status = (msg.headers or {}).get("Status")
        if status == "404":
            return None
        if status:
            raise NotStored(f"{self._stream}: {status}")
        return msg

    async def _batch(self, request: dict) -> list:
        """A request answered by several messages, ended by a status (204 EOB, or 404 nothing)."""
        inbox = self._nc.new_inbox()
        got: list = []
        done = asyncio.get_running_loop().create_future()

        async def on_msg(msg) -> None:
            status = (msg.headers or {}).get("Status")
            if status and not done.done():
                done.set_result(status)
            elif not status:
                got.append(msg)

        try:
            sub = await self._nc.subscribe(inbox, cb=on_msg)
        except _LINK_DOWN:
            raise NotStored(self._stream) from None
        try:
            await self._nc.publish(f"$JS.API.DIRECT.GET.{self._stream}", msgspec.json.encode(request), reply=inbox)
            try:
                status = await asyncio.wait_for(done, self._timeout)
            except asyncio.TimeoutError:
                raise NotStored(self._stream) from None
        except _LINK_DOWN:
            raise NotStored(self._stream) from None
        finally:
            try:
                await sub.unsubscribe()
            except _LINK_DOWN:
                pass
        if status == "503":  # no responders
            raise NotStored(self._stream)
        if status not in ("204", "404"):
            raise NotStored(f"{self._stream}: {status}")
        return got


def _consumer_name() -> str:
    return "mt5r_" + secrets.token_hex(8)


def _renamed_on_reset(sub) -> None:
    """nats-py (2.16) re-creates an ordered consumer after a gap from the same config, by
    start sequence: give it a fresh name and drop the start time (the server refuses both)."""
    jsi = getattr(getattr(sub, "_sub", None), "_jsi", None)
    if jsi is None or not hasattr(jsi, "reset_ordered_consumer") or not hasattr(jsi, "_ccreq"):
        return
    reset = jsi.reset_ordered_consumer

    async def renamed(sseq):
        jsi._ccreq.name = _consumer_name()
        jsi._ccreq.opt_start_time = None
        return await reset(sseq)

    jsi.reset_ordered_consumer = renamed


async def subscribe_since(js, subject: str, *, stream: str, start: _dt.datetime, cb, **kw):
    """An ordered consumer on ``subject`` from ``start``, then live. Named, so the filter
    travels in the API subject (what a reader may create, see ops/nats-server.conf), not
    only in the request body; renamed whenever nats-py re-creates it after a gap."""
    from nats.js.api import ConsumerConfig, DeliverPolicy

    cfg = ConsumerConfig(name=_consumer_name(), deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=start)
    sub = await js.subscribe(subject, stream=stream, ordered_consumer=True, config=cfg, cb=cb, **kw)
    _renamed_on_reset(sub)
    return sub


def _identity(item) -> tuple:
    if isinstance(item, Tick):
        return (item.time_msc_broker, item.index_in_ms)
    return (item.time_broker,)


class Replay(Stream[T]):
    """Ticks or candles from the first stored at or after ``since`` (UTC ms), then live.

    One ordered consumer per subject (the server re-creates it on a gap, from
    the last sequence seen). Per subject, an item whose identity (time and
    position in its millisecond) is not after the last one delivered is a
    repeat and is dropped: no repeat at the seam, nor from a stream that holds
    a message twice. Iterate with ``async for``; ``close()`` (or ``async with``) ends it."""

    def __init__(self, js, stream: str, subjects: list[str], type: type[T], *, since_ms: int,
                 queue_size: int = 65536) -> None:
        super().__init__(None, subjects, type, queue_size)  # close() and the protocol: Stream's
        self._js, self._stream = js, stream
        self._since_ms = since_ms
        self._last: dict[str, tuple] = {}
        self.repeats = 0  # dropped as already delivered

    async def start(self) -> "Replay[T]":
        if self._subs or self._closed:
            return self
        start = _dt.datetime.fromtimestamp(self._since_ms / 1000 - SINCE_MARGIN_S, tz=_dt.timezone.utc)
        for subject in self._subjects:
            self._subs.append(await subscribe_since(self._js, subject, stream=self._stream, start=start,
                                                    cb=self._on_msg, pending_msgs_limit=1_000_000))
        return self

    async def _on_msg(self, msg) -> None:
        try:
            self._queue.put_nowait((msg.subject, msg.data))
        except asyncio.QueueFull:
            self.dropped += 1

    async def __anext__(self) -> T:
        await self.start()
        while True:
            if self._closed and self._queue.empty():
                raise StopAsyncIteration
            entry = await self._queue.get()
            if entry is None:
                raise StopAsyncIteration
            subject, data = entry
            try:
                item = decode_any(data, self._type)
            except msgspec.DecodeError as err:
                raise MT5DataError(f"undecodable {self._type.__name__} message: {err}") from None
            when = item.time_utc_ms
            if when < self._since_ms:
                continue  # stored in the margin before ``since``
            ident = _identity(item)
            last = self._last.get(subject)
            if last is not None and ident <= last:
                self.repeats += 1
                continue
            self._last[subject] = ident
            return item


def replay_since(since: Any, now_ms: int | None = None) -> int:
    """``since`` as UTC ms: epoch ms (int), a datetime, a timedelta back from now, or "10m"/"2h"/"30s"/"1d"."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    if isinstance(since, _dt.datetime):
        if since.tzinfo is None:
            raise ValueError("since: a datetime needs a timezone (UTC)")
        return int(since.timestamp() * 1000)
    if isinstance(since, _dt.timedelta):
        return now_ms - int(since.total_seconds() * 1000)
    if isinstance(since, (int, float)) and not isinstance(since, bool):
        return int(since)
    if isinstance(since, str):
        units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
        text = since.strip()
        if text and text[-1] in units:
            try:
                return now_ms - int(float(text[:-1]) * units[text[-1]] * 1000)
            except ValueError:
                pass
    raise ValueError(f"since: {since!r} (expected epoch ms, an aware datetime, a timedelta or '10m', '2h', ...)")
