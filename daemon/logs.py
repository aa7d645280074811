"""Structured logs: one JSON object per line on stderr, through stdlib logging.

    {"ts":"2025-01-02T03:04:05.678Z","level":"WARNING","logger":"mt5d.connection",
     "event":"terminal call failed","error":"MT5ConnectionError","code":-10004}

- ``ts`` is ISO-8601 UTC with milliseconds; ``event`` is the log message; every
  ``extra={...}`` field becomes a top-level key.
  An extra field named like a base key (``ts``, ``level``, ``logger``, ``event``,
  ``exc_type``, ``exc_msg``) is written with a trailing underscore (``event_``).
- An exception is written as ``exc_type`` and ``exc_msg`` only: no traceback
  (tracebacks are multi-line, carry locals' reprs in some setups, and the
  message plus the event name is what an operator acts on).
- Values msgspec cannot encode are written as ``str(value)``; a
  :class:`mt5d.daemon.secrets.Secret` thus shows as ``********``.
- The :class:`Redactor` makes a last pass over each serialized line and
  replaces every registered secret value (raw, JSON-escaped and repr-escaped
  forms) with ``********``: a password that slipped into an exception
  message, a repr or a field never reaches the journal.

Loggers are ``mt5d.<area>`` (see :data:`AREAS`). ``setup_logging`` installs
one handler on the root logger, so third-party loggers (``nats``...) come out
as JSON too.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any, TextIO

import msgspec

__all__ = [
    "AREAS",
    "JsonFormatter",
    "Redactor",
    "setup_logging",
    "register_secret",
    "MASK",
]

MASK = "********"
AREAS = ("connection", "poller", "publisher", "health", "rpc", "supervisor", "terminal", "nats")

_BASE_KEYS = frozenset({"ts", "level", "logger", "event", "exc_type", "exc_msg"})
_RECORD_ATTRS = frozenset(logging.LogRecord("x", logging.INFO, "x", 0, "x", (), None).__dict__) | {
    "message", "asctime", "taskName",
}
_HANDLER_MARK = "_mt5d_handler"


class Redactor:
    """The set of secret values that must never be written, and the pass that removes them."""

    def __init__(self, *, min_length: int = 4) -> None:
        # Values shorter than min_length are not registered: masking every "1"
        # or "ab" in the logs would destroy them, and such a value is no secret.
        self._min_length = min_length
        self._forms: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def register_secret(self, value: Any) -> bool:
        """Register a value (a str, or anything with ``reveal()``); False when too short to register."""
        if hasattr(value, "reveal"):
            value = value.reveal()
        if not isinstance(value, str):
            raise TypeError(f"register_secret wants a str or a Secret, not {type(value).__name__}")
        if len(value) < self._min_length:
            return False
        forms = _forms(value)
        with self._lock:
            self._forms |= forms
            # Longest first, so a secret that contains another one goes whole.
            ordered = sorted(self._forms, key=len, reverse=True)
            self._pattern = re.compile("|".join(map(re.escape, ordered)))
        return True

    def __len__(self) -> int:
        return len(self._forms)

    def redact(self, text: str) -> str:
        pattern = self._pattern
        if pattern is None:
            return text
        return pattern.sub(MASK, text)


def _forms(value: str) -> set[str]:
    """The ways ``value`` can appear in a serialized line.

    Text reaches the final JSON encoding raw, repr-escaped (``{...!r}`` in a
    message), or already JSON-encoded by msgspec or stdlib json (a payload
    logged as a string); the final encoding escapes each once more.
    """
    inner = {
        value,
        repr(value)[1:-1],
        msgspec.json.encode(value).decode()[1:-1],
        json.dumps(value)[1:-1],  # ensure_ascii: "\u00f6"
    }
    return {f for t in inner for f in (t, msgspec.json.encode(t).decode()[1:-1]) if f}


def _iso_utc(created: float) -> str:
    secs, ms = divmod(int(created * 1000), 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{ms:03d}Z"


def _fallback(obj: Any) -> Any:
    # numpy scalars -> Python numbers; everything else -> its str() (masks a Secret).
    if type(obj).__module__ == "numpy" and getattr(obj, "ndim", None) == 0:
        return obj.item()
    if isinstance(obj, BaseException):
        return f"{type(obj).__name__}: {obj}"
    return str(obj)


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object (see the module docstring)."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor if redactor is not None else Redactor()
        self._encoder = msgspec.json.Encoder(enc_hook=_fallback)

    def format(self, record: logging.LogRecord) -> str:
        try:
            event = record.getMessage()
        except Exception:  # bad %-args: keep the line rather than lose it
            event = f"{record.msg} {record.args!r}"
        out: dict[str, Any] = {
            "ts": _iso_utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "event": event,
        }
        for key, value in record.__dict__.items():
            if key in _RECORD_ATTRS or key.startswith("_"):
                continue
            out[key + "_" if key in _BASE_KEYS else key] = value
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            out["exc_type"] = type(exc).__qualname__
            try:
                out["exc_msg"] = str(exc)
            except Exception:
                out["exc_msg"] = "<unprintable>"
        return self.redactor.redact(self._encode(out))

    def _encode(self, out: dict[str, Any]) -> str:
        try:
            return self._encoder.encode(out).decode()
        except Exception:
            pass
        # One field msgspec cannot take (odd dict keys, a broken __str__...):
        # write that field as text, keep the others.
        safe: dict[str, Any] = {}
        for key, value in out.items():
            try:
                self._encoder.encode(value)
                safe[key] = value
            except Exception:
                try:
                    safe[key] = repr(value)
                except Exception:
                    safe[key] = f"<unprintable {type(value).__name__}>"
        return self._encoder.encode(safe).decode()


def _qualify(name: str) -> str:
    return f"mt5d.{name}" if name in AREAS else name


def setup_logging(
    level: str | int = "INFO",
    levels: Mapping[str, str | int] | None = None,
    stream: TextIO | None = None,
    *,
    redactor: Redactor | None = None,
) -> Redactor:
    """Install the JSON handler on the root logger; returns the redactor to register secrets with.

    ``levels`` sets per-logger levels; a bare area name (``"poller"``) means
    ``mt5d.poller``. ``stream`` defaults to the current ``sys.stderr``. Calling
    again replaces the handler installed before (it never stacks).
    """
    # Validate everything before touching the logging tree: a bad level must not
    # leave a half-installed setup behind.
    root_level = _level(level)
    per_logger = {_qualify(name): _level(lvl) for name, lvl in (levels or {}).items()}
    stream = sys.stderr if stream is None else stream
    redactor = redactor if redactor is not None else Redactor()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(redactor))
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(root_level)
    for area in ("mt5d", *(f"mt5d.{a}" for a in AREAS)):
        logging.getLogger(area).setLevel(logging.NOTSET)
    for name, lvl in per_logger.items():
        logging.getLogger(name).setLevel(lvl)
    return redactor


def register_secret(value: Any) -> bool:
    """Register a secret with the redactor of the handler ``setup_logging`` installed.

    Same as ``setup_logging(...).register_secret(value)``; no global state
    besides the root logger's handler list. Raises RuntimeError when logging
    is not set up yet: a secret registered nowhere would be written in clear.
    """
    for handler in logging.getLogger().handlers:
        formatter = handler.formatter
        if getattr(handler, _HANDLER_MARK, False) and isinstance(formatter, JsonFormatter):
            return formatter.redactor.register_secret(value)
    raise RuntimeError("register_secret() before setup_logging(): call setup_logging() first")


def _level(level: str | int) -> int:
    if isinstance(level, int):
        return level
    value = logging.getLevelName(level.upper())
    if not isinstance(value, int):
        raise ValueError(f"unknown log level {level!r}")
    return value
