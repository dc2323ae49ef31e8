"""What runs a workflow or a step, in either mode.

Everything here is shared by the two modes; a :class:`Runtime` supplies
the few operations that differ (running a stage of steps, recording a
value, approvals, progress). Locally (:mod:`cerebelum._local`) they are
plain Python; inside the engine (:mod:`cerebelum._durable`) each is a
journaled host call.
"""

from __future__ import annotations

import asyncio
import contextvars
import difflib
import inspect
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

from ._dsl import FAIL, RETRY, Step, StepComposition, WorkflowDefinition
from ._registry import WORKFLOWS
from .errors import CerebelumError, ExecutionError, SecretError, StepError

#: The step running in this task (``None`` outside steps).
CURRENT: contextvars.ContextVar["Context | None"] = contextvars.ContextVar(
    "cerebelum_context", default=None)

#: Runs of a diverge's "retry" target before the error stands.
DIVERGE_RETRIES = 3
#: Steps one execution may run: a bound for paths that loop back.
MAX_STEP_RUNS = 10_000


class Runtime:
    """The operations that differ between local and durable execution."""

    async def run_stage(self, workflow: WorkflowDefinition, steps: tuple[Step, ...],
                        envelopes: list[dict]) -> list[dict]:
        """Runs steps together; returns their wrapped results in order."""
        raise NotImplementedError

    async def call_step(self, step: Step, envelope: dict) -> dict:
        """Runs one step for a caller (a poll's check); its wrapped result."""
        raise NotImplementedError

    async def recorded(self, name: str, compute: Callable[[], Awaitable[Any]],
                       what: str | None = None) -> Any:
        """``compute()``'s value, computed once per execution path. Inside
        the engine it is journaled, so it must be JSON: ``what`` names it
        in the error that says it is not."""
        raise NotImplementedError

    async def approval(self, ctx: "Context", approval_type: str, data: Any,
                       timeout_ms: int | None) -> Any:
        raise NotImplementedError

    async def patched(self, patch_id: str) -> bool:
        """Whether this run takes the new path of patch ``patch_id``.
        Outside the engine there is no recorded history: always."""
        return True

    async def sleep(self, ms: int, data: Any = None) -> None:
        """Waits ``ms``: ``sleep``'s, ``poll``'s and ``retry``'s waits.
        Inside the sandbox ``asyncio.sleep`` itself is durable (the loop
        journals it), and ``data`` is recorded beside it."""
        if data is not None:
            async def described() -> Any:
                return {"duration_ms": ms, "data": data}
            await self.recorded("sleep", described)
        await asyncio.sleep(ms / 1000)

    async def child(self, ctx: "Context", workflow: str, inputs: Any) -> dict:
        """Runs workflow ``workflow`` as a child; its result."""
        raise NotImplementedError

    async def signal(self, ctx: "Context", name: str, timeout_ms: int | None) -> Any:
        """The payload of the next signal ``name``; raises
        :class:`SignalTimeoutError` after ``timeout_ms``."""
        raise NotImplementedError

    def set_state(self, ctx: "Context", state: Any) -> None:
        """Publishes ``state`` (JSON) as where the execution stands."""
        raise NotImplementedError

    def progress(self, ctx: "Context", percent: int, message: str) -> None:
        raise NotImplementedError

    #: The execution's id.
    execution_id: str = ""

    def attempt(self) -> int:
        """The attempt number of the running step."""
        return 1

    async def engine_poll(self, ctx: "Context", check: Step, interval_ms: int,
                          max_attempts: int, timeout_ms: int | None) -> Any:
        """A poll whose checks are a step; ``NotImplemented`` to poll in the step."""
        return NotImplemented

    def http(self, method: str, url: str, headers: list[tuple[str, str]],
             body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        """Sends a request: (status, headers, body)."""
        raise NotImplementedError

    def secret(self, ctx: "Context", name: str) -> str:
        """The tenant's secret ``name``."""
        raise NotImplementedError


class Context:
    """What every step receives first: ``inputs``, ``execution_id``,
    ``workflow_name``, ``step_name`` and ``attempt`` (this run's attempt
    number, from 1).

    Built by hand, with the original SDK's fields, it is a test double
    for calling a step directly::

        ctx = Context(inputs={"user_id": 1}, execution_id="test-1",
                      workflow_name="onboarding", step_name="fetch_user", attempt=1)
        assert await fetch_user(ctx, {"user_id": 1}) == {...}

    Such a context reads secrets from ``CEREBELUM_SECRET_<NAME>`` and
    prints progress as local mode does; it cannot run children nor wait
    for approvals or signals (run the workflow for that).
    """

    def __init__(self, inputs: Any = None, execution_id: str | None = None,
                 workflow_name: str = "", step_name: str = "", attempt: int | None = None,
                 *, runtime: "Runtime | None" = None, deps: dict[str, Any] | None = None):
        self.inputs = inputs
        self.workflow_name = workflow_name
        self.step_name = step_name
        self._runtime = runtime if runtime is not None else DetachedRuntime(execution_id or "")
        self._execution_id = execution_id
        self._deps = deps or {}
        self._attempt = attempt

    @property
    def execution_id(self) -> str:
        if self._execution_id is not None:
            return self._execution_id
        return self._runtime.execution_id

    @property
    def attempt(self) -> int:
        if self._attempt is None:
            self._attempt = self._runtime.attempt()
        return self._attempt

    def secret(self, name: str) -> str:
        """The secret ``name``: in the engine, the tenant's (``cerebelum
        admin secret set TENANT NAME``), never journaled, and replaced by
        ``[redacted]`` wherever it would be written (results, logs), so
        pass it to a request and never return it; locally, from
        ``execute(..., secrets={...})`` or the environment variable
        ``CEREBELUM_SECRET_<NAME>``. Raises :class:`SecretError`."""
        return self._runtime.secret(self, name)

    async def child(self, workflow: WorkflowDefinition | str, inputs: Any = None) -> dict[str, Any]:
        """Runs ``workflow`` (a ``@workflow``, or its name) as a child
        with ``inputs`` and returns its result: ``{"output": the last
        step's value, "steps": {...}}``. In the engine the child is an
        execution of its own whose ``parent_id`` is this one, and the wait
        is durable; cancelling this execution cancels it. Raises
        :class:`StepError` when the child fails (kind ``child-cancelled``
        when it was cancelled)."""
        name = workflow if isinstance(workflow, str) else getattr(workflow, "name", None)
        if not isinstance(name, str) or not name:
            raise ValueError(f"context.child expects a @workflow or its name, got {workflow!r}")
        to_json(inputs, "the child's input")
        return await self._runtime.child(self, name, inputs)

    def continue_as_new(self, inputs: Any) -> "ContinueAsNew":
        """Return this from a step to end this run of the workflow after
        the step and start it again with ``inputs`` and an empty journal:
        ``return context.continue_as_new({"cursor": next})``. In the engine
        the new run is a new execution that names this one as
        ``continued_from`` (this one completes with ``{"continued_as":
        ID}``), so a workflow that loops forever keeps a short journal;
        locally the workflow simply runs again."""
        to_json(inputs, "the input of continue_as_new")
        return ContinueAsNew(inputs)

    def __repr__(self) -> str:
        return (f"Context(workflow_name={self.workflow_name!r}, step_name={self.step_name!r}, "
                f"inputs={self.inputs!r})")


BAR_WIDTH = 20


def print_progress(step_name: str, percent: int, message: str) -> None:
    """A step's progress line, as the original SDK printed it:
    ``  [step] ██████░░░░░░░░░░░░░░ 33% - message``."""
    filled = int(BAR_WIDTH * percent / 100)
    bar = "█" * filled + "░" * (BAR_WIDTH - filled)
    print(f"  [{step_name}] {bar} {percent}% - {message}", flush=True)


def secret_from_environment(ctx: Context, name: str, missing: str) -> str:
    """Secret ``name`` from ``CEREBELUM_SECRET_<NAME>``; else a
    :class:`SecretError`: ``missing`` says who lacks it and how else to
    give it, before ``set CEREBELUM_SECRET_<NAME>``."""
    env = "CEREBELUM_SECRET_" + "".join(c if c.isalnum() else "_" for c in name).upper()
    value = os.environ.get(env)
    if value is None:
        raise SecretError(f"step `{ctx.step_name}` reads secret {name!r}, which {missing}"
                          f"set {env}")
    return value


class DetachedRuntime(Runtime):
    """The runtime of a :class:`Context` built by hand (a test double of
    a step's context): no execution around it."""

    def __init__(self, execution_id: str):
        self.execution_id = execution_id
        self.state = None

    def _cannot(self, ctx: Context, what: str) -> CerebelumError:
        return CerebelumError(
            f"step `{ctx.step_name}` {what}, and its Context was built by hand (a test "
            "double): there is no execution to do it in; run the workflow instead, e.g. "
            "`await wf.execute(inputs)`")

    def secret(self, ctx, name):
        return secret_from_environment(
            ctx, name, "this hand-built Context (a test double) does not have: ")

    async def recorded(self, name, compute, what=None):
        return await compute()

    async def approval(self, ctx, approval_type, data, timeout_ms):
        raise self._cannot(ctx, f"waits for approval {approval_type!r}")

    async def child(self, ctx, workflow, inputs):
        raise self._cannot(ctx, f"runs child workflow {workflow!r}")

    async def signal(self, ctx, name, timeout_ms):
        raise self._cannot(ctx, f"waits for signal {name!r}")

    def set_state(self, ctx, state):
        self.state = json.loads(to_json(state, "the state"))

    def progress(self, ctx, percent, message):
        print_progress(ctx.step_name, percent, message)


@dataclass
class ExecutionResult:
    """How an execution ended (``await workflow.execute(inputs)``), the
    same in local mode and from the engine."""

    execution_id: str
    #: ``completed`` or ``failed`` (a failed execution raises
    #: :class:`ExecutionError`, whose ``result`` this is).
    status: str
    #: The last step's result as the step returned it, in its ``{"ok":
    #: value}`` form (``result.output["ok"]["square"]``), as in the
    #: original SDK; of a parallel group, the group's last step.
    output: Any = None
    error: str | None = None
    #: When it started and ended: ISO-8601 strings (UTC).
    started_at: str | None = None
    completed_at: str | None = None
    #: Every step that ran: its ``ok`` value (or ``{"error": ...}`` when a
    #: diverge handled its error), by step name.
    steps: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "completed"


def iso_time(when: datetime) -> str:
    """``when`` as the original SDK wrote times: ISO-8601, UTC, no offset."""
    return when.astimezone(timezone.utc).replace(tzinfo=None).isoformat()


def failure(result: ExecutionResult, step_name: str | None, step_error: str | None):
    """The :class:`ExecutionError` ``execute`` raises for a failed ``result``."""
    message = (f"Step '{step_name}' returned error: {step_error}"
               if step_name is not None and step_error is not None
               else result.error or "the workflow failed")
    return ExecutionError(message, step_name, step_error, result)


class ContinueAsNew:
    """What :meth:`Context.continue_as_new` returns: a step that returns
    it ends the run, which starts again with ``inputs``."""

    def __init__(self, inputs: Any):
        self.inputs = inputs

    def __repr__(self) -> str:
        return f"ContinueAsNew({self.inputs!r})"


def wrap(value: Any) -> dict:
    """A step's return value as a result: ``{"ok": v}`` unless it already
    is ``{"ok": ...}`` or ``{"error": ...}`` (or continues as new:
    ``{"continue_as_new": inputs}``)."""
    if isinstance(value, ContinueAsNew):
        return {"continue_as_new": value.inputs}
    if isinstance(value, dict) and ("ok" in value or "error" in value):
        return value
    return {"ok": value}


def is_error(result: dict) -> bool:
    return isinstance(result, dict) and "error" in result


def error_text(result: dict) -> str:
    e = result.get("error")
    return e if isinstance(e, str) else json.dumps(e)


def to_json(value: Any, what: str) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError) as e:
        raise StepError(f"{what} is not JSON ({e}); the engine journals it, so it must be "
                        "made of dicts, lists, strings, numbers, booleans and None: return "
                        "a dict of the fields you need, e.g. {\"ip\": droplet.ip_address}",
                        "invalid-output") from None


def envelope(workflow: WorkflowDefinition, step: Step, inputs: Any, results: dict) -> dict:
    """The input of one step: the workflow input and the results of the
    steps its parameters name (other parameters are input fields)."""
    names = workflow.steps()
    return {
        "workflow": workflow.name,
        "inputs": inputs,
        "deps": {d: value_of(results.get(d)) for d in step.dependencies if d in names},
    }


def arguments(step: Step, ctx: "Context") -> dict:
    """The step's keyword arguments: ``inputs``, the results of earlier
    steps, and the workflow input's fields named by other parameters."""
    kwargs = {}
    for p in step.params:
        if p == "inputs":
            kwargs[p] = ctx.inputs
        elif p in ctx._deps:
            kwargs[p] = ctx._deps[p]
        elif isinstance(ctx.inputs, dict) and p in ctx.inputs:
            kwargs[p] = ctx.inputs[p]
        else:
            fields = ", ".join(sorted(ctx.inputs)) if isinstance(ctx.inputs, dict) else ""
            wf = WORKFLOWS.get(ctx.workflow_name)
            near = difflib.get_close_matches(p, list(wf.steps()) if wf else [], n=1)
            hint = f" (did you mean step `{near[0]}`?)" if near else ""
            raise StepError(
                f"step `{step.name}`: parameter `{p}` is not `inputs`, nor a step of workflow "
                f"`{ctx.workflow_name}`, nor a field of the workflow input (its fields: "
                f"{fields or 'none'}){hint}; pass {{\"{p}\": ...}} in the input or rename "
                "the parameter", "invalid-input")
    return kwargs


def value_of(result: dict | None) -> Any:
    """What a dependent step receives: the ``ok`` value, else the error result."""
    if result is None:
        return None
    return result["ok"] if "ok" in result else result


async def invoke_step(step: Step, env: dict, runtime: Runtime,
                      attempt: int | None = None) -> dict:
    """Runs the step's function once; its wrapped, JSON-checked result.
    Exceptions of the function propagate (they are a failed attempt)."""
    # Through JSON and back, as the engine's journal would: both modes see
    # the same values (tuples become lists, keys strings).
    return json.loads(await invoke_step_json(step, env, runtime, attempt))


async def invoke_step_json(step: Step, env: dict, runtime: Runtime,
                           attempt: int | None = None) -> str:
    """:func:`invoke_step`'s result as the JSON text the engine journals."""
    ctx = Context(env.get("inputs"), workflow_name=env.get("workflow", ""), step_name=step.name,
                  attempt=attempt, runtime=runtime, deps=env.get("deps", {}))
    token = CURRENT.set(ctx)
    try:
        value = await step.fn(ctx, **arguments(step, ctx))
    finally:
        CURRENT.reset(token)
    return to_json(wrap(value), f"the result of step `{step.name}`")


def exception_text(e: BaseException) -> str:
    return str(e) or type(e).__name__


# ---------------------------------------------------------------- the graph


@dataclass
class Outcome:
    status: str
    #: The last step's wrapped result (``{"ok": v}`` or ``{"error": e}``).
    output: Any
    #: Every step's value, by name.
    steps: dict
    error: str | None
    #: The step that failed, and its error text.
    step: str | None = None
    step_error: str | None = None
    #: Status ``continued``: the input of the next run.
    next_inputs: Any = None

    def json(self) -> dict:
        """What the engine stores as the workflow's result."""
        return {"output": self.output, "steps": self.steps}


async def run_workflow(workflow: WorkflowDefinition, inputs: Any, runtime: Runtime) -> Outcome:
    """Runs the timeline, following diverges and branches."""
    results: dict[str, dict] = {}
    stages = list(workflow.timeline.stages)
    position = 0
    runs = 0
    last: Any = None

    def ended(status: str, error: str | None = None, step: Step | None = None) -> Outcome:
        steps = {name: value_of(r) for name, r in results.items()}
        failed = step is not None and is_error(results.get(step.name))
        return Outcome(status, last, steps, error, step.name if step else None,
                       error_text(results[step.name]) if failed else None)

    while position < len(stages):
        stage = stages[position]
        position += 1
        runs += len(stage)
        if runs > MAX_STEP_RUNS:
            return ended("failed", f"the workflow ran more than {MAX_STEP_RUNS} steps: does a "
                         "diverge or branch target lead back to itself?")
        envs = [envelope(workflow, s, inputs, results) for s in stage]
        for s, r in zip(stage, await runtime.run_stage(workflow, stage, envs)):
            results[s.name] = r
        last = results[stage[-1].name]
        for s in stage:
            r = results[s.name]
            if isinstance(r, dict) and "continue_as_new" in r:
                outcome = ended("continued")
                outcome.next_inputs = r["continue_as_new"]
                return outcome
        for s in stage:
            action = await _route(workflow, s, inputs, results, runtime)
            if s is stage[-1]:
                last = results[s.name]  # a diverge may have run it again
            if action is None:
                continue
            if isinstance(action, str):
                return ended("failed", action, s)
            stages, position = list(action.stages), 0
            break
    return ended("completed")


async def _route(workflow: WorkflowDefinition, s: Step, inputs: Any, results: dict,
                 runtime: Runtime) -> StepComposition | str | None:
    """What follows step ``s``: ``None`` (go on), a chain to jump to, or
    the error that ends the workflow."""
    diverge = workflow.diverges.get(s.name)
    retries = 0
    while True:
        result = results[s.name]
        target = _match(diverge, result) if diverge else None
        if target == RETRY and retries < DIVERGE_RETRIES:
            retries += 1
            env = envelope(workflow, s, inputs, results)
            results[s.name] = (await runtime.run_stage(workflow, (s,), [env]))[0]
            continue
        break
    if target == FAIL or (is_error(result) and not isinstance(target, StepComposition)):
        return f"step `{s.name}` failed: {error_text(result)}" if is_error(result) \
            else f"step `{s.name}` ended the workflow (diverge to \"fail\")"
    if isinstance(target, StepComposition):
        return target
    branch = workflow.branches.get(s.name)
    if branch is None:
        return None
    try:
        taken = branch.condition(result)
        if inspect.isawaitable(taken):
            taken = await taken
    except Exception as e:
        return f"the branch condition after step `{s.name}` raised {type(e).__name__}: " \
               f"{exception_text(e)}"
    target = branch.when_true if taken else branch.when_false
    if target == FAIL:
        return f"step `{s.name}` ended the workflow (branch to \"fail\")"
    return target


def _match(diverge, result: dict):
    """The target of the first pattern that matches: specific patterns in
    the order given, then the catch-all ``"error"`` / ``"ok"``."""
    specific = [(p, t) for p, t in diverge.routes if p not in ("error", "ok")]
    if is_error(result):
        text = error_text(result).lower()
        for pattern, target in specific:
            if pattern.lower() in text:
                return target
        return dict(diverge.routes).get("error")
    value = result.get("ok")
    for pattern, target in specific:
        if value == pattern or (isinstance(value, dict) and value.get("status") == pattern):
            return target
    return dict(diverge.routes).get("ok")


def current() -> Context:
    ctx = CURRENT.get()
    if ctx is None:
        raise CerebelumError(
            "this helper runs inside a step: call it from an `@step` function that the "
            "workflow runs (or through `await my_workflow.execute(inputs)`)")
    return ctx
