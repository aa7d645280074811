"""The circuit breaker state machine: tables on a fake ``now``, and properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mt5d.actors.logic.breaker import (
    CLOSED,
    AuthFailure,
    BreakerPolicy,
    BreakerState,
    Decision,
    Failure,
    ForceClose,
    InvalidTransition,
    Request,
    Success,
    retry_after,
    transition,
)

P = BreakerPolicy(max_failures=3, backoff_base_seconds=60.0, backoff_max_seconds=600.0, jitter=0.1)
NOW = 1000.0
MID = 0.5  # rand that gives no jitter


def opened(backoff: float, until: float, failures: int = 3) -> BreakerState:
    return BreakerState("open", failures=failures, backoff=backoff, open_until=until)


HALF = BreakerState("half_open", failures=3, backoff=60.0, open_until=NOW, trial_in_flight=True)

# (name, state, event, now, rand, expected state, expected decision)
TABLE = [
    ("closed request allowed", CLOSED, Request(), NOW, MID, CLOSED, Decision(True)),
    ("closed request with failures allowed", BreakerState(failures=2), Request(), NOW, MID,
     BreakerState(failures=2), Decision(True)),
    ("closed success resets count", BreakerState(failures=2), Success(), NOW, MID, CLOSED, None),
    ("closed success no-op", CLOSED, Success(), NOW, MID, CLOSED, None),
    ("closed first failure counts", CLOSED, Failure(), NOW, MID, BreakerState(failures=1), None),
    ("closed second failure counts", BreakerState(failures=1), Failure(), NOW, MID, BreakerState(failures=2), None),
    ("closed third failure opens", BreakerState(failures=2), Failure(), NOW, MID, opened(60.0, NOW + 60.0), None),
    ("open with jitter low", BreakerState(failures=2), Failure(), NOW, 0.0, opened(60.0, NOW + 54.0), None),
    ("open with jitter high", BreakerState(failures=2), Failure(), NOW, 1.0, opened(60.0, NOW + 66.0), None),
    ("closed auth failure opens at max", CLOSED, AuthFailure(), NOW, MID, opened(600.0, NOW + 600.0, 1), None),
    ("closed force close", BreakerState(failures=2), ForceClose(), NOW, MID, CLOSED, None),
    ("open rejects before open_until", opened(60.0, NOW + 60.0), Request(), NOW, MID,
     opened(60.0, NOW + 60.0), Decision(False, retry_after=60.0)),
    ("open rejects just before open_until", opened(60.0, NOW + 60.0), Request(), NOW + 59.5, MID,
     opened(60.0, NOW + 60.0), Decision(False, retry_after=0.5)),
    ("open at open_until is the trial", opened(60.0, NOW), Request(), NOW, MID,
     BreakerState("half_open", 3, 60.0, NOW, True), Decision(True, trial=True)),
    ("open after open_until is the trial", opened(60.0, NOW), Request(), NOW + 5, MID,
     BreakerState("half_open", 3, 60.0, NOW, True), Decision(True, trial=True)),
    ("open force close", opened(600.0, NOW + 600.0), ForceClose(), NOW, MID, CLOSED, None),
    ("half-open rejects a second request", HALF, Request(), NOW + 1, MID, HALF, Decision(False, retry_after=None)),
    ("half-open trial success closes", HALF, Success(), NOW + 1, MID, CLOSED, None),
    ("half-open trial failure doubles", HALF, Failure(), NOW + 1, MID, opened(120.0, NOW + 121.0, 4), None),
    ("half-open trial failure caps at max",
     BreakerState("half_open", 7, 480.0, NOW, True), Failure(), NOW, MID, opened(600.0, NOW + 600.0, 8), None),
    ("half-open trial failure at max stays max with jitter",
     BreakerState("half_open", 8, 600.0, NOW, True), Failure(), NOW, 1.0, opened(600.0, NOW + 660.0, 9), None),
    ("half-open auth failure opens at max", HALF, AuthFailure(), NOW, MID, opened(600.0, NOW + 600.0, 4), None),
    ("half-open force close", HALF, ForceClose(), NOW, MID, CLOSED, None),
]


@pytest.mark.parametrize(
    "state, event, now, rand, want_state, want_decision",
    [row[1:] for row in TABLE],
    ids=[row[0] for row in TABLE],
)
def test_transition_table(state, event, now, rand, want_state, want_decision):
    got_state, got_decision = transition(state, event, now, P, rand)
    assert got_state.kind == want_state.kind
    assert got_state.failures == want_state.failures
    assert got_state.trial_in_flight == want_state.trial_in_flight
    assert got_state.backoff == pytest.approx(want_state.backoff)
    assert got_state.open_until == pytest.approx(want_state.open_until)
    if want_decision is None:
        assert got_decision is None
    else:
        assert got_decision is not None
        assert got_decision.allowed == want_decision.allowed
        assert got_decision.trial == want_decision.trial
        if want_decision.retry_after is None:
            assert got_decision.retry_after is None
        else:
            assert got_decision.retry_after == pytest.approx(want_decision.retry_after)


INVALID = [
    ("success while open", opened(60.0, NOW + 60.0), Success()),
    ("failure while open", opened(60.0, NOW + 60.0), Failure()),
    ("auth failure while open", opened(60.0, NOW + 60.0), AuthFailure()),
]


@pytest.mark.parametrize("state, event", [r[1:] for r in INVALID], ids=[r[0] for r in INVALID])
def test_impossible_pairs_raise(state, event):
    with pytest.raises(InvalidTransition) as info:
        transition(state, event, NOW, P, MID)
    assert info.value.state is state
    assert "open" in str(info.value)


def test_unknown_event_type_raises():
    with pytest.raises(InvalidTransition):
        transition(CLOSED, object(), NOW, P, MID)  # type: ignore[arg-type]


@pytest.mark.parametrize("rand", [-0.1, 1.1, float("nan")])
def test_rand_out_of_range_refused(rand):
    with pytest.raises(ValueError):
        transition(CLOSED, Failure(), NOW, P, rand)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_failures": 0},
        {"backoff_base_seconds": 0},
        {"backoff_base_seconds": 10, "backoff_max_seconds": 5},
        {"jitter": -0.1},
        {"jitter": 1.0},
    ],
)
def test_policy_validation(kwargs):
    with pytest.raises(ValueError):
        BreakerPolicy(**kwargs)


def test_full_cycle_on_a_fake_clock():
    """closed -> open -> trial fails -> open (x2) -> trial succeeds -> closed."""
    now, s = 0.0, CLOSED
    for _ in range(3):
        assert transition(s, Request(), now, P)[1].allowed
        s, _ = transition(s, Failure(), now, P)
    assert s.kind == "open" and s.open_until == 60.0
    now = 59.999
    s, d = transition(s, Request(), now, P)
    assert not d.allowed and d.retry_after == pytest.approx(0.001)
    now = 60.0
    s, d = transition(s, Request(), now, P)
    assert d.allowed and d.trial and s.kind == "half_open"
    s, d = transition(s, Request(), now, P)
    assert not d.allowed
    s, _ = transition(s, Failure(), now, P)
    assert s.kind == "open" and s.backoff == 120.0 and s.open_until == 180.0
    now = 180.0
    s, d = transition(s, Request(), now, P)
    assert d.trial
    s, _ = transition(s, Success(), now, P)
    assert s == CLOSED
    # After the reset, opening again starts from the base backoff.
    for _ in range(3):
        s, _ = transition(s, Failure(), now, P)
    assert s.backoff == 60.0


def test_retry_after_helper():
    assert retry_after(CLOSED, NOW) == 0.0
    assert retry_after(opened(60.0, NOW + 10), NOW) == 10.0
    assert retry_after(opened(60.0, NOW - 10), NOW) == 0.0
    assert retry_after(HALF, NOW) is None


# ---- properties ------------------------------------------------------------------
EVENTS = st.sampled_from([Request(), Success(), Failure(), AuthFailure(), ForceClose()])
POLICIES = st.builds(
    BreakerPolicy,
    max_failures=st.integers(1, 5),
    backoff_base_seconds=st.floats(0.5, 100.0),
    backoff_max_seconds=st.floats(100.0, 1000.0),
    jitter=st.floats(0.0, 0.5),
)
STEPS = st.lists(
    st.tuples(EVENTS, st.floats(0.0, 500.0), st.floats(0.0, 1.0)),  # (event, time advance, rand)
    max_size=80,
)


def check_invariants(s: BreakerState, p: BreakerPolicy, opened_at: float | None) -> None:
    assert s.kind in ("closed", "open", "half_open")
    assert s.trial_in_flight == (s.kind == "half_open")
    assert s.failures >= 0
    assert 0.0 <= s.backoff <= p.backoff_max_seconds
    if s.kind == "closed":
        assert s.failures < p.max_failures
    else:
        assert s.backoff >= p.backoff_base_seconds or s.backoff == p.backoff_max_seconds
    if s.kind == "open":
        assert opened_at is not None
        wait = s.open_until - opened_at
        assert wait <= p.backoff_max_seconds * (1 + p.jitter) + 1e-9
        assert wait >= s.backoff * (1 - p.jitter) - 1e-9


@settings(max_examples=400, deadline=None)
@given(policy=POLICIES, steps=STEPS)
def test_random_event_sequences(policy, steps):
    """Any event in any order: impossible pairs raise; the guarantees always hold."""
    s, now = CLOSED, 0.0
    opened_at: float | None = None
    trials_this_half_open = 0
    for event, advance, rand in steps:
        now += advance
        try:
            new, decision = transition(s, event, now, policy, rand)
        except InvalidTransition:
            assert s.kind == "open" and not isinstance(event, (Request, ForceClose))
            continue
        if isinstance(event, Request):
            assert decision is not None
            if s.kind == "open" and now < s.open_until:
                assert not decision.allowed, "allowed while open before open_until"
                assert decision.retry_after == pytest.approx(s.open_until - now)
            if decision.allowed:
                if new.kind == "half_open":
                    trials_this_half_open += 1
                    assert decision.trial and s.kind == "open"
                else:
                    assert not decision.trial and s.kind == "closed"
            if s.kind == "half_open":
                assert not decision.allowed, "a second trial while one is in flight"
        else:
            assert decision is None
        if new.kind != "half_open":
            trials_this_half_open = 0
        assert trials_this_half_open <= 1
        if new.kind == "open" and s.kind != "open":
            opened_at = now
        s = new
        check_invariants(s, policy, opened_at)


@settings(max_examples=300, deadline=None)
@given(policy=POLICIES, steps=st.lists(
    st.tuples(st.sampled_from(["ok", "fail", "auth"]), st.floats(0.0, 500.0), st.floats(0.0, 1.0)),
    max_size=80,
))
def test_well_behaved_caller_never_hits_invalid_pairs(policy, steps):
    """A caller that reports one outcome per allowed request never sees InvalidTransition."""
    s, now = CLOSED, 0.0
    opened_at = None
    for outcome, advance, rand in steps:
        now += advance
        s_before = s
        s, d = transition(s, Request(), now, policy, rand)
        if not d.allowed:
            assert s_before.kind != "closed"
            continue
        event = {"ok": Success(), "fail": Failure(), "auth": AuthFailure()}[outcome]
        before = s
        s, _ = transition(s, event, now, policy, rand)
        if s.kind == "open" and before.kind != "open":
            opened_at = now
        if outcome == "auth":
            assert s.kind == "open" and s.backoff == policy.backoff_max_seconds
        if before.kind == "half_open" and outcome == "ok":
            assert s == CLOSED
        if before.kind == "half_open" and outcome == "fail":
            assert s.backoff == min(before.backoff * 2, policy.backoff_max_seconds)
        check_invariants(s, policy, opened_at)
