"""``mt5d tail SUBJECT``: print decoded stream messages, one a line."""

from __future__ import annotations

import sys

import anyio
import nats

from mt5d.codec import decode_any_json_line


async def tail(url: str, subject: str, count: int = 0, raw: bool = False) -> int:
    async def quiet(err: Exception) -> None:  # nats-py prints tracebacks by default
        print(f"mt5d tail: {type(err).__name__}: {err}", file=sys.stderr)

    try:
        nc = await nats.connect(url, name="mt5d-tail", error_cb=quiet, connect_timeout=2,
                                max_reconnect_attempts=3, allow_reconnect=True)
    except Exception as err:
        print(f"mt5d tail: cannot reach NATS at {url} ({type(err).__name__}); is `mt5d run` running?",
              file=sys.stderr)
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
