"""``mt5d tail SUBJECT``: print decoded stream messages, one a line."""

from __future__ import annotations

import os
import sys

import anyio

from mt5d.client import open_nats
from mt5d.codec import decode_any_json_line
from mt5d.errors import MT5Error


async def tail(url: str, subject: str, count: int = 0, raw: bool = False, *, user: str | None = None,
               creds: str | None = None, inbox_prefix: str | None = None) -> int:
    """``user`` logs in with ``$NATS_PASSWORD``; replies (none here, but the connection's
    prefix is what ops/nats-server.conf grants the user) use ``_INBOX_<user>``."""
    try:
        nc = await open_nats(url, user=user or None, nats_password=os.environ.get("NATS_PASSWORD") if user else None,
                             creds=creds or None, inbox_prefix=inbox_prefix or None, name="mt5d-tail",
                             connect_timeout=2)
    except MT5Error as err:
        print(f"mt5d tail: {err.message}; is `mt5d run` running?", file=sys.stderr)
        return 69
    done = anyio.Event()
    seen = 0

    async def on_msg(msg) -> None:
        nonlocal seen
        line = msg.data.decode(errors="replace") if raw else decode_any_json_line(msg.data)
        sys.stdout.write(f"{msg.subject} {line}\n")
        sys.stdout.flush()
        seen += 1
        if count and seen >= count:
            done.set()

    await nc.subscribe(subject, cb=on_msg)
    try:
        await done.wait()
    finally:
        await nc.drain()
    return 0
