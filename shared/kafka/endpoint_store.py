"""The endpoint registry: the compacted topic, materialised and followed, and its writes.

Reads. Every service reads ``webhook.endpoints`` from the beginning into an ``EndpointTable``
and then follows it (``follow``, a supervised task). An endpoint's ``version`` is the offset of
the record that holds its current state; the API shows it as the ``ETag``.

Writes are compare-and-set (``shared.kafka.fenced``): every writer of the topic writes under
one transactional id, reads the topic to its end once it has fenced the others, looks at the
endpoint as it now stands (its version against ``If-Match``, or the change to make to it),
writes and commits; a write that was fenced starts again from the read. A losing write is
aborted, never visible, so a reader that starts after compaction builds the same table as one
that read every record. Records written before this scheme (plain, non-transactional) read as
before.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Collection

import msgspec
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition

from shared.kafka import fenced
from shared.kafka.clients import create_consumer
from shared.kafka.fenced import FOLLOW_FETCH_WAIT_MS, FencedWriter
from shared.kafka.metadata import partitions_when_ready
from shared.kafka.window import read_to_ends
from shared.model.endpoint_table import EndpointTable
from shared.model.errors import ClickhookError
from shared.model.messages import Endpoint, decode_endpoint, encode_endpoint
from shared.model.templates import load_engine
from shared.model.topics import Topics
from shared.ops import metrics
from shared.ops.process import close_quietly
from shared.ops.settings import Settings

log = structlog.get_logger(__name__)

FOLLOW_POLL_MS = 1000

# A change to an endpoint: the endpoint as it stands in, the endpoint to write out (None:
# nothing to do). Pure: it may run again on a newer version.
Change = Callable[[Endpoint], Endpoint | None]


class _Keep:
    """Leave the endpoint as it stands: nothing to write."""


_KEEP = _Keep()
# What a write does with the endpoint as it stands: write this endpoint, delete it (None), or
# leave it as it is.
_Decision = Endpoint | None | _Keep


class EndpointWriteError(ClickhookError):
    """A write to ``webhook.endpoints`` that was not made."""

    def __init__(self, endpoint_id: str, message: str) -> None:
        super().__init__(message)
        self.endpoint_id = endpoint_id


class VersionMismatch(EndpointWriteError):
    """The endpoint's version is not one the writer expected (``If-Match``): nothing written."""

    def __init__(self, current: Endpoint, expected: Collection[int]) -> None:
        wanted = ", ".join(str(version) for version in sorted(expected))
        super().__init__(
            current.id, f"endpoint {current.id} is at version {current.version}, not {wanted}"
        )
        self.current = current
        self.expected = expected


class EndpointExists(EndpointWriteError):
    """A create for an id that is taken."""

    def __init__(self, endpoint_id: str) -> None:
        super().__init__(endpoint_id, f"endpoint {endpoint_id} exists")


class WriteContended(EndpointWriteError):
    """Other writers committed between every read and write of ``attempts`` tries."""

    def __init__(self, endpoint_id: str, attempts: int) -> None:
        super().__init__(
            endpoint_id, f"endpoint {endpoint_id}: other writes won {attempts} times in a row"
        )
        self.attempts = attempts


class EndpointStore:
    """Reads ``webhook.endpoints`` from the beginning, then follows it; writes go through it."""

    def __init__(self, settings: Settings, rng: random.Random | None = None) -> None:
        self._settings = settings
        self._topic = Topics(settings.topic_prefix).endpoints
        self._consumer: AIOKafkaConsumer = create_consumer(
            settings, group_id=None, fetch_max_wait_ms=FOLLOW_FETCH_WAIT_MS
        )
        self._writer = FencedWriter(
            settings, self._topic, self._consumer, client_id="clickhook-endpoints", rng=rng
        )
        self._assignment: list[TopicPartition] = []
        self._end_offsets: dict[TopicPartition, int] = {}
        self.table = EndpointTable()
        self.loaded = asyncio.Event()
        # How far the follower has read: its position, which also passes what records do not
        # show (transaction markers, records compacted away), as last looked at.
        self._position = 0
        # Set and replaced each time the follower reads on: what ``reached`` waits for.
        self._read_on = asyncio.Event()

    @property
    def writer_id(self) -> str:
        """The transactional id every writer of the topic shares."""
        return self._writer.writer_id

    async def start(self) -> None:
        """Assign the topic and find where it ends; ``follow`` then reads it."""
        self._assignment = await partitions_when_ready(self._settings, self._topic)
        await self._consumer.start()
        self._consumer.assign(self._assignment)
        await self._consumer.seek_to_beginning(*self._assignment)
        self._end_offsets = await self._consumer.end_offsets(self._assignment)

    async def stop(self) -> None:
        await self._writer.close()
        await close_quietly("endpoint consumer", self._consumer.stop())

    async def follow(self) -> None:
        """Read to the end seen at start (then ``loaded`` is set), then follow; never returns."""
        await self._catch_up(self._end_offsets)
        await self._note_position()
        self.loaded.set()
        log.info("endpoints_loaded", endpoints=len(self.table.all()))
        while True:
            batches = await self._consumer.getmany(timeout_ms=FOLLOW_POLL_MS)
            for records in batches.values():
                for record in records:
                    self._apply_record(record.key, record.value, record.offset)
            if batches:
                self._update_gauge()
            else:
                await self._note_position()
            self._pulse()

    # --- how far the table has read ----------------------------------------------------------

    def stamp(self) -> int | None:
        """What a click accepted now carries as ``clickhook-endpoints-at``: the offset past the
        newest record the table holds (its own writes included, read-your-writes). None when
        the topic has more than its one partition (an offset would not say how far)."""
        if len(self._assignment) != 1:
            return None
        return self.table.records_through

    def has_reached(self, stamp: int) -> bool:
        """Has the table read every record before ``stamp``?"""
        return max(self.table.records_through, self._position) >= stamp

    async def reached(self, stamp: int, timeout_s: float) -> bool:
        """Wait until the table has read every record before ``stamp``; False when it has not
        within ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                while not self.has_reached(stamp):
                    await self._read_on.wait()
        except TimeoutError:
            return False
        return True

    async def _note_position(self) -> None:
        """Look at the follower's position: an idle poll is when markers and gaps are passed
        without a record to show for it."""
        if len(self._assignment) == 1:
            self._position = await self._consumer.position(self._assignment[0])

    def _pulse(self) -> None:
        self._read_on.set()
        self._read_on = asyncio.Event()

    # --- writes ------------------------------------------------------------------------------

    async def create(self, endpoint: Endpoint) -> Endpoint:
        """Write a new endpoint; it is in ``table`` (with its version) when this returns."""

        def only_if_new(current: Endpoint | None) -> _Decision:
            if current is not None:
                raise EndpointExists(endpoint.id)
            return endpoint

        created = await self._write(endpoint.id, only_if_new)
        assert created is not None  # for mypy: only_if_new wrote it or raised
        return created

    async def update(
        self,
        endpoint_id: str,
        change: Change,
        *,
        if_match: Collection[int] | None = None,
    ) -> Endpoint | None:
        """Apply ``change`` to the endpoint's latest version and write the result.

        ``change`` gets the endpoint as it stands after every write committed so far, and
        returns it changed, or None when there is nothing to do; it runs again on the newer
        version if another write wins the race, so it must be a pure function of its argument:
        a change never reverts a newer write it did not see. ``if_match``: write only if the
        endpoint's version is one of these, else raise ``VersionMismatch``.

        Returns the endpoint as it now stands (written or not, with its version); None if
        there is no such endpoint. Visible in ``table`` when this returns (read-your-writes).
        """

        def changed(current: Endpoint | None) -> _Decision:
            if current is None:
                return _KEEP
            _check_version(current, if_match)
            result = change(current)
            return _KEEP if result is None else result

        return await self._write(endpoint_id, changed)

    async def delete(self, endpoint_id: str, *, if_match: Collection[int] | None = None) -> bool:
        """Delete the endpoint (a tombstone); False if there was none. ``if_match`` as for
        ``update``."""
        existed = False

        def tombstone(current: Endpoint | None) -> _Decision:
            nonlocal existed
            existed = current is not None
            if current is None:
                return _KEEP
            _check_version(current, if_match)
            return None

        await self._write(endpoint_id, tombstone)
        return existed

    async def put(self, endpoint: Endpoint) -> None:
        """Replace the whole endpoint (never re-creating a deleted one).

        Deprecated: a whole record computed from an earlier read reverts whatever was written
        since (a secret rotated meanwhile comes back). Use ``update`` with a change.
        """
        await self.update(endpoint.id, lambda _current: endpoint)

    async def _write(
        self, endpoint_id: str, decide: Callable[[Endpoint | None], _Decision]
    ) -> Endpoint | None:
        """Read to the end, ask ``decide`` what to write, write it; again if fenced."""
        decision: _Decision = _KEEP

        def encoded() -> fenced.Decision:
            nonlocal decision
            decision = decide(self.table.get(endpoint_id))
            if isinstance(decision, _Keep):
                return fenced.KEEP
            return None if decision is None else encode_endpoint(decision)

        def applied(offset: int) -> None:
            # Read-your-writes: the write is in the table before the caller answers.
            assert not isinstance(decision, _Keep)  # for mypy: only a write commits
            self.table.apply(endpoint_id, decision, offset)
            self._update_gauge()

        try:
            await self._writer.write(endpoint_id, encoded, applied)
        except fenced.WriteContended as exc:
            raise WriteContended(endpoint_id, exc.attempts) from exc
        return self.table.get(endpoint_id)

    async def read_to_end(self) -> None:
        """Wait until ``table`` holds every record committed so far (bounded by the publish
        timeout): what a read does that must not miss a write another instance made a moment
        ago."""
        await self._writer.read_to_end()

    # --- reads -------------------------------------------------------------------------------

    async def _catch_up(self, end_offsets: dict[TopicPartition, int]) -> None:
        async for record in read_to_ends(self._consumer, end_offsets):
            self._apply_record(record.key, record.value, record.offset)
        self._update_gauge()

    def _apply_record(self, key: bytes | None, value: bytes | None, offset: int) -> None:
        if key is None:
            log.warning("endpoint_record_without_key", offset=offset)
            return
        endpoint_id = key.decode(errors="replace")
        if value is None:
            self.table.apply(endpoint_id, None, offset)
            return
        try:
            endpoint = decode_endpoint(value)
        except msgspec.DecodeError as exc:
            log.error(  # noqa: TRY400 - the decode error is the whole story
                "endpoint_record_unreadable", endpoint_id=endpoint_id, error=str(exc)
            )
            return
        if endpoint.format == "template":
            load_engine()  # before ready, or now: never at a delivery (templates.py)
        self.table.apply(endpoint_id, endpoint, offset)

    def _update_gauge(self) -> None:
        enabled, disabled = self.table.counts()
        metrics.ENDPOINTS.labels(state="enabled").set(enabled)
        metrics.ENDPOINTS.labels(state="disabled").set(disabled)


def _check_version(current: Endpoint, if_match: Collection[int] | None) -> None:
    if if_match is not None and current.version not in if_match:
        raise VersionMismatch(current, if_match)
