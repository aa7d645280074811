"""The health actor: a periodic probe, state changes as they happen, and the watchdog.

It publishes one health event per probe interval and one per state change of
the connection actor, and feeds the systemd watchdog only while the actors
are alive and no terminal call is wedged.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from mt5d.actors.connection import Connection, StateChange, probe
from mt5d.errors import MT5Error
from mt5d.market import EventKind, HealthEvent

__all__ = ["Health"]

log = logging.getLogger("mt5d.health")

# State changes after which the last probe no longer vouches for the connection.
_PROBE_FAILS: frozenset[EventKind] = frozenset({"disconnected", "wedged", "auth_failed", "breaker_open"})


class Health:
    def __init__(
        self,
        *,
        conn: Connection,
        account: str,
        changes: MemoryObjectReceiveStream[StateChange],
        out: MemoryObjectSendStream[HealthEvent],
        interval: float,
        stale_after: float,
        last_tick_at: Callable[[], float | None],
        alive: Callable[[], bool] = lambda: True,
        notifier=None,
        wall_clock: Callable[[], float] = time.time,
        role: Callable[[], tuple[str, int]] | None = None,  # hot standby: (role, lease revision)
    ) -> None:
        self._role = role
        self._conn = conn
        self._account = account
        self._changes = changes
        self._out = out
        self._interval = interval
        self._probe_timeout = max(interval, 1.0)
        self._stale_after = stale_after
        self._last_tick_at = last_tick_at
        self._alive = alive
        self._notifier = notifier
        self._wall = wall_clock
        self._started_at = 0.0
        self._latency_ms: float | None = None
        self._probe_ok = False
        self._status_line = ""
        self._terminal = None  # terminal_info() of the last periodic probe (None: it did not answer)
        self.last: HealthEvent | None = None

    async def run(self, *, task_status: TaskStatus = anyio.TASK_STATUS_IGNORED) -> None:
        self._started_at = anyio.current_time()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._forward_changes)
            task_status.started()
            while True:
                await self.probe()
                await anyio.sleep(self._interval)

    async def probe(self) -> HealthEvent:
        """The periodic probe: published, and it feeds the watchdog."""
        self._latency_ms, self._probe_ok, self._terminal = await self._round_trip()
        event = self._event("probe", "")
        self._emit(event)
        self._feed_watchdog(event)
        return event

    async def measure(self) -> HealthEvent:
        """A fresh probe for a requester (the ``health`` endpoint): the event, and
        nothing else; neither the health stream nor the watchdog sees it."""
        latency_ms, ok, info = await self._round_trip()
        return self._event("probe", "", latency_ms, ok, info)

    async def _round_trip(self) -> tuple[float | None, bool, Any]:
        """One terminal round trip, timed: (latency in ms, ok, terminal_info() or None)."""
        t0 = anyio.current_time()
        # Bounded: a terminal call stuck ahead of the probe must not stop health events.
        with anyio.move_on_after(self._probe_timeout):
            try:
                info = await self._conn.run_call(probe, timeout=self._probe_timeout)
                return round((anyio.current_time() - t0) * 1000, 3), True, info
            except MT5Error as err:
                return None, False, getattr(err, "terminal_info", None)  # connected False: still known
        return None, False, None

    def _event(self, kind: EventKind, detail: str, latency_ms: float | None = None,
               probe_ok: bool | None = None, terminal: Any = None) -> HealthEvent:
        """An event from the connection's snapshot and a probe's outcome (default: the last periodic one)."""
        if probe_ok is None:
            latency_ms, probe_ok, terminal = self._latency_ms, self._probe_ok, self._terminal
        st = self._conn.status()
        now = anyio.current_time()
        last_tick = self._last_tick_at()
        reference = last_tick if last_tick is not None else self._started_at
        connection_ok = st.connected and probe_ok and not st.wedged
        role, revision = self._role() if self._role is not None else ("", 0)
        return HealthEvent(
            role=role,
            lease_revision=revision,
            account=self._account,
            time_utc_ms=int(self._wall() * 1000),
            event=kind,
            detail=detail,
            connection_ok=connection_ok,
            auth_ok=st.auth_ok is True,  # not yet known counts as not ok
            data_feed_ok=connection_ok and now - reference < self._stale_after,
            latency_ms=latency_ms if connection_ok else None,
            breaker=st.breaker,
            wedged=st.wedged,
            **_terminal_fields(terminal),
        )

    def role_changed(self) -> None:
        """The lease changed hands here: say so at once, not at the next probe."""
        role, _ = self._role()
        self._emit(self._event(role, "the hot-standby lease changed hands"))

    async def _forward_changes(self) -> None:
        async for change in self._changes:
            if change.event in _PROBE_FAILS:
                self._probe_ok = False
            elif change.event == "connected":
                self._probe_ok = True
            self._emit(self._event(change.event, change.detail))

    def _emit(self, event: HealthEvent) -> None:
        self.last = event
        try:
            self._out.send_nowait(event)
        except anyio.WouldBlock:
            log.warning("health events are not being published fast enough; one dropped",
                        extra={"health_event": event.event})
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass

    def _feed_watchdog(self, event: HealthEvent) -> None:
        if self._notifier is None:
            return
        line = (f"breaker {event.breaker}, connection {'ok' if event.connection_ok else 'DOWN'}, "
                f"feed {'ok' if event.data_feed_ok else 'stale'}"
                + (f", latency {event.latency_ms:.1f} ms" if event.latency_ms is not None else ""))
        if line != self._status_line:
            self._status_line = line
            self._notifier.status(line)
        if self._alive() and not event.wedged:
            self._notifier.watchdog()


def _terminal_fields(info: Any) -> dict:
    """The health event's view of the terminal's own terminal_info() (nothing when unknown)."""
    if info is None:
        return {}
    try:
        return {"trade_allowed": bool(info.trade_allowed), "terminal_connected": bool(info.connected),
                "ping_ms": round(info.ping_last / 1000, 3) if info.connected else None}
    except (AttributeError, TypeError, ValueError):
        return {}  # an odd terminal_info: the rest of the event still goes out
