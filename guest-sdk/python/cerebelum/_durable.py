"""Durable mode: the package's exports inside the engine.

Imported only inside a component built by ``cerebelum build`` (it needs
the ``wit_world`` bindings componentize-py generates). ``run-workflow``
walks the graph, each step a journaled ``call-step`` (a parallel group:
``start-step`` for each, then one ``await-steps``); ``run-step`` runs one
step function in a fresh instance, its helpers on host calls.
"""

from __future__ import annotations

import json
import random
import traceback
from typing import Any

from wit_world import exports
from wit_world.exports import placement
from wit_world.imports import cerebelum_workflow_types as types
from wit_world.imports import host, outgoing_handler, streams
from wit_world.imports import wasi_http_types as wasi_http
from componentize_py_types import Err

from . import _patches
from ._dsl import Step, WorkflowDefinition
from ._loop import DurableLoop
from ._registry import STEPS, WORKFLOWS, workflow_names
from ._runtime import (Runtime, exception_text, invoke_step_json, run_workflow, to_json,
                       value_of)
from .errors import (ApprovalRejectedError, ApprovalTimeoutError, CancelledError, HttpError,
                     PollTimeoutError, SecretError, SignalTimeoutError, StepError)


def _error(kind: str, message: str, details: Any = None) -> Err:
    return Err(types.Error(kind=kind, message=message,
                           details=None if details is None else json.dumps(details)))


def _raise_host(e: Err) -> None:
    err = e.value
    if err.kind == "cancelled":
        raise CancelledError(err.message)
    raise StepError(err.message, err.kind,
                    None if err.details is None else json.loads(err.details))


# --------------------------------------------------------------- the clock
#
# Inside a step, `time.time()`, `time.time_ns()` and `datetime.now()` /
# `utcnow()` / `today()` read the engine's journaled clock (`now-ms`): the
# real time of each call, recorded, so a replay of the step (after it
# hibernated, or after a crash) sees the same values. Workflow code keeps
# the frozen clock (the invocation's journaled start), which keeps it
# deterministic without a journal entry per read. The patches (_patches.py)
# are made when the SDK is imported, before the user's file, so `from
# datetime import datetime` there gets the live class.

_live = False


def _step_clock() -> int | None:
    return host.now_ms() * 1_000_000 if _live else None


_patches.install(_step_clock)


def _durable_sleep(ms: int) -> None:
    try:
        host.sleep(ms)
    except Err as e:
        _raise_host(e)


class DurableRuntime(Runtime):
    def __init__(self):
        self._execution_id: str | None = None
        self._approvals: dict[str, int] = {}

    @property
    def execution_id(self) -> str:
        if self._execution_id is None:
            self._execution_id = host.execution_id()
        return self._execution_id

    def attempt(self) -> int:
        return host.attempt()

    async def run_stage(self, workflow, steps, envelopes):
        if len(steps) == 1:
            return [self._call(steps[0], envelopes[0])]
        handles = [host.start_step(s.name, json.dumps(env), None)
                   for s, env in zip(steps, envelopes)]
        results = []
        for r in host.await_steps(handles):
            if isinstance(r, Err):
                results.append(self._failed(r))
            else:
                results.append(json.loads(r.value))
        return results

    def _call(self, step, env) -> dict:
        try:
            return json.loads(host.call_step(step.name, json.dumps(env), None))
        except Err as e:
            return self._failed(e)

    @staticmethod
    def _failed(e: Err) -> dict:
        if e.value.kind == "cancelled":
            raise CancelledError(e.value.message)
        return {"error": e.value.message}

    async def call_step(self, step, env):
        return self._call(step, env)

    async def engine_poll(self, ctx, check, interval_ms, max_attempts, timeout_ms):
        env = {"workflow": ctx.workflow_name, "inputs": ctx.inputs, "poll": True,
               "deps": {d: ctx._deps.get(d) for d in check.dependencies}}
        options = types.PollOptions(interval_ms=interval_ms, max_attempts=max_attempts,
                                    timeout_ms=timeout_ms)
        try:
            raw = host.poll(check.name, json.dumps(env), options)
        except Err as e:
            if e.value.kind in ("poll-exhausted", "poll-timeout"):
                raise PollTimeoutError(e.value.message, e.value.kind) from None
            _raise_host(e)
        result = json.loads(raw)
        if "error" in result:
            raise StepError(f"poll check `{check.name}` failed: {result['error']}")
        return result.get("ok")

    async def patched(self, patch_id):
        return bool(host.patched(patch_id))

    async def recorded(self, name, compute, what=None):
        raw = host.recall(name)
        if raw is not None:
            return json.loads(raw)
        value = await compute()
        host.remember(name, to_json(value, what or f"the value recorded for {name}"))
        return value

    async def approval(self, ctx, approval_type, data, timeout_ms):
        # One key per wait: the type, numbered from the second wait on.
        n = self._approvals.get(approval_type, 0) + 1
        self._approvals[approval_type] = n
        key = approval_type if n == 1 else f"{approval_type}-{n}"
        request = types.ApprovalRequest(
            key=key,
            message=f"step {ctx.step_name} waits for approval {key!r}",
            details=None if data is None else json.dumps(data),
            timeout_ms=timeout_ms,
        )
        try:
            decision = host.await_approval(request)
        except Err as e:
            _raise_host(e)
        if isinstance(decision, types.ApprovalDecision_Approved):
            value = json.loads(decision.value)
            return {} if value is None else value
        if isinstance(decision, types.ApprovalDecision_Rejected):
            raise ApprovalRejectedError(decision.value)
        raise ApprovalTimeoutError(f"approval {key!r} timed out after {timeout_ms} ms")

    async def child(self, ctx, workflow, inputs):
        try:
            handle = host.start_child(workflow, json.dumps(inputs), None)
            result = json.loads(host.await_child(handle))
        except Err as e:
            _raise_host(e)
        output = result.get("output") if isinstance(result, dict) else None
        return {"output": value_of(output), "steps": result.get("steps", {})}

    async def signal(self, ctx, name, timeout_ms):
        try:
            raw = host.await_signal(name, timeout_ms)
        except Err as e:
            _raise_host(e)
        if raw is None:
            raise SignalTimeoutError(f"no signal {name!r} came within {timeout_ms} ms")
        return json.loads(raw)

    def set_state(self, ctx, state):
        try:
            host.set_state(to_json(state, "the state"))
        except Err as e:
            _raise_host(e)

    def progress(self, ctx, percent, message):
        host.report_progress(percent, message)

    def secret(self, ctx, name):
        try:
            return host.secret(name)
        except Err as e:
            raise SecretError(e.value.message, e.value.kind) from None

    def http(self, method, url, headers, body):
        return _http_request(method, url, headers, body)


_METHODS = {
    "GET": wasi_http.Method_Get, "HEAD": wasi_http.Method_Head,
    "POST": wasi_http.Method_Post, "PUT": wasi_http.Method_Put,
    "DELETE": wasi_http.Method_Delete, "PATCH": wasi_http.Method_Patch,
    "OPTIONS": wasi_http.Method_Options,
}


def _http_error(method: str, url: str, code) -> HttpError:
    name = type(code).__name__.removeprefix("ErrorCode_")
    if name == "HttpRequestDenied":
        return HttpError(
            f"{method} {url} was denied: its host is not on the tenant's HTTP allow-list (an "
            "operator adds it with `cerebelum admin tenant update TENANT --allow-http HOST`)",
            "http-denied")
    if name == "HttpResponseBodySize":
        limit = getattr(code, "value", None)
        return HttpError(f"the response to {method} {url} is larger than the tenant's limit"
                         + (f" of {limit} bytes" if limit else ""), "http-response-too-large")
    return HttpError(f"{method} {url} failed: {name} {getattr(code, 'value', '') or ''}".rstrip())


def _http_request(method, url, headers, body):
    """One request through wasi:http (the engine journals it)."""
    scheme, rest = url.split("://", 1)
    rest = rest.split("#", 1)[0]
    cut = min([i for i in (rest.find("/"), rest.find("?")) if i >= 0], default=len(rest))
    authority, path = rest[:cut], rest[cut:] or "/"
    if not path.startswith("/"):
        path = "/" + path
    fields = wasi_http.Fields.from_list([(k, v.encode()) for k, v in headers])
    request = wasi_http.OutgoingRequest(fields)
    method_type = _METHODS.get(method)
    request.set_method(method_type() if method_type else wasi_http.Method_Other(method))
    request.set_scheme(wasi_http.Scheme_Https() if scheme == "https" else wasi_http.Scheme_Http())
    request.set_authority(authority)
    request.set_path_with_query(path)
    outgoing = request.body()
    try:
        pending = outgoing_handler.handle(request, None)
    except Err as e:
        raise _http_error(method, url, e.value) from None
    with outgoing.write() as stream:
        for i in range(0, len(body), 4096):
            stream.blocking_write_and_flush(body[i:i + 4096])
    wasi_http.OutgoingBody.finish(outgoing, None)
    with pending:
        with pending.subscribe() as ready:
            ready.block()
        got = pending.get()
    if got is None or isinstance(got, Err):
        raise HttpError(f"{method} {url}: no response")
    inner = got.value
    if isinstance(inner, Err):
        raise _http_error(method, url, inner.value)
    response = inner.value
    status = response.status()
    with response.headers() as fields:
        pairs = [(k, v.decode("utf-8", "replace")) for k, v in fields.entries()]
    incoming = response.consume()
    chunks = []
    with incoming.stream() as stream:
        while True:
            try:
                chunks.append(stream.blocking_read(65536))
            except Err as e:
                if isinstance(e.value, streams.StreamError_Closed):
                    break
                raise HttpError(f"{method} {url}: reading the response failed") from None
    return status, pairs, b"".join(chunks)


# Made while the package is built, so it is in the snapshot every
# instance starts from: a fresh instance's first Python work is then the
# step's own (each new kind of object a call touches costs page faults).
_LOOP = DurableLoop(_durable_sleep)
_scan_json = json.decoder.JSONDecoder().scan_once


def _run(coro) -> Any:
    try:
        return _LOOP.run_until_complete(coro)
    finally:
        if not _LOOP.is_running():  # (a nested call is refused, not cleared)
            _LOOP.clear()


def _loads(text: str) -> Any:
    """``json.loads`` for the engine's compact JSON, without its regular
    expressions (their first use in an instance costs ~0.1 ms)."""
    try:
        value, end = _scan_json(text, 0)
    except StopIteration:
        end = -1
    return value if end == len(text) else json.loads(text)


def _fresh_randomness() -> None:
    # The snapshot taken at build time holds one seeded generator: every
    # instance would draw the same numbers. Reseed from WASI randomness,
    # which the engine makes different per invocation and equal on replay.
    random.seed()


def warm_up() -> None:
    """Runs the step path and the workflow path once while the package is
    built (``cerebelum build`` calls this after importing the user's file),
    on a step and a workflow of its own and without host calls. The
    snapshot every instance starts from then holds what a first run creates
    (caches, CPython's specialised bytecode), so a step or a workflow in a
    fresh instance writes to fewer pages: each page written costs a
    copy-on-write fault, the larger part of a Python step's time. (The
    workflow path measured 2 % off the API benchmark's Python W3.)"""
    async def _cerebelum_warm_up(context, inputs):
        return {"warm": [1, "two", 3.5, None, True], "k": inputs}

    step = Step(_cerebelum_warm_up)
    del STEPS[step.name]
    env = _loads('{"workflow":"warm","inputs":{"a":[1,2.5,"x",null,true]},"deps":{}}')
    _fresh_randomness()
    result = _run(invoke_step_json(step, env, DurableRuntime()))
    assert _loads(result)["ok"]["k"] == env["inputs"], result

    # The workflow path too (a timeline of two steps), its steps answered
    # here instead of by `call-step`: an execution's workflow instance then
    # starts from a snapshot where walking a timeline has run once.
    class _WarmRuntime(DurableRuntime):
        def _call(self, step, env) -> dict:
            return _loads(json.dumps({"ok": {"step": step.name, "k": env["inputs"]}}))

    second = Step(_cerebelum_warm_up, name="_cerebelum_warm_up_2")
    del STEPS[second.name]

    def _cerebelum_warm_up_workflow(wf):
        wf.timeline(step >> second)

    flow = WorkflowDefinition(_cerebelum_warm_up_workflow)
    del WORKFLOWS[flow.name]
    _fresh_randomness()
    outcome = _run(run_workflow(flow, _loads('{"a":[1,"x"]}'), _WarmRuntime()))
    assert outcome.status == "completed", outcome.error
    json.dumps(outcome.json())


class Placement(exports.Placement):
    def worker_steps(self) -> list[placement.WorkerStep]:
        return [placement.WorkerStep(step=s.name, queue=s.worker,
                                     schedule_to_start_ms=s.schedule_to_start_ms,
                                     heartbeat_ms=s.heartbeat_ms)
                for s in STEPS.values() if s.worker]


class Guest(exports.Guest):
    def describe(self) -> types.PackageInfo:
        workflows = [types.WorkflowInfo(name=w.name, description=w.description)
                     for w in WORKFLOWS.values()]
        steps = []
        for s in STEPS.values():
            policy = types.RetryPolicy(
                max_attempts=s.retry.max_attempts, initial_backoff_ms=s.retry.delay_ms,
                multiplier=float(s.retry.backoff), max_backoff_ms=s.retry.max_delay_ms,
                non_retryable=[])
            steps.append(types.StepInfo(
                name=s.name, description=s.description,
                options=types.StepOptions(retry=policy, attempt_timeout_ms=s.timeout_ms)))
        return types.PackageInfo(workflows=workflows, steps=steps)

    def run_workflow(self, name: str, input: str) -> str:
        wf = WORKFLOWS.get(name)
        if wf is None:
            raise _error("unknown-workflow", f"this package has no workflow `{name}` "
                         f"(it has: {workflow_names()})")
        _fresh_randomness()
        try:
            outcome = _run(run_workflow(wf, _loads(input), DurableRuntime()))
        except CancelledError as e:
            raise _error("cancelled", str(e)) from None
        if outcome.status == "continued":
            # Does not return: the engine ends this run here.
            e = host.continue_as_new(json.dumps(outcome.next_inputs))
            raise _error(e.kind, e.message)
        if outcome.status != "completed":
            raise _error("failed", outcome.error or "the workflow failed",
                         {**outcome.json(), "step": outcome.step,
                          "step_error": outcome.step_error})
        return json.dumps(outcome.json())

    def run_step(self, name: str, input: str) -> str:
        step = STEPS.get(name)
        if step is None:
            raise _error("unknown-step", f"this package has no step `{name}`")
        env = _loads(input)
        _fresh_randomness()
        runtime = DurableRuntime()
        global _live
        _live = True  # see "the clock" above
        try:
            result = _run(invoke_step_json(step, env, runtime))
        except CancelledError as e:
            raise _error("cancelled", str(e)) from None
        except Exception as e:
            kind = e.kind if isinstance(e, StepError) else "exception"
            raise _error(kind, exception_text(e), {
                "type": type(e).__name__,
                "traceback": traceback.format_exc(limit=8),
            }) from None
        finally:
            _live = False
        if env.get("poll"):
            # An engine-driven poll's check: `null` means "not yet" (a
            # value that is not truthy, as poll's default test says).
            value = json.loads(result)
            return "null" if "error" not in value and not value.get("ok") else result
        return result
