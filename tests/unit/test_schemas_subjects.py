"""Subject tokens and builders: the escaping is reversible and never yields a NATS metacharacter."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mt5d import subjects as S
from mt5d.market import TIMEFRAMES


@pytest.mark.parametrize(
    "raw, token",
    [
        ("EURUSD", "EURUSD"),
        ("EURUSD.m", "EURUSD=2Em"),
        ("#AAPL", "=23AAPL"),
        ("#US30", "=23US30"),
        ("a=b", "a=3Db"),
        ("US 500", "US=20500"),
        ("BTC/USD*", "BTC=2FUSD=2A"),
        ("GER40>", "GER40=3E"),
        ("é", "=C3=A9"),
        ("Si-12.23_x", "Si-12=2E23_x"),
    ],
)
def test_escape_table(raw, token):
    assert S.escape_token(raw) == token
    assert S.unescape_token(token) == raw


@given(st.text(min_size=1))
def test_escape_round_trips_any_unicode(raw):
    token = S.escape_token(raw)
    assert S.unescape_token(token) == raw
    assert re.fullmatch(r"[A-Za-z0-9_=-]+", token)
    assert not any(c in token for c in ".*> \t\r\n")


@given(st.text(min_size=1), st.text(min_size=1))
def test_escape_is_injective(a, b):
    if a != b:
        assert S.escape_token(a) != S.escape_token(b)


def test_empty_symbol_is_refused():
    with pytest.raises(ValueError):
        S.escape_token("")


@pytest.mark.parametrize("token", ["", "a.b", "=2", "=2e", "=ZZ", "=41", "a b", "=FF"])
def test_unescape_refuses_what_escape_never_makes(token):
    with pytest.raises(ValueError):
        S.unescape_token(token)


def test_builders():
    assert S.tick("mt5", 10001234, "EURUSD.m") == "mt5.10001234.tick.EURUSD=2Em"
    assert S.candle("mt5", "demo", "#AAPL", "M15") == "mt5.demo.candle.=23AAPL.M15"
    assert S.candle_forming("mt5", "demo", "EURUSD", "H1") == "mt5.demo.candle_forming.EURUSD.H1"
    assert S.health("mt5", "demo") == "mt5.demo.health"
    assert S.book("mt5", "demo", "#AAPL") == "mt5.demo.book.=23AAPL"
    assert S.rpc("mt5", "demo", "candles") == "mt5.demo.rpc.candles"
    assert S.rpc_group("prod.mt5", "demo") == "prod.mt5.demo.rpc"
    # an alias with a dot is one token too
    assert S.health("mt5", "ic.live") == "mt5.ic=2Elive.health"


def test_wildcards():
    assert S.all_ticks() == "mt5.*.tick.*"
    assert S.all_ticks("mt5", 42) == "mt5.42.tick.*"
    assert S.all_candles(timeframe="M1") == "mt5.*.candle.*.M1"
    assert S.all_candles("x", "a") == "x.a.candle.*.*"
    assert S.all_candles_forming() == "mt5.*.candle_forming.*.*"
    assert S.all_health() == "mt5.*.health"
    assert S.all_books() == "mt5.*.book.*" and S.all_books("mt5", 7) == "mt5.7.book.*"
    assert S.everything("mt5", "a") == "mt5.a.>"


@pytest.mark.parametrize("prefix", ["", "a..b", ".mt5", "mt5.", "mt*", "m>", "m t5"])
def test_bad_prefix(prefix):
    with pytest.raises(ValueError):
        S.tick(prefix, "a", "EURUSD")


def test_bad_timeframe_and_endpoint():
    with pytest.raises(ValueError):
        S.candle("mt5", "a", "EURUSD", "M7")
    with pytest.raises(ValueError):
        S.rpc("mt5", "a", "price.x")


def test_every_timeframe_is_a_plain_token():
    for tf in TIMEFRAMES:
        assert S.candle("mt5", "a", "X", tf).endswith("." + tf)


def test_subjects_class_matches_functions_and_caches():
    sub = S.Subjects("mt5", 10001234)
    assert sub.tick("EURUSD.m") == S.tick("mt5", 10001234, "EURUSD.m")
    assert sub.tick("EURUSD.m") is sub.tick("EURUSD.m")
    assert sub.candle("#AAPL", "M15") == S.candle("mt5", 10001234, "#AAPL", "M15")
    assert sub.candle_forming("#AAPL", "M15") == S.candle_forming("mt5", 10001234, "#AAPL", "M15")
    assert sub.health() == S.health("mt5", 10001234)
    assert sub.book("EURUSD.m") == S.book("mt5", 10001234, "EURUSD.m") and sub.book("X") is sub.book("X")
    assert sub.all_books() == "mt5.10001234.book.*"
    assert sub.rpc("account") == S.rpc("mt5", 10001234, "account")
    assert sub.rpc_group() == "mt5.10001234.rpc"
    assert sub.all_ticks() == "mt5.10001234.tick.*"
    assert sub.all_candles("M5") == "mt5.10001234.candle.*.M5"
    assert sub.everything() == "mt5.10001234.>"
    with pytest.raises(ValueError):
        sub.candle("EURUSD", "X1")


@given(st.text(min_size=1), st.sampled_from(TIMEFRAMES), st.text(min_size=1))
def test_parse_inverts_builders(symbol, tf, account):
    sub = S.Subjects("p.q", account)
    assert sub.parse(sub.tick(symbol)) == S.Parsed(account, "tick", symbol)
    assert sub.parse(sub.candle(symbol, tf)) == S.Parsed(account, "candle", symbol, tf)
    assert sub.parse(sub.candle_forming(symbol, tf)) == S.Parsed(account, "candle_forming", symbol, tf)
    assert sub.parse(sub.health()) == S.Parsed(account, "health")
    assert sub.parse(sub.book(symbol)) == S.Parsed(account, "book", symbol)
    assert sub.parse(sub.rpc("ticks")) == S.Parsed(account, "rpc", endpoint="ticks")


@pytest.mark.parametrize("subject", ["other.a.tick.X", "mt5.a.tick", "mt5.a.tick.X.M1", "mt5.a.bogus.X",
                                     "mt5.a.candle.X.M7", "mt5.a.health.x", "mt5.a.book",
                                     "mt5.a.book.X.Y"])
def test_parse_refuses_foreign_subjects(subject):
    with pytest.raises(ValueError):
        S.parse(subject)


def test_account_subjects_build_and_parse():
    from mt5d import subjects as S

    assert S.account("mt5", "10001234") == "mt5.10001234.account"
    assert S.position("mt5", "1", "EURUSD.m") == "mt5.1.position.EURUSD=2Em"
    assert S.order("mt5", "1", "#AAPL") == "mt5.1.order.=23AAPL"
    assert S.deal("mt5", "1", "EURUSD") == "mt5.1.deal.EURUSD" and S.deal("mt5", "1", "") == "mt5.1.deal.="
    assert S.parse("mt5.1.deal.=") == S.Parsed("1", "deal", "")
    assert S.parse("mt5.1.position.EURUSD=2Em") == S.Parsed("1", "position", "EURUSD.m")
    assert S.parse("mt5.1.account") == S.Parsed("1", "account")
    with pytest.raises(ValueError):
        S.parse("mt5.1.account.EURUSD")
    subj = S.Subjects("mt5", "1")
    assert (subj.account_state(), subj.position("X.Y"), subj.deal(""), subj.all_deals()) == (
        "mt5.1.account", "mt5.1.position.X=2EY", "mt5.1.deal.=", "mt5.1.deal.*")
    assert "mt5.*.rpc.positions" in S.account_private() and "mt5.*.deal.*" in S.account_private()


def test_stored_subjects_come_from_one_function():
    from mt5d.subjects import STORED_KINDS, last_value_stream, stored_subjects, stream_name

    assert set(STORED_KINDS) >= {"tick", "candle", "position", "order", "deal"}  # account events join by themselves
    assert not {"candle_forming", "book", "health", "rpc"} & set(STORED_KINDS)
    assert stored_subjects("mt5", "123", ("tick", "candle")) == ["mt5.123.tick.*", "mt5.123.candle.*.*"]
    assert S.Subjects("mt5", "123").stored() == stored_subjects("mt5", "123")
    with pytest.raises(ValueError):
        stored_subjects("mt5", "123", ("health",))
    assert stream_name(123) == "MT5_123" and last_value_stream("MT5_123") == "MT5_123_LAST"
    assert S.Subjects("mt5", "1").last_value() == ["mt5.1.tick.*", "mt5.1.candle_forming.*.*"]
