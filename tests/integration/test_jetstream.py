"""JetStream on: mt5d provisions its streams (create, update, refuse with 78, never delete),
"confirmed" means stored, and the embedded server keeps its store under the state directory."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import anyio
import msgspec
import nats
import nats.js.errors
import pytest

from mt5d.daemon.config import parse_config
from mt5d.daemon.jetstream import ProvisionError, provision
from mt5d.subjects import Subjects
from mt5d.daemon.app import Daemon
from tests.integration.helpers import (Collector, assert_same_as_history, eventually, make_config, running,
                                       stored_ticks, unique_account)

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]
SYMBOLS = ["EURUSD", "EURUSD.m"]


@pytest.fixture
def anyio_backend():
    return "asyncio"


def js_config(**values):
    return parse_config({"jetstream": {"enabled": True, **values}}, env={}).jetstream


async def test_provision_creates_updates_and_refuses_without_deleting(fresh_nats):
    account = unique_account("prov")
    subjects = Subjects("mt5", account)
    nc = await nats.connect(fresh_nats.url)
    js = nc.jetstream()
    try:
        names = await provision(js, js_config(max_age=3600.0), subjects)
        assert names == [f"MT5_{account}", f"MT5_{account}_LAST"]
        main = (await js.stream_info(names[0])).config
        assert sorted(main.subjects) == sorted(subjects.stored())  # every stored kind, account events too
        assert {f"mt5.{account}.tick.*", f"mt5.{account}.candle.*.*", f"mt5.{account}.deal.*"} <= set(main.subjects)
        assert main.max_age == 3600.0 and main.duplicate_window == 300.0 and main.allow_direct
        last = (await js.stream_info(names[1])).config
        assert last.max_msgs_per_subject == 1 and last.allow_direct
        assert last.subjects == [f"mt5.{account}.candle_forming.*.*"] and last.sources[0].name == names[0]
        await js.publish(f"mt5.{account}.tick.EURUSD", b"{}", headers={"Nats-Msg-Id": "x"})
        # What may change, changes; the stored message stays.
        await provision(js, js_config(max_age=7200.0, duplicate_window=60.0), subjects)
        info = await js.stream_info(names[0])
        assert info.config.max_age == 7200.0 and info.config.duplicate_window == 60.0
        assert info.state.messages == 1
        # What the server refuses to change is an error naming the field; the stream is kept.
        with pytest.raises(ProvisionError) as err:
            await provision(js, js_config(max_age=7200.0, duplicate_window=60.0, storage="memory"), subjects)
        assert err.value.config and "jetstream.storage" in str(err.value) and names[0] in str(err.value)
        assert (await js.stream_info(names[0])).state.messages == 1
    finally:
        await nc.close()


async def _quiet(err) -> None:  # the server is not up yet: nats-py would print each refusal
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_config(path: Path, url: str, account: str, **extra) -> Path:
    lines = ['[terminal]\nbackend = "sim"\nlogin = 10001234\n',
             f'[stream]\nsymbols = ["EURUSD"]\ntimeframes = ["M1"]\nstate_dir = "{path.parent / "state"}"\n',
             f'[nats]\nurl = "{url}"\naccount = "{account}"\nembedded = {str(extra.pop("embedded", False)).lower()}\n',
             "[jetstream]\nenabled = true\n" + "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in extra.items())]
    path.write_text("\n".join(lines))
    return path


async def test_refused_stream_change_exits_78_and_keeps_the_stream(fresh_nats, tmp_path):
    account = unique_account("refuse")
    nc = await nats.connect(fresh_nats.url)
    js = nc.jetstream()
    await provision(js, js_config(storage="file"), Subjects("mt5", account))
    await js.publish(f"mt5.{account}.tick.EURUSD", b"{}")
    cfg = _write_config(tmp_path / "c.toml", fresh_nats.url, account, storage="memory")
    res = await anyio.run_process([sys.executable, "-m", "mt5d.daemon.cli", "run", "--config", str(cfg)],
                                  check=False, cwd=ROOT)
    assert res.returncode == 78, res.stderr.decode()[-2000:]
    assert b"mt5d: config error: jetstream.storage" in res.stderr
    assert (await js.stream_info(f"MT5_{account}")).state.messages == 1
    await nc.close()


async def test_embedded_server_runs_jetstream_with_its_store_under_the_state_directory(tmp_path):
    account = unique_account("embedded")
    url = f"nats://127.0.0.1:{_free_port()}"
    cfg = _write_config(tmp_path / "c.toml", url, account, embedded=True)
    proc = subprocess.Popen([sys.executable, "-m", "mt5d.daemon.cli", "run", "--config", str(cfg)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "MT5_PASSWORD": "x"})
    nc = None
    try:
        async def stored() -> int:
            try:
                return (await nc.jetstream().stream_info(f"MT5_{account}")).state.messages
            except Exception:
                return 0

        with anyio.fail_after(30):
            while nc is None:
                try:
                    nc = await nats.connect(url, connect_timeout=1, allow_reconnect=False, error_cb=_quiet)
                except Exception:
                    await anyio.sleep(0.2)
            while await stored() < 5:
                await anyio.sleep(0.1)
        assert (tmp_path / "state" / "jetstream" / "jetstream").is_dir()
        tick = await nc.jetstream().get_last_msg(f"MT5_{account}", f"mt5.{account}.tick.EURUSD")
        assert msgspec.json.decode(tick.data)["symbol"] == "EURUSD"
        assert tick.headers["Nats-Msg-Id"].startswith("EURUSD:")
    finally:
        if nc is not None:
            await nc.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)


async def test_confirmed_means_stored_refusals_are_sent_again_nothing_twice(fresh_nats, tmp_path):
    """The stream refuses for a while (full, discard new): capture state and the publisher's count
    hold; once it takes messages again, every tick is stored once, in order, and core subscribers got them."""
    from nats.js.api import DiscardPolicy

    account = unique_account("acked")
    cfg = make_config(fresh_nats.url, account, jetstream={"enabled": True, "ack_timeout": 1.0},
                      stream={"symbols": SYMBOLS, "timeframes": [], "state_dir": str(tmp_path)},
                      terminal={"sim": {"ticks_per_second": 40.0}})
    stream = f"MT5_{account}"
    col = await Collector(account).start(fresh_nats.url)
    nc = await nats.connect(fresh_nats.url)
    js = nc.jetstream()
    daemon = Daemon(cfg)
    try:
        async with running(daemon):
            await col.wait_for(lambda: len(col.ticks["EURUSD"]) >= 20, timeout=15)
            await eventually(lambda: daemon.publisher.published >= 20, timeout=15)
            info = await js.stream_info(stream)
            cfg_full = info.config
            cfg_full.discard, cfg_full.max_msgs = DiscardPolicy.NEW, info.state.messages + 5
            await js.update_stream(cfg_full)
            await eventually(lambda: daemon.publisher._stored.resent > 0, timeout=15)
            held = daemon.publisher.published
            state_before = (tmp_path / f"capture-{account}.json").read_bytes()
            await eventually(lambda: len(col.ticks["EURUSD"]) > 0 and daemon.poller.ticks_out > held + 20,
                             timeout=15)
            assert daemon.publisher.published == held  # not stored: not confirmed
            assert (tmp_path / f"capture-{account}.json").read_bytes() == state_before
            cfg_full.discard, cfg_full.max_msgs = DiscardPolicy.OLD, -1
            await js.update_stream(cfg_full)
            target = daemon.poller.ticks_out + 40
            await eventually(lambda: daemon.publisher.published >= target, timeout=20)
        for symbol, token in (("EURUSD", "EURUSD"), ("EURUSD.m", "EURUSD=2Em")):
            got = await stored_ticks(js, stream, f"mt5.{account}.tick.{token}")
            assert_same_as_history(daemon.module, symbol, got)
            core = [(t.time_msc_broker, t.index_in_ms, t.bid, t.ask) for t in col.ticks[symbol]]
            assert set(got) <= set(core)  # core subscribers saw every stored tick
        assert daemon.publisher._stored.stored >= daemon.publisher.published
    finally:
        await col.close()
        await nc.close()


async def test_nats_restart_with_jetstream_on_stores_every_tick_once(fresh_nats):
    account = unique_account("jsrestart2")
    cfg = make_config(fresh_nats.url, account, jetstream={"enabled": True},
                      stream={"symbols": SYMBOLS, "timeframes": ["M1"]},
                      terminal={"sim": {"ticks_per_second": 40.0}})
    stream = f"MT5_{account}"
    admin = await nats.connect(fresh_nats.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    js = admin.jetstream()
    daemon = Daemon(cfg)
    async with running(daemon):
        await eventually(lambda: daemon.publisher.published >= 50, timeout=15)
        fresh_nats.stop()
        await eventually(lambda: not daemon.nc.is_connected, timeout=10)
        before = daemon.poller.ticks_out
        await eventually(lambda: daemon.poller.ticks_out > before, timeout=10)
        fresh_nats.start()
        target = daemon.poller.ticks_out + 100
        await eventually(lambda: daemon.publisher.published >= target, timeout=30)
    await eventually(lambda: admin.is_connected, timeout=15)
    for symbol, token in (("EURUSD", "EURUSD"), ("EURUSD.m", "EURUSD=2Em")):
        got = await stored_ticks(js, stream, f"mt5.{account}.tick.{token}")
        assert_same_as_history(daemon.module, symbol, got)
    await admin.close()


async def test_last_value_is_answered_by_the_server_while_mt5d_is_away(fresh_nats):
    from mt5d.client import MT5Client
    from mt5d.errors import MT5ConnectionError

    account = unique_account("last")
    cfg = make_config(fresh_nats.url, account, jetstream={"enabled": True},
                      stream={"symbols": SYMBOLS, "timeframes": ["M1"], "forming_interval": 0.2},
                      terminal={"sim": {"ticks_per_second": 20.0}})
    nc = await nats.connect(fresh_nats.url)
    js = nc.jetstream()
    client = MT5Client(nc, account=account, timeout=2.0)
    daemon = Daemon(cfg)
    try:
        async with running(daemon):
            await eventually(lambda: daemon.publisher.published >= 20, timeout=15)
            live = await client.get_prices(SYMBOLS)
            assert set(live) == set(SYMBOLS) and all(p.source == "stream" for p in live.values())
            forming = f"mt5.{account}.candle_forming.EURUSD.M1"
            with anyio.fail_after(15):
                while True:
                    try:
                        bar = await js.get_last_msg(f"MT5_{account}_LAST", forming, direct=True)
                        break
                    except nats.js.errors.NotFoundError:
                        await anyio.sleep(0.1)
            assert msgspec.json.decode(bar.data)["closed"] is False
        # mt5d is stopped: the price is still answered, by the server, with its age.
        newest = {s: msgspec.json.decode((await js.get_last_msg(f"MT5_{account}", f"mt5.{account}.tick.{tok}")).data)
                  for s, tok in (("EURUSD", "EURUSD"), ("EURUSD.m", "EURUSD=2Em"))}
        away = await client.get_prices(SYMBOLS)
        for symbol in SYMBOLS:
            assert away[symbol].source == "stream"
            assert away[symbol].time_msc == newest[symbol]["time_msc_broker"]
            assert away[symbol].bid == newest[symbol]["bid"]
        one = await client.get_price("EURUSD.m")
        assert one.time_msc == newest["EURUSD.m"]["time_msc_broker"] and one.age_ms >= 0
        with pytest.raises(MT5ConnectionError):
            await client.get_price("GBPUSD")  # not stored, and no daemon to ask
    finally:
        await nc.close()


async def test_account_events_are_stored_once_with_their_identity(fresh_nats):
    """The account kinds join the stream by themselves (mt5d.subjects.STORED_KINDS): a deal is stored
    under its ticket, a position event under the run's (epoch, seq)."""
    import time as _time

    from mt5d.daemon.terminal.sim import SimTerminal

    account = unique_account("jsacct")
    sim = SimTerminal(seed=7, ticks_per_second=8.0, clock=_time.time)
    sim.add_trades([{"at": 1.0, "action": "buy", "symbol": "EURUSD", "volume": 0.1},
                    {"at": 2.0, "action": "close", "ticket": 1}])
    cfg = make_config(fresh_nats.url, account, jetstream={"enabled": True},
                      stream={"symbols": ["EURUSD"], "timeframes": [], "poll_interval": 0.1,
                              "idle_poll_interval": 0.1}, account={"interval": 0.2, "heartbeat": 2.0})
    nc = await nats.connect(fresh_nats.url)
    js = nc.jetstream()
    stream = f"MT5_{account}"
    try:
        daemon = Daemon(cfg, module=sim)
        async with running(daemon):
            with anyio.fail_after(30):
                while True:
                    info = await js.stream_info(stream, subjects_filter=f"mt5.{account}.deal.>")
                    if info.state.subjects and sum(info.state.subjects.values()) >= 2:  # in and out
                        break
                    await anyio.sleep(0.1)
        deal = await js.get_last_msg(stream, f"mt5.{account}.deal.EURUSD")
        ticket = msgspec.json.decode(deal.data)["ticket"]
        assert deal.headers["Nats-Msg-Id"] == f"deal:{ticket}"
        pos = await js.get_last_msg(stream, f"mt5.{account}.position.EURUSD")
        body = msgspec.json.decode(pos.data)
        assert body["event"] == "closed" and pos.headers["Nats-Msg-Id"] == f"position:{body['epoch']}:{body['seq']}"
        assert daemon.publisher._stored.duplicates == 0
    finally:
        await nc.close()
