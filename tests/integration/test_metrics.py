"""Metrics after a short real run: the daemon's own counts agree with what a subscriber counted.

A real daemon (sim terminal) against a real nats-server, with its telemetry on
an in-memory reader. The daemon is stopped at a moment when every tick the
poller took from the terminal has been published and confirmed by NATS (so no
batch is cut by the stop), then the subscriber's per-symbol counts must settle
on exactly the ``mt5d.ticks.published`` counts.
"""

from __future__ import annotations

import anyio
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mt5d.daemon.app import Daemon
from mt5d.daemon.telemetry import Telemetry
from tests.integration.helpers import Collector, eventually, make_config, unique_account

pytestmark = pytest.mark.anyio

SYMBOLS = ["EURUSD", "GBPUSD", "EURUSD.m"]
MIN_TICKS = 50


@pytest.fixture
def anyio_backend():
    return "asyncio"


def metric_points(reader: InMemoryMetricReader) -> dict[str, list]:
    data = reader.get_metrics_data()
    out: dict[str, list] = {}
    for rm in data.resource_metrics if data else ():
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                out.setdefault(m.name, []).extend(m.data.data_points)
    return out


async def test_ticks_published_metric_matches_what_a_subscriber_counted(nats_url):
    account = unique_account("metrics")
    cfg = make_config(nats_url, account,
                      stream={"symbols": SYMBOLS, "timeframes": []},
                      terminal={"sim": {"seed": 7, "ticks_per_second": 20.0}})
    reader = InMemoryMetricReader()
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    telemetry = Telemetry(meter_provider=MeterProvider(metric_readers=[reader]), tracer_provider=tracer_provider,
                          account=account, prefix="mt5")
    daemon = Daemon(cfg, telemetry=telemetry)
    col = await Collector(account).start(nats_url)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(daemon.run)
            await col.wait_for(lambda: sum(map(len, col.ticks.values())) >= MIN_TICKS, timeout=15)
            # Stop between batches: everything the poller produced is confirmed by NATS.
            # Checked and cancelled without an await in between, so no new batch can start.
            await eventually(lambda: daemon.publisher.published == daemon.poller.ticks_out, timeout=10, step=0.005)
            tg.cancel_scope.cancel()

        pts = metric_points(reader)
        published = {p.attributes["symbol"]: p.value for p in pts.get("mt5d.ticks.published", [])}
        assert sum(published.values()) >= MIN_TICKS, published
        assert sum(published.values()) == daemon.publisher.published
        assert set(published) <= set(SYMBOLS)

        # Nothing is in flight any more: the subscriber must reach exactly these counts.
        def counted() -> dict[str, int]:
            return {s: len(t) for s, t in col.ticks.items() if t}

        try:
            await col.wait_for(lambda: counted() == published, timeout=10)
        except TimeoutError:
            pass
        assert counted() == published
    finally:
        await col.close()

    # Every tick point names its destination by template, never by raw subject.
    for p in pts["mt5d.ticks.published"]:
        assert p.attributes["messaging.system"] == "nats"
        assert p.attributes["messaging.destination.template"] == "mt5.{account}.tick.{symbol}"
        assert p.attributes["messaging.operation.type"] == "publish"
        assert account not in str(dict(p.attributes))

    def histogram_count(name: str, **attrs) -> int:
        return sum(p.count for p in pts.get(name, [])
                   if all(p.attributes.get(k) == v for k, v in attrs.items()))

    assert histogram_count("mt5d.poll.cycle.duration") > 0
    assert histogram_count("mt5d.publish.duration") > 0
    assert histogram_count("mt5d.tick.age") > 0
    assert histogram_count("mt5d.terminal.call.duration", function="symbol_info_tick") > 0
    assert histogram_count("mt5d.terminal.call.duration", function="copy_ticks_from") > 0
    breaker = pts["mt5d.breaker.state"]
    assert [(p.value, p.attributes["state"]) for p in breaker] == [(0, "closed")]
    # Spans: terminal requests (one per poll hop or probe), never one per tick.
    names = {s.name for s in spans.get_finished_spans()}
    assert any(n.startswith("terminal.") for n in names), names
    assert not any("tick." in n for n in names), names


async def test_rpc_requests_are_counted_by_endpoint_and_result_with_a_span_each(nats_url):
    import nats

    account = unique_account("rpcmetrics")
    cfg = make_config(nats_url, account, stream={"symbols": SYMBOLS, "timeframes": []})
    reader = InMemoryMetricReader()
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    telemetry = Telemetry(meter_provider=MeterProvider(metric_readers=[reader]), tracer_provider=tracer_provider,
                          account=account, prefix="mt5")
    daemon = Daemon(cfg, telemetry=telemetry)
    nc = await nats.connect(nats_url)
    try:
        async with anyio.create_task_group() as tg:
            await tg.start(daemon.run)
            ok = await nc.request(f"mt5.{account}.rpc.symbols", b"{}", timeout=10)
            refused = await nc.request(f"mt5.{account}.rpc.price", b'{"symbol": "NOPE"}', timeout=10)
            tg.cancel_scope.cancel()
    finally:
        await nc.close()
    assert not ok.headers or "Nats-Service-Error-Code" not in ok.headers
    assert refused.headers and refused.headers.get("Nats-Service-Error-Code") == "400"

    pts = metric_points(reader)
    requests = {(p.attributes["endpoint"], p.attributes["result"]): p.value for p in pts["mt5d.rpc.requests"]}
    assert requests == {("symbols", "ok"): 1, ("price", "400"): 1}
    for p in pts["mt5d.rpc.requests"]:
        assert p.attributes["messaging.destination.template"] == f"mt5.{{account}}.rpc.{p.attributes['endpoint']}"
        assert p.attributes["messaging.operation.type"] == "process"
        assert account not in str(dict(p.attributes))
    assert sum(p.count for p in pts["mt5d.rpc.duration"]) == 2

    # One span per request; the terminal request it made is its child.
    finished = spans.get_finished_spans()
    rpc_spans = {s.name: s for s in finished if s.name.startswith("process ")}
    assert set(rpc_spans) == {"process mt5.{account}.rpc.symbols", "process mt5.{account}.rpc.price"}
    symbols_span = rpc_spans["process mt5.{account}.rpc.symbols"]
    assert symbols_span.attributes["messaging.destination.name"] == f"mt5.{account}.rpc.symbols"
    children = [s for s in finished if s.parent is not None and s.parent.span_id == symbols_span.context.span_id]
    assert children and all(s.name.startswith("terminal.") for s in children)
    assert rpc_spans["process mt5.{account}.rpc.price"].attributes["error.type"] == "MT5ValidationError"
