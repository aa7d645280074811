"""NATS subjects: the one place they are built.

    <prefix>.<account>.tick.<symbol>
    <prefix>.<account>.candle.<symbol>.<timeframe>
    <prefix>.<account>.candle_forming.<symbol>.<timeframe>
    <prefix>.<account>.health
    <prefix>.<account>.rpc.<endpoint>
    <prefix>.<account>.book.<symbol>
    <prefix>.<account>.account
    <prefix>.<account>.position.<symbol>
    <prefix>.<account>.order.<symbol>
    <prefix>.<account>.deal.<symbol>      (balance/credit deals have no symbol: token "=")

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
    "book",
    "all_books",
    "everything",
    "STORED_KINDS",
    "stored_subjects",
    "stream_name",
    "last_value_stream",
    "parse",
    "Parsed",
    "Subjects",
    "GRAMMAR",
    "account",
    "position",
    "order",
    "deal",
    "all_positions",
    "all_orders",
    "all_deals",
    "account_private",
    "NO_SYMBOL",
    "ACCOUNT_KINDS",
    "ACCOUNT_ENDPOINTS",
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


# The token of "no symbol" (a balance or credit deal): "=" alone is never an escape's output.
NO_SYMBOL = "="


def _deal_symbol(symbol: str) -> str:
    return escape_token(symbol) if symbol else NO_SYMBOL


def _deal_symbol_back(token: str) -> str:
    return "" if token == NO_SYMBOL else unescape_token(token)


# -- the grammar: one row per kind of subject ------------------------------------
# kind -> the tokens after ``<prefix>.<account>.<kind>``, each with the function
# that makes a token from a raw value and the one that reads it back. A new kind
# of message is one row here (and a method below if it is on the hot path).
_TOKEN = {
    "symbol": (escape_token, unescape_token),
    "timeframe": (_timeframe, _timeframe),
    "endpoint": (_endpoint, _endpoint),
    "deal_symbol": (_deal_symbol, _deal_symbol_back),  # a symbol, or "" (no symbol)
}
# Token name -> Parsed field, where they differ.
_FIELD = {"deal_symbol": "symbol"}
GRAMMAR: dict[str, tuple[str, ...]] = {
    "tick": ("symbol",),
    "candle": ("symbol", "timeframe"),
    "candle_forming": ("symbol", "timeframe"),
    "health": (),
    "rpc": ("endpoint",),
    "book": ("symbol",),
    # account data (private: the operator role only, see ops/nats-server.conf)
    "account": (),
    "position": ("symbol",),
    "order": ("symbol",),
    "deal": ("deal_symbol",),
}
ACCOUNT_KINDS: tuple[str, ...] = ("account", "position", "order", "deal")
ACCOUNT_ENDPOINTS: tuple[str, ...] = ("account", "positions", "orders", "deals", "history_orders")


def _account(account: str | int, wildcard: bool = False) -> str:
    account = str(account)
    if wildcard and account == "*":
        return account
    return escape_token(account)


def _wild(name: str, value: str) -> str:
    return value if value in ("*", ">") else _TOKEN[name][0](value)


class Subjects:
    """Subjects of one (prefix, account), with per-symbol caches for the hot path.

    ``Subjects(prefix, "*", wildcard=True)`` builds subscription patterns over every
    account; any token given as ``"*"`` is a wildcard there."""

    __slots__ = ("prefix", "account", "_base", "_wildcard", "_cache")

    def __init__(self, prefix: str, account: str | int, *, wildcard: bool = False) -> None:
        self.prefix = _prefix(prefix)
        self.account = str(account)
        self._wildcard = wildcard
        self._base = f"{self.prefix}.{_account(account, wildcard)}"
        self._cache: dict[tuple, str] = {}

    def __repr__(self) -> str:
        return f"Subjects(prefix={self.prefix!r}, account={self.account!r})"

    def build(self, kind: str, *values: str) -> str:
        """``<prefix>.<account>.<kind>.<tokens...>`` from raw values (cached)."""
        key = (kind, *values)
        try:
            return self._cache[key]
        except KeyError:
            pass
        names = GRAMMAR[kind]
        if len(values) != len(names):
            raise ValueError(f"{kind} subjects take {len(names)} tokens, got {len(values)}")
        make = _wild if self._wildcard else (lambda name, v: _TOKEN[name][0](v))
        s = ".".join((self._base, kind, *(make(n, v) for n, v in zip(names, values))))
        if len(self._cache) < 100_000:  # bounded: only the daemon's own symbols repeat
            self._cache[key] = s
        return s

    def template(self, kind: str) -> str:
        """The destination template for metrics labels: ``mt5.{account}.tick.{symbol}``."""
        return ".".join((self.prefix, "{account}", kind, *(f"{{{n}}}" for n in GRAMMAR[kind])))

    def tick(self, symbol: str) -> str:
        return self.build("tick", symbol)

    def candle(self, symbol: str, timeframe: str) -> str:
        return self.build("candle", symbol, timeframe)

    def candle_forming(self, symbol: str, timeframe: str) -> str:
        return self.build("candle_forming", symbol, timeframe)

    def health(self) -> str:
        return self.build("health")

    def rpc(self, endpoint: str) -> str:
        return self.build("rpc", endpoint)

    def book(self, symbol: str) -> str:
        return self.build("book", symbol)

    def rpc_group(self) -> str:
        return f"{self._base}.rpc"

    def account_state(self) -> str:
        """``<prefix>.<account>.account`` (named so: ``account`` is the account id here)."""
        return self.build("account")

    def position(self, symbol: str) -> str:
        return self.build("position", symbol)

    def order(self, symbol: str) -> str:
        return self.build("order", symbol)

    def deal(self, symbol: str) -> str:
        return self.build("deal", symbol)

    def all_positions(self) -> str:
        return self.all("position")

    def all_orders(self) -> str:
        return self.all("order")

    def all_deals(self) -> str:
        return self.all("deal")

    def all_ticks(self) -> str:
        return self.all("tick")

    def all_candles(self, timeframe: str = "*") -> str:
        return self.all("candle", "*", timeframe)

    def all_candles_forming(self, timeframe: str = "*") -> str:
        return self.all("candle_forming", "*", timeframe)

    def all_books(self) -> str:
        return self.all("book")

    def all(self, kind: str, *values: str) -> str:
        """A pattern for ``kind``: tokens not given are ``*``."""
        values = values + ("*",) * (len(GRAMMAR[kind]) - len(values))
        return ".".join((self._base, kind, *(_wild(n, v) for n, v in zip(GRAMMAR[kind], values))))

    def stored(self, kinds: tuple[str, ...] | None = None) -> list[str]:
        """The subjects of this account's JetStream stream: one wildcard per stored kind."""
        kinds = STORED_KINDS if kinds is None else kinds
        for kind in kinds:
            if kind not in STORED_KINDS:
                raise ValueError(f"{kind!r} is not a stored kind (expected one of {', '.join(STORED_KINDS)})")
        return [self.all(kind) for kind in kinds]

    def last_value(self) -> list[str]:
        """What the last-value stream keeps, one message per subject: ticks (sourced) and forming bars."""
        return [self.all_ticks(), self.all_candles_forming()]

    def everything(self) -> str:
        return f"{self._base}.>"

    def parse(self, subject: str) -> "Parsed":
        return parse(subject, self.prefix)


# -- module-level builders (the same grammar; account "*" means every account) -----

def tick(prefix: str, account: str | int, symbol: str) -> str:
    return Subjects(prefix, account).tick(symbol)


def candle(prefix: str, account: str | int, symbol: str, timeframe: str) -> str:
    return Subjects(prefix, account).candle(symbol, timeframe)


def candle_forming(prefix: str, account: str | int, symbol: str, timeframe: str) -> str:
    return Subjects(prefix, account).candle_forming(symbol, timeframe)


def health(prefix: str, account: str | int) -> str:
    return Subjects(prefix, account).health()


def rpc(prefix: str, account: str | int, endpoint: str) -> str:
    return Subjects(prefix, account).rpc(endpoint)


def rpc_group(prefix: str, account: str | int) -> str:
    """``<prefix>.<account>.rpc``: the nats.micro group name for the endpoints."""
    return Subjects(prefix, account).rpc_group()


def all_ticks(prefix: str = DEFAULT_PREFIX, account: str | int = "*") -> str:
    return Subjects(prefix, account, wildcard=True).all_ticks()


def all_candles(prefix: str = DEFAULT_PREFIX, account: str | int = "*", timeframe: str = "*") -> str:
    return Subjects(prefix, account, wildcard=True).all_candles(timeframe)


def all_candles_forming(prefix: str = DEFAULT_PREFIX, account: str | int = "*", timeframe: str = "*") -> str:
    return Subjects(prefix, account, wildcard=True).all_candles_forming(timeframe)


def book(prefix: str, account: str | int, symbol: str) -> str:
    return Subjects(prefix, account).book(symbol)


def all_books(prefix: str = DEFAULT_PREFIX, account: str | int = "*") -> str:
    return Subjects(prefix, account, wildcard=True).all_books()


def all_health(prefix: str = DEFAULT_PREFIX, account: str | int = "*") -> str:
    return Subjects(prefix, account, wildcard=True).health()


def account(prefix: str, account: str | int) -> str:
    return Subjects(prefix, account).account_state()


def position(prefix: str, account: str | int, symbol: str) -> str:
    return Subjects(prefix, account).position(symbol)


def order(prefix: str, account: str | int, symbol: str) -> str:
    return Subjects(prefix, account).order(symbol)


def deal(prefix: str, account: str | int, symbol: str) -> str:
    return Subjects(prefix, account).deal(symbol)


def all_positions(prefix: str = DEFAULT_PREFIX, account: str | int = "*") -> str:
    return Subjects(prefix, account, wildcard=True).all_positions()


def all_orders(prefix: str = DEFAULT_PREFIX, account: str | int = "*") -> str:
    return Subjects(prefix, account, wildcard=True).all_orders()


def all_deals(prefix: str = DEFAULT_PREFIX, account: str | int = "*") -> str:
    return Subjects(prefix, account, wildcard=True).all_deals()


def account_private(prefix: str = DEFAULT_PREFIX, account: str | int = "*") -> list[str]:
    """Every account-data stream subject and endpoint, as subscription patterns."""
    subj = Subjects(prefix, account, wildcard=True)
    return [subj.all(k) for k in ACCOUNT_KINDS] + [subj.rpc(e) for e in ACCOUNT_ENDPOINTS]


def everything(prefix: str = DEFAULT_PREFIX, account: str | int = "*") -> str:
    """Every stream and RPC subject of one account (or of all)."""
    return Subjects(prefix, account, wildcard=True).everything()


# -- parsing (for wildcard subscribers) ----------------------------------------

# -- JetStream: what is stored, and where ---------------------------------------

# Every kind of the grammar is stored except snapshots (the forming bar, the book,
# health) and request-reply: a kind added to GRAMMAR joins the stream by itself.
NOT_STORED = ("candle_forming", "book", "health", "rpc")
STORED_KINDS: tuple[str, ...] = tuple(k for k in GRAMMAR if k not in NOT_STORED)


def stored_subjects(prefix: str, account: str | int, kinds: tuple[str, ...] | None = None) -> list[str]:
    """The subjects of the account's stream (the one function the stream's subject list comes from)."""
    return Subjects(prefix, account).stored(kinds)


def stream_name(account: str | int) -> str:
    """The account's JetStream stream: ``MT5_<account>``."""
    return f"MT5_{_account(account)}"


def last_value_stream(stream: str) -> str:
    """The stream that keeps the newest tick (and forming bar) per symbol."""
    return f"{stream}_LAST"


class Parsed(NamedTuple):
    account: str
    kind: str  # a key of GRAMMAR: "tick" | "candle" | "candle_forming" | "health" | "rpc" | ...
    symbol: str = ""  # raw (unescaped)
    timeframe: str = ""
    endpoint: str = ""


def parse(subject: str, prefix: str = DEFAULT_PREFIX) -> Parsed:
    """Split a subject built here back into its parts; ValueError if it is not one."""
    head = _prefix(prefix) + "."
    if not subject.startswith(head):
        raise ValueError(f"subject {subject!r} does not start with prefix {prefix!r}")
    parts = subject[len(head):].split(".")
    if len(parts) < 2 or parts[1] not in GRAMMAR or len(parts) != 2 + len(GRAMMAR[parts[1]]):
        raise ValueError(f"not an mt5d subject: {subject!r}")
    names = GRAMMAR[parts[1]]
    fields = {_FIELD.get(n, n): _TOKEN[n][1](v) for n, v in zip(names, parts[2:])}
    return Parsed(unescape_token(parts[0]), parts[1], **fields)
