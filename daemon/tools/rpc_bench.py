"""RPC round-trip latency and throughput of mt5d: `price` and `account`, 1 and 100 concurrent requesters.

Three processes, like a deployment on one machine: a nats-server (the tests'
binary, loopback, free port), the daemon (`python -m mt5d.daemon.cli run`, sim
terminal, default stream config) and this client (MT5Client over one NATS
connection: each call is validate + encode + request + decode, as a user sees it).

    python -m mt5d.daemon.tools.rpc_bench [--seconds 5] [--max-in-flight 64] [--json]

Each phase: a warm-up, then C requesters in a closed loop (next request as
soon as the previous answer is in) for --seconds. Latency is per request,
perf_counter around the client call; req/s counts answered requests
(successes + error replies) over the phase; "busy" is 503 replies (the
daemon's in-flight bound, rpc.max_in_flight).
"""

from __future__ import annotations

import argparse
import asyncio
import msgspec
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the checkout (daemon/tools/ is two below)

from mt5d.client import open_nats  # noqa: E402

from mt5d.daemon.natsserver import NatsServer  # noqa: E402
from mt5d import MT5Client  # noqa: E402
from mt5d.errors import MT5BusyError, MT5Error  # noqa: E402

ACCOUNT = "bench"


def start_daemon(url: str, max_in_flight: int, tmp: Path) -> subprocess.Popen:
    cfg = (ROOT / "config.toml").read_text()
    cfg = cfg.replace('url = "nats://127.0.0.1:4222"', f'url = "{url}"\naccount = "{ACCOUNT}"')
    cfg = cfg.replace("embedded = true", "embedded = false")
    cfg = cfg.replace("max_in_flight = 64", f"max_in_flight = {max_in_flight}")
    cfg = cfg.replace('level = "INFO"', 'level = "ERROR"')  # keep per-request log lines out of the measurement
    path = tmp / "config.toml"
    path.write_text(cfg)
    proc = subprocess.Popen([sys.executable, "-m", "mt5d.daemon.cli", "run", "--config", str(path)], cwd=ROOT,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return proc


async def wait_ready(client: MT5Client, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            await client.get_price("EURUSD")
            await client.get_account_info()
            return
        except MT5Error:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def pct(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


async def phase(client: MT5Client, endpoint: str, concurrency: int, seconds: float) -> dict:
    call = (lambda: client.get_price("EURUSD")) if endpoint == "price" else client.get_account_info
    for _ in range(50):  # warm-up
        await call()
    latencies: list[float] = []
    counts = {"ok": 0, "busy": 0, "error": 0}
    stop_at = time.perf_counter() + seconds

    async def requester() -> None:
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            try:
                await call()
                counts["ok"] += 1
            except MT5BusyError:
                counts["busy"] += 1
            except MT5Error:
                counts["error"] += 1
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(requester() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    latencies.sort()
    return {
        "endpoint": endpoint, "concurrency": concurrency, "requests": len(latencies),
        "req_per_s": round(len(latencies) / elapsed), "ok": counts["ok"], "busy_503": counts["busy"],
        "other_errors": counts["error"],
        "p50_ms": round(pct(latencies, 50) * 1000, 3), "p99_ms": round(pct(latencies, 99) * 1000, 3),
        "max_ms": round(latencies[-1] * 1000, 3),
    }


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--max-in-flight", type=int, default=64)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    server = NatsServer().start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            daemon = start_daemon(server.url, args.max_in_flight, Path(tmp))
            errors: list[str] = []
            threading.Thread(target=lambda: errors.extend(daemon.stderr), daemon=True).start()
            try:
                nc = await open_nats(server.url)
                try:
                    client = MT5Client(nc, account=ACCOUNT, timeout=10.0)
                    await wait_ready(client)
                    results = []
                    for endpoint in ("price", "account"):
                        for concurrency in (1, 100):
                            results.append(await phase(client, endpoint, concurrency, args.seconds))
                finally:
                    await nc.close()
            finally:
                daemon.terminate()
                daemon.wait(15)
    finally:
        server.stop()  # also when the daemon never started
    info = {"cpus": os.cpu_count(), "python": sys.version.split()[0], "seconds_per_phase": args.seconds,
            "max_in_flight": args.max_in_flight, "daemon_error_lines": len(errors)}
    if args.json:
        print(msgspec.json.encode({"setup": info, "results": results}).decode())
        return
    print(f"setup: {info}")
    print(f"{'endpoint':9} {'conc':>4} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'ok':>7} {'busy':>6} {'err':>4}")
    for r in results:
        print(f"{r['endpoint']:9} {r['concurrency']:>4} {r['req_per_s']:>7} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f} "
              f"{r['max_ms']:>8.3f} {r['ok']:>7} {r['busy_503']:>6} {r['other_errors']:>4}")


if __name__ == "__main__":
    asyncio.run(main())
