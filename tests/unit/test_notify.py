"""mt5d.daemon.notify against real unix datagram sockets (a path and an abstract name)."""

from __future__ import annotations

import logging
import os
import socket
import uuid

import pytest

from mt5d.daemon.notify import Notifier


@pytest.fixture
def path_socket(tmp_path):
    path = tmp_path / "notify.sock"
    if len(str(path)) >= 100:  # sun_path is 108 bytes
        pytest.skip("tmp_path too long for a unix socket path")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)  # a bound on a wait that should be immediate, not a sleep
    yield str(path), sock
    sock.close()


@pytest.fixture
def abstract_socket():
    name = f"mt5d-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    yield "@" + name, sock
    sock.close()


def received(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.split("\n"))


@pytest.fixture(params=["path", "abstract"])
def server(request, path_socket, abstract_socket):
    return path_socket if request.param == "path" else abstract_socket


def test_messages_reach_the_socket(server):
    address, sock = server
    with Notifier.from_env({"NOTIFY_SOCKET": address}) as n:
        assert n.enabled
        assert n.ready("streaming 7 symbols")
        assert received(sock) == {"READY": "1", "STATUS": "streaming 7 symbols"}
        assert n.ready()
        assert received(sock) == {"READY": "1"}
        assert n.status("breaker open")
        assert received(sock) == {"STATUS": "breaker open"}
        assert n.watchdog()
        assert received(sock) == {"WATCHDOG": "1"}
        assert n.stopping("bye")
        assert received(sock) == {"STOPPING": "1", "STATUS": "bye"}
        assert n.extend_timeout(2.5)
        assert received(sock) == {"EXTEND_TIMEOUT_USEC": "2500000"}


def test_status_cannot_inject_assignments(path_socket):
    address, sock = path_socket
    n = Notifier.from_env({"NOTIFY_SOCKET": address})
    assert n.status("line one\nREADY=1")
    assert received(sock) == {"STATUS": "line one READY=1"}
    n.close()


def test_no_socket_is_a_noop():
    n = Notifier.from_env({"WATCHDOG_USEC": "30000000"})
    assert not n.enabled
    assert n.ready("x") is False
    assert n.watchdog() is False
    assert n.stopping() is False
    assert n.watchdog_interval() is None  # nobody to ping


def test_send_errors_are_logged_not_raised(tmp_path, caplog):
    n = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens.sock")})
    with caplog.at_level(logging.DEBUG, logger="mt5d.supervisor"):
        assert n.ready("x") is False
        assert n.watchdog() is False
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # a run of failures warns once
    assert warnings[0].getMessage() == "systemd notification failed"
    assert warnings[0].notify_socket == str(tmp_path / "nobody-listens.sock")


def test_recovers_after_the_listener_comes_back(tmp_path, caplog):
    path = str(tmp_path / "late.sock")
    n = Notifier.from_env({"NOTIFY_SOCKET": path})
    with caplog.at_level(logging.INFO, logger="mt5d.supervisor"):
        assert n.watchdog() is False
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(5)
        try:
            assert n.watchdog() is True
            assert received(sock) == {"WATCHDOG": "1"}
        finally:
            sock.close()
    assert any(r.getMessage() == "systemd notifications work again" for r in caplog.records)


def test_unsupported_address_disables(caplog):
    with caplog.at_level(logging.WARNING, logger="mt5d.supervisor"):
        n = Notifier.from_env({"NOTIFY_SOCKET": "vsock:2:1234"})
    assert not n.enabled
    assert n.ready() is False
    assert caplog.records


@pytest.mark.parametrize(
    "env, pid, expected",
    [
        ({"WATCHDOG_USEC": "30000000"}, 100, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "100"}, 100, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "101"}, 100, None),  # another process's watchdog
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "junk"}, 100, None),
        ({"WATCHDOG_USEC": "500000"}, 100, 0.25),
        ({"WATCHDOG_USEC": "0"}, 100, None),
        ({"WATCHDOG_USEC": "-5"}, 100, None),
        ({"WATCHDOG_USEC": "soon"}, 100, None),
        ({}, 100, None),
    ],
)
def test_watchdog_interval(env, pid, expected):
    n = Notifier.from_env({"NOTIFY_SOCKET": "@unused", **env}, pid=pid)
    assert n.watchdog_interval() == expected


def test_watchdog_pid_defaults_to_this_process():
    env = {"NOTIFY_SOCKET": "@unused", "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier.from_env(env).watchdog_interval() == 2.0


def test_reads_os_environ_by_default(monkeypatch, abstract_socket):
    address, sock = abstract_socket
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    n = Notifier.from_env()
    assert n.ready()
    assert received(sock) == {"READY": "1"}
    assert n.watchdog_interval() is None
    n.close()
