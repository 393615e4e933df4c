"""Replay jobs as ``webhook.replays`` holds them, merged into one view. Pure; no I/O.

The topic (compacted, one partition) holds two kinds of record per job:

- key ``<job id>``: the job (``ReplayJob``), rewritten by its owner as it goes (heartbeats);
- key ``cancel:<job id>``: a request to cancel it (``ReplayCancel``), from any instance or the
  CLI. It has a key of its own so that no heartbeat overwrites it, not even after compaction
  has dropped every older record of the job.

A tombstone forgets a key: jobs are tombstoned (both keys) once the DLQ no longer holds any
letter they covered (``expired``).

Two rules hold whatever order records arrive in (``merge_job``): a finished job never goes
back to running (a stale heartbeat written after the end, by a slow owner or a zombie, is
ignored), and a cancel request is never forgotten.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from shared.model.messages import (
    ReplayJob,
    ReplayState,
    decode_replay,
    decode_replay_cancel,
)

CANCEL_KEY_PREFIX = "cancel:"
Applied = Literal["applied", "stale", "unreadable"]
FINISHED_STATES: frozenset[ReplayState] = frozenset({"completed", "cancelled", "failed"})


def cancel_key(job_id: str) -> str:
    return CANCEL_KEY_PREFIX + job_id


def is_finished(job: ReplayJob) -> bool:
    """Ended by its owner; ``interrupted`` is not among these (it is only how a silent running
    job looks, and its owner may yet speak again)."""
    return job.state in FINISHED_STATES


def merge_job(held: ReplayJob | None, incoming: ReplayJob) -> ReplayJob:
    """The job's state once ``incoming`` (a newer record of it) is applied to ``held``.

    A finished job stays as it finished: its first end wins over every later record. A cancel
    request, once seen, is kept."""
    if held is None:
        return incoming
    kept = held if is_finished(held) else incoming
    cancel_requested = held.cancel_requested or incoming.cancel_requested
    if kept.cancel_requested == cancel_requested:
        return kept
    return msgspec.structs.replace(kept, cancel_requested=cancel_requested)


def expired(job: ReplayJob, dlq_log_start: int, now_ms: int) -> bool:
    """Whether the job can be forgotten: it has ended, and retention has deleted every letter
    it covered (all lie below ``position`` in its partition, which now starts at
    ``dlq_log_start``), so no letter's state depends on it any more."""
    return job.state_at(now_ms) != "running" and job.position <= dlq_log_start


class ReplayBook:
    """Every replay job, as the records of ``webhook.replays`` (one partition: offsets order
    every record) read so far make it.

    ``apply`` takes records in topic order; a record at or below the offset already applied
    for its key is ignored, so a write applied at once by its writer (read-your-writes) is not
    undone when the follower reads older records of the key afterwards."""

    def __init__(self) -> None:
        self._jobs: dict[str, ReplayJob] = {}
        self._cancelled: set[str] = set()
        self._offsets: dict[str, int] = {}

    def apply(self, key: str, value: bytes | None, offset: int) -> Applied:
        """Apply one record: ``stale`` if an equal or newer record of its key is held,
        ``unreadable`` if no version of the codec reads it (skipped)."""
        if self._offsets.get(key, -1) >= offset:
            return "stale"
        self._offsets[key] = offset
        try:
            if key.startswith(CANCEL_KEY_PREFIX):
                self._apply_cancel(key.removeprefix(CANCEL_KEY_PREFIX), value)
            else:
                self._apply_job(key, value)
        except msgspec.DecodeError:
            return "unreadable"
        return "applied"

    def _apply_job(self, job_id: str, value: bytes | None) -> None:
        if value is None:
            self._jobs.pop(job_id, None)
            return
        job = merge_job(self._jobs.get(job_id), decode_replay(value))
        if job.id in self._cancelled and not job.cancel_requested:
            job = msgspec.structs.replace(job, cancel_requested=True)
        self._jobs[job_id] = job

    def _apply_cancel(self, job_id: str, value: bytes | None) -> None:
        if value is None:
            self._cancelled.discard(job_id)
            return
        decode_replay_cancel(value)  # an unreadable request is not taken as one
        self._cancelled.add(job_id)
        held = self._jobs.get(job_id)
        if held is not None and not held.cancel_requested:
            self._jobs[job_id] = msgspec.structs.replace(held, cancel_requested=True)

    def get(self, job_id: str) -> ReplayJob | None:
        return self._jobs.get(job_id)

    def all(self) -> list[ReplayJob]:
        return list(self._jobs.values())

    def of_endpoint(self, endpoint_id: str) -> list[ReplayJob]:
        """The endpoint's jobs, oldest first."""
        jobs = [job for job in self._jobs.values() if job.endpoint_id == endpoint_id]
        return sorted(jobs, key=lambda job: job.started_at_ms)

    def running(self, endpoint_id: str, now_ms: int) -> ReplayJob | None:
        """The endpoint's job that is running as of ``now_ms``, if any."""
        return next(
            (job for job in self.of_endpoint(endpoint_id) if job.state_at(now_ms) == "running"),
            None,
        )

    def rival(self, job: ReplayJob, now_ms: int, since_offset: int) -> ReplayJob | None:
        """Another job of ``job``'s endpoint that runs now, or that wrote at or after
        ``since_offset`` (the topic's end when ``job`` was asked for): it ran meanwhile, so
        the two were asked for concurrently, however short it was."""
        for other in reversed(self.of_endpoint(job.endpoint_id)):
            if other.id == job.id:
                continue
            if other.state_at(now_ms) == "running" or self._offsets[other.id] >= since_offset:
                return other
        return None

    def expired(
        self, endpoint_id: str, dlq_partition: int, dlq_log_start: int, now_ms: int
    ) -> list[ReplayJob]:
        """The endpoint's jobs in ``dlq_partition``, which starts at ``dlq_log_start``, that
        can be forgotten (``expired``)."""
        return [
            job
            for job in self.of_endpoint(endpoint_id)
            if job.dlq_partition == dlq_partition and expired(job, dlq_log_start, now_ms)
        ]
