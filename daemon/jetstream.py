"""The account's streams, provisioned by mt5d: created when missing, updated where
the server allows, never deleted.

- ``MT5_<account>`` stores what the config names (ticks, closed candles, and
  every kind ``mt5d.subjects.STORED_KINDS`` adds), each message once per
  ``Nats-Msg-Id`` within the duplicate window;
- ``MT5_<account>_LAST`` keeps one message per subject (the newest tick,
  sourced from the first, and the forming bar published straight to it), with
  Direct Get on, so a price is answerable by any server while mt5d restarts.

A setting the server refuses to change is a ``ProvisionError`` naming the
field (the process exits 78); a server that is not ready yet is retried.
"""

from __future__ import annotations

import dataclasses
import logging

import anyio
import nats.errors
import nats.js.errors
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig, StreamSource

from mt5d.daemon.config import JetStreamConfig
from mt5d.subjects import Subjects, last_value_stream, stream_name

__all__ = ["ProvisionError", "provision", "desired_streams", "account_stream"]

log = logging.getLogger("mt5d.jetstream")

# The fields mt5d owns on its streams, and the config key each comes from.
_FIELDS = {"subjects": "jetstream.subjects", "max_age": "jetstream.max_age", "max_bytes": "jetstream.max_bytes",
           "storage": "jetstream.storage", "num_replicas": "jetstream.replicas",
           "duplicate_window": "jetstream.duplicate_window", "allow_direct": "jetstream",
           "max_msgs_per_subject": "jetstream.last_value", "sources": "jetstream.last_value"}


class ProvisionError(Exception):
    """The streams cannot be what the config says; ``config`` is False when it may be transient."""

    def __init__(self, message: str, *, config: bool = True) -> None:
        super().__init__(message)
        self.config = config


def account_stream(js_cfg: JetStreamConfig, account: str) -> str:
    return js_cfg.stream or stream_name(account)


def desired_streams(js_cfg: JetStreamConfig, subjects: Subjects) -> list[StreamConfig]:
    name = account_stream(js_cfg, subjects.account)
    storage = StorageType.FILE if js_cfg.storage == "file" else StorageType.MEMORY
    main = StreamConfig(
        name=name, description="mt5d: ticks and closed candles of one account",
        subjects=subjects.stored(js_cfg.subjects), retention=RetentionPolicy.LIMITS, discard=DiscardPolicy.OLD,
        max_age=js_cfg.max_age, max_bytes=js_cfg.max_bytes, storage=storage, num_replicas=js_cfg.replicas,
        duplicate_window=js_cfg.duplicate_window, allow_direct=True,
    )
    out = [main]
    if js_cfg.last_value and "tick" in js_cfg.subjects:
        ticks, forming = subjects.last_value()
        out.append(StreamConfig(
            name=last_value_stream(name), description="mt5d: the newest tick and forming bar per symbol",
            subjects=[forming], sources=[StreamSource(name=name, filter_subject=ticks)],
            retention=RetentionPolicy.LIMITS, discard=DiscardPolicy.OLD, max_msgs_per_subject=1,
            storage=storage, num_replicas=js_cfg.replicas, allow_direct=True, duplicate_window=1.0,
        ))
    return out


async def provision(js, js_cfg: JetStreamConfig, subjects: Subjects, *, give_up_after: float = 60.0) -> list[str]:
    """Make the account's streams match the config; returns their names."""
    names = []
    for want in desired_streams(js_cfg, subjects):
        await _retrying(lambda w=want: _ensure(js, w), give_up_after)
        names.append(want.name)
    return names


async def _retrying(step, give_up_after: float):
    """A cluster that just started has no JetStream leader yet: wait for it, within a bound."""
    delay, waited = 0.2, 0.0
    while True:
        try:
            return await step()
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.js.errors.ServiceUnavailableError,
                nats.errors.ConnectionClosedError, TimeoutError) as err:
            if waited >= give_up_after:
                if isinstance(err, nats.errors.NoRespondersError):
                    raise ProvisionError("jetstream.enabled: the NATS server does not answer the JetStream API "
                                         "(start it with JetStream on: nats-server -js)") from None
                raise ProvisionError(f"JetStream not ready after {give_up_after:g} s ({type(err).__name__})",
                                     config=False) from None
            log.info("JetStream not ready; retrying", extra={"error": type(err).__name__, "retry_in": delay})
            await anyio.sleep(delay)
            waited += delay
            delay = min(delay * 2, 2.0)


async def _ensure(js, want: StreamConfig) -> None:
    try:
        info = await js.stream_info(want.name)
    except nats.js.errors.NotFoundError:
        try:
            await js.add_stream(want)
        except nats.js.errors.BadRequestError as err:
            raise ProvisionError(f"jetstream: the server refuses stream {want.name}: {err.description}") from None
        log.info("JetStream stream created", extra={"stream": want.name, "subjects": want.subjects})
        return
    have = info.config
    # The operator may have added subjects of their own: keep them.
    merged = dataclasses.replace(want, subjects=list(dict.fromkeys([*(have.subjects or []), *(want.subjects or [])])))
    changed = [f for f in _FIELDS if _norm(f, getattr(have, f)) != _norm(f, getattr(merged, f))]
    if not changed:
        return
    update = dataclasses.replace(have, **{f: getattr(merged, f) for f in _FIELDS})
    try:
        await js.update_stream(update)
    except nats.js.errors.APIError as err:
        if isinstance(err, nats.js.errors.ServiceUnavailableError):
            raise
        fields = ", ".join(f"{_FIELDS[f]} ({_norm(f, getattr(have, f))!r} -> {_norm(f, getattr(merged, f))!r})"
                           for f in changed)
        raise ProvisionError(f"{fields}: the server refuses to change stream {want.name} "
                             f"({err.description}); the stream is kept as it is") from None
    log.info("JetStream stream updated", extra={"stream": want.name, "fields": changed})


def _norm(field: str, value):
    """Compare what the server reports with what we ask (enums as strings, sources as names/filters)."""
    if field == "sources":
        return sorted((s.name, s.filter_subject or "") for s in (value or []))
    if field == "subjects":
        return sorted(value or [])
    if field == "storage":
        return getattr(value, "value", value) or "file"
    if field == "num_replicas":
        return value or 1
    if field in ("max_age", "duplicate_window"):
        return round(float(value or 0), 3)
    if field == "max_bytes":
        return -1 if value in (None, 0) else value
    if field == "allow_direct":
        return bool(value)
    return value
