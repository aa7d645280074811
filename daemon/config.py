"""Configuration: frozen msgspec structs loaded from TOML, refused with one line per problem.

Secrets never live here: the MT5 password and NATS credentials come from the
environment, a .env file or $CREDENTIALS_DIRECTORY (see daemon.secrets).
"""

from __future__ import annotations

import os
import re
import tomllib
import typing
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from mt5d.subjects import STORED_KINDS
from mt5d.daemon.telemetry import TelemetryConfig, telemetry_problems
from mt5d.actors.logic.breaker import policy_problems
from mt5d.market import TIMEFRAMES


__all__ = ["Config", "ConfigError", "load_config", "parse_config"]

PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
NonNegFloat = Annotated[float, msgspec.Meta(ge=0)]
PositiveInt = Annotated[int, msgspec.Meta(gt=0)]


class _Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class FaultConfig(_Section):
    kind: Literal["disconnect", "ipc_timeout", "hang", "auth", "stall", "restart"]
    at: NonNegFloat
    duration: PositiveFloat


class TradeScriptConfig(_Section):
    """One scripted trade: what a person does at the terminal, ``at`` seconds after the sim started."""

    at: NonNegFloat
    action: Literal["buy", "sell", "buy_limit", "sell_limit", "buy_stop", "sell_stop", "modify", "close", "cancel"]
    symbol: str = ""
    volume: NonNegFloat = 0.0
    price: NonNegFloat = 0.0
    sl: NonNegFloat = 0.0
    tp: NonNegFloat = 0.0
    # The position/order to modify, close or cancel: a ticket, or 1..999 = the one scripted trade #k made.
    ticket: Annotated[int, msgspec.Meta(ge=0)] = 0


class SimConfig(_Section):
    seed: int = 42
    # Symbols the sim offers beyond its built-in catalogue (for load tests).
    synthetic_symbols: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 0
    ticks_per_second: NonNegFloat = 4.0
    broker_tz: str = "EET"
    faults: tuple[FaultConfig, ...] = ()
    # Depth of market levels per side, per symbol (0: no book), over the catalogue's own.
    book_depth: dict[str, Annotated[int, msgspec.Meta(ge=0, le=64)]] = {}
    # The account (see daemon/terminal/sim/trading.py).
    account_mode: Literal["hedging", "netting"] = "hedging"
    balance: NonNegFloat = 10000.0
    leverage: PositiveInt = 100
    commission_per_lot: NonNegFloat = 0.0
    # At most this volume of a pending order fills per tick (0: all at once); more makes partial fills.
    fill_volume: NonNegFloat = 0.0
    trade_allowed: bool = True
    trades: tuple[TradeScriptConfig, ...] = ()


class TerminalConfig(_Section):
    backend: Literal["sim", "native", "rpyc"] = "sim"
    login: Annotated[int, msgspec.Meta(ge=0)] = 0
    server: str = ""
    path: str = ""
    connection_timeout: PositiveFloat = 5.0
    operation_timeout: PositiveFloat = 10.0
    # Failed logins in a row (each after the maximum backoff) before exiting with code 79.
    auth_retries: PositiveInt = 3
    # rpyc bridge (mt5linux-style classic server)
    rpyc_host: str = "127.0.0.1"
    rpyc_port: Annotated[int, msgspec.Meta(gt=0, lt=65536)] = 18812
    sim: SimConfig = SimConfig()


class StreamConfig(_Section):
    symbols: tuple[str, ...] = ("EURUSD", "GBPUSD", "USDJPY", "XAUUSD", "US30", "EURUSD.m", "#AAPL")
    timeframes: tuple[str, ...] = ("M1", "M5")
    poll_interval: PositiveFloat = 0.05
    # When nothing moved for a while, poll this slowly (a quiet market costs little).
    idle_poll_interval: PositiveFloat = 0.25
    # "auto" or a fixed offset of the broker clock from UTC, "+02:00".
    server_utc_offset: str = "auto"
    # Publish the forming bar at most this often per symbol/timeframe (0 = never).
    forming_interval: NonNegFloat = 0.0
    batch_buffer: PositiveInt = 16
    # Where capture stopped is kept here (default: systemd's $STATE_DIRECTORY;
    # none: a restart starts from the newest tick). Older state than
    # resume_max_gap seconds is not replayed.
    state_dir: str = ""
    resume_max_gap: PositiveFloat = 600.0
    # Depth of market: these symbols' books on <prefix>.<account>.book.<symbol>
    # (each one of `symbols`), when they changed, at most every book_interval seconds.
    books: tuple[str, ...] = ()
    book_interval: NonNegFloat = 0.1


class AccountConfig(_Section):
    """Account tracking: positions, orders, deals and account snapshots, streamed (see actors/account.py)."""

    enabled: bool = True
    # An account snapshot when its figures changed, at most this often (seconds); open
    # positions and orders are re-read this often too (an SL/TP change shows in no count).
    interval: PositiveFloat = 0.25
    # A snapshot at least this often, changed or not.
    heartbeat: PositiveFloat = 10.0


class NatsConfig(_Section):
    url: str = "nats://127.0.0.1:4222"
    embedded: bool = False
    prefix: str = "mt5"
    # Subject account token; default: the terminal login.
    account: str = ""
    encoding: Literal["json", "msgpack"] = "json"
    pending_size: PositiveInt = 256 * 1024
    # Put a Nats-Msg-Id header on ticks and candles, so a JetStream stream drops
    # the repeats of a batch re-sent after a disconnect (costs publish speed).
    msg_id: bool = False
    user: str = ""
    # Where replies to the daemon's own requests come back (JetStream API calls);
    # empty: _INBOX_<user> (_INBOX without a user), what ops/nats-server.conf grants.
    inbox_prefix: str = ""
    creds_file: str = ""
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    connect_timeout: PositiveFloat = 2.0


class JetStreamConfig(_Section):
    """The stream mt5d provisions (created if missing, updated where the server allows, never deleted)."""

    enabled: bool = False
    # Default MT5_<account>; the last-value stream is <stream>_LAST.
    stream: str = ""
    # What is stored: kinds of mt5d.subjects.STORED_KINDS (default: all of them; never
    # the forming bar, the book or health).
    subjects: tuple[str, ...] = STORED_KINDS
    max_age: PositiveFloat = 7 * 86400.0  # seconds
    max_bytes: Annotated[int, msgspec.Meta(ge=-1)] = -1  # -1: no limit
    storage: Literal["file", "memory"] = "file"
    replicas: Annotated[int, msgspec.Meta(ge=1, le=5)] = 1
    # Repeats are dropped by Nats-Msg-Id within this window: it must cover the
    # longest re-send (a NATS outage, a takeover).
    duplicate_window: PositiveFloat = 300.0
    # Messages published and not yet acknowledged by the stream, at most.
    max_in_flight: PositiveInt = 8192
    # An ack not back after this long: the message is sent again.
    ack_timeout: PositiveFloat = 5.0
    # The newest tick (and forming bar) per symbol in <stream>_LAST, read by Direct Get.
    last_value: bool = True
    # The embedded nats-server's store (default: <state directory>/jetstream).
    store_dir: str = ""


class HaConfig(_Section):
    """Hot standby: daemons of one account share a lease in a KV bucket; the holder publishes."""

    enabled: bool = False
    ttl: Annotated[float, msgspec.Meta(ge=0.5)] = 3.0  # seconds: a dead leader is replaced after at most this
    bucket: str = ""  # default mt5_<account>_lease
    # This daemon's name in the lease (default: host:pid).
    node: str = ""


class BreakerConfig(_Section):
    # Checked by the breaker itself (BreakerPolicy.problems), not here: one set of rules.
    max_failures: int = 3
    backoff_base_seconds: float = 60.0
    backoff_max_seconds: float = 600.0
    jitter: float = 0.1


class HealthConfig(_Section):
    interval: PositiveFloat = 1.0
    # The feed is "stale" when no symbol ticked for this long while connected.
    stale_after: PositiveFloat = 60.0


class SupervisorConfig(_Section):
    max_restarts: Annotated[int, msgspec.Meta(ge=0)] = 5
    restart_window: PositiveFloat = 60.0


class RpcConfig(_Section):
    enabled: bool = True
    max_in_flight: PositiveInt = 64


class LoggingConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    levels: dict[str, Literal["DEBUG", "INFO", "WARNING", "ERROR"]] = {}


class Config(_Section):
    terminal: TerminalConfig = TerminalConfig()
    stream: StreamConfig = StreamConfig()
    account: AccountConfig = AccountConfig()
    nats: NatsConfig = NatsConfig()
    jetstream: JetStreamConfig = JetStreamConfig()
    ha: HaConfig = HaConfig()
    breaker: BreakerConfig = BreakerConfig()
    health: HealthConfig = HealthConfig()
    supervisor: SupervisorConfig = SupervisorConfig()
    rpc: RpcConfig = RpcConfig()
    logging: LoggingConfig = LoggingConfig()
    telemetry: TelemetryConfig = TelemetryConfig()


class ConfigError(Exception):
    """A configuration the daemon refuses; ``problems`` has one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


_OFFSET = re.compile(r"^[+-](\d{2}):(\d{2})$")
def _check(value, typ, path: str, problems: list[str]) -> None:
    """Walk the document against the struct types, so every problem is reported, not just the first."""
    origin = typing.get_origin(typ)
    if isinstance(typ, type) and issubclass(typ, msgspec.Struct) and isinstance(value, dict):
        fields = {f.name: f.type for f in msgspec.structs.fields(typ)}
        for key, item in value.items():
            where = f"{path}.{key}" if path else key
            if key not in fields:
                problems.append(f"{where}: unknown key (expected one of: {', '.join(fields)})")
            else:
                _check(item, fields[key], where, problems)
        return
    if origin is tuple and isinstance(value, list):
        args = typing.get_args(typ)
        if len(args) == 2 and args[1] is Ellipsis:
            for i, item in enumerate(value):
                _check(item, args[0], f"{path}[{i}]", problems)
            return
    try:
        msgspec.convert(value, typ, strict=True)
    except msgspec.ValidationError as err:
        expected = str(err).split(" - at `")[0]
        problems.append(f"{path}: {value!r} is not valid ({expected})")


def parse_config(raw: dict, *, env: dict[str, str] | None = None) -> Config:
    """Validate a parsed TOML document; every problem becomes one line."""
    env = os.environ if env is None else env
    problems: list[str] = []
    _check(raw, Config, "", problems)
    if problems:
        raise ConfigError(problems)
    cfg = msgspec.convert(raw, Config, strict=True)
    cfg = _apply_env(cfg, env)
    problems.extend(_cross_checks(cfg))
    if problems:
        raise ConfigError(problems)
    return cfg


def _apply_env(cfg: Config, env) -> Config:
    term = cfg.terminal
    changes = {}
    if env.get("MT5_LOGIN"):
        try:
            changes["login"] = int(env["MT5_LOGIN"])
        except ValueError:
            raise ConfigError([f"MT5_LOGIN: {env['MT5_LOGIN']!r} is not an integer login"]) from None
    if env.get("MT5_SERVER"):
        changes["server"] = env["MT5_SERVER"]
    if env.get("MT5_PATH"):
        changes["path"] = env["MT5_PATH"]
    if changes:
        cfg = msgspec.structs.replace(cfg, terminal=msgspec.structs.replace(term, **changes))
    if env.get("NATS_URL"):
        cfg = msgspec.structs.replace(cfg, nats=msgspec.structs.replace(cfg.nats, url=env["NATS_URL"]))
    return cfg


def _cross_checks(cfg: Config) -> list[str]:
    problems = []
    for tf in cfg.stream.timeframes:
        if tf not in TIMEFRAMES:
            problems.append(f"stream.timeframes: {tf!r} is not a timeframe (expected one of {', '.join(TIMEFRAMES)})")
    if not cfg.stream.symbols:
        problems.append("stream.symbols: empty (expected at least one symbol)")
    for symbol in cfg.stream.books:
        if symbol not in cfg.stream.symbols:
            problems.append(f"stream.books: {symbol!r} is not in stream.symbols (a book needs its symbol's quotes)")
    off = cfg.stream.server_utc_offset
    if off != "auto" and not _OFFSET.match(off):
        problems.append(f"stream.server_utc_offset: {off!r} (expected \"auto\" or \"+HH:MM\")")
    b = cfg.breaker
    problems.extend(f"breaker.{p}" for p in policy_problems(
        b.max_failures, b.backoff_base_seconds, b.backoff_max_seconds, b.jitter))
    if cfg.stream.idle_poll_interval < cfg.stream.poll_interval:
        problems.append("stream.idle_poll_interval: must be >= stream.poll_interval")
    if not re.fullmatch(r"[A-Za-z0-9_-]+", cfg.nats.prefix):
        problems.append(f"nats.prefix: {cfg.nats.prefix!r} (expected letters, digits, _ or -)")
    if cfg.nats.account and not re.fullmatch(r"[A-Za-z0-9_-]+", cfg.nats.account):
        problems.append(f"nats.account: {cfg.nats.account!r} (expected letters, digits, _ or -)")
    if cfg.nats.inbox_prefix and not re.fullmatch(r"[A-Za-z0-9_$-]+(\.[A-Za-z0-9_$-]+)*", cfg.nats.inbox_prefix):
        problems.append(f"nats.inbox_prefix: {cfg.nats.inbox_prefix!r} (expected subject tokens without "
                        f"wildcards, e.g. \"_INBOX_mt5d\")")
    if cfg.terminal.backend == "sim":
        from mt5d.daemon.terminal.sim.clock import BrokerClock

        try:
            BrokerClock(cfg.terminal.sim.broker_tz)
        except ValueError as err:
            problems.append(f"terminal.sim.broker_tz: {err}")
    if cfg.terminal.backend != "sim" and cfg.terminal.login == 0:
        problems.append("terminal.login: 0 (expected the account login, or MT5_LOGIN in the environment)")
    sim = cfg.terminal.sim
    if sim.trades:
        from mt5d.daemon.terminal.sim import default_symbols, synthetic_symbols

        offered = {s.name for s in (*default_symbols(), *synthetic_symbols(sim.synthetic_symbols))}
    for i, t in enumerate(sim.trades):
        where = f"terminal.sim.trades[{i}]"
        if t.symbol and t.symbol not in offered:
            problems.append(f"{where}.symbol: {t.symbol!r} is not a sim symbol")
        if 0 < t.ticket < 1000 and t.ticket > len(sim.trades):
            problems.append(f"{where}.ticket: {t.ticket} (expected a scripted trade 1..{len(sim.trades)}, or a ticket)")
        if t.action in ("modify", "close", "cancel"):
            if not t.ticket:
                problems.append(f"{where}.ticket: 0 (expected the ticket, or k for scripted trade #k, for {t.action})")
        else:
            if not t.symbol:
                problems.append(f"{where}.symbol: empty (expected a sim symbol for {t.action})")
            if t.volume <= 0:
                problems.append(f"{where}.volume: {t.volume} (expected > 0 for {t.action})")
            if t.action not in ("buy", "sell") and t.price <= 0:
                problems.append(f"{where}.price: {t.price} (expected > 0 for {t.action})")
    problems.extend(_jetstream_problems(cfg))
    problems.extend(telemetry_problems(cfg.telemetry))
    return problems


_NAME = re.compile(r"[A-Za-z0-9_-]+")


def _jetstream_problems(cfg: Config) -> list[str]:

    js, ha, problems = cfg.jetstream, cfg.ha, []
    for kind in js.subjects:
        if kind not in STORED_KINDS:
            problems.append(f"jetstream.subjects: {kind!r} is not stored (expected some of {', '.join(STORED_KINDS)})")
    if js.stream and not _NAME.fullmatch(js.stream):
        problems.append(f"jetstream.stream: {js.stream!r} (expected letters, digits, _ or -)")
    if ha.bucket and not _NAME.fullmatch(ha.bucket):
        problems.append(f"ha.bucket: {ha.bucket!r} (expected letters, digits, _ or -)")
    if ha.enabled and not js.enabled:
        problems.append("ha.enabled: needs jetstream.enabled (the lease is a KV bucket, takeover reads the stream)")
    if js.enabled and js.duplicate_window > js.max_age:
        problems.append("jetstream.duplicate_window: must be <= jetstream.max_age")
    return problems


def state_directory(cfg: Config) -> str:
    """Where state is kept: stream.state_dir, else systemd's $STATE_DIRECTORY, else "" (none)."""
    return cfg.stream.state_dir or os.environ.get("STATE_DIRECTORY", "").split(":")[0]


def parse_offset(text: str) -> int:
    """'+02:00' -> 7200 seconds."""
    m = _OFFSET.match(text)
    assert m, text
    sign = -1 if text[0] == "-" else 1
    return sign * (int(m.group(1)) * 3600 + int(m.group(2)) * 60)


def load_config(path: str | Path, *, env: dict[str, str] | None = None) -> Config:
    try:
        raw = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError([f"{path}: file not found"]) from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError([f"{path}: not valid TOML ({err})"]) from None
    return parse_config(raw, env=env)
