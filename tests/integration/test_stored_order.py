"""Stored publishes keep their order when one in the middle fails (a real nats-server).

Publishes are pipelined: when one is refused and the ones after it are stored, sending the
refused one again would store it behind them (seen across a cluster node's death). The
stream's own size limit refuses one message here on purpose; once the limit is raised,
everything is sent again and the stream must hold all of them once, in the order sent.
"""

from __future__ import annotations

import anyio
import nats
import pytest
from nats.js.api import StreamConfig

from mt5d.actors.acks import Stored, StoredAcks
from mt5d.codec import Codec
from mt5d.subjects import Subjects
from tests.integration.helpers import SlowLink

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def test_a_refused_publish_in_the_middle_is_stored_in_its_place(fresh_nats):
    nc = await nats.connect(fresh_nats.url)
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name="ORDER", subjects=["order.>"], max_msg_size=100))
    acks = StoredAcks(nc=nc, subjects=Subjects("mt5", "x"), codec=Codec("json"), kinds=("tick",), ack_timeout=5.0)
    await acks.start()
    sizes = [10, 10, 200, 10, 10, 10]  # the third is over the stream's limit
    msgs = [Stored(f"order.{i % 2}", b"x" * n, f"m{i}") for i, n in enumerate(sizes)]
    try:
        await acks.send(msgs)
        async with anyio.create_task_group() as tg:
            tg.start_soon(acks.settle)  # sends the refused again every 0.2 s until they are stored
            with anyio.fail_after(10):
                while acks.resent == 0:
                    await anyio.sleep(0.01)
            await js.update_stream(StreamConfig(name="ORDER", subjects=["order.>"], max_msg_size=1000))
        sub = await js.subscribe("order.>", ordered_consumer=True, stream="ORDER")
        got = []
        with anyio.fail_after(10):
            while len(got) < len(msgs):
                m = await sub.next_msg(timeout=5)
                got.append(m.headers["Nats-Msg-Id"])
        info = await js.stream_info("ORDER")
    finally:
        await nc.close()
    assert got == [m.msg_id for m in msgs]  # every one once, in the order sent
    assert info.state.messages == len(msgs)


async def test_acks_slower_than_the_timeout_still_confirm(fresh_nats):
    """Every ack arrives after the ack timeout (a link that delays the server's side by 0.6 s,
    timeout 0.3 s): each late run is sent again under its own reply subject, so the first ack
    that comes confirms it. (With new reply subjects for each resend, every ack
    would be one send too late, forever.)"""
    link = SlowLink(fresh_nats.port, delay=0.6)
    async with anyio.create_task_group() as tg:
        await tg.start(link.run)
        nc = await nats.connect(f"nats://127.0.0.1:{link.port}", connect_timeout=5)
        js = nc.jetstream(timeout=5)
        await js.add_stream(StreamConfig(name="SLOW", subjects=["slow.>"]))
        acks = StoredAcks(nc=nc, subjects=Subjects("mt5", "x"), codec=Codec("json"), kinds=("tick",),
                          ack_timeout=0.3)
        await acks.start()
        msgs = [Stored(f"slow.{i % 3}", b"x", f"s{i}") for i in range(300)]
        try:
            for i in range(0, len(msgs), 30):  # ten writes, as ten poll cycles would
                await acks.send(msgs[i:i + 30])
            with anyio.fail_after(20):
                await acks.settle()
            info = await js.stream_info("SLOW")
            sub = await js.subscribe("slow.>", ordered_consumer=True, stream="SLOW")
            got = []
            with anyio.fail_after(20):
                while len(got) < len(msgs):
                    got.append((await sub.next_msg(timeout=10)).headers["Nats-Msg-Id"])
        finally:
            await nc.close()
            tg.cancel_scope.cancel()
    assert acks.stored == len(msgs)
    assert acks.resent > 0  # the acks were late, and the runs went again
    assert got == [m.msg_id for m in msgs]
    assert info.state.messages == len(msgs)
