"""The ``mt5d`` command: run, check-config, tail, bench.

Exit codes: 0 clean stop; 78 bad configuration (EX_CONFIG, systemd does not
restart); 79 authentication kept failing (systemd does not restart: brokers
lock accounts); 70 an actor kept crashing past its restart budget; 69 the
embedded nats-server could not start.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import signal
import sys
from pathlib import Path

import anyio

EX_OK, EX_UNAVAILABLE, EX_SOFTWARE, EX_CONFIG, EX_AUTH = 0, 69, 70, 78, 79

log = logging.getLogger("mt5d.cli")


def _default_config() -> str:
    return os.environ.get("MT5D_CONFIG", "config.toml")


def _load(path: str):
    from mt5d.daemon.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as err:
        for line in err.problems:
            print(f"mt5d: config error: {line}", file=sys.stderr)
        return None


def cmd_check_config(args) -> int:
    cfg = _load(args.config)
    if cfg is None:
        return EX_CONFIG
    print(f"{args.config}: ok ({cfg.terminal.backend} terminal, {len(cfg.stream.symbols)} symbols, "
          f"NATS {'embedded at ' if cfg.nats.embedded else ''}{cfg.nats.url})")
    return EX_OK


def cmd_run(args) -> int:
    cfg = _load(args.config)
    if cfg is None:
        return EX_CONFIG
    from mt5d.daemon.logs import register_secret, setup_logging
    from mt5d.daemon.secrets import SecretError, load_secrets, nats_creds_path

    setup_logging(cfg.logging.level, dict(cfg.logging.levels))
    try:
        secrets: dict = load_secrets(env_file=Path(args.config).parent / ".env")
        creds = nats_creds_path(cfg.nats.creds_file)
    except SecretError as err:
        print(f"mt5d: config error: {err}", file=sys.stderr)
        return EX_CONFIG
    for name, value in secrets.items():
        register_secret(value)
        log.info("secret loaded", extra={"secret": name, "source": value.source})
    if creds:
        secrets["NATS_CREDS_PATH"] = creds[0]
    server = None
    if cfg.nats.embedded:
        from mt5d.daemon.natsserver import NatsServer

        from mt5d.daemon.config import state_directory

        js = cfg.jetstream
        # With JetStream on, the embedded server keeps its store under the state directory.
        # (No state directory configured: mt5d-state beside the config file, on a bare machine.)
        state = state_directory(cfg) or str(Path(args.config).resolve().parent / "mt5d-state")
        store = (js.store_dir or str(Path(state) / "jetstream")) if js.enabled else None
        try:
            server = NatsServer.from_url(cfg.nats.url.split(",")[0], jetstream=js.enabled, store_dir=store).start()
        except (OSError, RuntimeError) as err:
            log.error("embedded nats-server did not start", extra={"detail": str(err)})
            return EX_UNAVAILABLE
        log.info("embedded nats-server started", extra={"url": server.url, "pid": server.proc.pid,
                                                       "jetstream_store": store})
    try:
        return anyio.run(_run, cfg, secrets)
    finally:
        if server is not None:
            server.stop()
            log.info("embedded nats-server stopped")


async def _run(cfg, secrets) -> int:
    from mt5d.actors.connection import AuthGaveUp
    from mt5d.daemon.app import Daemon, settle_gc
    from mt5d.daemon.jetstream import ProvisionError
    from mt5d.daemon.notify import Notifier
    from mt5d.daemon.supervisor import SupervisorGaveUp, single_error

    notifier = Notifier.from_env()
    try:
        daemon = Daemon(cfg, secrets=secrets, notifier=notifier)
    except ImportError as err:  # telemetry exporter without its extra (mt5d[otlp], mt5d[prometheus])
        log.error("telemetry exporter unavailable", extra={"detail": str(err), "exit_code": EX_CONFIG})
        return EX_CONFIG
    except OSError as err:  # e.g. the Prometheus port is taken: systemd may retry
        log.error("telemetry exporter could not start", extra={"detail": str(err), "exit_code": EX_UNAVAILABLE})
        return EX_UNAVAILABLE
    code = EX_OK
    try:
        async with anyio.create_task_group() as tg:
            async def stop_on_signal() -> None:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for signum in signals:
                        log.info("stopping", extra={"signal": signal.Signals(signum).name})
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(stop_on_signal)
            await tg.start(daemon.run)
            settle_gc()
    except BaseException as exc:  # unwrap the task group's group
        err = single_error(exc)
        if isinstance(err, ProvisionError):
            level = "config error" if err.config else "unavailable"
            log.error(f"JetStream streams not provisioned ({level})",
                      extra={"detail": str(err), "exit_code": EX_CONFIG if err.config else EX_UNAVAILABLE})
            if err.config:
                print(f"mt5d: config error: {err}", file=sys.stderr)
            code = EX_CONFIG if err.config else EX_UNAVAILABLE
        elif isinstance(err, AuthGaveUp):
            log.error("authentication keeps failing; exiting so the broker does not lock the account",
                      extra={"detail": str(err), "exit_code": EX_AUTH})
            code = EX_AUTH
        elif isinstance(err, SupervisorGaveUp):
            log.error("restart budget exhausted", extra={"detail": str(err), "exit_code": EX_SOFTWARE})
            code = EX_SOFTWARE
        else:
            raise
    finally:
        daemon.telemetry.shutdown()  # flush the last metrics and spans
    log.info("mt5d stopped", extra={"exit_code": code})
    return code


def cmd_tail(args) -> int:
    from mt5d.daemon.tail import tail

    try:
        return anyio.run(functools.partial(tail, args.url, args.subject, args.count, args.raw, user=args.user,
                                           creds=args.creds, inbox_prefix=args.inbox_prefix, since=args.since))
    except KeyboardInterrupt:
        return EX_OK


def cmd_bench(args) -> int:
    from mt5d.daemon.tools.bench import main as bench_main

    return bench_main(args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mt5d", description="Stream a MetaTrader 5 terminal to NATS.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run the daemon")
    p.add_argument("--config", default=_default_config())
    p.set_defaults(fn=cmd_run)
    p = sub.add_parser("check-config", help="validate a config file and exit")
    p.add_argument("--config", default=_default_config())
    p.set_defaults(fn=cmd_check_config)
    p = sub.add_parser("tail", help="print decoded messages from a subject, one a line")
    p.add_argument("subject", nargs="?", default="mt5.>")
    p.add_argument("--url", default=os.environ.get("NATS_URL", "nats://127.0.0.1:4222"))
    p.add_argument("--count", type=int, default=0, help="stop after N messages (0: never)")
    p.add_argument("--raw", action="store_true", help="print payloads as received")
    p.add_argument("--user", default=os.environ.get("NATS_USER", ""),
                   help="NATS user (password from $NATS_PASSWORD); or user:password@ in --url")
    p.add_argument("--creds", default="", help="a NATS .creds file")
    p.add_argument("--inbox-prefix", default="", help="reply subjects' prefix (default: _INBOX_<user>)")
    p.add_argument("--since", default=None,
                   help="replay what the JetStream stream stored since then ('10m', '2h', epoch ms), then live")
    p.set_defaults(fn=cmd_tail)
    p = sub.add_parser("bench", help="measure throughput, latency, CPU and completeness")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--soak", type=float, default=0.0, help="seconds of realistic load for the memory check")
    p.add_argument("--quick", action="store_true", help="shorter phases (a smoke run)")
    p.add_argument("--faults", type=float, default=0.0, metavar="SECONDS",
                   help="instead: a fault soak of SECONDS, the stream judged against the sim's history")
    p.add_argument("--seed", type=int, default=1, help="the fault soak's schedule")
    p.set_defaults(fn=cmd_bench)
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
