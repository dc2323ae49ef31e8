#!/usr/bin/env bash
# The Python tools of the project, in ./.venv: the Cerebelum Python SDK
# (editable), componentize-py (builds Python packages), grpcio (Python
# workers) and pytest.
# Idempotent: a no-op when they are there already.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if ! .venv/bin/python -c "import cerebelum.build, componentize_py, grpc, pytest" 2>/dev/null; then
    echo "setting up .venv (Python SDK, componentize-py, grpcio, pytest)" >&2
    "$PYTHON" -m venv .venv
    .venv/bin/python -m pip install --quiet --disable-pip-version-check \
        -e "guest-sdk/python[build,test,worker]"
fi
