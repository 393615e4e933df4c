"""What each service exports before it has handled anything: ``shared.ops.metrics.initialise``
run in a fresh interpreter per service (the metrics live in one process-wide registry)."""

from __future__ import annotations

import functools
import subprocess
import sys

from prometheus_client.parser import text_string_to_metric_families

from tests.support.services import ROOT, service_env

SERVICES = ("ingest", "dispatcher", "retry")
# Schedule and prefix of their own, so the tier and topic labels are seen to follow settings.
SETTINGS = {"CLICKHOOK_RETRY_SCHEDULE": "1s,1m,1h", "CLICKHOOK_TOPIC_PREFIX": "t."}

_EXPORT = """
import sys
from prometheus_client import generate_latest
from shared.ops.metrics import initialise
from shared.ops.settings import load_settings
initialise(sys.argv[1], load_settings())
sys.stdout.write(generate_latest().decode())
"""

Sample = tuple[str, dict[str, str], float]


@functools.cache
def initial_samples(service: str) -> tuple[Sample, ...]:
    """The samples ``service`` exports right after ``initialise``, before any work."""
    env = service_env("localhost:9092", SETTINGS["CLICKHOOK_TOPIC_PREFIX"], **SETTINGS)
    text = subprocess.run(
        [sys.executable, "-c", _EXPORT, service],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return tuple(
        (sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    )


def label_values(service: str, name: str, label: str) -> set[str]:
    return {labels[label] for sample, labels, _ in initial_samples(service) if sample == name}
