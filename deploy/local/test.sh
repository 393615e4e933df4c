#!/usr/bin/env bash
# `make test`: a throwaway broker on a free port, lint, types and the whole suite against it.
# Exits with the suite's status; the broker is stopped whatever happens.
set -euo pipefail
cd "$(dirname "$0")/../.."

VENV=${VENV:-.venv}
port=$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export KAFKA_PORT=$port
trap 'bash deploy/local/kafka.sh stop >/dev/null 2>&1 || true' EXIT

echo "== lint and types"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
"$VENV/bin/mypy"
"$VENV/bin/lint-imports"

echo "== docs (mkdocs build --strict: broken links and anchors fail; reference generated)"
NO_MKDOCS_2_WARNING=1 "$VENV/bin/mkdocs" build --strict --quiet

echo "== browser (the portal's tests drive Debian's headless Chromium)"
bash deploy/local/browser.sh

echo "== prometheus (promtool tests the alerts; a real Prometheus scrapes the services)"
bash deploy/local/prometheus.sh

echo "== kcat (tests/e2e/test_any_producer.py produces with librdkafka, as shorteners do)"
bash deploy/local/kcat.sh

echo "== postgresql (the delivery log's tests run on SQLite and on a throwaway PostgreSQL)"
bash deploy/local/postgres.sh

echo "== broker"
started=$(date +%s)
CLICKHOOK_KAFKA_BOOTSTRAP=$(bash deploy/local/kafka.sh start | tail -n 1)
export CLICKHOOK_KAFKA_BOOTSTRAP
echo "broker at $CLICKHOOK_KAFKA_BOOTSTRAP after $(( $(date +%s) - started ))s"

echo "== tests"
"$VENV/bin/pytest" "$@"
