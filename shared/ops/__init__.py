"""Running a service: settings, logging, metrics, health, the process itself.

May import ``shared.model`` only (and aiohttp for the health server).

- ``settings``: the one typed settings object, read from the environment in one place.
- ``logging``: structlog, configured once; the delivery ids bound to every line.
- ``metrics``: every Prometheus metric, named once.
- ``health``: /healthz, /readyz (named readiness checks) and /metrics.
- ``supervision``: long-running background tasks; one that dies fails the service.
- ``process``: the event loop, SIGTERM and SIGINT, and closing clients without letting one
  failure hide the rest of a shutdown.
"""
