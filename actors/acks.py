"""With JetStream on, "confirmed" means stored: the publisher's other confirmation strategy.

Every stored message (ticks, closed candles, account events) goes out with
``Nats-Msg-Id`` (its identity). At most ``max_in_flight`` messages wait for
their ack; an ack that says "error" sends them again (the duplicate window
drops what was stored already). One that does not come within ``ack_timeout``
sends them again under the same reply subject: the first ack that comes, of
any send, confirms them, so a slow stream (a starved cluster, a leader that
is catching up) is confirmed as soon as it answers. Given new reply subjects,
a stream slower than the timeout would be sent the same messages forever,
every ack one send too late. (The wait does not grow: an ack that is lost,
not late, is sent again after the same timeout.) Core
subscribers receive the same subjects as before: a stored publish is an
ordinary publish, some with a reply subject.

Stored messages form a chain: each carries ``Nats-Expected-Last-Msg-Id``, the
identity of the stored message sent before it, so the stream takes them only
in order. Publishes are pipelined, and when one fails (a node dies, the stream
elects a leader) the ones after it would otherwise be stored first, and the
failed one sent again behind them: seen as a tick stored after three newer
ones. With the chain, those after a failed one are refused too ("wrong last
msg ID") and all are sent again in their first order, each with its first
expectation; the server drops duplicates before it checks the expectation. A
message refused for a predecessor that is no longer outstanding (stored, then
another message after it) starts a chain instead of being refused forever. A
chain starts without an expectation: at the first send, after a reconnect
(the oldest unconfirmed batch goes first) and in a new lease term.

The chain also makes one ack enough for a run of messages: the stream stores
a message only after the one it expects, so the PubAck of a run's last
message (stored, or a duplicate of one stored earlier) says the whole run is
stored. Only the last message of each run a write sends carries a reply
subject: about one ack per poll cycle instead of one per tick (each ack is a
message nats-py parses and dispatches to a callback). A run ends where the
chain does not go on inside the write (a chain start).

The forming bar and the book are snapshots: published without a reply (the
last-value stream captures the forming bar), never awaited.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import anyio
import msgspec
from nats.errors import ConnectionClosedError

from mt5d.actors.messages import Batch
from mt5d.codec import Codec
from mt5d.subjects import Subjects

__all__ = ["StoredAcks", "Stored", "NotLeading", "LEASE_HEADER"]

log = logging.getLogger("mt5d.publisher")

# The hot standby's fencing token (the lease revision of the publishing leader).
LEASE_HEADER = "Mt5d-Lease"


class NotLeading(Exception):
    """The hot-standby lease is not ours (or past its deadline): nothing may be published."""


class Stored(NamedTuple):
    subject: str
    data: bytes
    msg_id: str | None  # None: not stored, not awaited (the forming bar)


class _Out(NamedTuple):
    """A stored message as sent: its place in the chain (a resend keeps both)."""

    order: int  # first-send order
    msg: Stored
    expect: str | None  # Nats-Expected-Last-Msg-Id: the stored message sent before it


WRONG_LAST_MSG_ID = b'"err_code":10070'


class _Pending(NamedTuple):
    run: tuple[_Out, ...]  # the reply subject's token stands for the whole run (see the module doc)
    deadline: float  # sent again then, under the same token


class StoredAcks:
    """Publish-and-ack bookkeeping of one connection; owned by the Publisher."""

    def __init__(self, *, nc, subjects: Subjects, codec: Codec, kinds: tuple[str, ...],
                 max_in_flight: int = 8192, ack_timeout: float = 5.0, fence=None) -> None:
        self._fence = fence  # hot standby: () -> bool, may this daemon publish now
        self._nc = nc
        self._subjects = subjects
        self._codec = codec
        self._kinds = frozenset(kinds)
        self._ticks = "tick" in kinds
        self._candles = "candle" in kinds
        self._max = max_in_flight
        self._timeout = ack_timeout
        self._pending: dict[int, _Pending] = {}  # token -> its run
        self._in_flight = 0  # messages in the pending runs
        self._refused: list[_Out] = []
        self._next = 0
        self._order = 0
        self._tail: str | None = None  # the chain's newest identity (None: the next one starts a chain)
        self._inbox = ""
        self._inbox_b = b""
        self._broken = False
        self._sub = None
        self._changed = anyio.Event()
        self._fast = hasattr(nc, "_send_command") and hasattr(nc, "_flush_pending")
        self._subject_bytes: dict[str, bytes] = {}
        self._tick_subjects: dict[str, str] = {}  # symbol -> its tick subject (per tick, build() costs)
        self.lease = b""  # a header line set by the lease holder: fencing token on every message
        self.stored = 0
        self.duplicates = 0
        self.resent = 0
        self._refusal = ""  # the newest refusal's reason, for the log

    async def start(self) -> None:
        self._inbox = self._nc.new_inbox()
        self._inbox_b = self._inbox.encode()
        self._sub = await self._nc.subscribe(f"{self._inbox}.*", cb=self._on_ack,
                                             pending_msgs_limit=4 * self._max + 1024)

    def messages(self, batch: Batch) -> list[Stored]:
        enc, subj, tick_subjects = self._codec.encode, self._subjects, self._tick_subjects
        out = []
        for t in batch.ticks:  # the tick's identity: symbol, millisecond, position in it
            subject = tick_subjects.get(t.symbol) or tick_subjects.setdefault(t.symbol, subj.tick(t.symbol))
            out.append(Stored(subject, enc(t),
                              f"{t.symbol}:{t.time_msc_broker}:{t.index_in_ms}" if self._ticks else None))
        for c in batch.candles:
            out.append(Stored(subj.candle(c.symbol, c.timeframe), enc(c),
                              f"{c.symbol}:{c.timeframe}:{c.time_broker}" if self._candles else None))
        for c in batch.forming:
            out.append(Stored(subj.candle_forming(c.symbol, c.timeframe), enc(c), None))
        for b in batch.books:  # a snapshot too: not stored
            out.append(Stored(subj.book(b.symbol), enc(b), None))
        for kind, symbol, m in batch.account:  # account tracking: account/position/order/deal
            subject = subj.account_state() if kind == "account" else getattr(subj, kind)(symbol)
            # A deal is itself (its ticket); an event is this run's (epoch, seq) of it.
            msg_id = f"deal:{m.ticket}" if kind == "deal" else f"{kind}:{m.epoch}:{m.seq}"
            out.append(Stored(subject, enc(m), msg_id if kind in self._kinds else None))
        return out

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def send(self, msgs: list[Stored]) -> None:
        """Publish, within the in-flight bound (waits for acks to make room)."""
        out, order, tail = [], self._order, self._tail
        append, new = out.append, tuple.__new__  # (the namedtuple's own __new__ costs more per tick)
        for m in msgs:  # the chain: each stored message expects the one before it
            if m.msg_id is not None:
                order += 1
                append(new(_Out, (order, m, tail)))
                tail = m.msg_id
            else:
                append(new(_Out, (0, m, None)))
        self._order, self._tail = order, tail
        await self._send(out)

    async def _send(self, out: list[_Out]) -> None:
        i = 0
        while i < len(out):
            room = self._max - self._in_flight
            if room <= 0:
                await self._wait(lambda: self._in_flight < self._max)
                continue
            chunk = out[i:i + room]
            await self._emit(chunk, self._run_ends(chunk))
            i += room

    async def settle(self) -> None:
        """Return once everything sent is stored; refused and timed-out messages are sent again."""
        while self._pending or self._refused:
            if self._refused:
                again, self._refused = sorted(self._refused), []  # in their first order
                log.warning("messages refused by JetStream; sending them again",
                            extra={"messages": len(again), "reason": self._refusal})
                await anyio.sleep(0.2)  # not a hot loop against a stream that refuses for a while
                self.resent += len(again)
                await self._send(again)
            if self._pending:
                await self._wait(lambda: not self._pending or bool(self._refused))

    def on_disconnected(self) -> None:
        """Acks of what is pending may never come: whoever waits for them gives up now."""
        self._broken = True
        self._poke()

    def new_chain(self) -> None:
        """The next stored message starts a chain (a new lease term: another leader published
        in between, so this daemon's last identity is not the stream's)."""
        self._tail = None

    def restart(self) -> None:
        """Before the publisher sends every unconfirmed batch again: forget what was pending."""
        self._pending.clear()
        self._in_flight = 0
        self._refused.clear()
        self.new_chain()  # the oldest unconfirmed batch goes first
        self._broken = False

    async def _wait(self, done) -> None:
        while not done():
            if self._broken or not self._nc.is_connected:
                raise ConnectionClosedError
            now = anyio.current_time()
            left = min(p.deadline for p in self._pending.values()) - now if self._pending else self._timeout
            if left <= 0:
                await self._resend_late(now)
                continue
            changed = self._changed
            with anyio.move_on_after(left):
                await changed.wait()

    async def _resend_late(self, now: float) -> None:
        """Runs whose ack is late go again under their own token, in their first order."""
        late = sorted((p.run[0].order, token) for token, p in self._pending.items() if p.deadline <= now)
        msgs: list[_Out] = []
        tokens: dict[int, int] = {}  # each run's last message carries its token
        for _, token in late:
            p = self._pending[token]
            self._pending[token] = _Pending(p.run, now + self._timeout)
            self.resent += len(p.run)
            msgs.extend(p.run)
            tokens[len(msgs) - 1] = token
        log.warning("JetStream acks did not come in time; sending again, same reply subjects",
                    extra={"messages": len(msgs)})
        await self._emit(msgs, tokens, tokens)

    def _poke(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def _on_ack(self, msg) -> None:
        try:
            token = int(msg.subject[len(self._inbox) + 1:])
        except ValueError:
            return
        entry = self._pending.pop(token, None)
        if entry is None:
            return  # the other send's ack (a timed-out run went twice), or one from before a restart
        run, data = entry.run, msg.data
        self._in_flight -= len(run)
        if not data or b'"error"' in data:  # no data: a 503 status (no stream took it)
            first = run[0]
            if WRONG_LAST_MSG_ID in data and not self._outstanding(first.expect):
                # Its predecessor is not ours to send any more (stored, with another message
                # after it): start a chain here rather than be refused forever.
                run = (first._replace(expect=None), *run[1:])
            self._refused.extend(run)
            self._refusal = _reason(data)
        else:
            self.stored += len(run)  # the whole run: the chain stored it in order
            if b'"duplicate":true' in data:
                self.duplicates += 1  # (of the run's last: those before it are not told apart)
        self._poke()

    def _outstanding(self, msg_id: str | None) -> bool:
        """Whether ``msg_id`` waits for its ack or for a resend (rare: on a wrong-last refusal)."""
        return any(o.msg.msg_id == msg_id for p in self._pending.values() for o in p.run) or \
            any(o.msg.msg_id == msg_id for o in self._refused)

    @staticmethod
    def _run_ends(msgs: list[_Out]) -> set[int]:
        """Indexes of the stored messages that get a reply: each run's last (see the module doc)."""
        ends, prev = set(), None
        for i, o in enumerate(msgs):
            if o.msg.msg_id is None:
                continue
            if prev is not None and o.expect != msgs[prev].msg.msg_id:
                ends.add(prev)  # the chain does not go on from prev inside this write
            prev = i
        if prev is not None:
            ends.add(prev)
        return ends

    def _track(self, run: list[_Out], now: float) -> int:
        self._next += 1
        self._pending[self._next] = tuple.__new__(_Pending, (tuple(run), now + self._timeout))
        self._in_flight += len(run)
        run.clear()
        return self._next

    async def _emit(self, msgs: list[_Out], ends, tokens: dict[int, int] | None = None) -> None:
        """The messages as HPUB/PUB lines; the last of each run (``ends``) carries the reply
        subject of its run's token: a new one, or ``tokens``' (a late run sent again)."""
        if self._fence is not None and not self._fence():
            raise NotLeading  # a resend too: a daemon that lost its lease sends nothing
        nc = self._nc
        if nc.is_closed or not nc.is_connected or nc.is_draining_pubs:
            raise ConnectionClosedError  # never buffer while disconnected: the batch is held instead
        now = anyio.current_time()
        inbox, inbox_b, lease = self._inbox, self._inbox_b, self.lease
        run: list[_Out] = []
        if not self._fast:
            for i, out in enumerate(msgs):
                m, reply, headers = out.msg, "", {}
                if m.msg_id is not None:
                    if tokens is None:
                        run.append(out)
                    if i in ends:
                        reply = f"{inbox}.{tokens[i] if tokens else self._track(run, now)}"
                    headers["Nats-Msg-Id"] = m.msg_id
                    if out.expect is not None:
                        headers["Nats-Expected-Last-Msg-Id"] = out.expect
                if lease:
                    k, _, v = lease.decode().strip().partition(": ")
                    headers[k] = v
                await nc.publish(m.subject, m.data, reply=reply, headers=headers or None)
            return
        # One write into nats-py's buffer: the HPUB lines publish() would write, minus its per-call cost.
        cache, parts = self._subject_bytes, []
        append = parts.append
        for i, out in enumerate(msgs):
            _, m, expect = out
            subject, data, msg_id = m
            sb = cache.get(subject)
            if sb is None:
                sb = cache[subject] = subject.encode()
            if msg_id is None:
                if not lease:
                    append(b"PUB %b %d\r\n%b\r\n" % (sb, len(data), data))
                    continue
                hdr = b"NATS/1.0\r\n%b\r\n" % lease
                target = sb
            else:
                if tokens is None:
                    run.append(out)
                if i in ends:
                    target = b"%b %b.%d" % (sb, inbox_b, tokens[i] if tokens else self._track(run, now))
                else:
                    target = sb
                hdr = (b"NATS/1.0\r\n%bNats-Msg-Id: %b\r\n\r\n" % (lease, msg_id.encode()) if expect is None else
                       b"NATS/1.0\r\n%bNats-Msg-Id: %b\r\nNats-Expected-Last-Msg-Id: %b\r\n\r\n"
                       % (lease, msg_id.encode(), expect.encode()))
            append(b"HPUB %b %d %d\r\n%b%b\r\n" % (target, len(hdr), len(hdr) + len(data), hdr, data))
        blob = b"".join(parts)
        nc.stats["out_msgs"] += len(msgs)
        nc.stats["out_bytes"] += len(blob)
        await nc._send_command(blob)
        await nc._flush_pending()


def _reason(data: bytes) -> str:
    """A refusal's description (a PubAck error), or what there was of it."""
    if not data:
        return "no responders (503)"
    try:
        err = msgspec.json.decode(data).get("error") or {}
        return f"{err.get('description', '')} ({err.get('err_code', '')})"
    except (msgspec.DecodeError, AttributeError):
        return data[:200].decode(errors="replace")
