"""The connection actor's two lanes, on virtual time with the sim terminal: whatever is
queued, a stream request (a poll cycle, a probe) is served first, then rpc work in the
order the requests arrived at the rpc service (not the order their hops were queued); an
rpc hop not started by its ``start_by`` is answered "busy" instead of run."""

from __future__ import annotations

import anyio
import pytest
import trio.testing

from mt5d.actors.connection import Connection, Credentials, StateChange
from mt5d.actors.logic.breaker import BreakerPolicy
from mt5d.daemon.terminal.sim import SimTerminal
from mt5d.daemon.terminal.thread import TerminalThread
from mt5d.errors import MT5BusyError

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "trio", {"clock": trio.testing.MockClock(autojump_threshold=0)}


async def test_stream_lane_first_then_rpc_by_arrival():
    sim = SimTerminal(seed=1, clock=lambda: 1_750_000_000 + anyio.current_time())
    events_send, events_recv = anyio.create_memory_object_stream[StateChange](100)
    conn = Connection(module=sim, credentials=Credentials(login=10001234, password=None, server="", path=""),
                      symbols=("EURUSD",), policy=BreakerPolicy(max_failures=2, backoff_base_seconds=1.0,
                                                                backoff_max_seconds=2.0),
                      connection_timeout=5.0, operation_timeout=5.0, events=events_send,
                      thread=TerminalThread(inline=True))
    served: list[str] = []

    def hop(name: str):
        def fn(api):
            served.append(name)
            return api.symbol_info_tick("EURUSD").time_msc
        return fn

    # Queued before the actor runs: rpc work of requests 3, 1 and 2 (in that order), then a poll
    # cycle; and the first hop of a request 0 that had to start within 1 ms (it is refused, busy).
    queued = [("rpc-late", "rpc", 0, 0.001), ("rpc-3", "rpc", 3, 60.0), ("rpc-1a", "rpc", 1, None),
              ("rpc-2", "rpc", 2, None), ("rpc-1b", "rpc", 1, None), ("poll", "stream", 0, None)]
    results: dict[str, object] = {}
    async with anyio.create_task_group() as tg:
        async def ask(name: str, lane: str, order: int, within) -> None:
            start_by = None if within is None else anyio.current_time() + within
            try:
                results[name] = await conn.run_call(hop(name), lane=lane, order=order, start_by=start_by)
            except MT5BusyError as err:
                results[name] = err

        for item in queued:
            tg.start_soon(ask, *item)
            await anyio.sleep(0.001)  # virtual time: each request is in before the next
        await tg.start(conn.run)
        with anyio.fail_after(5):
            while len(results) < len(queued):
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    assert served == ["poll", "rpc-1a", "rpc-1b", "rpc-2", "rpc-3"]
    late = results.pop("rpc-late")
    assert isinstance(late, MT5BusyError) and "busy" in late.message
    assert all(isinstance(v, int) and v for v in results.values())
