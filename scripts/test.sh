#!/usr/bin/env bash
# Every check the project has: formatting, lints, and all tests (unit, SDK,
# store suite and end-to-end tests on SQLite and on PostgreSQL, with real
# engine processes; the Python SDK's pytest suite and its engine tests).
#
# PostgreSQL: the tests create (and drop) databases of their own on the
# server at CEREBELUM_TEST_PG (default: the local one, trust auth). It must
# be reachable: PostgreSQL tests are never skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-wasip2 >/dev/null

export CEREBELUM_TEST_PG="${CEREBELUM_TEST_PG:-postgres://postgres@127.0.0.1:5432/test}"
pg_up() {
    # Without the client tools, the tests themselves report an unreachable server.
    ! command -v pg_isready >/dev/null || pg_isready -q -d "$CEREBELUM_TEST_PG"
}
if ! pg_up && command -v pg_ctlcluster >/dev/null; then
    echo "PostgreSQL is not answering at $CEREBELUM_TEST_PG; starting the local cluster" >&2
    for version in $(ls /etc/postgresql 2>/dev/null); do
        pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    done
    for _ in $(seq 1 30); do pg_up && break; sleep 1; done
fi
if ! pg_up; then
    echo "error: PostgreSQL is unreachable at $CEREBELUM_TEST_PG; the tests need it." >&2
    echo "Start it, or point CEREBELUM_TEST_PG at a server where the user may create databases." >&2
    exit 1
fi

scripts/python-env.sh
scripts/browser.sh
scripts/prometheus.sh

cargo fmt --all -- --check
# The engine's modules keep their layers (lib.rs): no module uses one above it.
scripts/module-edges.sh --check
cargo clippy --workspace --all-targets -- -D warnings
.venv/bin/python -m pytest -q guest-sdk/python
cargo test --workspace
