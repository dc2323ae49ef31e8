"""Placing steps on worker queues (``@step(worker=...)``), and the package
cache of ``execute(distributed=True)``."""

import pytest

from cerebelum import Context, step, workflow
from cerebelum import build as build_module
from cerebelum import distributed
from cerebelum.errors import WorkflowDefinitionError

from conftest import run


def test_a_placed_step_runs_in_process_locally():
    @step
    async def plan(context: Context, inputs: dict) -> dict:
        return {"host": inputs["host"]}

    @step(worker="devops")
    async def connect(context: Context, plan: dict) -> dict:
        return {"connected": plan["host"]}

    @workflow
    def deploy(wf):
        wf.timeline(plan >> connect)

    assert (plan.worker, connect.worker) == (None, "devops")
    result = run(deploy.execute({"host": "web-1"}))
    assert result.status == "completed", result.error
    assert result.steps["connect"] == {"connected": "web-1"}


@pytest.mark.parametrize("queue", ["", "dev ops", "x" * 129, "ops/1"])
def test_a_queue_name_must_be_one(queue):
    with pytest.raises(WorkflowDefinitionError, match="is not a worker queue name"):
        @step(worker=queue)
        async def connect(context: Context, inputs: dict) -> dict:
            return {}


def test_concurrent_builds_of_one_file_share_the_first_package(tmp_path, monkeypatch):
    """Two processes building the same file at once (two distributed
    executes): the one that finishes second must use the first one's
    bytes (builds differ), or the server stores two package versions."""
    monkeypatch.setenv("CEREBELUM_CACHE_DIR", str(tmp_path))
    source = tmp_path / "app.py"
    source.write_text("# a workflow\n")

    def fake_build(src, out, quiet=False):
        # Another process finishes building the same file meanwhile.
        (out.parent / (out.name.split(".")[0] + ".wasm")).write_bytes(b"theirs")
        out.write_bytes(b"ours")
        return {}

    monkeypatch.setattr(build_module, "build", fake_build)
    built = distributed.build_package(source)
    assert built.read_bytes() == b"theirs"
    assert [p.name for p in built.parent.iterdir() if p.suffix == ".wasm"] == [built.name]
    # Cached: the next call builds nothing.
    monkeypatch.setattr(build_module, "build", None)
    assert distributed.build_package(source) == built


def test_worker_timeouts_belong_to_a_placed_step():
    with pytest.raises(WorkflowDefinitionError, match="add worker="):
        @step(heartbeat_ms=5_000)
        async def loose(context: Context, inputs: dict) -> dict:
            return {}
    with pytest.raises(WorkflowDefinitionError, match="at least 100"):
        @step(worker="devops", heartbeat_ms=5)
        async def hasty(context: Context, inputs: dict) -> dict:
            return {}

    @step(worker="devops", schedule_to_start_ms=2_000, heartbeat_ms=5_000)
    async def ssh(context: Context, inputs: dict) -> dict:
        return {}

    assert (ssh.worker, ssh.schedule_to_start_ms, ssh.heartbeat_ms) == ("devops", 2_000, 5_000)
