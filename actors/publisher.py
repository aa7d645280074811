"""The publisher: the only writer of stream subjects on the NATS connection.

A batch is published and then confirmed with a flush (one PING/PONG round
trip: the server has everything before it). While NATS is down the publisher
holds the batch and takes no new one, so the poller blocks and the terminal's
own tick history buffers the outage; a batch cut by a disconnect is sent again
whole when the connection is back (with ``msg_id`` on, JetStream drops the
repeats).
"""

from __future__ import annotations

import logging

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream
from nats.errors import ConnectionClosedError, FlushTimeoutError, OutboundBufferLimitError

from actors.messages import Batch
from schemas.codec import Codec
from schemas.market import HealthEvent
from schemas.subjects import Subjects

__all__ = ["Publisher"]

log = logging.getLogger("mt5d.publisher")

_RETRYABLE = (ConnectionClosedError, FlushTimeoutError, OutboundBufferLimitError, OSError, TimeoutError)


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
        msg_id: bool = False,
    ) -> None:
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
        self.published = 0
        self.candles_published = 0

    # nats-py connection callbacks (registered by the app)
    async def on_disconnected(self) -> None:
        if self._up.is_set():
            self._up = anyio.Event()
            log.warning("NATS connection lost; holding the stream until it is back")

    async def on_reconnected(self) -> None:
        self._up.set()
        log.info("NATS connection back; publishing the gap")

    async def run(self, *, task_status: TaskStatus = anyio.TASK_STATUS_IGNORED) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._health_loop)
            task_status.started()
            async for batch in self._batches:
                await self._publish_batch(batch)

    def _messages(self, batch: Batch) -> list[tuple[str, bytes, dict | None]]:
        enc, subj = self._codec.encode, self._subjects
        msgs = []
        for t in batch.ticks:
            hdr = None
            if self._msg_id:
                hdr = {"Nats-Msg-Id": f"{t.symbol}:{t.time_msc_broker}:{t.bid}:{t.ask}:{t.last}:{t.flags}"}
            msgs.append((subj.tick(t.symbol), enc(t), hdr))
        for c in batch.candles:
            hdr = {"Nats-Msg-Id": f"{c.symbol}:{c.timeframe}:{c.time_broker}"} if self._msg_id else None
            msgs.append((subj.candle(c.symbol, c.timeframe), enc(c), hdr))
        for c in batch.forming:
            msgs.append((subj.candle_forming(c.symbol, c.timeframe), enc(c), None))
        return msgs

    async def _publish_batch(self, batch: Batch) -> None:
        msgs = self._messages(batch)
        publish = self._nc.publish
        while True:
            await self._up.wait()
            try:
                for subject, data, headers in msgs:
                    await publish(subject, data, headers=headers)
                await self._nc.flush(timeout=self._flush_timeout)
            except _RETRYABLE as err:
                log.warning("batch not confirmed by NATS; will send it again",
                            extra={"error": type(err).__name__, "messages": len(msgs)})
                if self._nc.is_connected:  # e.g. a flush timeout on a live link: retry soon
                    await anyio.sleep(0.1)
                else:
                    await self.on_disconnected()
                continue
            self.published += len(batch.ticks)
            self.candles_published += len(batch.candles)
            return

    async def _health_loop(self) -> None:
        subject = self._subjects.health()
        async for event in self._health:
            if not self._nc.is_connected:
                continue  # health is a snapshot: a newer one follows
            try:
                await self._nc.publish(subject, self._codec.encode(event))
            except _RETRYABLE:
                pass
