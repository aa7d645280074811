"""The old session manager's quick reference runs against mt5d, snippet by snippet.

``data/old_quick_reference.md`` is the old guide, kept whole. Each test takes a
``python`` block from it by its heading and runs it as written against a
running daemon (sim terminal, real nats-server). Two things change, as the
README's migration says, and nothing else:

- imports: ``backend.app.trading.mt5`` becomes ``mt5d`` (``mt5d.errors`` for the errors);
- construction: ``MT5SessionManager(login=..., password=..., ...)`` becomes
  ``MT5SessionManager(<NATS URL>, login=<account>)`` (timeouts kept).

Names a snippet takes from its surroundings (``manager``, ``logger``, ``metrics``,
``symbols``, the user's own helpers like ``alert_admin``) are given to it;
top-level ``await`` runs as in an async REPL. What the guide says each does is
checked on what it prints, logs, returns, and calls.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import logging
import re
import time
from pathlib import Path

import nats
import pytest

from mt5d import MT5SessionManager, probe
from mt5d.daemon.app import Daemon
from mt5d.errors import MT5ConnectionError, MT5Error, MT5TimeoutError, MT5ValidationError
from mt5d.market import Candle
from tests.integration.helpers import eventually, make_config, running, unique_account

pytestmark = pytest.mark.anyio
GUIDE = Path(__file__).with_name("data") / "old_quick_reference.md"
SYMBOLS = ["EURUSD", "GBPUSD", "USDJPY"]
KEPT = ("connection_timeout", "operation_timeout")  # constructor arguments that mean the same here


@pytest.fixture
def anyio_backend():
    return "asyncio"


# ---- the guide's snippets ---------------------------------------------------------------

def snippets() -> dict[str, str]:
    """heading -> the first python block under it."""
    out: dict[str, str] = {}
    heading, block, in_code = "", None, False
    for line in GUIDE.read_text().splitlines():
        if line.startswith("```"):
            if not in_code:
                in_code, block = True, [] if line.strip() == "```python" else None
            else:
                in_code = False
                if block is not None:
                    out.setdefault(heading, "\n".join(block))
            continue
        if in_code:
            if block is not None:
                block.append(line)
        elif line.startswith("#"):
            heading = re.sub(r"^#+\s*(\S*[^\x00-\x7f]\S*\s+)?", "", line).strip()
    return out


SNIPPETS = snippets()


class Port(ast.NodeTransformer):
    """The two changes: the import root, and the construction."""

    def __init__(self, url: str, account: str) -> None:
        self.url, self.account = url, account

    def visit_ImportFrom(self, node: ast.ImportFrom) -> ast.ImportFrom:
        if node.module and node.module.startswith("backend.app.trading.mt5"):
            node.module = "mt5d" + node.module[len("backend.app.trading.mt5"):]
        return node

    def visit_Call(self, node: ast.Call) -> ast.Call:
        self.generic_visit(node)
        if isinstance(node.func, ast.Name) and node.func.id == "MT5SessionManager":
            node.args = [ast.Constant(self.url)]
            node.keywords = [ast.keyword("login", ast.Constant(self.account))] + [
                k for k in node.keywords if k.arg in KEPT]
        return node


async def run(title: str, ns: dict, *, url: str | None = None, account: str | None = None) -> dict:
    """Run the snippet under ``title`` in ``ns`` (ported when url/account are given)."""
    tree = ast.parse(SNIPPETS[title])
    if url is not None:
        tree = ast.fix_missing_locations(Port(url, account).visit(tree))
    code = compile(tree, f"<old quick reference: {title}>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(code, ns)  # noqa: S307 - the guide's own code, run as written
    if inspect.iscoroutine(result):
        await result
    return ns


class Calls:
    """The user's own helpers the snippets call (alert_admin(), metrics.record(), ...): recorded."""

    def __init__(self) -> None:
        self.seen: list[tuple] = []
        self.changed = asyncio.Event()

    def helper(self, name: str):
        def call(*args):
            self.seen.append((name, *args))
            self.changed.set()
        return call

    def names(self) -> list[str]:
        return [c[0] for c in self.seen]


def user_namespace(manager=None) -> tuple[dict, Calls]:
    calls = Calls()
    ns: dict = {"__name__": "old_app", "logger": logging.getLogger("old_app"), "symbols": SYMBOLS}
    exec("from mt5d import MT5SessionManager", ns)  # noqa: S102 - the app module's (ported) import line
    for name in ("try_reinitialize_sync", "alert_admin", "queue_request_for_retry", "retry_with_longer_timeout",
                 "investigate_data"):
        ns[name] = calls.helper(name)

    async def try_reinitialize():
        calls.helper("try_reinitialize")()

    ns["try_reinitialize"] = try_reinitialize
    ns["metrics"] = type("Metrics", (), {"record": staticmethod(calls.helper("metrics.record"))})()
    if manager is not None:
        ns["manager"] = manager
        ns["get_mt5_manager"] = lambda: manager
    # The guide's "Handling Each Error Type" logs `e` in two handlers without `except ... as e`;
    # in its users' code `e` came from around the snippet, so it is given here too.
    ns["e"] = "(the caught error)"
    return ns, calls


def app_log(caplog) -> list[str]:
    """What the snippets logged (the daemon logs into the same test's records)."""
    return [r.getMessage() for r in caplog.records if r.name == "old_app"]


def daemon(nats_url: str, name: str, **sections) -> tuple[Daemon, str]:
    account = unique_account(name)
    sections.setdefault("stream", {"symbols": SYMBOLS, "timeframes": ["M1"]})
    return Daemon(make_config(nats_url, account, **sections)), account


BREAKER_OPEN = dict(terminal={"sim": {"faults": [{"kind": "disconnect", "at": 0, "duration": 300}]}},
                    breaker={"max_failures": 1, "backoff_base_seconds": 300, "backoff_max_seconds": 300,
                             "jitter": 0})


async def streaming(d: Daemon, account: str, nats_url: str) -> None:
    """Until the daemon has a price of every symbol (the old guide's calls assume a live feed)."""
    m = MT5SessionManager(nats_url, login=account)
    await m.connect()
    try:
        async def priced() -> bool:
            return set(await m.get_prices(SYMBOLS)) == set(SYMBOLS)
        for _ in range(500):
            if await priced():
                return
            await asyncio.sleep(0.02)
        raise AssertionError("no prices")
    finally:
        await m.disconnect()


# ---- quick start and the API reference ------------------------------------------------------

async def test_quick_start_connection_account_and_price(nats_url, capsys):
    d, account = daemon(nats_url, "qs")
    async with running(d):
        await streaming(d, account, nats_url)
        ns, _ = user_namespace()
        await run("Basic Usage", ns, url=nats_url, account=account)
        manager = ns["manager"]
        assert ns["account"].login == 10001234 and ns["account"].balance > 0
        assert ns["price"].symbol == "EURUSD" and 0 < ns["price"].bid < ns["price"].ask
        assert not manager.is_connected and manager.nc is None  # disconnected, its connection closed

        # Connection Methods: connect, is_connected, disconnect, reconnect (after a disconnect too).
        manager = MT5SessionManager(nats_url, login=account)
        ns, _ = user_namespace(manager)
        await run("Connection Methods", ns)
        assert "Connected!" in capsys.readouterr().out
        await eventually(lambda: manager.is_connected, timeout=15)  # reconnected: link up, terminal connected

        # Account Methods
        await run("Account Methods", ns)
        info = ns["account_info"]
        direct = (await d.conn.run_call(lambda api: api.account_info()))._asdict()
        assert capsys.readouterr().out.splitlines() == [str(direct["balance"]), direct["name"], str(info.equity)]
        assert info._asdict()["login"] == direct["login"] and info.currency == direct["currency"]
        assert ns["leverage"] == direct["leverage"]
        assert ns["used_margin"] == direct["margin"] and ns["free_margin"] == direct["margin_free"]

        # Price Methods: attribute access, the dict of prices, candles by minutes (timeframe=15).
        await run("Price Methods", ns)
        lines = capsys.readouterr().out.splitlines()
        assert re.fullmatch(r"Bid: \d+\.\d+, Ask: \d+\.\d+", lines[0]), lines[0]
        assert lines[1:] == [f"{s}: {ns['prices'][s].bid}" for s in SYMBOLS]
        candles = ns["candles"]
        assert candles and all(isinstance(c, Candle) and c.timeframe == "M15" for c in candles)
        assert all(b.time - a.time == 15 * 60 for a, b in zip(candles, candles[1:]))
        assert all(c.low <= min(c.open, c.close) <= max(c.open, c.close) <= c.high for c in candles)
        await manager.disconnect()


async def test_performance_tips_reuse_batches_and_timeouts(nats_url):
    d, account = daemon(nats_url, "perf")
    async with running(d):
        await streaming(d, account, nats_url)
        ns, _ = user_namespace()
        await run("1. Connection Reuse", ns, url=nats_url, account=account)
        assert ns["price1"].symbol == "EURUSD" and ns["price2"].symbol == "GBPUSD"
        assert ns["price"].symbol == SYMBOLS[-1] and ns["m"].nc is None  # the loop's managers closed
        ns["manager"] = MT5SessionManager(nats_url, login=account)
        await ns["manager"].connect()
        await run("2. Batch Operations", ns)
        assert set(ns["prices"]) == set(SYMBOLS)
        await ns["manager"].disconnect()
        await run("3. Timeout Configuration", ns, url=nats_url, account=account)
        assert ns["manager"].timeout == 10 and ns["manager"].connection_timeout == 5


# ---- errors -----------------------------------------------------------------------------------

async def test_error_types_import_from_the_errors_module():
    ns, _ = user_namespace()
    await run("Error Types", ns, url="", account="")
    names = ("MT5InitError", "MT5AuthError", "MT5CircuitBreakerOpen", "MT5TimeoutError", "MT5DataError",
             "MT5ConnectionError", "MT5ValidationError", "MT5StateError")
    import mt5d.client
    for name in names:
        assert issubclass(ns[name], MT5Error) and getattr(mt5d.client, name) is ns[name]


async def handling(manager) -> tuple[dict, Calls]:
    """Run "Handling Each Error Type" (with the error classes imported as the guide does)."""
    ns, calls = user_namespace(manager)
    await run("Error Types", ns, url="", account="")
    await run("Handling Each Error Type", ns)
    return ns, calls


async def test_handling_each_error_type(nats_url, caplog):
    caplog.set_level(logging.INFO, logger="old_app")
    d, account = daemon(nats_url, "err")
    async with running(d):
        await streaming(d, account, nats_url)
        manager = MT5SessionManager(nats_url, login=account)
        await manager.connect()
        ns, calls = await handling(manager)
        assert ns["price"].symbol == "EURUSD" and calls.seen == [] and not app_log(caplog)

        # Connection lost: the handler's reconnect() brings the manager back.
        await manager.nc.close()
        ns, calls = await handling(manager)
        assert "price" not in ns and app_log(caplog) == ["Connection lost"]
        assert (await manager.get_price("EURUSD")).symbol == "EURUSD"
        await eventually(lambda: manager.is_connected, timeout=15)
        await manager.disconnect()

    caplog.clear()
    d, account = daemon(nats_url, "errbrk", **BREAKER_OPEN)
    async with running(d):
        manager = MT5SessionManager(nats_url, login=account)
        await manager.connect()  # the daemon answers ...
        assert not manager.is_connected  # ... but its terminal is not connected
        ns, calls = await handling(manager)
        assert calls.names() == ["queue_request_for_retry"]
        assert app_log(caplog) == ["Circuit breaker open - service unavailable"]
        await manager.disconnect()

    caplog.clear()
    d, account = daemon(nats_url, "errval", stream={"symbols": ["GBPUSD"], "timeframes": []})
    async with running(d):
        manager = MT5SessionManager(nats_url, login=account)
        await manager.connect()
        ns, calls = await handling(manager)  # EURUSD is not one of this daemon's symbols
        assert app_log(caplog) == ["Validation error: (the caught error)"]
        with pytest.raises(MT5ValidationError, match="unknown symbol"):
            await manager.get_price("EURUSD")
        with pytest.raises(MT5ValidationError, match="unknown symbol"):
            await manager.get_candles("EURUSD", timeframe=15)
        await manager.disconnect()


async def test_automatic_retry(nats_url):
    d, account = daemon(nats_url, "retry")
    ns, _ = user_namespace()
    await run("Pattern: Automatic Retry", ns, url=nats_url, account=account)
    get_price_with_retry = ns["get_price_with_retry"]
    manager = MT5SessionManager(nats_url, login=account)
    async with running(d):
        await streaming(d, account, nats_url)
        await manager.connect()
        assert (await get_price_with_retry(manager, "EURUSD")).symbol == "EURUSD"
    # The daemon stopped: every attempt is a connection error (no mt5d answers), retried
    # after 1 s and 2 s, then raised.
    t0 = time.monotonic()
    with pytest.raises(MT5ConnectionError, match="no mt5d answers"):
        await get_price_with_retry(manager, "EURUSD")
    assert time.monotonic() - t0 >= 3.0
    await manager.disconnect()


async def test_stopped_daemon_and_silence_fail_within_operation_timeout(nats_url):
    d, account = daemon(nats_url, "stop")
    manager = MT5SessionManager(nats_url, login=account, operation_timeout=1.5)
    async with running(d):
        await streaming(d, account, nats_url)
        await manager.connect()
        assert manager.is_connected
    with pytest.raises(MT5ConnectionError):
        with anyio_timeout(1.5 + 1.0):
            await manager.get_price("EURUSD")
    # Something subscribed but silent (a hung process): MT5TimeoutError after operation_timeout.
    nc = await nats.connect(nats_url)
    try:
        async def hung(msg):
            pass

        await nc.subscribe(f"mt5.{account}.rpc.>", cb=hung)
        await nc.flush()
        await nc.flush()
        t0 = time.monotonic()
        with pytest.raises(MT5TimeoutError, match="within 1.5 s"):
            with anyio_timeout(1.5 + 2.0):
                await manager.get_account_info()
        assert time.monotonic() - t0 >= 1.5
    finally:
        await nc.close()
        await manager.disconnect()


def anyio_timeout(seconds: float):
    import anyio

    return anyio.fail_after(seconds)


# ---- health -----------------------------------------------------------------------------------

async def test_check_service_health(nats_url, capsys):
    d, account = daemon(nats_url, "probe")
    async with running(d):
        await streaming(d, account, nats_url)
        manager = MT5SessionManager(nats_url, login=account)
        await manager.connect()
        ns, _ = user_namespace(manager)
        await run("Check Service Health", ns, url=nats_url, account=account)
        out = capsys.readouterr().out
        assert "Connected to MT5" in out and "Authenticated" in out and "Data feed active" in out
        assert "Not connected" not in out and "failed" not in out and "inactive" not in out
        status = ns["status"]
        assert f"Latency: {status.latency_ms}ms" in out and status.latency_ms > 0
        assert status._asdict()["breaker"] == "closed" and (await probe(manager)).connection_ok
        await manager.disconnect()

    d, account = daemon(nats_url, "probebrk", **BREAKER_OPEN)
    async with running(d):
        manager = MT5SessionManager(nats_url, login=account)
        await manager.connect()
        ns, _ = user_namespace(manager)
        await run("Check Service Health", ns, url=nats_url, account=account)
        out = capsys.readouterr().out
        assert "Not connected" in out and "Authentication failed" in out and "Data feed inactive" in out
        assert "Latency: Nonems" in out  # no probe round trip while the breaker is open
        await manager.disconnect()


async def test_periodic_health_check(nats_url, caplog):
    caplog.set_level(logging.INFO, logger="old_app")
    for name, sections, healthy in (("mon", {}, True), ("monbrk", BREAKER_OPEN, False)):
        d, account = daemon(nats_url, name, **sections)
        async with running(d):
            if healthy:
                await streaming(d, account, nats_url)
            manager = MT5SessionManager(nats_url, login=account, operation_timeout=5)
            await manager.connect()
            ns, calls = user_namespace(manager)
            before = asyncio.all_tasks()
            await run("Pattern: Periodic Health Check", ns, url=nats_url, account=account)
            # the snippet's asyncio.create_task(monitor_health(manager))
            (task,) = [t for t in asyncio.all_tasks() - before if t.get_coro().__name__ == "monitor_health"]
            try:
                if healthy:
                    await eventually(lambda: "metrics.record" in calls.names(), timeout=20)
                else:
                    await eventually(lambda: len(app_log(caplog)) >= 2, timeout=20)
                messages = app_log(caplog)
                if healthy:
                    (record,) = calls.seen
                    assert record[1] == "mt5.latency" and record[2] > 0 and messages == []
                else:
                    # Connection down: recovery tried (the daemon's reconnect fails on the fault, so
                    # the loop logs it and goes on) - the round's metric comes on the next round.
                    assert messages[0] == "Connection lost - attempting recovery"
                    assert messages[1].startswith("Health check failed: ")
            finally:
                task.cancel()
                await manager.disconnect()
        caplog.clear()


# ---- integration examples ------------------------------------------------------------------------

async def test_fastapi_route(nats_url):
    pytest.importorskip("fastapi")
    for name, sections, healthy in (("api", {}, True), ("apibrk", BREAKER_OPEN, False)):
        d, account = daemon(nats_url, name, **sections)
        async with running(d):
            if healthy:
                await streaming(d, account, nats_url)
            manager = MT5SessionManager(nats_url, login=account)
            await manager.connect()
            ns, _ = user_namespace(manager)
            await run("Error Types", ns, url="", account="")  # the app's module imports its errors
            await run("FastAPI Route", ns, url=nats_url, account=account)
            (route,) = ns["router"].routes
            assert route.path == "/api/v1/price/{symbol}"
            answer = await route.endpoint("EURUSD")
            if healthy:
                assert set(answer) == {"bid", "ask"} and 0 < answer["bid"] < answer["ask"]
            else:
                assert answer == ({"error": "Service temporarily unavailable"}, 503)
            await manager.disconnect()


# ---- what the daemon owns now ------------------------------------------------------------------

async def test_daemon_settings_are_refused_with_a_clear_error():
    ns, _ = user_namespace()
    for title, name in (("Configuration", "password"), ("Basic Usage", "password")):
        tree = ast.parse(SNIPPETS[title])
        construction = next(n for n in ast.walk(tree) if isinstance(n, ast.Assign))  # as written, not ported
        with pytest.raises(TypeError, match=f"`{name}`") as info:
            eval(compile(ast.Module([construction], []), title, "exec"), ns)  # noqa: S307
        assert "never travels to a client" in str(info.value)
        assert "your_password" not in str(info.value)  # the value is never echoed
    for kwargs, word in (({"terminal_path": "/x"}, "terminal.path"), ({"max_failures": 3}, "breaker.max_failures"),
                         ({"backoff_max_seconds": 600}, "breaker.backoff_max_seconds"),
                         ({"server": "MetaQuotes-Demo"}, "terminal.server")):
        with pytest.raises(TypeError, match=re.escape(word)):
            MT5SessionManager("nats://127.0.0.1:4222", login="1", **kwargs)


async def test_async_with_and_a_missing_nats(nats_url):
    d, account = daemon(nats_url, "ctx")
    async with running(d):
        await streaming(d, account, nats_url)
        async with MT5SessionManager(nats_url, login=account) as manager:
            assert manager.is_connected and manager.inbox_prefix == "_INBOX"
            assert (await manager.get_candles("EURUSD", timeframe="H1", count=3))[-1].timeframe == "H1"
            nc = manager.nc
        assert nc.is_closed and not manager.is_connected
        from mt5d.errors import MT5StateError
        with pytest.raises(MT5StateError, match="connect"):
            await manager.get_price("EURUSD")
    with pytest.raises(MT5ConnectionError, match="cannot reach NATS"):
        await MT5SessionManager("nats://127.0.0.1:9", login=account, connection_timeout=1).connect()
