#!/usr/bin/env bash
# Every check the project has: formatting, lints, and all tests (unit, SDK,
# and end-to-end tests that build the guests and run real engine processes).
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-wasip2 >/dev/null
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
