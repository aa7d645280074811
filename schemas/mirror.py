"""TerminalState: a local mirror of the account's positions, orders and figures, kept by the streams.

The rule that keeps it exact (no change falls between snapshot and stream):

1. subscribe to the position, order and account streams first (events queue up);
2. then take the ``positions`` and ``orders`` snapshots: each reply says which
   state it shows (``epoch`` = the daemon run, ``seq`` = the last message of
   that run it includes);
3. then apply only events of the same epoch with a higher ``seq`` (older ones
   are already in the snapshot), in arrival order.

An event of another epoch (mt5d restarted: its counter starts again) makes the
mirror take fresh snapshots, by the same rule.

    state = TerminalState(client)
    state.on_position = lambda ev: print(ev.event, ev.position.ticket)
    async with state:
        ...  # state.positions, state.orders, state.account are current
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from mt5d.account import AccountSnapshot, Deal, Order, OrderEvent, Position, PositionEvent
from mt5d.codec import decode_any

__all__ = ["TerminalState"]

_GONE = ("filled", "cancelled", "expired", "rejected")


class TerminalState:
    def __init__(self, client) -> None:
        self._client = client
        self.positions: dict[int, Position] = {}
        self.orders: dict[int, Order] = {}
        self.account: AccountSnapshot | None = None
        self.epoch = 0
        self.seq = 0  # the newest message of this epoch received (any kind)
        self._pos_seq = self._ord_seq = self._acct_seq = 0
        self._queue: asyncio.Queue = asyncio.Queue()
        self._subs: list = []
        self._task: asyncio.Task | None = None
        self.synced = asyncio.Event()
        self.resyncs = 0
        # listeners, called after the mirror applied the event
        self.on_position: Callable[[PositionEvent], Any] | None = None
        self.on_order: Callable[[OrderEvent], Any] | None = None
        self.on_account: Callable[[AccountSnapshot], Any] | None = None
        self.on_deal: Callable[[Deal], Any] | None = None

    async def start(self) -> "TerminalState":
        nc, subj = self._client._stream_nc(), self._client.subjects
        kinds = ((subj.all_positions(), PositionEvent), (subj.all_orders(), OrderEvent),
                 (subj.account_state(), AccountSnapshot), (subj.all_deals(), Deal))
        for subject, typ in kinds:
            async def cb(msg, typ=typ):
                self._queue.put_nowait(decode_any(msg.data, typ))

            self._subs.append(await nc.subscribe(subject, cb=cb))
        await nc.flush()
        await nc.flush()  # twice: nats-py's PING can overtake SUBs still in its buffer
        await self._snapshot()
        self._task = asyncio.ensure_future(self._run())
        return self

    async def _snapshot(self) -> None:
        pos = await self._client.fetch_positions()
        orders = await self._client.fetch_orders()
        self.positions = {p.ticket: p for p in pos.positions}
        self.orders = {o.ticket: o for o in orders.orders}
        self.epoch = pos.epoch
        self._pos_seq, self._ord_seq = pos.seq, orders.seq
        self.seq = max(pos.seq, orders.seq)
        if orders.epoch != pos.epoch:  # mt5d restarted between the two: again
            self.resyncs += 1
            await self._snapshot()
            return
        self.synced.set()

    async def _run(self) -> None:
        while True:
            msg = await self._queue.get()
            if msg.epoch != self.epoch:
                if msg.epoch < self.epoch:
                    continue  # a straggler of a previous run
                self.resyncs += 1
                await self._snapshot()
                if msg.epoch != self.epoch:
                    continue
            self.apply(msg)

    def apply(self, msg) -> None:
        """One stream message (already known to be of this epoch)."""
        self.seq = max(self.seq, msg.seq)
        if isinstance(msg, PositionEvent):
            if msg.seq <= self._pos_seq:
                return
            self._pos_seq = msg.seq
            if msg.event == "closed":
                self.positions.pop(msg.position.ticket, None)
            else:
                self.positions[msg.position.ticket] = msg.position
            self._call(self.on_position, msg)
        elif isinstance(msg, OrderEvent):
            if msg.seq <= self._ord_seq:
                return
            self._ord_seq = msg.seq
            if msg.event in _GONE:
                self.orders.pop(msg.order.ticket, None)
            else:
                self.orders[msg.order.ticket] = msg.order
            self._call(self.on_order, msg)
        elif isinstance(msg, AccountSnapshot):
            if msg.seq > self._acct_seq:
                self._acct_seq = msg.seq
                self.account = msg
                self._call(self.on_account, msg)
        elif isinstance(msg, Deal):
            self._call(self.on_deal, msg)

    @staticmethod
    def _call(listener, arg) -> None:
        if listener is not None:
            listener(arg)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        for sub in self._subs:
            try:
                await sub.unsubscribe()
            except Exception:  # noqa: BLE001 - the connection may be closed already
                pass
        self._subs.clear()

    async def __aenter__(self) -> "TerminalState":
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.close()
