"""NATS subjects: the one place they are built.

    <prefix>.<account>.tick.<symbol>
    <prefix>.<account>.candle.<symbol>.<timeframe>
    <prefix>.<account>.candle_forming.<symbol>.<timeframe>
    <prefix>.<account>.health
    <prefix>.<account>.rpc.<endpoint>

NATS has no escaping of its own: ``EURUSD.m`` would become two tokens and a
``tick.*`` subscriber would never see it. So the symbol (and the account, which
may be an alias) is escaped: every character outside ``[A-Za-z0-9_-]`` becomes
``=XX`` per UTF-8 byte (uppercase hex), ``=`` included, which makes the escape
reversible. The payload always carries the raw symbol.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from mt5d.market import TIMEFRAMES

__all__ = [
    "DEFAULT_PREFIX",
    "escape_token",
    "unescape_token",
    "tick",
    "candle",
    "candle_forming",
    "health",
    "rpc",
    "rpc_group",
    "all_ticks",
    "all_candles",
    "all_candles_forming",
    "all_health",
    "everything",
    "parse",
    "Parsed",
    "Subjects",
]

DEFAULT_PREFIX = "mt5"

_SAFE = re.compile(r"[A-Za-z0-9_-]+")
_SAFE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_ESCAPED = re.compile(r"(?:[A-Za-z0-9_-]|=[0-9A-F]{2})+")
_HEX_RUN = re.compile(r"(?:=[0-9A-F]{2})+")
# A prefix may be several tokens ("prod.mt5") but never a wildcard, blank or empty token.
_PREFIX = re.compile(r"[^.\s*>]+(?:\.[^.\s*>]+)*")


def escape_token(value: str) -> str:
    """One subject token for any non-empty string; ``unescape_token`` reverses it."""
    if _SAFE.fullmatch(value):  # the common case: plain symbols go through untouched
        return value
    if not value:
        raise ValueError("cannot escape an empty string: NATS drops empty tokens")
    out = []
    for ch in value:
        if ch in _SAFE_CHARS:
            out.append(ch)
        else:
            out.extend(f"={b:02X}" for b in ch.encode("utf-8"))
    return "".join(out)


def unescape_token(token: str) -> str:
    """The string ``escape_token`` made ``token`` from; ValueError if it is not such a token."""
    if _SAFE.fullmatch(token):
        return token
    if not _ESCAPED.fullmatch(token):
        raise ValueError(f"not an escaped subject token: {token!r}")
    # Consecutive escapes decode together: a multi-byte character spans several.
    value = _HEX_RUN.sub(lambda m: bytes.fromhex(m.group().replace("=", "")).decode("utf-8"), token)
    if escape_token(value) != token:  # e.g. "=41" for "A": one string, one token
        raise ValueError(f"not a canonical escaped subject token: {token!r}")
    return value


def _prefix(prefix: str) -> str:
    if not _PREFIX.fullmatch(prefix):
        raise ValueError(f"invalid subject prefix {prefix!r}")
    return prefix


def _timeframe(tf: str) -> str:
    if tf not in TIMEFRAMES:
        raise ValueError(f"unknown timeframe {tf!r}")
    return tf


def _endpoint(name: str) -> str:
    if not _SAFE.fullmatch(name):
        raise ValueError(f"invalid endpoint name {name!r}")
    return name


def _account(account: str | int, wildcard: bool = False) -> str:
    account = str(account)
    if wildcard and account == "*":
        return account
    return escape_token(account)


# -- builders for one subject ------------------------------------------------

def tick(prefix: str, account: str | int, symbol: str) -> str:
    return f"{_prefix(prefix)}.{_account(account)}.tick.{escape_token(symbol)}"


def candle(prefix: str, account: str | int, symbol: str, timeframe: str) -> str:
    return f"{_prefix(prefix)}.{_account(account)}.candle.{escape_token(symbol)}.{_timeframe(timeframe)}"


def candle_forming(prefix: str, account: str | int, symbol: str, timeframe: str) -> str:
    return f"{_prefix(prefix)}.{_account(account)}.candle_forming.{escape_token(symbol)}.{_timeframe(timeframe)}"


def health(prefix: str, account: str | int) -> str:
    return f"{_prefix(prefix)}.{_account(account)}.health"


def rpc(prefix: str, account: str | int, endpoint: str) -> str:
    return f"{rpc_group(prefix, account)}.{_endpoint(endpoint)}"


def rpc_group(prefix: str, account: str | int) -> str:
    """``<prefix>.<account>.rpc``: the nats.micro group name for the endpoints."""
    return f"{_prefix(prefix)}.{_account(account)}.rpc"


# -- wildcards for subscribers (account "*" means every account) ---------------

def all_ticks(prefix: str = DEFAULT_PREFIX, account: str | int = "*") -> str:
    return f"{_prefix(prefix)}.{_account(account, True)}.tick.*"


def all_candles(prefix: str = DEFAULT_PREFIX, account: str | int = "*", timeframe: str = "*") -> str:
    tf = timeframe if timeframe == "*" else _timeframe(timeframe)
    return f"{_prefix(prefix)}.{_account(account, True)}.candle.*.{tf}"


def all_candles_forming(prefix: str = DEFAULT_PREFIX, account: str | int = "*", timeframe: str = "*") -> str:
    tf = timeframe if timeframe == "*" else _timeframe(timeframe)
    return f"{_prefix(prefix)}.{_account(account, True)}.candle_forming.*.{tf}"


def all_health(prefix: str = DEFAULT_PREFIX, account: str | int = "*") -> str:
    return f"{_prefix(prefix)}.{_account(account, True)}.health"


def everything(prefix: str = DEFAULT_PREFIX, account: str | int = "*") -> str:
    """Every stream and RPC subject of one account (or of all)."""
    return f"{_prefix(prefix)}.{_account(account, True)}.>"


# -- parsing (for wildcard subscribers) ----------------------------------------

class Parsed(NamedTuple):
    account: str
    kind: str  # "tick" | "candle" | "candle_forming" | "health" | "rpc"
    symbol: str = ""  # raw (unescaped)
    timeframe: str = ""
    endpoint: str = ""


_SHAPES = {"tick": 1, "candle": 2, "candle_forming": 2, "health": 0, "rpc": 1}


def parse(subject: str, prefix: str = DEFAULT_PREFIX) -> Parsed:
    """Split a subject built here back into its parts; ValueError if it is not one."""
    head = _prefix(prefix) + "."
    if not subject.startswith(head):
        raise ValueError(f"subject {subject!r} does not start with prefix {prefix!r}")
    parts = subject[len(head):].split(".")
    if len(parts) < 2 or parts[1] not in _SHAPES or len(parts) != 2 + _SHAPES[parts[1]]:
        raise ValueError(f"not an mt5d subject: {subject!r}")
    account, kind, rest = unescape_token(parts[0]), parts[1], parts[2:]
    if kind == "rpc":
        return Parsed(account, kind, endpoint=_endpoint(rest[0]))
    if kind == "health":
        return Parsed(account, kind)
    symbol = unescape_token(rest[0])
    return Parsed(account, kind, symbol, _timeframe(rest[1]) if len(rest) == 2 else "")


class Subjects:
    """Subjects of one (prefix, account), with per-symbol caches for the hot path."""

    __slots__ = ("prefix", "account", "_base", "_ticks", "_candles", "_forming")

    def __init__(self, prefix: str, account: str | int) -> None:
        self.prefix = _prefix(prefix)
        self.account = str(account)
        self._base = f"{self.prefix}.{_account(account)}"
        self._ticks: dict[str, str] = {}
        self._candles: dict[tuple[str, str], str] = {}
        self._forming: dict[tuple[str, str], str] = {}

    def __repr__(self) -> str:
        return f"Subjects(prefix={self.prefix!r}, account={self.account!r})"

    def tick(self, symbol: str) -> str:
        try:
            return self._ticks[symbol]
        except KeyError:
            s = self._ticks[symbol] = f"{self._base}.tick.{escape_token(symbol)}"
            return s

    def candle(self, symbol: str, timeframe: str) -> str:
        try:
            return self._candles[(symbol, timeframe)]
        except KeyError:
            s = f"{self._base}.candle.{escape_token(symbol)}.{_timeframe(timeframe)}"
            self._candles[(symbol, timeframe)] = s
            return s

    def candle_forming(self, symbol: str, timeframe: str) -> str:
        try:
            return self._forming[(symbol, timeframe)]
        except KeyError:
            s = f"{self._base}.candle_forming.{escape_token(symbol)}.{_timeframe(timeframe)}"
            self._forming[(symbol, timeframe)] = s
            return s

    def health(self) -> str:
        return f"{self._base}.health"

    def rpc(self, endpoint: str) -> str:
        return f"{self._base}.rpc.{_endpoint(endpoint)}"

    def rpc_group(self) -> str:
        return f"{self._base}.rpc"

    def all_ticks(self) -> str:
        return f"{self._base}.tick.*"

    def all_candles(self, timeframe: str = "*") -> str:
        return f"{self._base}.candle.*.{timeframe if timeframe == '*' else _timeframe(timeframe)}"

    def all_candles_forming(self, timeframe: str = "*") -> str:
        return f"{self._base}.candle_forming.*.{timeframe if timeframe == '*' else _timeframe(timeframe)}"

    def everything(self) -> str:
        return f"{self._base}.>"

    def parse(self, subject: str) -> Parsed:
        return parse(subject, self.prefix)
