#!/usr/bin/env bash
# The browser the portal's tests drive: Debian's chromium and chromium-driver, installed with
# apt-get when missing (as root, or through sudo). Selenium is pointed at these binaries and
# kept offline (SE_OFFLINE=true): no browser or driver is ever downloaded.
set -euo pipefail

CHROMIUM=/usr/bin/chromium
CHROMEDRIVER=/usr/bin/chromedriver

if [[ -x $CHROMIUM && -x $CHROMEDRIVER ]]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "browser.sh: $CHROMIUM or $CHROMEDRIVER missing and no apt-get to install them" >&2
    exit 1
fi
as_root=()
if [[ $(id -u) -ne 0 ]]; then
    as_root=(sudo)
fi
echo "== browser: installing chromium and chromium-driver"
"${as_root[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq chromium chromium-driver >/dev/null
"$CHROMIUM" --version
