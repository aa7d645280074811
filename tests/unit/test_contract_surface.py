"""The public surface: what a subscriber imports, and nothing it should not need."""

from __future__ import annotations

import subprocess
import sys

import mt5d


def test_all_names_resolve():
    for name in mt5d.__all__:
        assert getattr(mt5d, name) is not None, name


def test_importing_the_contract_pulls_in_no_daemon_code_and_no_numpy():
    code = ("import sys, mt5d, mt5d.client, mt5d.rpc; "
            "print(sorted({m for m in sys.modules if m.split('.')[0] in ('numpy', 'anyio', 'opentelemetry')"
            " or m.startswith(('mt5d.daemon', 'mt5d.actors'))}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_old_manager_names_and_the_timeframe_table():
    """The old package's names (``from mt5d import MT5SessionManager, probe``), the eight
    errors from the client module and mt5d.errors, timeframes as minutes, codes and names."""
    import mt5d.client
    import mt5d.errors
    from mt5d.rpc import timeframe_name

    assert mt5d.MT5SessionManager is mt5d.MT5Client and callable(mt5d.probe)
    for name in ("MT5InitError", "MT5AuthError", "MT5CircuitBreakerOpen", "MT5TimeoutError", "MT5DataError",
                 "MT5ConnectionError", "MT5ValidationError", "MT5StateError"):
        assert getattr(mt5d.client, name) is getattr(mt5d.errors, name) is getattr(mt5d, name)
    # The MetaTrader5 package's codes, verbatim (the daemon's constants module has them too).
    from mt5d.daemon.terminal import mt5_constants as C

    for name in mt5d.TIMEFRAMES:
        code = getattr(C, f"TIMEFRAME_{name}")
        assert getattr(mt5d.client, f"TIMEFRAME_{name}") == code == mt5d.TIMEFRAME_CODES[name]
        assert timeframe_name(code) == timeframe_name(name) == name
    assert [timeframe_name(m) for m in (1, 5, 15, 30, 60, 240, 1440, 10080, 43200)] == [
        "M1", "M5", "M15", "M30", "H1", "H4", "D1", "W1", "MN1"]
    import pytest

    for bad in (7, 0, True, "M7", 15.0):
        with pytest.raises(mt5d.MT5ValidationError):
            timeframe_name(bad)


def test_result_structs_have_asdict_and_stay_frozen():
    import msgspec
    import pytest

    from mt5d.client import Price
    from mt5d.rpc import Quote

    t = mt5d.Tick(symbol="EURUSD", time_msc_broker=1_700_000_000_123, time_utc_ms=1_699_992_800_123, bid=1.1,
                  ask=1.2, last=0.0, volume=1, volume_real=1.0, flags=6, index_in_ms=2)
    p = Price.from_quote(Quote(tick=t, age_ms=4))
    assert (p.time, p.time_msc, p.bid, p.index_in_ms, p.age_ms) == (1_700_000_000, 1_700_000_000_123, 1.1, 2, 4)
    assert list(p._asdict()) == list(Price.__struct_fields__) and t._asdict()["bid"] == 1.1
    assert msgspec.json.decode(msgspec.json.encode(t), type=mt5d.Tick) == t  # the wire is unchanged
    assert b'"time_msc":' not in msgspec.json.encode(t) and b'"time":' not in msgspec.json.encode(t)  # properties are not fields
    with pytest.raises(AttributeError):
        p.bid = 0.0
