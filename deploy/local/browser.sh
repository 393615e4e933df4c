#!/usr/bin/env bash
# The browser the portal's tests drive: Debian's chromium and chromium-driver, installed with
# apt-get when missing (as root, or through sudo). Selenium is pointed at these binaries and
# kept offline (SE_OFFLINE=true): no browser or driver is ever downloaded.
set -euo pipefail
source "$(dirname "$0")/debian_packages.sh"

CHROMIUM=/usr/bin/chromium
CHROMEDRIVER=/usr/bin/chromedriver

ensure_debian_packages browser "$CHROMIUM" "$CHROMEDRIVER" -- chromium chromium-driver
