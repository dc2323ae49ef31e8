"""A Worker against an in-process WorkerService (the generated servicer):
what it sends, message by message. The engine's side is in
tests/python_workers.rs."""

import asyncio
import datetime
import json
import random
import sys
import time

import grpc

from cerebelum import Context, http, patched, sleep, step
from cerebelum import _patches
from cerebelum.v1 import cerebelum_pb2 as pb
from cerebelum.v1 import cerebelum_pb2_grpc as pb_grpc
from cerebelum.worker import Worker

from conftest import run


class Service(pb_grpc.WorkerServiceServicer):
    """Hands out ``tasks`` one poll at a time, then polls come back empty;
    keeps every request."""

    def __init__(self, tasks):
        self.tasks = list(tasks)
        self.requests = []
        self.completed = asyncio.Event()

    async def RegisterWorker(self, request, context):
        self.requests.append(request)
        return pb.RegisterWorkerResponse()

    async def PollTask(self, request, context):
        self.requests.append(request)
        if self.tasks:
            return pb.PollTaskResponse(task=self.tasks.pop(0))
        await asyncio.sleep(0.05)
        return pb.PollTaskResponse()

    async def Heartbeat(self, request, context):
        self.requests.append(request)
        return pb.HeartbeatResponse()

    async def CompleteTask(self, request, context):
        self.requests.append(request)
        if not any(isinstance(r, pb.CompleteTaskRequest) for r in self.requests[:-1]) \
                and self.tasks:
            # The completion claims the next task (as the server does).
            return pb.CompleteTaskResponse(task=self.tasks.pop(0))
        self.completed.set()
        return pb.CompleteTaskResponse()

    async def RecordCall(self, request, context):
        # A call the worker answered itself (as `patched`) is kept as it
        # came; a sleep is answered as the server answers it.
        self.requests.append(request)
        now = int(time.time() * 1000)
        answer = request.answer_json
        if not answer:
            due = now + json.loads(request.args_json)["duration_ms"]
            answer = json.dumps({"due_at_ms": due})
        return pb.RecordCallResponse(now_ms=now, call=pb.StepCall(
            position=request.position, kind=request.kind, args_json=request.args_json,
            answer_json=answer, at_ms=now))

    async def UnregisterWorker(self, request, context):
        self.requests.append(request)
        return pb.UnregisterWorkerResponse()


async def serve_tasks(*tasks) -> list:
    """Runs a Worker of queue ``q`` until the last task is completed; the
    requests the service got."""
    service = Service(tasks)
    server = grpc.aio.server()
    pb_grpc.add_WorkerServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        worker = Worker("w-1", f"http://127.0.0.1:{port}", api_key="", queue="q",
                        poll_timeout=1)
        serving = asyncio.create_task(worker.start())
        await asyncio.wait_for(service.completed.wait(), 10)
        await worker.stop(grace=1)
        await serving
    finally:
        await server.stop(None)
    return service.requests


def task(token, name, inputs, **fields):
    env = {"workflow": "wf", "inputs": inputs, "deps": {}}
    return pb.WorkerTask(token=token, execution_id="e-1", step=name,
                         input_json=json.dumps(env), attempt=1, **fields)


def test_a_worker_runs_tasks_and_completes_them():
    @step
    async def double(context: Context, inputs: dict) -> dict:
        return {"n": inputs["n"] * 2, "attempt": context.attempt}

    requests = run(serve_tasks(task("t1", "double", {"n": 2}, heartbeat_ms=60_000),
                               task("t2", "nothing", {})))
    register = requests[0]
    assert (register.worker_id, register.queue, register.max_tasks) == ("w-1", "q", 1)
    poll = next(r for r in requests if isinstance(r, pb.PollTaskRequest))
    assert (poll.worker_id, poll.queue, poll.wait_ms) == ("w-1", "q", 1000)
    first, second = [r for r in requests if isinstance(r, pb.CompleteTaskRequest)]
    assert first.token == "t1" and first.WhichOneof("outcome") == "result_json"
    assert json.loads(first.result_json) == {"ok": {"n": 4, "attempt": 1}}
    # While serving, a completion asks for the next task.
    assert first.HasField("next") and (first.next.worker_id, first.next.queue) == ("w-1", "q")
    assert second.token == "t2" and second.WhichOneof("outcome") == "error"
    assert second.error.kind == "unknown-step"
    assert "has no step `nothing` (it has: double)" in second.error.message
    assert isinstance(requests[-1], pb.UnregisterWorkerRequest)
    assert requests[-1].worker_id == "w-1"


def define_stamp() -> None:
    """Step ``stamp``: reads the clock and ``random``, sleeps, reads the
    clock again."""
    @step
    async def stamp(context: Context, inputs: dict) -> dict:
        t = time.time()
        r = random.random()
        d = datetime.datetime.now()
        await sleep(5)
        return {"t": t, "r": r, "d": d.timestamp(), "later": time.time()}


def outcome(requests, token):
    done = next(r for r in requests if isinstance(r, pb.CompleteTaskRequest) and r.token == token)
    if done.WhichOneof("outcome") == "error":
        return done.error
    return json.loads(done.result_json)["ok"]


def test_a_worker_steps_clock_and_randomness_go_with_its_next_call():
    define_stamp()
    requests = run(serve_tasks(task("t1", "stamp", {}, hold_ms=60_000)))
    record = next(r for r in requests if isinstance(r, pb.RecordCallRequest))
    assert (record.position, record.kind) == (3, "sleep")
    # What the step read before its sleep is recorded with it, in order.
    assert [(c.position, c.kind) for c in record.before] == [(0, "now"), (1, "random"), (2, "now")]
    got = outcome(requests, "t1")
    assert round(got["t"] * 1000) == json.loads(record.before[0].answer_json)["now_ms"]
    seed = json.loads(record.before[1].answer_json)["seed"]
    assert got["r"] == random.Random(seed).random()
    assert round(got["d"] * 1000) == json.loads(record.before[2].answer_json)["now_ms"]
    assert abs(got["t"] - time.time()) < 60, got


def test_a_worker_step_run_again_reads_the_clock_and_randomness_it_recorded():
    history = [
        pb.StepCall(position=0, kind="now", args_json="null",
                    answer_json='{"now_ms": 1000000}'),
        pb.StepCall(position=1, kind="random", args_json="null", answer_json='{"seed": 42}'),
        pb.StepCall(position=2, kind="now", args_json="null",
                    answer_json='{"now_ms": 2000000}'),
        pb.StepCall(position=3, kind="sleep", args_json='{"duration_ms": 5}',
                    answer_json='{"due_at_ms": 2000005}'),
    ]
    define_stamp()
    requests = run(serve_tasks(task("t1", "stamp", {}, hold_ms=60_000, history=history)))
    assert not [r for r in requests if isinstance(r, pb.RecordCallRequest)]
    got = outcome(requests, "t1")
    assert (got["t"], got["r"], got["d"]) == (1000.0, random.Random(42).random(), 2000.0)
    # Past its history, the clock is live again.
    assert abs(got["later"] - _patches.real_time_ns() / 1e9) < 60, got
    # Outside a step, the clock and `random` are the usual ones.
    assert abs(time.time() - _patches.real_time_ns() / 1e9) < 1
    random.seed(7)
    assert random.random() == random.Random(7).random()


def define_talker() -> None:
    """Step ``talker``: prints a line, sleeps, prints two more to stderr."""
    @step
    async def talker(context: Context, inputs: dict) -> dict:
        print("before the sleep")
        await sleep(5)
        print("after", file=sys.stderr)
        print("the sleep", file=sys.stderr)
        return {}


def output_calls(calls) -> list:
    return [(c.position, json.loads(c.args_json)) for c in calls if c.kind == "output"]


def test_what_a_worker_step_prints_goes_with_its_next_call_and_its_completion(capsys):
    define_talker()
    requests = run(serve_tasks(task("t1", "talker", {}, hold_ms=60_000)))
    record = next(r for r in requests if isinstance(r, pb.RecordCallRequest))
    assert (record.position, record.kind) == (1, "sleep")
    assert output_calls(record.before) == [(0, {"stream": "stdout", "text": "before the sleep\n"})]
    done = next(r for r in requests if isinstance(r, pb.CompleteTaskRequest))
    # One call per change of stream: the two stderr lines are one.
    assert output_calls(done.before) == [
        (2, {"stream": "stderr", "text": "after\nthe sleep\n"})]
    printed = capsys.readouterr()
    assert "before the sleep" in printed.out and "after\nthe sleep" in printed.err


def test_a_worker_step_run_again_does_not_print_its_history_again(capsys):
    history = [
        pb.StepCall(position=0, kind="output", args_json=json.dumps(
            {"stream": "stdout", "text": "something else it printed then\n"}),
            answer_json="null"),
        pb.StepCall(position=1, kind="sleep", args_json='{"duration_ms": 5}',
                    answer_json='{"due_at_ms": 5}'),
    ]
    define_talker()
    requests = run(serve_tasks(task("t1", "talker", {}, hold_ms=60_000, history=history)))
    assert not [r for r in requests if isinstance(r, pb.RecordCallRequest)]
    done = next(r for r in requests if isinstance(r, pb.CompleteTaskRequest))
    assert done.WhichOneof("outcome") == "result_json", done
    # Output is matched by kind only; what is past the history is new.
    assert output_calls(done.before) == [
        (2, {"stream": "stderr", "text": "after\nthe sleep\n"})]
    printed = capsys.readouterr()
    assert "before the sleep" not in printed.out, printed
    assert "after\nthe sleep" in printed.err


def test_a_worker_step_whose_clock_read_diverges_fails_even_if_it_catches_it():
    @step
    async def sly(context: Context, inputs: dict) -> dict:
        try:
            time.time()
        except Exception:
            pass
        return {}

    history = [pb.StepCall(position=0, kind="random", args_json="null",
                           answer_json='{"seed": 1}')]
    requests = run(serve_tasks(task("t1", "sly", {}, history=history)))
    error = outcome(requests, "t1")
    assert error.kind == "nondeterminism", error
    assert "recorded `random(null)`, now `now(null)`" in error.message


def test_a_worker_steps_http_response_is_recorded_and_not_fetched_again(server):
    base, seen = server

    @step
    async def fetch(context: Context, inputs: dict) -> dict:
        got = http.get(f"{base}/thing").json()
        await sleep(5)
        return got

    requests = run(serve_tasks(task("t1", "fetch", {}, hold_ms=60_000)))
    record = next(r for r in requests if isinstance(r, pb.RecordCallRequest))
    [call] = record.before
    assert call.kind == "http"
    assert json.loads(call.args_json) == {"method": "GET", "url": f"{base}/thing"}
    assert outcome(requests, "t1") == {"path": "/thing"}
    assert len(seen) == 1

    # Run again with that history (a new worker after a crash): the
    # response is the recorded one, and no request is sent.
    history = [call, pb.StepCall(position=1, kind="sleep", args_json=record.args_json,
                                 answer_json='{"due_at_ms": 0}')]
    requests = run(serve_tasks(task("t2", "fetch", {}, hold_ms=60_000, history=history)))
    assert outcome(requests, "t2") == {"path": "/thing"}
    assert len(seen) == 1, seen


def define_patchy() -> None:
    """Step ``patchy``: sleeps, asks for patch ``extra``, sleeps again."""
    @step
    async def patchy(context: Context, inputs: dict) -> dict:
        await sleep(5)
        took = await patched("extra")
        await sleep(6)
        return {"patched": took}


def test_a_worker_step_takes_a_patch_unless_its_history_holds_another_call_there():
    define_patchy()
    # Past its history: the new path, recorded.
    requests = run(serve_tasks(task("t1", "patchy", {}, hold_ms=60_000)))
    records = [r for r in requests if isinstance(r, pb.RecordCallRequest)]
    assert [(r.position, r.kind) for r in records] == [(0, "sleep"), (1, "patched"), (2, "sleep")]
    assert json.loads(records[1].args_json) == {"id": "extra"}
    assert outcome(requests, "t1") == {"patched": True}

    # A history recorded by code without the patch holds the second sleep
    # there: the old path, nothing recorded, and the history replays.
    history = [
        pb.StepCall(position=0, kind="sleep", args_json='{"duration_ms": 5}',
                    answer_json='{"due_at_ms": 5}'),
        pb.StepCall(position=1, kind="sleep", args_json='{"duration_ms": 6}',
                    answer_json='{"due_at_ms": 6}'),
    ]
    requests = run(serve_tasks(task("t2", "patchy", {}, hold_ms=60_000, history=history)))
    assert not [r for r in requests if isinstance(r, pb.RecordCallRequest)]
    assert outcome(requests, "t2") == {"patched": False}

    # A history with the patch recorded replays it: the new path again.
    history.insert(1, pb.StepCall(position=1, kind="patched", args_json='{"id": "extra"}',
                                  answer_json="true"))
    history[2].position = 2
    requests = run(serve_tasks(task("t3", "patchy", {}, hold_ms=60_000, history=history)))
    assert not [r for r in requests if isinstance(r, pb.RecordCallRequest)]
    assert outcome(requests, "t3") == {"patched": True}


def test_outside_the_engine_a_patch_always_applies():
    assert run(patched("extra")) is True
    try:
        run(patched(""))
    except TypeError as e:
        assert "non-empty string" in str(e)
    else:
        raise AssertionError("an empty patch id is refused")
