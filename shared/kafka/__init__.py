"""Kafka plumbing shared by the services.

May import ``shared.model`` and ``shared.ops``; never ``shared.delivery``.

- ``clients``: producer and consumer factories, topic creation, durable produce, setting a
  record aside.
- ``partition_worker``: the consume loop (many records in flight, watermark commits, drains).
- ``window``: reading a topic up to the end offsets seen at the start; ``follower``: a small
  topic read to its end, then followed.
- ``endpoint_store``: the compacted endpoints topic, materialised, followed, written as
  compare-and-set (``update``, ``delete`` and ``create``, each in a fencing transaction).
- ``idempotence``: the idempotent producer that takes a new producer id when the broker no
  longer accepts its sequence numbers (aiokafka alone never sends again).
- ``metadata``: waiting for a topic's metadata (a topic created a moment ago).
- ``service_base``: what every service starts with (topics, producer, endpoint store,
  broker probe, readiness).
- ``operational``: operational webhooks (``shared.model.operational``) handed to delivery.
- ``lag``: consumer lag of a service's own group, exported as metrics.
- ``replay``: replay jobs, an endpoint's dead letters streamed back into delivery and
  recorded in ``webhook.replays``.
- ``undecodable``: every batch any consumer of the process fetches is checked before aiokafka
  reads it; one that cannot be decoded is skipped and reported, never raised (installed here,
  on import, so that no consumer is left without it).
"""

from shared.kafka import undecodable

undecodable.install()
