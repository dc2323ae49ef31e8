#!/usr/bin/env bash
# The dependency edges between engine/src's top-level modules: for each
# module, the other top-level modules its files name through `crate::`
# (in `use` lines and in paths). Usage: scripts/module-edges.sh [GIT-REV]
# (default: the working tree). A cycle between two modules shows as a
# pair of lines `a -> b` and `b -> a`.
set -euo pipefail
cd "$(dirname "$0")/.."
rev="${1:-}"
if [ -n "$rev" ]; then
    files=$(git ls-tree -r --name-only "$rev" engine/src | grep '\.rs$')
    show() { git show "$rev:$1"; }
else
    files=$(git ls-files --cached --others --exclude-standard engine/src | grep '\.rs$')
    show() { cat "$1"; }
fi
for f in $files; do
    rel=${f#engine/src/}
    from=${rel%%/*}
    from=${from%.rs}
    case "$from" in main | lib) continue ;; esac
    { show "$f" | grep -v '^\s*//' | grep -oE 'crate::[a-z_]+' | sed 's/crate:://' |
        while read -r to; do
            if [ "$to" != "$from" ]; then echo "$from -> $to"; fi
        done; } || true
done | sort -u
