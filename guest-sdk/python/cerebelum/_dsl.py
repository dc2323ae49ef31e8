"""The workflow language: ``@step``, ``>>`` chains and parallel groups,
``diverge`` and ``branch``, and the definition of a workflow (its graph),
validated when the workflow is defined. Running one is above this
(``cerebelum._workflow``): the runtimes interpret what is defined here."""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from typing import (Any, Callable, Collection, Coroutine, Generic, Iterable, Literal, ParamSpec,
                    TypeVar, Union, overload)

from ._registry import STEPS, WORKFLOWS, workflow_names
from .errors import StepDefinitionError, WorkflowDefinitionError

RETRY = "retry"
FAIL = "fail"

#: A step function's parameters and its return value: ``Step[P, R]`` is
#: what ``@step`` makes of an ``async def f(*P) -> R``.
P = ParamSpec("P")
R = TypeVar("R")

#: A worker queue's name, as the engine accepts it.
_QUEUE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")


@dataclass(frozen=True)
class RetryPolicy:
    """How the engine retries a failing step (``@step(retry=...)``)."""

    max_attempts: int = 1
    delay_ms: int = 1000
    backoff: float = 2.0
    max_delay_ms: int = 60_000


def _step_error(fn: Callable[..., Any], text: str) -> StepDefinitionError:
    return StepDefinitionError(fn.__name__, text, text=text)


def _is_context(param: inspect.Parameter) -> bool:
    """Whether a step's first parameter is plainly its context: named
    ``context`` or ``ctx`` (or ``_...``, unused), or annotated ``Context``.
    Anything else (``async def s(inputs)``) is a step that forgot it."""
    if param.kind not in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
        return False
    annotation = param.annotation
    if not isinstance(annotation, str):
        annotation = getattr(annotation, "__name__", "")
    return (param.name in ("context", "ctx") or param.name.startswith("_")
            or annotation.rpartition(".")[2] == "Context")


class Step(Generic[P, R]):
    """A function decorated with ``@step``: ``Step[P, R]`` for an
    ``async def f(*P) -> R``. Called, it is the function
    (``await f(context, ...)`` gives an ``R``); ``>>`` chains it."""

    def __init__(self, fn: Callable[P, Coroutine[Any, Any, R]], *, name: str | None = None,
                 retry: int | RetryPolicy | None = None, timeout_ms: int | None = None,
                 worker: str | None = None, schedule_to_start_ms: int | None = None,
                 heartbeat_ms: int | None = None):
        if not inspect.iscoroutinefunction(fn):
            raise _step_error(fn, f"step `{fn.__name__}` must be an `async def` function "
                                  f"(write `async def {fn.__name__}(context, ...)`)")
        params = list(inspect.signature(fn).parameters.values())
        if not params:
            raise _step_error(fn, f"step `{fn.__name__}` must take the context as its first "
                                  f"parameter, e.g. `async def {fn.__name__}(context, inputs)`")
        if not _is_context(params[0]):
            names = ", ".join(["context"] + [p.name for p in params])
            raise _step_error(
                fn, f"step `{fn.__name__}` has no context parameter: its first parameter, "
                    f"`{params[0].name}`, would receive the Context; write `async def "
                    f"{fn.__name__}({names})` (name the first parameter `context` or `ctx`, "
                    "or annotate it `: Context`)")
        for p in params[1:]:
            if p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                raise _step_error(
                    fn, f"step `{fn.__name__}`: parameter `{p.name}` must be a plain named "
                        "parameter (`inputs`, the name of an earlier step, or a field of the "
                        "workflow input)")
        self.fn = fn
        self.name = name or fn.__name__
        self.description = inspect.getdoc(fn) or ""
        #: Parameter names after the context: `inputs`, earlier steps, or
        #: fields of the workflow input (a name that is no step of the
        #: workflow).
        self.params = [p.name for p in params[1:]]
        self.dependencies = [p for p in self.params if p != "inputs"]
        if isinstance(retry, int):
            retry = RetryPolicy(max_attempts=retry)
        self.retry = retry or RetryPolicy()
        self.timeout_ms = timeout_ms
        if worker is not None and not _QUEUE_NAME.fullmatch(worker):
            raise _step_error(
                fn, f"step `{fn.__name__}`: worker={worker!r} is not a worker queue name; use 1 to "
                "128 letters, digits, '-', '_' or '.', e.g. @step(worker=\"devops\")")
        if worker is None and (schedule_to_start_ms is not None or heartbeat_ms is not None):
            raise _step_error(
                fn, f"step `{fn.__name__}`: schedule_to_start_ms and heartbeat_ms are timeouts "
                "of a step on a worker queue; add worker=\"QUEUE\" or drop them")
        if schedule_to_start_ms is not None and schedule_to_start_ms < 1:
            raise _step_error(
                fn, f"step `{fn.__name__}`: schedule_to_start_ms must be positive (None: wait)")
        if heartbeat_ms is not None and heartbeat_ms < 100:
            raise _step_error(
                fn, f"step `{fn.__name__}`: heartbeat_ms must be at least 100")
        #: The worker queue that serves the step in the engine (None: the sandbox).
        self.worker = worker
        self.schedule_to_start_ms = schedule_to_start_ms
        self.heartbeat_ms = heartbeat_ms
        known = STEPS.get(self.name)
        if known is not None and known.fn.__qualname__ != fn.__qualname__:
            raise _step_error(
                fn, f"two steps are named `{self.name}` ({known.fn.__module__}."
                f"{known.fn.__qualname__} and {fn.__module__}.{fn.__qualname__}); "
                "give one another name with @step(name=...)")
        STEPS[self.name] = self

    def __repr__(self) -> str:
        return f"StepMetadata(name={self.name!r}, dependencies={self.dependencies!r})"

    # The original SDK's names for a step's metadata (`StepMetadata`).
    @property
    def function(self) -> Callable[P, Coroutine[Any, Any, R]]:
        return self.fn

    @property
    def parameters(self) -> list[str]:
        return ["context", *self.params]

    @property
    def has_context(self) -> bool:
        return True

    @property
    def has_inputs(self) -> bool:
        return "inputs" in self.params

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
        """Calls the function itself (for tests of a single step)."""
        return self.fn(*args, **kwargs)

    def __rshift__(self, other: Chainable) -> StepComposition:
        return StepComposition.of(self) >> other

    # Only a group starting a chain comes here (`[a, b] >> c`), as a list
    # whose type mypy joins to `list[object]` when its steps' signatures
    # differ: its members are checked as the chain is built.
    def __rrshift__(self, other: Collection[object]) -> StepComposition:
        return StepComposition.of(other) >> self


@overload
def step(fn: Callable[P, Coroutine[Any, Any, R]]) -> Step[P, R]: ...


@overload
def step(*, name: str | None = None, retry: int | RetryPolicy | None = None,
         timeout_ms: int | None = None, worker: str | None = None,
         schedule_to_start_ms: int | None = None, heartbeat_ms: int | None = None,
         ) -> Callable[[Callable[P, Coroutine[Any, Any, R]]], Step[P, R]]: ...


def step(fn: Callable[P, Coroutine[Any, Any, R]] | None = None, *, name: str | None = None,
         retry: int | RetryPolicy | None = None, timeout_ms: int | None = None,
         worker: str | None = None, schedule_to_start_ms: int | None = None,
         heartbeat_ms: int | None = None,
         ) -> Step[P, R] | Callable[[Callable[P, Coroutine[Any, Any, R]]], Step[P, R]]:
    """Declares a step: ``@step`` or ``@step(retry=3, timeout_ms=30_000)``.

    The function is ``async``; its first parameter is the :class:`Context`,
    ``inputs`` receives the workflow input, a parameter that names an
    earlier step receives that step's result (its ``ok`` value), and any
    other parameter the workflow input's field of that name
    (``async def start(context, name: str)`` with input ``{"name": ...}``).

    ``retry``: attempts the engine makes when the step raises (default 1:
    an exception becomes the step's ``{"error": message}`` result).
    ``timeout_ms``: CPU time one attempt may use inside the engine.
    ``worker``: in the engine, the step runs natively in an external worker
    process serving that queue (``python -m cerebelum worker FILE.py --queue
    NAME``) instead of the sandbox, with full access to its machine
    (subprocesses, sockets, any pip package). Locally it runs in-process.
    There, ``timeout_ms`` bounds an attempt's wall time on the worker, an
    attempt no worker took within ``schedule_to_start_ms`` fails (default:
    it waits), and one whose worker sent no heartbeat for ``heartbeat_ms``
    fails (default: the server's ``--worker-heartbeat-ms``); the retry
    policy decides what follows.
    """
    def wrap(f: Callable[P, Coroutine[Any, Any, R]]) -> Step[P, R]:
        return Step(f, name=name, retry=retry, timeout_ms=timeout_ms, worker=worker,
                    schedule_to_start_ms=schedule_to_start_ms, heartbeat_ms=heartbeat_ms)
    return wrap(fn) if fn is not None else wrap


Stage = tuple["Step[Any, Any]", ...]


class ParallelStepGroup:
    """Steps that run together: ``[b, c]`` in ``a >> [b, c] >> d``, an
    item of :attr:`StepComposition.steps`. ``steps`` is the list of them."""

    def __init__(self, steps: Iterable[Step[Any, Any]]):
        self.steps = list(steps)
        if not self.steps:
            raise ValueError("Parallel group cannot be empty")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ParallelStepGroup) and self.steps == other.steps

    def __repr__(self) -> str:
        return f"ParallelStepGroup([{', '.join(s.name for s in self.steps)}])"


class StepComposition:
    """What ``a >> b`` makes: stages run one after the other; the steps of
    a stage run together.

    ``stages`` holds them as tuples of steps; ``steps`` (or ``items``), as
    in the original SDK, as a list of each stage's step, or
    :class:`ParallelStepGroup` when a stage holds several:
    ``(a >> [b, c]).steps == [a, ParallelStepGroup([b, c])]``. It may be
    built from such a list too: ``StepComposition([a, ParallelStepGroup([b,
    c])])``."""

    __slots__ = ("stages",)

    def __init__(self, items: Iterable[Any]):
        stages: list[Stage] = []
        for item in items:
            if isinstance(item, ParallelStepGroup):
                item = item.steps
            elif isinstance(item, WorkflowDefinition):
                item = item.as_step()
            stage = (item,) if isinstance(item, Step) else tuple(item)
            for s in stage:
                if not isinstance(s, Step):
                    raise WorkflowDefinitionError(
                        f"a composition holds steps (functions decorated with @step) and "
                        f"parallel groups of them; got {_describe(s)}")
            if not stage:
                raise WorkflowDefinitionError("a parallel group `[...]` needs at least one step")
            stages.append(stage)
        #: The stages, in order; each a tuple of the steps that run together.
        self.stages: tuple[Stage, ...] = tuple(stages)

    @staticmethod
    def of(item: object) -> StepComposition:
        if isinstance(item, StepComposition):
            return item
        if isinstance(item, WorkflowDefinition):
            item = item.as_step()
        if isinstance(item, Step):
            return StepComposition([item])
        if isinstance(item, (list, tuple, set, frozenset)):
            steps = tuple(s.as_step() if isinstance(s, WorkflowDefinition) else s
                          for s in item)
            if not steps:
                raise WorkflowDefinitionError("a parallel group `[...]` needs at least one step")
            for s in steps:
                if not isinstance(s, Step):
                    raise WorkflowDefinitionError(
                        f"a parallel group holds steps (functions decorated with @step); "
                        f"got {_describe(s)}")
            return StepComposition([steps])
        raise WorkflowDefinitionError(
            f"expected a step, a chain `a >> b` or a parallel group `[a, b]`; got {_describe(item)}")

    @staticmethod
    def by_dependencies(items: Chainable) -> StepComposition:
        """A list's steps in the stages their dependencies on each other
        need: those that need none of the others run first, together; then
        those that need only them; and so on (``[price, quantity, total]``
        with ``total(context, price, quantity)``: ``[price, quantity] >>
        total``). Members that do not depend on each other stay one
        parallel stage. A cycle is left as it is, for the workflow's
        validation to report with its path."""
        group = StepComposition.of(items).stages[0]
        names = {s.name for s in group}
        stages: list[Stage] = []
        done: set[str] = set()
        left = list(group)
        while left:
            ready = tuple(s for s in left
                          if all(d in done or d not in names or d == s.name
                                 for d in s.dependencies))
            stage = ready or tuple(left)
            stages.append(stage)
            done.update(s.name for s in stage)
            left = [s for s in left if s not in stage]
        return StepComposition(stages)

    def __rshift__(self, other: Chainable) -> StepComposition:
        return StepComposition(self.stages + StepComposition.of(other).stages)

    def __rrshift__(self, other: Collection[object]) -> StepComposition:  # see Step's
        return StepComposition(StepComposition.of(other).stages + self.stages)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StepComposition) and self.stages == other.stages

    def __hash__(self) -> int:
        return hash(self.stages)

    @property
    def items(self) -> list[Step[Any, Any] | ParallelStepGroup]:
        """Each stage's step, or its :class:`ParallelStepGroup` when it holds several."""
        return [stage[0] if len(stage) == 1 else ParallelStepGroup(stage)
                for stage in self.stages]

    @property
    def steps(self) -> list[Step[Any, Any] | ParallelStepGroup]:
        """The original SDK's name for :attr:`items`."""
        return self.items

    def all_steps(self) -> Iterable[Step[Any, Any]]:
        """Every step, stage after stage."""
        for stage in self.stages:
            yield from stage

    def __repr__(self) -> str:
        parts = [f"[{', '.join(s.name for s in stage)}]" if len(stage) > 1 else stage[0].name
                 for stage in self.stages]
        return f"StepComposition({' >> '.join(parts)})"


#: What ``>>``, ``wf.timeline`` and the targets of ``diverge`` and
#: ``branch`` take: a step, a workflow (run as a child), a chain, or a
#: parallel group ``[a, b]`` of steps or workflows.
Chainable = Union["Step[Any, Any]", "WorkflowDefinition", StepComposition,
                  Collection[Union["Step[Any, Any]", "WorkflowDefinition"]]]

#: A target once parsed: a chain, ``"retry"``/``"fail"``, or ``None``
#: (go on with the timeline).
Target = Union[StepComposition, str, None]


@dataclass
class Diverge:
    step: Step[Any, Any]
    #: (pattern, target) in the order given.
    routes: list[tuple[str, Target]]


@dataclass
class Branch:
    after: Step[Any, Any]
    condition: Callable[[dict[str, Any]], object]
    when_true: Target
    when_false: Target


@dataclass
class WorkflowBuilder:
    """What the body of a ``@workflow`` function receives as ``wf``."""

    name: str
    timeline_chain: StepComposition | None = None
    diverges: dict[str, Diverge] = field(default_factory=dict)
    branches: dict[str, Branch] = field(default_factory=dict)

    def timeline(self, *items: Chainable) -> None:
        """The main path: ``wf.timeline(a >> [b, c] >> d)``.

        A list given to it directly, ``wf.timeline([a, b, c])``, runs its
        steps in the order their dependencies on each other need, as the
        original SDK did: those that need none of the others together,
        then the ones that need them (``[price, quantity, total]`` runs as
        ``[price, quantity] >> total``). Inside a chain, ``a >> [b, c]`` is
        a parallel group as written, and a step of it may not need
        another of it."""
        if self.timeline_chain is not None:
            raise WorkflowDefinitionError(
                f"workflow `{self.name}` calls wf.timeline twice; join the parts with `>>`")
        if not items:
            raise WorkflowDefinitionError(
                f"workflow `{self.name}` has an empty timeline: give it steps, "
                "e.g. wf.timeline(first >> second)")
        parts = [StepComposition.by_dependencies(item)
                 if isinstance(item, (list, tuple, set, frozenset)) else StepComposition.of(item)
                 for item in items]
        chain = parts[0]
        for part in parts[1:]:
            chain = chain >> part
        self.timeline_chain = chain

    def diverge(self, step: Step[Any, Any],
                routes: dict[str, Chainable | Literal["retry", "fail"]]) -> None:
        """Routes on a step's result: ``wf.diverge(s, {"timeout": t, "error": rollback})``.

        A pattern matches an error result when it is ``"error"`` (any error)
        or appears in the error message, and an ``ok`` result when it is
        ``"ok"`` or equals the value. A target is a step or chain to go on
        with instead of the rest of the timeline, ``"retry"`` (run the step
        again, up to 3 times) or ``"fail"`` (end the workflow with the
        step's error).
        """
        s = _step_arg(self.name, "diverge", step)
        if not isinstance(routes, dict) or not routes:
            raise WorkflowDefinitionError(
                f"workflow `{self.name}`: wf.diverge({s.name}, ...) needs a dict of "
                "patterns to targets, e.g. {\"error\": rollback}")
        if s.name in self.diverges:
            raise WorkflowDefinitionError(
                f"workflow `{self.name}` has two diverges on step `{s.name}`; merge their patterns")
        parsed: list[tuple[str, Target]] = []
        for pattern, target in routes.items():
            if not isinstance(pattern, str):
                raise WorkflowDefinitionError(
                    f"workflow `{self.name}`: diverge on `{s.name}`: pattern {pattern!r} "
                    "must be a string (\"ok\", \"error\" or text of the error message)")
            parsed.append((pattern, _target(self.name, f"diverge on `{s.name}`", target,
                                            allow_none=False)))
        self.diverges[s.name] = Diverge(s, parsed)

    def branch(self, after: Step[Any, Any], condition: Callable[[dict[str, Any]], object],
               when_true: Chainable | Literal["fail"] | None = None,
               when_false: Chainable | Literal["fail"] | None = None) -> None:
        """After ``after`` succeeds, ``condition(result)`` picks the path:
        ``when_true`` or ``when_false`` (a step, a chain, ``"fail"``, or
        ``None`` to go on with the timeline). ``result`` is the step's
        result as ``{"ok": value}``."""
        s = _step_arg(self.name, "branch", after)
        if not callable(condition):
            raise WorkflowDefinitionError(
                f"workflow `{self.name}`: branch after `{s.name}` needs a callable "
                f"condition, got {_describe(condition)}")
        if s.name in self.branches:
            raise WorkflowDefinitionError(
                f"workflow `{self.name}` has two branches after step `{s.name}`")
        self.branches[s.name] = Branch(
            s, condition,
            _target(self.name, f"branch after `{s.name}`", when_true, allow_none=True),
            _target(self.name, f"branch after `{s.name}`", when_false, allow_none=True))


def _describe(value: object) -> str:
    if callable(value) and hasattr(value, "__name__"):
        return f"function `{value.__name__}` (is it missing @step?)"
    return f"{type(value).__name__} {value!r}"


def _step_arg(workflow: str, what: str, value: object) -> Step[Any, Any]:
    if not isinstance(value, Step):
        raise WorkflowDefinitionError(
            f"workflow `{workflow}`: wf.{what} expects a step, got {_describe(value)}")
    return value


def _target(workflow: str, where: str, target: Chainable | str | None, *,
            allow_none: bool) -> Target:
    if target is None and allow_none:
        return None
    if isinstance(target, str):
        if target not in (RETRY, FAIL) or (target == RETRY and where.startswith("branch")):
            allowed = '"fail"' if where.startswith("branch") else '"retry" or "fail"'
            raise WorkflowDefinitionError(
                f"workflow `{workflow}`: {where}: unknown target {target!r}; "
                f"use a step, a chain, or {allowed}")
        return target
    try:
        return StepComposition.of(target)
    except WorkflowDefinitionError as e:
        raise WorkflowDefinitionError(f"workflow `{workflow}`: {where}: {e}") from None


class WorkflowDefinition:
    """What ``@workflow`` declares: the body, run once at definition,
    declares the graph. The public :class:`cerebelum.Workflow` adds
    ``execute``."""

    def __init__(self, fn: Callable[[WorkflowBuilder], object], name: str | None = None):
        self.fn = fn
        self.name = name or fn.__name__
        self.description = inspect.getdoc(fn) or ""
        if inspect.iscoroutinefunction(fn):
            # Called, it would only make a coroutine: the graph would be
            # empty. The original SDK refuses it as a StepDefinitionError.
            text = (f"workflow `{self.name}`: remove `async` from `async def {fn.__name__}(wf)`; "
                    "a workflow's body must not be async: it is a plain `def`, run once when "
                    "the workflow is defined to declare its graph "
                    f"(`def {fn.__name__}(wf): wf.timeline(a >> b)`); the steps are the "
                    "`async def` functions")
            raise StepDefinitionError(self.name, text, text=text, workflow_name=self.name)
        try:
            self._define(fn)
        except WorkflowDefinitionError as e:
            if e.workflow_name is None:
                e.workflow_name = self.name
            raise

    def _define(self, fn: Callable[[WorkflowBuilder], object]) -> None:
        builder = WorkflowBuilder(self.name)
        fn(builder)
        if builder.timeline_chain is None:
            raise WorkflowDefinitionError(
                f"workflow `{self.name}` has an empty timeline: call "
                "wf.timeline(first >> second) in its body")
        self.timeline = builder.timeline_chain
        self.diverges = builder.diverges
        self.branches = builder.branches
        self._steps: dict[str, Step[Any, Any]] | None = None
        _validate(self)
        known = WORKFLOWS.get(self.name)
        if known is not None and known.fn.__qualname__ != fn.__qualname__:
            raise WorkflowDefinitionError(
                f"two workflows are named `{self.name}`; rename one")
        WORKFLOWS[self.name] = self

    def __repr__(self) -> str:
        return f"<workflow {self.name}>"

    def __rshift__(self, other: Chainable) -> StepComposition:
        return StepComposition.of(self) >> other

    def __rrshift__(self, other: Collection[object]) -> StepComposition:  # see Step's
        return StepComposition.of(other) >> self

    def as_step(self) -> Step[Any, Any]:
        """The workflow as a step of another's timeline (``prepare >>
        deploy_server >> notify``): the step runs it as a child workflow
        with the parent's input and returns the child's result
        (``{"output": ..., "steps": {...}}``)."""
        step = getattr(self, "_as_step", None)
        if step is None:
            child = self

            async def run_child(context: Any, inputs: Any) -> dict[str, Any]:
                # context: a cerebelum.Context (its module imports this one).
                result: dict[str, Any] = await context.child(child, inputs)
                return result

            run_child.__qualname__ = f"workflow {self.name}"
            run_child.__doc__ = f"Runs workflow `{self.name}` as a child."
            step = Step(run_child, name=self.name)
            self._as_step = step
        return step

    def validate(self) -> "ValidationReport":
        """The workflow's :class:`ValidationReport`, as in the original
        SDK: ``report.is_valid``, ``report.errors``, ``report.warnings``.

        Mistakes are refused when the workflow is defined (a
        :class:`WorkflowDefinitionError` whose ``errors`` lists them), so a
        defined workflow's report has no errors; its warnings are what is
        allowed but may be a mistake: no step reads the workflow input, a
        parameter named after a step of another workflow (it reads the
        input's field of that name), a diverge or branch on a step that no
        path runs."""
        report = ValidationReport()
        steps = self.steps()
        if not any(p == "inputs" or p not in steps for s in steps.values() for p in s.params):
            report.add_warning(
                f"workflow `{self.name}` has no entry point: no step reads the workflow input "
                "(a parameter `inputs`, or one named after a field of the input)")
        for s in steps.values():
            for p in s.params:
                if p != "inputs" and p not in steps and p in STEPS:
                    report.add_warning(
                        f"step `{s.name}`: parameter `{p}` names step `{p}`, which is not part "
                        f"of workflow `{self.name}`: it receives the workflow input's field "
                        f"`{p}` instead; add `{p}` to the timeline if it should run first")
        paths = [self.timeline]
        for d in self.diverges.values():
            paths += [t for _, t in d.routes if isinstance(t, StepComposition)]
        for b in self.branches.values():
            paths += [t for t in (b.when_true, b.when_false) if isinstance(t, StepComposition)]
        reached = {s.name for path in paths for s in path.all_steps()}
        for what, name in ([("diverge on", n) for n in self.diverges]
                           + [("branch after", n) for n in self.branches]):
            if name not in reached:
                report.add_warning(
                    f"workflow `{self.name}`: the {what} `{name}` never applies: `{name}` is "
                    "not in the timeline nor in a path of a diverge or branch")
        return report

    def steps(self) -> dict[str, Step[Any, Any]]:
        """Every step the workflow may run, by name."""
        if self._steps is None:
            self._steps = self._find_steps()
        return self._steps

    def _find_steps(self) -> dict[str, Step[Any, Any]]:
        found: dict[str, Step[Any, Any]] = {}
        chains = [self.timeline]
        for d in self.diverges.values():
            found.setdefault(d.step.name, d.step)
            chains += [t for _, t in d.routes if isinstance(t, StepComposition)]
        for b in self.branches.values():
            found.setdefault(b.after.name, b.after)
            chains += [t for t in (b.when_true, b.when_false) if isinstance(t, StepComposition)]
        for chain in chains:
            for s in chain.all_steps():
                found.setdefault(s.name, s)
        return found


@dataclass
class ValidationReport:
    """What :meth:`WorkflowDefinition.validate` finds, as the original
    SDK's ``ValidationReport``: ``errors`` block a workflow, ``warnings``
    do not; ``is_valid`` when there are no errors."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def is_valid(self) -> bool:
        return not self.errors

    def add_error(self, message: str) -> None:
        self.errors.append(message)

    def add_warning(self, message: str) -> None:
        self.warnings.append(message)


def find_workflow(workflow: WorkflowDefinition | str) -> WorkflowDefinition:
    """``workflow`` itself, or the workflow of that name defined in this
    process."""
    if isinstance(workflow, WorkflowDefinition):
        return workflow
    found: WorkflowDefinition | None = WORKFLOWS.get(workflow)
    if found is None:
        raise WorkflowDefinitionError(
            f"no workflow named {workflow!r} is defined in this process "
            f"(defined: {workflow_names()})")
    return found


def _validate(wf: WorkflowDefinition) -> None:
    steps = wf.steps()
    # A parameter that names no step of the workflow is a field of its
    # input (checked when the step runs). No dependency cycle:
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = path[path.index(name):] + [name]
            raise WorkflowDefinitionError(
                f"workflow `{wf.name}` has a dependency cycle: {' -> '.join(cycle)} "
                "(each name is a parameter of the step before it)")
        state[name] = 1
        for dep in steps[name].dependencies:
            if dep in steps:
                visit(dep, path + [name])
        state[name] = 2

    for name in steps:
        visit(name, [])
    # In the timeline, a step needs its dependencies to run in an earlier stage.
    position: dict[str, int] = {}
    for i, stage in enumerate(wf.timeline.stages):
        for s in stage:
            if s.name in position:
                raise WorkflowDefinitionError(
                    f"workflow `{wf.name}`: step `{s.name}` appears twice in the timeline")
            position[s.name] = i
    for i, stage in enumerate(wf.timeline.stages):
        for s in stage:
            for dep in s.dependencies:
                if dep in position and position[dep] >= i:
                    when = "together with" if position[dep] == i else "after"
                    raise WorkflowDefinitionError(
                        f"workflow `{wf.name}`: step `{s.name}` needs `{dep}` (parameter "
                        f"`{dep}`), but the timeline runs `{dep}` {when} it; put `{dep}` "
                        "in an earlier stage")
