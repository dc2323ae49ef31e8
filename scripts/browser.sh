#!/usr/bin/env bash
# Installs what the console's browser tests drive, when missing: Debian's
# Chromium and its chromedriver (/usr/bin/chromium, /usr/bin/chromedriver).
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    exit 0
fi
echo "installing chromium and chromium-driver for the console's browser tests" >&2
sudo=""
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || {
        echo "error: chromium and chromium-driver are missing and this user cannot install them;" >&2
        echo "install them (apt-get install chromium chromium-driver) and run again." >&2
        exit 1
    }
    sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get install -y -q chromium chromium-driver >/dev/null ||
    { $sudo apt-get update -q >/dev/null && $sudo apt-get install -y -q chromium chromium-driver >/dev/null; }
command -v chromedriver >/dev/null
