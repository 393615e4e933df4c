#!/usr/bin/env bash
# kcat (librdkafka's command-line client), which the suite produces to `clicks` with, as a
# shortener running librdkafka would (tests/e2e/test_any_producer.py): Debian's package,
# installed with apt-get when missing (as root, or through sudo).
set -euo pipefail

if command -v kcat >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "kcat.sh: kcat missing and no apt-get to install it" >&2
    exit 1
fi
as_root=()
if [[ $(id -u) -ne 0 ]]; then
    as_root=(sudo)
fi
echo "== kcat: installing kcat"
"${as_root[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq kcat >/dev/null
kcat -V | head -n 1
