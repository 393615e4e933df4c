#!/usr/bin/env bash
# kcat (librdkafka's command-line client), which the suite produces to `clicks` with, as a
# shortener running librdkafka would (tests/e2e/test_any_producer.py): Debian's package.
set -euo pipefail
source "$(dirname "$0")/debian_packages.sh"

ensure_debian_packages kcat /usr/bin/kcat -- kcat
