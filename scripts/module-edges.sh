#!/usr/bin/env bash
# The dependency edges between the engine's top-level modules (each
# crate's `src/MODULE…` under crates/): for each module, the other
# top-level modules its files name through `crate::` (in `use` lines and
# in paths; a crate reaches the modules of the crates below it that way,
# through the `use` lines of its lib.rs). The crates' dependencies already
# forbid a lower crate to use a higher one; this also orders the modules
# inside a crate. Usage: scripts/module-edges.sh [GIT-REV]
# (default: the working tree). A cycle between two modules shows as a
# pair of lines `a -> b` and `b -> a`.
#
# `scripts/module-edges.sh --check [GIT-REV]` fails (and names the edge) when a
# module uses one above it in LAYERS, the order engine/src/lib.rs
# documents, or a module missing from it: scripts/test.sh runs it, so a
# cycle cannot land.
set -euo pipefail
cd "$(dirname "$0")/.."
# Lowest first: a module may use only those before it.
LAYERS="error clock util model journal metrics secrets http store runtime executor api console server"
if [ "${1:-}" = "--check" ]; then
    bad=0
    while read -r from _ to; do
        rank_from=-1 rank_to=-1 i=0
        for m in $LAYERS; do
            [ "$m" = "$from" ] && rank_from=$i
            [ "$m" = "$to" ] && rank_to=$i
            i=$((i + 1))
        done
        if [ "$rank_from" -lt 0 ] || [ "$rank_to" -lt 0 ]; then
            echo "module-edges: '$from -> $to': add the new module to LAYERS in $0" >&2
            bad=1
        elif [ "$rank_to" -ge "$rank_from" ]; then
            echo "module-edges: '$from' uses '$to', which is above it (layers, lowest first: $LAYERS)" >&2
            bad=1
        fi
    done < <("$0" ${2:-})
    exit $bad
fi
rev="${1:-}"
if [ -n "$rev" ]; then
    files=$(git ls-tree -r --name-only "$rev" crates engine/src | grep '/src/.*\.rs$')
    show() { git show "$rev:$1"; }
else
    files=$(git ls-files --cached --others --exclude-standard crates engine/src | grep '/src/.*\.rs$')
    show() { cat "$1"; }
fi
for f in $files; do
    rel=${f#*/src/}
    from=${rel%%/*}
    from=${from%.rs}
    case "$from" in main | lib | cli) continue ;; esac
    { show "$f" | grep -v '^\s*//' | grep -oE 'crate::[a-z_]+' | sed 's/crate:://' |
        while read -r to; do
            if [ "$to" != "$from" ]; then echo "$from -> $to"; fi
        done; } || true
done | sort -u
