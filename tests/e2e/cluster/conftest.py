"""The pipeline on a three-node Kafka cluster of the session's own (deploy/local/kafka.sh with
KAFKA_NODES=3): ``start_pipeline`` here starts the services against it, with every topic
replicated three times. Runs without CLICKHOOK_KAFKA_BOOTSTRAP: ``pytest -m cluster``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.broker import PrivateCluster


@pytest.fixture(name="kafka_cluster", scope="package")
def fixture_kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateCluster]:
    cluster = PrivateCluster(tmp_path_factory.mktemp("cluster"))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(name="whole_cluster", autouse=True)
def fixture_whole_cluster(kafka_cluster: PrivateCluster) -> PrivateCluster:
    """Every test starts with all three nodes up, whatever the one before it killed."""
    kafka_cluster.start()
    return kafka_cluster


@pytest.fixture(name="kafka_bootstrap", scope="package")
def fixture_kafka_bootstrap(kafka_cluster: PrivateCluster) -> str:
    """The cluster, for the e2e ``start_pipeline`` (which reads this fixture)."""
    return kafka_cluster.bootstrap
