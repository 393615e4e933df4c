#!/usr/bin/env bash
# Prometheus and promtool for the monitoring tests (tests/deploy/test_alerts.py runs
# `promtool check rules` and `promtool test rules`; tests/e2e/test_prometheus.py scrapes the
# services): Debian's `prometheus` package, installed with apt-get when missing (as root, or
# through sudo). Nothing is downloaded from elsewhere; the package's own service is not started.
set -euo pipefail

PROMETHEUS=/usr/bin/prometheus
PROMTOOL=/usr/bin/promtool

if [[ -x $PROMETHEUS && -x $PROMTOOL ]]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "prometheus.sh: $PROMETHEUS or $PROMTOOL missing and no apt-get to install them" >&2
    exit 1
fi
as_root=()
if [[ $(id -u) -ne 0 ]]; then
    as_root=(sudo)
fi
echo "== prometheus: installing Debian's prometheus (promtool with it)"
"${as_root[@]}" apt-get update -qq
# policy-rc.d 101: the package's postinst must not start a Prometheus of its own (it would
# bind 0.0.0.0:9090 and scrape on its own); the tests start theirs on 127.0.0.1.
policy=/usr/sbin/policy-rc.d
created_policy=false
if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee "$policy" >/dev/null
    "${as_root[@]}" chmod +x "$policy"
    created_policy=true
fi
trap '[[ $created_policy == true ]] && "${as_root[@]}" rm -f "$policy"' EXIT
DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends prometheus >/dev/null
"$PROMTOOL" --version | head -n 1
