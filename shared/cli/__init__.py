"""The ``clickhook`` command: the operator's tools in one place, with ``--help`` everywhere.

``clickhook dlq list|show|count`` (dead letters, replayed or open), ``clickhook replay`` (an
endpoint's dead letters back into delivery, with a progress bar), ``clickhook topics
tail|create`` (decoded records as JSON lines; what the topics Job runs) and ``clickhook
endpoints list|show|disable|enable``. It talks to Kafka directly, with the services' settings
(``CLICKHOOK_KAFKA_BOOTSTRAP``, ``CLICKHOOK_TOPIC_PREFIX``, …).

The top layer of ``shared``: it may use every layer below (the model, ops, Kafka plumbing),
never a service.
"""
