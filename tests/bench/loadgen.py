"""The load generator process: reads one job (JSON) on stdin, runs it, writes its result (JSON)
to the file named by its argument.

Run by the bench as ``python -m tests.bench.loadgen RESULT_FILE``, so load generation never
shares a process, or an event loop, with the receiver or the services it measures.
"""

from __future__ import annotations

import sys
from pathlib import Path

import msgspec
import uvloop

from tests.bench.ceilings import run_producer_load, run_sender_load
from tests.bench.httpload import run_http_load, run_http_stream
from tests.bench.produce import (
    produce_clicks,
    produce_dead_letters,
    produce_deferrals,
    produce_envelopes,
)
from tests.bench.wire import (
    ClickLoad,
    DeadLetterLoad,
    DeferLoad,
    EnvelopeLoad,
    HttpLoad,
    HttpResult,
    HttpStream,
    Job,
    ProduceResult,
    ProducerLoad,
    SenderLoad,
)


async def run_job(job: Job) -> HttpResult | ProduceResult:
    match job:
        case HttpLoad():
            return await run_http_load(job)
        case HttpStream():
            return await run_http_stream(job)
        case ClickLoad():
            return await produce_clicks(job)
        case EnvelopeLoad():
            return await produce_envelopes(job)
        case DeferLoad():
            return await produce_deferrals(job)
        case SenderLoad():
            return await run_sender_load(job)
        case ProducerLoad():
            return await run_producer_load(job)
        case DeadLetterLoad():
            return await produce_dead_letters(job)


def main() -> None:
    job = msgspec.json.decode(sys.stdin.buffer.read(), type=Job)
    result = uvloop.run(run_job(job))
    Path(sys.argv[1]).write_bytes(msgspec.json.encode(result))


if __name__ == "__main__":
    main()
