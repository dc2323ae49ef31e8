"""External workers: the steps of a Cerebelum worker queue run here, in
this CPython process, instead of in the engine's sandbox.

An execution started with a worker queue (``cerebelum start PACKAGE
WORKFLOW --worker-queue Q``) runs its workflow code in the engine and
every step as a task on queue ``Q``. A :class:`Worker` long-polls the
queue (gRPC service ``cerebelum.v1.WorkerService``), runs each task's step
as the package's ``run-step`` export would, heartbeats while it runs and
completes the task with the step's result or error::

    python -m cerebelum worker app.py --queue Q --server http://127.0.0.1:7433

:class:`DistributedExecutor` (and ``await wf.execute(inputs,
distributed=True)``) builds and uploads the workflow's file, starts an
execution on a fresh queue and serves that queue from this process until
the execution ends.

Needs ``grpcio`` (``pip install 'cerebelum[worker]'``); it is imported
only when a server is called, so that this module stays importable where
grpc does not exist (inside a package built by ``cerebelum build``).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import os
import random
import re
import signal
import socket
import sys
import traceback
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from . import _dsl, _wire
from ._dsl import Step, Workflow
from ._local import LocalRuntime
from ._runtime import (Context, ExecutionResult, exception_text, failure, invoke_step, iso_time,
                       to_json)
from .errors import CerebelumError, StepError

log = logging.getLogger("cerebelum.worker")

#: The RPCs used here: service, request and response message.
_RPCS = {
    "UploadPackage": ("Cerebelum", "UploadPackageRequest", "Package"),
    "StartExecution": ("Cerebelum", "StartExecutionRequest", "StartExecutionResponse"),
    "GetExecution": ("Cerebelum", "GetExecutionRequest", "Execution"),
    "Cancel": ("Cerebelum", "CancelRequest", "Execution"),
    "Signal": ("Cerebelum", "SignalRequest", "SignalResponse"),
    "RegisterWorker": ("WorkerService", "RegisterWorkerRequest", "RegisterWorkerResponse"),
    "PollTask": ("WorkerService", "PollTaskRequest", "PollTaskResponse"),
    "Heartbeat": ("WorkerService", "HeartbeatRequest", "HeartbeatResponse"),
    "CompleteTask": ("WorkerService", "CompleteTaskRequest", "CompleteTaskResponse"),
    "ReleaseTask": ("WorkerService", "ReleaseTaskRequest", "ReleaseTaskResponse"),
    "UnregisterWorker": ("WorkerService", "UnregisterWorkerRequest",
                         "UnregisterWorkerResponse"),
    "ListWorkers": ("WorkerService", "ListWorkersRequest", "ListWorkersResponse"),
}
#: ExecutionStatus values by number.
STATUSES = ("unspecified", "pending", "running", "waiting", "completed", "failed", "cancelled")
TERMINAL = ("completed", "failed", "cancelled")


def status_name(value: int) -> str:
    """The name of an ExecutionStatus value (``completed``, ...)."""
    return STATUSES[value] if 0 <= value < len(STATUSES) else str(value)
#: Errors a server that is restarting (or briefly unreachable) gives.
TRANSIENT = ("UNAVAILABLE", "DEADLINE_EXCEEDED")
#: The claim of a task is gone: its result must be dropped.
CLAIM_LOST = ("FAILED_PRECONDITION", "NOT_FOUND")


class ServerError(CerebelumError):
    """A call to the Cerebelum server failed. ``code`` is the gRPC status
    name (``UNAVAILABLE``, ``UNAUTHENTICATED``, ``FAILED_PRECONDITION``,
    ...), ``details`` the server's own message."""

    def __init__(self, message: str, code: str, details: str = ""):
        super().__init__(message)
        self.code = code
        self.details = details


def _grpc():
    try:
        import grpc
        import grpc.aio  # noqa: F401
    except ImportError:
        raise CerebelumError(
            f"grpcio is not installed for {sys.executable}: python -m pip install "
            "'grpcio>=1.60' (or the SDK with its worker extra, 'cerebelum[worker]')") from None
    return grpc


def parse_server(url: str) -> tuple[str, bool]:
    """The ``host:port`` gRPC target of a server URL (``http://HOST:PORT``,
    ``https://HOST:PORT`` or ``HOST:PORT``) and whether it speaks TLS."""
    scheme, sep, rest = url.strip().partition("://")
    if not sep:
        scheme, rest = "http", url.strip()
    if scheme.lower() not in ("http", "https"):
        raise CerebelumError(f"server {url}: unknown scheme {scheme!r}; use http://HOST:PORT "
                             "(e.g. http://127.0.0.1:7433) or https://HOST:PORT")
    tls = scheme.lower() == "https"
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if authority.startswith("["):
        host, _, port = authority[1:].partition("]")
        port = port.removeprefix(":")
        host = f"[{host}]"
    else:
        host, _, port = authority.partition(":")
    if not host or host == "[]":
        raise CerebelumError(f"server {url}: no host; use http://HOST:PORT")
    if port and not port.isdigit():
        raise CerebelumError(f"server {url}: the port {port!r} is not a number")
    return f"{host}:{port or (443 if tls else 80)}", tls


def server_target(url: str) -> str:
    """The ``host:port`` gRPC target of a server URL (see :func:`parse_server`)."""
    return parse_server(url)[0]


def _read_pem(path: str | None, what: str) -> bytes | None:
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise CerebelumError(f"cannot read the {what} {path}: {e.strerror}") from None


class Client:
    """The calls of the Cerebelum API that workers and the distributed
    executor make, over a ``grpc.aio`` channel (opened on the first call,
    in the running event loop).

    ``server`` defaults to ``$CEREBELUM_SERVER``, ``api_key`` to
    ``$CEREBELUM_API_KEY``; ``timeout`` bounds each call (seconds). An
    ``https://`` server is spoken to over TLS: its certificate is checked
    against ``ca_cert`` (a PEM file; default ``$CEREBELUM_CA_CERT``, else
    the system's roots); ``client_cert``/``client_key`` (default
    ``$CEREBELUM_CLIENT_CERT``/``$CEREBELUM_CLIENT_KEY``) for a server that
    requires client certificates, as the ``cerebelum`` CLI's flags."""

    def __init__(self, server: str | None = None, api_key: str | None = None,
                 timeout: float = 30.0, *, ca_cert: str | None = None,
                 client_cert: str | None = None, client_key: str | None = None):
        server = server or os.environ.get("CEREBELUM_SERVER")
        if not server:
            raise CerebelumError(
                "no Cerebelum server given: pass its URL (e.g. --server "
                "http://127.0.0.1:7433) or set CEREBELUM_SERVER")
        self.url = server
        self.target, self.tls = parse_server(server)
        env = os.environ.get
        self._tls_files = (ca_cert or env("CEREBELUM_CA_CERT"),
                           client_cert or env("CEREBELUM_CLIENT_CERT"),
                           client_key or env("CEREBELUM_CLIENT_KEY"))
        if not self.tls and any(self._tls_files):
            raise CerebelumError(
                f"server {server}: a CA or client certificate was given, but the URL is not "
                "https:// (nothing was sent)")
        if bool(self._tls_files[1]) != bool(self._tls_files[2]):
            raise CerebelumError("a client certificate and its key go together: give both, "
                                 "or neither")
        key = api_key if api_key is not None else os.environ.get("CEREBELUM_API_KEY")
        key = (key or "").strip()
        self._metadata = (("authorization", f"Bearer {key}"),) if key else ()
        self.timeout = timeout
        self._channel: Any = None
        self._stubs: dict[str, Any] = {}

    def _stub(self, rpc: str):
        stub = self._stubs.get(rpc)
        if stub is None:
            grpc = _grpc()
            if self._channel is None:
                options = [
                    # Reconnect soon after a server restart (the default
                    # waits up to two minutes).
                    ("grpc.initial_reconnect_backoff_ms", 250),
                    ("grpc.min_reconnect_backoff_ms", 250),
                    ("grpc.max_reconnect_backoff_ms", 2000),
                    ("grpc.enable_http_proxy", 0),
                    ("grpc.max_receive_message_length", 64 << 20),
                ]
                if self.tls:
                    ca, cert, key = self._tls_files
                    credentials = grpc.ssl_channel_credentials(
                        root_certificates=_read_pem(ca, "CA certificate"),
                        private_key=_read_pem(key, "client key"),
                        certificate_chain=_read_pem(cert, "client certificate"))
                    self._channel = grpc.aio.secure_channel(self.target, credentials,
                                                            options=options)
                else:
                    self._channel = grpc.aio.insecure_channel(self.target, options=options)
            service, request, response = _RPCS[rpc]
            stub = self._channel.unary_unary(
                f"/cerebelum.v1.{service}/{rpc}",
                request_serializer=lambda value, m=request: _wire.encode(m, value),
                response_deserializer=lambda data, m=response: _wire.decode(m, data))
            self._stubs[rpc] = stub
        return stub

    async def call(self, rpc: str, request: dict, timeout: float | None = None) -> dict:
        """Calls ``rpc`` (a name of :data:`_RPCS`); its response as a dict.
        Raises :class:`ServerError`."""
        stub = self._stub(rpc)
        grpc = _grpc()
        timeout = self.timeout if timeout is None else timeout
        try:
            return await stub(request, metadata=self._metadata, timeout=timeout)
        except grpc.aio.AioRpcError as e:
            raise self._error(rpc, e.code().name, e.details() or "", timeout) from None

    async def signal(self, execution_id: str, name: str, payload: Any = None,
                     signal_id: str | None = None) -> dict:
        """Sends signal ``name`` with ``payload`` (JSON) to an execution, as
        ``cerebelum signal`` does: stored at once and taken by the
        workflow's next ``wait_for_signal(name)``. With a ``signal_id`` sent
        before, nothing is sent again. ``{"seq": n, "created": bool}``."""
        reply = await self.call("Signal", {
            "id": execution_id, "name": name,
            "payload_json": to_json(payload, "the signal payload"),
            "signal_id": signal_id or ""})
        return {"seq": reply["signal"]["seq"], "created": reply.get("created", False)}

    def _error(self, rpc: str, code: str, details: str, timeout: float) -> ServerError:
        if code == "UNAVAILABLE":
            text = (f"cannot reach the Cerebelum server at {self.url} ({details}): is "
                    "`cerebelum serve` running and listening there (--listen)?")
            if self.tls:
                text += (" Is its certificate signed by a CA this client trusts (--ca-cert "
                         "or CEREBELUM_CA_CERT)?")
        elif code == "UNAUTHENTICATED":
            text = f"the server at {self.url} refused the API key: {details}"
            if "CEREBELUM_API_KEY" not in details:
                text += " (pass --api-key / api_key=..., or set CEREBELUM_API_KEY)"
        elif code == "DEADLINE_EXCEEDED":
            text = f"{rpc}: the server at {self.url} did not answer within {timeout:g} s"
        else:
            text = f"{rpc} failed ({code}): {details}"
        return ServerError(text, code, details)

    async def close(self) -> None:
        """Closes the channel (a later call opens another)."""
        channel, self._channel, self._stubs = self._channel, None, {}
        if channel is not None:
            await channel.close()


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

    def __init__(self, task: dict):
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


class WorkerRuntime(LocalRuntime):
    """Local mode for one task: the task's execution id and attempt;
    ``progress`` goes to the engine with a heartbeat."""

    def __init__(self, state: _Task, approval_handler: Callable | None,
                 secrets: dict | None):
        super().__init__(state.task["execution_id"], approval_handler, secrets)
        self._state = state

    def attempt(self) -> int:
        return self._state.task["attempt"] or 1

    def progress(self, ctx: Context, percent: int, message: str) -> None:
        self._state.report(percent, message)

    async def child(self, ctx, workflow, inputs):
        raise CerebelumError(
            f"step `{ctx.step_name}` runs child workflow {workflow!r}, and it runs on an "
            "external worker: start children from a step that runs in the engine")

    async def signal(self, ctx, name, timeout_ms):
        raise CerebelumError(
            f"step `{ctx.step_name}` waits for signal {name!r}, and it runs on an external "
            "worker: signals reach code in the engine only. Wait for the signal in a step "
            "that runs in the engine (not placed on a worker queue), and pass its payload on")

    def set_state(self, ctx, state):
        raise CerebelumError(
            f"step `{ctx.step_name}` sets the execution's state, and it runs on an external "
            "worker: set it from a step that runs in the engine")

    async def approval(self, ctx, approval_type, data, timeout_ms):
        if self.approval_handler is None:
            raise CerebelumError(
                f"step `{ctx.step_name}` waits for approval {approval_type!r}, and it runs on "
                "an external worker, which asks the approval_handler it was given "
                "(Worker(..., approval_handler=fn)); this worker has none. Approvals are "
                "durable only in steps that run inside the engine")
        return await super().approval(ctx, approval_type, data, timeout_ms)


async def run_task_step(step: Step, input_json: str, runtime: WorkerRuntime) -> dict:
    """Runs ``step`` on a task's input as the package's ``run-step`` export
    does inside the engine; the outcome for CompleteTask: ``{"result_json":
    ...}`` or ``{"error": {"kind", "message", "details_json"}}``."""
    try:
        env = json.loads(input_json)
        result = await invoke_step(step, env, runtime, runtime.attempt())
    except Exception as e:
        kind = e.kind if isinstance(e, StepError) else "exception"
        details = {"type": type(e).__name__, "traceback": traceback.format_exc(limit=8)}
        return {"error": {"kind": kind, "message": exception_text(e),
                          "details_json": json.dumps(details)}}
    if env.get("poll") and "error" not in result and not result.get("ok"):
        return {"result_json": "null"}  # an engine poll's check: "not yet"
    return {"result_json": json.dumps(result)}


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
    local mode.
    """

    def __init__(self, worker_id: str | None = None, core_url: str | None = None,
                 language: str = "python", heartbeat_interval: float = 10.0,
                 poll_timeout: float = 30.0, auto_reconnect: bool = True,
                 max_reconnect_attempts: int = 0, reconnect_base_delay: float = 1.0,
                 reconnect_max_delay: float = 60.0, *, api_key: str | None = None,
                 queue: str = "default", concurrency: int = 1,
                 approval_handler: Callable | None = None, secrets: dict | None = None):
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if not queue:
            raise ValueError("a worker needs a queue name")
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.language = language
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

    # -- steps --------------------------------------------------------------

    def register_step(self, name: str, function: Callable | Step) -> None:
        """Serves step ``name`` with ``function`` (an ``@step`` or an
        ``async def f(context, inputs, ...)``)."""
        self._steps[name] = function if isinstance(function, Step) else Step(function, name=name)

    def register_workflow(self, workflow: Workflow) -> None:
        """Serves every step ``workflow`` may run."""
        for name, s in workflow.steps().items():
            self._steps[name] = s

    def steps(self) -> dict[str, Step]:
        """The steps this worker serves, by name."""
        return dict(self._steps or _dsl.STEPS)

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
                await self._client.call("UnregisterWorker", {"worker_id": self.worker_id},
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
                await self._client.call("RegisterWorker", {
                    "worker_id": self.worker_id, "queue": self.queue,
                    "host": socket.gethostname(), "max_tasks": self.concurrency})
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
        task: dict | None = None
        while True:
            if task is not None:
                if self._stopping:
                    await self._release(task, f"step {task['step']} of execution "
                                              f"{task['execution_id']}")
                    return
                task = await self._serve(task)
                continue
            if self._stopping:
                return
            call = asyncio.ensure_future(self._client.call(
                "PollTask", {"worker_id": self.worker_id, "queue": self.queue,
                             "wait_ms": wait_ms}, timeout=wait_ms / 1000 + 15))
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
            task = reply["task"]

    async def _serve(self, task: dict) -> dict | None:
        """Runs ``task`` and completes it; the next task, if the completion
        claimed one."""
        token, name = task["token"], task["step"]
        where = f"step {name} of execution {task['execution_id']} (attempt {task['attempt']})"
        steps = self.steps()
        step = steps.get(name)
        if step is None:
            log.warning("%s: this worker has no such step", where)
            return await self._complete(task, where, {"error": {
                "kind": "unknown-step",
                "message": f"worker {self.worker_id} (queue {self.queue!r}) has no step "
                           f"`{name}` (it has: {', '.join(sorted(steps)) or 'none'})"}})
        log.info("running %s", where)
        state = _Task(task)
        runtime = WorkerRuntime(state, self.approval_handler, self.secrets)
        state.runner = asyncio.create_task(run_task_step(step, task["input_json"], runtime))
        self._tasks[token] = state
        beats = asyncio.create_task(self._heartbeats(state, where))
        try:
            outcome = await state.runner
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and getattr(current, "cancelling", lambda: 0)():
                raise  # this worker is being torn down
            if state.released:
                await self._release(task, where)
                return None
            if state.lost:
                return None
            outcome = {"error": {"kind": "cancelled", "message": "the execution was cancelled"
                                 if state.cancel_requested else "the step was cancelled"}}
        finally:
            beats.cancel()
            self._tasks.pop(token, None)
        if state.lost:
            return None
        if state.cancel_requested:
            outcome = {"error": {"kind": "cancelled", "message": "the execution was cancelled"}}
        return await self._complete(task, where, outcome)

    async def _heartbeats(self, state: _Task, where: str) -> None:
        interval = self.heartbeat_interval
        if state.task["heartbeat_ms"]:
            interval = min(interval, state.task["heartbeat_ms"] / 3000)
        while True:
            await _wait_event(state.wake, interval)
            if state.runner.done():
                return  # its completion follows
            state.wake.clear()
            progress, state.progress = state.progress, None
            request = {"token": state.task["token"],
                       "progress_json": None if progress is None else json.dumps(progress)}
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
            if reply["cancel_requested"]:
                log.info("%s: the execution was cancelled; stopping the step", where)
                state.cancel_requested = True
                state.runner.cancel()
                return

    async def _complete(self, task: dict, where: str, outcome: dict) -> dict | None:
        """CompleteTask, retried while the server is unreachable; the next
        task it claimed for this worker, if any."""
        request = {"token": task["token"], **outcome}
        if not self._stopping:
            request["next"] = {"worker_id": self.worker_id, "queue": self.queue}
        failures = 0
        while True:
            try:
                reply = await self._client.call("CompleteTask", request)
                if "error" in request:
                    log.info("%s failed: %s: %s", where, request["error"]["kind"],
                             request["error"]["message"])
                return reply["task"]
            except ServerError as e:
                if e.code in CLAIM_LOST:
                    log.warning("%s: the server no longer takes its outcome (%s); dropped",
                                where, e.details)
                    return None
                # A retry claims nothing: a next task claimed for a call
                # whose answer was lost waits for its claim to expire.
                request.pop("next", None)
                if e.code in TRANSIENT:
                    failures += 1
                    delay = self._backoff(failures)
                    log.warning("%s: completing it: %s; trying again in %.1f s", where, e, delay)
                    await asyncio.sleep(delay)
                    continue
                if "result_json" in request and e.code in ("INVALID_ARGUMENT",
                                                           "RESOURCE_EXHAUSTED"):
                    request = {"token": task["token"], "error": {
                        "kind": "payload" if e.code == "RESOURCE_EXHAUSTED" else "invalid-output",
                        "message": f"the server refused the step's result: {e.details}"}}
                    continue
                log.error("%s: completing it failed: %s", where, e)
                return None

    async def _release(self, task: dict, where: str) -> None:
        try:
            await self._client.call("ReleaseTask", {"token": task["token"]}, timeout=5)
            log.info("%s: handed back (the worker is stopping)", where)
        except ServerError as e:
            log.warning("%s: handing it back: %s", where, e)


# ------------------------------------------------------ distributed executor


def cache_dir() -> Path:
    """Where built packages are kept: ``$CEREBELUM_CACHE_DIR/python-packages``
    or ``~/.cache/cerebelum/python-packages``."""
    base = os.environ.get("CEREBELUM_CACHE_DIR")
    root = Path(base) if base else Path.home() / ".cache" / "cerebelum"
    return root / "python-packages"


def build_package(source: Path) -> Path:
    """``source`` built into a package (``cerebelum.build``), cached by the
    SHA-256 of the file and of the SDK (modules it imports besides are not
    part of the key)."""
    from .build import BuildError, build

    sdk = Path(__file__).resolve().parent
    digest = hashlib.sha256(source.read_bytes())
    for f in sorted(sdk.glob("*.py")) + sorted(sdk.glob("wit/*.wit")):
        digest.update(f.name.encode() + b"\0" + f.read_bytes())
    out = cache_dir() / f"{source.stem}-{digest.hexdigest()[:32]}.wasm"
    if out.is_file():
        return out
    log.info("building %s into a package (cached in %s)", source, out.parent)
    # Built aside, then linked into place: of two processes building the
    # same file at once, the first to finish wins and both use its bytes
    # (componentize-py's output differs from build to build, and another
    # sha256 would be another package version).
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f"{out.stem}.{os.getpid()}.partial.wasm")
    try:
        build(source, partial, quiet=True)
        try:
            os.link(partial, out)
        except FileExistsError:
            pass
    except BuildError as e:
        raise CerebelumError(f"building {source.name} into a package for the server "
                             f"failed: {e}") from None
    finally:
        partial.unlink(missing_ok=True)
    return out


def _source_of(workflow: Workflow) -> Path:
    import inspect
    source = inspect.getsourcefile(workflow.fn)
    if source is None or not Path(source).is_file():
        raise CerebelumError(f"workflow `{workflow.name}` was not defined in a file, so it "
                             "cannot be built into a package: define it in a .py file")
    return Path(source).resolve()


def _datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def execution_result(execution: dict) -> ExecutionResult:
    """An Execution message as the :class:`ExecutionResult` local mode
    gives; raises the :class:`ExecutionError` local mode raises when the
    execution failed."""
    status = status_name(execution["status"])
    ran: Any = None
    error = step = step_error = None
    if execution["result_json"] is not None:
        ran = json.loads(execution["result_json"])
    if execution["error_json"]:
        err = json.loads(execution["error_json"])
        error = err.get("message") or json.dumps(err)
        ran = err.get("details")
        if isinstance(ran, dict):
            step, step_error = ran.get("step"), ran.get("step_error")
    if not (isinstance(ran, dict) and "steps" in ran):
        ran = {"output": None, "steps": {}}
    result = ExecutionResult(execution_id=execution["id"], status=status,
                             output=ran.get("output"), error=error,
                             started_at=iso_time(_datetime(execution["created_at_ms"])),
                             completed_at=iso_time(_datetime(execution["updated_at_ms"])),
                             steps=ran["steps"])
    if status != "completed":
        raise failure(result, step, step_error)
    return result


class DistributedExecutor:
    """Runs workflows in a Cerebelum server, their steps in this process.

    :meth:`execute` builds the workflow's file into a package (cached),
    uploads it (the same bytes give the existing version), starts an
    execution on a fresh worker queue and serves that queue with an
    in-process :class:`Worker` until the execution ends. ``core_url`` and
    ``api_key`` default to ``$CEREBELUM_SERVER`` and ``$CEREBELUM_API_KEY``;
    ``timeout`` bounds each call to the server (seconds), not the run.
    """

    def __init__(self, core_url: str | None = None, worker_id: str = "python-executor",
                 timeout: float = 30.0, api_key: str | None = None, *,
                 max_reconnect_attempts: int = 0, reconnect_max_delay: float = 60.0):
        self._client = Client(core_url, api_key, timeout)
        self.core_url = self._client.url
        self.worker_id = worker_id
        self.timeout = timeout
        self._api_key = api_key
        self.max_reconnect_attempts = max_reconnect_attempts
        self.reconnect_max_delay = reconnect_max_delay

    async def execute(self, workflow: Workflow | str, input_data: Any = None, *,
                      approval_handler: Callable | None = None,
                      secrets: dict | None = None) -> ExecutionResult:
        """Runs ``workflow`` (a :class:`Workflow` or its name) on
        ``input_data``; its :class:`ExecutionResult`."""
        wf = _dsl.find_workflow(workflow)
        input_json = to_json(input_data, "the workflow input")
        source = _source_of(wf)
        package = await asyncio.to_thread(build_package, source)
        client = self._client
        try:
            uploaded = await client.call(
                "UploadPackage", {"name": source.stem, "wasm": package.read_bytes()},
                timeout=max(self.timeout, 300))
            queue = f"py-{uuid.uuid4().hex}"
            started = await client.call("StartExecution", {
                "package": uploaded["name"], "version": uploaded["version"],
                "workflow": wf.name, "input_json": input_json, "worker_queue": queue})
            execution = started["execution"]
            log.info("execution %s of %s v%d runs its steps here (queue %s)", execution["id"],
                     uploaded["name"], uploaded["version"], queue)
            worker = Worker(f"{self.worker_id}-{queue[3:15]}", self.core_url,
                            max_reconnect_attempts=self.max_reconnect_attempts,
                            reconnect_max_delay=self.reconnect_max_delay,
                            api_key=self._api_key, queue=queue, concurrency=4,
                            approval_handler=approval_handler, secrets=secrets)
            worker.register_workflow(wf)
            serving = asyncio.create_task(worker.start())
            try:
                execution = await self._wait(execution, serving)
            except BaseException:
                await self._cancel(execution["id"])
                raise
            finally:
                await worker.stop(grace=5)
                await asyncio.gather(serving, return_exceptions=True)
            return execution_result(execution)
        finally:
            await client.close()

    async def _wait(self, execution: dict, serving: asyncio.Task) -> dict:
        """Polls GetExecution (every 100 ms) until the execution ended."""
        failures = 0
        while status_name(execution["status"]) not in TERMINAL:
            if serving.done():
                serving.result()  # the worker's error
                raise CerebelumError("the in-process worker stopped before the execution ended")
            await asyncio.sleep(0.1)
            try:
                execution = await self._client.call("GetExecution", {"id": execution["id"]})
                failures = 0
            except ServerError as e:
                if e.code not in TRANSIENT:
                    raise
                failures += 1
                delay = min(5.0, 0.2 * 2 ** failures)
                log.warning("%s; trying again in %.1f s", e, delay)
                await asyncio.sleep(delay)
        return execution

    async def _cancel(self, execution_id: str) -> None:
        """Best effort: nobody will serve the execution's queue any more."""
        try:
            await self._client.call("Cancel", {"id": execution_id}, timeout=5)
            log.warning("execution %s cancelled: its run here was interrupted", execution_id)
        except (ServerError, asyncio.CancelledError) as e:
            log.warning("cancelling execution %s: %s", execution_id, e)


# ---------------------------------------------------------------------- CLI


def import_steps(source: Path) -> list[str]:
    """Imports the Python file ``source`` (its ``@step`` functions register
    themselves); the names of every step now defined."""
    from .build import _user_frame, import_source
    from .errors import WorkflowDefinitionError

    source = source.resolve()
    if not source.is_file():
        raise CerebelumError(f"{source}: no such file")
    if source.suffix != ".py":
        raise CerebelumError(f"{source}: expected a Python file (.py)")
    try:
        compile(source.read_text(encoding="utf-8"), str(source), "exec")
    except SyntaxError as e:
        raise CerebelumError(f"{source}:{e.lineno}:{e.offset or 0}: syntax error: "
                             f"{e.msg}") from None
    try:
        import_source(source)
    except WorkflowDefinitionError as e:
        where = _user_frame(traceback.format_exc(), source) or str(source)
        raise CerebelumError(f"{where}: {e}") from None
    except Exception as e:
        where = _user_frame(traceback.format_exc(), source) or str(source)
        raise CerebelumError(f"{where}: importing the file failed: {type(e).__name__}: "
                             f"{e}") from None
    if not _dsl.STEPS:
        raise CerebelumError(f"{source}: defines no step: decorate an `async def` with @step")
    return sorted(_dsl.STEPS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m cerebelum worker``."""
    parser.add_argument("file", type=Path, metavar="FILE.py",
                        help="the Python file whose @step functions this worker runs")
    parser.add_argument("--queue", required=True,
                        help="the worker queue to serve (what `cerebelum start ... "
                        "--worker-queue QUEUE` names)")
    parser.add_argument("--concurrency", type=int, default=1, metavar="N",
                        help="tasks to run at once (default 1)")
    parser.add_argument("--server", metavar="URL",
                        help="the server, http://HOST:PORT or https://HOST:PORT "
                        "(default: $CEREBELUM_SERVER)")
    parser.add_argument("--ca-cert", metavar="FILE",
                        help="for an https:// server with a private CA: its certificate, PEM "
                        "(default: $CEREBELUM_CA_CERT, else the system's roots)")
    parser.add_argument("--api-key", metavar="KEY",
                        help="the tenant's API key (default: $CEREBELUM_API_KEY)")
    parser.add_argument("--worker-id", metavar="ID",
                        help="this worker's name, unique within the tenant (default: HOST:PID)")
    parser.add_argument("--grace", type=float, default=30.0, metavar="SECONDS",
                        help="on SIGINT/SIGTERM, how long running steps may finish before "
                        "they are handed back to the queue (default 30; a second signal "
                        "stops at once)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")


async def _serve_until_signal(worker: Worker, grace: float) -> None:
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task] = []

    def on_signal(sig: signal.Signals) -> None:
        if not stopping:
            log.info("%s: stopping (running steps get %g s; send it again to stop at once)",
                     sig.name, grace)
        stopping.append(asyncio.ensure_future(worker.stop(grace if not stopping else 0)))

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    await worker.start()


def main(args: argparse.Namespace) -> int:
    """``python -m cerebelum worker``: serves ``args.queue`` until SIGINT/SIGTERM."""
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        logging.getLogger("asyncio").setLevel(logging.WARNING)
    try:
        if args.concurrency < 1:
            raise CerebelumError("--concurrency must be at least 1")
        import_steps(args.file)
        _grpc()
        if args.ca_cert:
            os.environ["CEREBELUM_CA_CERT"] = args.ca_cert
        worker = Worker(args.worker_id, args.server, api_key=args.api_key, queue=args.queue,
                        concurrency=args.concurrency)
        asyncio.run(_serve_until_signal(worker, args.grace))
    except CerebelumError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
