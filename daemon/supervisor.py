"""One-for-one supervision within a restart budget.

A crashed actor is restarted on its own (its channels and state live outside
its ``run``, so nothing queued is lost); past ``max_restarts`` within
``window`` seconds the supervisor gives up and the process exits non-zero,
so systemd restarts it clean. Some errors are fatal at once (``fatal``).
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Awaitable, Callable

import anyio
from anyio.abc import TaskStatus

__all__ = ["Supervisor", "SupervisorGaveUp", "single_error"]

log = logging.getLogger("mt5d.supervisor")


class SupervisorGaveUp(Exception):
    pass


def single_error(err: BaseException) -> BaseException:
    """Task groups wrap errors in groups; the actor's own error is inside."""
    while isinstance(err, BaseExceptionGroup) and len(err.exceptions) == 1:
        err = err.exceptions[0]
    return err


class Supervisor:
    def __init__(self, *, max_restarts: int, window: float, fatal: tuple[type[BaseException], ...] = ()) -> None:
        self._max = max_restarts
        self._window = window
        self._fatal = fatal
        self._restarts: deque[float] = deque()
        self.alive: dict[str, bool] = {}

    def all_alive(self) -> bool:
        return all(self.alive.values())

    async def child(self, name: str, run: Callable[..., Awaitable[None]], *,
                    task_status: TaskStatus = anyio.TASK_STATUS_IGNORED) -> None:
        """Run ``run(task_status=...)`` and keep it running; started once it first is."""
        started = False
        delay = 0.1
        while True:
            try:
                async with anyio.create_task_group() as tg:
                    await tg.start(run)
                    self.alive[name] = True
                    if not started:
                        started = True
                        task_status.started()
                log.warning("actor stopped on its own", extra={"actor": name})
                return
            except Exception as exc:  # cancellation is a BaseException and passes through
                err = single_error(exc)
                self.alive[name] = False
                if isinstance(err, self._fatal):
                    raise err from None
                now = anyio.current_time()
                self._restarts.append(now)
                while self._restarts and now - self._restarts[0] > self._window:
                    self._restarts.popleft()
                log.error("actor crashed", extra={"actor": name, "error": type(err).__name__,
                                                  "detail": str(err)[:500], "restarts": len(self._restarts)},
                          exc_info=err)
                if len(self._restarts) > self._max:
                    raise SupervisorGaveUp(
                        f"{name} crashed {len(self._restarts)} times in {self._window:g} s") from None
                await anyio.sleep(delay)
                delay = min(delay * 2, 5.0)
