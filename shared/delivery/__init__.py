"""The delivery engine: from an envelope to a POST, and from its result to a durable hand-off.

May import ``shared.model``, ``shared.ops`` and ``shared.kafka``. Used by the dispatcher and
the retry service; ingest never imports it.

- ``http_client``, ``http_response`` and ``resolver``: keep-alive HTTP/1.1 POSTs over pooled
  connections, guarded against private destinations; the response reader (llhttp); DNS with a
  cache and bounded, timed lookups.
- ``sender``: one attempt: sign, send, classify the result.
- ``breaker``: per-endpoint circuit breaker and failure streaks.
- ``endpoint_gate``: per-endpoint concurrency and rate caps.
- ``deliverer``: one delivery, from its attempt to a durable result (delivered, retried in a
  tier, deferred, dead-lettered); ``attempt_log``: its writer of the delivery log.
- ``worker``: what the dispatcher and the retry service share around their consume loops.
"""
