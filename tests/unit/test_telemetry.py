"""Telemetry: every instrument records what it was given, with bounded labels and destination templates."""

from __future__ import annotations

import http.server
import json
import sys
import threading
import urllib.request

import msgspec
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import mt5d.daemon.telemetry as telemetry_mod
from mt5d.actors.messages import Batch
from mt5d.daemon.telemetry import METRIC_NAMES, Telemetry, TelemetryConfig, telemetry_problems
from mt5d.errors import MT5CircuitBreakerOpen, MT5TimeoutError, MT5ValidationError
from mt5d.market import Candle, Tick

ACCOUNT = "87654321"
MSG_KEYS = {"messaging.system", "messaging.destination.template", "messaging.operation.type"}
# Every attribute key any instrument may carry: a closed, bounded set.
ALLOWED_KEYS = MSG_KEYS | {"symbol", "timeframe", "closed", "function", "error.type", "state", "endpoint", "result"}


@pytest.fixture
def reader():
    return InMemoryMetricReader()


@pytest.fixture
def spans():
    return InMemorySpanExporter()


@pytest.fixture
def tel(reader, spans):
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(spans))
    return Telemetry(meter_provider=MeterProvider(metric_readers=[reader]), tracer_provider=tp,
                     account=ACCOUNT, prefix="mt5")


def points(reader) -> dict[str, list]:
    """metric name -> its data points (cumulative)."""
    data = reader.get_metrics_data()
    out: dict[str, list] = {}
    if data is None:
        return out
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                out.setdefault(m.name, []).extend(m.data.data_points)
    return out


def only(pts, **attrs):
    found = [p for p in pts if all(p.attributes.get(k) == v for k, v in attrs.items())]
    assert len(found) == 1, (attrs, [dict(p.attributes) for p in pts])
    return found[0]


def tick(symbol: str, utc_ms: int) -> Tick:
    return Tick(symbol=symbol, time_msc_broker=utc_ms + 7_200_000, time_utc_ms=utc_ms, bid=1.0, ask=1.1,
                last=0.0, volume=0, volume_real=0.0, flags=6)


def candle(symbol: str, tf: str, closed: bool = True) -> Candle:
    return Candle(symbol=symbol, timeframe=tf, time_broker=0, time_utc_ms=0, close_time_utc_ms=60_000, open=1.0,
                  high=1.0, low=1.0, close=1.0, tick_volume=1, spread=0, real_volume=0, closed=closed)


# ---- config ---------------------------------------------------------------

def test_config_defaults_and_validation():
    cfg = TelemetryConfig()
    assert (cfg.exporter, cfg.otlp_endpoint, cfg.prometheus_host, cfg.prometheus_port, cfg.export_interval) == (
        "none", "", "127.0.0.1", 9464, 10.0)
    ok = msgspec.convert({"exporter": "prometheus", "prometheus_port": 9500, "export_interval": 5}, TelemetryConfig)
    assert ok.exporter == "prometheus" and ok.export_interval == 5.0
    for bad in ({"exporter": "statsd"}, {"export_interval": 0}, {"export_interval": -1.0},
                {"prometheus_port": 70000}, {"bogus": 1}):
        with pytest.raises(msgspec.ValidationError):
            msgspec.convert(bad, TelemetryConfig)
    with pytest.raises(TypeError):
        TelemetryConfig("console")  # kw_only
    with pytest.raises(AttributeError):
        cfg.exporter = "console"  # frozen


def test_problems_name_the_missing_extra(monkeypatch):
    monkeypatch.setattr(telemetry_mod, "_module_available", lambda name: False)
    otlp = telemetry_problems(TelemetryConfig(exporter="otlp", otlp_endpoint="collector:4317"))
    assert any("telemetry.exporter: 'otlp'" in p and "mt5d[otlp]" in p for p in otlp), otlp
    assert any(p.startswith("telemetry.otlp_endpoint: 'collector:4317'") for p in otlp), otlp
    prom = telemetry_problems(TelemetryConfig(exporter="prometheus"))
    assert len(prom) == 1 and "mt5d[prometheus]" in prom[0]
    assert telemetry_problems(TelemetryConfig()) == []
    assert telemetry_problems(TelemetryConfig(exporter="console")) == []


# ---- instruments ------------------------------------------------------------

def test_ticks_and_candles_counted_by_symbol_with_destination_templates(tel, reader):
    tel.ticks_published("EURUSD", 3)
    tel.ticks_published("EURUSD", 2)
    tel.ticks_published("EURUSD.m", 4)
    tel.candles_published("EURUSD", "M1", 1)
    tel.candles_published("EURUSD", "M1", 1, forming=True)
    pts = points(reader)
    ticks = pts["mt5d.ticks.published"]
    eur = only(ticks, symbol="EURUSD")
    assert eur.value == 5 and only(ticks, symbol="EURUSD.m").value == 4
    assert dict(eur.attributes) == {
        "symbol": "EURUSD",
        "messaging.system": "nats",
        "messaging.destination.template": "mt5.{account}.tick.{symbol}",
        "messaging.operation.type": "publish",
    }
    candles = pts["mt5d.candles.published"]
    closed = only(candles, closed=True)
    assert closed.value == 1 and closed.attributes["timeframe"] == "M1"
    assert closed.attributes["messaging.destination.template"] == "mt5.{account}.candle.{symbol}.{timeframe}"
    forming = only(candles, closed=False)
    assert forming.attributes["messaging.destination.template"] == "mt5.{account}.candle_forming.{symbol}.{timeframe}"


def test_histograms_record_what_they_are_given(tel, reader):
    tel.publish_duration(0.004, 12)
    tel.publish_duration(0.006, 8)
    tel.tick_age(35.0)
    tel.tick_age(-5.0)  # clock skew: counted as fresh, not dropped
    tel.poll_cycle(0.002)
    pts = points(reader)
    pub = only(pts["mt5d.publish.duration"])
    assert pub.count == 2 and pub.sum == pytest.approx(0.010)
    assert pub.attributes["messaging.destination.template"] == "mt5.{account}.>"
    assert pub.attributes["messaging.operation.type"] == "publish"
    size = only(pts["mt5d.publish.batch.size"])
    assert size.count == 2 and size.sum == 20
    age = only(pts["mt5d.tick.age"])
    assert age.count == 2 and age.sum == 35.0 and age.min == 0.0
    cyc = only(pts["mt5d.poll.cycle.duration"])
    assert cyc.count == 1 and cyc.sum == pytest.approx(0.002)
    # Seconds histograms get sub-millisecond buckets, not the SDK's millisecond defaults.
    assert pub.explicit_bounds[0] < 0.001


def test_batch_published_counts_per_symbol_and_ages_the_newest_tick(tel, reader):
    batch = Batch(ticks=[tick("EURUSD", 1_000), tick("EURUSD", 1_500), tick("GBPUSD", 1_700)],
                  candles=[candle("EURUSD", "M1"), candle("EURUSD", "M5"), candle("GBPUSD", "M1")],
                  forming=[candle("EURUSD", "M1", closed=False)])
    tel.batch_published(batch, 0.003, 7, now_ms=1_750)
    pts = points(reader)
    ticks = pts["mt5d.ticks.published"]
    assert only(ticks, symbol="EURUSD").value == 2 and only(ticks, symbol="GBPUSD").value == 1
    candles = pts["mt5d.candles.published"]
    assert sum(p.value for p in candles if p.attributes["closed"]) == 3
    assert only(candles, symbol="EURUSD", timeframe="M1", closed=False).value == 1
    age = only(pts["mt5d.tick.age"])
    assert age.count == 1 and age.sum == 50  # the newest tick (GBPUSD at 1700) is 50 ms old
    assert only(pts["mt5d.publish.batch.size"]).sum == 7


def test_terminal_calls_by_function_and_error(tel, reader):
    tel.terminal_call("copy_ticks_from", 0.001, None)
    tel.terminal_call("copy_ticks_from", 0.003, None)
    tel.terminal_call("copy_ticks_from", 2.0, "MT5TimeoutError")
    tel.terminal_call("symbol_info_tick", 0.0005, "MT5ValidationError")
    pts = points(reader)
    dur = pts["mt5d.terminal.call.duration"]
    ok = only(dur, function="copy_ticks_from", **{"error.type": None})
    assert ok.count == 2 and "error.type" not in ok.attributes
    assert only(dur, function="copy_ticks_from", **{"error.type": "MT5TimeoutError"}).count == 1
    errors = pts["mt5d.terminal.call.errors"]
    assert only(errors, function="copy_ticks_from").value == 1
    assert only(errors, function="symbol_info_tick").attributes["error.type"] == "MT5ValidationError"


def test_instrumented_api_times_every_call_and_keeps_results_and_errors(tel, reader):
    class Api:
        def terminal_info(self):
            return "info"

        def copy_ticks_from(self, symbol, frm, count, flags=-1):
            raise MT5TimeoutError("terminal call did not return", 0)

        version = "5.0"

    api = tel.instrument(Api())
    assert api.terminal_info() == "info" and api.terminal_info() == "info"
    with pytest.raises(MT5TimeoutError):
        api.copy_ticks_from("EURUSD", 0, 10)
    assert api.version == "5.0"
    pts = points(reader)
    assert only(pts["mt5d.terminal.call.duration"], function="terminal_info").count == 2
    err = only(pts["mt5d.terminal.call.errors"], function="copy_ticks_from")
    assert err.value == 1 and err.attributes["error.type"] == "MT5TimeoutError"


def test_breaker_state_gauge(tel, reader):
    g = only(points(reader)["mt5d.breaker.state"])
    assert (g.value, dict(g.attributes)) == (0, {"state": "closed"})
    tel.breaker_state("open")
    g = only(points(reader)["mt5d.breaker.state"])
    assert (g.value, dict(g.attributes)) == (2, {"state": "open"})
    tel.breaker_state("half_open")
    assert only(points(reader)["mt5d.breaker.state"]).value == 1


def test_rpc_requests_by_endpoint_and_result(tel, reader, spans):
    tel.rpc_request("price", "ok", 0.002)
    tel.rpc_request("price", "400", 0.001)
    with tel.rpc("candles", "mt5.87654321.rpc.candles"):
        pass
    with pytest.raises(MT5CircuitBreakerOpen):
        with tel.rpc("ticks", "mt5.87654321.rpc.ticks"):
            raise MT5CircuitBreakerOpen("circuit breaker is open", 0)
    with tel.rpc("symbols") as req:
        req.fail(MT5ValidationError("unknown symbol", -2))  # replied with an error, nothing raised
    pts = points(reader)
    reqs = pts["mt5d.rpc.requests"]
    assert only(reqs, endpoint="price", result="ok").value == 1
    assert only(reqs, endpoint="price", result="400").value == 1
    assert only(reqs, endpoint="candles", result="ok").value == 1
    assert only(reqs, endpoint="ticks", result="503").value == 1
    assert only(reqs, endpoint="symbols", result="400").value == 1
    price = only(reqs, endpoint="price", result="ok")
    assert price.attributes["messaging.destination.template"] == "mt5.{account}.rpc.price"
    assert price.attributes["messaging.operation.type"] == "process"
    assert only(pts["mt5d.rpc.duration"], endpoint="ticks").count == 1
    # One span per request, with the raw subject on the span only.
    by_name = {s.name: s for s in spans.get_finished_spans()}
    assert set(by_name) == {"process mt5.{account}.rpc.candles", "process mt5.{account}.rpc.ticks",
                            "process mt5.{account}.rpc.symbols"}
    bad = by_name["process mt5.{account}.rpc.ticks"]
    assert bad.attributes["messaging.destination.name"] == "mt5.87654321.rpc.ticks"
    assert bad.attributes["error.type"] == "MT5CircuitBreakerOpen" and bad.status.is_ok is False
    assert bad.events == ()  # no exception message recorded
    assert by_name["process mt5.{account}.rpc.symbols"].attributes["error.type"] == "MT5ValidationError"


def test_rpc_scope_across_tasks_parents_the_terminal_spans(tel, reader, spans):
    import anyio

    async def main():
        scope = tel.rpc("candles", "mt5.87654321.rpc.candles").begin()  # intake
        done = anyio.Event()

        async def serve():  # another task does the work
            with scope.use():
                with tel.span("terminal.hop"):
                    await anyio.sleep(0)
            scope.end(MT5TimeoutError("did not complete", 0))
            scope.end()  # idempotent
            done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(serve)
            await done.wait()

    anyio.run(main)
    by_name = {s.name: s for s in spans.get_finished_spans()}
    rpc, hop = by_name["process mt5.{account}.rpc.candles"], by_name["terminal.hop"]
    assert hop.parent.span_id == rpc.context.span_id
    assert rpc.attributes["error.type"] == "MT5TimeoutError" and rpc.attributes["mt5d.rpc.result"] == "504"
    assert only(points(reader)["mt5d.rpc.requests"], endpoint="candles").attributes["result"] == "504"
    off = Telemetry.disabled().rpc("candles").begin()
    with off.use():
        off.end(MT5TimeoutError("x", 0))


def test_nats_reconnects_counted(tel, reader):
    tel.nats_reconnect()
    tel.nats_reconnect()
    assert only(points(reader)["mt5d.nats.reconnects"]).value == 2


def test_spans_carry_attributes_and_error_type_but_no_message(tel, spans):
    with tel.span("terminal.copy_ticks_from", symbol="EURUSD"):
        with tel.span("terminal.inner"):
            pass
    with pytest.raises(MT5TimeoutError):
        with tel.span("terminal.hop"):
            raise MT5TimeoutError("secret-looking detail", 0)
    done = {s.name: s for s in spans.get_finished_spans()}
    outer, inner, failed = done["terminal.copy_ticks_from"], done["terminal.inner"], done["terminal.hop"]
    assert outer.attributes["symbol"] == "EURUSD" and inner.parent.span_id == outer.context.span_id
    assert failed.attributes["error.type"] == "MT5TimeoutError"
    assert "secret-looking detail" not in failed.to_json()


def test_metric_names_labels_are_bounded_and_never_a_raw_subject(tel, reader):
    tel.batch_published(Batch(ticks=[tick("EURUSD", 1)], candles=[candle("EURUSD", "M1")]), 0.001, 2, now_ms=5)
    tel.poll_cycle(0.01)
    tel.terminal_call("symbol_info_tick", 0.001, "MT5ConnectionError")
    tel.rpc_request("price", "ok", 0.001)
    tel.nats_reconnect()
    pts = points(reader)
    assert set(pts) == set(METRIC_NAMES)
    for name, pp in pts.items():
        for p in pp:
            assert set(p.attributes) <= ALLOWED_KEYS, (name, dict(p.attributes))
            for value in p.attributes.values():
                assert ACCOUNT not in str(value), (name, dict(p.attributes))


# ---- disabled ---------------------------------------------------------------

def test_disabled_is_a_no_op_everywhere():
    off = Telemetry.disabled()
    assert off is Telemetry.disabled() and not off.enabled and isinstance(off, Telemetry)
    assert Telemetry.from_config(TelemetryConfig(), account=ACCOUNT, prefix="mt5") is off
    api = object()
    assert off.instrument(api) is api
    off.ticks_published("EURUSD", 1)
    off.candles_published("EURUSD", "M1", 1)
    off.candles_published("EURUSD", "M1", 1, forming=True)
    off.publish_duration(0.1, 1)
    off.tick_age(1.0)
    off.poll_cycle(0.1)
    off.batch_published(Batch(ticks=[tick("EURUSD", 1)]), 0.1, 1, now_ms=2)
    off.terminal_call("terminal_info", 0.1, "MT5Error")
    off.breaker_state("open")
    off.rpc_request("price", "ok", 0.1)
    off.nats_reconnect()
    with off.span("terminal.hop", symbol="X") as s:
        assert s is None
    with pytest.raises(ValueError):  # never swallows
        with off.span("terminal.hop"):
            raise ValueError("x")
    with off.rpc("price", "mt5.1.rpc.price") as req:
        req.fail("503")
    off.shutdown()


def test_providers_passed_in_are_left_to_their_owner(reader):
    tel = Telemetry(meter_provider=MeterProvider(metric_readers=[reader]), account=ACCOUNT, prefix="mt5")
    tel.ticks_published("EURUSD", 1)
    tel.shutdown()
    tel.ticks_published("EURUSD", 1)
    assert only(points(reader)["mt5d.ticks.published"]).value == 2
    assert tel.instrument("api") != "api"  # metrics on: instrumented
    assert Telemetry(account=ACCOUNT, prefix="mt5").instrument("api") == "api"  # no meter provider: untouched


# ---- exporters ----------------------------------------------------------------

def test_console_exporter_writes_json_lines_to_stderr_not_stdout(capsys):
    tel = Telemetry.from_config(TelemetryConfig(exporter="console", export_interval=60.0),
                                account=ACCOUNT, prefix="mt5")
    assert tel.enabled and tel.tracer_provider is not None
    tel.ticks_published("EURUSD", 7)
    with tel.span("terminal.hop"):
        pass
    tel.shutdown()  # flushes both exporters
    out, err = capsys.readouterr()
    assert out == ""
    records = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert any(r.get("name") == "terminal.hop" for r in records), err[:500]
    metrics = [r for r in records if "resource_metrics" in r]
    assert metrics, err[:500]
    text = json.dumps(metrics)
    assert "mt5d.ticks.published" in text and '"service.name": "mt5d"' in text


def test_prometheus_scrape_endpoint():
    pytest.importorskip("opentelemetry.exporter.prometheus")
    tel = Telemetry.from_config(TelemetryConfig(exporter="prometheus", prometheus_port=0),
                                account=ACCOUNT, prefix="mt5")
    try:
        host, port = tel.prometheus_address
        tel.ticks_published("EURUSD.m", 3)
        tel.breaker_state("open")
        body = urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5).read().decode()
    finally:
        tel.shutdown()
    line = next(ln for ln in body.splitlines() if ln.startswith("mt5d_ticks_published_total{"))
    assert 'symbol="EURUSD.m"' in line and 'messaging_destination_template="mt5.{account}.tick.{symbol}"' in line
    assert line.endswith(" 3.0")
    assert any(ln.startswith("mt5d_breaker_state") and 'state="open"' in ln and ln.endswith(" 2.0")
               for ln in body.splitlines())


def test_otlp_http_exporter_sends_metrics_and_spans(monkeypatch):
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http.metric_exporter")
    received: list[tuple[str, int]] = []

    class Collector(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, len(body)))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    try:
        tel = Telemetry.from_config(
            TelemetryConfig(exporter="otlp", otlp_endpoint=f"http://127.0.0.1:{server.server_address[1]}",
                            export_interval=60.0), account=ACCOUNT, prefix="mt5")
        tel.ticks_published("EURUSD", 1)
        with tel.span("terminal.hop"):
            pass
        tel.shutdown()  # flushes both
    finally:
        server.shutdown()
        server.server_close()
    paths = {path for path, size in received if size}
    assert paths == {"/v1/metrics", "/v1/traces"}, received


@pytest.mark.parametrize("exporter, module", [
    ("otlp", "opentelemetry.exporter.otlp.proto.grpc.metric_exporter"),
    ("prometheus", "opentelemetry.exporter.prometheus"),
])
def test_missing_exporter_package_names_the_extra(monkeypatch, exporter, module):
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_PROTOCOL", raising=False)  # grpc
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(ImportError, match=rf"mt5d\[{exporter}\]"):
        Telemetry.from_config(TelemetryConfig(exporter=exporter, prometheus_port=0), account=ACCOUNT, prefix="mt5")


def test_prometheus_port_in_use_is_an_os_error_naming_the_address():
    pytest.importorskip("opentelemetry.exporter.prometheus")
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=rf"telemetry.prometheus_port: cannot listen on 127.0.0.1:{port}"):
            Telemetry.from_config(TelemetryConfig(exporter="prometheus", prometheus_port=port),
                                  account=ACCOUNT, prefix="mt5")
