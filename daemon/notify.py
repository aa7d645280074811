"""The systemd notify protocol (sd_notify), without dependencies.

systemd passes ``NOTIFY_SOCKET`` to a ``Type=notify`` service: a filesystem
path, or ``@name`` for a socket in the Linux abstract namespace. A message is
one datagram of newline-separated ``KEY=VALUE`` assignments (``READY=1``,
``STATUS=...``, ``WATCHDOG=1``, ``STOPPING=1``). With ``WatchdogSec=`` set,
systemd also passes ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``, the process the
watchdog is meant for); the service must send ``WATCHDOG=1`` more often than
that, and the documented advice is every half interval.

Without ``NOTIFY_SOCKET`` (run by hand, in tests, in a container) every method
is a no-op. A failure to send is logged and reported as ``False``, never
raised: the daemon must not die because the service manager went away.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

__all__ = ["Notifier"]

log = logging.getLogger("mt5d.supervisor")


class Notifier:
    """Sends sd_notify datagrams to one address (or nowhere)."""

    def __init__(self, address: str | None, *, watchdog_usec: int | None = None) -> None:
        # ``address`` as systemd writes it: "/run/systemd/notify" or "@name".
        self._raw = address or None
        self._address: str | bytes | None = None
        if address:
            if address.startswith("@"):
                self._address = "\0" + address[1:]  # abstract namespace
            elif address.startswith("/"):
                self._address = address
            else:
                # systemd >= 254 can also hand out "vsock:CID:PORT" (VMs); not needed here.
                log.warning("NOTIFY_SOCKET address not supported; systemd notifications disabled",
                            extra={"notify_socket": address})
        self._watchdog_usec = watchdog_usec
        self._sock: socket.socket | None = None
        self._failing = False  # log the first failure of a run of failures at WARNING only

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, pid: int | None = None) -> Notifier:
        """Read ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID``.

        The watchdog is enabled only when ``WATCHDOG_USEC`` is a positive
        integer and ``WATCHDOG_PID`` is unset or names this process (``pid``,
        default ``os.getpid()``): a child that inherited the variables must not
        feed its parent's watchdog.
        """
        env = os.environ if env is None else env
        usec: int | None = None
        raw_usec = env.get("WATCHDOG_USEC", "")
        if raw_usec:
            try:
                usec = int(raw_usec)
            except ValueError:
                log.warning("WATCHDOG_USEC is not an integer; watchdog disabled", extra={"value": raw_usec})
            else:
                if usec <= 0:
                    usec = None
        raw_pid = env.get("WATCHDOG_PID", "")
        if usec is not None and raw_pid:
            try:
                watchdog_pid = int(raw_pid)
            except ValueError:
                watchdog_pid = -1
            if watchdog_pid != (os.getpid() if pid is None else pid):
                usec = None  # the watchdog belongs to another process
        return cls(env.get("NOTIFY_SOCKET") or None, watchdog_usec=usec)

    # ---- queries --------------------------------------------------------------
    @property
    def enabled(self) -> bool:
        """True when there is a service manager to talk to."""
        return self._address is not None

    def watchdog_interval(self) -> float | None:
        """Seconds between ``WATCHDOG=1`` pings (half the watchdog timeout), or None."""
        if not self.enabled or self._watchdog_usec is None:
            return None
        return self._watchdog_usec / 1_000_000 / 2

    # ---- messages -------------------------------------------------------------
    def ready(self, status: str | None = None) -> bool:
        """Startup finished (``READY=1``), with an optional status line."""
        return self.notify(READY="1", STATUS=status)

    def status(self, text: str) -> bool:
        """A free-form one-line status, shown by ``systemctl status``."""
        return self.notify(STATUS=text)

    def watchdog(self) -> bool:
        """Feed the watchdog (``WATCHDOG=1``)."""
        return self.notify(WATCHDOG="1")

    def stopping(self, status: str | None = None) -> bool:
        """Shutdown started (``STOPPING=1``)."""
        return self.notify(STOPPING="1", STATUS=status)

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for more time for the current start/stop step (``EXTEND_TIMEOUT_USEC``)."""
        return self.notify(EXTEND_TIMEOUT_USEC=str(max(0, int(seconds * 1_000_000))))

    def notify(self, **fields: str | None) -> bool:
        """Send one datagram of ``KEY=VALUE`` lines (None values are left out).

        Returns True when sent, False when there is nothing to send to or the
        send failed (logged, never raised).
        """
        if self._address is None:
            return False
        lines = [f"{key}={_one_line(value)}" for key, value in fields.items() if value is not None]
        if not lines:
            return False
        payload = "\n".join(lines).encode("utf-8", "replace")
        try:
            if self._sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                # Never block the event loop: systemd's queue being full is a failure to log.
                sock.setblocking(False)
                self._sock = sock
            self._sock.sendto(payload, self._address)
        except OSError as err:
            level = logging.DEBUG if self._failing else logging.WARNING
            self._failing = True
            log.log(level, "systemd notification failed",
                    extra={"notify_socket": self._raw, "fields": ",".join(fields), "error": str(err)})
            return False
        if self._failing:
            self._failing = False
            log.info("systemd notifications work again", extra={"notify_socket": self._raw})
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Notifier(address={self._raw!r}, watchdog_usec={self._watchdog_usec})"


def _one_line(value: str) -> str:
    # A newline would start a new assignment: a status text must not inject one.
    return value.replace("\r", " ").replace("\n", " ")
