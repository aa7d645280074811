"""Replay: a late subscriber gets what was stored since a point in time, then live, with no gap
and no repeat at the seam; ``mt5d tail --since``."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import anyio
import msgspec
import nats
import pytest

from mt5d.client import MT5Client
from mt5d.daemon.app import Daemon
from tests.integration.helpers import assert_same_as_history, eventually, make_config, running, unique_account

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]
SYMBOLS = ["EURUSD", "EURUSD.m"]
TEN_MINUTES = 600.0


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def test_late_subscriber_replays_ten_minutes_then_joins_live_no_gap_no_repeat(fresh_nats, tmp_path):
    account = unique_account("replay")
    cfg = make_config(fresh_nats.url, account, jetstream={"enabled": True},
                      stream={"symbols": SYMBOLS, "timeframes": [], "state_dir": str(tmp_path),
                              "resume_max_gap": 900.0},
                      terminal={"sim": {"ticks_per_second": 5.0}})
    # Ten minutes of history in the stream: a first run whose clocks are 10 minutes behind,
    # then a run on today's clock that resumes from where the first stopped.
    past = Daemon(cfg, wall_clock=lambda: time.time() - TEN_MINUTES - 5)
    async with running(past):
        await eventually(lambda: past.publisher.published >= 5, timeout=15)
    daemon = Daemon(cfg)
    nc = await nats.connect(fresh_nats.url)
    client = MT5Client(nc, account=account)
    got: dict[str, list] = {s: [] for s in SYMBOLS}
    try:
        async with running(daemon):
            await eventually(lambda: daemon.publisher.published >= 2000, timeout=30)  # the gap is being stored
            since_ms = int(time.time() * 1000 - TEN_MINUTES * 1000)
            joined_at = time.time() * 1000
            async with client.ticks(SYMBOLS, since="10m") as replay:
                with anyio.fail_after(60):
                    async for tick in replay:
                        got[tick.symbol].append(tick)
                        # Live for a while: ticks that happened after the subscriber joined.
                        if all(len(v) and v[-1].time_utc_ms > joined_at + 2000 for v in got.values()):
                            break
        off = daemon.poller.utc.offset_ms
        for symbol in SYMBOLS:
            ticks = got[symbol]
            # We stopped reading somewhere inside a millisecond: judge up to the one before.
            ticks = [t for t in ticks if t.time_msc_broker < ticks[-1].time_msc_broker]
            assert ticks[0].time_utc_ms >= since_ms
            seq = [(t.time_msc_broker, t.index_in_ms, t.bid, t.ask) for t in ticks]
            assert len(set(seq)) == len(seq)  # zero repeats
            assert_same_as_history(daemon.module, symbol, seq)  # zero gaps, in order
            # It starts at the first tick of the window (the replay covers all ten minutes).
            lo = (since_ms + off) // 1000
            hist = daemon.module.copy_ticks_range(symbol, lo - 1, lo + 120, -1)
            first = next(int(m) for m in hist["time_msc"] if int(m) - off >= since_ms)
            assert seq[0][0] == first
            assert ticks[-1].time_utc_ms - ticks[0].time_utc_ms >= TEN_MINUTES * 1000 - 5000
    finally:
        await nc.close()


async def test_replay_drops_what_the_stream_holds_twice(fresh_nats):
    """De-duplication on the tick identity: a message stored twice (past the duplicate window, or
    published without an id) reaches the reader once."""
    from mt5d.daemon.config import parse_config
    from mt5d.daemon.jetstream import provision
    from mt5d.market import Tick
    from mt5d.subjects import Subjects

    account = unique_account("dups")
    nc = await nats.connect(fresh_nats.url)
    js = nc.jetstream()
    await provision(js, parse_config({"jetstream": {"enabled": True}}, env={}).jetstream, Subjects("mt5", account))
    now = int(time.time() * 1000)
    ticks = [Tick(symbol="EURUSD", time_msc_broker=now + i // 2, time_utc_ms=now + i // 2, bid=1.0 + i, ask=2.0,
                  last=0.0, volume=0, volume_real=0.0, flags=6, index_in_ms=i % 2) for i in range(6)]
    for t in [*ticks[:4], ticks[2], ticks[3], *ticks[4:]]:  # 2 and 3 twice, no msg id
        await js.publish(f"mt5.{account}.tick.EURUSD", msgspec.json.encode(t))
    client = MT5Client(nc, account=account)
    out = []
    async with client.ticks("EURUSD", since=now - 1000) as replay:
        with anyio.fail_after(10):
            async for t in replay:
                out.append(t)
                if len(out) == len(ticks):
                    break
        assert replay.repeats == 2
    assert out == ticks
    await nc.close()


async def test_tail_since_prints_what_was_stored(fresh_nats):
    from mt5d.daemon.config import parse_config
    from mt5d.daemon.jetstream import provision
    from mt5d.subjects import Subjects

    account = unique_account("tail")
    nc = await nats.connect(fresh_nats.url)
    js = nc.jetstream()
    await provision(js, parse_config({"jetstream": {"enabled": True}}, env={}).jetstream, Subjects("mt5", account))
    for i in range(5):
        await js.publish(f"mt5.{account}.tick.EURUSD", b'{"symbol":"EURUSD","n":%d}' % i)
    await nc.close()
    res = await anyio.run_process([sys.executable, "-m", "mt5d.daemon.cli", "tail", "--url", fresh_nats.url,
                                   "--since", "10m", "--count", "5", "mt5.*.tick.EURUSD"], cwd=ROOT, check=False)
    assert res.returncode == 0, res.stderr.decode()
    lines = res.stdout.decode().splitlines()
    assert [msgspec.json.decode(line.split(" ", 1)[1])["n"] for line in lines] == [0, 1, 2, 3, 4]
    assert all(line.startswith(f"mt5.{account}.tick.EURUSD ") for line in lines)


async def test_a_reader_under_the_shipped_permissions_gets_last_values_and_replay(tmp_path):
    """ops/nats-server.conf lets a reader Direct Get only with the subject in the API subject and
    create only named consumers filtered on market data: the client's paths stay inside that."""
    import re

    from mt5d.client import inbox_prefix_for
    from mt5d.daemon.config import parse_config
    from mt5d.daemon.jetstream import provision
    from mt5d.daemon.natsserver import NatsServer
    from mt5d.market import Tick
    from mt5d.subjects import Subjects

    conf = ROOT / "ops" / "nats-server.conf"
    passwords = dict(re.findall(r'\{\s*user:\s*(\w+),\s*password:\s*"([^"]+)"', conf.read_text()))
    account = unique_account("reader")
    server = NatsServer(config=str(conf), jetstream=True, store_dir=str(tmp_path / "js")).start()
    errors: list = []

    async def keep(err) -> None:
        errors.append(err)

    def login(user: str, **kw):
        return nats.connect(server.url, user=user, password=passwords[user], inbox_prefix=inbox_prefix_for(user),
                            allow_reconnect=False, **kw)

    try:
        mt5d = await login("mt5d")
        js = mt5d.jetstream()
        await provision(js, parse_config({"jetstream": {"enabled": True}}, env={}).jetstream, Subjects("mt5", account))
        now = int(time.time() * 1000)
        for i, symbol in enumerate(["EURUSD", "GBPUSD", "EURUSD", "GBPUSD"]):
            t = Tick(symbol=symbol, time_msc_broker=now + i, time_utc_ms=now + i, bid=1.0 + i, ask=2.0, last=0.0,
                     volume=0, volume_real=0.0, flags=6)
            await js.publish(f"mt5.{account}.tick.{symbol}", msgspec.json.encode(t),
                             headers={"Nats-Msg-Id": f"{symbol}:{now + i}:0"})
        with anyio.fail_after(10):  # the last-value stream sources them
            while (await js.stream_info(f"MT5_{account}_LAST")).state.messages < 2:
                await anyio.sleep(0.05)
        reader = await login("reader", error_cb=keep)
        client = MT5Client(reader, account=account, timeout=1.0)
        prices = await client.get_prices(["EURUSD", "GBPUSD"])
        assert {s: (p.bid, p.source) for s, p in prices.items()} == {"EURUSD": (3.0, "stream"), "GBPUSD": (4.0, "stream")}
        assert (await client.get_price("GBPUSD")).bid == 4.0
        got = []
        async with client.ticks(["EURUSD", "GBPUSD"], since=now - 1000) as replay:
            with anyio.fail_after(10):
                async for t in replay:
                    got.append((t.symbol, t.bid))
                    if len(got) == 4:
                        break
        assert sorted(got) == [("EURUSD", 1.0), ("EURUSD", 3.0), ("GBPUSD", 2.0), ("GBPUSD", 4.0)]
        # Only the multi_last body was refused (it could name account data); nothing else.
        refused = [str(e) for e in errors if "permission" in str(e).lower()]
        assert refused and all(r.lower().endswith(f'"$js.api.direct.get.mt5_{account}_last"'.lower())
                               for r in refused), refused
        # mt5d's own streams (as it provisioned them): the reader may not delete, purge or
        # reconfigure either; the server refuses each request (no answer comes).
        errors.clear()
        for stream in (f"MT5_{account}", f"MT5_{account}_LAST"):
            for subject, body in ((f"$JS.API.STREAM.DELETE.{stream}", b""),
                                  (f"$JS.API.STREAM.PURGE.{stream}", b"{}"),
                                  (f"$JS.API.STREAM.UPDATE.{stream}", b'{"name": "%s", "subjects": ["x.>"]}' % stream.encode()),
                                  (f"$JS.API.STREAM.MSG.DELETE.{stream}", b'{"seq": 1}')):
                with pytest.raises(nats.errors.TimeoutError):
                    await reader.request(subject, body, timeout=0.5)
                assert any(subject.lower() in str(e).lower() for e in errors), (subject, errors)
        await reader.close()
        assert (await js.stream_info(f"MT5_{account}")).state.messages == 4  # nothing was lost
        assert (await js.stream_info(f"MT5_{account}_LAST")).state.messages == 2
        await mt5d.close()
        # `mt5d tail` as the reader, with the shipped permissions: its replay (a named consumer on
        # market data, replies on the reader's own inbox) prints what was stored.
        res = await anyio.run_process(
            [sys.executable, "-m", "mt5d.daemon.cli", "tail", "--url", server.url, "--user", "reader",
             "--since", "10m", "--count", "4", f"mt5.{account}.tick.*"],
            cwd=ROOT, check=False, env={**os.environ, "NATS_PASSWORD": passwords["reader"]})
        assert res.returncode == 0, res.stderr.decode()
        lines = res.stdout.decode().splitlines()
        assert [msgspec.json.decode(line.split(" ", 1)[1])["bid"] for line in lines] == [1.0, 2.0, 3.0, 4.0]
    finally:
        server.stop()
