"""Config: the default file is valid; a bad one is refused with the key, the value and what is expected."""

import subprocess
import sys
from pathlib import Path

import pytest

from mt5d.daemon.config import ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]


def test_repository_config_is_valid_and_embedded_sim():
    cfg = load_config(ROOT / "config.toml", env={})
    assert cfg.terminal.backend == "sim"
    assert cfg.nats.embedded is True


def problems(raw, env=None):
    with pytest.raises(ConfigError) as info:
        parse_config(raw, env=env or {})
    return info.value.problems


def test_each_problem_names_the_key():
    out = problems({"terminal": {"backend": "wine"}, "breaker": {"max_failures": "three"}, "bogus": {}})
    text = "\n".join(out)
    assert len(out) == 3, out
    assert "terminal.backend: 'wine' is not valid (Invalid enum value 'wine')" in text
    assert "breaker.max_failures: 'three' is not valid (Expected `int`, got `str`)" in text
    assert "bogus: unknown key" in text


def test_unknown_key_is_refused():
    out = problems({"nats": {"urll": "nats://x"}})
    assert len(out) == 1 and out[0].startswith("nats.urll: unknown key (expected one of: url,")


def test_cross_field_checks():
    out = problems({"stream": {"timeframes": ["M7"], "server_utc_offset": "2h"},
                    "breaker": {"backoff_base_seconds": 100, "backoff_max_seconds": 10},
                    "nats": {"inbox_prefix": "_INBOX.>"}})
    text = "\n".join(out)
    assert "nats.inbox_prefix: '_INBOX.>'" in text
    assert "stream.timeframes: 'M7'" in text
    assert "stream.server_utc_offset: '2h'" in text
    assert "breaker.backoff_max_seconds" in text


def test_environment_overrides():
    cfg = parse_config({}, env={"MT5_LOGIN": "5551234", "MT5_SERVER": "Broker-Live", "NATS_URL": "nats://h:1"})
    assert cfg.terminal.login == 5551234 and cfg.terminal.server == "Broker-Live"
    assert cfg.nats.url == "nats://h:1"


def test_check_config_exits_78_with_one_line_per_problem(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[terminal]\nbackend = "wine"\nlogin = -1\n[stream]\npoll_interval = 0\n')
    res = subprocess.run([sys.executable, "-m", "mt5d.daemon.cli", "check-config", "--config", str(bad)],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 78
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 3, lines
    assert all(line.startswith("mt5d: config error: ") for line in lines)
    assert "terminal.backend: 'wine'" in lines[0]
    assert "terminal.login: -1 is not valid (Expected `int` >= 0)" in lines[1]
    assert "stream.poll_interval: 0 is not valid (Expected `float` > 0.0)" in lines[2]
    ok = subprocess.run([sys.executable, "-m", "mt5d.daemon.cli", "check-config", "--config", str(ROOT / "config.toml")],
                        capture_output=True, text=True, cwd=ROOT)
    assert ok.returncode == 0, ok.stderr


def test_breaker_settings_are_checked_by_the_breakers_own_rules_and_all_listed():
    with pytest.raises(ConfigError) as err:
        parse_config({"breaker": {"max_failures": 0, "backoff_base_seconds": 60, "backoff_max_seconds": 30,
                                  "jitter": 0.7}}, env={})
    problems = err.value.problems
    assert any(p.startswith("breaker.max_failures: 0") for p in problems)
    assert any(p.startswith("breaker.backoff_max_seconds: 30") for p in problems)
    assert any(p.startswith("breaker.jitter: 0.7") for p in problems)


def test_books_must_be_streamed_symbols_and_depths_are_bounded():
    with pytest.raises(ConfigError) as info:
        parse_config({"stream": {"symbols": ["EURUSD"], "books": ["EURUSD", "GBPUSD"]}}, env={})
    assert info.value.problems == [
        "stream.books: 'GBPUSD' is not in stream.symbols (a book needs its symbol's quotes)"]
    with pytest.raises(ConfigError) as info:
        parse_config({"stream": {"book_interval": -1}, "terminal": {"sim": {"book_depth": {"EURUSD": 65}}}},
                     env={})
    assert [p.split(":")[0] for p in info.value.problems] == ["stream.book_interval", "terminal.sim.book_depth"]
    cfg = parse_config({"stream": {"symbols": ["EURUSD"], "books": ["EURUSD"], "book_interval": 0.5},
                        "terminal": {"sim": {"book_depth": {"EURUSD": 3}}}}, env={})
    assert cfg.stream.books == ("EURUSD",) and cfg.terminal.sim.book_depth == {"EURUSD": 3}
def test_scripted_trades_are_checked_naming_the_field():
    out = problems({"terminal": {"sim": {"trades": [
        {"at": 1, "action": "buy", "symbol": "NOPE", "volume": 0.1},
        {"at": 2, "action": "sell", "symbol": "EURUSD"},
        {"at": 3, "action": "buy_limit", "symbol": "EURUSD", "volume": 0.1},
        {"at": 4, "action": "close"},
        {"at": 5, "action": "cancel", "ticket": 9},
        {"at": 6, "action": "teleport", "symbol": "EURUSD"},
    ]}}})
    assert any(p.startswith("terminal.sim.trades[5].action") for p in out), out
    ok = parse_config({"terminal": {"sim": {"account_mode": "netting", "trades": [
        {"at": 1, "action": "buy", "symbol": "EURUSD", "volume": 0.1},
        {"at": 2, "action": "close", "ticket": 1}]}}}, env={})
    assert ok.terminal.sim.trades[1].ticket == 1 and ok.terminal.sim.account_mode == "netting"
    out = problems({"terminal": {"sim": {"trades": [
        {"at": 1, "action": "buy", "symbol": "NOPE", "volume": 0.1},
        {"at": 2, "action": "sell", "symbol": "EURUSD"},
        {"at": 3, "action": "buy_limit", "symbol": "EURUSD", "volume": 0.1},
        {"at": 4, "action": "close"},
        {"at": 5, "action": "cancel", "ticket": 9}]}}})
    assert [p.split(":")[0] for p in out] == [
        "terminal.sim.trades[0].symbol", "terminal.sim.trades[1].volume", "terminal.sim.trades[2].price",
        "terminal.sim.trades[3].ticket", "terminal.sim.trades[4].ticket"], out


def test_shipped_config_keeps_history_in_jetstream():
    cfg = load_config(ROOT / "config.toml", env={})
    from mt5d.subjects import STORED_KINDS

    assert cfg.jetstream.enabled and cfg.jetstream.subjects == STORED_KINDS and "tick" in STORED_KINDS
    assert cfg.jetstream.max_age == 7 * 86400


def test_jetstream_and_ha_checks_name_the_field():
    text = "\n".join(problems({"jetstream": {"subjects": ["tick", "candle_forming"], "storage": "disk",
                                             "replicas": 7, "stream": "a.b"},
                               "ha": {"enabled": True}}))
    assert "jetstream.storage: 'disk'" in text and "jetstream.replicas: 7" in text
    text = "\n".join(problems({"jetstream": {"subjects": ["tick", "candle_forming"], "stream": "a.b"},
                               "ha": {"enabled": True, "bucket": "x y"}}))
    assert "jetstream.subjects: 'candle_forming' is not stored" in text
    assert "jetstream.stream: 'a.b'" in text and "ha.bucket: 'x y'" in text
    assert "ha.enabled: needs jetstream.enabled" in text
