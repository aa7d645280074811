"""The breaker's state held for the connection actor (the pure machine is in actors.logic.breaker)."""

from __future__ import annotations

from typing import Callable

from mt5d.actors.logic.breaker import (
    CLOSED,
    AuthFailure,
    BreakerPolicy,
    Failure,
    ForceClose,
    Request,
    Success,
    retry_after,
    transition,
)
from mt5d.errors import MT5CircuitBreakerOpen

__all__ = ["Gate"]


class Gate:
    def __init__(self, policy: BreakerPolicy, rand: Callable[[], float]) -> None:
        self.policy = policy
        self.state = CLOSED
        self._rand = rand

    @property
    def kind(self) -> str:
        return self.state.kind

    def request(self, now: float) -> bool:
        """Permission to call; raises ``MT5CircuitBreakerOpen``. True for the half-open trial."""
        self.state, decision = transition(self.state, Request(), now, self.policy, self._rand())
        if not decision.allowed:
            wait = f"; retry in {decision.retry_after:.1f} s" if decision.retry_after is not None else ""
            raise MT5CircuitBreakerOpen(f"circuit breaker is open: the terminal is not being called{wait}", 0)
        return decision.trial

    def success(self, now: float) -> None:
        self.state, _ = transition(self.state, Success(), now, self.policy, self._rand())

    def failure(self, now: float) -> None:
        self.state, _ = transition(self.state, Failure(), now, self.policy, self._rand())

    def auth_failure(self, now: float) -> None:
        self.state, _ = transition(self.state, AuthFailure(), now, self.policy, self._rand())

    def force_close(self, now: float) -> None:
        self.state, _ = transition(self.state, ForceClose(), now, self.policy, self._rand())

    def describe(self, now: float) -> tuple[str, float | None]:
        return self.state.kind, retry_after(self.state, now)
