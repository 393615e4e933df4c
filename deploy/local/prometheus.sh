#!/usr/bin/env bash
# Prometheus and promtool for the monitoring tests (tests/deploy/test_alerts.py runs
# `promtool check rules` and `promtool test rules`; tests/e2e/test_prometheus.py scrapes the
# services): Debian's `prometheus` package, installed with apt-get when missing. The package's
# own service is not started: the tests start theirs, on 127.0.0.1.
set -euo pipefail
source "$(dirname "$0")/debian_packages.sh"

ensure_debian_packages prometheus /usr/bin/prometheus /usr/bin/promtool -- prometheus
