#!/usr/bin/env bash
# Installs what the operations kit's test (tests/ops.rs) checks the alert
# rules and the dashboard's queries with, when missing: Debian's
# Prometheus, for /usr/bin/promtool (without the node exporter and the
# rest Debian recommends beside the server).
set -euo pipefail
exec "$(dirname "$0")/apt-install.sh" promtool "(for promtool) for the operations kit's test" prometheus
