"""The SDK's gRPC code (``cerebelum/v1``) is what grpcio-tools generates
from ``proto/cerebelum/v1/cerebelum.proto``."""

import filecmp
import os
import subprocess
import sys
from pathlib import Path

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
