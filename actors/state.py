"""Where capture stopped, kept on disk, so a restart of mt5d loses no tick.

The publisher saves what NATS confirmed (per symbol the tick cursor, per
symbol and timeframe the last closed bar, known from the moment the
timeframe is tracked, not only once a candle of it went out); the poller
resumes from it at start, filling the gap from the terminal's history and
publishing every bar that closed meanwhile. State older than
``max_gap`` seconds is ignored (the backlog would be too long to replay).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import msgspec

from mt5d.actors.logic.cursor import TickCursor

__all__ = ["CaptureState", "StateFile"]

log = logging.getLogger("mt5d.poller")


class CaptureState(msgspec.Struct):
    saved_at: float = 0.0  # wall clock, seconds
    ticks: dict[str, tuple[int, int]] = {}  # symbol -> (last_msc, seen)
    bars: dict[str, int] = {}  # "symbol|timeframe" -> open time of the last closed bar (broker s)
    deals: tuple[int, int] | None = None  # the newest deal published: (time_msc, ticket)


class StateFile:
    def __init__(self, path: Path, *, max_gap: float, clock=time.time) -> None:
        self.path = path
        self._max_gap = max_gap
        self._clock = clock
        self.state = CaptureState()
        # The deal cursor resumes whatever the state's age: deals are few, and each one counts.
        self.deal_cursor: tuple[int, int] | None = None

    def load(self) -> tuple[dict[str, TickCursor], dict[tuple[str, str], int]]:
        try:
            state = msgspec.json.decode(self.path.read_bytes(), type=CaptureState)
        except FileNotFoundError:
            return {}, {}
        except (OSError, msgspec.DecodeError) as err:
            log.warning("capture state unreadable; starting from the newest tick",
                        extra={"path": str(self.path), "error": type(err).__name__})
            return {}, {}
        self.deal_cursor = self.state.deals = state.deals
        age = self._clock() - state.saved_at
        if age > self._max_gap:
            log.warning("capture state too old to replay; starting from the newest tick",
                        extra={"path": str(self.path), "age_seconds": round(age)})
            return {}, {}
        self.state = state
        log.info("resuming capture where it stopped", extra={"age_seconds": round(age, 1),
                                                             "symbols": len(state.ticks)})
        cursors = {s: TickCursor(*v) for s, v in state.ticks.items()}
        bars = {tuple(k.split("|", 1)): v for k, v in state.bars.items()}
        return cursors, bars  # type: ignore[return-value]

    def confirmed(self, cursors: dict[str, TickCursor], bars: dict[tuple[str, str], int],
                  deal_cursor: tuple[int, int] | None = None) -> bool:
        """Record what NATS confirmed; True when it should be saved at once: a deal, a
        symbol or timeframe tracked for the first time, or a bar moved on. (A bar
        tracked but not saved would be lost by a crash; cursors move every cycle
        and are saved at the publisher's pace, a crash then repeats a few ticks.)"""
        urgent = False
        if deal_cursor is not None:
            self.state.deals = tuple(deal_cursor)
            urgent = True
        for symbol, c in cursors.items():
            urgent |= symbol not in self.state.ticks
            self.state.ticks[symbol] = (c.last_msc, c.seen)
        for (symbol, tf), t in bars.items():
            key = f"{symbol}|{tf}"
            urgent |= self.state.bars.get(key) != t
            self.state.bars[key] = t
        return urgent

    def save(self) -> None:
        """Atomically: a crash mid-write leaves the previous file."""
        self.state.saved_at = self._clock()
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_bytes(msgspec.json.encode(self.state))
            os.replace(tmp, self.path)
        except OSError as err:
            log.warning("capture state not saved", extra={"path": str(self.path), "error": str(err)[:200]})
