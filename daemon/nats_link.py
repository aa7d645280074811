"""Connecting to NATS: options, credentials and TLS in one place."""

from __future__ import annotations

import logging
import ssl
from typing import Awaitable, Callable

import anyio
import nats

from mt5d.client import inbox_prefix_for
from mt5d.daemon.config import NatsConfig

__all__ = ["connect_nats"]

log = logging.getLogger("mt5d.nats")


def _tls(cfg: NatsConfig) -> ssl.SSLContext | None:
    if not (cfg.tls_ca or cfg.tls_cert or cfg.url.startswith("tls://")):
        return None
    ctx = ssl.create_default_context(cafile=cfg.tls_ca or None)
    if cfg.tls_cert:
        ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key or None)
    return ctx


async def connect_nats(
    cfg: NatsConfig,
    *,
    secrets: dict,
    on_disconnected: Callable[[], Awaitable[None]] | None = None,
    on_reconnected: Callable[[], Awaitable[None]] | None = None,
    give_up_after: float | None = None,
    name: str = "mt5d",
):
    """Connect, retrying until it works (a daemon outlives a late NATS).

    ``secrets`` holds daemon.secrets.Secret values under NATS_PASSWORD,
    NATS_TOKEN, NATS_NKEY_SEED (revealed only here), and the .creds file
    path under NATS_CREDS_PATH.
    """
    opts: dict = dict(
        servers=[u.strip() for u in cfg.url.split(",")],  # a cluster: any of its nodes
        name=name,  # the hot standby's node name is in it: the server's connz shows who is where
        allow_reconnect=True,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        connect_timeout=cfg.connect_timeout,
        # Notice a dead link in seconds, not the default ~6 minutes.
        ping_interval=5,
        max_outstanding_pings=2,
        pending_size=cfg.pending_size,
        # Never pedantic: one bad subject would close the connection for good.
        pedantic=False,
        # Its own replies on its own prefix: the only inboxes its NATS user may read.
        inbox_prefix=cfg.inbox_prefix or inbox_prefix_for(cfg.user),
    )
    if cfg.user:
        opts["user"] = cfg.user
        if secrets.get("NATS_PASSWORD") is not None:
            opts["password"] = secrets["NATS_PASSWORD"].reveal()
    if secrets.get("NATS_TOKEN") is not None:
        opts["token"] = secrets["NATS_TOKEN"].reveal()
    if secrets.get("NATS_NKEY_SEED") is not None:
        opts["nkeys_seed_str"] = secrets["NATS_NKEY_SEED"].reveal()
    creds = secrets.get("NATS_CREDS_PATH")  # a path (not a secret itself): nats-py re-reads it on reconnect
    if creds:
        opts["user_credentials"] = str(creds)
    tls = _tls(cfg)
    if tls is not None:
        opts["tls"] = tls

    async def disconnected() -> None:
        if on_disconnected:
            await on_disconnected()

    async def reconnected() -> None:
        log.info("NATS reconnected")
        if on_reconnected:
            await on_reconnected()

    async def error(err: Exception) -> None:
        # Permission violations land here; the connection survives them.
        log.warning("NATS error", extra={"error": type(err).__name__, "detail": str(err)[:300]})

    opts.update(disconnected_cb=disconnected, reconnected_cb=reconnected, error_cb=error)
    delay, waited = 0.5, 0.0
    while True:
        try:
            nc = await nats.connect(**opts)
            log.info("NATS connected", extra={"url": _safe_url(cfg.url)})
            return nc
        except Exception as err:
            log.warning("NATS not reachable; retrying", extra={"url": _safe_url(cfg.url),
                                                             "error": type(err).__name__, "retry_in": delay})
            if give_up_after is not None and waited >= give_up_after:
                raise
            await anyio.sleep(delay)
            waited += delay
            delay = min(delay * 2, 10.0)


def _safe_url(url: str) -> str:
    """A URL without any user:password part."""
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.rpartition('@')[2]}"
    return url
