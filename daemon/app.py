"""Wiring: build the actors and their channels, run them under the supervisor."""

from __future__ import annotations

import gc
import logging
import time
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Callable

import anyio
import msgspec

from mt5d.actors.account import AccountTracker
from mt5d.actors.logic.breaker import BreakerPolicy
from mt5d.actors.books import Books
from mt5d.actors.connection import AuthGaveUp, Connection, Credentials, StateChange
from mt5d.actors.health import Health
from mt5d.actors.messages import Batch
from mt5d.actors.poller import Poller, sleep_until_monotonic
from mt5d.actors.prices import PriceCache
from mt5d.actors.publisher import Publisher
from mt5d.actors.state import StateFile
from mt5d.actors.logic.utc import UtcOffset
from mt5d.daemon.config import Config, parse_offset, state_directory
from mt5d.daemon.nats_link import connect_nats
from mt5d.daemon.supervisor import Supervisor
from mt5d.daemon.telemetry import Telemetry
from mt5d.daemon.terminal.backends import RpycTerminal, native_module, sim_terminal
from mt5d.codec import Codec
from mt5d.market import HealthEvent
from mt5d.subjects import Subjects

__all__ = ["Daemon", "settle_gc"]

log = logging.getLogger("mt5d.daemon")


def settle_gc() -> None:
    """Once the daemon is up: what exists now lives as long as the process, so
    the collector stops walking it (``gc.freeze``); a full collection then
    costs microseconds instead of a pause of milliseconds in the stream.
    Called by the process owner (``mt5d run``), never per ``Daemon``."""
    gc.collect()
    gc.freeze()


def open_terminal(cfg: Config, *, clock: Callable[[], float] = time.time, password: str | None = None) -> Any:
    """The terminal the config names; the backends themselves take plain values."""
    term = cfg.terminal
    if term.backend == "sim":
        sim = term.sim
        return sim_terminal(
            seed=sim.seed, ticks_per_second=sim.ticks_per_second, synthetic_symbols=sim.synthetic_symbols,
            faults=tuple((f.kind, f.at, f.duration) for f in sim.faults), login=term.login or 10001234,
            password=password, server=term.server or "MT5Sim-Demo", broker_tz=sim.broker_tz, clock=clock,
            book_depth=dict(sim.book_depth),
            account_mode=sim.account_mode, balance=sim.balance, leverage=sim.leverage,
            commission_per_lot=sim.commission_per_lot, fill_volume=sim.fill_volume,
            trade_allowed=sim.trade_allowed, trades=[msgspec.structs.asdict(t) for t in sim.trades])
    if term.backend == "native":
        return native_module()
    return RpycTerminal(term.rpyc_host, term.rpyc_port, request_timeout=term.operation_timeout + 5.0)


@dataclass
class Daemon:
    """One daemon: ``await daemon.run()`` until cancelled; pieces exposed for tests and the bench."""

    cfg: Config
    secrets: dict = field(default_factory=dict)
    notifier: Any = None
    wall_clock: Callable[[], float] = time.time
    module: Any = None  # the terminal (built from config when None)
    telemetry: Telemetry | None = None  # built from cfg.telemetry when None

    def __post_init__(self) -> None:
        cfg = self.cfg
        if self.module is None:
            pw = self.secrets.get("MT5_PASSWORD")
            self.module = open_terminal(cfg, clock=self.wall_clock, password=pw.reveal() if pw else None)
        login = cfg.terminal.login or (10001234 if cfg.terminal.backend == "sim" else 0)
        self.account = cfg.nats.account or str(login)
        self.subjects = Subjects(cfg.nats.prefix, self.account)
        if self.telemetry is None:
            self.telemetry = Telemetry.from_config(cfg.telemetry, account=self.account, prefix=cfg.nats.prefix)
        self.codec = Codec(cfg.nats.encoding)
        self.prices = PriceCache()
        self.books = Books(cfg.stream.books, cfg.stream.book_interval)
        self.supervisor = Supervisor(max_restarts=cfg.supervisor.max_restarts, window=cfg.supervisor.restart_window,
                                     fatal=(AuthGaveUp,))
        self._changes_send, self._changes_recv = anyio.create_memory_object_stream[StateChange](256)
        self._batches_send, self._batches_recv = anyio.create_memory_object_stream[Batch](cfg.stream.batch_buffer)
        self._health_send, self._health_recv = anyio.create_memory_object_stream[HealthEvent](64)
        b = cfg.breaker
        self.conn = Connection(
            module=self.module,
            credentials=Credentials(login=cfg.terminal.login, password=self.secrets.get("MT5_PASSWORD"),
                                    server=cfg.terminal.server, path=cfg.terminal.path),
            symbols=cfg.stream.symbols,
            policy=BreakerPolicy(max_failures=b.max_failures, backoff_base_seconds=b.backoff_base_seconds,
                                 backoff_max_seconds=b.backoff_max_seconds, jitter=b.jitter),
            connection_timeout=cfg.terminal.connection_timeout,
            operation_timeout=cfg.terminal.operation_timeout,
            events=self._changes_send,
            max_auth_failures=cfg.terminal.auth_retries,
            telemetry=self.telemetry,
            books=cfg.stream.books,
        )
        self.lease = None
        self._seeds: dict[int, tuple[dict, dict]] = {}
        self.rpc = None
        self._stored = None
        if cfg.ha.enabled:
            from mt5d.actors.lease import Lease

            self.lease = Lease(bucket=cfg.ha.bucket or f"mt5_{self.account}_lease", ttl=cfg.ha.ttl,
                               node=cfg.ha.node, replicas=cfg.jetstream.replicas,
                               takeover=self._takeover, on_change=self._role_changed)
        off = cfg.stream.server_utc_offset
        state_dir = state_directory(cfg)
        self.state = (StateFile(Path(state_dir) / f"capture-{self.account}.json",
                                max_gap=cfg.stream.resume_max_gap, clock=self.wall_clock)
                      if state_dir else None)
        resume = self.state.load() if self.state else ({}, {})
        acct = cfg.account
        self.tracker = (AccountTracker(interval=acct.interval, heartbeat=acct.heartbeat,
                                       epoch=int(self.wall_clock() * 1000),
                                       deal_cursor=self.state.deal_cursor if self.state else None)
                        if acct.enabled else None)
        self.poller = Poller(
            conn=self.conn, timeframes=cfg.stream.timeframes, out=self._batches_send, prices=self.prices,
            utc=UtcOffset(None if off == "auto" else parse_offset(off)),
            poll_interval=cfg.stream.poll_interval, idle_interval=cfg.stream.idle_poll_interval,
            wall_clock=self.wall_clock, forming_interval=cfg.stream.forming_interval, telemetry=self.telemetry,
            resume=resume, account=self.tracker,
            books=self.books if cfg.stream.books else None,
            gate=self._gate if self.lease is not None else None,
            start_at=sleep_until_monotonic,
        )
        self.health = Health(
            conn=self.conn, account=self.account, changes=self._changes_recv, out=self._health_send,
            interval=cfg.health.interval, stale_after=cfg.health.stale_after,
            last_tick_at=lambda: self.poller.last_tick_at, alive=self.supervisor.all_alive,
            notifier=self.notifier, wall_clock=self.wall_clock,
            role=(lambda: (self.lease.role, self.lease.term)) if self.lease is not None else None,
        )
        self.publisher: Publisher | None = None
        self.nc = None
        self.js = None
        self.streams: list[str] = []  # the JetStream streams provisioned (main, last value)

    # -- hot standby ---------------------------------------------------------------
    async def _gate(self) -> tuple[int, tuple[dict, dict] | None]:
        """The poller's gate: returns while this daemon leads, with the takeover's cursors once per term."""
        term = await self.lease.wait_leading()
        return term, self._seeds.pop(term, None)

    async def _takeover(self, term: int) -> None:
        """Cursors at the stream's last stored message per subject: the new leader goes on from there.

        Read from the stream leader (STREAM.MSG.GET), not by Direct Get: any replica answers a
        Direct Get, and one still recovering (after a cluster restart) may say "none" for a
        subject that has messages, which would start that symbol from its newest tick: a gap."""
        import nats.js.errors

        from mt5d.actors.logic.cursor import TickCursor
        from mt5d.codec import decode_any
        from mt5d.market import Candle, Tick

        cfg, stream = self.cfg, self.streams[0]
        wanted: dict = {}
        if "tick" in cfg.jetstream.subjects:
            wanted.update({("tick", s): (self.subjects.tick(s), Tick) for s in cfg.stream.symbols})
        if "candle" in cfg.jetstream.subjects:
            wanted.update({("candle", (s, tf)): (self.subjects.candle(s, tf), Candle)
                           for s in cfg.stream.symbols for tf in cfg.stream.timeframes})
        found: dict = {}

        async def read(key, subject, typ) -> None:
            try:
                msg = await self.js.get_last_msg(stream, subject)
            except nats.js.errors.NotFoundError:
                return  # nothing stored yet: this symbol starts from its newest tick
            found[key] = decode_any(msg.data, typ)

        with anyio.fail_after(max(2.0, cfg.ha.ttl)):
            async with anyio.create_task_group() as tg:
                for key, (subject, typ) in wanted.items():
                    tg.start_soon(read, key, subject, typ)
        cursors = {k[1]: TickCursor(t.time_msc_broker, t.index_in_ms + 1) for k, t in found.items() if k[0] == "tick"}
        bars = {k[1]: c.time_broker for k, c in found.items() if k[0] == "candle"}
        self._seeds = {term: (cursors, bars)}
        log.info("taking over from the stream's last stored messages",
                 extra={"term": term, "symbols": len(cursors), "bars": len(bars)})

    def _role_changed(self, role: str, term: int) -> None:
        if self._stored is not None:
            from mt5d.actors.acks import LEASE_HEADER

            self._stored.lease = f"{LEASE_HEADER}: {term}\r\n".encode() if role == "leader" else b""
            self._stored.new_chain()  # another leader may have published since this one's last
        self.health.role_changed()
        if self.rpc is not None:
            self.rpc.role_changed()

    async def run(self, *, task_status=anyio.TASK_STATUS_IGNORED) -> None:
        cfg = self.cfg
        holder: dict[str, Publisher] = {}

        async def disconnected() -> None:
            # Closed is only ever our own stop (reconnects are unlimited): nothing is being held.
            if "p" in holder and not self.nc.is_closed:
                await holder["p"].on_disconnected()

        async def reconnected() -> None:
            self.telemetry.nats_reconnect()
            if "p" in holder:
                await holder["p"].on_reconnected()

        self.nc = await connect_nats(cfg.nats, secrets=self.secrets,
                                     on_disconnected=disconnected, on_reconnected=reconnected,
                                     name=f"mt5d {self.lease.node}" if self.lease is not None else "mt5d")
        if cfg.jetstream.enabled:
            from mt5d.daemon.jetstream import provision

            self.js = self.nc.jetstream(timeout=5.0)
            try:
                self.streams = await provision(self.js, cfg.jetstream, self.subjects)
            except BaseException:
                await self.nc.close()
                raise
        stored = None
        if cfg.jetstream.enabled:
            from mt5d.actors.acks import StoredAcks

            stored = self._stored = StoredAcks(
                nc=self.nc, subjects=self.subjects, codec=self.codec, kinds=cfg.jetstream.subjects,
                max_in_flight=cfg.jetstream.max_in_flight, ack_timeout=cfg.jetstream.ack_timeout,
                fence=self.lease.may_publish if self.lease is not None else None)
        self.publisher = holder["p"] = Publisher(
            nc=self.nc, subjects=self.subjects, codec=self.codec, batches=self._batches_recv,
            health=self._health_recv, msg_id=cfg.nats.msg_id, state=self.state,
            telemetry=self.telemetry, wall_clock=self.wall_clock, stored=stored, lease=self.lease,
        )
        try:
            async with anyio.create_task_group() as tg:
                sup = self.supervisor
                await tg.start(sup.child, "connection", self.conn.run)
                await tg.start(sup.child, "publisher", self.publisher.run)
                if self.lease is not None:
                    self.lease.js = self.js
                    await tg.start(sup.child, "lease", self.lease.run)
                await tg.start(sup.child, "poller", self.poller.run)
                await tg.start(sup.child, "health", self.health.run)
                if cfg.rpc.enabled:
                    from mt5d.actors.rpc import RpcService

                    self.rpc = RpcService(nc=self.nc, cfg=cfg, account=self.account, conn=self.conn,
                                          prices=self.prices, health=self.health, codec=self.codec,
                                          utc=self.poller.utc, wall_clock=self.wall_clock,
                                          telemetry=self.telemetry, books=self.books,
                                          tracker=self.tracker, lease=self.lease)
                    await tg.start(sup.child, "rpc", self.rpc.run)
                st = self.conn.status()
                log.info("mt5d ready", extra={"account": self.account, "breaker": st.breaker,
                                              "connected": st.connected, "symbols": list(st.selected)})
                if self.notifier is not None:
                    self.notifier.ready(f"streaming {len(st.selected)} symbols for {self.account}")
                task_status.started()
        finally:
            if self.notifier is not None:
                self.notifier.stopping()
            self.conn.thread.stop()
            with anyio.move_on_after(2, shield=True):
                try:
                    await self.nc.drain()
                except Exception:
                    pass
            release = getattr(self.module, "release_hangs", None)
            if release:
                release()
