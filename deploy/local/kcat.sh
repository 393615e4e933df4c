#!/usr/bin/env bash
# kcat (librdkafka's command-line client), which the suite produces to `clicks` with, as a
# shortener running librdkafka would (tests/e2e/test_any_producer.py): Debian's package.
set -euo pipefail

if ! command -v kcat >/dev/null 2>&1; then
    bash "$(dirname "$0")/debian.sh" kcat
fi
kcat -V | head -n 1
