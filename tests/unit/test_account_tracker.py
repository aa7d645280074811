"""AccountTracker: what each change at the terminal becomes on the streams (a table), and what it costs."""

from __future__ import annotations

import calendar

import pytest

from mt5d.actors.account import AccountTracker
from mt5d.daemon.terminal import mt5_constants as C
from mt5d.daemon.terminal.api import TerminalApi
from mt5d.daemon.terminal.sim import SimTerminal

T0 = calendar.timegm((2026, 3, 10, 12, 0, 20))


class Clock:
    def __init__(self) -> None:
        self.t = float(T0)

    def __call__(self) -> float:
        return self.t


class Counting:
    """The sim, counting calls by function (the cost of a cycle)."""

    def __init__(self, sim) -> None:
        self.sim, self.calls = sim, []

    def __getattr__(self, name):
        fn = getattr(self.sim, name)

        def call(*a, **kw):
            if name != "last_error":
                self.calls.append(name)
            return fn(*a, **kw)

        return call


def account_step(api, args):
    """The poll hop's account step alone (as the poller runs it, in one ``cycle``)."""
    (value, errors), = api.cycle((("account", args),))[0]
    assert not errors, errors
    return value


def setup(**kw):
    clk = Clock()
    sim = SimTerminal(clock=clk, **kw)
    sim.initialize()
    counting = Counting(sim)
    api = TerminalApi(counting)
    tr = AccountTracker(interval=0.25, heartbeat=10.0, epoch=1)
    state = {"now": 0.0}

    def cycle(dt: float = 0.05):
        clk.t += dt
        state["now"] += dt
        counting.calls.clear()
        off_ms = sim.utc_offset_seconds(clk.t) * 1000
        read = account_step(api, tr.prepare(state["now"], int(clk.t) + off_ms // 1000))
        return [(k, getattr(m, "event", "")) for k, _, m in tr.absorb(read, state["now"], int(clk.t * 1000), off_ms)]

    cycle()  # first sync: a baseline, no events
    return sim, tr, cycle, counting


def q(sim):
    return sim.symbol_info_tick("EURUSD")


def market(sim, type=0, volume=0.1, **kw):
    return sim.order_send({"action": C.TRADE_ACTION_DEAL, "symbol": "EURUSD", "type": type, "volume": volume, **kw})


TABLE = [
    ("market buy", lambda sim, ctx: market(sim),
     [("deal", ""), ("order", "filled"), ("position", "opened"), ("account", "")]),
    ("pending placed", lambda sim, ctx: sim.order_send({"action": 5, "symbol": "EURUSD", "type": 2, "volume": 0.1,
                                                         "price": 0.5, "type_filling": 2}),
     [("order", "placed"), ("account", "")]),
]


@pytest.mark.parametrize("name,act,expected", TABLE, ids=[t[0] for t in TABLE])
def test_one_change_one_set_of_messages(name, act, expected):
    sim, tr, cycle, _ = setup()
    act(sim, {})
    assert cycle() == expected
    assert cycle() == []  # reported once


def test_lifecycle_of_positions_and_orders():
    sim, tr, cycle, _ = setup()
    r = market(sim, volume=0.3)
    cycle()
    # partial close: a deal and a volume change
    market(sim, type=1, volume=0.1, position=r.order)
    assert cycle() == [("deal", ""), ("order", "filled"), ("position", "modified"), ("account", "")]
    # SL change: no deal, no count; seen by the periodic re-read of open positions
    sl = round(q(sim).bid - 0.01, 5)
    sim.order_send({"action": C.TRADE_ACTION_SLTP, "position": r.order, "sl": sl})
    seen = [e for _ in range(6) for e in cycle()]
    assert ("position", "modified") in seen and all(k != "deal" for k, _ in seen)
    assert tr.view.positions[0].sl == sl
    # pending: placed, modified, cancelled
    p = sim.order_send({"action": 5, "symbol": "EURUSD", "type": 2, "volume": 0.1, "price": 0.5, "type_filling": 2})
    assert ("order", "placed") in cycle()
    sim.order_send({"action": C.TRADE_ACTION_MODIFY, "order": p.order, "price": 0.6})
    assert ("order", "modified") in [e for _ in range(6) for e in cycle()]
    sim.order_send({"action": C.TRADE_ACTION_REMOVE, "order": p.order})
    assert ("order", "cancelled") in cycle()
    # close
    market(sim, type=1, volume=0.2, position=r.order)
    assert cycle()[:3] == [("deal", ""), ("order", "filled"), ("position", "closed")]
    assert tr.view.positions == () and tr.view.orders == () and tr.view.seq == tr.seq


def test_an_expired_order_is_reported_expired():
    sim, tr, cycle, _ = setup()
    t = q(sim)
    sim.order_send({"action": 5, "symbol": "EURUSD", "type": 2, "volume": 0.1, "price": 0.5, "type_filling": 2,
                    "type_time": C.ORDER_TIME_SPECIFIED, "expiration": t.time + 1})
    cycle()
    assert ("order", "expired") in [e for _ in range(40) for e in cycle()]


def test_a_quiet_account_costs_three_calls_a_cycle():
    sim, tr, cycle, counting = setup()
    for _ in range(3):
        cycle(0.05)
    cycle(0.05)
    assert counting.calls in (["positions_total", "orders_total", "history_deals_total"],
                              ["positions_total", "orders_total", "history_deals_total", "account_info"])
    calls = []
    for _ in range(20):  # a second of cycles: the account at most every interval
        cycle(0.05)
        calls.append(tuple(counting.calls))
    assert sum(c.count("account_info") for c in calls) <= 5
    assert all(c.count("positions_get") == 0 for c in calls)


def test_restart_resumes_deals_from_the_cursor():
    sim, tr, cycle, _ = setup()
    market(sim)
    cycle()
    cursor = tr.deal_cursor
    # mt5d is down: two deals happen
    market(sim, type=1, volume=0.1, position=sim.positions_get()[0].ticket)
    market(sim)
    again = AccountTracker(interval=0.25, heartbeat=10.0, epoch=2, deal_cursor=cursor)
    off = sim.utc_offset_seconds(sim._clock()) * 1000
    out = again.absorb(account_step(TerminalApi(sim), again.prepare(100.0, int(sim._clock()) + off // 1000)),
                       100.0, 0, off)
    deals = [m for k, _, m in out if k == "deal"]
    assert [d.ticket for d in deals] == [d.ticket for d in sim.history_deals_get(0, 2**40)[-2:]]
    assert all(k not in ("position", "order") for k, _, _ in out)  # the first sync is a baseline


def test_a_pending_order_placed_and_filled_between_two_looks_still_shows_placed_then_filled():
    sim, tr, cycle, _ = setup()
    # A buy limit a point under the ask: the sim's prices (a pure function of time) cross it
    # well within the next 30 s, and the tracker's next look comes only after those 30 s.
    r = sim.order_send({"action": C.TRADE_ACTION_PENDING, "symbol": "EURUSD", "type": C.ORDER_TYPE_BUY_LIMIT,
                        "volume": 0.1, "price": round(q(sim).ask - 0.00001, 5), "type_filling": 2})
    assert r.retcode == C.TRADE_RETCODE_PLACED
    events = cycle(30.0)
    assert sim.orders_total() == 0  # filled before the look: it was never seen pending
    assert [e for k, e in events if k == "order"] == ["placed", "filled"]
