"""The MT5 error family, shared by the daemon and the client.

Each error carries the MT5 ``last_error()`` code (0 when the error is ours, not
the terminal's), a message that is safe to show a user, and the reply status
the RPC service maps it to. Details that are not safe to show go to the log,
never into the message.
"""

from __future__ import annotations

__all__ = [
    "MT5Error",
    "MT5InitError",
    "MT5AuthError",
    "MT5ConnectionError",
    "MT5TimeoutError",
    "MT5DataError",
    "MT5ValidationError",
    "MT5StateError",
    "MT5CircuitBreakerOpen",
    "MT5BusyError",
    "ERROR_CLASSES",
    "MT5_CODES",
    "error_for_code",
    "error_for_status",
]


class MT5Error(Exception):
    """Base of every mt5d error. ``status`` is the RPC error code it maps to."""

    status: int = 500
    # Whether the circuit breaker counts this error as a terminal failure.
    counts_as_failure: bool = True

    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code}, message={self.message!r})"


class MT5InitError(MT5Error):
    """The terminal could not be started or found (-10003)."""

    status = 502


class MT5AuthError(MT5Error):
    """The broker refused the credentials (-6)."""

    status = 502


class MT5ConnectionError(MT5Error):
    """IPC or broker connection lost (-10000, -10001, -10002, -10004)."""

    status = 502


class MT5TimeoutError(MT5Error):
    """A call took longer than allowed (-10005, or our own operation timeout)."""

    status = 504


class MT5DataError(MT5Error):
    """The terminal returned a result that does not make sense."""

    status = 502


class MT5ValidationError(MT5Error):
    """The caller asked for something invalid (unknown symbol, bad parameters)."""

    status = 400
    counts_as_failure = False


class MT5StateError(MT5Error):
    """The operation is not allowed in the current state."""

    status = 500
    counts_as_failure = False


class MT5CircuitBreakerOpen(MT5Error):
    """The circuit breaker is open: the terminal is not being called."""

    status = 503
    counts_as_failure = False


class MT5BusyError(MT5Error):
    """mt5d cannot take the request now (too many in flight, starting or stopping): retry
    shortly. Not the breaker: the terminal may be perfectly healthy."""

    status = 503
    counts_as_failure = False


# -- the error table ---------------------------------------------------------------
# Every class, by the name an error reply carries (``kind``); its ``status`` is its reply code.
ERROR_CLASSES: dict[str, type[MT5Error]] = {
    cls.__name__: cls
    for cls in (MT5Error, MT5InitError, MT5AuthError, MT5ConnectionError, MT5TimeoutError, MT5DataError,
                MT5ValidationError, MT5StateError, MT5CircuitBreakerOpen, MT5BusyError)
}
# MT5 ``last_error()`` codes -> class. -1 ("generic fail") is the caller's mistake for
# reads that name what they read (unknown symbol, no such bars): see ``error_for_code``.
MT5_CODES: dict[int, type[MT5Error]] = {
    -6: MT5AuthError,  # authorization failed
    -10003: MT5InitError,  # IPC initialize failed (no terminal)
    -10000: MT5ConnectionError, -10001: MT5ConnectionError,  # IPC send / receive failed
    -10002: MT5ConnectionError, -10004: MT5ConnectionError,  # IPC init failed / no IPC connection
    -10005: MT5TimeoutError,  # IPC timeout
    -2: MT5ValidationError, -4: MT5ValidationError,  # invalid params / not found
}
# A reply with no known ``kind`` (another implementation, a bare nats.micro error): by status.
_BY_STATUS: dict[int, type[MT5Error]] = {400: MT5ValidationError, 502: MT5ConnectionError,
                                         503: MT5BusyError, 504: MT5TimeoutError}


def error_for_code(code: int, message: str, *, args_fail: bool = False) -> MT5Error:
    """The error for an MT5 ``last_error()`` code (``args_fail``: -1 is a bad argument)."""
    if code == -1 and args_fail:
        return MT5ValidationError(message, code)
    return MT5_CODES.get(code, MT5ConnectionError)(message, code)


def error_for_status(status: int, kind: str, message: str, code: int = 0) -> MT5Error:
    """Rebuild an error from an RPC error reply (``kind`` is the class name)."""
    cls = ERROR_CLASSES.get(kind) or _BY_STATUS.get(status, MT5Error)
    return cls(message, code)
