"""Metrics and traces with OpenTelemetry: what the actors count, time and trace.

The actors call a handful of cheap methods on one ``Telemetry`` object, never
once per tick (counts are per symbol and per batch), and only terminal
requests and RPC requests get spans. With the default exporter ``"none"`` the
object is ``Telemetry.disabled()``: every method is an empty Python method,
no OpenTelemetry SDK is even imported.

Exporters (``[telemetry] exporter``):

* ``none``        no SDK readers at all (the default);
* ``console``     metrics and spans as one JSON object a line on *stderr*
                  (stdout stays clean), every ``export_interval`` seconds;
* ``otlp``        OTLP metrics and traces to ``otlp_endpoint`` (or the
                  ``OTEL_EXPORTER_OTLP_*`` environment); gRPC unless
                  ``OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf``; needs the
                  ``mt5d[otlp]`` extra;
* ``prometheus``  a scrape endpoint on ``prometheus_host:prometheus_port``
                  (metrics only); needs the ``mt5d[prometheus]`` extra.

Labels are bounded and carry no secret: symbols and timeframes from the config,
terminal function names, RPC endpoint names, error class names and RPC status
codes. Metrics name the NATS destination by its *template*
(``mt5.{account}.tick.{symbol}``), never the raw subject.

Metric                          Kind                Attributes
------------------------------  ------------------  ------------------------------------------------
mt5d.ticks.published            counter  {tick}     symbol, messaging.*
mt5d.candles.published          counter  {candle}   symbol, timeframe, closed, messaging.*
mt5d.publish.duration           histogram s         messaging.* (one per batch: publish + flush)
mt5d.publish.batch.size         histogram {message} messaging.*
mt5d.tick.age                   histogram ms        (newest tick of a batch: its UTC time to now)
mt5d.poll.cycle.duration        histogram s
mt5d.terminal.call.duration     histogram s         function, error.type (on failure)
mt5d.terminal.call.errors       counter  {error}    function, error.type
mt5d.breaker.state              gauge               state (value 0 closed, 1 half_open, 2 open)
mt5d.rpc.requests               counter  {request}  endpoint, result, messaging.*
mt5d.rpc.duration               histogram s         endpoint, result, messaging.*
mt5d.nats.reconnects            counter  {reconnect}

``messaging.*`` is ``messaging.system="nats"``, ``messaging.destination.template``
and ``messaging.operation.type`` ("publish" for the stream, "process" for RPC).
Counters are kept as plain sums and reported through observable counters
(~0.1 us to add); histograms go through the SDK (~6-10 us a record), which is
why they are recorded per batch, per poll cycle and per terminal call only.

Spans: ``span(name, **attrs)`` (used around each terminal request) and
``rpc(endpoint, subject)`` (one per RPC request, kind SERVER, raw subject as
``messaging.destination.name`` on the span only). An exception marks a span
with ``error.type`` (the class name); its message is never recorded. The
sampler follows ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import time
from collections import Counter as _Tally
from operator import attrgetter
from typing import Annotated, Any, Callable, Literal

import msgspec

from mt5d import __version__
from mt5d.subjects import Subjects

__all__ = [
    "TelemetryConfig",
    "Telemetry",
    "telemetry_problems",
    "BREAKER_VALUES",
    "METRIC_NAMES",
]

BREAKER_VALUES = {"closed": 0, "half_open": 1, "open": 2}

METRIC_NAMES = (
    "mt5d.ticks.published",
    "mt5d.candles.published",
    "mt5d.publish.duration",
    "mt5d.publish.batch.size",
    "mt5d.tick.age",
    "mt5d.poll.cycle.duration",
    "mt5d.terminal.call.duration",
    "mt5d.terminal.call.errors",
    "mt5d.breaker.state",
    "mt5d.rpc.requests",
    "mt5d.rpc.duration",
    "mt5d.nats.reconnects",
)

# Bucket advice (the SDK's default buckets are made for milliseconds).
_SECONDS_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                    1.0, 2.5, 5.0, 10.0, 30.0)
_AGE_MS_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000)
_SIZE_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)

_OTLP_MODULES = {
    "grpc": ("opentelemetry.exporter.otlp.proto.grpc.metric_exporter",
             "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"),
    "http/protobuf": ("opentelemetry.exporter.otlp.proto.http.metric_exporter",
                      "opentelemetry.exporter.otlp.proto.http.trace_exporter"),
}


class TelemetryConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """``[telemetry]``: which exporter, and where it sends or listens."""

    exporter: Literal["none", "console", "otlp", "prometheus"] = "none"
    # OTLP collector, e.g. "http://127.0.0.1:4317" (gRPC) or "http://127.0.0.1:4318" with
    # OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf; empty: the OTEL_EXPORTER_OTLP_* environment.
    otlp_endpoint: str = ""
    prometheus_host: str = "127.0.0.1"
    # 0: any free port (tests); the bound one is Telemetry.prometheus_address.
    prometheus_port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 9464
    # Seconds between metric exports (console, otlp); Prometheus is scraped instead.
    export_interval: Annotated[float, msgspec.Meta(gt=0)] = 10.0


def _otlp_protocol() -> str:
    proto = os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc").strip() or "grpc"
    return proto


def telemetry_problems(cfg: TelemetryConfig, section: str = "telemetry") -> list[str]:
    """Config problems the struct types cannot see (for ``check-config``), one line each."""
    problems = []
    if cfg.exporter == "otlp":
        proto = _otlp_protocol()
        if proto not in _OTLP_MODULES:
            problems.append(f"OTEL_EXPORTER_OTLP_PROTOCOL: {proto!r} (expected grpc or http/protobuf)")
        elif not _module_available(_OTLP_MODULES[proto][0]):
            problems.append(f"{section}.exporter: 'otlp' needs the OTLP exporter package "
                            f"(expected it installed: pip install 'mt5d[otlp]')")
        if cfg.otlp_endpoint and not cfg.otlp_endpoint.startswith(("http://", "https://")):
            problems.append(f"{section}.otlp_endpoint: {cfg.otlp_endpoint!r} "
                            "(expected a URL such as 'http://127.0.0.1:4317')")
    if cfg.exporter == "prometheus" and not (_module_available("opentelemetry.exporter.prometheus")
                                            and _module_available("prometheus_client")):
        problems.append(f"{section}.exporter: 'prometheus' needs the Prometheus exporter package "
                        f"(expected it installed: pip install 'mt5d[prometheus]')")
    return problems


def _module_available(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _import_extra(module: str, extra: str):
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"telemetry exporter needs the optional package for mt5d[{extra}] "
            f"(pip install 'mt5d[{extra}]'): {err}"
        ) from None


_NULL_SPAN = contextlib.nullcontext()


class _RpcScope:
    """One RPC request: a span (when tracing) and, at the end, one ``rpc_request``.

    As a context manager the span is current inside the block. When a request
    is accepted in one task and served in another, use ``begin()`` at intake,
    ``with scope.use():`` around the work (the terminal request spans become
    children), and ``end()`` / ``end(err)`` when the reply is sent; ``end`` is
    idempotent.
    """

    __slots__ = ("_tel", "endpoint", "subject", "result", "_t0", "_token", "span", "_ended")

    def __init__(self, tel: "Telemetry", endpoint: str, subject: str) -> None:
        self._tel = tel
        self.endpoint = endpoint
        self.subject = subject
        self.result = "ok"
        self._t0 = None
        self._token = None
        self.span = None
        self._ended = False

    def fail(self, err: BaseException | str | int) -> None:
        """Mark the request failed: an ``MT5Error`` (its RPC status), a status code, or another exception (500)."""
        if isinstance(err, (str, int)):
            self.result = str(err)
            error_type = self.result
        else:
            self.result = str(getattr(err, "status", 500))
            error_type = type(err).__name__
        if self.span is not None:
            _mark_error(self.span, error_type)

    def begin(self) -> "_RpcScope":
        """Start the clock and the span (not made current: see ``use``)."""
        if self._t0 is None:
            tel = self._tel
            if tel._tracer is not None:
                attrs = dict(tel._rpc_attrs(self.endpoint))
                if self.subject:
                    attrs["messaging.destination.name"] = self.subject  # raw subject: spans only
                self.span = tel._tracer.start_span(f"process {attrs['messaging.destination.template']}",
                                                   kind=tel._span_kind_server, attributes=attrs)
            self._t0 = time.perf_counter()
        return self

    def use(self):
        """Make the request's span current in this block (any task), without ending it."""
        if self.span is None:
            return _NULL_SPAN
        from opentelemetry import trace

        return trace.use_span(self.span, end_on_exit=False, record_exception=False,
                              set_status_on_exception=False)

    def end(self, err: BaseException | str | int | None = None) -> None:
        """Record the request (once): ok, or failed with ``err``."""
        if self._ended:
            return
        self._ended = True
        if self._t0 is None:
            self.begin()
        seconds = time.perf_counter() - self._t0
        if err is not None:
            self.fail(err)
        self._tel.rpc_request(self.endpoint, self.result, seconds)
        if self.span is not None:
            if self.result != "ok":
                self.span.set_attribute("mt5d.rpc.result", self.result)
            self.span.end()

    def __enter__(self) -> "_RpcScope":
        self.begin()
        if self.span is not None:
            from opentelemetry import context, trace

            self._token = context.attach(trace.set_span_in_context(self.span))
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self._token is not None:
            from opentelemetry import context

            context.detach(self._token)
            self._token = None
        if exc is not None and not isinstance(exc, Exception):
            self.result = "cancelled"  # shutdown or the caller's timeout: not an error of ours
            exc = None
        self.end(exc)
        return False


def _mark_error(span, error_type: str) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("error.type", error_type)
    # The class name only: exception messages stay out of exported traces.
    span.set_status(Status(StatusCode.ERROR, error_type))


class _Sum:
    """A monotonic counter kept as plain Python sums and reported when a reader collects.

    An observable counter: adding is a dict lookup and an integer add (~0.1 µs)
    where the SDK's synchronous ``Counter.add`` costs ~10 µs a call. Each
    counter is only ever added to from one thread (the event loop, or the
    terminal thread for terminal errors); collection reads a snapshot.
    """

    __slots__ = ("cells",)

    def __init__(self, meter, observation, name: str, unit: str, description: str) -> None:
        self.cells: dict[Any, list] = {}  # key -> [attributes, total]

        def observe(_options):
            return [observation(total, attrs) for attrs, total in list(self.cells.values())]

        meter.create_observable_counter(name, [observe], unit, description)

    def new(self, key: Any, attrs: dict) -> list:
        cell = self.cells[key] = [attrs, 0]
        return cell


class _InstrumentedApi:
    """A ``TerminalApi`` whose every public call records ``terminal_call`` (runs on the terminal thread)."""

    def __init__(self, api: Any, tel: "Telemetry") -> None:
        self._api = api
        self._tel = tel

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._api, name)
        if name.startswith("_") or not callable(attr):
            return attr
        record = self._tel.terminal_call
        clock = time.perf_counter

        if name == "cycle":  # a poll cycle's hop: one record per terminal function it called
            def cycle(plan):
                steps, seconds = attr(plan)
                failed: dict[str, str] = {}
                for _, errors in steps:
                    for _, function, err in errors:
                        failed.setdefault(function, type(err).__name__)
                for function, s in seconds.items():
                    record(function, s, failed.get(function))
                return steps, seconds

            self.__dict__[name] = cycle
            return cycle

        def call(*args, **kwargs):
            t0 = clock()
            try:
                result = attr(*args, **kwargs)
            except Exception as err:
                record(name, clock() - t0, type(err).__name__)
                raise
            record(name, clock() - t0, None)
            return result

        call.__name__ = call.__qualname__ = name
        self.__dict__[name] = call  # cached: __getattr__ runs once per function
        return call

    def __repr__(self) -> str:
        return f"instrumented({self._api!r})"


class Telemetry:
    """The actors' handle on metrics and traces.

    ``Telemetry(meter_provider, tracer_provider, account=, prefix=)`` uses the
    given SDK providers (tests pass one with an ``InMemoryMetricReader``); a
    ``None`` provider means no metrics (or no spans). ``from_config`` builds
    the providers and exporters and owns them (``shutdown`` shuts them down);
    ``disabled()`` is the free no-op.
    """

    enabled = True

    def __init__(self, meter_provider: Any = None, tracer_provider: Any = None, *,
                 account: str = "", prefix: str = "mt5", _owned: tuple = ()) -> None:
        from opentelemetry import metrics
        from opentelemetry.metrics import Observation
        from opentelemetry.trace import SpanKind

        self.account = str(account)
        self.prefix = prefix
        self.meter_provider = meter_provider
        self.tracer_provider = tracer_provider
        self.prometheus_address: tuple[str, int] | None = None
        self._owned = list(_owned)  # (shutdown callables) of what from_config built
        self._span_kind_server = SpanKind.SERVER
        self._span_kind_internal = SpanKind.INTERNAL
        self._tracer = tracer_provider.get_tracer("mt5d", __version__) if tracer_provider is not None else None
        self._metrics_on = meter_provider is not None
        meter = (meter_provider or metrics.NoOpMeterProvider()).get_meter("mt5d", __version__)

        msg = {"messaging.system": "nats", "messaging.operation.type": "publish"}
        self._msg_publish = msg
        self._templates = subjects = Subjects(prefix, "*", wildcard=True)
        self._tick_template = subjects.template("tick")
        self._candle_template = subjects.template("candle")
        self._forming_template = subjects.template("candle_forming")
        self._batch_attrs = {**msg, "messaging.destination.template": f"{prefix}.{{account}}.>"}
        self._call_attrs: dict[tuple[str, str | None], dict] = {}
        self._rpc_attr_cache: dict[str, dict] = {}
        self._rpc_result_attrs: dict[tuple[str, str], dict] = {}
        self._breaker = "closed"

        self._ticks = _Sum(meter, Observation, "mt5d.ticks.published", "{tick}",
                           "Ticks published and confirmed by NATS")
        self._candles = _Sum(meter, Observation, "mt5d.candles.published", "{candle}",
                             "Candles published and confirmed by NATS")
        self._publish = meter.create_histogram(
            "mt5d.publish.duration", "s", "Publishing one batch: publish calls and the confirming flush",
            explicit_bucket_boundaries_advisory=_SECONDS_BUCKETS)
        self._batch_size = meter.create_histogram(
            "mt5d.publish.batch.size", "{message}", "Messages in one published batch",
            explicit_bucket_boundaries_advisory=_SIZE_BUCKETS)
        self._age = meter.create_histogram(
            "mt5d.tick.age", "ms", "Age of a batch's newest tick when published (tick UTC time to now)",
            explicit_bucket_boundaries_advisory=_AGE_MS_BUCKETS)
        self._cycle = meter.create_histogram(
            "mt5d.poll.cycle.duration", "s", "One poll cycle: the terminal hop for every symbol",
            explicit_bucket_boundaries_advisory=_SECONDS_BUCKETS)
        self._call = meter.create_histogram(
            "mt5d.terminal.call.duration", "s", "One terminal function call, on the terminal thread",
            explicit_bucket_boundaries_advisory=_SECONDS_BUCKETS)
        self._call_errors = _Sum(meter, Observation, "mt5d.terminal.call.errors", "{error}",
                                 "Terminal function calls that raised, by function and error type")
        self._rpc_count = _Sum(meter, Observation, "mt5d.rpc.requests", "{request}",
                               "RPC requests by endpoint and result")
        self._rpc_time = meter.create_histogram(
            "mt5d.rpc.duration", "s", "RPC request handling time",
            explicit_bucket_boundaries_advisory=_SECONDS_BUCKETS)
        self._reconnects = _Sum(meter, Observation, "mt5d.nats.reconnects", "{reconnect}", "NATS reconnections")
        self._tick_cells = self._ticks.cells

        def observe_breaker(_options):
            state = self._breaker
            return [Observation(BREAKER_VALUES.get(state, 2), {"state": state})]

        self._breaker_gauge = meter.create_observable_gauge(
            "mt5d.breaker.state", [observe_breaker], "1",
            "Circuit breaker state: 0 closed, 1 half_open, 2 open (the state is also an attribute)")

    # ---- construction ---------------------------------------------------
    @classmethod
    def disabled(cls) -> "Telemetry":
        """The no-op telemetry: every method is an empty call."""
        return _DISABLED

    @classmethod
    def from_config(cls, cfg: TelemetryConfig, *, account: str, prefix: str) -> "Telemetry":
        """Providers and exporters for ``cfg``; raises ImportError (naming the extra) or OSError (port)."""
        if cfg.exporter == "none":
            return cls.disabled()
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        resource = Resource.create({"service.name": "mt5d", "service.version": __version__,
                                    "service.instance.id": str(account)})
        interval_ms = cfg.export_interval * 1000
        owned: list[Callable[[], Any]] = []
        tracer_provider = None
        prometheus_address = None
        if cfg.exporter == "console":
            from opentelemetry.sdk.metrics.export import ConsoleMetricExporter
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            # One JSON object a line on stderr, like the logs; stdout stays clean.
            err = sys.stderr
            reader = PeriodicExportingMetricReader(
                ConsoleMetricExporter(out=err, formatter=lambda data: data.to_json(indent=None) + "\n"),
                export_interval_millis=interval_ms)
            span_exporter = ConsoleSpanExporter(out=err, formatter=lambda span: span.to_json(indent=None) + "\n")
        elif cfg.exporter == "otlp":
            proto = _otlp_protocol()
            if proto not in _OTLP_MODULES:
                raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL={proto!r}: expected grpc or http/protobuf")
            metric_mod, trace_mod = (_import_extra(m, "otlp") for m in _OTLP_MODULES[proto])
            m_kw: dict = {}
            t_kw: dict = {}
            if cfg.otlp_endpoint:
                base = cfg.otlp_endpoint.rstrip("/")
                if proto == "grpc":
                    m_kw["endpoint"] = t_kw["endpoint"] = base
                else:  # the HTTP exporters take the full signal URL
                    m_kw["endpoint"], t_kw["endpoint"] = f"{base}/v1/metrics", f"{base}/v1/traces"
            reader = PeriodicExportingMetricReader(metric_mod.OTLPMetricExporter(**m_kw),
                                                   export_interval_millis=interval_ms)
            span_exporter = trace_mod.OTLPSpanExporter(**t_kw)
        elif cfg.exporter == "prometheus":
            prom = _import_extra("opentelemetry.exporter.prometheus", "prometheus")
            client = _import_extra("prometheus_client", "prometheus")
            registry = client.CollectorRegistry()  # ours alone: no clash with the process-global one
            reader = prom.PrometheusMetricReader(registry=registry)
            try:
                started = client.start_http_server(cfg.prometheus_port, addr=cfg.prometheus_host, registry=registry)
            except OSError as err:
                raise OSError(err.errno, f"telemetry.prometheus_port: cannot listen on "
                                         f"{cfg.prometheus_host}:{cfg.prometheus_port} ({err.strerror or err})") from None
            httpd = started[0] if isinstance(started, tuple) else None
            if httpd is not None:
                prometheus_address = httpd.server_address[:2]
                owned.append(lambda: (httpd.shutdown(), httpd.server_close()))
            else:
                prometheus_address = (cfg.prometheus_host, cfg.prometheus_port)
            span_exporter = None  # scrape endpoints carry metrics only
        else:  # pragma: no cover - the Literal type refuses anything else
            raise ValueError(f"unknown telemetry exporter {cfg.exporter!r}")
        meter_provider = MeterProvider(metric_readers=[reader], resource=resource)
        owned.insert(0, meter_provider.shutdown)
        if span_exporter is not None:
            # The sampler honours OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG.
            tracer_provider = TracerProvider(resource=resource)
            tracer_provider.add_span_processor(
                BatchSpanProcessor(span_exporter, schedule_delay_millis=min(interval_ms, 5000)))
            owned.insert(0, tracer_provider.shutdown)
        tel = cls(meter_provider, tracer_provider, account=account, prefix=prefix, _owned=tuple(owned))
        tel.prometheus_address = prometheus_address
        return tel

    def shutdown(self) -> None:
        """Flush and stop what ``from_config`` built (providers passed in are the caller's to shut down)."""
        owned, self._owned = self._owned, []
        for stop in owned:
            try:
                stop()
            except Exception:  # an exporter that cannot flush must not block the exit
                pass

    # ---- what the actors call (cheap; per batch, never per tick) ----------
    def ticks_published(self, symbol: str, n: int) -> None:
        cell = self._tick_cells.get(symbol)
        if cell is None:
            cell = self._ticks.new(symbol, {
                "symbol": symbol, **self._msg_publish, "messaging.destination.template": self._tick_template})
        cell[1] += n

    def candles_published(self, symbol: str, timeframe: str, n: int, *, forming: bool = False) -> None:
        key = (symbol, timeframe, forming)
        cell = self._candles.cells.get(key)
        if cell is None:
            cell = self._candles.new(key, {
                "symbol": symbol, "timeframe": timeframe, "closed": not forming, **self._msg_publish,
                "messaging.destination.template": self._forming_template if forming else self._candle_template})
        cell[1] += n

    def publish_duration(self, seconds: float, messages: int) -> None:
        self._publish.record(seconds, self._batch_attrs)
        self._batch_size.record(messages, self._batch_attrs)

    def tick_age(self, ms: float) -> None:
        # Histograms refuse negative values; a tick "from the future" (clock skew) counts as fresh.
        self._age.record(ms if ms > 0 else 0.0)

    def poll_cycle(self, seconds: float) -> None:
        self._cycle.record(seconds)

    def batch_published(self, batch: Any, seconds: float, messages: int, *, now_ms: float | None = None) -> None:
        """Everything about one confirmed batch (an ``mt5d.actors.messages.Batch``) in one call."""
        ticks = batch.ticks
        if ticks:
            for symbol, n in _Tally(map(_symbol_of, ticks)).items():
                self.ticks_published(symbol, n)
            if now_ms is not None:
                self.tick_age(now_ms - max(map(_utc_ms_of, ticks)))
        for candles, forming in ((batch.candles, False), (batch.forming, True)):
            if candles:
                for (symbol, tf), n in _Tally(map(_symbol_tf_of, candles)).items():
                    self.candles_published(symbol, tf, n, forming=forming)
        self.publish_duration(seconds, messages)

    def terminal_call(self, function: str, seconds: float, error: str | None) -> None:
        key = (function, error)
        attrs = self._call_attrs.get(key)
        if attrs is None:
            attrs = {"function": function}
            if error is not None:
                attrs["error.type"] = error
            self._call_attrs[key] = attrs
        self._call.record(seconds, attrs)
        if error is not None:
            cell = self._call_errors.cells.get(key)
            if cell is None:
                cell = self._call_errors.new(key, attrs)
            cell[1] += 1

    def breaker_state(self, state: str) -> None:
        self._breaker = state

    def rpc_request(self, endpoint: str, result: str, seconds: float) -> None:
        key = (endpoint, result)
        attrs = self._rpc_result_attrs.get(key)
        if attrs is None:
            attrs = self._rpc_result_attrs[key] = {**self._rpc_attrs(endpoint), "result": result}
        cell = self._rpc_count.cells.get(key)
        if cell is None:
            cell = self._rpc_count.new(key, attrs)
        cell[1] += 1
        self._rpc_time.record(seconds, attrs)

    def nats_reconnect(self) -> None:
        cell = self._reconnects.cells.get(None)
        if cell is None:
            cell = self._reconnects.new(None, {})
        cell[1] += 1

    # ---- spans --------------------------------------------------------
    def span(self, name: str, **attrs: Any):
        """``with telemetry.span("terminal.copy_ticks_from", symbol=...):`` -- a span when tracing, else nothing.

        An exception leaving the block marks the span with ``error.type`` (the
        class name; the message is not recorded) and is re-raised.
        """
        if self._tracer is None:
            return _NULL_SPAN
        return self._span(name, attrs)

    @contextlib.contextmanager
    def _span(self, name: str, attrs: dict):
        with self._tracer.start_as_current_span(name, kind=self._span_kind_internal, attributes=attrs or None,
                                                record_exception=False, set_status_on_exception=False) as span:
            try:
                yield span
            except Exception as err:
                _mark_error(span, type(err).__name__)
                raise

    def rpc(self, endpoint: str, subject: str = "") -> _RpcScope:
        """``with telemetry.rpc("price", msg.subject) as req:`` -- span + ``rpc_request`` on exit.

        Result "ok" unless an exception leaves the block (an ``MT5Error``'s
        status, else "500") or ``req.fail(err_or_status)`` was called. Across
        tasks: ``scope = telemetry.rpc(...).begin()``, ``with scope.use():``,
        ``scope.end(err_or_None)``.
        """
        return _RpcScope(self, endpoint, subject)

    def instrument(self, api: Any) -> Any:
        """``api`` (a ``TerminalApi``) with ``terminal_call`` recorded for every call; ``api`` itself when off."""
        if not self._metrics_on:
            return api
        return _InstrumentedApi(api, self)

    # ---- helpers ------------------------------------------------------
    def _rpc_attrs(self, endpoint: str) -> dict:
        attrs = self._rpc_attr_cache.get(endpoint)
        if attrs is None:
            attrs = self._rpc_attr_cache[endpoint] = {
                "endpoint": endpoint, "messaging.system": "nats", "messaging.operation.type": "process",
                "messaging.destination.template": self._templates.template("rpc").replace("{endpoint}", endpoint)}
        return attrs

    def __repr__(self) -> str:
        return (f"Telemetry(metrics={'on' if self._metrics_on else 'off'}, "
                f"traces={'on' if self._tracer is not None else 'off'}, prefix={self.prefix!r})")


_symbol_of = attrgetter("symbol")
_utc_ms_of = attrgetter("time_utc_ms")
_symbol_tf_of = attrgetter("symbol", "timeframe")


class _DisabledRpcScope:
    __slots__ = ("result",)

    def __init__(self) -> None:
        self.result = "ok"

    def fail(self, err) -> None:
        pass

    def begin(self) -> "_DisabledRpcScope":
        return self

    def use(self):
        return _NULL_SPAN

    def end(self, err=None) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        return False


_DISABLED_RPC = _DisabledRpcScope()


class _Disabled(Telemetry):
    """Every method does nothing; nothing from OpenTelemetry is imported."""

    enabled = False

    def __init__(self) -> None:  # noqa: D107 - no providers, no instruments
        self.account = ""
        self.prefix = ""
        self.meter_provider = None
        self.tracer_provider = None
        self.prometheus_address = None
        self._owned = []
        self._metrics_on = False
        self._tracer = None

    def ticks_published(self, symbol: str, n: int) -> None:
        pass

    def candles_published(self, symbol: str, timeframe: str, n: int, *, forming: bool = False) -> None:
        pass

    def publish_duration(self, seconds: float, messages: int) -> None:
        pass

    def tick_age(self, ms: float) -> None:
        pass

    def poll_cycle(self, seconds: float) -> None:
        pass

    def batch_published(self, batch: Any, seconds: float, messages: int, *, now_ms: float | None = None) -> None:
        pass

    def terminal_call(self, function: str, seconds: float, error: str | None) -> None:
        pass

    def breaker_state(self, state: str) -> None:
        pass

    def rpc_request(self, endpoint: str, result: str, seconds: float) -> None:
        pass

    def nats_reconnect(self) -> None:
        pass

    def span(self, name: str, **attrs: Any):
        return _NULL_SPAN

    def rpc(self, endpoint: str, subject: str = "") -> Any:
        return _DISABLED_RPC

    def instrument(self, api: Any) -> Any:
        return api

    def shutdown(self) -> None:
        pass

    def __repr__(self) -> str:
        return "Telemetry.disabled()"


_DISABLED = _Disabled()

