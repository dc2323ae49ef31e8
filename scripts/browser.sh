#!/usr/bin/env bash
# Installs what the console's browser tests drive, when missing: Debian's
# Chromium and its chromedriver (/usr/bin/chromium, /usr/bin/chromedriver).
set -euo pipefail
missing=chromedriver
command -v chromium >/dev/null || missing=chromium
command -v "$missing" >/dev/null && exit 0
RECOMMENDS=1 exec "$(dirname "$0")/apt-install.sh" "$missing" \
    "for the console's browser tests" chromium chromium-driver
