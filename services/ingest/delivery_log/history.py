"""The history a fresh index reads behind its newest hour (``fill.py`` says which): a consumer of
its own on ``webhook.attempts`` and ``webhook.dlq``, reading one window at a time, each
partition from where the fill stands to the window's end and no further."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition

from services.ingest.delivery_log.fill import (
    WINDOW_MS,
    FillState,
    Key,
    first_state,
    newest_first_since,
    next_state,
    next_window_ms,
    offsets_at,
)
from shared.kafka.clients import Record
from shared.ops.process import close_quietly
from shared.ops.settings import Settings


@dataclass(frozen=True, slots=True)
class HistoryBatch:
    """Records of the window being read, and how far each partition got: past records the
    batch does not hold (transaction markers) when the consumer's position says so."""

    records: dict[TopicPartition, list[Record]]
    reached: dict[TopicPartition, int]


def index_consumer(
    settings: Settings,
    client_id: str,
    fetch_max_bytes: int,
    partition_fetch_bytes: int,
    *,
    group_id: str | None = None,
) -> AIOKafkaConsumer:
    """A consumer of the topics the index is built from, committed records only, from what is
    left when its position is gone: assigned (no group: every replica reads all of them) or a
    member of ``group_id`` (a shared store); its positions come from the index, never from
    committed offsets."""
    return AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_partition_fetch_bytes=partition_fetch_bytes,
        fetch_max_bytes=fetch_max_bytes,
        client_id=client_id,
    )


def _key(tp: TopicPartition) -> Key:
    return (tp.topic, tp.partition)


class HistoryReader:
    """Reads the window the fill is at; the caller indexes what it returns and moves the fill
    on (``advance``, ``next_window``) once that is written."""

    def __init__(
        self,
        settings: Settings,
        topics: Sequence[str],
        *,
        fetch_max_bytes: int,
        partition_fetch_bytes: int,
    ) -> None:
        self._topics = tuple(topics)
        self._consumer = index_consumer(
            settings, "clickhook-delivery-log-history", fetch_max_bytes, partition_fetch_bytes
        )
        self._partitions: list[TopicPartition] = []
        self.state: FillState | None = None
        # Batches the fill may still read; None: no limit. Tests hold the fill (0) to look at
        # an index that has only its newest hour, or let it read a batch at a time.
        self.batches_allowed: int | None = None

    async def start(self, partitions: Sequence[TopicPartition]) -> None:
        self._partitions = [tp for tp in partitions if tp.topic in self._topics]
        await self._consumer.start()
        self._consumer.assign(self._partitions)
        self._consumer.pause(*self._partitions)

    async def stop(self) -> None:
        await close_quietly("delivery log history consumer", self._consumer.stop())

    @property
    def wanted(self) -> bool:
        """Whether there is history to read now (and the fill is not held)."""
        return self.state is not None and self.batches_allowed != 0

    # --- where to start -----------------------------------------------------------------------

    async def plan(self, now_ms: int, ends: Mapping[TopicPartition, int]) -> dict[Key, int]:
        """For a fresh index: where following the topics starts (their newest hour), and the
        fill of what is older (``state``); returns the former."""
        since_ms = newest_first_since(now_ms)
        heads = await self._offsets_at(since_ms, ends)
        starts = await self._offsets_at(max(0, since_ms - WINDOW_MS), ends)
        self.resume(first_state(since_ms, heads, starts))
        return heads

    async def next_window(self) -> FillState | None:
        """The state for the window after the one read in full (None: nothing older)."""
        assert self.state is not None
        ends = await self._consumer.end_offsets(self._partitions)
        starts = await self._offsets_at(next_window_ms(self.state), ends)
        beginnings = await self._consumer.beginning_offsets(self._partitions)
        return next_state(self.state, starts, {_key(tp): n for tp, n in beginnings.items()})

    async def _offsets_at(self, at_ms: int, ends: Mapping[TopicPartition, int]) -> dict[Key, int]:
        found = await self._consumer.offsets_for_times(dict.fromkeys(self._partitions, at_ms))
        offsets = {_key(tp): None if f is None else int(f.offset) for tp, f in found.items()}
        return offsets_at(offsets, {_key(tp): ends[tp] for tp in self._partitions})

    def resume(self, state: FillState | None) -> None:
        """Read from where ``state`` stands (None: nothing to read)."""
        self.state = state
        self._consumer.pause(*self._partitions)
        if state is None:
            return
        for (topic, partition), window in state.left().items():
            tp = TopicPartition(topic, partition)
            self._consumer.seek(tp, window.next)
            self._consumer.resume(tp)

    # --- reading ------------------------------------------------------------------------------

    async def fetch(self, timeout_ms: int, max_records: int) -> HistoryBatch:
        """The next records of the window, none past its end."""
        assert self.state is not None
        left = self.state.left()
        reading = [TopicPartition(*key) for key in left]
        batches = await self._consumer.getmany(
            *reading, timeout_ms=timeout_ms, max_records=max_records
        )
        records: dict[TopicPartition, list[Record]] = {}
        reached: dict[TopicPartition, int] = {}
        for tp in reading:
            end = left[_key(tp)].end
            fetched = batches.get(tp, [])
            kept = [r for r in fetched if r.offset < end]
            if kept:
                records[tp] = kept
            # The consumer's position passes transaction markers too, which no record shows.
            position = await self._consumer.position(tp)
            reached[tp] = min(end, max(position, kept[-1].offset + 1 if kept else 0))
        if records and self.batches_allowed is not None:
            self.batches_allowed -= 1
        return HistoryBatch(records, reached)

    def advance(self, reached: Mapping[TopicPartition, int]) -> None:
        """Once what reached them is indexed: partitions at the window's end stop reading."""
        assert self.state is not None
        state = self.state
        for tp, offset in reached.items():
            state = state.advanced(_key(tp), offset)
        self.state = state
        done = [TopicPartition(*key) for key, w in state.windows.items() if w.done]
        self._consumer.pause(*done)
