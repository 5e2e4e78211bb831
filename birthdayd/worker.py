"""The worker role: turns a delivered id into at most one provider call.

For each id: win the conditional ``queued → sending`` transition (anything else
is a redelivery: ack and drop), wait until the greeting is due, call the
provider, record the outcome, then ack.  Recording and acking are shielded
from cancellation, so a drain never loses a result.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import random
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
from aiormq.abc import DeliveredMessage

from birthdayd import batching, dispatch, greetings, metrics, occasions, retry, store
from birthdayd import broker as broker_mod
from birthdayd import clock as clock_mod
from birthdayd import emailer as emailer_mod

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Retries due within this are re-published by the worker itself; later ones
# wait for the scheduler's tick (which also covers a worker that died).
LOCAL_RETRY_MAX = dt.timedelta(minutes=10)


@dataclasses.dataclass(frozen=True)
class WorkerConfig:
    concurrency: int = 50
    max_retries: int = 5
    backoff_delay_ms: int = 2000
    email_timeout_ms: int = 10000
    send_hour: int = 9
    max_lateness: dt.timedelta = dt.timedelta(days=7)
    lease_margin: dt.timedelta = dt.timedelta(seconds=60)
    """A row in sending belongs to its worker until it is due, plus the
    provider timeout, plus this; then recovery presumes the worker dead."""


class Worker:
    def __init__(
        self,
        pool: asyncpg.Pool,
        broker: broker_mod.Broker,
        emailer: emailer_mod.Emailer,
        breaker: retry.Breaker,
        clock: clock_mod.Clock,
        config: WorkerConfig,
    ) -> None:
        self.pool = pool
        self.broker = broker
        self.emailer = emailer
        self.breaker = breaker
        self.clock = clock
        self.config = config
        self._tasks: set[asyncio.Task[None]] = set()
        # Tasks waiting for their greeting's instant, and tasks in a provider call.
        self._waiting: set[asyncio.Task[Any]] = set()
        self._calling: set[asyncio.Task[Any]] = set()
        self._timers: set[asyncio.TimerHandle] = set()
        self._stopping = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        # Concurrent deliveries share one statement for their busiest writes.
        self._starts: batching.Batcher[uuid.UUID, Any] = batching.Batcher(
            self._start_many, orphaned=self._unstart)
        self._sends: batching.Batcher[tuple[Any, int], bool] = batching.Batcher(
            self._sent_many)

    async def start(self) -> None:
        await self.broker.consume(self._on_message, self.config.concurrency)
        logger.info("worker consuming %s", self.broker.names.queue,
                    extra={"event": "worker_started", "concurrency": self.config.concurrency})

    async def stop(self, grace_s: float) -> None:
        """Stop intake and drain: greetings still waiting for their instant are
        handed back at once; sends finish within ``grace_s``; a provider call
        already under way is never cut off (its own timeout bounds it), since
        cutting it would re-send what the provider may have accepted."""
        self._stopping.set()
        await self.broker.cancel_consumers()
        for timer in self._timers:
            timer.cancel()  # the tick re-publishes these retries
        self._timers.clear()
        for task in self._waiting:
            task.cancel()
        if self._tasks:
            logger.info("draining %d in-flight sends", len(self._tasks),
                        extra={"event": "worker_draining", "in_flight": len(self._tasks)})
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace_s)
            for task in pending - self._calling:
                task.cancel()
            if pending:
                await asyncio.wait(pending)

    def _lease(self) -> dt.timedelta:
        """How long past its due time a row in sending stays this worker's."""
        return dt.timedelta(milliseconds=self.config.email_timeout_ms) + self.config.lease_margin

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def _on_message(self, message: DeliveredMessage) -> None:
        # Run outside the channel's own tasks, which die with the channel.
        task = asyncio.create_task(self.handle(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def handle(self, message: DeliveredMessage) -> None:
        try:
            message_id = uuid.UUID(message.body.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            logger.error("dropping a message that is not an id: %r", message.body[:100],
                         extra={"event": "message_malformed"})
            await broker_mod.ack(message)
            return
        try:
            await self.deliver(message_id)
        except asyncio.CancelledError:
            raise  # not acked: redelivered, and the row says what is left to do
        except Exception:
            # The row stays where it was; its lease brings it back.  Not acking
            # now would only redeliver into the same failure.
            logger.exception("delivery of %s failed", message_id,
                             extra={"event": "delivery_error", "message_id": str(message_id)})
        await asyncio.shield(broker_mod.ack(message))

    async def deliver(self, message_id: uuid.UUID) -> None:
        """Everything between receiving an id and acking it."""
        now = self.clock.now()
        row = await self._starts.submit(message_id)
        if row is None:
            if not await store.cancel_if_deleted(self.pool, message_id, now):
                metrics.REDELIVERIES_DROPPED.inc()
            return
        attempt: int = row["attempts"]
        task = asyncio.current_task()
        assert task is not None
        try:
            result = await self._attempt(row, attempt)
            if result is not None:
                await asyncio.shield(self._record(row, attempt, result))
        except asyncio.CancelledError:
            # Drained before the provider answered: hand the row back without
            # counting the attempt (a no-op if it was already recorded).
            await asyncio.shield(self._unstart(message_id, row))
            raise
        finally:
            # In a provider call until its answer is recorded: a drain waits.
            self._calling.discard(task)

    async def _attempt(self, row: Any, attempt: int) -> emailer_mod.Result | None:
        """Wait until due, then call the provider, unless the greeting is too
        late or the breaker is open; None when no call was made."""
        message_id: uuid.UUID = row["id"]
        occasion: str = row["occasion"]
        now = self.clock.now()
        waited = await self._wait_until_due(row, now)
        now = self.clock.now()
        if waited and await store.cancel_if_deleted(self.pool, message_id, now):
            return None  # deleted while we waited: DELETE cancels what is not sent
        late_since = row["redriven_at"] or row["send_at"]
        if now - late_since > self.config.max_lateness:
            await asyncio.shield(self._end(row, attempt, "expired",
                                           "later than MAX_LATENESS", now))
            metrics.MESSAGES.labels(occasion, "expired").inc()
            return None
        if not self.breaker.allow(self._loop.time()):
            due = now + dt.timedelta(seconds=self.breaker.retry_in_s(self._loop.time()))
            await asyncio.shield(store.release(self.pool, message_id, attempt, due, now))
            metrics.MESSAGES.labels(occasion, "deferred").inc()
            self._retry_later(message_id, due, now)
            return None
        if self._stopping.is_set():
            # Draining: start no new provider call; the tick hands it to another worker.
            await asyncio.shield(store.release(self.pool, message_id, attempt, now, now))
            return None
        text = occasions.OCCASIONS[occasion].message(row["first_name"], row["last_name"])
        task = asyncio.current_task()
        assert task is not None
        self._calling.add(task)  # from here until the answer is recorded (deliver)
        result = await self.emailer.send(row["email"], text, message_id)
        self.breaker.record(self._loop.time(), result.outcome is not retry.Outcome.RETRY)
        metrics.BREAKER_OPEN.set(self.breaker.state is retry.BreakerState.OPEN)
        return result

    async def _start_many(self, ids: list[uuid.UUID]) -> list[Any]:
        """``queued → sending`` for a batch; an id delivered twice in one batch
        wins (at most) once."""
        unique = list(set(ids))
        now = self.clock.now()
        tries = 0

        async def start() -> list[Any]:
            nonlocal tries
            tries += 1
            rows = list(await store.start_sending(self.pool, unique, self._lease(), now))
            if tries > 1:
                # Retried after a commit whose answer was lost: the rows that
                # commit moved (stamped with this ``now``) are ours too.
                rows += await store.started_at(self.pool, unique, now)
            return rows

        won = {r["id"]: r for r in await self._persist(start)}
        return [won.pop(i, None) for i in ids]

    async def _unstart(self, message_id: uuid.UUID, row: Any) -> None:
        """Hand back a row this worker moved to sending but will not send."""
        if row is not None:
            now = self.clock.now()
            await store.release(self.pool, message_id, row["attempts"],
                                max(row["due_at"], now), now)

    async def _sent_many(self, items: list[tuple[Any, int]]) -> list[bool]:
        """Record a batch of 2xx answers and plan next year's, in one transaction."""

        async def record() -> list[bool]:
            now = self.clock.now()
            async with self.pool.acquire() as conn, conn.transaction():
                # Users before messages, the order every writer takes them in.
                await store.lock_users(conn, sorted({r["user_id"] for r, _ in items}))
                done = await store.finish_sent(conn, [(r["id"], a) for r, a in items], now)
                for row, _ in items:
                    # Recovery took the row back while the provider was
                    # answering: it was accepted all the same, so nobody may
                    # send it again.
                    if row["id"] not in done and await store.finish_late_sent(
                        conn, row["id"], now
                    ):
                        done.add(row["id"])
                ended = [(r["user_id"], r["occasion"]) for r, _ in items if r["id"] in done]
                await greetings.plan_next(conn, ended, now, self.config.send_hour)
            return [row["id"] in done for row, _ in items]

        return await self._persist(record)

    async def _wait_until_due(self, row: Any, now: dt.datetime) -> bool:
        """Sleep until the row is due (published ahead, so the send can happen
        on the second); True if it slept.  Cancelled by a drain."""
        task = asyncio.current_task()
        assert task is not None
        self._waiting.add(task)
        waited = False
        try:
            if (wait_s := (row["due_at"] - now).total_seconds()) > 0:
                await asyncio.sleep(wait_s)
                now, waited = self.clock.now(), True
            # The event loop's timer and the clock may disagree: nothing goes
            # out while the clock reads before the greeting's instant.
            while now < row["send_at"]:
                await asyncio.sleep(max((row["send_at"] - now).total_seconds(), 0.001))
                now, waited = self.clock.now(), True
        finally:
            self._waiting.discard(task)
        return waited

    async def _persist(self, write: Callable[[], Awaitable[T]]) -> T:
        """Run a write that records a provider's answer, retrying while
        PostgreSQL is briefly away (a failover, a dropped connection): losing
        the record of a 2xx would mean sending the greeting again."""
        deadline = self._loop.time() + self.config.lease_margin.total_seconds()
        delay_s = 0.05
        while True:
            try:
                return await write()
            except store.TRANSIENT_ERRORS as e:
                if self._loop.time() + delay_s > deadline:
                    raise
                logger.warning("recording an outcome failed (%s); retrying", e,
                               extra={"event": "record_retry"})
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, 2.0)

    async def _record(self, row: Any, attempt: int, result: emailer_mod.Result) -> None:
        now = self.clock.now()
        occasion = row["occasion"]
        if result.outcome is retry.Outcome.SENT:
            await self._sends.submit((row, attempt))
            metrics.MESSAGES.labels(occasion, "sent").inc()
            metrics.LATENESS_SECONDS.observe(max((now - row["send_at"]).total_seconds(), 0))
            return
        if result.timed_out:
            metrics.POSSIBLE_DUPLICATES.labels("timeout").inc()
        if result.outcome is retry.Outcome.RETRY and retry.should_retry(
            attempt, self.config.max_retries
        ):
            delay_ms = retry.backoff_ms(attempt, self.config.backoff_delay_ms)
            due = now + dt.timedelta(milliseconds=delay_ms)
            if await self._persist(lambda: store.finish(
                self.pool, row["id"], attempt, "retrying", result.error, now, due
            )):
                metrics.MESSAGES.labels(occasion, "retried").inc()
                self._retry_later(row["id"], due, now)
            return
        await self._end(row, attempt, "failed", result.error, now)
        metrics.MESSAGES.labels(occasion, "failed").inc()
        logger.warning("greeting %s failed: %s", row["id"], result.error,
                       extra={"event": "message_failed", "message_id": str(row["id"])})

    async def _end(self, row: Any, attempt: int, status: str, error: str | None,
                   now: dt.datetime) -> None:
        """A greeting failed or expired: record it and plan next year's, in one
        transaction (planning is a savepoint: its failure never undoes the record)."""

        async def record() -> bool:
            async with self.pool.acquire() as conn, conn.transaction():
                done = await store.finish(conn, row["id"], attempt, status, error, now)
                if done:
                    await greetings.plan_next(conn, [(row["user_id"], row["occasion"])], now,
                                              self.config.send_hour)
                return done

        await self._persist(record)

    def _retry_later(self, message_id: uuid.UUID, due: dt.datetime, now: dt.datetime) -> None:
        delay = due - now
        if delay > LOCAL_RETRY_MAX:
            return
        # Publish a little ahead, like the tick, so the retry starts on time.
        delay_s = max(delay.total_seconds() - 1.0, 0.0) * (0.9 + 0.1 * random.random())  # noqa: S311

        def fire() -> None:
            self._timers.discard(handle)
            task = asyncio.create_task(self._republish(message_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        handle = self._loop.call_later(delay_s, fire)
        self._timers.add(handle)

    async def _republish(self, message_id: uuid.UUID) -> None:
        now = self.clock.now()
        # On any failure the row is retrying, or queued under a short lease:
        # the tick or recovery takes it from there.
        with contextlib.suppress(Exception):
            if await store.claim_one(self.pool, message_id, now + self.config.lease_margin, now):
                await dispatch.publish_claimed(self.pool, self.broker, [message_id], now)
