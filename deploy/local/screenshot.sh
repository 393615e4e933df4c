#!/usr/bin/env bash
# `make screenshot`: the portal as a customer sees it, saved into the folder $1 (docs):
# portal.png, portal-endpoint.png and portal-preview.png. Starts a throwaway broker on a free
# port, runs the browser story test (which drives the pipeline and takes the pictures; it saves
# them into docs/ whenever it passes, in `make test` too), and stops the broker whatever happens.
set -euo pipefail
cd "$(dirname "$0")/../.."

out=${1:-docs}
VENV=${VENV:-.venv}
bash deploy/local/browser.sh
port=$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export KAFKA_PORT=$port
trap 'bash deploy/local/kafka.sh stop >/dev/null 2>&1 || true' EXIT
CLICKHOOK_KAFKA_BOOTSTRAP=$(bash deploy/local/kafka.sh start | tail -n 1)
export CLICKHOOK_KAFKA_BOOTSTRAP
CLICKHOOK_PORTAL_PICTURES=$(realpath -m "$out") "$VENV/bin/pytest" -q -p no:cacheprovider \
    "tests/e2e/test_portal_browser.py::test_a_customer_sees_fixes_and_replays_their_deliveries"
echo "screenshots: $out/portal.png $out/portal-endpoint.png $out/portal-preview.png"
