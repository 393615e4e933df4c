#!/usr/bin/env bash
# PostgreSQL for the delivery log's tests and bench (tests/support/postgres.py starts a
# throwaway server of its own: initdb into a temporary directory, a free loopback port):
# Debian's `postgresql` package, installed with apt-get when no server is. The package's own
# cluster and service are not started (policy-rc.d answers 101 meanwhile).
set -euo pipefail
source "$(dirname "$0")/debian_packages.sh"

initdb=$(compgen -G '/usr/lib/postgresql/*/bin/initdb' | sort -V | tail -n 1 || true)
ensure_debian_packages postgresql "${initdb:-/usr/lib/postgresql/missing/bin/initdb}" -- postgresql
