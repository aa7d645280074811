"""The daemon on a nats-server running ops/nats-server.conf: clients are refused by role,
and the daemon keeps streaming while they are."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import anyio
import nats
import pytest

from mt5d.daemon.app import Daemon
from mt5d.daemon.natsserver import NatsServer
from mt5d.daemon.secrets import Secret
from mt5d import MT5AuthError, MT5Client, MT5ConnectionError, MT5TimeoutError
from tests.integration.helpers import make_config, running

pytestmark = pytest.mark.anyio
CONF = Path(__file__).resolve().parents[2] / "ops" / "nats-server.conf"
PASSWORDS = dict(re.findall(r'\{\s*user:\s*(\w+),\s*password:\s*"([^"]+)"', CONF.read_text()))
ACCOUNT = "12345678"


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
def secured(tmp_path):
    conf = tmp_path / "nats-server.conf"
    shutil.copy(CONF, conf)
    server = NatsServer(config=str(conf)).start()
    yield server
    server.stop()


async def test_reader_refused_operator_served_stream_goes_on(secured):
    cfg = make_config(secured.url, ACCOUNT, nats={"user": "mt5d"}, stream={"symbols": ["EURUSD"], "timeframes": []},
                      terminal={"sim": {"ticks_per_second": 20.0}})
    daemon = Daemon(cfg, secrets={"NATS_PASSWORD": Secret(PASSWORDS["mt5d"])})
    refusals: list[str] = []

    async def on_error(err):
        refusals.append(str(err))

    # Each on its own inbox prefix, the only one ops/nats-server.conf lets it read.
    reader_nc = await nats.connect(secured.url, user="reader", password=PASSWORDS["reader"], error_cb=on_error,
                                   inbox_prefix="_INBOX_reader")
    operator_nc = await nats.connect(secured.url, user="operator", password=PASSWORDS["operator"],
                                     inbox_prefix="_INBOX_operator")
    ticks: list[bytes] = []
    wanted = {"n": 1, "event": anyio.Event()}

    async def on_tick(msg):
        ticks.append(msg.data)
        if len(ticks) >= wanted["n"]:
            wanted["event"].set()

    async def wait_ticks(n: int) -> None:
        wanted["n"], wanted["event"] = n, anyio.Event()
        if len(ticks) < n:
            with anyio.fail_after(10):
                await wanted["event"].wait()

    await reader_nc.subscribe(f"mt5.{ACCOUNT}.tick.>", cb=on_tick)
    reader = MT5Client(reader_nc, account=ACCOUNT, timeout=1.0)
    operator = MT5Client(operator_nc, account=ACCOUNT, timeout=5.0)
    try:
        async with running(daemon):
            await wait_ticks(1)
            # The reader may read prices but not the account, nor force a reconnect.
            assert (await reader.get_price("EURUSD")).symbol == "EURUSD"
            with pytest.raises(MT5TimeoutError):
                await reader.get_account_info()
            with pytest.raises(MT5TimeoutError):
                await reader.reconnect()
            # Nor can it publish a fake tick.
            await reader_nc.publish(f"mt5.{ACCOUNT}.tick.EURUSD", b'{"symbol":"EURUSD","bid":0}')
            await reader_nc.flush()
            before = len(ticks)
            # The operator may; and the stream went on all along.
            assert (await operator.get_account_info()).login == 10001234
            await wait_ticks(before + 10)
    finally:
        await reader_nc.close()
        await operator_nc.close()
    refused = [r.lower() for r in refusals]
    for subject in ("rpc.account", "rpc.reconnect", ".tick.eurusd"):
        assert any("permissions violation" in r and subject in r for r in refused), refusals
    assert all(b'"bid":0}' not in t for t in ticks)


async def test_client_logins_from_a_url(secured):
    """MT5Client built from a URL logs in as its user, on that user's inbox prefix; a refused
    login is MT5AuthError, a default-prefix client cannot get any reply."""
    cfg = make_config(secured.url, ACCOUNT, nats={"user": "mt5d"}, stream={"symbols": ["EURUSD"], "timeframes": []})
    daemon = Daemon(cfg, secrets={"NATS_PASSWORD": Secret(PASSWORDS["mt5d"])})
    async with running(daemon):
        async with MT5Client(secured.url, account=ACCOUNT, user="reader", nats_password=PASSWORDS["reader"]) as r:
            assert r.inbox_prefix == "_INBOX_reader" and (await r.probe()).account == ACCOUNT
        host = secured.url.removeprefix("nats://")
        url = f"nats://operator:{PASSWORDS['operator']}@{host}"
        async with MT5Client(url, account=ACCOUNT) as op:  # the user from the URL
            assert op.inbox_prefix == "_INBOX_operator" and (await op.get_account_info()).login == 10001234
        with pytest.raises(MT5AuthError, match="refused the login of reader") as info:
            await MT5Client(secured.url, account=ACCOUNT, user="reader", nats_password="wrong").connect()
        assert "wrong" not in str(info.value)
        wrong_prefix = MT5Client(secured.url, account=ACCOUNT, user="reader", nats_password=PASSWORDS["reader"],
                                 inbox_prefix="_INBOX", timeout=1.0)
        with pytest.raises((MT5TimeoutError, MT5ConnectionError)):
            await wrong_prefix.connect()  # its replies' subscription is refused: no answer reaches it
        await wrong_prefix.disconnect()
