"""`make bench`: clickhook's throughput, latency and resource figures (issue 10).

Run with ``python -m tests.bench`` (or ``--quick``). This is a benchmark, not a test suite:
no module here is named ``test_*``, so the normal pytest run never collects it.
"""
