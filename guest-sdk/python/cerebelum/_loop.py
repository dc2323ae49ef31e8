"""A small asyncio event loop for code running inside the engine.

The standard loop cannot run in a component: it needs sockets (a
self-pipe) that the sandbox denies. This one runs callbacks, futures and
tasks exactly like asyncio (it reuses asyncio's Future, Task and handles),
and when every task waits on a timer it *advances time* by calling a
``sleep(ms)`` function: inside the engine that is the journaled, durable
host ``sleep``, so ``await asyncio.sleep(3600)`` in a step hibernates the
execution and a replay passes the same sleeps in the same order.

Time is virtual: ``loop.time()`` starts at 0 and moves only by sleeps,
which keeps every replay of an invocation identical.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import heapq
import itertools
import sys
import types
from typing import Any, Callable


#: Tasks may start eagerly (Python 3.12+; the engine's Python is newer).
_EAGER = sys.version_info >= (3, 12)


class DeadlockError(RuntimeError):
    """Every task waits, and on nothing that time could resolve."""


class DurableLoop(asyncio.AbstractEventLoop):
    def __init__(self, sleep_ms: Callable[[int], None]):
        self._sleep_ms = sleep_ms
        self._now_ms = 0
        self._ready: collections.deque[asyncio.Handle] = collections.deque()
        self._timers: list[tuple[int, int, asyncio.TimerHandle]] = []
        self._order = itertools.count()
        self._running = False
        self._closed = False
        self._exception: BaseException | None = None

    # -- running ------------------------------------------------------------

    def run_until_complete(self, future):
        if self._running:
            raise RuntimeError("this event loop is already running")
        previous = asyncio.events._get_running_loop()
        asyncio.events._set_running_loop(self)
        self._running = True
        try:
            if _EAGER and type(future) is types.CoroutineType:
                # The coroutine runs at once, as its task, until it first
                # waits: most steps never do, and then nothing is scheduled
                # at all (in a fresh instance each callback and handle costs
                # page faults). Still a task: asyncio.timeout and TaskGroup
                # need the current one.
                future = asyncio.Task(future, loop=self, eager_start=True)
            else:
                future = asyncio.ensure_future(future, loop=self)
            while not future.done():
                if self._exception is not None:
                    error, self._exception = self._exception, None
                    raise error
                if self._ready:
                    self._run_ready()
                elif self._timers:
                    self._advance()
                else:
                    raise DeadlockError(
                        "every task is waiting, and not on a timer: a future or event "
                        "that nothing will ever resolve"
                    )
            return future.result()
        finally:
            self._running = False
            asyncio.events._set_running_loop(previous)

    def _run_ready(self) -> None:
        for _ in range(len(self._ready)):
            handle = self._ready.popleft()
            if not handle._cancelled:
                handle._run()

    def _advance(self) -> None:
        due, _, handle = self._timers[0]
        if handle._cancelled:
            heapq.heappop(self._timers)
            return
        if due > self._now_ms:
            # The durable wait: may hibernate the execution; a replay
            # returns at once.
            self._sleep_ms(due - self._now_ms)
            self._now_ms = due
        while self._timers and self._timers[0][0] <= self._now_ms:
            _, _, handle = heapq.heappop(self._timers)
            if not handle._cancelled:
                self._ready.append(handle)

    # -- scheduling ---------------------------------------------------------

    def time(self) -> float:
        return self._now_ms / 1000.0

    def call_soon(self, callback, *args, context: contextvars.Context | None = None):
        handle = asyncio.Handle(callback, args, self, context)
        self._ready.append(handle)
        return handle

    call_soon_threadsafe = call_soon

    def call_later(self, delay, callback, *args, context=None):
        return self.call_at(self.time() + max(delay, 0), callback, *args, context=context)

    def call_at(self, when, callback, *args, context=None):
        due = max(round(when * 1000), self._now_ms)
        handle = asyncio.TimerHandle(due / 1000.0, callback, args, self, context)
        heapq.heappush(self._timers, (due, next(self._order), handle))
        return handle

    def _timer_handle_cancelled(self, handle) -> None:
        # Cancelled timers are skipped when they come up.
        pass

    def create_future(self):
        return asyncio.Future(loop=self)

    def create_task(self, coro, *, name=None, context=None, **kwargs):
        if context is None:
            return asyncio.Task(coro, loop=self, name=name)
        return asyncio.Task(coro, loop=self, name=name, context=context)

    # -- state and errors ---------------------------------------------------

    def is_running(self) -> bool:
        return self._running

    def is_closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True
        self.clear()

    def clear(self) -> None:
        """Drops what is scheduled and restarts its time at 0, so the loop
        can run again as if new."""
        self._now_ms = 0
        self._ready.clear()
        self._timers.clear()
        self._exception = None

    def get_debug(self) -> bool:
        return False

    def set_debug(self, enabled: bool) -> None:
        pass

    def default_exception_handler(self, context: dict[str, Any]) -> None:
        # An exception nobody awaits (a failing callback): it ends the run,
        # instead of vanishing into a log.
        error = context.get("exception")
        if error is None:
            error = RuntimeError(context.get("message", "error in the event loop"))
        if self._exception is None:
            self._exception = error

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        message = context.get("message", "")
        if "never retrieved" in message or "was destroyed but it is pending" in message:
            return
        self.default_exception_handler(context)

    async def shutdown_asyncgens(self) -> None:
        pass

    async def shutdown_default_executor(self, timeout=None) -> None:
        pass
