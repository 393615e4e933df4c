"""The topics the services create: replication and the replicas a write needs."""

from __future__ import annotations

import pytest

from shared.kafka.clients import topic_specs
from shared.model.topics import Topics
from shared.ops.settings import Settings, load_settings


@pytest.mark.parametrize(
    ("replication", "in_sync"), [("1", "1"), ("2", "2"), ("3", "2"), ("5", "2")]
)
def test_every_topic_needs_two_replicas_in_sync_once_it_has_two(
    replication: str, in_sync: str
) -> None:
    specs = topic_specs(load_settings({"CLICKHOOK_TOPIC_REPLICATION": replication}))

    assert {spec.replication_factor for spec in specs} == {int(replication)}
    assert {spec.topic_configs["min.insync.replicas"] for spec in specs} == {in_sync}


def test_every_topic_named_is_one_the_services_create() -> None:
    settings = Settings()
    created = {spec.name for spec in topic_specs(settings)}
    assert set(Topics(settings.topic_prefix).every(settings.tier_delays_s)) == created
