"""Replay jobs as ``webhook.replays`` holds them: the merge rules and the book, pure."""

from __future__ import annotations

import msgspec
import pytest

from shared.model.messages import ReplayCancel, ReplayJob, ReplayState, encode
from shared.model.replays import ReplayBook, cancel_key, expired, merge_job
from tests.support.attempts import now_ms, replay_job

RUNNING: ReplayState = "running"
FINISHED: list[ReplayState] = ["completed", "cancelled", "failed"]


def job(state: ReplayState = RUNNING, **fields: object) -> ReplayJob:
    return replay_job("ep_1", partition=0, end_offset=10, state=state, **fields)


def cancel(job_id: str) -> bytes:
    return encode(ReplayCancel(job_id=job_id, requested_at_ms=now_ms(), by="test"))


@pytest.mark.parametrize("end", FINISHED)
def test_a_finished_job_never_goes_back_to_running(end: ReplayState) -> None:
    finished = job(end, position=10)
    stale = job(RUNNING, position=4)

    assert merge_job(finished, stale) == finished


def test_a_finished_job_keeps_its_first_end() -> None:
    completed = job("completed")

    assert merge_job(completed, job("failed", error="late")) == completed


def test_a_heartbeat_moves_a_running_job_on() -> None:
    newer = job(RUNNING, position=7)

    assert merge_job(job(RUNNING, position=3), newer) == newer


def test_a_cancel_request_wins_over_a_later_heartbeat() -> None:
    asked = job(RUNNING, cancel_requested=True)

    merged = merge_job(asked, job(RUNNING, position=9))

    assert merged.cancel_requested
    assert merged.position == 9


def test_the_first_record_of_a_job_is_taken_as_it_is() -> None:
    first = job()  # once: two calls may straddle a millisecond

    assert merge_job(None, first) == first


def test_a_job_expires_once_it_ended_and_retention_passed_its_letters() -> None:
    at = now_ms()
    done = job("completed", position=10)

    assert expired(done, dlq_log_start=10, now_ms=at)
    assert not expired(done, dlq_log_start=9, now_ms=at)
    assert not expired(job(RUNNING, position=10, updated_at_ms=at), dlq_log_start=50, now_ms=at)


def test_a_silent_running_job_expires_like_an_ended_one() -> None:
    at = now_ms()
    silent = job(RUNNING, position=10, updated_at_ms=at - 3_600_000)

    assert expired(silent, dlq_log_start=10, now_ms=at)


# --- the book -----------------------------------------------------------------------------------


def test_a_stale_heartbeat_record_after_the_end_leaves_the_job_finished() -> None:
    book = ReplayBook()
    completed = job("completed")
    book.apply("rpl_ep_1", encode(job(RUNNING, position=2)), 0)
    book.apply("rpl_ep_1", encode(completed), 1)
    book.apply("rpl_ep_1", encode(job(RUNNING, position=5)), 2)

    assert book.get("rpl_ep_1") == completed
    assert book.running("ep_1", now_ms()) is None


@pytest.mark.parametrize("cancel_first", [True, False])
def test_a_cancel_record_holds_in_whatever_order_it_is_read(cancel_first: bool) -> None:
    """After compaction, the job's last heartbeat may come after its cancel in the log."""
    book = ReplayBook()
    records = [(cancel_key("rpl_ep_1"), cancel("rpl_ep_1")), ("rpl_ep_1", encode(job()))]
    for offset, (key, value) in enumerate(records if cancel_first else reversed(records)):
        book.apply(key, value, offset)
    book.apply("rpl_ep_1", encode(job(RUNNING, position=9)), 5)

    found = book.get("rpl_ep_1")
    assert found is not None
    assert found.cancel_requested


def test_a_record_older_than_the_one_applied_is_stale() -> None:
    book = ReplayBook()
    assert book.apply("rpl_ep_1", encode(job(RUNNING, position=8)), 7) == "applied"

    assert book.apply("rpl_ep_1", encode(job(RUNNING, position=3)), 6) == "stale"
    found = book.get("rpl_ep_1")
    assert found is not None
    assert found.position == 8


def test_an_unreadable_record_is_reported_and_skipped() -> None:
    book = ReplayBook()

    assert book.apply("rpl_x", b"{not json", 0) == "unreadable"
    assert book.apply(cancel_key("rpl_x"), b"[]", 1) == "unreadable"
    assert book.all() == []


def test_a_tombstone_forgets_the_job() -> None:
    book = ReplayBook()
    book.apply("rpl_ep_1", encode(job("completed")), 0)
    book.apply("rpl_ep_1", None, 1)

    assert book.of_endpoint("ep_1") == []


def test_the_running_job_of_an_endpoint_is_the_one_not_ended() -> None:
    at = now_ms()
    book = ReplayBook()
    done = job("completed", id="rpl_a", started_at_ms=at - 2)
    silent = job(RUNNING, id="rpl_b", started_at_ms=at - 1, updated_at_ms=at - 3_600_000)
    live = job(RUNNING, id="rpl_c", started_at_ms=at, updated_at_ms=at)
    for offset, each in enumerate([done, silent, live]):
        book.apply(each.id, encode(each), offset)

    assert book.running("ep_1", at) == live
    assert [j.id for j in book.of_endpoint("ep_1")] == ["rpl_a", "rpl_b", "rpl_c"]


def test_expired_jobs_are_those_of_the_partition_asked_about() -> None:
    at = now_ms()
    book = ReplayBook()
    here = job("completed", id="rpl_here", position=5)
    elsewhere = msgspec.structs.replace(
        job("completed", id="rpl_else", position=5), dlq_partition=1
    )
    kept = job("completed", id="rpl_kept", position=50)
    for offset, each in enumerate([here, elsewhere, kept]):
        book.apply(each.id, encode(each), offset)

    assert book.expired("ep_1", 0, dlq_log_start=20, now_ms=at) == [here]


def test_a_job_that_wrote_since_a_start_was_asked_for_is_its_rival() -> None:
    at = now_ms()
    book = ReplayBook()
    quick = job("completed", id="rpl_quick", started_at_ms=at - 1)
    book.apply(quick.id, encode(quick), 7)
    new = job(RUNNING, id="rpl_new", started_at_ms=at)

    assert book.rival(new, at, since_offset=7) == quick
    assert book.rival(new, at, since_offset=8) is None


def test_a_running_job_is_a_rival_however_old() -> None:
    at = now_ms()
    book = ReplayBook()
    old = job(RUNNING, id="rpl_old", started_at_ms=at - 10, updated_at_ms=at)
    book.apply(old.id, encode(old), 0)

    assert book.rival(job(RUNNING, id="rpl_new"), at, since_offset=5) == old
