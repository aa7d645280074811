"""Durability under failure, on real nats-servers: a 3-node cluster on loopback (R3 streams) and
daemons as child processes that are SIGKILLed. In every case the stream holds every tick of the
sim's history for the window, in order, none twice, and core subscribers see the stream go on."""

from __future__ import annotations

import time

import anyio
import nats
import pytest

from mt5d.daemon.app import Daemon
from mt5d.daemon.config import parse_config
from mt5d.daemon.natsserver import NatsCluster
from tests.integration.helpers import (Collector, DaemonProcess, assert_same_as_history, eventually, lease_holder,
                                       make_config, reference_terminal, running, stored_ticks, unique_account)

pytestmark = pytest.mark.anyio
SYMBOLS = ["EURUSD", "EURUSD.m"]
TOKENS = {"EURUSD": "EURUSD", "EURUSD.m": "EURUSD=2Em"}
TTL = 2.0


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def cluster(tmp_path):
    c = NatsCluster(tmp_path / "cluster").start()
    yield c
    c.stop()
    for i, node in enumerate(c.nodes):  # the servers' own logs, beside the daemons' (for a failure's story)
        (tmp_path / f"nats-n{i}.log").write_bytes(bytes(node.output))


def raw_config(urls: str, account: str, node: str, replicas: int) -> dict:
    return {
        "terminal": {"backend": "sim", "login": 10001234, "operation_timeout": 2.0, "connection_timeout": 2.0,
                     "sim": {"ticks_per_second": 20.0}},
        "stream": {"symbols": SYMBOLS, "timeframes": ["M1"], "poll_interval": 0.02, "idle_poll_interval": 0.1},
        "nats": {"url": urls, "account": account},
        "jetstream": {"enabled": True, "replicas": replicas},
        "ha": {"enabled": True, "ttl": TTL, "node": node},
        "health": {"interval": 0.5},
        "logging": {"level": "WARNING"},
    }


async def admin(urls: str):
    nc = await nats.connect(urls.split(","), max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    return nc, nc.jetstream(timeout=2.0)


async def stored(js, stream: str) -> int:
    try:
        return (await js.stream_info(stream)).state.messages
    except Exception:  # the cluster is electing, the node we asked is gone...
        return -1


async def until_stored_grows(js, stream: str, by: int, timeout: float) -> None:
    start = await stored(js, stream)
    with anyio.fail_after(timeout):
        while await stored(js, stream) < max(start, 0) + by:
            await anyio.sleep(0.1)


def check_everything_stored_once(module, got_by_symbol: dict, col: Collector) -> None:
    for symbol in SYMBOLS:
        got = got_by_symbol[symbol]
        assert len(got) > 50, symbol
        assert_same_as_history(module, symbol, got)
        core = {(t.time_msc_broker, t.index_in_ms, t.bid, t.ask) for t in col.ticks[symbol]}
        assert got[-1] in core  # core subscribers saw the stream go on to its end


async def read_back(js, account: str) -> dict:
    return {s: await stored_ticks(js, f"MT5_{account}", f"mt5.{account}.tick.{TOKENS[s]}") for s in SYMBOLS}


async def test_cluster_survives_the_loss_of_the_node_the_leader_is_connected_to(cluster):
    """Two daemons (in this process) on a 3-node cluster, R3: the leader's node dies."""
    account = unique_account("node")
    cfgs = [make_config(cluster.urls, account, jetstream={"enabled": True, "replicas": 3},
                        ha={"enabled": True, "ttl": TTL, "node": n}, stream={"symbols": SYMBOLS, "timeframes": ["M1"]},
                        terminal={"sim": {"ticks_per_second": 20.0}}) for n in ("a", "b")]
    col = await Collector(account).start(cluster.urls)
    nc, js = await admin(cluster.urls)
    a, b = Daemon(cfgs[0]), Daemon(cfgs[1])
    try:
        async with running(a), running(b):
            await eventually(lambda: "leader" in (a.lease.role, b.lease.role), timeout=20)
            lead = a if a.lease.role == "leader" else b
            await eventually(lambda: lead.publisher.published >= 40, timeout=20)
            node = cluster.node_at(str(lead.nc.connected_url.geturl()))
            node.stop()
            await until_stored_grows(js, f"MT5_{account}", 100, timeout=30)
            node.start()
            await until_stored_grows(js, f"MT5_{account}", 60, timeout=30)
            n = sum(len(v) for v in col.ticks.values())
            await eventually(lambda: sum(len(v) for v in col.ticks.values()) > n + 20, timeout=20)
        check_everything_stored_once(a.module, await read_back(js, account), col)
    finally:
        await col.close()
        await nc.close()


async def test_sigkill_of_the_leader_daemon_hands_over_within_the_ttl(fresh_nats, tmp_path):
    account = unique_account("kill")
    raws = {n: raw_config(fresh_nats.url, account, n, 1) for n in ("a", "b")}
    col = await Collector(account).start(fresh_nats.url)
    nc, js = await admin(fresh_nats.url)
    procs = {n: DaemonProcess(raw, tmp_path / f"{n}.log") for n, raw in raws.items()}
    try:
        async with anyio.create_task_group() as tg:
            for p in procs.values():
                tg.start_soon(p.start)
        bucket = f"mt5_{account}_lease"
        holder = None
        with anyio.fail_after(20):
            while holder is None:
                holder = await lease_holder(js, bucket)
                await anyio.sleep(0.05)
        await until_stored_grows(js, f"MT5_{account}", 100, timeout=20)
        procs[holder].kill()
        killed_at = time.monotonic()
        other = "b" if holder == "a" else "a"
        with anyio.fail_after(TTL + 10):
            while await lease_holder(js, bucket) != other:
                await anyio.sleep(0.05)
        took = time.monotonic() - killed_at
        assert took < TTL + 5  # bounded by the TTL (measured in `mt5d bench`)
        await until_stored_grows(js, f"MT5_{account}", 100, timeout=20)
        n = sum(len(v) for v in col.ticks.values())
        await eventually(lambda: sum(len(v) for v in col.ticks.values()) > n + 20, timeout=20)
        for p in procs.values():
            await p.stop()
        module = reference_terminal(parse_config(raws["a"], env={}))
        check_everything_stored_once(module, await read_back(js, account), col)
    finally:
        for p in procs.values():
            if p.proc is not None and p.proc.returncode is None:
                p.kill()
        await col.close()
        await nc.close()


@pytest.mark.slow
async def test_cluster_node_loss_leader_kill_whole_cluster_outage_and_follower_restart(cluster, tmp_path):
    """The whole story on a 3-node cluster with daemons as child processes: kill the node the leader
    is connected to; SIGKILL the leader; stop the whole cluster for 10 s and start it again;
    restart a follower. (Fast tests of each property run by default: above, and in test_ha /
    test_jetstream.)"""
    account = unique_account("story")
    stream, bucket = f"MT5_{account}", f"mt5_{account}_lease"
    raws = {n: raw_config(cluster.urls, account, n, 3) for n in ("a", "b")}
    col = await Collector(account).start(cluster.urls)
    nc, js = await admin(cluster.urls)
    procs = {n: DaemonProcess(raw, tmp_path / f"{n}.log") for n, raw in raws.items()}

    async def holder_is(pred, timeout: float) -> str:
        with anyio.fail_after(timeout):
            while True:
                h = await lease_holder(js, bucket)
                if pred(h):
                    return h
                await anyio.sleep(0.05)

    async def core_goes_on(timeout: float = 30) -> None:
        n = sum(len(v) for v in col.ticks.values())
        await eventually(lambda: sum(len(v) for v in col.ticks.values()) > n + 20, timeout=timeout)

    try:
        async with anyio.create_task_group() as tg:
            for p in procs.values():
                tg.start_soon(p.start)
        leader = await holder_is(lambda h: h is not None, 30)
        await until_stored_grows(js, stream, 100, timeout=30)
        # 1. The node the leader is connected to dies (connz names each daemon's connection).
        node = await _node_of(cluster, f"mt5d {leader}")
        node.stop()
        await until_stored_grows(js, stream, 60, timeout=30)
        await core_goes_on()
        node.start()
        # 2. SIGKILL the leader.
        leader = await holder_is(lambda h: h is not None, 30)
        procs[leader].kill()
        await procs[leader].stop()
        follower = "b" if leader == "a" else "a"
        await holder_is(lambda h: h == follower, TTL + 15)
        await until_stored_grows(js, stream, 60, timeout=30)
        await core_goes_on()
        # 3. Restart the killed one: a follower now.
        await procs[leader].start()
        await until_stored_grows(js, stream, 60, timeout=30)
        # 4. The whole cluster stops for 10 s, then comes back.
        cluster.stop()
        await anyio.sleep(10)  # the outage itself (its length is the scenario, not a wait for something)
        cluster.start()
        await holder_is(lambda h: h is not None, 60)
        await until_stored_grows(js, stream, 100, timeout=60)
        await core_goes_on(60)
        # 5. Restart the follower.
        leader = await holder_is(lambda h: h is not None, 30)
        follower = "b" if leader == "a" else "a"
        await procs[follower].stop()
        await procs[follower].start()
        await until_stored_grows(js, stream, 60, timeout=30)
        await core_goes_on()
        for p in procs.values():
            await p.stop()
        module = reference_terminal(parse_config(raws["a"], env={}))
        check_everything_stored_once(module, await read_back(js, account), col)
    finally:
        for p in procs.values():
            if p.proc is not None and p.proc.returncode is None:
                p.kill()
        await col.close()
        await nc.close()



async def _node_of(cluster: NatsCluster, connection_name: str):
    with anyio.fail_after(10):
        while True:
            node = await anyio.to_thread.run_sync(cluster.node_of, connection_name)
            if node is not None:
                return node
            await anyio.sleep(0.1)
