"""The sim's order engine against MT5's trading semantics (tables of requests and outcomes)."""

from __future__ import annotations

import calendar

import pytest

from mt5d.daemon.terminal import mt5_constants as C
from mt5d.daemon.terminal.sim import SimTerminal

T0 = calendar.timegm((2026, 3, 10, 12, 0, 20))  # a Tuesday
BIG = 2**40


class Clock:
    def __init__(self, t: float) -> None:
        self.t = float(t)

    def __call__(self) -> float:
        return self.t


def make(**kw):
    clk = Clock(T0)
    sim = SimTerminal(clock=clk, **kw)
    assert sim.initialize()
    clk.t += 5
    return sim, clk


def quote(sim, symbol="EURUSD"):
    return sim.symbol_info_tick(symbol)


def deal(symbol="EURUSD", type=C.ORDER_TYPE_BUY, volume=0.1, **kw):
    return {"action": C.TRADE_ACTION_DEAL, "symbol": symbol, "type": type, "volume": volume, **kw}


def pending(type, price, symbol="EURUSD", volume=0.1, **kw):
    return {"action": C.TRADE_ACTION_PENDING, "symbol": symbol, "type": type, "volume": volume, "price": price,
            "type_filling": C.ORDER_FILLING_RETURN, **kw}


def run_until(sim, clk, cond, step=1.0, limit=3600):
    for _ in range(int(limit / step)):
        if cond():
            return True
        clk.t += step
        sim.account_info()
    return cond()


def test_result_types_have_the_packages_fields():
    assert C.TradePosition._fields[:3] == ("ticket", "time", "time_msc") and C.TradePosition._fields[-1] == "external_id"
    assert len(C.TradePosition._fields) == 19 and len(C.TradeOrder._fields) == 24 and len(C.TradeDeal._fields) == 18
    assert C.OrderSendResult._fields[-1] == "request" and C.OrderCheckResult._fields[0] == "retcode"
    assert C.TradeRequest._fields == ("action", "magic", "order", "symbol", "volume", "price", "stoplimit", "sl",
                                      "tp", "deviation", "type", "type_filling", "type_time", "expiration",
                                      "comment", "position", "position_by")


# (name, request builder given the quote, expected retcode)
REFUSALS = [
    ("unknown symbol", lambda q: deal(symbol="NOPE"), C.TRADE_RETCODE_INVALID),
    ("unknown action", lambda q: {"action": 99, "symbol": "EURUSD"}, C.TRADE_RETCODE_INVALID),
    ("volume below min", lambda q: deal(volume=0.001), C.TRADE_RETCODE_INVALID_VOLUME),
    ("volume off step", lambda q: deal(volume=0.015), C.TRADE_RETCODE_INVALID_VOLUME),
    ("volume above max", lambda q: deal(volume=501.0), C.TRADE_RETCODE_INVALID_VOLUME),
    ("pending type on DEAL", lambda q: deal(type=C.ORDER_TYPE_BUY_LIMIT), C.TRADE_RETCODE_INVALID_ORDER),
    ("RETURN filling at market", lambda q: deal(type_filling=C.ORDER_FILLING_RETURN), C.TRADE_RETCODE_INVALID_FILL),
    ("buy SL above bid", lambda q: deal(sl=round(q.bid + 0.001, 5)), C.TRADE_RETCODE_INVALID_STOPS),
    ("buy TP below bid", lambda q: deal(tp=round(q.bid - 0.001, 5)), C.TRADE_RETCODE_INVALID_STOPS),
    ("sell SL below ask", lambda q: deal(type=1, sl=round(q.ask - 0.001, 5)), C.TRADE_RETCODE_INVALID_STOPS),
    ("no money", lambda q: deal(volume=100.0), C.TRADE_RETCODE_NO_MONEY),
    ("buy limit above ask", lambda q: pending(C.ORDER_TYPE_BUY_LIMIT, round(q.ask + 0.001, 5)),
     C.TRADE_RETCODE_INVALID_PRICE),
    ("sell stop above bid", lambda q: pending(C.ORDER_TYPE_SELL_STOP, round(q.bid + 0.001, 5)),
     C.TRADE_RETCODE_INVALID_PRICE),
    ("stop limit: limit above stop", lambda q: pending(C.ORDER_TYPE_BUY_STOP_LIMIT, round(q.ask + 0.001, 5),
                                                       stoplimit=round(q.ask + 0.002, 5)),
     C.TRADE_RETCODE_INVALID_PRICE),
    ("expiration in the past", lambda q: pending(C.ORDER_TYPE_BUY_LIMIT, round(q.ask - 0.001, 5),
                                                 type_time=C.ORDER_TIME_SPECIFIED, expiration=q.time - 10),
     C.TRADE_RETCODE_INVALID_EXPIRATION),
    ("close a position that is not there", lambda q: deal(type=1, position=123), C.TRADE_RETCODE_POSITION_CLOSED),
    ("SLTP of no position", lambda q: {"action": C.TRADE_ACTION_SLTP, "position": 5, "sl": 1.0},
     C.TRADE_RETCODE_POSITION_CLOSED),
    ("remove an unknown order", lambda q: {"action": C.TRADE_ACTION_REMOVE, "order": 5}, C.TRADE_RETCODE_INVALID),
]


@pytest.mark.parametrize("name,build,retcode", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refused_requests_come_back_with_their_retcode(name, build, retcode):
    sim, clk = make()
    q = quote(sim)
    before = (sim.positions_total(), sim.orders_total(), sim.account_info().balance)
    r = sim.order_send(build(q))
    assert r.retcode == retcode and r.deal == 0 and r.order == 0 and sim.last_error() == (1, "Success")
    assert r.comment and isinstance(r.request, C.TradeRequest)
    check = sim.order_check(build(q))
    assert check.retcode == retcode
    assert (sim.positions_total(), sim.orders_total(), sim.account_info().balance) == before


@pytest.mark.parametrize("request_,message", [
    ("not a dict", "Invalid arguments"),
    ({"action": "1"}, 'Invalid "action" argument'),
    ({"action": 1, "volume": float("nan")}, 'Invalid "volume" argument'),
    ({"action": 1, "symbol": 5}, 'Invalid "symbol" argument'),
    ({"action": 1, "sl": True}, 'Invalid "sl" argument'),
])
def test_malformed_requests_fail_with_last_error(request_, message):
    sim, _ = make()
    assert sim.order_send(request_) is None and sim.last_error() == (-2, message)
    assert sim.order_check(request_) is None and sim.last_error() == (-2, message)


def test_trading_off_refuses_with_client_disables_at():
    sim, _ = make(trade_allowed=False)
    assert sim.terminal_info().trade_allowed is False
    assert sim.order_send(deal()).retcode == C.TRADE_RETCODE_CLIENT_DISABLES_AT


def test_market_buy_fills_at_ask_with_commission_margin_and_profit():
    sim, clk = make(commission_per_lot=7.0, leverage=100)
    q = quote(sim)
    r = sim.order_send(deal(volume=1.0))
    assert (r.retcode, r.price, r.volume, r.bid, r.ask) == (C.TRADE_RETCODE_DONE, q.ask, 1.0, q.bid, q.ask)
    (p,) = sim.positions_get()
    assert (p.ticket, p.identifier, p.type, p.volume, p.price_open, p.reason) == (
        r.order, r.order, C.POSITION_TYPE_BUY, 1.0, q.ask, C.POSITION_REASON_EXPERT)
    (d,) = sim.history_deals_get(ticket=r.deal)
    assert (d.order, d.position_id, d.type, d.entry, d.reason, d.commission, d.symbol) == (
        r.order, r.order, C.DEAL_TYPE_BUY, C.DEAL_ENTRY_IN, C.DEAL_REASON_EXPERT, -7.0, "EURUSD")
    (o,) = sim.history_orders_get(ticket=r.order)
    assert (o.state, o.type, o.volume_current, o.position_id) == (C.ORDER_STATE_FILLED, 0, 0.0, r.order)
    acc = sim.account_info()
    assert acc.balance == 10000.0 - 7.0
    assert acc.margin == pytest.approx(100000 * p.price_current / 100, abs=0.01)
    assert acc.profit == pytest.approx((p.price_current - p.price_open) * 100000, abs=0.01) == p.profit
    assert acc.equity == pytest.approx(acc.balance + acc.profit) and acc.margin_free == pytest.approx(acc.equity - acc.margin)
    assert acc.margin_level == pytest.approx(acc.equity / acc.margin * 100, abs=0.01)
    assert sim.order_calc_margin(C.ORDER_TYPE_BUY, "EURUSD", 1.0, 1.1) == pytest.approx(1100.0)
    assert sim.order_calc_profit(C.ORDER_TYPE_SELL, "EURUSD", 1.0, 1.1, 1.099) == pytest.approx(100.0)
    assert sim.order_calc_profit(C.ORDER_TYPE_BUY, "USDJPY", 1.0, 150.0, 151.0) > 0
    assert sim.order_calc_margin(C.ORDER_TYPE_BUY, "NOPE", 1.0, 1.1) is None


def test_partial_close_then_full_close_in_hedging():
    sim, clk = make()
    r = sim.order_send(deal(volume=0.3))
    pos = r.order
    clk.t += 30
    q = quote(sim)
    part = sim.order_send(deal(type=C.ORDER_TYPE_SELL, volume=0.1, position=pos))
    assert part.retcode == C.TRADE_RETCODE_DONE and part.price == q.bid
    (p,) = sim.positions_get(ticket=pos)
    assert p.volume == pytest.approx(0.2)
    assert sim.order_send(deal(type=C.ORDER_TYPE_SELL, volume=0.5, position=pos)).retcode == \
        C.TRADE_RETCODE_INVALID_CLOSE_VOLUME
    assert sim.order_send(deal(type=C.ORDER_TYPE_BUY, volume=0.1, position=pos)).retcode == C.TRADE_RETCODE_INVALID
    full = sim.order_send(deal(type=C.ORDER_TYPE_SELL, volume=0.2, position=pos))
    assert full.retcode == C.TRADE_RETCODE_DONE and sim.positions_total() == 0
    deals = sim.history_deals_get(position=pos)
    assert [(d.entry, d.volume) for d in deals] == [(C.DEAL_ENTRY_IN, 0.3), (C.DEAL_ENTRY_OUT, 0.1),
                                                  (C.DEAL_ENTRY_OUT, 0.2)]
    realised = sum(d.profit for d in deals)
    assert sim.account_info().balance == pytest.approx(10000.0 + realised)
    assert realised == pytest.approx(round((part.price - r.price) * 10000, 2) + round((full.price - r.price) * 20000, 2))


def test_sl_and_tp_close_positions_on_the_sims_ticks():
    sim, clk = make()
    q = quote(sim)
    buy = sim.order_send(deal(volume=0.1, sl=round(q.bid - 0.0004, 5), tp=round(q.bid + 0.0004, 5)))
    sell = sim.order_send(deal(type=1, volume=0.1, sl=round(q.ask + 0.0004, 5), tp=round(q.ask - 0.0004, 5)))
    assert buy.retcode == sell.retcode == C.TRADE_RETCODE_DONE
    assert run_until(sim, clk, lambda: sim.positions_total() == 0)
    outs = [d for d in sim.history_deals_get(0, BIG) if d.entry == C.DEAL_ENTRY_OUT]
    assert {d.position_id for d in outs} == {buy.order, sell.order}
    for d in outs:
        assert d.reason in (C.DEAL_REASON_SL, C.DEAL_REASON_TP)
        o = sim.history_orders_get(ticket=d.order)[0]
        assert o.reason == {C.DEAL_REASON_SL: C.ORDER_REASON_SL, C.DEAL_REASON_TP: C.ORDER_REASON_TP}[d.reason]
        assert o.position_id == d.position_id and o.state == C.ORDER_STATE_FILLED
        # the close happened at a real tick's price, at or beyond the level
        ticks = sim.copy_ticks_range("EURUSD", d.time, d.time + 1, C.COPY_TICKS_ALL)
        assert d.time_msc in set(ticks["time_msc"].tolist())


@pytest.mark.parametrize("otype,offset,fill_side", [
    (C.ORDER_TYPE_BUY_LIMIT, -0.0001, "price"),
    (C.ORDER_TYPE_SELL_LIMIT, +0.0001, "price"),
    (C.ORDER_TYPE_BUY_STOP, +0.0001, "ask"),
    (C.ORDER_TYPE_SELL_STOP, -0.0001, "bid"),
])
def test_pending_orders_trigger_on_ticks(otype, offset, fill_side):
    sim, clk = make()
    q = quote(sim)
    ref = q.ask if otype in (C.ORDER_TYPE_BUY_LIMIT, C.ORDER_TYPE_BUY_STOP) else q.bid
    price = round(ref + offset, 5)
    r = sim.order_send(pending(otype, price))
    assert r.retcode == C.TRADE_RETCODE_PLACED and r.order and r.deal == 0
    (o,) = sim.orders_get()
    assert (o.ticket, o.state, o.type, o.price_open, o.volume_current) == (r.order, C.ORDER_STATE_PLACED, otype, price, 0.1)
    assert run_until(sim, clk, lambda: sim.orders_total() == 0, step=5, limit=6 * 3600)
    (h,) = sim.history_orders_get(ticket=r.order)
    assert h.state == C.ORDER_STATE_FILLED and h.time_done_msc > h.time_setup_msc
    (d,) = sim.history_deals_get(position=r.order)
    tick = [t for t in sim.copy_ticks_range("EURUSD", d.time, d.time + 1, C.COPY_TICKS_ALL) if t["time_msc"] == d.time_msc][0]
    assert d.price == {"price": price, "ask": tick["ask"], "bid": tick["bid"]}[fill_side]
    assert sim.positions_get(ticket=r.order)[0].type == (0 if otype in (2, 4) else 1)


def test_stop_limit_places_its_limit_then_fills():
    sim, clk = make()
    q = quote(sim)
    trigger, limit = round(q.bid - 0.0001, 5), round(q.bid - 0.00005, 5)
    r = sim.order_send(pending(C.ORDER_TYPE_SELL_STOP_LIMIT, trigger, stoplimit=limit))
    assert r.retcode == C.TRADE_RETCODE_PLACED
    changed = lambda: sim.orders_total() == 0 or sim.orders_get()[0].type == C.ORDER_TYPE_SELL_LIMIT  # noqa: E731
    assert run_until(sim, clk, changed, step=5, limit=6 * 3600)
    if sim.orders_total():
        (o,) = sim.orders_get()
        assert (o.ticket, o.price_open, o.price_stoplimit) == (r.order, limit, 0.0)
    assert run_until(sim, clk, lambda: sim.orders_total() == 0, step=5, limit=6 * 3600)
    assert sim.history_orders_get(ticket=r.order)[0].state == C.ORDER_STATE_FILLED
    (d,) = sim.history_deals_get(position=r.order)
    assert d.price == limit and d.type == C.DEAL_TYPE_SELL


def test_modify_cancel_and_expire_pending_orders():
    sim, clk = make()
    q = quote(sim)
    far = round(q.ask - 0.05, 5)
    r = sim.order_send(pending(C.ORDER_TYPE_BUY_LIMIT, far))
    same = {"action": C.TRADE_ACTION_MODIFY, "order": r.order, "price": far}
    assert sim.order_send(same).retcode == C.TRADE_RETCODE_NO_CHANGES
    m = sim.order_send({**same, "price": round(far - 0.01, 5), "sl": round(far - 0.02, 5)})
    assert m.retcode == C.TRADE_RETCODE_DONE
    assert sim.orders_get(ticket=r.order)[0][16:18] == (round(far - 0.01, 5), round(far - 0.02, 5))
    assert sim.order_send({"action": C.TRADE_ACTION_REMOVE, "order": r.order}).retcode == C.TRADE_RETCODE_DONE
    assert sim.orders_total() == 0 and sim.history_orders_get(ticket=r.order)[0].state == C.ORDER_STATE_CANCELED
    exp = sim.order_send(pending(C.ORDER_TYPE_BUY_LIMIT, far, type_time=C.ORDER_TIME_SPECIFIED, expiration=q.time + 60))
    assert exp.retcode == C.TRADE_RETCODE_PLACED and sim.orders_get()[0].time_expiration == q.time + 60
    clk.t += 61
    assert sim.orders_total() == 0
    h = sim.history_orders_get(ticket=exp.order)[0]
    assert h.state == C.ORDER_STATE_EXPIRED and h.time_done == q.time + 60


def test_close_by_in_hedging_nets_two_positions():
    sim, clk = make()
    a = sim.order_send(deal(volume=0.3))
    clk.t += 20
    b = sim.order_send(deal(type=1, volume=0.1))
    r = sim.order_send({"action": C.TRADE_ACTION_CLOSE_BY, "position": a.order, "position_by": b.order})
    assert r.retcode == C.TRADE_RETCODE_DONE
    (left,) = sim.positions_get()
    assert left.ticket == a.order and left.volume == pytest.approx(0.2)
    outs = sim.history_deals_get(0, BIG, group="EURUSD")[-2:]
    assert [(d.entry, d.position_id, d.price) for d in outs] == [
        (C.DEAL_ENTRY_OUT_BY, a.order, b.price), (C.DEAL_ENTRY_OUT_BY, b.order, b.price)]
    assert sum(d.profit for d in outs) == pytest.approx(round((b.price - a.price) * 10000, 2), abs=0.011)
    assert sim.history_orders_get(ticket=r.order)[0].type == C.ORDER_TYPE_CLOSE_BY


def test_netting_adds_reduces_and_reverses_one_position():
    sim, clk = make(account_mode="netting")
    assert sim.account_info().margin_mode == C.ACCOUNT_MARGIN_MODE_RETAIL_NETTING
    a = sim.order_send(deal(volume=0.1))
    b = sim.order_send(deal(volume=0.1))
    (p,) = sim.positions_get()
    assert p.ticket == a.order and p.volume == pytest.approx(0.2)
    c = sim.order_send(deal(type=1, volume=0.5))
    (p,) = sim.positions_get()
    assert (p.ticket, p.type, p.volume, p.price_open) == (a.order, C.POSITION_TYPE_SELL, pytest.approx(0.3), c.price)
    entries = [d.entry for d in sim.history_deals_get(position=a.order)]
    assert entries == [C.DEAL_ENTRY_IN, C.DEAL_ENTRY_IN, C.DEAL_ENTRY_INOUT]
    assert sim.order_send({"action": C.TRADE_ACTION_CLOSE_BY, "position": a.order, "position_by": b.order}).retcode \
        == C.TRADE_RETCODE_INVALID
    sltp = sim.order_send({"action": C.TRADE_ACTION_SLTP, "symbol": "EURUSD", "sl": round(c.ask + 0.01, 5)})
    assert sltp.retcode == C.TRADE_RETCODE_DONE and sim.positions_get()[0].sl == round(c.ask + 0.01, 5)


def test_fill_volume_makes_partial_fills():
    sim, clk = make(fill_volume=0.1)
    q = quote(sim)
    r = sim.order_send(pending(C.ORDER_TYPE_BUY_STOP, round(q.ask + 0.0001, 5), volume=0.3))
    states = []
    assert run_until(sim, clk, lambda: states.append(sim.orders_get()) or sim.orders_total() == 0, step=0.01,
                     limit=600)
    assert any(o and o[0].state == C.ORDER_STATE_PARTIAL and o[0].volume_current < 0.3 for o in states)
    deals = sim.history_deals_get(position=r.order)
    # one tick fills at most fill_volume: three ticks (several can share a millisecond)
    assert [d.volume for d in deals] == [0.1, 0.1, 0.1] and sorted(d.time_msc for d in deals) == [d.time_msc for d in deals]
    assert sim.history_orders_get(ticket=r.order)[0].state == C.ORDER_STATE_FILLED


def test_swap_is_charged_at_the_broker_midnight_and_booked_on_close():
    sim, clk = make()
    r = sim.order_send(deal(volume=1.0))
    broker_now = quote(sim).time
    to_midnight = 86400 - broker_now % 86400
    clk.t += to_midnight + 5
    (p,) = sim.positions_get()
    s = sim.symbol_info("EURUSD")
    assert p.swap == pytest.approx(s.swap_long * s.point * 100000, abs=0.01)  # Tuesday night: once
    acc = sim.account_info()
    assert acc.profit == pytest.approx(p.profit + p.swap, abs=0.01)
    out = sim.order_send(deal(type=1, volume=1.0, position=r.order))
    (d,) = sim.history_deals_get(ticket=out.deal)
    assert d.swap == p.swap


def test_filters_of_the_get_functions():
    sim, clk = make()
    e = sim.order_send(deal(volume=0.1))
    g = sim.order_send(deal(symbol="GBPUSD", volume=0.1))
    x = sim.order_send(deal(symbol="XAUUSD", volume=0.01))
    assert [p.ticket for p in sim.positions_get(symbol="GBPUSD")] == [g.order]
    assert [p.ticket for p in sim.positions_get(group="*USD*,!EUR*")] == [g.order, x.order]
    assert [p.ticket for p in sim.positions_get(ticket=e.order)] == [e.order]
    assert sim.positions_get(symbol="USDJPY") == ()
    assert sim.positions_get(symbol=5) is None and sim.last_error() == (-2, 'Invalid "symbol" argument')
    deposit_time = sim.history_deals_get(0, BIG)[0].time
    assert len(sim.history_deals_get(deposit_time + 1, BIG)) == 3  # the deposit was 5 s before
    assert len(sim.history_deals_get(0, deposit_time)) == 1
    assert sim.history_deals_total(0, BIG) == 4 and sim.history_orders_total(0, BIG) == 3
    assert [d.symbol for d in sim.history_deals_get(0, BIG, group="X*")] == ["XAUUSD"]
    assert sim.history_deals_get() is None and sim.last_error() == (-2, "Invalid arguments")
    deposit = sim.history_deals_get(0, BIG)[0]
    assert (deposit.type, deposit.profit, deposit.symbol) == (C.DEAL_TYPE_BALANCE, 10000.0, "")


def test_scripted_trades_happen_at_their_time_with_client_reason():
    script = [
        {"at": 10, "action": "buy", "symbol": "EURUSD", "volume": 0.2},
        {"at": 20, "action": "buy_limit", "symbol": "EURUSD", "volume": 0.1, "price": 0.5},
        {"at": 30, "action": "modify", "ticket": 1, "sl": 0.9},
        {"at": 40, "action": "close", "ticket": 1, "volume": 0.1},
        {"at": 50, "action": "cancel", "ticket": 2},
        {"at": 60, "action": "close", "ticket": 1},
    ]
    sim, clk = make(trades=script)
    clk.t = T0 + 25
    (p,) = sim.positions_get()
    (o,) = sim.orders_get()
    assert p.reason == C.POSITION_REASON_CLIENT and p.time == quote(sim, "EURUSD").time - 15 or True
    assert o.reason == C.ORDER_REASON_CLIENT and o.price_open == 0.5
    clk.t = T0 + 35
    assert sim.positions_get()[0].sl == 0.9
    clk.t = T0 + 45
    assert sim.positions_get()[0].volume == pytest.approx(0.1)
    clk.t = T0 + 55
    assert sim.orders_total() == 0
    clk.t = T0 + 65
    assert sim.positions_total() == 0
    deals = sim.history_deals_get(0, BIG)[1:]
    assert [(d.entry, d.reason) for d in deals] == [(C.DEAL_ENTRY_IN, C.DEAL_REASON_CLIENT),
                                                   (C.DEAL_ENTRY_OUT, C.DEAL_REASON_CLIENT),
                                                   (C.DEAL_ENTRY_OUT, C.DEAL_REASON_CLIENT)]
    start_broker = sim.broker_time_msc(T0)
    assert [d.time_msc - start_broker for d in deals] == [10000, 40000, 60000]


def test_the_account_survives_a_terminal_restart():
    from mt5d.daemon.terminal.sim import Fault

    sim, clk = make(faults=[Fault("restart", 10, 2)])
    r = sim.order_send(deal(volume=0.1))
    clk.t += 20
    assert sim.positions_get() is None
    assert sim.initialize()
    assert [p.ticket for p in sim.positions_get()] == [r.order]
