"""The distribution as users install it: one import root, a light client, no clobbering.

Builds the wheel from a copy of this checkout, installs it alone into a fresh
virtualenv (the documented client install: ``pip install mt5d``, no extras),
and uses it from there against a daemon running in this test, next to
``python-daemon`` (which installs a top-level ``daemon`` of its own) and inside
a FastAPI project that has its own ``schemas.py``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import anyio
import pytest

from tests.integration.helpers import Collector, make_config, running, unique_account
from mt5d.daemon.app import Daemon

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("numpy", "anyio", "opentelemetry-sdk", "opentelemetry-api")


@pytest.fixture
def anyio_backend():
    return "asyncio"


def _pip(venv: Path, *args: str) -> str:
    out = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", *args],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of the checkout (the build leaves nothing in it)."""
    src = tmp_path_factory.mktemp("src") / "mt5d"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".venv", ".git", "__pycache__", "*.egg-info", "build", "dist", ".pytest_cache", ".hypothesis"))
    dist = tmp_path_factory.mktemp("dist")
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(src)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    [whl] = dist.glob("mt5d-*.whl")
    return whl


@pytest.fixture(scope="module")
def client_venv(wheel, tmp_path_factory) -> Path:
    """A fresh virtualenv with only the wheel installed: the light client."""
    venv = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    _pip(venv, "install", "-q", str(wheel))
    return venv


def _run(venv: Path, code: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv / "bin" / "python"), "-c", textwrap.dedent(code)], cwd=cwd,
                          capture_output=True, text=True, timeout=120, env={**os.environ, **env})


def test_the_wheel_installs_one_top_level_package(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        [top] = [n for n in names if n.endswith(".dist-info/top_level.txt")] or [None]
        tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
        if top:
            assert z.read(top).decode().split() == ["mt5d"]
    assert tops == {"mt5d"}
    for room in ("mt5d/__init__.py", "mt5d/client.py", "mt5d/actors/poller.py", "mt5d/actors/logic/breaker.py",
                 "mt5d/daemon/cli.py", "mt5d/daemon/terminal/sim/terminal.py", "mt5d/daemon/tools/bench.py"):
        assert room in names, room


def test_the_client_install_pulls_nothing_heavy(client_venv, tmp_path):
    installed = {line.split("==")[0].lower() for line in _pip(client_venv, "freeze").split()}
    assert {"mt5d", "msgspec", "nats-py"} <= installed
    assert not installed & set(HEAVY), installed & set(HEAVY)
    # The generic names are not ours to take.
    out = _run(client_venv, """
        import importlib.util, mt5d
        from mt5d import MT5Client, Tick, Codec, subjects
        print(mt5d.__version__, [n for n in ("schemas", "actors", "daemon") if importlib.util.find_spec(n)])
    """, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[1:] == ["[]"]


async def test_a_subscriber_and_the_client_work_from_the_light_install(client_venv, tmp_path, nats_url):
    account = unique_account("pkg")
    cfg = make_config(nats_url, account, stream={"symbols": ["EURUSD", "GBPUSD"], "timeframes": ["M1"]})
    script = f"""
        import asyncio, sys, nats
        from mt5d import Tick, Codec, MT5Client

        async def main():
            nc = await nats.connect({nats_url!r})
            dec = Codec("json").decoder(Tick)
            got = asyncio.Queue()
            async def on_tick(msg):
                await got.put(dec.decode(msg.data))
            await nc.subscribe("mt5.{account}.tick.>", cb=on_tick)
            t = await asyncio.wait_for(got.get(), 20)
            print("tick", t.symbol, t.bid > 0, t.time_utc_ms > 0)
            mt5 = MT5Client(nc, account={account!r})
            price = await mt5.get_price(t.symbol)  # cached before the tick went out
            bid = price["bid"] if isinstance(price, dict) else price.bid
            print("price", bid > 0)
            await nc.close()

        asyncio.run(main())
    """
    async with running(Daemon(cfg)):
        out = await anyio.to_thread.run_sync(lambda: _run(client_venv, script, tmp_path))
    assert out.returncode == 0, out.stderr[-3000:]
    tick, price = out.stdout.strip().splitlines()
    assert tick.split()[0] == "tick" and tick.split()[2:] == ["True", "True"]
    assert price == "price True"


def test_python_daemon_beside_it_and_each_keeps_its_files(client_venv, tmp_path):
    _pip(client_venv, "install", "-q", "python-daemon")
    check = """
        import daemon, mt5d
        from mt5d import MT5Client
        assert hasattr(daemon, "DaemonContext"), daemon.__file__
        assert "mt5d" not in daemon.__file__
        print("ok")
    """
    out = _run(client_venv, check, tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
    _pip(client_venv, "uninstall", "-y", "-q", "python-daemon")
    out = _run(client_venv, "from mt5d import MT5Client, Tick; print('ok')", tmp_path)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


async def test_the_fastapi_example_runs_in_a_project_with_its_own_schemas_module(client_venv, tmp_path, nats_url):
    _pip(client_venv, "install", "-q", "fastapi", "httpx")
    account = unique_account("fapi")
    project = tmp_path / "project"
    project.mkdir()
    # The usual FastAPI layout: the app's own pydantic models in schemas.py.
    (project / "schemas.py").write_text("from pydantic import BaseModel\n\nclass Quote(BaseModel):\n"
                                        "    symbol: str\n    bid: float\n")
    (project / "main.py").write_text(textwrap.dedent(f"""
        from fastapi import FastAPI, HTTPException
        import nats
        from mt5d import MT5Client, MT5Error
        from schemas import Quote

        app = FastAPI()

        @app.on_event("startup")
        async def startup():
            app.state.mt5 = MT5Client(await nats.connect({nats_url!r}), account={account!r})

        @app.get("/price/{{symbol}}", response_model=Quote)
        async def price(symbol: str):
            try:
                p = await app.state.mt5.get_price(symbol)
            except MT5Error as err:
                raise HTTPException(status_code=err.status, detail=err.message)
            return Quote(symbol=symbol, bid=p["bid"] if isinstance(p, dict) else p.bid)
    """))
    script = """
        from fastapi.testclient import TestClient
        from main import app
        with TestClient(app) as c:
            r = c.get("/price/EURUSD")
            print(r.status_code, r.json()["symbol"], r.json()["bid"] > 0)
            r = c.get("/price/NOPE")
            print(r.status_code)
    """
    cfg = make_config(nats_url, account, stream={"symbols": ["EURUSD"], "timeframes": ["M1"]})
    col = await Collector(account).start(nats_url)
    try:
        async with running(Daemon(cfg)):
            await col.wait_for(lambda: "EURUSD" in col.ticks, timeout=20, what="a tick (a price to ask for)")
            out = await anyio.to_thread.run_sync(lambda: _run(client_venv, script, project))
    finally:
        await col.close()
    assert out.returncode == 0, out.stderr[-3000:]
    first, second = out.stdout.strip().splitlines()[-2:]
    assert first == "200 EURUSD True"
    assert second == "400"
