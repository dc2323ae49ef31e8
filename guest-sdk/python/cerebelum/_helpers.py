"""The helpers steps call: ``sleep``, ``poll``, ``retry``,
``wait_for_approval`` and ``ProgressReporter``. One implementation for
both modes: what must be durable goes through the step's runtime."""

from __future__ import annotations

import asyncio
import inspect
from datetime import timedelta
from typing import Any, Callable

from ._dsl import Step
from ._runtime import Context, current, exception_text, to_json
from .errors import CerebelumError, PollTimeoutError, RetryExhaustedError, StepError


def _ms(value: int | float | timedelta, what: str) -> int:
    if isinstance(value, timedelta):
        return max(0, round(value.total_seconds() * 1000))
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} is milliseconds (a number) or a timedelta, got {value!r}")
    return max(0, round(value))


async def _call(fn: Callable, *args, **kwargs) -> Any:
    value = fn(*args, **kwargs)
    if inspect.isawaitable(value):
        value = await value
    return value


async def sleep(duration: int | float | timedelta) -> None:
    """Waits ``duration`` (milliseconds, or a ``timedelta``).

    Inside the engine the wait is durable: a step may sleep for days; the
    execution hibernates meanwhile, and after a restart the step goes on
    with the next line. ``await asyncio.sleep(seconds)`` does the same.
    """
    await asyncio.sleep(_ms(duration, "sleep's duration") / 1000)


async def poll(check_fn: Callable, *, interval: int | timedelta = 5000, max_attempts: int = 30,
               timeout: int | timedelta | None = None,
               success_condition: Callable[[Any], bool] | None = None,
               on_attempt: Callable[[int, Any], Any] | None = None) -> Any:
    """Calls ``check_fn()`` until it succeeds, waiting ``interval`` ms
    between checks; returns the successful check's value.

    A check succeeds when ``success_condition(value)`` is true (default:
    the value is not ``None``). ``on_attempt(attempt, value)`` is called
    after each check that did not succeed. Raises
    :class:`PollTimeoutError` after ``max_attempts`` checks or when
    ``timeout`` ms have passed. An exception of ``check_fn`` ends the poll.

    ``check_fn`` may be a step: it then receives the calling step's inputs
    and dependencies, a check that fails counts as not ready, and inside the engine (without ``success_condition``
    and ``on_attempt``) the engine itself runs the checks, one journal
    entry each. Any other callable (sync or async) runs in the step, and
    each check's value is recorded, so a replay takes the same path
    without calling it again.
    """
    ctx = current()
    interval_ms = _ms(interval, "poll's interval")
    timeout_ms = None if timeout is None else _ms(timeout, "poll's timeout")
    if max_attempts < 1:
        raise ValueError("poll's max_attempts must be at least 1")
    if isinstance(check_fn, Step):
        env = _check_envelope(ctx, check_fn)
        if success_condition is None and on_attempt is None:
            done = await ctx._runtime.engine_poll(ctx, check_fn, interval_ms, max_attempts,
                                                  timeout_ms)
            if done is not NotImplemented:
                return done

        async def check():
            # A failed check counts as "not yet", as in the engine's poll.
            result = await ctx._runtime.call_step(check_fn, env)
            return _FAILED if "error" in result else result.get("ok")
    elif callable(check_fn):
        async def check():
            return await ctx._runtime.recorded("poll-check", lambda: _call(check_fn))
    else:
        raise TypeError(f"poll's check_fn must be callable or a step, got {check_fn!r}")

    loop = asyncio.get_running_loop()
    started = loop.time()
    for attempt in range(1, max_attempts + 1):
        value = await check()
        if value is _FAILED:
            ok, value = False, None
        else:
            ok = value is not None if success_condition is None else success_condition(value)
        if ok:
            return value
        if on_attempt is not None:
            await _call(on_attempt, attempt, value)
        if attempt == max_attempts:
            break
        if timeout_ms is not None and (loop.time() - started) * 1000 + interval_ms > timeout_ms:
            raise PollTimeoutError(
                f"poll gave up after {timeout_ms} ms ({attempt} checks)", "poll-timeout")
        await asyncio.sleep(interval_ms / 1000)
    raise PollTimeoutError(f"poll gave up after {max_attempts} checks", "poll-exhausted")


#: A check step that failed.
_FAILED = object()


def _check_envelope(ctx: Context, check: Step) -> dict:
    missing = [d for d in check.dependencies if d not in ctx._deps]
    if missing:
        raise CerebelumError(
            f"poll's check step `{check.name}` needs `{missing[0]}`, which step "
            f"`{ctx.step_name}` (the caller) does not receive: add `{missing[0]}` as a "
            f"parameter of `{ctx.step_name}`")
    return {"workflow": ctx.workflow_name, "inputs": ctx.inputs,
            "deps": {d: ctx._deps[d] for d in check.dependencies}}


async def retry(fn: Callable, *args, max_attempts: int = 3, delay: int | timedelta = 1000,
                backoff: float = 1.0, on_error: Callable | None = None,
                on_attempt: Callable | None = None, **kwargs) -> Any:
    """Calls ``fn(*args, **kwargs)`` (sync or async) until it returns
    without raising, at most ``max_attempts`` times, waiting ``delay`` ms
    (times ``backoff`` after each failure) in between.

    ``on_attempt(attempt)`` runs before each attempt, ``on_error(error,
    attempt)`` after each failure. Raises :class:`RetryExhaustedError`
    (its ``__cause__`` the last error, when known) once every attempt
    failed.

    Inside the engine each attempt's outcome is recorded and the waits are
    durable: after a restart, attempts that already ran are not run again.
    """
    ctx = current()
    if max_attempts < 1:
        raise ValueError("retry's max_attempts must be at least 1")
    wait_ms = float(_ms(delay, "retry's delay"))
    last: BaseException | None = None
    for attempt in range(1, max_attempts + 1):
        if on_attempt is not None:
            await _call(on_attempt, attempt)
        raised: list[BaseException] = []

        async def run_once():
            try:
                value = await _call(fn, *args, **kwargs)
            except Exception as e:  # the failure is the outcome to record
                raised.append(e)
                return {"raised": type(e).__name__, "message": exception_text(e)}
            to_json(value, f"the value returned by {getattr(fn, '__name__', 'fn')}")
            return {"ok": value}

        outcome = await ctx._runtime.recorded("retry-attempt", run_once)
        if "ok" in outcome:
            return outcome["ok"]
        last = raised[0] if raised else StepError(outcome["message"], outcome["raised"])
        if on_error is not None:
            await _call(on_error, last, attempt)
        if attempt < max_attempts:
            await asyncio.sleep(wait_ms / 1000)
            wait_ms *= backoff
    raise RetryExhaustedError(
        f"{getattr(fn, '__name__', 'the function')} failed {max_attempts} times; "
        f"last error: {exception_text(last)}") from last


async def wait_for_approval(approval_type: str = "manual", data: Any = None,
                            timeout_ms: int | timedelta | None = None) -> Any:
    """Waits until someone approves or rejects.

    Returns the data given with the approval (``{}`` if none). Raises
    :class:`ApprovalRejectedError` (with the ``reason``) on a rejection and
    :class:`ApprovalTimeoutError` when ``timeout_ms`` passes first.

    Inside the engine the wait is durable (``cerebelum approve EXECUTION
    APPROVAL_TYPE``); locally, the ``approval_handler`` given to
    ``execute`` answers.
    """
    ctx = current()
    if not isinstance(approval_type, str) or not approval_type:
        raise ValueError("approval_type must be a non-empty string")
    to_json(data, "wait_for_approval's data")
    timeout = None if timeout_ms is None else _ms(timeout_ms, "timeout_ms")
    return await ctx._runtime.approval(ctx, approval_type, data, timeout)


class ProgressReporter:
    """Reports a step's progress: ``ProgressReporter(context).update(40, "Copying")``.

    Inside the engine it shows in ``cerebelum watch``'s progress bar;
    locally it draws a bar on stderr.
    """

    def __init__(self, context: Context | None = None):
        self._context = context

    def update(self, percent: int | float, message: str = "") -> None:
        ctx = self._context or current()
        percent = max(0, min(100, int(percent)))
        ctx._runtime.progress(ctx, percent, str(message))

