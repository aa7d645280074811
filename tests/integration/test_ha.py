"""Hot standby: two daemons for one account, one lease; only the leader publishes; a takeover
goes on from the stream's last stored tick: nothing lost, nothing stored twice."""

from __future__ import annotations

import json

import anyio
import nats
import pytest

from mt5d.daemon.app import Daemon
from tests.integration.helpers import (Collector, assert_same_as_history, eventually, make_config, running,
                                       stored_ticks, unique_account)

pytestmark = pytest.mark.anyio
SYMBOLS = ["EURUSD", "EURUSD.m"]
TOKENS = {"EURUSD": "EURUSD", "EURUSD.m": "EURUSD=2Em"}


@pytest.fixture
def anyio_backend():
    return "asyncio"


def ha_config(url: str, account: str, node: str, ttl: float = 1.5):
    return make_config(url, account, jetstream={"enabled": True}, ha={"enabled": True, "ttl": ttl, "node": node},
                       stream={"symbols": SYMBOLS, "timeframes": ["M1"]},
                       terminal={"sim": {"ticks_per_second": 30.0}})


async def service_roles(nc, account: str, instances: int) -> list[tuple[str, str]]:
    """$SRV.INFO of the account's mt5d instances: (role, lease revision) of each."""
    inbox = nc.new_inbox()
    got: list = []
    arrived = anyio.Event()

    async def on_info(msg) -> None:
        info = json.loads(msg.data)
        if info["metadata"].get("account") == account:
            got.append((info["metadata"].get("role"), info["metadata"].get("lease_revision")))
            if len(got) == instances:
                arrived.set()

    sub = await nc.subscribe(inbox, cb=on_info)
    await nc.publish("$SRV.INFO.mt5d", b"", reply=inbox)
    with anyio.fail_after(5):
        await arrived.wait()
    await sub.unsubscribe()
    return sorted(got)


async def test_only_the_leader_publishes_and_a_takeover_loses_and_repeats_nothing(fresh_nats):
    account = unique_account("ha")
    stream = f"MT5_{account}"
    col = await Collector(account).start(fresh_nats.url)
    nc = await nats.connect(fresh_nats.url)
    js = nc.jetstream()
    a = Daemon(ha_config(fresh_nats.url, account, "a"))
    b = Daemon(ha_config(fresh_nats.url, account, "b"))
    a2 = None
    try:
        async with running(b):
            async with running(a):
                await eventually(lambda: (a.lease.role, b.lease.role) in
                                 (("leader", "follower"), ("follower", "leader")), timeout=10)
                lead, follow = (a, b) if a.lease.role == "leader" else (b, a)
                await eventually(lambda: lead.publisher.published >= 30, timeout=15)
                assert follow.publisher.published == 0  # a follower stores nothing
                await eventually(lambda: any(h.role == "follower" for h in col.health)
                                 and any(h.role == "leader" for h in col.health), timeout=10)
                assert await service_roles(nc, account, 2) == sorted(
                    [("leader", str(lead.lease.term)), ("follower", str(follow.lease.term))])
                # Only the leader answers account.
                for _ in range(4):
                    reply = await nc.request(f"mt5.{account}.rpc.account", b"", timeout=5)
                    assert b"login" in reply.data
                first_term = lead.lease.term
                n_before = sum(len(v) for v in col.ticks.values())
            # The first one stops (a first leader, or a restarted follower): the other leads, or goes on leading.
            await eventually(lambda: b.lease.role == "leader", timeout=10)
            await eventually(lambda: sum(len(v) for v in col.ticks.values()) > n_before + 60, timeout=15)
            # A follower restarts: it follows; the leader goes on.
            a2 = Daemon(ha_config(fresh_nats.url, account, "a"))
            async with running(a2):
                await eventually(lambda: a2.lease.role == "follower" and a2.lease.terms == 0, timeout=10)
                published = b.publisher.published
                await eventually(lambda: b.publisher.published > published + 30, timeout=15)
                assert a2.publisher.published == 0
                b_term = b.lease.term
            await eventually(lambda: b.publisher.published > published + 60, timeout=15)
        # The leader stops: nothing publishes now; the stream has it all.
        for symbol in SYMBOLS:
            got = await stored_ticks(js, stream, f"mt5.{account}.tick.{TOKENS[symbol]}")
            assert_same_as_history(b.module, symbol, got)
            core = [(t.time_msc_broker, t.index_in_ms, t.bid, t.ask) for t in col.ticks[symbol]]
            assert core[-1] == got[-1]  # core subscribers saw the stream go on to the end
        # Every stored message carries the term of the leader that published it.
        last = await js.get_last_msg(stream, f"mt5.{account}.tick.EURUSD")
        assert int(last.headers["Mt5d-Lease"]) == b_term >= first_term
    finally:
        await col.close()
        await nc.close()
