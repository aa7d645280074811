"""Shared fixtures: a real nats-server per test session (the binary; testcontainers when Docker answers)."""

from __future__ import annotations

import os
import shutil

import pytest

from mt5d.daemon.natsserver import NatsServer


def _docker_answers() -> bool:
    if not shutil.which("docker") or os.environ.get("MT5D_NO_DOCKER"):
        return False
    try:
        import docker  # type: ignore[import-not-found]

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


class _ContainerServer:
    def __init__(self) -> None:
        from testcontainers.nats import NatsContainer  # type: ignore[import-not-found]

        self._c = NatsContainer().start()
        self.url = self._c.nats_uri()

    def stop(self) -> None:
        self._c.stop()


@pytest.fixture(scope="session")
def nats_server():
    """A nats-server for the whole session: a container when Docker answers, else the binary."""
    server = None
    if _docker_answers():
        try:
            server = _ContainerServer()
        except Exception:
            server = None
    if server is None:
        server = NatsServer().start()
    yield server
    server.stop()


@pytest.fixture
def nats_url(nats_server) -> str:
    return nats_server.url


@pytest.fixture
def fresh_nats(tmp_path):
    """A nats-server of this test's own (with JetStream), for tests that stop and restart it."""
    server = NatsServer(jetstream=True, store_dir=str(tmp_path / "js")).start()
    yield server
    server.stop()
