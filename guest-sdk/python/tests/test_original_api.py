"""The rest of the original SDK's public API, as it documents it: a list
given to ``timeline`` ordered by its dependencies, ``Workflow.validate()``,
``@workflow(core_url=...)``, a hand-built ``Context``, the ``cerebelum.dsl``
exceptions, what is refused at definition, ``StepComposition`` /
``ParallelStepGroup`` and the registries."""

import asyncio
import warnings

import pytest

import cerebelum
from cerebelum import (Context, ParallelStepGroup, ProgressReporter, StepComposition,
                       StepRegistry, WorkflowDefinitionError, WorkflowRegistry, step, workflow)
from cerebelum.dsl import (DependencyError, DSLError, StepDefinitionError, StepExecutionError,
                           ValidationReport)


def stages(wf) -> list[list[str]]:
    return [[s.name for s in stage] for stage in wf.timeline.stages]


# ------------------------------------------------- timeline([...]) ordering

def test_a_timeline_list_runs_in_the_order_its_dependencies_need():
    # The original's own example (test_phase5_smoke, "multiple dependencies").
    @step
    async def fetch_price(context: Context, inputs: dict):
        return {"ok": 100}

    @step
    async def fetch_quantity(context: Context, inputs: dict):
        return {"ok": 3}

    @step
    async def calculate_total(context: Context, fetch_price: dict, fetch_quantity: dict):
        return {"ok": fetch_price * fetch_quantity}

    @workflow
    def cart_workflow(wf):
        wf.timeline([fetch_price, fetch_quantity, calculate_total])

    assert stages(cart_workflow) == [["fetch_price", "fetch_quantity"], ["calculate_total"]]
    result = asyncio.run(cart_workflow.execute({"cart_id": 456}))
    assert result.output == {"ok": 300}


def test_a_timeline_list_written_backwards_is_put_in_order():
    @step
    async def a(context, inputs):
        return ["a"]

    @step
    async def b(context, a):
        return a + ["b"]

    @step
    async def c(context, b):
        return b + ["c"]

    @step
    async def d(context, inputs):
        return "d"

    @workflow
    def w(wf):
        wf.timeline([c, d, b, a])

    assert stages(w) == [["d", "a"], ["b"], ["c"]]
    assert asyncio.run(w.execute({})).output == {"ok": ["a", "b", "c"]}


def test_a_timeline_list_without_dependencies_stays_one_parallel_stage():
    @step
    async def a(context, inputs): ...

    @step
    async def b(context, inputs): ...

    @step
    async def c(context, a, b): ...

    @workflow
    def w(wf):
        wf.timeline([a, b])

    assert stages(w) == [["a", "b"]]

    @workflow
    def v(wf):
        wf.timeline([a, b], c)  # after an earlier item: as before

    assert stages(v) == [["a", "b"], ["c"]]


def test_a_cycle_inside_a_timeline_list_is_still_reported():
    @step
    async def cycle_a(context: Context, cycle_c: dict): ...

    @step
    async def cycle_b(context: Context, cycle_a: dict): ...

    @step
    async def cycle_c(context: Context, cycle_b: dict): ...

    with pytest.raises(WorkflowDefinitionError, match="dependency cycle") as e:
        @workflow
        def circular_workflow(wf):
            wf.timeline([cycle_a, cycle_b, cycle_c])
    assert e.value.workflow_name == "circular_workflow"


# ----------------------------------------------------------------- validate()

def test_validate_returns_a_report():
    @step
    async def fetch(context, inputs): ...

    @step
    async def use(context, fetch): ...

    @workflow
    def w(wf):
        wf.timeline(fetch >> use)

    report = w.validate()
    assert isinstance(report, ValidationReport)
    assert report.is_valid and report.errors == [] and report.warnings == []


def test_validate_warns_of_what_may_be_a_mistake():
    @step
    async def elsewhere(context, inputs): ...

    @step
    async def first(context): ...

    @step
    async def second(context, first, elsewhere): ...

    @step
    async def orphan(context): ...

    @step
    async def handle(context): ...

    @workflow
    def w(wf):
        wf.timeline(first >> second)
        wf.diverge(orphan, {"error": handle})

    report = w.validate()
    assert report.is_valid, report.errors
    text = "\n".join(report.warnings)
    # `elsewhere` is read from the input: the workflow has an entry point.
    assert "no entry point" not in text
    assert "parameter `elsewhere` names step `elsewhere`, which is not part of workflow `w`" in text
    assert "the diverge on `orphan` never applies" in text

    @workflow
    def lonely(wf):
        wf.timeline(first)

    assert any("has no entry point" in warning for warning in lonely.validate().warnings)


# ------------------------------------------------------- @workflow(core_url=)

def test_workflow_accepts_core_url_and_distributed_execute_uses_it(monkeypatch):
    pytest.importorskip("grpc")
    import cerebelum.distributed as distributed

    @step
    async def a(context, inputs):
        return 1

    @workflow(core_url="production:9090")
    def remote(wf):
        wf.timeline(a)

    @workflow
    def plain(wf):
        wf.timeline(a)

    assert remote.core_url == "production:9090" and plain.core_url is None
    assert asyncio.run(remote.execute({})).output == {"ok": 1}  # local runs ignore it

    servers = []

    class Recorder:
        def __init__(self, server, **_):
            servers.append(server)

        async def serve(self, wf, inputs, **_):
            servers.append("served")

        async def run(self, wf, inputs, **_):
            return "done"

        def close(self):
            return asyncio.sleep(0)

    monkeypatch.setattr(distributed, "DistributedExecutor", Recorder)
    assert asyncio.run(remote.execute({}, distributed=True)) is None
    assert asyncio.run(remote.execute({}, distributed=True, once=True,
                                      server="http://other:1")) == "done"
    asyncio.run(plain.execute({}, distributed=True, once=True))
    assert servers == ["production:9090", "served", "http://other:1", None]


# ------------------------------------------------------- a hand-built Context

def test_a_context_built_by_hand_is_a_test_double_for_a_step(capsys, monkeypatch):
    @step
    async def fetch_user(context: Context, inputs: dict):
        ProgressReporter(context).update(50, "halfway")
        return {"ok": {"id": inputs["user_id"], "execution": context.execution_id,
                       "attempt": context.attempt, "step": context.step_name,
                       "workflow": context.workflow_name, "token": context.secret("api")}}

    monkeypatch.setenv("CEREBELUM_SECRET_API", "s3cret")
    ctx = Context(inputs={"user_id": 7}, execution_id="test-1", workflow_name="onboarding",
                  step_name="fetch_user", attempt=2)
    assert ctx.inputs == {"user_id": 7}
    result = asyncio.run(fetch_user(ctx, {"user_id": 7}))
    assert result == {"ok": {"id": 7, "execution": "test-1", "attempt": 2, "step": "fetch_user",
                             "workflow": "onboarding", "token": "s3cret"}}
    assert capsys.readouterr().out == "  [fetch_user] ██████████░░░░░░░░░░ 50% - halfway\n"

    # The original's positional order, and its default attempt.
    ctx = Context({"x": 1}, "exec-2", "wf", "s")
    assert (ctx.inputs, ctx.execution_id, ctx.workflow_name, ctx.step_name, ctx.attempt) == (
        {"x": 1}, "exec-2", "wf", "s", 1)
    with pytest.raises(cerebelum.CerebelumError, match="built by hand"):
        asyncio.run(ctx.child("other", {}))
    with pytest.raises(cerebelum.SecretError, match="CEREBELUM_SECRET_NONE"):
        ctx.secret("none")


# --------------------------------------------------------- cerebelum.dsl errors

def test_the_dsl_exceptions_and_their_hierarchy():
    for cls in (StepDefinitionError, WorkflowDefinitionError, DependencyError,
                StepExecutionError):
        assert issubclass(cls, DSLError) and issubclass(cls, cerebelum.CerebelumError)
    assert cerebelum.dsl.WorkflowDefinitionError is WorkflowDefinitionError

    # The original's constructors and attributes.
    e = WorkflowDefinitionError("w", ["empty timeline", "a cycle"])
    assert (e.workflow_name, e.errors) == ("w", ["empty timeline", "a cycle"])
    assert str(e) == "Workflow 'w' validation failed:\n  - empty timeline\n  - a cycle"
    e = StepDefinitionError("s", "must be async")
    assert (e.step_name, e.message, str(e)) == ("s", "must be async", "Step 's': must be async")
    e = DependencyError("b", "a", "not executed yet")
    assert (e.step_name, e.dependency, e.reason) == ("b", "a", "not executed yet")
    assert str(e) == "Step 'b' cannot resolve dependency 'a': not executed yet"
    cause = ValueError("boom")
    e = StepExecutionError("s", "boom", original_error=cause, execution_id="x-1")
    assert (e.step_name, e.message, e.original_error, e.execution_id) == ("s", "boom", cause, "x-1")
    assert str(e) == "[x-1] Step 's' execution failed: boom\n  Caused by: ValueError: boom"


def test_a_definition_error_names_its_workflow_and_lists_its_errors():
    @step
    async def a(context, inputs): ...

    @step
    async def b(context, a): ...

    with pytest.raises(WorkflowDefinitionError) as e:
        @workflow
        def late(wf):
            wf.timeline(b >> a)
    assert e.value.workflow_name == "late"
    assert e.value.errors == [str(e.value)] and "step `b` needs `a`" in str(e.value)

    with pytest.raises(WorkflowDefinitionError) as e:
        @workflow
        def empty(wf):
            pass
    assert e.value.workflow_name == "empty" and len(e.value.errors) == 1


# ------------------------------------------------------ refused at definition

def test_an_async_workflow_body_is_refused_clearly():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "coroutine was never awaited"
        with pytest.raises(StepDefinitionError) as e:
            @workflow
            async def async_workflow_bad(wf):
                wf.timeline([])
    message = str(e.value)
    assert "remove `async`" in message and "must not be async" in message, message
    assert isinstance(e.value, WorkflowDefinitionError)
    assert e.value.workflow_name == "async_workflow_bad"
    assert "async_workflow_bad" not in WorkflowRegistry.all()


def test_a_step_without_a_context_parameter_is_refused_clearly():
    with pytest.raises(StepDefinitionError) as e:
        @step
        async def fetch(inputs: dict): ...
    assert e.value.step_name == "fetch"
    assert "step `fetch` has no context parameter" in str(e.value)
    assert "`async def fetch(context, inputs)`" in str(e.value)

    with pytest.raises(StepDefinitionError, match="has no context parameter"):
        @step
        async def validate(fetch_user): ...

    with pytest.raises(StepDefinitionError, match="must be an `async def`"):
        @step
        def sync_step(context, inputs): ...

    # Still accepted: the usual names, an unused one, or the annotation.
    @step
    async def s1(ctx, inputs): ...

    @step
    async def s2(_, inputs): ...

    @step
    async def s3(c: Context, inputs): ...

    @step
    async def s4(c: "cerebelum.Context"): ...

    assert [s.params for s in (s1, s2, s3, s4)] == [["inputs"], ["inputs"], ["inputs"], []]


# ------------------------------------------ StepComposition, ParallelStepGroup

def test_compositions_under_the_originals_names():
    @step
    async def a(context, inputs): ...

    @step
    async def b(context, a): ...

    @step
    async def c(context, a): ...

    @step
    async def d(context, b, c): ...

    chain = a >> b
    assert isinstance(chain, StepComposition) and cerebelum.dsl.StepComposition is StepComposition
    assert chain.steps == [a, b] and isinstance(chain.steps, list)
    assert repr(chain) == "StepComposition(a >> b)"

    full = a >> [b, c] >> d
    assert full.steps == full.items == [a, ParallelStepGroup([b, c]), d]
    group = full.steps[1]
    assert isinstance(group, ParallelStepGroup) and group.steps == [b, c]
    assert repr(full) == "StepComposition(a >> [b, c] >> d)"
    assert repr(group) == "ParallelStepGroup([b, c])"

    # Built from the original's list of items, it is the same chain.
    assert StepComposition([a, ParallelStepGroup([b, c]), d]) == full
    with pytest.raises(ValueError):
        ParallelStepGroup([])

    @workflow
    def w(wf):
        wf.timeline(StepComposition([a, ParallelStepGroup([b, c]), d]))

    assert stages(w) == [["a"], ["b", "c"], ["d"]]


# ------------------------------------------------------------------ registries

def test_step_and_workflow_registries_are_public_lookups():
    @step
    async def fetch(context, inputs): ...

    @workflow
    def w(wf):
        wf.timeline(fetch)

    assert StepRegistry.get("fetch") is fetch and StepRegistry.get("nope") is None
    assert WorkflowRegistry.get("w") is w and WorkflowRegistry.get("nope") is None
    assert StepRegistry.all() == {"fetch": fetch} and WorkflowRegistry.all() == {"w": w}
    assert cerebelum.dsl.StepRegistry is StepRegistry
    StepRegistry.all().clear()  # a copy
    assert StepRegistry.get("fetch") is fetch

    StepRegistry.clear()
    WorkflowRegistry.clear()
    assert StepRegistry.all() == {} and WorkflowRegistry.get("w") is None
    StepRegistry.register(fetch)
    WorkflowRegistry.register(w)
    assert StepRegistry.get("fetch") is fetch and WorkflowRegistry.get("w") is w


def test_the_originals_all_names_these():
    for name in ("StepComposition", "ParallelStepGroup", "StepRegistry", "WorkflowRegistry"):
        assert name in cerebelum.__all__ and hasattr(cerebelum, name)
    for name in ("DSLError", "StepDefinitionError", "WorkflowDefinitionError",
                 "DependencyError", "StepExecutionError", "StepComposition",
                 "ParallelStepGroup", "StepRegistry", "WorkflowRegistry", "ValidationReport"):
        assert name in cerebelum.dsl.__all__ and hasattr(cerebelum.dsl, name)
