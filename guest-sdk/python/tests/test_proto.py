"""The SDK's gRPC code (``cerebelum/v1``) is what grpcio-tools generates
from ``proto/cerebelum/v1/cerebelum.proto``, and the client reads its
messages as the server writes them."""

import filecmp
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cerebelum.client import TERMINAL, optional, status_name
from cerebelum.distributed import execution_result
from cerebelum.errors import ExecutionError
from cerebelum.v1 import cerebelum_pb2 as pb

SDK = Path(__file__).resolve().parents[1]
ROOT = SDK.parents[1]
GENERATED = ["cerebelum_pb2.py", "cerebelum_pb2_grpc.py"]


def test_the_generated_code_is_what_the_proto_gives(tmp_path):
    """Fails when the proto changed and scripts/python-proto.sh was not
    run, or the code was edited by hand."""
    done = subprocess.run(["bash", str(ROOT / "scripts" / "python-proto.sh"), str(tmp_path)],
                          env={**os.environ, "PYTHON": sys.executable},
                          capture_output=True, text=True)
    assert done.returncode == 0, (
        "scripts/python-proto.sh failed (is grpcio-tools installed? it is in the SDK's "
        f"`test` extra; scripts/python-env.sh installs it):\n{done.stderr}")
    stale = [name for name in GENERATED
             if not filecmp.cmp(tmp_path / "cerebelum" / "v1" / name,
                                SDK / "cerebelum" / "v1" / name, shallow=False)]
    assert not stale, (
        f"guest-sdk/python/cerebelum/v1/{', '.join(stale)} differ from what "
        "proto/cerebelum/v1/cerebelum.proto gives: run scripts/python-proto.sh (with the "
        "grpcio-tools version the `test` extra pins) and commit the result")


def test_execution_status_names():
    assert status_name(pb.EXECUTION_STATUS_COMPLETED) == "completed"
    assert status_name(pb.EXECUTION_STATUS_CANCELLED) == "cancelled"
    assert status_name(99) == "99"  # a status of a newer server
    assert {status_name(s) for s in TERMINAL} == {"completed", "failed", "cancelled"}


def test_optional_fields_and_oneofs_keep_presence():
    task = pb.PollTaskResponse.FromString(pb.PollTaskResponse().SerializeToString())
    assert optional(task, "task") is None
    beat = pb.HeartbeatRequest(token="t", progress_json="")
    assert optional(pb.HeartbeatRequest.FromString(beat.SerializeToString()),
                    "progress_json") == ""
    # An empty result is a result: the oneof member is written.
    done = pb.CompleteTaskRequest(token="t", result_json="")
    back = pb.CompleteTaskRequest.FromString(done.SerializeToString())
    assert back.WhichOneof("outcome") == "result_json"
    back.error.kind = "k"
    assert back.WhichOneof("outcome") == "error"


def test_an_execution_message_becomes_the_local_result():
    steps = {"a": {"x": 1}}
    done = pb.Execution(id="e-1", status=pb.EXECUTION_STATUS_COMPLETED,
                        result_json=json.dumps({"output": {"ok": 2}, "steps": steps}),
                        created_at_ms=0, updated_at_ms=1_000)
    result = execution_result(done)
    assert (result.execution_id, result.status, result.output, result.steps) == \
        ("e-1", "completed", {"ok": 2}, steps)
    assert result.completed_at.startswith("1970-01-01T00:00:01")
    failed = pb.Execution(id="e-2", status=pb.EXECUTION_STATUS_FAILED, error_json=json.dumps(
        {"message": "step `a` failed: boom",
         "details": {"output": None, "steps": {}, "step": "a", "step_error": "boom"}}))
    with pytest.raises(ExecutionError) as e:
        execution_result(failed)
    assert (e.value.step_name, e.value.result.status) == ("a", "failed")
