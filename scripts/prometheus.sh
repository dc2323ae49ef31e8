#!/usr/bin/env bash
# Installs what the operations kit's test (tests/ops.rs) checks the alert
# rules and the dashboard's queries with, when missing: Debian's
# Prometheus, for /usr/bin/promtool.
set -euo pipefail
if command -v promtool >/dev/null; then
    exit 0
fi
echo "installing prometheus (for promtool) for the operations kit's test" >&2
sudo=""
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || {
        echo "error: promtool is missing and this user cannot install it;" >&2
        echo "install it (apt-get install prometheus) and run again." >&2
        exit 1
    }
    sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
# --no-install-recommends: promtool is all the test needs, not the node
# exporter and the rest that Debian recommends beside the server.
$sudo apt-get install -y -q --no-install-recommends prometheus >/dev/null ||
    { $sudo apt-get update -q >/dev/null &&
        $sudo apt-get install -y -q --no-install-recommends prometheus >/dev/null; }
command -v promtool >/dev/null
