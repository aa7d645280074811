"""Subscriptions as async iterators of decoded messages (the client's streams)."""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

import msgspec
import nats.errors

from mt5d.codec import decode_any
from mt5d.errors import MT5DataError

__all__ = ["Stream"]

T = TypeVar("T")


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
