"""``mt5d tail SUBJECT``: print decoded stream messages, one a line.

``--since 10m``: first what the JetStream stream holding SUBJECT stored in the
last 10 minutes (an ordered consumer from that time), then live.
"""

from __future__ import annotations

import datetime as dt
import os
import sys

import anyio

from mt5d.client import open_nats
from mt5d.codec import decode_any_json_line
from mt5d.errors import MT5Error
from mt5d.stored import replay_since, subscribe_since


async def tail(url: str, subject: str, count: int = 0, raw: bool = False, *, user: str | None = None,
               creds: str | None = None, inbox_prefix: str | None = None, since: str | None = None) -> int:
    """``user`` logs in with ``$NATS_PASSWORD``; replies (the JetStream API's, with ``since``)
    use ``_INBOX_<user>``, the prefix ops/nats-server.conf grants the user."""
    start_ms = None
    if since:
        try:
            start_ms = replay_since(since)
        except ValueError as err:
            print(f"mt5d tail: {err}", file=sys.stderr)
            return 64
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

    try:
        if start_ms is None:
            await nc.subscribe(subject, cb=on_msg)
        else:
            js = nc.jetstream()
            try:
                stream = await js.find_stream_name_by_subject(subject)
            except Exception as err:
                print(f"mt5d tail: no JetStream stream stores {subject} ({type(err).__name__}); "
                      "is [jetstream] enabled in mt5d?", file=sys.stderr)
                return 69
            start = dt.datetime.fromtimestamp(start_ms / 1000, tz=dt.timezone.utc)
            await subscribe_since(js, subject, stream=stream, start=start, cb=on_msg)
        await done.wait()
    finally:
        await nc.drain()
    return 0
