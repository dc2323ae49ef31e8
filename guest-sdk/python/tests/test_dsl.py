"""Definition-time validation: every mistake is reported when the
workflow is defined, naming the step and parameter."""

import pytest

from cerebelum import WorkflowDefinitionError, step, workflow


def test_chains_and_parallel_groups_make_stages():
    @step
    async def a(context, inputs): ...

    @step
    async def b(context, a): ...

    @step
    async def c(context, a): ...

    @step
    async def d(context, b, c): ...

    @workflow
    def w(wf):
        wf.timeline(a >> [b, c] >> d)

    assert [[s.name for s in stage] for stage in w.timeline.stages] == [["a"], ["b", "c"], ["d"]]


def test_a_group_may_start_a_chain():
    @step
    async def a(context, inputs): ...

    @step
    async def b(context, inputs): ...

    @step
    async def c(context, a, b): ...

    @workflow
    def w(wf):
        wf.timeline([a, b] >> c)

    assert [[s.name for s in stage] for stage in w.timeline.stages] == [["a", "b"], ["c"]]


def test_a_parameter_naming_no_step_is_an_input_field_and_a_missing_one_is_explained():
    import asyncio

    from cerebelum import ExecutionError

    @step
    async def create_droplet(context, inputs): ...

    @step
    async def wait_for_ip(context, create_dropet): ...

    @workflow
    def deploy(wf):
        wf.timeline(create_droplet >> wait_for_ip)

    with pytest.raises(ExecutionError) as e:
        asyncio.run(deploy.execute({"name": "web-1"}))
    text = str(e.value)
    assert e.value.step_name == "wait_for_ip", text
    assert "parameter `create_dropet` is not `inputs`, nor a step of workflow `deploy`" in text
    assert "(its fields: name)" in text and "did you mean step `create_droplet`?" in text


def test_cycle_is_reported_with_its_path():
    @step
    async def a(context, b): ...

    @step
    async def b(context, a): ...

    with pytest.raises(WorkflowDefinitionError, match=r"dependency cycle: (a -> b -> a|b -> a -> b)"):
        @workflow
        def w(wf):
            wf.timeline(a >> b)


def test_dependency_on_a_later_or_parallel_step():
    @step
    async def a(context, inputs): ...

    @step
    async def b(context, a): ...

    @step
    async def start(context, inputs): ...

    # In a chain, `[a, b]` is a parallel group as written. (A list given to
    # timeline directly is ordered by its dependencies: test_timeline_list.)
    with pytest.raises(WorkflowDefinitionError, match="step `b` needs `a`.*together with"):
        @workflow
        def w(wf):
            wf.timeline(start >> [a, b])

    with pytest.raises(WorkflowDefinitionError, match="step `b` needs `a`.*after"):
        @workflow
        def v(wf):
            wf.timeline(b >> a)


def test_empty_timeline():
    with pytest.raises(WorkflowDefinitionError, match="workflow `w` has an empty timeline"):
        @workflow
        def w(wf):
            pass

    with pytest.raises(WorkflowDefinitionError, match="empty timeline"):
        @workflow
        def v(wf):
            wf.timeline()


def test_steps_must_be_async_and_take_a_context():
    with pytest.raises(WorkflowDefinitionError, match="step `s` must be an `async def`"):
        @step
        def s(context, inputs): ...

    with pytest.raises(WorkflowDefinitionError, match="context as its first parameter"):
        @step
        async def t(): ...


def test_undecorated_function_in_a_timeline():
    @step
    async def a(context, inputs): ...

    async def plain(context, a): ...

    with pytest.raises(WorkflowDefinitionError, match="function `plain` .*missing @step"):
        @workflow
        def w(wf):
            wf.timeline(a >> [plain])


def test_bad_diverge_and_branch_targets():
    @step
    async def a(context, inputs): ...

    with pytest.raises(WorkflowDefinitionError, match="unknown target 'again'"):
        @workflow
        def w(wf):
            wf.timeline(a)
            wf.diverge(a, {"error": "again"})

    with pytest.raises(WorkflowDefinitionError, match="needs a callable condition"):
        @workflow
        def v(wf):
            wf.timeline(a)
            wf.branch(after=a, condition=True, when_true=a)


def test_two_steps_with_one_name():
    @step
    async def a(context, inputs): ...

    def make():
        @step
        async def a(context, inputs): ...

    with pytest.raises(WorkflowDefinitionError, match="two steps are named `a`"):
        make()
