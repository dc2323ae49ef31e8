#!/usr/bin/env bash
# The demo: builds the engine and the example packages, then runs them on the
# embedded database ./cerebelum.db:
#   1. hello  — three steps in a row, one shot (`cerebelum run`);
#   2. deploy — create a droplet, poll until it is ready, a flaky step that
#      succeeds on retry, a durable sleep during which the engine is killed
#      with SIGKILL and restarted, an approval, and completion.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "Installing the wasm32-wasip2 target (rust-toolchain.toml) and building"
rustup target add wasm32-wasip2 >/dev/null
cargo build -p cerebelum-engine
cargo build --target wasm32-wasip2 --profile guest -p hello -p deploy
mkdir -p examples/target
cp target/wasm32-wasip2/guest/hello.wasm target/wasm32-wasip2/guest/deploy.wasm examples/target/
CEREBELUM=target/debug/cerebelum
export CEREBELUM_DATABASE_URL="${CEREBELUM_DATABASE_URL:-cerebelum.db}"

say "cerebelum run examples/target/hello.wasm hello --input '{\"name\":\"web-1\"}'"
$CEREBELUM run examples/target/hello.wasm hello --input '{"name":"web-1"}'

say "cerebelum serve (in the background)"
$CEREBELUM serve --lease-ms 1500 &
SERVE=$!
trap 'kill $SERVE 2>/dev/null || true' EXIT

say "cerebelum start examples/target/deploy.wasm deploy"
ID=$($CEREBELUM start examples/target/deploy.wasm deploy --input '{"name":"web-1","settle_ms":4000}')
echo "execution $ID"
$CEREBELUM watch "$ID" &
WATCH=$!

journal_has() { $CEREBELUM journal "$ID" --json | grep -q "\"kind\": \"$1\""; }
until journal_has sleep; do sleep 0.2; done
sleep 0.5
say "kill -9 the engine while the execution sleeps"
kill -9 $SERVE
wait $SERVE 2>/dev/null || true
$CEREBELUM status "$ID"
sleep 1
say "restart: cerebelum serve"
$CEREBELUM serve --lease-ms 1500 &
SERVE=$!

until journal_has await-approval; do sleep 0.2; done
sleep 1
say "cerebelum approve $ID go-live --payload '{\"by\":\"demo\"}'"
$CEREBELUM approve "$ID" go-live --payload '{"by":"demo"}'
wait $WATCH

say "cerebelum status $ID"
$CEREBELUM status "$ID"
