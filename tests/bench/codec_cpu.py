"""The dispatcher's CPU per delivery at fan-out 100, per codec (issue 26): what compressing
the attempt log costs where it writes the most records per click (one per delivery).

The deliveries scenario's fan-out 100 run (a backlog of clicks, each to 100 endpoints,
drained by one dispatcher) is too small in its quick form to compare codecs: 2,000
deliveries take 0.3-0.8 s of CPU, read from ``/proc`` in 10 ms ticks on a shared machine,
and quick pairs put ``zstd`` anywhere from 0.56x to 2.07x of ``none``. So here each codec
drains 20,000 deliveries, quick or not, at least five times, the codecs taking turns in a
rotating order, and the figure is the ratio of the medians of the same run. Even so, one
drain's CPU per delivery moves by 10-20 % with the machine's load (docs/performance.md).
"""

from __future__ import annotations

import contextlib

from shared.ops.settings import DEFAULT_COMPRESSION, Compression
from tests.bench.scenarios import UNCAPPED, Bench, cpu_per_1k, drain_backlog

FANOUT = 100
DELIVERIES = 20_000
MIN_RUNS = 5
CODECS: tuple[Compression, ...] = ("none", DEFAULT_COMPRESSION)


async def codec_cpu(bench: Bench) -> None:
    async with contextlib.AsyncExitStack() as stacks:
        started = {
            codec: await stacks.enter_async_context(
                bench.stack("ingest", CLICKHOOK_KAFKA_COMPRESSION=codec, **UNCAPPED)
            )
            for codec in CODECS
        }
        for run in range(max(MIN_RUNS, bench.plan.repeats)):
            # Each run in another order: no codec always gets the first (or a quieter) turn.
            turn = run % len(CODECS)
            for codec in CODECS[turn:] + CODECS[:turn]:
                group = f"codec-{codec}-r{run}"
                drained = await drain_backlog(bench, started[codec], FANOUT, group, DELIVERIES)
                cpu = cpu_per_1k(drained.cpu_s, drained.ledger.count)
                print(f"  codec {codec} fan-out {FANOUT}: {cpu:.3f} s CPU / 1k deliveries")
                bench.record(f"codec.fan{FANOUT}.{codec}", cpu)
