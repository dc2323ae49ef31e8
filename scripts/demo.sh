#!/usr/bin/env bash
# The demo: builds the engine and the example packages, then runs them on the
# embedded database ./cerebelum.db:
#   1. hello  — three steps in a row, one shot (`cerebelum run`);
#   2. deploy, through the gRPC API as tenant `demo` — create a droplet,
#      poll until it is ready, a flaky step that succeeds on retry, a durable
#      sleep during which the server is killed with SIGKILL and restarted
#      (the watch reconnects), an approval, and completion;
#   3. the Python deploy (examples/python/deploy.py): run locally under
#      CPython, then built with `cerebelum build` (componentize-py, into
#      ./.venv) and run durably by the engine — the same output.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# The Python tools (./.venv) install meanwhile: mostly downloads.
mkdir -p target
scripts/python-env.sh > target/python-env.log 2>&1 &
PYENV=$!

say "Installing the wasm32-wasip2 target (rust-toolchain.toml) and building" \
    "(the first time: about 7 minutes on 2 cores)"
rustup target add wasm32-wasip2 >/dev/null
cargo build -p cerebelum-engine
cargo build --target wasm32-wasip2 --profile guest -p hello -p deploy
mkdir -p examples/target
cp target/wasm32-wasip2/guest/hello.wasm target/wasm32-wasip2/guest/deploy.wasm examples/target/
CEREBELUM=target/debug/cerebelum
export CEREBELUM_DATABASE_URL="${CEREBELUM_DATABASE_URL:-cerebelum.db}"
# Admin commands work on this database: not on a server named in the
# caller's environment.
unset CEREBELUM_SERVER CEREBELUM_API_KEY

say "cerebelum run examples/target/hello.wasm hello --input '{\"name\":\"web-1\"}'"
$CEREBELUM run examples/target/hello.wasm hello --input '{"name":"web-1"}'

say "cerebelum admin tenant create demo; cerebelum admin key create demo"
$CEREBELUM admin tenant create demo 2>/dev/null || echo "(tenant demo exists already)"
KEY=$($CEREBELUM admin key create demo)
LISTEN="${CEREBELUM_LISTEN:-127.0.0.1:7433}"

say "cerebelum serve --listen $LISTEN (in the background)"
$CEREBELUM serve --listen "$LISTEN" --lease-ms 1500 &
SERVE=$!
trap 'kill $SERVE 2>/dev/null || true' EXIT
# From here on, every command goes through the gRPC API as tenant demo.
export CEREBELUM_SERVER="http://$LISTEN" CEREBELUM_API_KEY="$KEY"
until $CEREBELUM packages >/dev/null 2>&1; do sleep 0.2; done

say "cerebelum upload examples/target/deploy.wasm; cerebelum start deploy deploy"
$CEREBELUM upload examples/target/deploy.wasm
ID=$($CEREBELUM start deploy deploy --input '{"name":"web-1","settle_ms":4000}')
echo "execution $ID"
$CEREBELUM watch "$ID" &
WATCH=$!

journal_has() { $CEREBELUM journal "$ID" --json 2>/dev/null | grep -q "\"kind\": \"$1\""; }
until journal_has sleep; do sleep 0.2; done
sleep 0.5
say "kill -9 the server while the execution sleeps (the watch waits and reconnects)"
kill -9 $SERVE
wait $SERVE 2>/dev/null || true
sleep 1
say "restart: cerebelum serve"
$CEREBELUM serve --listen "$LISTEN" --lease-ms 1500 &
SERVE=$!

until journal_has await-approval; do sleep 0.2; done
sleep 1
say "cerebelum approve $ID go-live --payload '{\"by\":\"demo\"}'"
$CEREBELUM approve "$ID" go-live --payload '{"by":"demo"}'
wait $WATCH

say "cerebelum status $ID"
$CEREBELUM status "$ID"

say "Python: examples/python/deploy.py locally, under plain CPython"
wait $PYENV || { cat target/python-env.log >&2; exit 1; }
.venv/bin/python examples/python/deploy.py

say "cerebelum build examples/python/deploy.py -o examples/target/deploy_py.wasm"
$CEREBELUM build examples/python/deploy.py -o examples/target/deploy_py.wasm --python .venv/bin/python

say "cerebelum upload + start + watch the Python deploy (first load compiles it: ~15 s)"
$CEREBELUM upload examples/target/deploy_py.wasm --name deploy-py
PY_ID=$($CEREBELUM start deploy-py deploy --input '{"name":"web-1","install_ms":300}')
$CEREBELUM watch "$PY_ID"
$CEREBELUM status "$PY_ID"

say "Next: a server of your own, with the console open on this machine:"
echo "  $CEREBELUM dev        # then open the console address it prints; Ctrl-C stops it" >&2
