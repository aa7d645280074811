"""Hot standby: one lease per account in a NATS KV bucket; its holder publishes.

- Acquire: ``create(key)`` (fails while another daemon holds it). The bucket's
  TTL expires a lease that is not renewed, so a dead leader is replaced.
- Renew: ``update(key, last=revision)`` at most every TTL/3; a stale revision
  means someone else holds it now: stop at once.
- Deadline: the leader publishes only until ``sent + TTL * DEADLINE_SHARE`` of
  its last successful renewal (``sent`` = when the request left, before the
  server stamped it), so it has stopped before the server lets the lease go.
- Fencing: the revision that acquired the lease (a term: revisions only grow)
  goes on every published message (header ``Mt5d-Lease``), in health events
  and in ``$SRV.INFO`` metadata, so a consumer can reject a deposed leader.
- Takeover: the new leader's cursors come from the stream's last stored
  message per subject (``takeover``), so it publishes from there, the gap
  from its own terminal's history, repeats dropped by ``Nats-Msg-Id``.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Awaitable, Callable

import anyio
import nats.errors
import nats.js.errors
from anyio.abc import TaskStatus

__all__ = ["Lease", "DEADLINE_SHARE", "KEY"]

log = logging.getLogger("mt5d.lease")

KEY = "leader"
DEADLINE_SHARE = 0.75  # of the TTL after a renewal was sent: the leader's own deadline
# What a cluster in an election (or a node going away) answers: try again, never crash the actor.
# (nats-py turns "no responders" of a KV write into NoStreamResponseError; uncaught, it crashed the
# lease actor at every KV leader election, and a storm of them would spend the restart budget.)
_TRANSIENT = (nats.errors.TimeoutError, nats.errors.NoRespondersError, nats.errors.ConnectionClosedError,
              nats.js.errors.ServiceUnavailableError, nats.js.errors.NoStreamResponseError, TimeoutError, OSError)


class Lease:
    def __init__(self, *, bucket: str, ttl: float, node: str = "", replicas: int = 1,
                 takeover: Callable[[int], Awaitable[None]] | None = None,
                 on_change: Callable[[str, int], None] | None = None) -> None:
        self.bucket = bucket
        self.ttl = ttl
        self.node = node or f"{socket.gethostname()}:{os.getpid()}"
        self._replicas = replicas
        self._takeover = takeover
        self._on_change = on_change
        self.js = None  # set by the daemon once connected
        self._kv = None
        self.role = "follower"
        self.term = 0  # the revision that acquired the lease: the fencing token
        self._revision = 0  # the latest revision (renewals)
        self._deadline = 0.0  # anyio time: publish only before it
        self._leading = anyio.Event()
        self.terms = 0  # how many times this daemon took the lease

    # -- what the publisher and the poller ask --------------------------------
    def may_publish(self) -> bool:
        return self.role == "leader" and anyio.current_time() < self._deadline

    async def wait_leading(self) -> int:
        """Return the term once this daemon leads (at once while it does)."""
        while not self.may_publish():
            if self.role == "leader":
                self._demote("deadline passed without a renewal")
            await self._leading.wait()
        return self.term

    # -- the actor ------------------------------------------------------------
    async def run(self, *, task_status: TaskStatus = anyio.TASK_STATUS_IGNORED) -> None:
        self._demote("starting")  # a restarted actor holds nothing until it acquires again
        self._kv = await self._bucket()
        task_status.started()
        try:
            while True:
                if self.role == "leader":
                    await self._renew()
                else:
                    await self._acquire()
        finally:
            if self.role == "leader":
                # A clean stop hands over at once instead of after the TTL.
                with anyio.move_on_after(min(1.0, self.ttl / 3), shield=True):
                    try:
                        await self._kv.delete(KEY, last=self._revision)
                        log.info("lease released", extra={"node": self.node, "term": self.term})
                    except Exception as err:
                        log.debug("lease not released", extra={"error": type(err).__name__})
                self._demote("stopping")

    async def _bucket(self):
        from nats.js.api import KeyValueConfig

        while True:
            try:
                try:
                    return await self.js.key_value(self.bucket)
                except nats.js.errors.BucketNotFoundError:
                    return await self.js.create_key_value(
                        KeyValueConfig(bucket=self.bucket, ttl=self.ttl, history=1, replicas=self._replicas))
            except _TRANSIENT as err:
                log.info("lease bucket not reachable; retrying", extra={"error": type(err).__name__})
                await anyio.sleep(min(1.0, self.ttl / 3))

    async def _acquire(self) -> None:
        sent = anyio.current_time()
        try:
            with anyio.fail_after(self.ttl / 3):
                revision = await self._kv.create(KEY, self.node.encode())
        except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.BadRequestError):
            await anyio.sleep(max(0.05, self.ttl / 12))  # held by another: look again soon
            return
        except _TRANSIENT:
            await anyio.sleep(max(0.05, self.ttl / 12))
            return
        self.term = self._revision = revision
        self._deadline = sent + self.ttl * DEADLINE_SHARE
        self.terms += 1
        log.warning("lease acquired: this daemon leads", extra={"node": self.node, "term": revision})
        if self._takeover is not None:
            try:  # cursors from the stream, before the first publish
                await self._takeover(revision)
            except Exception as err:  # noqa: BLE001 - cannot go on safely: let another daemon try
                log.error("takeover failed; releasing the lease", extra={"error": type(err).__name__})
                with anyio.move_on_after(self.ttl / 3):
                    try:
                        await self._kv.delete(KEY, last=revision)
                    except Exception:
                        pass
                await anyio.sleep(self.ttl / 3)
                return
        self.role = "leader"
        self._changed()
        self._leading.set()

    async def _renew(self) -> None:
        await anyio.sleep_until(self._deadline - self.ttl * (DEADLINE_SHARE - 1 / 3))  # TTL/3 after the last
        while self.role == "leader":
            sent = anyio.current_time()
            left = self._deadline - sent
            if left <= 0:
                self._demote("could not renew before its deadline")
                return
            try:
                with anyio.fail_after(min(left, self.ttl / 6)):
                    self._revision = await self._kv.update(KEY, self.node.encode(), last=self._revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                self._demote("another daemon holds the lease")
                return
            except _TRANSIENT as err:
                log.warning("lease renewal failed; retrying", extra={"error": type(err).__name__})
                await anyio.sleep(min(0.1, max(0.0, self._deadline - anyio.current_time())))
                continue
            self._deadline = sent + self.ttl * DEADLINE_SHARE
            return

    def _demote(self, why: str) -> None:
        if self.role != "leader":
            return
        self.role = "follower"
        self._leading = anyio.Event()
        log.warning("lease lost: this daemon follows", extra={"node": self.node, "term": self.term, "reason": why})
        self._changed()

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self.role, self.term)
