#!/usr/bin/env bash
# Installs Debian packages a test needs, when a command they provide is
# missing: apt-install.sh COMMAND WHY PACKAGE... (as root, or through sudo).
# Without --no-install-recommends only if RECOMMENDS=1.
set -euo pipefail
command="$1" why="$2"
shift 2
if command -v "$command" >/dev/null; then
    exit 0
fi
echo "installing $* $why" >&2
sudo=""
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || {
        echo "error: $command is missing and this user cannot install it;" >&2
        echo "install it (apt-get install $*) and run again." >&2
        exit 1
    }
    sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
flags=(-y -q)
[ "${RECOMMENDS:-0}" = 1 ] || flags+=(--no-install-recommends)
$sudo apt-get install "${flags[@]}" "$@" >/dev/null ||
    { $sudo apt-get update -q >/dev/null && $sudo apt-get install "${flags[@]}" "$@" >/dev/null; }
command -v "$command" >/dev/null
