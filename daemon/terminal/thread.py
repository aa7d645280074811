"""The terminal thread: one OS thread that runs every terminal call, in order.

The MetaTrader5 module is process-global state and not thread-safe, and its
``last_error()`` belongs to the thread that made the failing call, so every
call goes through here. A call that outlives its timeout is abandoned: the
caller gets ``MT5TimeoutError`` and the thread is *wedged* until the call
returns (if ever). While wedged, new calls fail at once; the health actor stops
feeding the systemd watchdog, so a native call that never returns ends in a
clean process restart instead of a silent stall.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from typing import Any, Callable, TypeVar

import anyio
import anyio.lowlevel

from mt5d.errors import MT5TimeoutError

__all__ = ["TerminalThread"]

T = TypeVar("T")


def _wake_soon() -> Callable[[Callable[[], Any]], None]:
    """A thread-safe, fire-and-forget "run this on the event loop" for the running backend.

    Cheaper than ``anyio.from_thread.run_sync``, which makes the terminal
    thread wait for the loop to run the callback (two more thread hand-offs
    per terminal call).
    """
    try:
        return asyncio.get_running_loop().call_soon_threadsafe
    except RuntimeError:  # not asyncio: trio (actor tests on virtual time)
        import trio

        return trio.lowlevel.current_trio_token().run_sync_soon


class _Job:
    __slots__ = ("fn", "done", "wake", "result", "error", "abandoned", "timed_out")

    def __init__(self, fn: Callable[[], Any], wake) -> None:
        self.fn = fn
        self.done = anyio.Event()
        self.wake = wake
        self.result: Any = None
        self.error: BaseException | None = None
        self.abandoned = False
        self.timed_out = False


class TerminalThread:
    def __init__(self, name: str = "mt5-terminal", *, inline: bool = False,
                 on_unwedged: Callable[[], None] | None = None) -> None:
        self._name = name
        # Called on the event loop when a stuck call finally returns.
        self.on_unwedged = on_unwedged
        # inline: run calls on the event loop's thread (actor tests on virtual
        # time, where a real thread would race the virtual clock).
        self._inline = inline
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._running: _Job | None = None
        # Time spent inside terminal calls, measured on the thread itself.
        self.cpu_seconds = 0.0
        self.wall_seconds = 0.0
        self.thread_cpu_seconds = 0.0  # the whole thread, hand-offs included
        self.calls = 0

    @property
    def wedged(self) -> bool:
        job = self._running
        return job is not None and job.timed_out

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name=self._name, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Ask the thread to exit after its current call; never waits for it."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread = None

    async def call(self, fn: Callable[[], T], timeout: float) -> T:
        if self.wedged:
            raise MT5TimeoutError("terminal is stuck in an earlier call", 0)
        if self._inline:
            await anyio.lowlevel.checkpoint()
            self.calls += 1
            return fn()
        self.start()
        job = _Job(fn, _wake_soon())
        self._jobs.put(job)
        try:
            with anyio.move_on_after(timeout) as scope:
                await job.done.wait()
        finally:
            if not job.done.is_set():
                # Timed out or cancelled: never wait on the call, just leave it.
                job.abandoned = True
        if scope.cancelled_caught:
            job.timed_out = True  # a shutdown's cancellation is not a stuck terminal
            raise MT5TimeoutError(f"terminal call did not return within {timeout:g} s", 0)
        if job.error is not None:
            raise job.error
        return job.result

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            if job.abandoned:  # cancelled while queued
                continue
            self._running = job
            c0, w0 = time.thread_time(), time.perf_counter()
            try:
                job.result = job.fn()
            except BaseException as err:  # handed to the caller, re-raised there
                job.error = err
            self.cpu_seconds += time.thread_time() - c0
            self.wall_seconds += time.perf_counter() - w0
            self.calls += 1
            self._running = None
            callback = job.done.set if not job.abandoned else (
                self.on_unwedged if job.timed_out and self.on_unwedged else None)
            if callback is not None:
                try:
                    job.wake(callback)
                except Exception:  # the event loop is gone (shutdown): nobody waits
                    pass
            self.thread_cpu_seconds = time.thread_time()
