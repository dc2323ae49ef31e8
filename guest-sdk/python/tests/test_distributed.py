"""The original SDK's distributed API without a server: the queue of a
worker server, which package a start by name picks, the synchronous
``close()``, ``Worker(capabilities=...)`` and the execution client's
types read from the server's messages. ``tests/python_workers.rs`` runs
it all against a real ``cerebelum serve``."""

import asyncio
import json

import pytest

pytest.importorskip("grpc")

from cerebelum import ExecutionClient, ExecutionState, Worker  # noqa: E402
from cerebelum import distributed  # noqa: E402
from cerebelum.distributed import DistributedExecutor, package_queue  # noqa: E402
from cerebelum.errors import CerebelumError  # noqa: E402
from cerebelum.execution_client import execution_status, state_of  # noqa: E402
from cerebelum.v1 import cerebelum_pb2 as pb  # noqa: E402


def test_a_worker_server_serves_the_queue_of_its_package_version():
    assert package_queue("06_distributed_server", 3) == "py-06_distributed_server-v3"
    long = package_queue("p" * 200, 12)
    assert len(long) <= 128 and long.endswith("-v12")
    assert long != package_queue("p" * 199 + "q", 12)


def test_the_originals_constructors_are_accepted():
    executor = DistributedExecutor(core_url="localhost:9090", worker_id="python-executor")
    assert executor._client.target == "localhost:9090" and not executor._client.tls
    assert executor.worker_id == "python-executor"
    executor.close()  # not awaited, outside any event loop: as the original's
    worker = Worker(core_url="localhost:9090", worker_id="w-1", capabilities=["python", "async"])
    assert worker.capabilities == ["python", "async"] and worker.queue == "default"

    async def in_a_loop():
        executor = DistributedExecutor(core_url="localhost:9090")
        executor._client._open()
        executor.close()  # not awaited: closed by a task of the loop
        with DistributedExecutor("localhost:9090"):
            pass
        async with DistributedExecutor("localhost:9090") as e:
            e._client._open()
        client = ExecutionClient("localhost:9090")
        client._client._open()
        await client.close()
        assert client._client._channel is None

    asyncio.run(in_a_loop())


def package(name, version, workflows, created):
    return pb.Package(name=name, version=version, created_at_ms=created,
                      workflows=[pb.Workflow(name=w) for w in workflows])


class FakeServer:
    """Answers the calls of a start by name; records StartExecution."""

    def __init__(self, packages, workers):
        self.packages, self.workers, self.started = packages, workers, []

    async def call(self, rpc, request, timeout=None):
        if rpc == "ListPackages":
            return pb.ListPackagesResponse(packages=self.packages)
        if rpc == "ListWorkers":
            return pb.ListWorkersResponse(workers=self.workers)
        assert rpc == "StartExecution"
        self.started.append(request)
        return pb.StartExecutionResponse(execution=pb.Execution(
            id="ex_1", status=pb.EXECUTION_STATUS_PENDING, created_at_ms=1_700_000_000_000,
            worker_queue=request.worker_queue))


def start_by_name(packages, workers, name="hello_workflow", **kw):
    executor = DistributedExecutor("localhost:9090")
    fake = FakeServer(packages, workers)
    executor._client = fake
    result = asyncio.run(executor.execute(workflow=name, input_data={"name": "Alice"}, **kw))
    return result, fake.started


def test_a_start_by_name_goes_to_the_served_package_version_and_returns_at_once():
    packages = [package("server_a", 1, ["hello_workflow"], 10),
                package("server_a", 2, ["hello_workflow"], 20),
                package("server_b", 1, ["hello_workflow", "other"], 30),
                package("unrelated", 1, ["other"], 40)]
    # Served: the version a worker polls, though another is newer.
    workers = [pb.Worker(worker_id="w", queue="py-server_a-v1", last_seen_at_ms=5)]
    result, started = start_by_name(packages, workers)
    assert (result.execution_id, result.status, result.output) == ("ex_1", "pending", None)
    assert result.started_at == "2023-11-14T22:13:20"
    (request,) = started
    assert (request.package, request.version, request.workflow) == ("server_a", 1,
                                                                     "hello_workflow")
    assert request.worker_queue == "py-server_a-v1"
    assert json.loads(request.input_json) == {"name": "Alice"}
    # None served: the newest upload; or the package and queue given.
    _, (request,) = start_by_name(packages, [])
    assert (request.package, request.version) == ("server_b", 1)
    _, (request,) = start_by_name(packages, [], package="server_a", queue="mine")
    assert (request.package, request.version, request.worker_queue) == ("server_a", 2, "mine")


def test_a_name_no_package_has_is_refused_with_the_names_there_are():
    with pytest.raises(CerebelumError, match=r"no workflow named 'nope' in this tenant's "
                       r"packages on localhost:9090 \(they have: hello_workflow, other\)"):
        start_by_name([package("a", 1, ["hello_workflow", "other"], 1)], [], name="nope")


def test_a_workflow_server_never_returns_unless_stopped(monkeypatch):
    """``wf.execute(distributed=True)`` is ``serve``; ``once=True`` is ``run``."""
    from cerebelum import Context, step, workflow

    @step
    async def a(context: Context, inputs: dict):
        return 1

    @workflow
    def wf(wf):
        wf.timeline(a)

    calls = []

    async def serve(self, workflow, inputs, **kw):
        calls.append(("serve", workflow.name, inputs))

    async def run(self, workflow, inputs, **kw):
        calls.append(("run", workflow.name, inputs))
        return "result"

    monkeypatch.setattr(DistributedExecutor, "serve", serve)
    monkeypatch.setattr(DistributedExecutor, "run", run)
    assert asyncio.run(wf.execute({"x": 1}, distributed=True, server="localhost:1")) is None
    assert asyncio.run(wf.execute({"x": 2}, distributed=True, once=True,
                                  server="localhost:1")) == "result"
    assert calls == [("serve", "wf", {"x": 1}), ("run", "wf", {"x": 2})]


def execution(status, **kw):
    return pb.Execution(id="ex_1", workflow="onboarding", package="p", package_version=1,
                        status=getattr(pb, f"EXECUTION_STATUS_{status.upper()}"),
                        created_at_ms=1_000, updated_at_ms=5_000, input_json='{"n": 1}', **kw)


def test_the_state_of_an_execution_as_the_original_names_it():
    assert state_of(execution("pending")) == ExecutionState.PENDING
    assert state_of(execution("running")) == ExecutionState.RUNNING
    assert state_of(execution("completed")) == ExecutionState.COMPLETED
    assert state_of(execution("failed")) == ExecutionState.FAILED
    assert state_of(execution("cancelled")) == ExecutionState.CANCELLED
    assert state_of(execution("waiting", paused=True)) == ExecutionState.PAUSED
    assert state_of(execution("waiting", waiting_on=["sleep until 2026-01-01T00:00:00Z"])
                    ) == ExecutionState.SLEEPING
    assert state_of(execution("waiting", waiting_on=["step deploy"])) == ExecutionState.RUNNING
    assert state_of(execution("waiting", waiting_on=["signal 'go'"])) == ExecutionState.WAITING
    asked = pb.Approval(key="release", status="pending", request_json='{"data": {"n": 2}}')
    waiting = execution("waiting", pending_approvals=[asked])
    assert state_of(waiting) == ExecutionState.WAITING_FOR_APPROVAL
    assert execution_status(waiting).approval_info.approval_type == "release"
    assert execution_status(waiting).approval_info.data == {"n": 2}
    assert ExecutionState.RUNNING.value == "EXECUTION_RUNNING"  # the original's values


def entry(seq, kind, payload, at_ms, ref_seq=None):
    e = pb.JournalEntry(seq=seq, invocation="wf", kind=kind, payload_json=json.dumps(payload),
                        at_ms=at_ms)
    if ref_seq is not None:
        e.ref_seq = ref_seq
    return e


def test_an_execution_status_from_the_execution_and_its_journal():
    journal = [
        entry(1, "call-step", {"args": {"step": "fetch", "input": {}}}, 1_000),
        entry(2, "result", {"ok": {"ok": {"id": 7}}}, 3_000, ref_seq=1),
        entry(3, "call-step", {"args": {"step": "wait", "input": {}}}, 3_000),
        entry(4, "sleep", {"args": {"duration_ms": 60_000}, "due_at": 10**13}, 3_500),
    ]
    status = execution_status(execution("waiting", waiting_on=["sleep until 2286-11-20"]),
                              journal)
    assert status.status == ExecutionState.SLEEPING
    assert [(s.step_name, s.step_index, s.status, s.duration_seconds, s.output)
            for s in status.completed_steps] == [("fetch", 0, "completed", 2, {"id": 7})]
    assert (status.current_step_index, status.current_step_name) == (1, "wait")
    assert status.step_outputs == {"fetch": {"id": 7}} and status.inputs == {"n": 1}
    assert status.sleep_info.duration_ms == 60_000 and status.sleep_info.remaining_ms > 0
    assert status.completed_at is None and status.error is None

    failed = execution("failed", error_json=json.dumps({
        "kind": "step", "message": "step `b` failed: boom",
        "details": {"output": None, "steps": {"a": 1}, "step": "b", "step_error": "boom"}}))
    status = execution_status(failed)
    assert [(s.step_name, s.status) for s in status.completed_steps] == [("a", "completed"),
                                                                         ("b", "failed")]
    assert status.error == {"kind": "step", "message": "step `b` failed: boom",
                            "stacktrace": ""}
    assert status.elapsed_seconds == 4
