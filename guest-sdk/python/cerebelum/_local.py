"""Local mode: the workflow runs in this Python process, no engine.

Steps run as asyncio tasks (a parallel group concurrently), ``sleep`` is
``asyncio.sleep``, ``poll``/``retry`` loop in place (their checks may
return any Python object here), progress is printed on stdout as the
original SDK printed it, and ``wait_for_approval`` asks the
``approval_handler`` given to ``execute``. Step results go through JSON
as they would in the engine's journal, so a workflow gives the same
output in both modes.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Mapping

from ._dsl import Step, WorkflowDefinition, find_workflow
from ._registry import WORKFLOWS, workflow_names
from ._runtime import (Context, ExecutionResult, Runtime, exception_text, failure,
                       invoke_step, iso_time, print_progress, run_workflow,
                       secret_from_environment, to_json, value_of)
from .errors import (ApprovalRejectedError, ApprovalTimeoutError, CerebelumError,
                     ExecutionError, HttpError, SignalTimeoutError, StepError)


#: ``execute(approval_handler=...)``: called with ``(approval_type, data)``,
#: it returns ``True`` or a dict to approve (the dict is the approval's
#: data), ``False`` or a string (the reason) to reject; it may be ``async``.
ApprovalHandler = Callable[[str, Any], object]
#: ``execute(signal_handler=...)``: called with the signal's name, it
#: returns its payload; it may be ``async``.
SignalHandler = Callable[[str], object]


class LocalRuntime(Runtime):
    def __init__(self, execution_id: str, approval_handler: ApprovalHandler | None,
                 secrets: Mapping[str, object] | None = None,
                 signal_handler: SignalHandler | None = None):
        self.execution_id = execution_id
        self.approval_handler = approval_handler
        self.signal_handler = signal_handler
        self.secrets = dict(secrets or {})
        #: The last value ``set_state`` published.
        self.state = None

    def secret(self, ctx: Context, name: str) -> str:
        if name in self.secrets:
            return str(self.secrets[name])
        return secret_from_environment(
            ctx, name, f"this local run does not have: pass "
                       f"`execute(inputs, secrets={{{name!r}: ...}})` or ")

    def http(self, method, url, headers, body):
        # No allow-list here: that is the engine's, per tenant.
        request = urllib.request.Request(url, data=body or None, method=method,
                                         headers=dict(headers))
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, list(response.headers.items()), response.read()
        except urllib.error.HTTPError as e:
            return e.code, list(e.headers.items()), e.read()
        except (urllib.error.URLError, OSError) as e:
            raise HttpError(f"{method} {url} failed: {getattr(e, 'reason', e)}") from None

    async def run_stage(self, workflow, steps, envelopes):
        return list(await asyncio.gather(
            *(self._run_step(s, env) for s, env in zip(steps, envelopes))))

    async def _run_step(self, step: Step, env: dict) -> dict:
        """Attempts by the step's retry policy, like the engine."""
        policy = step.retry
        wait_ms = float(policy.delay_ms)
        for attempt in range(1, policy.max_attempts + 1):
            try:
                return await invoke_step(step, env, self, attempt)
            except Exception as e:
                if attempt == policy.max_attempts:
                    return {"error": exception_text(e)}
                await asyncio.sleep(min(wait_ms, policy.max_delay_ms) / 1000)
                wait_ms *= max(policy.backoff, 1.0)
        raise AssertionError("unreachable")

    async def call_step(self, step, env):
        return await self._run_step(step, env)

    async def recorded(self, name: str, compute: Callable[[], Awaitable[Any]],
                       what: str | None = None) -> Any:
        # Any Python object: only the engine journals it (and says so
        # there when it is not JSON).
        return await compute()

    async def approval(self, ctx: Context, approval_type: str, data: Any,
                       timeout_ms: int | None) -> Any:
        handler = self.approval_handler
        if handler is None:
            raise CerebelumError(
                f"step `{ctx.step_name}` waits for approval {approval_type!r}, and this "
                "local run has nobody to ask: pass an approval handler, e.g. "
                "`await wf.execute(inputs, approval_handler=lambda kind, data: True)` "
                "(return True or a dict to approve, False or a reason to reject)")

        try:
            answer = await _ask(handler, (approval_type, data), timeout_ms)
        except asyncio.TimeoutError:
            raise ApprovalTimeoutError(
                f"approval {approval_type!r} timed out after {timeout_ms} ms") from None
        if answer is True or answer is None:
            return {}
        if answer is False:
            raise ApprovalRejectedError("rejected")
        if isinstance(answer, str):
            raise ApprovalRejectedError(answer)
        return json.loads(to_json(answer, "the approval handler's answer"))

    async def child(self, ctx: Context, workflow: str, inputs: Any) -> dict:
        found = WORKFLOWS.get(workflow)
        if found is None:
            raise StepError(f"step `{ctx.step_name}` runs child workflow {workflow!r}, which "
                            f"is not defined (known: {workflow_names()})", "not-found")
        try:
            r = await execute_locally(found, inputs, self.approval_handler, self.secrets,
                                      self.signal_handler)
        except ExecutionError as e:
            raise StepError(f"child workflow {workflow} failed: {e}", "child-failed") from None
        return {"output": value_of(r.output), "steps": r.steps}

    async def signal(self, ctx: Context, name: str, timeout_ms: int | None) -> Any:
        handler = self.signal_handler
        if handler is None:
            raise CerebelumError(
                f"step `{ctx.step_name}` waits for signal {name!r}, and this local run has "
                "nobody to send it: pass a signal handler, e.g. "
                "`await wf.execute(inputs, signal_handler=lambda name: {...})` (it returns "
                "the signal's payload; it may be async)")

        try:
            answer = await _ask(handler, (name,), timeout_ms)
        except asyncio.TimeoutError:
            raise SignalTimeoutError(
                f"no signal {name!r} came within {timeout_ms} ms") from None
        return json.loads(to_json(answer, f"the payload of signal {name!r}"))

    def set_state(self, ctx: Context, state: Any) -> None:
        self.state = json.loads(to_json(state, "the state"))

    def progress(self, ctx: Context, percent: int, message: str) -> None:
        print_progress(ctx.step_name, percent, message)


async def _ask(handler: Callable[..., object], args: tuple[Any, ...],
               timeout_ms: int | None) -> Any:
    """``handler(*args)``'s answer (awaited if it is async), within
    ``timeout_ms`` (else :class:`asyncio.TimeoutError`)."""
    async def ask():
        answer = handler(*args)
        if inspect.isawaitable(answer):
            answer = await answer
        return answer

    if timeout_ms is None:
        return await ask()
    return await asyncio.wait_for(ask(), timeout_ms / 1000)


async def execute_locally(workflow: WorkflowDefinition, inputs: Any,
                          approval_handler: ApprovalHandler | None,
                          secrets: Mapping[str, object] | None = None,
                          signal_handler: SignalHandler | None = None) -> ExecutionResult:
    inputs = json.loads(to_json(inputs, "the workflow input"))
    runtime = LocalRuntime(str(uuid.uuid4()), approval_handler, secrets, signal_handler)
    started = datetime.now(timezone.utc)
    outcome = await run_workflow(workflow, inputs, runtime)
    while outcome.status == "continued":
        # continue_as_new: the workflow runs again with the new input.
        runtime.execution_id = str(uuid.uuid4())
        outcome = await run_workflow(workflow, outcome.next_inputs, runtime)
    result = ExecutionResult(
        execution_id=runtime.execution_id,
        status=outcome.status,
        output=outcome.output,
        error=outcome.error,
        started_at=iso_time(started),
        completed_at=iso_time(datetime.now(timezone.utc)),
        steps=outcome.steps,
    )
    if outcome.status != "completed":
        raise failure(result, outcome.step, outcome.step_error)
    return result


#: Runs the helpers (``sleep``, ``poll``, ``retry``) called outside a
#: workflow run, as plain async helpers.
PLAIN = LocalRuntime("", None)


class DSLLocalExecutor:
    """Runs workflows in this process, without an engine: what
    ``workflow.execute(inputs)`` does, under the original SDK's name
    (``await DSLLocalExecutor().execute(workflow, inputs)``)."""

    def __init__(self, approval_handler: ApprovalHandler | None = None,
                 secrets: Mapping[str, object] | None = None):
        self.approval_handler = approval_handler
        self.secrets = secrets

    async def execute(self, workflow: WorkflowDefinition | str, input_data: Any = None) -> ExecutionResult:
        """The :class:`ExecutionResult`; raises :class:`ExecutionError`
        when the execution fails."""
        return await execute_locally(find_workflow(workflow), input_data,
                                     self.approval_handler, self.secrets)


class LocalExecutor(DSLLocalExecutor):
    """The original SDK's other name for the local executor."""
