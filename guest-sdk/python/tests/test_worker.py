"""A Worker against an in-process WorkerService (the generated servicer):
what it sends, message by message. The engine's side is in
tests/python_workers.rs."""

import asyncio
import json

import grpc

from cerebelum import Context, step
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
