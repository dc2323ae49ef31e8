"""Local mode: workflows run under plain CPython, every helper works."""

import asyncio
import json
from datetime import timedelta

import pytest

from cerebelum import (ApprovalRejectedError, ApprovalTimeoutError, Context, ExecutionError,
                       PollTimeoutError, ProgressReporter, poll, retry, sleep, step,
                       wait_for_approval, workflow)
from conftest import run


def test_dependencies_by_name_and_result_wrapping():
    @step
    async def create(context: Context, inputs: dict):
        assert context.step_name == "create" and context.workflow_name == "deploy"
        assert context.inputs == inputs
        return {"id": "d-" + inputs["name"]}

    @step
    async def configure(context, create, inputs):
        return {"ok": {"configured": create["id"], "for": inputs["name"]}}

    @workflow
    def deploy(wf):
        wf.timeline(create >> configure)

    r = run(deploy.execute({"name": "web-1"}))
    assert r.status == "completed" and r.ok and r.error is None
    assert r.steps == {"create": {"id": "d-web-1"},
                        "configure": {"configured": "d-web-1", "for": "web-1"}}
    assert r.completed_at >= r.started_at and len(r.execution_id) == 36
    assert r.output == {"ok": {"configured": "d-web-1", "for": "web-1"}}
    assert r.output["ok"]["configured"] == "d-web-1", "the original's result.output['ok']"


def test_an_exception_fails_the_workflow_with_its_message():
    ran = []

    @step
    async def a(context, inputs):
        raise ValueError("disk full")

    @step
    async def b(context, a):
        ran.append("b")

    @workflow
    def w(wf):
        wf.timeline(a >> b)

    with pytest.raises(ExecutionError) as e:
        run(w.execute({}))
    assert str(e.value) == "Execution failed at step 'a': Step 'a' returned error: disk full"
    assert (e.value.step_name, e.value.error) == ("a", "disk full")
    r = e.value.result
    assert r.status == "failed" and r.error == "step `a` failed: disk full"
    assert r.steps == {"a": {"error": "disk full"}} and r.output == {"error": "disk full"}
    assert ran == []


def test_parallel_group_runs_concurrently():
    # Each waits for the other: only concurrent execution finishes.
    events = {}

    @step
    async def left(context, inputs):
        events.setdefault("left", asyncio.Event()).set()
        await asyncio.wait_for(events.setdefault("right", asyncio.Event()).wait(), 5)
        return "l"

    @step
    async def right(context, inputs):
        events.setdefault("right", asyncio.Event()).set()
        await asyncio.wait_for(events.setdefault("left", asyncio.Event()).wait(), 5)
        return "r"

    @step
    async def join(context, left, right):
        return left + right

    @workflow
    def fan(wf):
        wf.timeline([left, right] >> join)

    r = run(fan.execute({}))
    assert r.status == "completed", r.error
    assert r.steps["join"] == "lr"


def test_non_json_results_are_refused_like_in_the_engine():
    @step
    async def a(context, inputs):
        return {"when": object()}

    @step
    async def t(context, inputs):
        return (1, 2)

    @workflow
    def w(wf):
        wf.timeline(t >> a)

    with pytest.raises(ExecutionError) as e:
        run(w.execute({}))
    assert e.value.result.steps["t"] == [1, 2]
    assert e.value.step_name == "a" and "result of step `a` is not JSON" in str(e.value)


def test_diverge_routes_errors_by_pattern():
    @step
    async def install(context, inputs):
        raise TimeoutError("SSH timeout after 30 s")

    @step
    async def retry_install(context, inputs):
        return "reinstalled"

    @step
    async def rollback(context, inputs):
        return "rolled back"

    @step
    async def notify(context, inputs):
        return "notified"

    @workflow
    def w(wf):
        wf.timeline(install >> notify)
        wf.diverge(install, {"timeout": retry_install >> notify, "error": rollback})

    r = run(w.execute({}))
    assert r.status == "completed", r.error
    assert r.steps == {"install": {"error": "SSH timeout after 30 s"},
                        "retry_install": "reinstalled", "notify": "notified"}

    @step
    async def install2(context, inputs):
        raise RuntimeError("package not found")

    @workflow
    def v(wf):
        wf.timeline(install2 >> notify)
        wf.diverge(install2, {"timeout": retry_install, "error": rollback})

    r = run(v.execute({}))
    assert r.status == "completed"
    assert list(r.steps) == ["install2", "rollback"]


def test_diverge_retry_and_fail():
    calls = []

    @step
    async def flaky(context, inputs):
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("reset")
        return "up"

    @workflow
    def w(wf):
        wf.timeline(flaky)
        wf.diverge(flaky, {"error": "retry"})

    r = run(w.execute({}))
    assert r.status == "completed" and r.steps == {"flaky": "up"} and len(calls) == 3

    @step
    async def broken(context, inputs):
        raise ConnectionError("refused")

    @workflow
    def v(wf):
        wf.timeline(broken)
        wf.diverge(broken, {"refused": "fail"})

    with pytest.raises(ExecutionError, match="at step 'broken': Step 'broken' returned "
                       "error: refused"):
        run(v.execute({}))


def test_branch_picks_a_path_on_the_result():
    @step
    async def check(context, inputs):
        return {"healthy": inputs["healthy"]}

    @step
    async def done(context, check):
        return "done"

    @step
    async def rollback(context, check):
        return "rolled back"

    @workflow
    def w(wf):
        wf.timeline(check)
        wf.branch(after=check, condition=lambda r: r["ok"]["healthy"],
                  when_true=done, when_false=rollback)

    assert run(w.execute({"healthy": True})).steps == {"check": {"healthy": True},
                                                         "done": "done"}
    assert run(w.execute({"healthy": False})).steps == {"check": {"healthy": False},
                                                          "rollback": "rolled back"}


def test_a_failure_outside_any_step_names_no_step():
    # The branch leads back to its own step: the run limit ends it, and
    # no step failed, so the message names none (it said step 'None').
    @step
    async def check(context, inputs):
        return {"healthy": False}

    @step
    async def done(context, check):
        return "done"

    @workflow
    def w(wf):
        wf.timeline(check)
        wf.branch(after=check, condition=lambda r: r["ok"]["healthy"],
                  when_true=done, when_false=check)

    with pytest.raises(ExecutionError) as e:
        run(w.execute({}))
    assert e.value.step_name is None
    assert str(e.value).startswith("Execution failed: the workflow ran more than 10000 steps")
    assert "None" not in str(e.value)


def test_sleep_takes_milliseconds_or_timedelta():
    @step
    async def nap(context, inputs):
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await sleep(30)
        await sleep(timedelta(milliseconds=30))
        return loop.time() - t0

    @workflow
    def w(wf):
        wf.timeline(nap)

    r = run(w.execute({}))
    assert r.steps["nap"] >= 0.06


def test_poll_until_ready_with_condition_and_on_attempt():
    state = {"n": 0}
    seen = []

    class Droplet:  # any object, as the original's users poll (not JSON)
        def __init__(self, ip):
            self.ip_address = ip

    def get_droplet():
        state["n"] += 1
        return Droplet("10.0.0.7" if state["n"] >= 3 else None)

    @step
    async def wait_for_ip(context, inputs):
        d = await poll(check_fn=get_droplet, interval=10, max_attempts=5,
                       success_condition=lambda d: d.ip_address is not None,
                       on_attempt=lambda n, v: seen.append((n, v.ip_address)))
        return d.ip_address

    @workflow
    def w(wf):
        wf.timeline(wait_for_ip)

    r = run(w.execute({}))
    assert r.steps == {"wait_for_ip": "10.0.0.7"} and r.output == {"ok": "10.0.0.7"}
    # Every check, the successful one too.
    assert seen == [(1, None), (2, None), (3, "10.0.0.7")]


def test_poll_succeeds_on_a_truthy_value_by_default():
    values = iter([None, {}, 0, "", {"ip": "10.0.0.9"}])
    seen = []

    async def check():
        return next(values)

    async def main():
        return await poll(check, interval=1, max_attempts=5,
                          on_attempt=lambda n, v: seen.append(v))

    assert run(main()) == {"ip": "10.0.0.9"}
    assert seen == [None, {}, 0, "", {"ip": "10.0.0.9"}]


def test_poll_gives_up():
    async def never():
        return None

    @step
    async def exhausted(context, inputs):
        try:
            await poll(never, interval=1, max_attempts=3)
        except PollTimeoutError as e:
            return {"kind": e.kind, "message": str(e)}

    @step
    async def timed_out(context, inputs):
        try:
            await poll(never, interval=20, max_attempts=100, timeout=50)
        except PollTimeoutError as e:
            return e.kind

    @workflow
    def w(wf):
        wf.timeline([exhausted, timed_out])

    r = run(w.execute({}))
    assert r.steps["exhausted"] == {"kind": "poll-exhausted",
                                     "message": "Polling failed after 3 attempts (interval: 1ms)"}
    assert r.steps["timed_out"] == "poll-timeout"

    async def plain():
        await poll(never, interval=1, max_attempts=2)

    with pytest.raises(TimeoutError, match="Polling failed after 2 attempts"):
        run(plain())


def test_poll_with_a_step_as_check():
    counter = {"n": 0}

    @step
    async def create(context, inputs):
        return {"id": "d-1"}

    @step
    async def is_ready(context, create):
        counter["n"] += 1
        return {"id": create["id"], "ip": "10.1.1.1"} if counter["n"] == 2 else None

    @step
    async def wait(context, create):
        return await poll(is_ready, interval=5, max_attempts=4)

    @workflow
    def w(wf):
        wf.timeline(create >> wait)

    r = run(w.execute({}))
    assert r.status == "completed", r.error
    assert r.steps["wait"] == {"id": "d-1", "ip": "10.1.1.1"}


def test_retry_with_backoff_and_callbacks():
    attempts, errors = [], []

    def ssh(host, *, port):
        attempts.append(len(attempts) + 1)
        if len(attempts) < 3:
            raise ConnectionError(f"{host}:{port} refused")
        return "connected"

    @step
    async def connect(context, inputs):
        return await retry(ssh, "10.0.0.7", port=22, max_attempts=4, delay=5, backoff=2.0,
                           on_error=ConnectionError,
                           on_attempt=lambda n, last: errors.append((n, last and str(last))))

    @step
    async def give_up(context, connect):
        try:
            await retry(lambda: 1 / 0, max_attempts=2, delay=1)
        except ZeroDivisionError as e:  # the last error itself
            return f"{type(e).__name__}: {e}"

    @step
    async def not_retried(context, connect):
        calls = []

        def wrong():
            calls.append(1)
            raise KeyError("ok")

        try:
            await retry(wrong, max_attempts=3, delay=1, on_error=ConnectionError)
        except KeyError:
            return len(calls)

    @workflow
    def w(wf):
        wf.timeline(connect >> [give_up, not_retried])

    r = run(w.execute({}))
    assert r.steps["connect"] == "connected" and attempts == [1, 2, 3]
    assert errors == [(1, None), (2, "10.0.0.7:22 refused"), (3, "10.0.0.7:22 refused")]
    assert r.steps["give_up"] == "ZeroDivisionError: division by zero"
    assert r.steps["not_retried"] == 1, "only on_error's type is retried"


def test_step_retry_policy_and_real_attempt_numbers():
    seen = []

    @step(retry=3)
    async def flaky(context, inputs):
        seen.append(context.attempt)
        if context.attempt < 3:
            raise RuntimeError("not yet")
        return context.attempt

    @workflow
    def w(wf):
        wf.timeline(flaky)

    flaky.retry = type(flaky.retry)(max_attempts=3, delay_ms=1)
    r = run(w.execute({}))
    assert r.steps == {"flaky": 3} and seen == [1, 2, 3]


def test_approvals_are_answered_by_the_handler():
    @step
    async def gate(context, inputs):
        try:
            data = await wait_for_approval("deploy", data={"env": "prod"})
            return {"approved": data}
        except ApprovalRejectedError as e:
            return {"rejected": e.reason}

    @workflow
    def w(wf):
        wf.timeline(gate)

    asked = []

    def handler(kind, data):
        asked.append((kind, data))
        return {"by": "ana"}

    r = run(w.execute({}, approval_handler=handler))
    assert r.steps == {"gate": {"approved": {"by": "ana"}}}
    assert asked == [("deploy", {"env": "prod"})]

    async def no(kind, data):
        return "too risky"

    assert run(w.execute({}, approval_handler=no)).steps == {"gate": {"rejected": "too risky"}}
    assert run(w.execute({}, approval_handler=lambda k, d: True)).steps == {
        "gate": {"approved": {}}}


def test_approval_without_handler_or_in_time():
    @step
    async def gate(context, inputs):
        return await wait_for_approval(timeout_ms=20)

    @workflow
    def w(wf):
        wf.timeline(gate)

    with pytest.raises(ExecutionError) as e:
        run(w.execute({}))
    assert "waits for approval 'manual'" in e.value.error
    assert "approval_handler=" in e.value.error

    async def slow(kind, data):
        await asyncio.sleep(1)

    with pytest.raises(ExecutionError, match="timed out after 20 ms"):
        run(w.execute({}, approval_handler=slow))

    @step
    async def gate2(context, inputs):
        try:
            await wait_for_approval(timeout_ms=20)
        except ApprovalTimeoutError:
            return "timed out"

    @workflow
    def v(wf):
        wf.timeline(gate2)

    assert run(v.execute({}, approval_handler=slow)).steps == {"gate2": "timed out"}


def test_signals_and_state_locally():
    from cerebelum import SignalTimeoutError, set_state, wait_for_signal

    @step
    async def gate(context, inputs):
        set_state({"phase": "waiting"})
        got = await wait_for_signal("dns", timeout_ms=1000)
        set_state({"phase": "done"})
        return got

    @workflow
    def w(wf):
        wf.timeline(gate)

    asked = []

    async def handler(name):
        asked.append(name)
        return {"zone": "example.com"}

    r = run(w.execute({}, signal_handler=handler))
    assert r.steps == {"gate": {"zone": "example.com"}}
    assert asked == ["dns"]

    with pytest.raises(ExecutionError) as e:
        run(w.execute({}))
    assert "waits for signal 'dns'" in e.value.error
    assert "signal_handler=" in e.value.error

    async def slow(name):
        await asyncio.sleep(5)

    @step
    async def gate2(context, inputs):
        try:
            await wait_for_signal("dns", timeout_ms=20)
        except SignalTimeoutError as e:
            return str(e)

    @workflow
    def v(wf):
        wf.timeline(gate2)

    assert run(v.execute({}, signal_handler=slow)).steps == {
        "gate2": "no signal 'dns' came within 20 ms"}
    with pytest.raises(ValueError):
        run(wait_for_signal(""))


def test_continue_as_new_runs_the_workflow_again_locally():
    runs = []

    @step
    async def count_up(context, inputs):
        runs.append(inputs["n"])
        if inputs["n"] < 3:
            return context.continue_as_new({"n": inputs["n"] + 1})
        return inputs["n"]

    @workflow
    def w(wf):
        wf.timeline(count_up)

    r = run(w.execute({"n": 0}))
    assert r.steps == {"count_up": 3}
    assert runs == [0, 1, 2, 3]

    @step
    async def bad(context, inputs):
        return context.continue_as_new({1, 2})

    @workflow
    def v(wf):
        wf.timeline(bad)

    with pytest.raises(ExecutionError, match="continue_as_new"):
        run(v.execute({}))


def test_a_workflow_is_a_step_of_another_and_context_child_runs_one():
    @step
    async def deploy_one(context, inputs):
        return f"deployed {inputs['server']}"

    @workflow
    def deploy_server(wf):
        wf.timeline(deploy_one)

    @step
    async def prepare(context, inputs):
        return "prepared"

    @step
    async def notify(context, deploy_server):
        return deploy_server["output"]

    @workflow
    def rollout(wf):
        wf.timeline(prepare >> deploy_server >> notify)

    r = run(rollout.execute({"server": "web-1"}))
    assert r.steps["notify"] == "deployed web-1"
    assert r.steps["deploy_server"]["steps"] == {"deploy_one": "deployed web-1"}

    @step
    async def fan_out(context, inputs):
        results = [await context.child(deploy_server, {"server": s}) for s in ("a", "b")]
        return [c["output"] for c in results]

    @workflow
    def many(wf):
        wf.timeline(fan_out)

    assert run(many.execute({})).steps == {"fan_out": ["deployed a", "deployed b"]}

    @step
    async def missing(context, inputs):
        return await context.child("no_such_workflow", {})

    @workflow
    def broken(wf):
        wf.timeline(missing)

    with pytest.raises(ExecutionError, match="no_such_workflow"):
        run(broken.execute({}))


def test_progress_prints_the_original_bar_on_stdout(capsys):
    @step
    async def migrate(context, inputs):
        p = ProgressReporter(context)
        p.update(33, "Running migrations...")
        p.update(150, "done")
        return p.last_progress

    @workflow
    def w(wf):
        wf.timeline(migrate)

    assert run(w.execute({})).steps == {"migrate": 100}
    out = capsys.readouterr().out.splitlines()
    assert out == ["  [migrate] ██████░░░░░░░░░░░░░░ 33% - Running migrations...",
                   "  [migrate] ████████████████████ 100% - done"]


def test_progress_reporter_takes_any_context_like_object(capsys):
    class FakeContext:  # a test double with the original context's attributes
        step_name = "copy"
        inputs = {}

    ProgressReporter(FakeContext()).update(50, "half")
    assert capsys.readouterr().out == "  [copy] ██████████░░░░░░░░░░ 50% - half\n"


def test_helpers_outside_a_workflow_run_are_plain_async_helpers():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 2:
            raise ConnectionError("not yet")
        return "up"

    async def main():
        await sleep(5, data={"why": "settle"})
        up = await retry(flaky, max_attempts=3, delay=1)
        ready = await poll(lambda: len(calls), interval=1, max_attempts=2)
        return up, ready

    assert run(main()) == ("up", 2)
    with pytest.raises(ZeroDivisionError):
        run(retry(lambda: 1 / 0, max_attempts=2, delay=1))


def test_step_parameters_take_workflow_input_fields():
    @step
    async def start_process(context: Context, name: str, replicas: int) -> dict:
        return {"started": name, "replicas": replicas}

    @step
    async def report(context, start_process, name):
        return f"{name}: {start_process['replicas']}"

    @workflow
    def w(wf):
        wf.timeline(start_process >> report)

    r = run(w.execute({"name": "web-1", "replicas": 3}))
    assert r.output == {"ok": "web-1: 3"}
    assert r.steps["start_process"] == {"started": "web-1", "replicas": 3}
    with pytest.raises(ExecutionError) as e:
        run(w.execute({"name": "web-1"}))
    assert e.value.step_name == "start_process"
    assert "parameter `replicas`" in str(e.value) and "(its fields: name)" in str(e.value)


def test_the_result_is_the_last_steps_and_times_are_iso_strings():
    from datetime import datetime

    @step
    async def first(context, inputs):
        return {"n": inputs["n"]}

    @step
    async def square(context, first):
        return {"square": first["n"] ** 2}

    @step
    async def cube(context, first):
        return {"ok": first["n"] ** 3}  # already in its result form

    @workflow
    def w(wf):
        wf.timeline(first >> [square, cube])

    r = run(w.execute({"n": 3}))
    assert r.output == {"ok": 27}, "the parallel group's last step"
    assert r.steps == {"first": {"n": 3}, "square": {"square": 9}, "cube": 27}
    assert isinstance(r.started_at, str) and isinstance(r.completed_at, str)
    assert datetime.fromisoformat(r.completed_at) >= datetime.fromisoformat(r.started_at)


def test_inputs_must_be_json():
    @step
    async def a(context, inputs):
        return inputs

    @workflow
    def w(wf):
        wf.timeline(a)

    from cerebelum import StepError
    with pytest.raises(StepError, match="workflow input is not JSON"):
        run(w.execute({"x": {1, 2}}))
    assert run(w.execute({"t": (1, 2)})).steps == {"a": {"t": [1, 2]}}
    assert json.dumps(run(w.execute(None)).steps) == '{"a": null}'
