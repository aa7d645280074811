"""The circuit breaker as a pure state machine.

No I/O, no anyio, no clock: the caller passes ``now`` (any monotonic seconds)
and ``rand`` (a uniform number in [0, 1]) to :func:`transition`, which returns
the next state and, for a :class:`Request`, the decision. The transitions are an
explicit table keyed by ``(state kind, event type)``; a pair that is not in the
table cannot happen in a correct caller and raises :class:`InvalidTransition`.

    closed    --Request-->      closed      allowed
    closed    --Success-->      closed      failures = 0
    closed    --Failure-->      closed      failures += 1
                                open        when failures reach max_failures (backoff = base)
    closed    --AuthFailure-->  open        backoff = max at once
    open      --Request-->      open        rejected(retry_after) before open_until
                                half_open   at/after open_until: allowed, the one trial
    half_open --Request-->      half_open   rejected while the trial is in flight
    half_open --Success-->      closed      failures = 0, backoff reset
    half_open --Failure-->      open        backoff doubled (capped at max)
    half_open --AuthFailure-->  open        backoff = max
    any       --ForceClose-->   closed      an operator's forced reconnect

``open_until`` is ``now + backoff * (1 + jitter * (2 * rand - 1))``: the wait is
spread uniformly over ``backoff * (1 ± jitter)`` so that many daemons behind one
broker do not retry in step. ``backoff`` itself never exceeds the maximum, so the
wait never exceeds ``backoff_max_seconds * (1 + jitter)``.

Authentication failures open at once with the maximum backoff: brokers lock an
account after a burst of bad logins, and retrying a wrong password is never
going to help anyway.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Literal, TypeAlias

__all__ = [
    "BreakerPolicy",
    "policy_problems",
    "MAX_JITTER",
    "BreakerState",
    "Kind",
    "Request",
    "Success",
    "Failure",
    "AuthFailure",
    "ForceClose",
    "Event",
    "Decision",
    "InvalidTransition",
    "transition",
    "retry_after",
    "CLOSED",
]

Kind: TypeAlias = Literal["closed", "open", "half_open"]


# Past this, a breaker could wait less than half its backoff: the spread stays honest.
MAX_JITTER = 0.5


@dataclass(frozen=True)
class BreakerPolicy:
    max_failures: int = 3
    backoff_base_seconds: float = 60.0
    backoff_max_seconds: float = 600.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        problems = policy_problems(self.max_failures, self.backoff_base_seconds, self.backoff_max_seconds,
                                   self.jitter)
        if problems:
            raise ValueError("; ".join(problems))


def policy_problems(max_failures: int, backoff_base_seconds: float, backoff_max_seconds: float,
                    jitter: float) -> list[str]:
    """What is wrong with these settings, one ``field: value (expected ...)`` each: the
    one place the breaker's settings are checked (the config lists these too)."""
    out = []
    if max_failures < 1:
        out.append(f"max_failures: {max_failures} (expected >= 1)")
    if backoff_base_seconds <= 0:
        out.append(f"backoff_base_seconds: {backoff_base_seconds} (expected > 0)")
    if backoff_max_seconds < backoff_base_seconds:
        out.append(f"backoff_max_seconds: {backoff_max_seconds} "
                   f"(expected >= backoff_base_seconds = {backoff_base_seconds})")
    if not 0.0 <= jitter <= MAX_JITTER:
        out.append(f"jitter: {jitter} (expected 0 to {MAX_JITTER})")
    return out


@dataclass(frozen=True)
class BreakerState:
    kind: Kind = "closed"
    failures: int = 0  # consecutive failures (trial failures included)
    backoff: float = 0.0  # the current backoff before jitter; 0 while closed
    open_until: float = 0.0  # while open: the first instant a trial may start
    trial_in_flight: bool = False  # True exactly while half_open


CLOSED = BreakerState()


# ---- events -----------------------------------------------------------------
@dataclass(frozen=True)
class Request:
    """Ask permission to call the terminal."""


@dataclass(frozen=True)
class Success:
    """The allowed call succeeded (or the terminal answered a caller's mistake)."""


@dataclass(frozen=True)
class Failure:
    """The allowed call failed in a way that counts against the terminal."""


@dataclass(frozen=True)
class AuthFailure:
    """The broker refused the credentials: open at once with the maximum backoff."""


@dataclass(frozen=True)
class ForceClose:
    """An operator asked to try again now (forced reconnect): back to closed."""


Event: TypeAlias = Request | Success | Failure | AuthFailure | ForceClose


@dataclass(frozen=True)
class Decision:
    """The answer to a :class:`Request`.

    ``retry_after`` (seconds from ``now``) is set when rejected: the time left
    until ``open_until``, or ``None`` when a half-open trial is in flight and
    the answer depends on its outcome.
    """

    allowed: bool
    trial: bool = False
    retry_after: float | None = None


ALLOW = Decision(True)
ALLOW_TRIAL = Decision(True, trial=True)


class InvalidTransition(Exception):
    """A (state, event) pair that a correct caller never produces."""

    def __init__(self, state: BreakerState, event: Event) -> None:
        super().__init__(f"no transition for {type(event).__name__} in state {state.kind!r}")
        self.state = state
        self.event = event


# ---- helpers ------------------------------------------------------------------
def _open(state: BreakerState, now: float, backoff: float, policy: BreakerPolicy, rand: float,
          *, failures: int) -> BreakerState:
    backoff = min(backoff, policy.backoff_max_seconds)
    wait = backoff * (1.0 + policy.jitter * (2.0 * rand - 1.0))
    return BreakerState("open", failures=failures, backoff=backoff, open_until=now + wait, trial_in_flight=False)


_Result: TypeAlias = tuple[BreakerState, Decision | None]
_Handler: TypeAlias = Callable[[BreakerState, float, BreakerPolicy, float], _Result]


# ---- handlers (one per table entry) -----------------------------------------------
def _closed_request(s: BreakerState, now: float, p: BreakerPolicy, rand: float) -> _Result:
    return s, ALLOW


def _closed_success(s: BreakerState, now: float, p: BreakerPolicy, rand: float) -> _Result:
    return (s if s.failures == 0 else replace(s, failures=0)), None


def _closed_failure(s: BreakerState, now: float, p: BreakerPolicy, rand: float) -> _Result:
    failures = s.failures + 1
    if failures >= p.max_failures:
        return _open(s, now, p.backoff_base_seconds, p, rand, failures=failures), None
    return replace(s, failures=failures), None


def _auth_failure(s: BreakerState, now: float, p: BreakerPolicy, rand: float) -> _Result:
    return _open(s, now, p.backoff_max_seconds, p, rand, failures=s.failures + 1), None


def _open_request(s: BreakerState, now: float, p: BreakerPolicy, rand: float) -> _Result:
    if now < s.open_until:
        return s, Decision(False, retry_after=s.open_until - now)
    return replace(s, kind="half_open", trial_in_flight=True), ALLOW_TRIAL


def _half_open_request(s: BreakerState, now: float, p: BreakerPolicy, rand: float) -> _Result:
    if s.trial_in_flight:
        return s, Decision(False, retry_after=None)
    # Not reachable through transition() (half_open always has its trial in
    # flight), but a hand-built state gets the sensible answer.
    return replace(s, trial_in_flight=True), ALLOW_TRIAL


def _half_open_success(s: BreakerState, now: float, p: BreakerPolicy, rand: float) -> _Result:
    return CLOSED, None


def _half_open_failure(s: BreakerState, now: float, p: BreakerPolicy, rand: float) -> _Result:
    return _open(s, now, s.backoff * 2.0, p, rand, failures=s.failures + 1), None


def _force_close(s: BreakerState, now: float, p: BreakerPolicy, rand: float) -> _Result:
    return CLOSED, None


TABLE: dict[tuple[Kind, type], _Handler] = {
    ("closed", Request): _closed_request,
    ("closed", Success): _closed_success,
    ("closed", Failure): _closed_failure,
    ("closed", AuthFailure): _auth_failure,
    ("closed", ForceClose): _force_close,
    ("open", Request): _open_request,
    ("open", ForceClose): _force_close,
    ("half_open", Request): _half_open_request,
    ("half_open", Success): _half_open_success,
    ("half_open", Failure): _half_open_failure,
    ("half_open", AuthFailure): _auth_failure,
    ("half_open", ForceClose): _force_close,
}
# Deliberately missing: ("open", Success | Failure | AuthFailure) -- no call is
# allowed while open, so no outcome can be reported there.


def transition(state: BreakerState, event: Event, now: float, policy: BreakerPolicy,
               rand: float = 0.5) -> tuple[BreakerState, Decision | None]:
    """Apply ``event`` at time ``now``; the decision is set for a :class:`Request` only.

    ``rand`` is a uniform number in [0, 1] used for the jitter of a newly
    opened breaker (0.5 means no jitter).
    """
    if not 0.0 <= rand <= 1.0:
        raise ValueError(f"rand must be in [0, 1], got {rand}")
    handler = TABLE.get((state.kind, type(event)))
    if handler is None:
        raise InvalidTransition(state, event)
    return handler(state, now, policy, rand)


def retry_after(state: BreakerState, now: float) -> float | None:
    """Seconds until a request may be allowed: 0 when closed, None while a trial is in flight."""
    if state.kind == "closed":
        return 0.0
    if state.kind == "open":
        return max(0.0, state.open_until - now)
    return None
