"""The wire model and the pure rules. Bottom layer: imports nothing else of clickhook.

No I/O here and no asyncio, aiokafka or aiohttp: these modules are functions and typed structs,
tested without a broker or a socket.

- ``messages``: every message that crosses Kafka or HTTP (click, endpoint, envelope, attempt,
  dead letter) and its codec; ``errors``: the project's typed errors.
- ``topics``: topic, header and consumer-group names.
- ``envelopes``: a delivery's identity (its webhook-id); ``signing``: Standard Webhooks
  signatures; ``formats``: the body each kind of receiver gets; ``filters``: which endpoints
  want a click; ``endpoint_table``: the in-memory view of the endpoints topic.
- ``schedule``: durations, the retry schedule, its tiers and jitter; ``routing``: what an
  attempt's outcome means and where the delivery goes next.
- ``operational``: operational webhooks to the operator (endpoint disabled, enabled,
  recovered; a delivery exhausted): the events, their ids, the reserved endpoint, the loop guard.
- ``ssrf``: which destination addresses may be connected to; ``watermark``: which offsets of
  a partition may be committed while many records are in flight.
"""
