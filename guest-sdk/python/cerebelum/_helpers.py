"""The helpers steps call: ``sleep``, ``poll``, ``retry``,
``wait_for_approval`` and ``ProgressReporter``. One implementation for
both modes: what must be durable goes through the step's runtime."""

from __future__ import annotations

import asyncio
import builtins
import inspect
from datetime import timedelta
from typing import Any, Awaitable, Callable, TypeVar, overload

from ._dsl import Step
from ._local import PLAIN
from ._registry import STEPS
from ._runtime import (CURRENT, Context, Runtime, current, exception_text, print_progress,
                       to_json)
from .errors import CerebelumError, PollTimeoutError, StepError

T = TypeVar("T")


def _ms(value: int | float | timedelta, what: str) -> int:
    if isinstance(value, timedelta):
        return max(0, round(value.total_seconds() * 1000))
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} is milliseconds (a number) or a timedelta, got {value!r}")
    return max(0, round(value))


async def _call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    value = fn(*args, **kwargs)
    if inspect.isawaitable(value):
        value = await value
    return value


def _runtime() -> tuple[Context | None, Runtime]:
    """The running step's context and runtime; outside a workflow run (a
    script, a test) no context and the plain local runtime."""
    ctx = CURRENT.get()
    if ctx is not None:
        return ctx, ctx._runtime
    return None, PLAIN


async def patched(patch_id: str) -> bool:
    """Whether this run takes the new path of patch ``patch_id``, for
    changing a step's code that executions recorded before the change must
    still replay (Temporal's patching)::

        if await patched("audit-before-charge"):
            await sleep(1000)    # the new code
        await charge()

    True where the step reaches this point on code that has the patch
    (recorded: its replays say true again); false where its history was
    recorded past this point by code without it, so it keeps the old path
    and replays unchanged. Outside the engine always true. Once no open
    execution needs the old path (``cerebelum upload --check`` of the code
    without it says so), the ``if`` and the old path give way to
    :func:`deprecate_patch`."""
    if not isinstance(patch_id, str) or not patch_id:
        raise TypeError("patched() takes the patch's id, a non-empty string")
    _, runtime = _runtime()
    return await runtime.patched(patch_id)


async def deprecate_patch(patch_id: str) -> None:
    """The second stage of retiring patch ``patch_id``, where ``if await
    patched(...)`` and its old path stood::

        await deprecate_patch("audit-before-charge")
        await sleep(1000)        # the new code, now the only path
        await charge()

    The step takes the new path only, and executions whose history
    recorded the patch (they ran ``patched`` there) still replay, their
    record of it matched here. Executions recorded before the patch no
    longer replay: deploy this once none is open (``cerebelum upload
    --check`` says so). When no open execution has the patch in its history
    either, this line goes too."""
    if not isinstance(patch_id, str) or not patch_id:
        raise TypeError("deprecate_patch() takes the patch's id, a non-empty string")
    _, runtime = _runtime()
    # The same call as patched(): it matches the recorded patch, and
    # records it for new runs (a replay on code that still asks
    # patched() takes the new path too).
    await runtime.patched(patch_id)


async def sleep(duration: int | float | timedelta, data: Any = None) -> None:
    """Waits ``duration`` (milliseconds, or a ``timedelta``).

    Inside the engine the wait is durable: a step may sleep for days; the
    execution hibernates meanwhile, and after a restart the step goes on
    with the next line. ``data`` (JSON) is recorded in the journal with
    the sleep (what the wait is for). ``await asyncio.sleep(seconds)``
    waits as durably there, without data.

    In a step on an external worker, this sleep (and ``poll``'s and
    ``retry``'s waits) is recorded by the server too: a sleep longer than
    the server's ``--worker-hold-ms`` hands the task back until it ends,
    and whichever worker takes it then runs the step again from the top,
    every durable call made before returning its recorded answer.
    ``asyncio.sleep`` there is an ordinary, forgetful wait.
    """
    ms = _ms(duration, "sleep's duration")
    ctx, runtime = _runtime()
    await runtime.sleep(ms, data)


# The check's value is what poll returns: a step's (Step[..., T]), an
# async function's, or a plain function's (the order matters: an async
# function is also a function returning an awaitable).
@overload
async def poll(check_fn: Step[Any, T], *, interval: int | float | timedelta = 5000,
               max_attempts: int = 30, timeout: int | float | timedelta | None = None,
               success_condition: Callable[[T], object] | None = None,
               on_attempt: Callable[[int, T], object] | None = None) -> T: ...


@overload
async def poll(check_fn: Callable[[], Awaitable[T]], *,
               interval: int | float | timedelta = 5000,
               max_attempts: int = 30, timeout: int | float | timedelta | None = None,
               success_condition: Callable[[T], object] | None = None,
               on_attempt: Callable[[int, T], object] | None = None) -> T: ...


@overload
async def poll(check_fn: Callable[[], T], *, interval: int | float | timedelta = 5000,
               max_attempts: int = 30, timeout: int | float | timedelta | None = None,
               success_condition: Callable[[T], object] | None = None,
               on_attempt: Callable[[int, T], object] | None = None) -> T: ...


async def poll(check_fn: Step[Any, Any] | Callable[[], Any], *,
               interval: int | float | timedelta = 5000,
               max_attempts: int = 30, timeout: int | float | timedelta | None = None,
               success_condition: Callable[[Any], object] | None = None,
               on_attempt: Callable[[int, Any], object] | None = None) -> Any:
    """Calls ``check_fn()`` (sync or async) until its value passes
    ``success_condition`` (default: the value is truthy), waiting
    ``interval`` ms between checks; returns that value.

    ``on_attempt(attempt, value)`` is called after every check, the
    successful one too. Raises :class:`PollTimeoutError` (a
    ``TimeoutError``) after ``max_attempts`` checks, or when ``timeout``
    ms have passed before a check. An exception of ``check_fn`` ends the
    poll.

    Inside the engine each check's value is journaled, so a replay takes
    the same path without calling it again: it must then be JSON (return
    a dict of what you test, e.g. ``{"ip": droplet.ip_address}``); locally
    it may be any object. ``check_fn`` may also be a step: it receives the
    calling step's inputs and dependencies, a check that fails counts as
    not ready, and inside the engine (without ``success_condition`` and
    ``on_attempt``) the engine itself runs the checks, one journal entry
    each.
    """
    ctx, runtime = _runtime()
    interval_ms = _ms(interval, "poll's interval")
    timeout_ms = None if timeout is None else _ms(timeout, "poll's timeout")
    if max_attempts < 1:
        raise ValueError("poll's max_attempts must be at least 1")
    if isinstance(check_fn, Step):
        if ctx is None:
            raise CerebelumError(
                f"poll's check is step `{check_fn.name}`, which runs inside a workflow run: "
                "call poll from a step, or pass a plain function")
        env = _check_envelope(ctx, check_fn)
        if success_condition is None and on_attempt is None:
            done = await runtime.engine_poll(ctx, check_fn, interval_ms, max_attempts,
                                             timeout_ms)
            if done is not NotImplemented:
                return done

        async def check() -> Any:
            # A failed check counts as "not yet", as in the engine's poll.
            result = await runtime.call_step(check_fn, env)
            return None if "error" in result else result.get("ok")
    elif callable(check_fn):
        what = f"the value of poll's check `{getattr(check_fn, '__name__', 'check_fn')}`"
        if ctx is not None:
            what += f" in step `{ctx.step_name}`"

        async def check() -> Any:
            return await runtime.recorded("poll-check", lambda: _call(check_fn), what)
    else:
        raise TypeError(f"poll's check_fn must be callable or a step, got {check_fn!r}")

    succeeded = success_condition or bool
    loop = asyncio.get_running_loop()
    started = loop.time()
    for attempt in range(1, max_attempts + 1):
        elapsed_ms = (loop.time() - started) * 1000
        if timeout_ms is not None and elapsed_ms >= timeout_ms:
            raise PollTimeoutError(
                f"Polling timed out after {elapsed_ms:.0f}ms (timeout: {timeout_ms}ms)",
                "poll-timeout")
        value = await check()
        if on_attempt is not None:
            await _call(on_attempt, attempt, value)
        if succeeded(value):
            return value
        if attempt < max_attempts:
            await runtime.sleep(interval_ms)
    raise PollTimeoutError(
        f"Polling failed after {max_attempts} attempts (interval: {interval_ms}ms)",
        "poll-exhausted")


def _check_envelope(ctx: Context, check: Step[Any, Any]) -> dict[str, Any]:
    missing = [d for d in check.dependencies if d in STEPS and d not in ctx._deps]
    if missing:
        raise CerebelumError(
            f"poll's check step `{check.name}` needs `{missing[0]}`, which step "
            f"`{ctx.step_name}` (the caller) does not receive: add `{missing[0]}` as a "
            f"parameter of `{ctx.step_name}`")
    return {"workflow": ctx.workflow_name, "inputs": ctx.inputs,
            "deps": {d: ctx._deps[d] for d in check.dependencies if d in ctx._deps}}


# fn's value is what retry returns (an async fn's awaited). Its arguments
# are not checked against fn's parameters: retry's own keyword arguments
# sit between them, which a ParamSpec cannot express.
@overload
async def retry(fn: Callable[..., Awaitable[T]], *args: Any,
                max_attempts: int = 3, delay: int | float | timedelta = 1000,
                backoff: float = 1.0, on_error: type[BaseException] | None = None,
                on_attempt: Callable[[int, BaseException | None], object] | None = None,
                **kwargs: Any) -> T: ...


@overload
async def retry(fn: Callable[..., T], *args: Any, max_attempts: int = 3,
                delay: int | float | timedelta = 1000,
                backoff: float = 1.0, on_error: type[BaseException] | None = None,
                on_attempt: Callable[[int, BaseException | None], object] | None = None,
                **kwargs: Any) -> T: ...


async def retry(fn: Callable[..., Any], *args: Any, max_attempts: int = 3,
                delay: int | float | timedelta = 1000,
                backoff: float = 1.0, on_error: type[BaseException] | None = None,
                on_attempt: Callable[[int, BaseException | None], object] | None = None,
                **kwargs: Any) -> Any:
    """Calls ``fn(*args, **kwargs)`` (sync or async) until it returns
    without raising, at most ``max_attempts`` times, waiting ``delay`` ms
    (times ``backoff`` after each failure) in between.

    ``on_error``: an exception type; only that type is retried, any other
    exception propagates at once. ``on_attempt(attempt, last_error)`` runs
    before each attempt (``last_error`` is ``None`` on the first). When
    every attempt failed, the last error itself is raised.

    Inside the engine each attempt's outcome is journaled and the waits
    are durable: after a restart, attempts that already ran are not run
    again (an error that is replayed comes back with its message, as its
    built-in type, or as a :class:`StepError` whose ``kind`` is its type's
    name).
    """
    ctx, runtime = _runtime()
    if max_attempts < 1:
        raise ValueError("retry's max_attempts must be at least 1")
    if on_error is not None and not (isinstance(on_error, type)
                                     and issubclass(on_error, BaseException)):
        raise TypeError(f"retry's on_error is the exception type to retry (e.g. "
                        f"on_error=ConnectionError), got {on_error!r}")
    wait_ms = float(_ms(delay, "retry's delay"))
    what = f"the value returned by {getattr(fn, '__name__', 'fn')}"
    last: BaseException | None = None
    for attempt in range(1, max_attempts + 1):
        if on_attempt is not None:
            await _call(on_attempt, attempt, last)
        raised: list[BaseException] = []

        async def run_once() -> dict[str, Any]:
            try:
                value = await _call(fn, *args, **kwargs)
            except Exception as e:  # the failure is the outcome to record
                raised.append(e)
                return {"raised": type(e).__name__, "message": exception_text(e),
                        "retry": on_error is None or isinstance(e, on_error)}
            return {"ok": value}

        outcome = await runtime.recorded("retry-attempt", run_once, what)
        if "ok" in outcome:
            return outcome["ok"]
        last = raised[0] if raised else _replayed(outcome)
        if not outcome.get("retry", True):
            raise last
        if attempt < max_attempts:
            await runtime.sleep(round(wait_ms))
            wait_ms *= backoff
    assert last is not None
    raise last


def _replayed(outcome: dict[str, Any]) -> BaseException:
    """A recorded attempt's error, replayed after a restart: a built-in
    exception type comes back as itself (``except ConnectionError`` still
    catches it), any other as a :class:`StepError` whose ``kind`` is the
    type's name; the message is the same."""
    cls = getattr(builtins, outcome["raised"], None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return cls(outcome["message"])
        except Exception:
            pass
    return StepError(outcome["message"], outcome["raised"])


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


async def wait_for_signal(name: str, timeout_ms: int | timedelta | None = None) -> Any:
    """Waits for the next signal ``name`` sent to this execution and
    returns its payload.

    Inside the engine the wait is durable: ``cerebelum signal EXECUTION
    NAME --payload JSON`` (or the API's ``Signal``, or an HTTP trigger)
    sends one; signals sent before the wait are kept in order, and each is
    delivered to exactly one wait, also across engine restarts. Raises
    :class:`SignalTimeoutError` when ``timeout_ms`` passes first. Locally,
    the ``signal_handler`` given to ``execute`` answers.
    """
    if not isinstance(name, str) or not name:
        raise ValueError("the signal name must be a non-empty string")
    ctx = current()
    timeout = None if timeout_ms is None else _ms(timeout_ms, "timeout_ms")
    return await ctx._runtime.signal(ctx, name, timeout)


def set_state(state: Any) -> None:
    """Publishes ``state`` (small JSON) as where the execution stands:
    ``cerebelum status`` and ``watch`` show the latest one."""
    ctx = current()
    to_json(state, "the state")
    ctx._runtime.set_state(ctx, state)


class ProgressReporter:
    """Reports a step's progress: ``ProgressReporter(context).update(40, "Copying")``.

    Inside the engine it shows in ``cerebelum watch``'s progress bar (from
    a worker, through its heartbeats); locally, and for any object with a
    ``step_name`` (a test double of the context), it prints the original
    SDK's line on stdout: ``  [step] ████████░░░░░░░░░░░░ 40% - Copying``.
    """

    def __init__(self, context: Any = None):
        self.context = context
        self.last_progress = 0

    def update(self, percent: int | float, message: str = "") -> None:
        ctx = self.context if self.context is not None else current()
        percent = max(0, min(100, int(percent)))
        self.last_progress = percent
        if isinstance(ctx, Context):
            ctx._runtime.progress(ctx, percent, str(message))
        else:
            print_progress(getattr(ctx, "step_name", "step"), percent, str(message))
