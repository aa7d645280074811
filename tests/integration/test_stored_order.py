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
