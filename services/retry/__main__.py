"""python -m services.retry [dlq | replay …]: the service, or an operator command."""

import sys

from services.retry.app import main
from services.retry.cli import run_cli
from shared.lifecycle import run

if len(sys.argv) > 1:
    sys.exit(run_cli(sys.argv[1:]))
run(main)
