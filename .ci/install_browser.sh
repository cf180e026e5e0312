#!/usr/bin/env bash
# Headless browser for tests/test_app_browser.py: Debian's chromium + chromium-driver (Playwright is
# pointed at /usr/bin/chromium; it never downloads a browser). Idempotent: does nothing when both
# are installed. Needs root (or sudo) and the Debian package mirror.
set -euo pipefail

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    echo "install_browser: chromium and chromium-driver already installed"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "install_browser: need root or sudo to apt-get install chromium" >&2; exit 1; }
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends chromium chromium-driver fonts-dejavu-core
/usr/bin/chromium --headless --no-sandbox --disable-gpu --version 2>/dev/null || true
echo "install_browser: done"
