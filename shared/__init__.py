"""clickhook's common package, in layers; each may import only the layers below it.

- ``shared.model``: the wire model and the pure rules (what a click, an endpoint, an envelope
  are; signing, payload formats, filters, the retry schedule and routing, SSRF policy, offset
  watermarks). No I/O.
- ``shared.ops``: running a service: settings, logging, metrics, health and readiness, the
  process (event loop, signals, shutdown).
- ``shared.kafka``: Kafka plumbing: clients and topics, the partition worker (many records in
  flight, watermark commits), the endpoint store, topic windows, lag, dead letters, and the
  base every service starts with.
- ``shared.delivery``: the delivery engine: the webhook HTTP client, one attempt, the breaker,
  per-endpoint caps, and the deliverer that hands each result off to a retry tier or the
  dead-letter topic.
- ``shared.cli``: the ``clickhook`` command (dead letters, replay, topics, endpoints), on top
  beside the services: it may use every layer above, never a service.

The services (``services.*``) sit on top; none imports another. The contracts are written in
pyproject.toml (``[tool.importlinter]``) and checked by ``make lint``.
"""
