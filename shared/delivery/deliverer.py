"""Carries one delivery from its attempt to a durable result; shared by dispatcher and retry.

A delivery is finished only when it was delivered, or when the broker acknowledged its
hand-off: the envelope written to a retry tier or to the dead-letter topic. Callers commit
offsets only after that. There are three kinds of hand-off:

- ``retry``: after a failed attempt, to the tier the schedule (or ``Retry-After``) gives;
- ``defer``: without an attempt, keeping its place in the schedule: while the endpoint is known
  to be down (its breaker open) the delivery waits until the next probe; when the endpoint is at
  its caps it backs off, each wait in a row twice the last (``busy_deferral_wait_s``), and
  after waiting longer than the whole schedule it is dead (``endpoint_busy``); when the
  service stops before the attempt ends it waits in the first tier;
- ``dead_letter``: after the schedule's last attempt, or at once for 410 Gone.

Only an attempt (a request sent, or a connection tried) counts against the schedule, so a
dead letter ``exhausted`` means the schedule's attempts were really made.

Once the hand-off is acknowledged the delivery is done: what follows (an auto-disable, a
metric, a log line) is logged when it fails, never raised, since the caller would take the
failure for an unfinished record and send it again; an auto-disable, a write that may take
seconds, runs in a task of its own, so that the record is done (and committed) meanwhile.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import msgspec
import structlog
from aiokafka import AIOKafkaProducer

from shared.delivery.attempt_log import AttemptLog
from shared.delivery.breaker import CircuitBreaker, Result
from shared.delivery.sender import AttemptResult, Sender
from shared.kafka.clients import produce_durably, until_done
from shared.kafka.endpoint_store import EndpointStore
from shared.kafka.operational import OperationalWebhooks
from shared.model.messages import (
    AttemptRecord,
    DeadLetter,
    DeadLetterReason,
    DeferralReason,
    DeliveryEnvelope,
    Endpoint,
    body_sent_by,
    encode,
)
from shared.model.operational import (
    delivery_exhausted,
    endpoint_disabled,
    endpoint_recovered,
    reports_on,
)
from shared.model.routing import (
    DeadLettered,
    Delivered,
    RetryLater,
    Route,
    failure_streak_start_ms,
    route_after_attempt,
    signals_down,
)
from shared.model.schedule import (
    busy_deferral_wait_s,
    jittered_delay_s,
    nearest_tier,
    next_turn_s,
    shortest_wait_s,
    waited_too_long,
)
from shared.model.topics import HEADER_DUE_AT_MS, HEADER_REASON, Topics
from shared.model.trace_context import TraceContext
from shared.ops import metrics, tracing
from shared.ops.settings import Settings

log = structlog.get_logger(__name__)

BREAKER_GAUGE_INTERVAL_S = 1.0
# Booked turns are swept once more endpoints than this have some.
TURNS_SWEEP_AT = 1000


class Deliverer:
    def __init__(
        self,
        settings: Settings,
        *,
        service: str,
        producer: AIOKafkaProducer,
        attempt_log: AttemptLog | None,
        sender: Sender,
        endpoints: EndpointStore,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._service = service
        self._topics = Topics(settings.topic_prefix)
        self._producer = producer
        self._attempt_log = attempt_log
        self._sender = sender
        self._endpoints = endpoints
        self._operational = OperationalWebhooks(settings, producer)
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self._breaker = CircuitBreaker(settings.breaker_threshold, settings.deferral_delays_s)
        self._breaker_gauge_at_s = 0.0
        # Per rate-capped endpoint, until when the turns promised to its deferred deliveries
        # run (this process's view): a burst's deferrals are spread over the time it needs.
        self._turns_booked_until_s: dict[str, float] = {}
        # Endpoint id → its disable under way (``_disable_soon``).
        self._disabling: dict[str, asyncio.Task[None]] = {}
        self._clock = clock
        # Children looked up once: .labels() on every attempt showed up in profiles.
        self._attempt_seconds = metrics.DELIVERY_ATTEMPT_SECONDS.labels(service=service)
        self._latency_seconds = metrics.DELIVERY_LATENCY_SECONDS.labels(service=service)
        self._attempts_by_outcome = {
            outcome: metrics.DELIVERY_ATTEMPTS.labels(service=service, outcome=outcome)
            for outcome in metrics.ATTEMPT_OUTCOMES
        }

    async def deliver(
        self, endpoint: Endpoint, envelope: DeliveryEnvelope, trace: TraceContext | None = None
    ) -> None:
        """Make one attempt and hand the delivery off durably according to its outcome; while
        the endpoint is known to be down, defer it to the next probe instead. ``trace``: the
        delivery's trace context, the parent of the attempt's span and carried on by the
        records it is handed off in."""
        # Any accepted write to the endpoint (a new URL, re-enabled, ...) gives it a fresh chance.
        generation = endpoint.version
        if self._breaker.refresh(endpoint.id, generation, envelope.replay_id):
            log.info("breaker_reset", reason="replay" if envelope.replay_id else "endpoint_changed")
        now_s = self._clock()
        if not self._breaker.allow(endpoint.id, now_s):
            await self.defer(envelope, "breaker_open", trace=trace)
            return
        attempt_no = envelope.attempts_made + 1
        with tracing.attempt_span(trace, attempt=attempt_no) as span:
            result = await self._sender.attempt(
                endpoint,
                envelope.event,
                webhook_id=envelope.webhook_id,
                event_id=envelope.event_id,
                attempt=attempt_no,
                trace=span.context,
            )
            span.attempted(result.record.status, result.record.outcome)
        self._observe(result, envelope)
        record = result.record
        route = route_after_attempt(
            record.outcome,
            current_tier=self._current_tier(envelope),
            schedule_s=self._settings.retry_schedule_s,
            retry_after_s=result.retry_after_s,
        )
        # A delivered envelope goes nowhere: only one handed off carries its history on.
        delivered = isinstance(route, Delivered)
        updated = envelope if delivered else _with_attempt(envelope, record, endpoint.version)
        # Read before the breaker hears of this attempt: a success ends the streak.
        recovered_from_ms = (
            self._failing_since_ms(endpoint, envelope) if record.outcome == "success" else None
        )
        self._track_breaker(endpoint, updated, result, generation)
        record = _without_repeated_body(record, envelope, endpoint.version)
        log.info(
            "delivery_attempted",
            attempt=attempt_no,
            outcome=record.outcome,
            status=record.status,
            duration_ms=record.duration_ms,
            route=route.kind,
        )
        await self._forward(endpoint, updated, route, record, trace)
        if recovered_from_ms is not None:
            await self._after_hand_off(
                "recovered event",
                self._operational.publish(
                    endpoint_recovered(
                        endpoint,
                        recovered_by=envelope.webhook_id,
                        at_ms=record.at_ms,
                        failing_since_ms=recovered_from_ms,
                    )
                ),
            )
        self._disable_if_failing_too_long(endpoint)

    def _failing_since_ms(self, endpoint: Endpoint, envelope: DeliveryEnvelope) -> int | None:
        """Since when the endpoint has been failing before this attempt, as this process saw
        it or as the delivery's own history of this run says (another process may have seen
        its failures); None when it was not failing."""
        seen_s = self._breaker.failing_since_s(endpoint.id)
        if seen_s is None and not envelope.attempts:
            return None  # a first attempt, to an endpoint seen healthy: most successes
        known_ms = [
            start_ms
            for start_ms in (
                None if seen_s is None else int(seen_s * 1000),
                failure_streak_start_ms(
                    envelope.attempts,
                    endpoint_version=endpoint.version,
                    replay_id=envelope.replay_id,
                ),
            )
            if start_ms is not None
        ]
        return min(known_ms, default=None)

    async def defer(
        self,
        envelope: DeliveryEnvelope,
        reason: DeferralReason,
        *,
        rate_limit_per_s: float | None = None,
        trace: TraceContext | None = None,
    ) -> None:
        """Hand the delivery off without an attempt; it keeps its place in the schedule. While
        the breaker is open it waits until the endpoint's next probe; held back by the
        endpoint's caps (``rate_limit_per_s``: its rate cap, if any) it backs off, and is dead
        once it has waited longer than the whole schedule; else it waits in the first tier."""
        now_ms = int(self._clock() * 1000)
        if reason == "endpoint_busy":
            if waited_too_long(envelope.busy_since_ms, now_ms, self._settings.retry_schedule_s):
                await self.dead_letter(envelope, "endpoint_busy", trace=trace)
                return
            envelope = msgspec.structs.replace(
                envelope, busy_since_ms=envelope.busy_since_ms or now_ms
            )
            delay_s = self._busy_delay_s(envelope, rate_limit_per_s)
        elif reason == "breaker_open":
            wait_s = self._breaker.next_probe_in_s(envelope.endpoint_id, self._clock())
            delay_s = shortest_wait_s(self._settings.tier_delays_s, wait_s)
        else:
            delay_s = self._settings.retry_schedule_s[0]
        queued = await self._wait(envelope, delay_s, deferrals=envelope.deferrals + 1, trace=trace)
        self._after_hand_off_now("deferral record", lambda: self._record_deferral(queued, reason))

    def _busy_delay_s(self, envelope: DeliveryEnvelope, rate_limit_per_s: float | None) -> float:
        """The tier a delivery held back by its endpoint's caps waits in: twice as long as the
        last time in a row, or until its turn in the endpoint's backlog if that is later, at
        most the longest deferral tier."""
        longest_s = max(self._settings.deferral_delays_s)
        backlog_wait_s = 0.0
        if rate_limit_per_s:
            now_s = self._clock()
            booked_s = self._turns_booked_until_s.get(envelope.endpoint_id, now_s)
            turn_s = min(next_turn_s(booked_s, now_s, rate_limit_per_s), now_s + longest_s)
            self._turns_booked_until_s[envelope.endpoint_id] = turn_s
            backlog_wait_s = turn_s - now_s
            self._forget_past_turns(now_s)
        return busy_deferral_wait_s(
            envelope.deferrals,
            tier_delays_s=self._settings.tier_delays_s,
            first_s=self._settings.retry_schedule_s[0],
            longest_s=longest_s,
            backlog_wait_s=backlog_wait_s,
        )

    def _forget_past_turns(self, now_s: float) -> None:
        """Keep the booked turns of endpoints with a backlog only (bounded by the endpoints)."""
        if len(self._turns_booked_until_s) > TURNS_SWEEP_AT:
            self._turns_booked_until_s = {
                endpoint_id: until_s
                for endpoint_id, until_s in self._turns_booked_until_s.items()
                if until_s > now_s
            }

    def _record_deferral(self, envelope: DeliveryEnvelope, reason: DeferralReason) -> None:
        metrics.DELIVERIES_DEFERRED.labels(service=self._service, reason=reason).inc()
        self._log_record(
            AttemptRecord(
                webhook_id=envelope.webhook_id,
                event_id=envelope.event_id,
                endpoint_id=envelope.endpoint_id,
                account_id=envelope.account_id,
                attempt=envelope.attempts_made + 1,
                at_ms=int(self._clock() * 1000),
                duration_ms=0.0,
                outcome="deferred",
                next_attempt_at_ms=envelope.due_at_ms,
                deferred_because=reason,
            )
        )

    async def _after_hand_off(self, step: str, work: Awaitable[None]) -> None:
        """Run what follows a durable hand-off; its failure is logged, never raised: the
        delivery is done, and a raise would make the caller send it again."""
        try:
            await work
        except Exception:  # any failure here: it must not undo a finished hand-off
            log.exception("after_hand_off_failed", step=step)

    def _after_hand_off_now(self, step: str, work: Callable[[], None]) -> None:
        """As ``_after_hand_off``, for what follows without waiting (a record, a metric, a log
        line): no coroutine made and awaited for it, as there was for every delivery."""
        try:
            work()
        except Exception:  # any failure here: it must not undo a finished hand-off
            log.exception("after_hand_off_failed", step=step)

    async def dead_letter(
        self,
        envelope: DeliveryEnvelope,
        reason: DeadLetterReason,
        *,
        trace: TraceContext | None = None,
    ) -> None:
        letter = DeadLetter(reason=reason, dead_at_ms=int(self._clock() * 1000), envelope=envelope)
        headers = [(HEADER_REASON, reason.encode())]
        await self._send(self._topics.dlq, letter, envelope, headers, trace)
        self._after_hand_off_now("dead-letter record", lambda: self._count_dead(envelope, reason))
        await self._after_hand_off(
            "exhausted event", self._operational.publish(delivery_exhausted(letter))
        )

    def _count_dead(self, envelope: DeliveryEnvelope, reason: DeadLetterReason) -> None:
        metrics.DEAD_LETTERS.labels(service=self._service, reason=reason).inc()
        log.warning("delivery_dead_lettered", reason=reason, attempts=envelope.attempts_made)

    async def _forward(
        self,
        endpoint: Endpoint,
        envelope: DeliveryEnvelope,
        route: Route,
        record: AttemptRecord,
        trace: TraceContext | None,
    ) -> None:
        """Where the route says: nowhere (delivered), a retry tier, or the dead letters."""
        match route:
            case Delivered():
                self._after_hand_off_now("attempt record", lambda: self._log_record(record))
            case RetryLater(tier=tier, at_least_s=at_least_s):
                delay_s = max(self._settings.retry_schedule_s[tier], at_least_s)
                queued = await self._wait(
                    msgspec.structs.replace(envelope, tier=tier),
                    shortest_wait_s(self._settings.tier_delays_s, delay_s),
                    deferrals=0,
                    trace=trace,
                )
                self._after_hand_off_now("retry record", lambda: self._record_retry(record, queued))
            case DeadLettered(reason=reason):
                await self.dead_letter(envelope, reason, trace=trace)
                self._after_hand_off_now(
                    "attempt record", lambda: self._log_record(record, dead_letter_reason=reason)
                )
                if reason == "endpoint_gone":
                    self._disable_soon(endpoint, "endpoint answered 410 Gone")

    def _record_retry(self, record: AttemptRecord, queued: DeliveryEnvelope) -> None:
        metrics.RETRY_SCHEDULED.labels(service=self._service, tier=str(queued.tier)).inc()
        self._log_record(record, next_attempt_at_ms=queued.due_at_ms)

    async def _wait(
        self,
        envelope: DeliveryEnvelope,
        delay_s: float,
        *,
        deferrals: int,
        trace: TraceContext | None,
    ) -> DeliveryEnvelope:
        """Write the envelope to the tier topic of ``delay_s``, due after it plus jitter."""
        due_at_ms = int((self._clock() + jittered_delay_s(delay_s, self._rng)) * 1000)
        queued = msgspec.structs.replace(envelope, due_at_ms=due_at_ms, deferrals=deferrals)
        headers = [(HEADER_DUE_AT_MS, str(due_at_ms).encode())]
        await self._send(self._topics.retry(delay_s), queued, queued, headers, trace)
        return queued

    def _current_tier(self, envelope: DeliveryEnvelope) -> int:
        """The schedule position the envelope waited in; -1 before the first attempt. A tier
        of an older, longer schedule maps to the nearest one that still exists."""
        if envelope.tier < 0:
            return -1
        return nearest_tier(self._settings.retry_schedule_s, envelope.tier)

    def _track_breaker(
        self,
        endpoint: Endpoint,
        envelope: DeliveryEnvelope,
        result: AttemptResult,
        generation: int,
    ) -> None:
        record = result.record
        now_s = self._clock()
        streak_start_s = None
        if record.outcome == "success":
            outcome = Result.SUCCESS  # ends any streak: where it began does not matter
        else:
            outcome = Result.DOWN if signals_down(record.outcome, record.status) else Result.FAILED
            streak_start_ms = failure_streak_start_ms(
                envelope.attempts, endpoint_version=generation, replay_id=envelope.replay_id
            )
            streak_start_s = None if streak_start_ms is None else streak_start_ms / 1000
        self._breaker.record(
            endpoint.id, outcome, now_s, generation=generation, streak_start_s=streak_start_s
        )
        if now_s - self._breaker_gauge_at_s >= BREAKER_GAUGE_INTERVAL_S:
            # Counting walks every unhealthy endpoint: not on every attempt.
            self._breaker_gauge_at_s = now_s
            counts = self._breaker.open_counts(now_s)
            for state in ("open", "half_open"):
                metrics.BREAKERS.labels(service=self._service, state=state).set(counts[state])

    def _disable_if_failing_too_long(self, endpoint: Endpoint) -> None:
        if not reports_on(endpoint.id):
            return  # the operational endpoint lives in the settings: nothing to disable
        failing_for_s = self._breaker.failing_for_s(endpoint.id, self._clock())
        if failing_for_s >= self._settings.disable_after_s:
            days = failing_for_s / 86400
            self._disable_soon(
                endpoint, f"every attempt failed for {days:.1f} days (CLICKHOOK_DISABLE_AFTER)"
            )

    def _disable_soon(self, endpoint: Endpoint, reason: str) -> None:
        """Disable the endpoint in a task of its own, one at a time per endpoint.

        The delivery that called for it is handed off already, and the disable is a write to
        the endpoints topic that may take seconds: awaited here, it kept every record with a
        delivery to that endpoint from being committed meanwhile (in the ledger test, a 410
        endpoint's disable held the dispatcher's commits at offset 0 until it was killed, and
        everything it had delivered was delivered again). Lost in a crash, it is asked again
        by the endpoint's next 410 or failure.
        """
        if endpoint.id in self._disabling:
            return  # the running one disables it; a second write would only contend
        task = asyncio.create_task(
            self._after_hand_off("disable endpoint", self._disable(endpoint, reason))
        )
        self._disabling[endpoint.id] = task
        task.add_done_callback(lambda _: self._disabling.pop(endpoint.id, None))

    async def _disable(self, endpoint: Endpoint, reason: str) -> None:
        await self.disable_endpoint(endpoint, reason)
        self._breaker.forget(endpoint.id)

    async def finish_disables(self, timeout_s: float) -> None:
        """At shutdown: let the disables under way finish, for at most ``timeout_s``."""
        if self._disabling:
            await asyncio.wait(set(self._disabling.values()), timeout=timeout_s)

    async def disable_endpoint(self, endpoint: Endpoint, reason: str) -> None:
        """Disable the endpoint as it stands now: a change written since (a rotated secret, a
        new URL) is kept, and one that disabled it already is left alone. The operator hears
        of it (``endpoint.disabled``) when this write disabled it."""
        if not reports_on(endpoint.id):
            log.warning("operational_endpoint_not_disabled", reason=reason)
            return
        wrote = False

        def disabled(current: Endpoint) -> Endpoint | None:
            nonlocal wrote
            wrote = current.enabled
            if not current.enabled:
                return None
            return msgspec.structs.replace(
                current, enabled=False, disabled_reason=reason, updated_at=datetime.now(UTC)
            )

        after = await until_done(
            lambda: self._endpoints.update(endpoint.id, disabled), "disable endpoint"
        )
        if not wrote or after is None:
            return
        log.warning("endpoint_disabled", endpoint_id=endpoint.id, reason=reason)
        await self._operational.publish(endpoint_disabled(after, "automatic"))

    async def _send(
        self,
        topic: str,
        message: msgspec.Struct,
        envelope: DeliveryEnvelope,
        headers: list[tuple[str, bytes]],
        trace: TraceContext | None,
    ) -> None:
        if trace is not None:
            headers = [*headers, *trace.record_headers()]
        await produce_durably(
            self._producer,
            topic,
            key=envelope.endpoint_id.encode(),
            value=encode(message),
            headers=headers,
        )

    def _log_record(
        self,
        record: AttemptRecord,
        *,
        next_attempt_at_ms: int | None = None,
        dead_letter_reason: DeadLetterReason | None = None,
    ) -> None:
        """To the delivery log, with what happens next and the breaker as this service sees it."""
        if self._attempt_log is None:
            return
        self._attempt_log.record(
            msgspec.structs.replace(
                record,
                breaker=self._breaker.state(record.endpoint_id, self._clock()),
                service=self._service,
                next_attempt_at_ms=next_attempt_at_ms or record.next_attempt_at_ms,
                dead_letter_reason=dead_letter_reason,
            )
        )

    def _observe(self, result: AttemptResult, envelope: DeliveryEnvelope) -> None:
        record = result.record
        self._attempts_by_outcome[record.outcome].inc()
        self._attempt_seconds.observe(record.duration_ms / 1000)
        if record.outcome == "success":
            occurred = envelope.event.get("occurred_at")
            if isinstance(occurred, str):
                try:
                    occurred_s = datetime.fromisoformat(occurred).timestamp()
                except ValueError:
                    occurred_s = None
                if occurred_s is not None:
                    self._latency_seconds.observe(
                        max(0.0, record.at_ms / 1000 + record.duration_ms / 1000 - occurred_s)
                    )


def _with_attempt(
    envelope: DeliveryEnvelope, record: AttemptRecord, endpoint_version: int
) -> DeliveryEnvelope:
    """The envelope after ``record``'s attempt, which joins its history (without the request,
    which the delivery log keeps), for its hand-off."""
    history = msgspec.structs.replace(
        record,
        request_headers=None,
        request_body=None,
        endpoint_version=endpoint_version,
        replay_id=envelope.replay_id,
    )
    return msgspec.structs.replace(
        envelope,
        attempts_made=record.attempt,
        attempts=[*envelope.attempts, history],
        deferrals=0,
        busy_since_ms=None,
    )


def _without_repeated_body(
    record: AttemptRecord, envelope: DeliveryEnvelope, endpoint_version: int
) -> AttemptRecord:
    """The record for the delivery log, pointing at the run's first attempt for its request
    body instead of copying it again (the delivery log shows it from there)."""
    first = body_sent_by(envelope.attempts, endpoint_version, envelope.replay_id)
    if first is None:
        return record
    return msgspec.structs.replace(record, request_body=None, request_body_of=first)
