#!/usr/bin/env bash
# Incremental rebuild time of the `cerebelum` binary (dev profile) after
# touching one file, the figure issue 32 asks for: how much of the engine
# an edit recompiles. Usage: scripts/rebuild-time.sh [ROUNDS] [FILE…]
# (default: 3 rounds of a console page and a store file). Builds once
# first, so every round measures only the edit; prints each round and the
# median per file. Run it on a quiet machine: it measures wall time.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
shift || true
files=("$@")
if [ ${#files[@]} -eq 0 ]; then
    files=(crates/server/src/console/pages.rs crates/store/src/store/sql.rs)
fi
cargo build -q -p cerebelum-engine --bin cerebelum
for file in "${files[@]}"; do
    [ -f "$file" ] || { echo "no such file: $file" >&2; exit 1; }
    times=()
    for _ in $(seq "$rounds"); do
        touch "$file"
        start=$(date +%s.%N)
        cargo build -q -p cerebelum-engine --bin cerebelum
        times+=("$(echo "$(date +%s.%N) - $start" | bc)")
    done
    median=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    printf '%-45s %s s (rounds: %s)\n' "$file" "$median" "${times[*]}"
done
