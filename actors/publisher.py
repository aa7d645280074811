"""The publisher: the only writer of stream subjects on the NATS connection.

Batches are published as they come and confirmed with a flush (one PING/PONG
round trip: the server has everything sent before it) at most every
``confirm_interval`` and whenever the stream pauses. Until confirmed, a batch
is kept; while NATS is down the publisher takes no new batch, so the poller
blocks and the terminal's own tick history buffers the outage. Unconfirmed
batches are sent again when the connection is back (with ``msg_id`` on,
JetStream drops the repeats: the id is symbol, millisecond and position in it).

With JetStream on, confirmation is the other strategy, ``actors.acks.StoredAcks``:
a batch counts once the stream acknowledged each of its messages.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, NamedTuple

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream
from nats.errors import ConnectionClosedError, FlushTimeoutError, OutboundBufferLimitError

from mt5d.actors.acks import NotLeading
from mt5d.actors.messages import Batch
from mt5d.daemon.telemetry import Telemetry
from mt5d.codec import Codec
from mt5d.market import HealthEvent
from mt5d.subjects import Subjects

__all__ = ["Publisher"]

log = logging.getLogger("mt5d.publisher")

_RETRYABLE = (ConnectionClosedError, FlushTimeoutError, OutboundBufferLimitError, OSError, TimeoutError)


class _Messages(NamedTuple):
    count: int
    blob: bytes | None  # the fast path: PUB lines, written as one
    items: list | None  # else (subject, payload, headers) for nc.publish


class Publisher:
    def __init__(
        self,
        *,
        nc,
        subjects: Subjects,
        codec: Codec,
        batches: MemoryObjectReceiveStream[Batch],
        health: MemoryObjectReceiveStream[HealthEvent],
        flush_timeout: float = 2.0,
        confirm_interval: float = 0.1,
        msg_id: bool = False,
        state=None,  # actors.state.StateFile: where capture stands, saved as NATS confirms
        telemetry: Telemetry | None = None,
        wall_clock: Callable[[], float] = time.time,
        stored=None,  # actors.acks.StoredAcks: JetStream on, "confirmed" means stored
        lease=None,  # actors.lease.Lease: hot standby, only its holder publishes
    ) -> None:
        self._stored = stored
        self._lease = lease
        self.dropped_not_leading = 0
        self._tel = telemetry or Telemetry.disabled()
        self._wall = wall_clock
        self._sent_at: list[tuple[float, float]] = []  # (perf_counter, wall ms) per unconfirmed batch
        self._nc = nc
        self._subjects = subjects
        self._codec = codec
        self._batches = batches
        self._health = health
        self._flush_timeout = flush_timeout
        self._msg_id = msg_id
        self._up = anyio.Event()
        if nc.is_connected:
            self._up.set()
        self._confirm_interval = confirm_interval
        self._state = state
        self._saved_at = 0.0
        self._fast = hasattr(nc, "_send_command") and hasattr(nc, "_flush_pending")
        self._tick_heads: dict[str, bytes] = {}  # symbol -> b"PUB <tick subject> "
        self._unconfirmed: list[tuple[Batch, _Messages]] = []
        self._confirmed_at = 0.0
        self.published = 0  # confirmed by the server
        self.candles_published = 0

    # nats-py connection callbacks (registered by the app)
    async def on_disconnected(self) -> None:
        if self._stored is not None:
            self._stored.on_disconnected()
        if self._up.is_set():
            self._up = anyio.Event()
            log.warning("NATS connection lost; holding the stream until it is back")

    async def on_reconnected(self) -> None:
        self._up.set()
        log.info("NATS connection back; publishing the gap")

    async def run(self, *, task_status: TaskStatus = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            await self._run(task_status)
        finally:
            if self._state is not None:
                # A clean stop confirms what was sent, so the next start repeats nothing.
                with anyio.move_on_after(2, shield=True):
                    if self._unconfirmed and self._nc.is_connected:
                        try:
                            if self._stored is not None:
                                await self._stored.settle()
                            else:
                                await self._nc.flush(timeout=2)
                            for batch, _ in self._unconfirmed:
                                self._state.confirmed(batch.cursors, batch.bars, batch.deal_cursor)
                        except (*_RETRYABLE, NotLeading):
                            pass  # not confirmed: the next start (or leader) sends them again
                self._state.save()

    async def _run(self, task_status: TaskStatus) -> None:
        if self._stored is not None:
            await self._stored.start()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._health_loop)
            task_status.started()
            while True:
                # Confirm what was sent at most every confirm_interval, and at once when the stream pauses.
                batch = None
                if self._unconfirmed:
                    with anyio.move_on_after(self._confirm_interval - (anyio.current_time() - self._confirmed_at)):
                        batch = await self._batches.receive()
                else:
                    batch = await self._batches.receive()
                if batch is not None and self._lease is not None and (
                        batch.term != self._lease.term or not self._lease.may_publish()):
                    self.dropped_not_leading += len(batch.ticks)  # the leader publishes these
                    batch = None
                    continue
                if batch is not None:
                    msgs = self.encode_batch(batch)
                    self._unconfirmed.append((batch, msgs))
                    self._sent_at.append((time.perf_counter(), self._wall() * 1000))
                    if not await self._send(msgs):
                        await self._recover()
                if self._unconfirmed and (batch is None or
                                          anyio.current_time() - self._confirmed_at >= self._confirm_interval):
                    await self._confirm()

    def encode_batch(self, batch: Batch) -> _Messages:
        """A batch encoded as what is sent, without sending it (no I/O; ``mt5d bench`` times it):
        in the fast path already as PUB protocol lines, one blob; else (subject, payload,
        headers) items (JetStream on: the StoredAcks strategy's, each with its identity)."""
        if self._stored is not None:
            stored = self._stored.messages(batch)
            return _Messages(len(stored), None, stored)
        if self._fast and not self._msg_id:
            n = len(batch.ticks) + len(batch.candles) + len(batch.forming) + len(batch.books) + len(batch.account)
            return _Messages(n, self._blob(batch), None)
        enc, subj = self._codec.encode, self._subjects
        msgs = []
        for t in batch.ticks:
            hdr = None
            if self._msg_id:  # the tick's identity: symbol, millisecond, position in it
                hdr = {"Nats-Msg-Id": f"{t.symbol}:{t.time_msc_broker}:{t.index_in_ms}"}
            msgs.append((subj.tick(t.symbol), enc(t), hdr))
        for c in batch.candles:
            hdr = {"Nats-Msg-Id": f"{c.symbol}:{c.timeframe}:{c.time_broker}"} if self._msg_id else None
            msgs.append((subj.candle(c.symbol, c.timeframe), enc(c), hdr))
        for c in batch.forming:
            msgs.append((subj.candle_forming(c.symbol, c.timeframe), enc(c), None))
        for b in batch.books:
            msgs.append((subj.book(b.symbol), enc(b), None))
        for kind, symbol, m in batch.account:  # account tracking: account/position/order/deal
            hdr = {"Nats-Msg-Id": f"deal:{m.ticket}"} if self._msg_id and kind == "deal" else None
            msgs.append((self._account_subject(kind, symbol), enc(m), hdr))
        return _Messages(len(msgs), None, msgs)

    def _account_subject(self, kind: str, symbol: str) -> str:
        return self._subjects.account_state() if kind == "account" else getattr(self._subjects, kind)(symbol)

    def _blob(self, batch: Batch) -> bytes:
        """The same PUB lines ``nc.publish`` writes, for a whole batch in one pass
        (per tick: one encode and one line; ~2 µs of Python per message less)."""
        enc, heads, parts = self._codec.encode, self._tick_heads, []
        append = parts.append
        symbol, head = None, b""
        for t in batch.ticks:  # grouped by symbol: one subject lookup per symbol
            if t.symbol != symbol:
                symbol = t.symbol
                head = heads.get(symbol)
                if head is None:
                    head = heads[symbol] = b"PUB %b " % self._subjects.tick(symbol).encode()
            data = enc(t)
            append(b"%b%d\r\n%b\r\n" % (head, len(data), data))
        subj = self._subjects
        for c in batch.candles:
            data = enc(c)
            append(b"PUB %b %d\r\n%b\r\n" % (subj.candle(c.symbol, c.timeframe).encode(), len(data), data))
        for c in batch.forming:
            data = enc(c)
            append(b"PUB %b %d\r\n%b\r\n" % (subj.candle_forming(c.symbol, c.timeframe).encode(), len(data), data))
        for b in batch.books:
            data = enc(b)
            append(b"PUB %b %d\r\n%b\r\n" % (subj.book(b.symbol).encode(), len(data), data))
        for kind, symbol, m in batch.account:
            data = enc(m)
            append(b"PUB %b %d\r\n%b\r\n" % (self._account_subject(kind, symbol).encode(), len(data), data))
        return b"".join(parts)

    async def _send(self, msgs: _Messages) -> bool:
        if not self._up.is_set():  # (wait() on a set event still yields to the loop)
            await self._up.wait()
        try:
            if self._stored is not None:
                try:
                    await self._stored.send(msgs.items)
                except NotLeading:
                    self._not_leading()
                    return True
            elif msgs.blob is not None:
                await self._send_blob(msgs.blob, msgs.count)
            else:
                publish = self._nc.publish
                for subject, data, headers in msgs.items:
                    await publish(subject, data, headers=headers)
        except _RETRYABLE as err:
            self._lost(err)
            return False
        return True

    async def _send_blob(self, blob: bytes, count: int) -> None:
        """A whole batch as one write into nats-py's outgoing buffer.

        Uses the client's internal ``_send_command``; ``_fast`` is only set when
        it exists, else every message goes through ``publish``.
        """
        nc = self._nc
        # Like publish(): never buffer while disconnected (we hold the batch
        # instead); when connected, a buffer over pending_size is written at once.
        if nc.is_closed or not nc.is_connected or nc.is_draining_pubs:
            raise ConnectionClosedError
        nc.stats["out_msgs"] += count
        nc.stats["out_bytes"] += len(blob)
        await nc._send_command(blob)
        await nc._flush_pending()

    async def _confirm(self) -> None:
        """One PING/PONG: the server has everything sent before it (or, JetStream on, every ack)."""
        while True:
            try:
                if self._stored is not None:
                    try:
                        await self._stored.settle()
                    except NotLeading:
                        self._not_leading()
                        return
                else:
                    await self._nc.flush(timeout=self._flush_timeout)
            except _RETRYABLE as err:
                self._lost(err)
                await self._recover()
                continue
            now = time.perf_counter()
            for (batch, msgs), (sent, sent_wall_ms) in zip(self._unconfirmed, self._sent_at):
                self.published += len(batch.ticks)
                self.candles_published += len(batch.candles)
                # publish -> confirmed, and the newest tick's age when it was sent
                self._tel.batch_published(batch, now - sent, msgs.count, now_ms=sent_wall_ms)
            if self._state is not None:
                urgent = False
                for batch, _ in self._unconfirmed:
                    urgent |= self._state.confirmed(batch.cursors, batch.bars, batch.deal_cursor)
                # A confirmed deal or a newly tracked bar is saved at once: a restart must
                # neither publish the deal again nor lose a bar that closes while it is down.
                if urgent or anyio.current_time() - self._saved_at >= 1.0:
                    self._state.save()
                    self._saved_at = anyio.current_time()
            self._unconfirmed.clear()
            self._sent_at.clear()
            self._confirmed_at = anyio.current_time()
            return

    async def _recover(self) -> None:
        """Send every unconfirmed batch again once NATS is back (JetStream drops repeats by Nats-Msg-Id)."""
        while True:
            if self._nc.is_connected:
                await anyio.sleep(0.1)  # e.g. a flush timeout on a live link: try again soon
            else:
                await self.on_disconnected()
            if self._stored is not None:
                await self._up.wait()
                self._stored.restart()
            if all([await self._send(msgs) for _, msgs in self._unconfirmed]):
                return

    def _not_leading(self) -> None:
        """The lease is gone: what was not stored yet is the next leader's to publish."""
        self.dropped_not_leading += sum(len(b.ticks) for b, _ in self._unconfirmed)
        self._unconfirmed.clear()
        self._sent_at.clear()
        self._stored.restart()
        log.warning("not leading: unconfirmed batches left to the leader")

    def _lost(self, err: Exception) -> None:
        n = sum(msgs.count for _, msgs in self._unconfirmed)
        log.warning("messages not confirmed by NATS; they will be sent again",
                    extra={"error": type(err).__name__, "messages": n})

    async def _health_loop(self) -> None:
        subject = self._subjects.health()
        async for event in self._health:
            if not self._nc.is_connected:
                continue  # health is a snapshot: a newer one follows
            try:
                await self._nc.publish(subject, self._codec.encode(event))
            except _RETRYABLE:
                pass
