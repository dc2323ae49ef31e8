"""External workers: the steps of a Cerebelum worker queue run here, in
this CPython process, instead of in the engine's sandbox.

An execution started with a worker queue (``cerebelum start PACKAGE
WORKFLOW --worker-queue Q``) runs its workflow code in the engine and
every step as a task on queue ``Q``. A :class:`Worker` long-polls the
queue (gRPC service ``cerebelum.v1.WorkerService``), runs each task's step
as the package's ``run-step`` export would, heartbeats while it runs and
completes the task with the step's result or error::

    python -m cerebelum worker app.py --queue Q --server http://127.0.0.1:7433

Needs ``grpcio`` and ``protobuf`` (``pip install 'cerebelum[worker]'``),
through :mod:`cerebelum.client`.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import json
import logging
import os
import random
import socket
import sys
import time
import traceback
from typing import Any, Callable

from . import _patches
from ._dsl import Step, WorkflowDefinition
from ._local import LocalRuntime
from ._registry import STEPS
from ._runtime import Context, exception_text, invoke_step, to_json
from .client import CLAIM_LOST, TRANSIENT, Client, ServerError, optional
from .errors import (ApprovalRejectedError, ApprovalTimeoutError, CerebelumError,
                     HttpError, SignalTimeoutError, StepError)
from .v1 import cerebelum_pb2 as pb

log = logging.getLogger("cerebelum.worker")


# ----------------------------------------------------------------- one task


async def _wait_event(event: asyncio.Event, timeout: float) -> None:
    """Waits until ``event`` is set or ``timeout`` seconds passed (unlike
    ``asyncio.wait_for`` before Python 3.12, never swallows a cancellation)."""
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait([waiter], timeout=timeout)
    finally:
        waiter.cancel()


class _Task:
    """A task being run: what its heartbeats found out."""

    def __init__(self, task: pb.WorkerTask):
        self.task = task
        self.runner: asyncio.Task | None = None
        self.progress: dict | None = None
        self.wake = asyncio.Event()
        #: The execution was cancelled (a heartbeat said so).
        self.cancel_requested = False
        #: The claim expired: the result must be dropped.
        self.lost = False
        #: Handed back by a stopping worker.
        self.released = False

    def report(self, percent: int, message: str) -> None:
        self.progress = {"percent": percent, "message": message}
        self.wake.set()


#: Handed back "until further notice": a decision makes the task claimable.
_UNTIL_DECIDED = 2 ** 62


class _Suspend(BaseException):
    """Ends a worker step that waits longer than the server lets a task be
    held (a long sleep, an approval): the task is handed back until
    ``resume_at_ms`` (or a decision), and the step runs again then,
    replaying its history. A ``BaseException``, so that the step's own
    ``except Exception`` does not catch it. ``why`` is for the log."""

    def __init__(self, resume_at_ms: int, why: str):
        super().__init__(resume_at_ms, why)
        self.resume_at_ms = resume_at_ms
        self.why = why


#: The runtime of the worker step running in this asyncio task (None
#: outside a step): what the patched clock and ``random`` ask.
_CURRENT: contextvars.ContextVar[WorkerRuntime | None] = contextvars.ContextVar(
    "cerebelum_worker_step", default=None)
#: Set while the SDK itself runs inside a step (its RPCs read the clock).
_QUIET: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "cerebelum_worker_quiet", default=False)


def _step_runtime() -> WorkerRuntime | None:
    runtime = _CURRENT.get()
    return None if runtime is None or _QUIET.get() else runtime


def _step_clock() -> int | None:
    runtime = _step_runtime()
    return None if runtime is None else runtime.now_ns()


def _step_random() -> random.Random | None:
    runtime = _step_runtime()
    return None if runtime is None else runtime.generator()


class _StepStream:
    """``sys.stdout`` / ``sys.stderr`` of a worker process: what a step
    writes is also its output, journaled (see :meth:`WorkerRuntime.output`);
    a step run again does not print again what its first run printed.
    Everything else is the real stream's."""

    def __init__(self, real: Any, name: str):
        self._real = real
        self._name = name

    def write(self, text: str) -> int:
        runtime = _step_runtime()
        if runtime is None or runtime.output(self._name, text):
            return self._real.write(text)
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def install_patches() -> None:
    """Inside a worker step, the clock and the ``random`` module read the
    step's journaled values (see :mod:`cerebelum._patches`), and what it
    prints is journaled as its output."""
    _patches.install(_step_clock, _step_random)
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, _StepStream):
            setattr(sys, name, _StepStream(stream, name))


def _real_ms() -> int:
    return _patches.real_time_ns() // 1_000_000


class WorkerRuntime(LocalRuntime):
    """Local mode for one task, made durable by the server: the task's
    execution id and attempt; ``progress`` goes to the engine with a
    heartbeat; every durable call (``sleep``, a ``retry`` attempt, a
    ``poll`` check, a clock read, a random seed, an HTTP request) is
    recorded by the server as the step's history (RecordCall), and
    replayed from it when the step runs again. The calls the worker
    answers itself (the clock, a seed, an HTTP response, what the step
    printed) are sent with the step's next call that needs the server, in
    the same request, or with its completion: a step that dies before then
    makes them again, as code between two durable calls runs at least
    once."""

    def __init__(self, state: _Task, approval_handler: Callable | None,
                 secrets: dict | None, client: Client | None = None):
        super().__init__(state.task.execution_id, approval_handler, secrets)
        self._state = state
        self._client = client
        self._history = list(state.task.history)
        self._position = 0
        self._approvals: dict[str, int] = {}
        #: Calls answered here, not yet sent (see the class's docstring).
        self._unsent: list[pb.StepCall] = []
        #: What the step printed since its last call: (stream, text).
        self._printed: list[tuple[str, str]] = []
        #: The position of the history's last call that is not output:
        #: up to it the step replays (and prints nothing again).
        self._replays_to = max((i for i, c in enumerate(self._history)
                                if c.kind != "output"), default=-1)
        self._random: random.Random | None = None
        self._secret_values: set[str] = set()
        #: The nondeterminism found, if any: the step fails with it even
        #: when its code caught the error.
        self.diverged: StepError | None = None
        #: The server's clock minus this machine's (recorded sleeps end by
        #: the server's clock).
        self._skew_ms = state.task.now_ms - _real_ms() if state.task.now_ms else 0

    def attempt(self) -> int:
        return self._state.task.attempt or 1

    def _replayed(self, position: int, kind: str, args_json: str) -> pb.StepCall | None:
        """The call the history recorded at ``position``, if it has one;
        a :class:`StepError` ``nondeterminism`` if it is another call."""
        if position >= len(self._history):
            return None
        recorded = self._history[position]
        if recorded.kind != kind or recorded.args_json != args_json:
            self.diverged = StepError(
                f"at call {position} step '{self._state.task.step}' made a different call "
                f"than its history recorded: recorded `{recorded.kind}({recorded.args_json})`"
                f", now `{kind}({args_json})`; the code is not deterministic (or the "
                "journal was modified)", "nondeterminism")
            raise self.diverged
        return recorded

    def output(self, stream: str, text: str) -> bool:
        """Keeps ``text``, written to ``stream`` by the step, to be
        journaled as its output before its next call; whether to print it
        (not if the step is replaying: its first run printed it)."""
        self._printed.append((stream, text))
        return self._position > self._replays_to

    def _cut_output(self) -> None:
        """Makes what the step printed since its last call the next
        calls, ``output`` (one per stream change), answered here. A replay
        passes the output its history recorded there, whatever it printed
        now: output is matched by kind only, as the sandbox's."""
        printed, self._printed = self._printed, []
        while (self._position < len(self._history)
               and self._history[self._position].kind == "output"):
            self._position += 1
        if self._position < len(self._history):
            return  # printed by a replay: journaled by the first run
        merged: list[list[str]] = []
        for stream, text in printed:
            if merged and merged[-1][0] == stream:
                merged[-1][1] += text
            elif text:
                merged.append([stream, text])
        for stream, text in merged:
            args = self._redact(json.dumps({"stream": stream, "text": text}))
            self._unsent.append(pb.StepCall(position=self._position, kind="output",
                                            args_json=args, answer_json="null"))
            self._position += 1

    def last_calls(self) -> list[pb.StepCall]:
        """The calls answered here since the step's last recorded one,
        its last output with them: to send with its completion."""
        self._cut_output()
        return [] if self.diverged is not None else self._unsent

    def _answered_here(self, kind: str, args: Any, compute: Callable[[], Any]) -> Any:
        """The answer of the step's next call that this worker answers
        itself: the one its history recorded at this position, or
        ``compute()``'s (JSON-able), recorded with the next call sent."""
        self._cut_output()
        position = self._position
        args_json = self._redact(json.dumps(args))
        recorded = self._replayed(position, kind, args_json)
        self._position += 1
        if recorded is not None:
            return json.loads(recorded.answer_json)
        token = _QUIET.set(True)
        try:
            answer = compute()
        except BaseException:
            self._position -= 1
            raise
        finally:
            _QUIET.reset(token)
        self._unsent.append(pb.StepCall(position=position, kind=kind, args_json=args_json,
                                        answer_json=self._redact(json.dumps(answer))))
        return answer

    def _redact(self, text: str) -> str:
        """``text`` without the secrets the step read (as results are)."""
        for value in self._secret_values:
            text = text.replace(json.dumps(value)[1:-1], "[redacted]")
        return text

    def secret(self, ctx: Context, name: str) -> str:
        value = super().secret(ctx, name)
        if value:
            self._secret_values.add(value)
        return value

    def now_ns(self) -> int:
        """A clock read: the time the step's first run read here."""
        return self._answered_here("now", None, lambda: {"now_ms": _real_ms()})["now_ms"] \
            * 1_000_000

    def generator(self) -> random.Random:
        """The step's generator: seeded, at its first draw, by a recorded
        seed."""
        if self._random is None:
            seed = self._answered_here(
                "random", None, lambda: {"seed": int.from_bytes(os.urandom(8), "big")})["seed"]
            self._random = random.Random(seed)
        return self._random

    def http(self, method, url, headers, body):
        # The response is recorded: run again, the step gets it without
        # sending the request again.
        def send() -> dict:
            try:
                status, got, raw = LocalRuntime.http(self, method, url, headers, body)
            except HttpError as e:
                return {"error": str(e)}
            return {"status": status, "headers": [list(h) for h in got],
                    "body": base64.b64encode(raw).decode()}
        answer = self._answered_here("http", {"method": method, "url": url}, send)
        if "error" in answer:
            raise HttpError(answer["error"])
        return (answer["status"], [tuple(h) for h in answer["headers"]],
                base64.b64decode(answer["body"]))

    async def _record(self, kind: str, args: Any, answer: str | None = None
                      ) -> tuple[str, int | None]:
        """The answer (JSON) of the step's next durable call: the one its
        history recorded at this position (then no server time), or the
        server's as it records it now (with the server's clock)."""
        self._cut_output()
        position = self._position
        args_json = json.dumps(args)
        recorded = self._replayed(position, kind, args_json)
        self._position += 1
        if recorded is not None:
            return recorded.answer_json, None
        if self._client is None:
            raise CerebelumError("this worker runtime has no server to record calls with")
        request = pb.RecordCallRequest(token=self._state.task.token, position=position,
                                       kind=kind, args_json=args_json, before=self._unsent)
        if answer is not None:
            request.answer_json = answer
        quiet = _QUIET.set(True)
        try:
            reply = await self._send(kind, request)
        finally:
            _QUIET.reset(quiet)
        self._history.extend(self._unsent)
        self._unsent = []
        self._history.append(reply.call)
        return reply.call.answer_json, reply.now_ms

    async def _send(self, kind: str, request: pb.RecordCallRequest) -> pb.RecordCallResponse:
        assert self._client is not None
        failures = 0
        while True:
            try:
                return await self._client.call("RecordCall", request, timeout=30)
            except ServerError as e:
                if e.code in CLAIM_LOST:
                    # The claim expired or was taken back: this run's
                    # outcome is dropped, as for a refused heartbeat.
                    self._state.lost = True
                    raise asyncio.CancelledError() from None
                if e.code not in TRANSIENT or failures >= 5:
                    raise StepError(f"recording {kind} of step '{self._state.task.step}' "
                                    f"failed: {e}", "unavailable") from None
                failures += 1
                await asyncio.sleep(min(5.0, 0.2 * 2 ** failures))

    async def recorded(self, name, compute, what=None):
        self._cut_output()
        position = self._position
        if position < len(self._history):
            answer, _ = await self._record(name, None)
            return json.loads(answer)
        value = await compute()
        await self._record(name, None, to_json(value, what or f"the value recorded for {name}"))
        return value

    async def patched(self, patch_id):
        # As the engine answers it: true where the history recorded this
        # patch here, false where it holds another call (recorded by code
        # without the patch), true and recorded past the history.
        self._cut_output()
        position = self._position
        args = {"id": patch_id}
        if position < len(self._history):
            recorded = self._history[position]
            if recorded.kind != "patched" or json.loads(recorded.args_json or "null") != args:
                return False
        await self._record("patched", args, "true")
        return True

    async def call_step(self, step, env):
        # A poll whose check is a step: each check's result is recorded.
        async def check() -> Any:
            return await super(WorkerRuntime, self).call_step(step, env)
        return await self.recorded("poll-check", check, f"the result of step `{step.name}`")

    async def sleep(self, ms: int, data: Any = None) -> None:
        args: dict[str, Any] = {"duration_ms": ms}
        if data is not None:
            args["data"] = data
        answer, server_now = await self._record("sleep", args)
        due = json.loads(answer)["due_at_ms"]
        now = server_now if server_now is not None else _real_ms() + self._skew_ms
        remaining = due - now
        if remaining <= 0:
            return
        if remaining > self._state.task.hold_ms:
            raise _Suspend(due, "sleeps until "
                           + time.strftime("%H:%M:%S", time.localtime(due / 1000)))
        await asyncio.sleep(remaining / 1000)

    def progress(self, ctx: Context, percent: int, message: str) -> None:
        self._state.report(percent, message)

    async def child(self, ctx, workflow, inputs):
        raise CerebelumError(
            f"step `{ctx.step_name}` runs child workflow {workflow!r}, and it runs on an "
            "external worker: start children from a step that runs in the engine")

    async def signal(self, ctx, name, timeout_ms):
        # Durable: the server gives the step the next signal `name` the
        # execution received (`cerebelum signal`, the API); until one
        # comes, the task is handed back.
        answer, _ = await self._record("signal", {"name": name, "timeout_ms": timeout_ms})
        got = json.loads(answer)
        if "signal" in got:
            return got["signal"]
        if "timed_out" in got:
            raise SignalTimeoutError(f"no signal {name!r} came within {timeout_ms} ms")
        due = got.get("due_at_ms")
        raise _Suspend(_UNTIL_DECIDED if due is None else due, f"waits for signal {name!r}")

    def set_state(self, ctx, state):
        raise CerebelumError(
            f"step `{ctx.step_name}` sets the execution's state, and it runs on an external "
            "worker: set it from a step that runs in the engine")

    async def approval(self, ctx, approval_type, data, timeout_ms):
        if self.approval_handler is not None:
            # This worker answers approvals itself (as in local mode).
            return await super().approval(ctx, approval_type, data, timeout_ms)
        # Durable: the server opens the approval (`cerebelum approve ID
        # KEY`, the console) and the task is handed back until it is
        # decided or times out. One key per wait, as in the sandbox.
        n = self._approvals.get(approval_type, 0) + 1
        self._approvals[approval_type] = n
        key = approval_type if n == 1 else f"{approval_type}-{n}"
        answer, _ = await self._record("approval", {
            "key": key, "message": f"step {ctx.step_name} waits for approval {key!r}",
            "details": json.loads(to_json(data, "the approval's data")),
            "timeout_ms": timeout_ms})
        decided = json.loads(answer)
        if "approved" in decided:
            return {} if decided["approved"] is None else decided["approved"]
        if "rejected" in decided:
            raise ApprovalRejectedError(decided["rejected"])
        if "timed_out" in decided:
            raise ApprovalTimeoutError(f"approval {key!r} timed out after {timeout_ms} ms")
        if "cancelled" in decided:
            raise StepError(f"approval {key!r} was cancelled", "cancelled")
        due = decided.get("due_at_ms")
        raise _Suspend(_UNTIL_DECIDED if due is None else due,
                       f"waits for approval {key!r}")


def task_error(kind: str, message: str) -> pb.CompleteTaskRequest:
    """The outcome of a task that failed with ``kind`` and ``message``."""
    return pb.CompleteTaskRequest(error=pb.TaskError(kind=kind, message=message))


async def run_task_step(step: Step, input_json: str,
                        runtime: WorkerRuntime) -> pb.CompleteTaskRequest:
    """Runs ``step`` on a task's input as the package's ``run-step`` export
    does inside the engine; the outcome for CompleteTask (``result_json``
    or ``error`` set, and the calls answered here since the last one
    recorded, such as the step's last output; no token yet)."""
    outcome = await _run_step(step, input_json, runtime)
    outcome.before.extend(runtime.last_calls())
    return outcome


async def _run_step(step: Step, input_json: str,
                    runtime: WorkerRuntime) -> pb.CompleteTaskRequest:
    current = _CURRENT.set(runtime)
    try:
        env = json.loads(input_json)
        result = await invoke_step(step, env, runtime, runtime.attempt())
        if runtime.diverged is not None:
            raise runtime.diverged
    except Exception as e:
        if runtime.diverged is not None:
            e = runtime.diverged
        kind = e.kind if isinstance(e, StepError) else "exception"
        details = {"type": type(e).__name__, "traceback": traceback.format_exc(limit=8)}
        return pb.CompleteTaskRequest(error=pb.TaskError(
            kind=kind, message=exception_text(e), details_json=json.dumps(details)))
    finally:
        _CURRENT.reset(current)
    if env.get("poll") and "error" not in result and not result.get("ok"):
        # An engine poll's check: "not yet".
        return pb.CompleteTaskRequest(result_json="null")
    return pb.CompleteTaskRequest(result_json=json.dumps(result))


# ------------------------------------------------------------------- worker


class Worker:
    """Serves a worker queue: runs the steps of its tasks here.

    ``worker_id`` (default ``HOST:PID``) names it within the tenant;
    ``core_url`` is the server (default ``$CEREBELUM_SERVER``), ``api_key``
    the tenant's key (default ``$CEREBELUM_API_KEY``). ``concurrency``
    tasks run at once. Steps are those given to :meth:`register_step` /
    :meth:`register_workflow`, or, if none was, every ``@step`` defined in
    this process. While the server is unreachable it retries with
    exponential backoff (``reconnect_base_delay`` doubling up to
    ``reconnect_max_delay`` seconds; ``max_reconnect_attempts`` in a row,
    0 for no limit) unless ``auto_reconnect`` is false. ``poll_timeout``:
    seconds one poll waits for a task (at most 60);
    ``heartbeat_interval``: seconds between heartbeats of a running task
    (less if the server asks for more). ``language`` is informational.
    ``approval_handler`` and
    ``secrets`` answer ``wait_for_approval`` and ``context.secret`` as in
    local mode. ``capabilities`` (the original's ``Worker(...,
    capabilities=["python", "async"])``) is kept as ``self.capabilities``
    and is informational: tasks are routed by queue.
    """

    def __init__(self, worker_id: str | None = None, core_url: str | None = None,
                 language: str = "python", heartbeat_interval: float = 10.0,
                 poll_timeout: float = 30.0, auto_reconnect: bool = True,
                 max_reconnect_attempts: int = 0, reconnect_base_delay: float = 1.0,
                 reconnect_max_delay: float = 60.0, *, api_key: str | None = None,
                 queue: str = "default", concurrency: int = 1,
                 approval_handler: Callable | None = None, secrets: dict | None = None,
                 capabilities: list[str] | None = None):
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if not queue:
            raise ValueError("a worker needs a queue name")
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.language = language
        self.capabilities = list(capabilities or [])
        self.heartbeat_interval = heartbeat_interval
        self.poll_timeout = poll_timeout
        self.auto_reconnect = auto_reconnect
        self.max_reconnect_attempts = max_reconnect_attempts
        self.reconnect_base_delay = reconnect_base_delay
        self.reconnect_max_delay = reconnect_max_delay
        self.queue = queue
        self.concurrency = concurrency
        self.approval_handler = approval_handler
        self.secrets = secrets
        self._client = Client(core_url, api_key)
        self.core_url = self._client.url
        self._steps: dict[str, Step] = {}
        self._started = False
        self._stopping = False
        self._registered = False
        self._stop_event = asyncio.Event()
        self._hurry = asyncio.Event()
        self._stopped = asyncio.Event()
        self._slots: list[asyncio.Task] = []
        self._polls: set[asyncio.Future] = set()
        self._tasks: dict[str, _Task] = {}
        install_patches()

    # -- steps --------------------------------------------------------------

    def register_step(self, name: str, function: Callable | Step) -> None:
        """Serves step ``name`` with ``function`` (an ``@step`` or an
        ``async def f(context, inputs, ...)``)."""
        self._steps[name] = function if isinstance(function, Step) else Step(function, name=name)

    def register_workflow(self, workflow: WorkflowDefinition) -> None:
        """Serves every step ``workflow`` may run."""
        for name, s in workflow.steps().items():
            self._steps[name] = s

    def steps(self) -> dict[str, Step]:
        """The steps this worker serves, by name."""
        return dict(self._steps or STEPS)

    # -- running ------------------------------------------------------------

    async def start(self) -> None:
        """Registers, then serves the queue until :meth:`stop` (returns
        once stopped). Raises :class:`ServerError` when the server refuses
        the worker (e.g. ``UNAUTHENTICATED``) or stays unreachable beyond
        ``max_reconnect_attempts``."""
        if self._started:
            raise CerebelumError("this worker was started already")
        self._started = True
        try:
            await self._register()
            if not self._stopping:
                log.info("worker %s serves queue %r of %s, %d task(s) at a time; steps: %s",
                         self.worker_id, self.queue, self.core_url, self.concurrency,
                         ", ".join(sorted(self.steps())) or "none")
                self._slots = [asyncio.create_task(self._slot())
                               for _ in range(self.concurrency)]
                done, _ = await asyncio.wait(self._slots, return_when=asyncio.FIRST_EXCEPTION)
                failed = [t.exception() for t in done if not t.cancelled() and t.exception()]
                if failed:
                    raise failed[0]  # stopped below
        except asyncio.CancelledError:
            await self.stop(grace=0)
            raise
        except BaseException:
            await self.stop()
            raise
        await self._stopped.wait()

    async def stop(self, grace: float = 30.0) -> None:
        """Stops gracefully: no more polls; running steps get ``grace``
        seconds to finish, then are cancelled and their tasks handed back
        (ReleaseTask) for another worker; unregisters. Calling it again
        with ``grace=0`` cuts the wait short."""
        if self._stopping:
            if grace <= 0:
                self._hurry.set()
            if self._started:
                await self._stopped.wait()
            return
        self._stopping = True
        self._stop_event.set()
        for call in list(self._polls):
            call.cancel()
        running = [t for t in self._slots if not t.done()]
        if running:
            if self._tasks:
                log.info("stopping: waiting up to %g s for %d running step(s)", grace,
                         len(self._tasks))
            all_done = asyncio.ensure_future(asyncio.wait(running))
            hurry = asyncio.ensure_future(self._hurry.wait())
            await asyncio.wait([all_done, hurry], timeout=grace,
                               return_when=asyncio.FIRST_COMPLETED)
            all_done.cancel()
            hurry.cancel()
            running = [t for t in running if not t.done()]
        if running:
            for state in list(self._tasks.values()):
                state.released = True
                if state.runner is not None:
                    state.runner.cancel()
            _, running = await asyncio.wait(running, timeout=10)
            for t in running:
                t.cancel()
            await asyncio.gather(*running, return_exceptions=True)
        if self._registered:
            try:
                await self._client.call(
                    "UnregisterWorker", pb.UnregisterWorkerRequest(worker_id=self.worker_id),
                    timeout=5)
            except ServerError as e:
                log.warning("unregistering worker %s: %s", self.worker_id, e)
            log.info("worker %s stopped", self.worker_id)
        await self._client.close()
        self._stopped.set()

    def _backoff(self, failures: int) -> float:
        delay = min(self.reconnect_max_delay, self.reconnect_base_delay * 2 ** (failures - 1))
        return delay * random.uniform(0.8, 1.0)

    async def _reconnect_wait(self, failures: int, error: ServerError) -> None:
        """Waits before trying again after a transient error, or raises it."""
        if not self.auto_reconnect:
            raise error
        if self.max_reconnect_attempts and failures > self.max_reconnect_attempts:
            raise ServerError(f"{error} (gave up after {self.max_reconnect_attempts} "
                              "attempts to reconnect)", error.code, error.details)
        delay = self._backoff(failures)
        log.warning("%s; trying again in %.1f s", error, delay)
        await _wait_event(self._stop_event, delay)

    async def _register(self) -> None:
        failures = 0
        while not self._stopping:
            try:
                await self._client.call("RegisterWorker", pb.RegisterWorkerRequest(
                    worker_id=self.worker_id, queue=self.queue, host=socket.gethostname(),
                    max_tasks=self.concurrency))
                self._registered = True
                return
            except ServerError as e:
                if e.code not in TRANSIENT:
                    raise
                failures += 1
                await self._reconnect_wait(failures, e)

    async def _slot(self) -> None:
        """One task at a time: poll, run, complete (a completion also
        claims the next task queued, if any: no poll between busy tasks)."""
        wait_ms = max(1, min(60_000, int(self.poll_timeout * 1000)))
        failures = 0
        task: pb.WorkerTask | None = None
        while True:
            if task is not None:
                if self._stopping:
                    await self._release(task, f"step {task.step} of execution "
                                              f"{task.execution_id}")
                    return
                task = await self._serve(task)
                continue
            if self._stopping:
                return
            call = asyncio.ensure_future(self._client.call(
                "PollTask", pb.PollTaskRequest(worker_id=self.worker_id, queue=self.queue,
                                               wait_ms=wait_ms), timeout=wait_ms / 1000 + 15))
            self._polls.add(call)
            try:
                reply = await call
            except asyncio.CancelledError:
                if self._stopping:
                    return
                raise
            except ServerError as e:
                if e.code not in TRANSIENT:
                    raise
                failures += 1
                await self._reconnect_wait(failures, e)
                continue
            finally:
                self._polls.discard(call)
            if failures:
                log.info("reached the server at %s again", self.core_url)
                failures = 0
                await self._register()  # it may have lost track of us
            task = optional(reply, "task")

    async def _serve(self, task: pb.WorkerTask) -> pb.WorkerTask | None:
        """Runs ``task`` and completes it; the next task, if the completion
        claimed one."""
        token, name = task.token, task.step
        where = f"step {name} of execution {task.execution_id} (attempt {task.attempt})"
        steps = self.steps()
        step = steps.get(name)
        if step is None:
            log.warning("%s: this worker has no such step", where)
            return await self._complete(task, where, task_error(
                "unknown-step", f"worker {self.worker_id} (queue {self.queue!r}) has no step "
                f"`{name}` (it has: {', '.join(sorted(steps)) or 'none'})"))
        log.info("running %s", where)
        state = _Task(task)
        runtime = WorkerRuntime(state, self.approval_handler, self.secrets, self._client)
        state.runner = asyncio.create_task(run_task_step(step, task.input_json, runtime))
        self._tasks[token] = state
        beats = asyncio.create_task(self._heartbeats(state, where))
        try:
            outcome = await state.runner
        except _Suspend as suspended:
            await self._release(task, where, suspended.resume_at_ms, suspended.why)
            return None
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and getattr(current, "cancelling", lambda: 0)():
                raise  # this worker is being torn down
            if state.released:
                await self._release(task, where)
                return None
            if state.lost:
                return None
            outcome = task_error("cancelled", "the execution was cancelled"
                                 if state.cancel_requested else "the step was cancelled")
        finally:
            beats.cancel()
            self._tasks.pop(token, None)
        if state.lost:
            return None
        if state.cancel_requested:
            outcome = task_error("cancelled", "the execution was cancelled")
        return await self._complete(task, where, outcome)

    async def _heartbeats(self, state: _Task, where: str) -> None:
        interval = self.heartbeat_interval
        if state.task.heartbeat_ms:
            interval = min(interval, state.task.heartbeat_ms / 3000)
        while True:
            await _wait_event(state.wake, interval)
            if state.runner.done():
                return  # its completion follows
            state.wake.clear()
            progress, state.progress = state.progress, None
            request = pb.HeartbeatRequest(token=state.task.token)
            if progress is not None:
                request.progress_json = json.dumps(progress)
            try:
                reply = await self._client.call("Heartbeat", request, timeout=10)
            except ServerError as e:
                if state.runner.done():
                    return
                if e.code in CLAIM_LOST:
                    log.warning("%s: the server refused its heartbeat (%s); stopping the "
                                "step and dropping its outcome", where, e.details)
                    state.lost = True
                    state.runner.cancel()
                    return
                log.warning("%s: heartbeat failed: %s", where, e)
                state.progress = state.progress or progress
                continue
            if reply.cancel_requested:
                log.info("%s: the execution was cancelled; stopping the step", where)
                state.cancel_requested = True
                state.runner.cancel()
                return

    async def _complete(self, task: pb.WorkerTask, where: str,
                        outcome: pb.CompleteTaskRequest) -> pb.WorkerTask | None:
        """CompleteTask with ``outcome``, retried while the server is
        unreachable; the next task it claimed for this worker, if any."""
        request = pb.CompleteTaskRequest(token=task.token)
        request.MergeFrom(outcome)
        if not self._stopping:
            request.next.CopyFrom(pb.NextTask(worker_id=self.worker_id, queue=self.queue))
        failures = 0
        while True:
            try:
                reply = await self._client.call("CompleteTask", request)
                if request.WhichOneof("outcome") == "error":
                    log.info("%s failed: %s: %s", where, request.error.kind,
                             request.error.message)
                return optional(reply, "task")
            except ServerError as e:
                if e.code in CLAIM_LOST:
                    log.warning("%s: the server no longer takes its outcome (%s); dropped",
                                where, e.details)
                    return None
                # A retry claims nothing: a next task claimed for a call
                # whose answer was lost waits for its claim to expire.
                request.ClearField("next")
                if e.code in TRANSIENT:
                    failures += 1
                    delay = self._backoff(failures)
                    log.warning("%s: completing it: %s; trying again in %.1f s", where, e, delay)
                    await asyncio.sleep(delay)
                    continue
                if request.WhichOneof("outcome") == "result_json" and e.code in (
                        "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"):
                    request = task_error(
                        "payload" if e.code == "RESOURCE_EXHAUSTED" else "invalid-output",
                        f"the server refused the step's result: {e.details}")
                    request.token = task.token
                    continue
                log.error("%s: completing it failed: %s", where, e)
                return None

    async def _release(self, task: pb.WorkerTask, where: str,
                       resume_at_ms: int | None = None, why: str = "") -> None:
        """Hands ``task`` back: at once (this worker is stopping), or until
        ``resume_at_ms`` (its step sleeps or waits for a decision, which
        is recorded; the step runs again then, on whichever worker takes
        it)."""
        request = pb.ReleaseTaskRequest(token=task.token)
        if resume_at_ms is not None:
            request.resume_at_ms = resume_at_ms
        failures = 0
        while True:
            try:
                await self._client.call("ReleaseTask", request, timeout=5)
                break
            except ServerError as e:
                if resume_at_ms is not None and e.code in TRANSIENT and failures < 5:
                    failures += 1
                    await asyncio.sleep(self._backoff(failures))
                    continue
                # Unreleased, the task comes back when its claim expires.
                log.warning("%s: handing it back: %s", where, e)
                return
        if resume_at_ms is None:
            log.info("%s: handed back (the worker is stopping)", where)
        else:
            log.info("%s: %s; handed back until then", where, why)
