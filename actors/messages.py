"""What actors send each other (in-process only; never on the wire)."""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio

from mt5d.market import Candle, Tick

__all__ = ["Batch", "send"]


async def send(stream, item) -> None:
    """``stream.send(item)``, without its yield to the loop when there is room (anyio's send
    always yields: one event-loop pass per message, per poll cycle)."""
    try:
        stream.send_nowait(item)
    except anyio.WouldBlock:
        await stream.send(item)  # full: wait (the publisher holds batches while NATS is down)


@dataclass(slots=True)
class Batch:
    """Everything one poll cycle found: one channel send per cycle."""

    ticks: list[Tick] = field(default_factory=list)
    candles: list[Candle] = field(default_factory=list)
    forming: list[Candle] = field(default_factory=list)
    # Where capture stands once this batch is out: saved when NATS confirms it.
    cursors: dict = field(default_factory=dict)  # symbol -> TickCursor
    bars: dict = field(default_factory=dict)  # (symbol, timeframe) -> last closed bar time
    books: list = field(default_factory=list)  # mt5d.book.Book snapshots that changed
    # Account tracking (actors.account): (kind, symbol, struct) in publishing order, and
    # the newest deal among them as (time_msc, ticket), saved when NATS confirms it.
    account: list = field(default_factory=list)
    deal_cursor: tuple | None = None
    # Hot standby: the lease term the poller held when it made this batch (0: no HA).
    term: int = 0
