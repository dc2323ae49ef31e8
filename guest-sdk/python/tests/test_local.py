"""Local mode: workflows run under plain CPython, every helper works."""

import asyncio
import json
from datetime import timedelta

import pytest

from cerebelum import (ApprovalRejectedError, ApprovalTimeoutError, Context, PollTimeoutError,
                       ProgressReporter, RetryExhaustedError, poll, retry, sleep, step,
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
    assert r.output == {"create": {"id": "d-web-1"},
                        "configure": {"configured": "d-web-1", "for": "web-1"}}
    assert r.completed_at >= r.started_at and len(r.execution_id) == 36


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

    r = run(w.execute({}))
    assert r.status == "failed"
    assert r.error == "step `a` failed: disk full"
    assert r.output == {"a": {"error": "disk full"}}
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
    assert r.output["join"] == "lr"


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

    r = run(w.execute({}))
    assert r.output["t"] == [1, 2]
    assert r.status == "failed" and "result of step `a` is not JSON" in r.error


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
    assert r.output == {"install": {"error": "SSH timeout after 30 s"},
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
    assert list(r.output) == ["install2", "rollback"]


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
    assert r.status == "completed" and r.output == {"flaky": "up"} and len(calls) == 3

    @step
    async def broken(context, inputs):
        raise ConnectionError("refused")

    @workflow
    def v(wf):
        wf.timeline(broken)
        wf.diverge(broken, {"refused": "fail"})

    r = run(v.execute({}))
    assert r.status == "failed" and r.error == "step `broken` failed: refused"


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

    assert run(w.execute({"healthy": True})).output == {"check": {"healthy": True},
                                                         "done": "done"}
    assert run(w.execute({"healthy": False})).output == {"check": {"healthy": False},
                                                          "rollback": "rolled back"}


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
    assert r.output["nap"] >= 0.06


def test_poll_until_ready_with_condition_and_on_attempt():
    state = {"n": 0}
    seen = []

    def get_droplet():
        state["n"] += 1
        return {"ip": "10.0.0.7" if state["n"] >= 3 else None}

    @step
    async def wait_for_ip(context, inputs):
        d = await poll(check_fn=get_droplet, interval=10, max_attempts=5,
                       success_condition=lambda d: d["ip"] is not None,
                       on_attempt=lambda n, v: seen.append((n, v["ip"])))
        return d["ip"]

    @workflow
    def w(wf):
        wf.timeline(wait_for_ip)

    r = run(w.execute({}))
    assert r.output == {"wait_for_ip": "10.0.0.7"}
    assert seen == [(1, None), (2, None)]


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
    assert r.output["exhausted"] == {"kind": "poll-exhausted",
                                     "message": "poll gave up after 3 checks"}
    assert r.output["timed_out"] == "poll-timeout"


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
    assert r.output["wait"] == {"id": "d-1", "ip": "10.1.1.1"}


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
                           on_error=lambda e, n: errors.append((n, str(e))),
                           on_attempt=lambda n: None)

    @step
    async def give_up(context, connect):
        try:
            await retry(lambda: 1 / 0, max_attempts=2, delay=1)
        except RetryExhaustedError as e:
            return str(e)

    @workflow
    def w(wf):
        wf.timeline(connect >> give_up)

    r = run(w.execute({}))
    assert r.output["connect"] == "connected" and attempts == [1, 2, 3]
    assert errors == [(1, "10.0.0.7:22 refused"), (2, "10.0.0.7:22 refused")]
    assert r.output["give_up"] == "<lambda> failed 2 times; last error: division by zero"


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
    assert r.output == {"flaky": 3} and seen == [1, 2, 3]


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
    assert r.output == {"gate": {"approved": {"by": "ana"}}}
    assert asked == [("deploy", {"env": "prod"})]

    async def no(kind, data):
        return "too risky"

    assert run(w.execute({}, approval_handler=no)).output == {"gate": {"rejected": "too risky"}}
    assert run(w.execute({}, approval_handler=lambda k, d: True)).output == {
        "gate": {"approved": {}}}


def test_approval_without_handler_or_in_time():
    @step
    async def gate(context, inputs):
        return await wait_for_approval(timeout_ms=20)

    @workflow
    def w(wf):
        wf.timeline(gate)

    r = run(w.execute({}))
    assert r.status == "failed"
    assert "waits for approval 'manual'" in r.error and "approval_handler=" in r.error

    async def slow(kind, data):
        await asyncio.sleep(1)

    r = run(w.execute({}, approval_handler=slow))
    assert r.status == "failed" and "timed out after 20 ms" in r.error

    @step
    async def gate2(context, inputs):
        try:
            await wait_for_approval(timeout_ms=20)
        except ApprovalTimeoutError:
            return "timed out"

    @workflow
    def v(wf):
        wf.timeline(gate2)

    assert run(v.execute({}, approval_handler=slow)).output == {"gate2": "timed out"}


def test_progress_draws_a_bar(capsys):
    @step
    async def migrate(context, inputs):
        p = ProgressReporter(context)
        p.update(50, "Running migrations...")
        p.update(150, "done")
        return None

    @workflow
    def w(wf):
        wf.timeline(migrate)

    assert run(w.execute({})).status == "completed"
    err = capsys.readouterr().err
    assert "[migrate] ████████████░░░░░░░░░░░░  50% Running migrations..." in err
    assert "100% done" in err


def test_helpers_outside_a_step_say_where_they_belong():
    from cerebelum import CerebelumError

    with pytest.raises(CerebelumError, match="runs inside a step"):
        run(poll(lambda: 1))


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
    assert run(w.execute({"t": (1, 2)})).output == {"a": {"t": [1, 2]}}
    assert json.dumps(run(w.execute(None)).output) == '{"a": null}'
