"""The daemon as systemd runs it: notify protocol on a real socket, and no secret anywhere in its output."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import anyio
import msgspec
import nats
import pytest

from mt5d.daemon.natsserver import NatsServer

ROOT = Path(__file__).resolve().parents[2]
MT5_PASSWORD = "Tr0ub4dor&3-mt5-secret"
NATS_PASSWORD = "n4ts-s3cret-pw!"

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


def write_config(tmp_path: Path, url: str, faults: list[dict], *, user: str = "", account: str = "leak") -> Path:
    fault_toml = "".join(
        f'[[terminal.sim.faults]]\nkind = "{f["kind"]}"\nat = {f["at"]}\nduration = {f["duration"]}\n' for f in faults)
    text = f"""
[terminal]
backend = "sim"
login = 10001234
operation_timeout = 1.0
auth_retries = 20
[terminal.sim]
ticks_per_second = 20.0
{fault_toml}
[stream]
symbols = ["EURUSD", "GBPUSD"]
timeframes = []
poll_interval = 0.02
[nats]
url = "{url}"
account = "{account}"
user = "{user}"
[breaker]
max_failures = 2
backoff_base_seconds = 0.5
backoff_max_seconds = 1.0
[health]
interval = 0.25
[logging]
level = "DEBUG"
"""
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


class NotifySocket:
    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.path = path
        self.messages: list[tuple[float, str]] = []

    def drain(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except (socket.timeout, BlockingIOError):
                return
            self.messages.append((time.time(), data.decode()))


def start_daemon(config: Path, env_extra: dict) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MT5_", "NATS_"))}
    env.update(env_extra)
    return subprocess.Popen([sys.executable, "-m", "mt5d.daemon.cli", "run", "--config", str(config)],
                            cwd=ROOT, env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


async def test_notify_protocol_ready_watchdog_stopping_and_no_watchdog_while_wedged(tmp_path, nats_url):
    notify = NotifySocket(tmp_path / "notify.sock")
    config = write_config(tmp_path, nats_url, [{"kind": "hang", "at": 3.0, "duration": 4.0}], account="notify")
    proc = start_daemon(config, {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "2000000",
                                 "MT5_PASSWORD": MT5_PASSWORD})
    # Collect datagrams through start, the hang (3 s to 7 s) and the recovery after it.
    end = time.monotonic() + 11
    while time.monotonic() < end and proc.poll() is None:
        notify.drain()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=15)
    notify.drain()
    assert proc.returncode == 0, err[-2000:]
    texts = [m for _, m in notify.messages]
    assert any(m.startswith("READY=1") for m in texts)
    assert texts[-1].startswith("STOPPING=1")
    assert sum(m == "WATCHDOG=1" for m in texts) >= 4
    assert any(m.startswith("STATUS=") for m in texts)
    logs = [msgspec.json.decode(line) for line in err.splitlines() if line.startswith("{")]
    wedged = [r for r in logs if r["event"] == "wedged"]
    unwedged = [r for r in logs if r["event"] == "unwedged"]
    assert wedged and unwedged
    from datetime import datetime

    def ts(rec):
        return datetime.fromisoformat(rec["ts"].replace("Z", "+00:00")).timestamp()

    t0, t1 = ts(wedged[0]), ts(unwedged[0])
    assert t1 - t0 > 1.0
    fed_while_wedged = [t for t, m in notify.messages if m == "WATCHDOG=1" and t0 + 0.3 < t < t1 - 0.3]
    assert fed_while_wedged == []
    assert any(t > t1 for t, m in notify.messages if m == "WATCHDOG=1")  # fed again once it returned


async def test_password_never_appears_in_logs_or_nats_messages(tmp_path):
    """Failing MT5 logins and failing NATS auth, on purpose; every byte of output is scanned."""
    conf = tmp_path / "nats.conf"
    conf.write_text(f'authorization {{ users = [ {{ user: "mt5d", password: "{NATS_PASSWORD}" }}, '
                    f'{{ user: "spy", password: "spy-pass" }} ] }}\n')
    server = NatsServer(config=str(conf)).start()
    seen: list[bytes] = []
    try:
        spy = await nats.connect(server.url, user="spy", password="spy-pass")

        recovered = anyio.Event()

        async def on_any(msg):
            seen.append(msg.subject.encode() + b" " + msg.data + repr(msg.headers).encode())
            # Recovered: ticks flow after the failed logins.
            if ".tick." in msg.subject and any(b'"event":"connected"' in m for m in seen):
                recovered.set()

        await spy.subscribe(">", cb=on_any)
        await spy.flush()
        await spy.flush()
        # 1: right NATS password, MT5 logins failing for a while (auth fault), then recovering.
        config = write_config(tmp_path, server.url, [{"kind": "auth", "at": 0.0, "duration": 3.0},
                                                     {"kind": "disconnect", "at": 4.0, "duration": 1.0}],
                              user="mt5d")
        env = {"MT5_PASSWORD": MT5_PASSWORD, "NATS_PASSWORD": NATS_PASSWORD}
        proc = start_daemon(config, env)
        with anyio.fail_after(15):
            await recovered.wait()
        proc.send_signal(signal.SIGTERM)
        out1, err1 = proc.communicate(timeout=15)
        # 2: wrong NATS password: the daemon keeps retrying and logging it, never printing the secret.
        #    This time the secrets come from systemd's $CREDENTIALS_DIRECTORY and a .env file.
        creds = tmp_path / "credentials"
        creds.mkdir()
        (creds / "mt5-password").write_text(MT5_PASSWORD + "\n")
        (tmp_path / ".env").write_text(f'NATS_PASSWORD="{NATS_PASSWORD}-wrong"\n')
        (tmp_path / ".env").chmod(0o600)
        proc = start_daemon(config, {"CREDENTIALS_DIRECTORY": str(creds)})
        deadline = time.monotonic() + 5
        err_lines = []
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            err_lines.append(line)
            if "Authorization Violation" in line:
                break
        proc.send_signal(signal.SIGTERM)
        out2, err2 = proc.communicate(timeout=15)
        await spy.drain()
    finally:
        server.stop()
    everything = "\n".join([out1, err1, out2, "".join(err_lines), err2]).encode() + b"\n".join(seen)
    assert b"auth_failed" in everything and b"Authorization Violation" in everything
    # The secrets were really read from each source: environment, credentials directory, .env.
    for source in (b'"source":"env:MT5_PASSWORD"', b'"source":"credential:', b'"source":"dotenv:'):
        assert source in everything
    assert any(b".tick." in s for s in seen) and any(b".health" in s for s in seen)
    for secret in (MT5_PASSWORD, NATS_PASSWORD, NATS_PASSWORD + "-wrong"):
        assert secret.encode() not in everything
