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
bash "$(dirname "$0")/debian.sh" chromium chromium-driver
"$CHROMIUM" --version
