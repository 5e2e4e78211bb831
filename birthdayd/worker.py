"""The worker role: turns a delivered id into at most one provider call.

For each id: win ``queued → sending`` (anything else is a redelivery: ack and
drop), wait until the greeting is due, re-assert ownership and read the user
as they are now (no row, no call), call the provider, then ack while the
outcome is recorded.  Every write is a method of
:class:`deliveries.Deliveries`; this module only orders them, and owns the
consumer, the drain and the timers.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
import uuid
from collections.abc import Awaitable, Callable, Coroutine

from aiormq.abc import DeliveredMessage

from birthdayd import broker as broker_mod
from birthdayd import clock as clock_mod
from birthdayd import deliveries as deliveries_mod
from birthdayd import emailer as emailer_mod
from birthdayd import metrics, occasions, retry
from birthdayd.config import WorkerConfig
from birthdayd.deliveries import Delivery
from birthdayd.states import Status

logger = logging.getLogger(__name__)

# Retries due within this are re-published by the worker itself; later ones
# wait for the scheduler's tick (which also covers a worker that died).
LOCAL_RETRY_MAX = dt.timedelta(minutes=10)


class Worker:
    def __init__(self, deliveries: deliveries_mod.Deliveries, broker: broker_mod.Broker,
                 emailer: emailer_mod.Emailer, breaker: retry.Breaker, clock: clock_mod.Clock,
                 config: WorkerConfig) -> None:
        self.deliveries = deliveries
        self.broker = broker
        self.emailer = emailer
        self.breaker = breaker
        self.clock = clock
        self.config = config
        self._tasks: set[asyncio.Task[None]] = set()
        # Tasks waiting for their greeting's instant, and tasks from the claim
        # of a provider call until its answer is recorded (never cut off).
        self._waiting: set[asyncio.Task[None]] = set()
        self._calling: set[asyncio.Task[None]] = set()
        self._timers: set[asyncio.TimerHandle] = set()
        # Rows from the claim of their call until its answer is recorded: at
        # most ``concurrency``, like the deliveries RabbitMQ hands over (acked
        # once the provider has answered), so a crash can leave no more than
        # that many answered and unrecorded.
        self._unrecorded = asyncio.Semaphore(config.concurrency)
        self._stopping = False
        self._loop = asyncio.get_running_loop()

    async def start(self) -> None:
        await self.broker.consume(self._on_message, self.config.concurrency)
        logger.info("worker consuming %s", self.broker.names.queue,
                    extra={"event": "worker_started", "concurrency": self.config.concurrency})

    async def stop(self, grace_s: float) -> None:
        """Stop intake and drain: greetings still waiting for their instant are
        handed back at once; sends finish within ``grace_s``; a provider call
        already under way is never cut off (its own timeout bounds it), since
        cutting it would re-send what the provider may have accepted."""
        self._stopping = True
        await self.broker.cancel_consumers()
        for timer in self._timers:
            timer.cancel()  # the tick re-publishes these retries
        self._timers.clear()
        for task in self._waiting:
            task.cancel()
        if not self._tasks:
            return
        logger.info("draining %d in-flight sends", len(self._tasks),
                    extra={"event": "worker_draining", "in_flight": len(self._tasks)})
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace_s)
        for task in pending - self._calling:
            task.cancel()
        if pending & self._calling:
            # Past the grace, stop retrying records PostgreSQL does not take;
            # their rows' leases bring them back (the duplicate window of a crash).
            self.deliveries.abandon()
        if pending:
            await asyncio.wait(pending)

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def _on_message(self, message: DeliveredMessage) -> None:
        # Run outside the channel's own tasks, which die with the channel.
        self._spawn(self.handle(message))

    def _spawn(self, work: Coroutine[object, object, None]) -> None:
        task = asyncio.create_task(work)
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
        acked: asyncio.Future[None] | None = None

        def called() -> None:
            # The provider answered: the row in PostgreSQL holds the rest, so
            # the delivery's prefetch slot goes to the next id while the answer
            # is recorded (a redelivery of a started row is dropped anyway).
            nonlocal acked
            acked = asyncio.ensure_future(broker_mod.ack(message))

        try:
            await self.deliver(message_id, called)
        except asyncio.CancelledError:
            raise  # not acked: redelivered, and the row says what is left to do
        except Exception:
            # The row stays where it was; its lease brings it back.  Not acking
            # now would only redeliver into the same failure.
            logger.exception("delivery of %s failed", message_id,
                             extra={"event": "delivery_error", "message_id": str(message_id)})
        await asyncio.shield(acked if acked is not None else broker_mod.ack(message))

    async def deliver(self, message_id: uuid.UUID,
                      called: Callable[[], None] = lambda: None) -> None:
        """Everything between receiving an id and acking it; ``called`` is
        told when the provider has answered (the ack may go then)."""
        delivery = await self.deliveries.start(message_id)
        if delivery is None:
            metrics.REDELIVERIES_DROPPED.inc()
            return
        task = asyncio.current_task()
        assert task is not None
        try:
            await self._attempt(delivery, task, called)
        except asyncio.CancelledError:
            # Drained before any call: hand the row back without counting the
            # attempt (a no-op once the row has moved on).
            if task not in self._calling:
                await asyncio.shield(self.deliveries.release(
                    delivery, max(delivery.due_at, self.clock.now())))
            raise
        finally:
            self._calling.discard(task)

    async def _attempt(self, d: Delivery, task: asyncio.Task[None],
                       called: Callable[[], None]) -> None:
        """Wait until due, then call the provider, unless the greeting is too
        late, the breaker is open, the worker is draining or the row is no
        longer ours."""
        if self._stopping:
            await self._call(d, task, called)
            return
        await self._wait_until_due(d, task)
        self._waiting.add(task)  # a drain cancels the wait for a slot too
        try:
            await self._unrecorded.acquire()
        finally:
            self._waiting.discard(task)
        try:
            await self._call(d, task, called)
        finally:
            self._unrecorded.release()

    async def _call(self, d: Delivery, task: asyncio.Task[None],
                    called: Callable[[], None]) -> None:
        now = self.clock.now()
        if self._stopping:
            # Draining: start no new provider call; the tick hands it to another worker.
            await asyncio.shield(self.deliveries.release(d, max(d.due_at, now)))
            return
        if now - d.late_since > self.config.max_lateness:
            await asyncio.shield(self.deliveries.record_end(d, Status.EXPIRED,
                                                            "later than MAX_LATENESS"))
            metrics.MESSAGES.labels(d.occasion, "expired").inc()
            return
        if not self.breaker.allow(self._loop.time()):
            await self._defer(d, lambda due: self.deliveries.release(d, due))
            return
        self._calling.add(task)  # from the claim until the answer is recorded
        recipient = await self.deliveries.claim_call(d)
        if not isinstance(recipient, deliveries_mod.Recipient):
            # Recovered, removed by an edit, or its user deleted: no call.
            outcome = "cancelled" if recipient is deliveries_mod.USER_DELETED else "dropped"
            metrics.MESSAGES.labels(d.occasion, outcome).inc()
            return
        text = occasions.OCCASIONS[d.occasion].message(recipient.first_name,
                                                       recipient.last_name)
        result = await self.emailer.send(recipient.email, text, d.id)
        called()
        if result.unreached:
            # No connection to the provider: it cannot have received the
            # greeting, so the attempt does not count.  The breaker opens, and
            # the greeting waits for its probe with the others (deferred):
            # however long the provider is away, it is sent when it is back,
            # up to MAX_LATENESS late.
            self.breaker.trip(self._loop.time())
            await self._defer(
                d, lambda due: self.deliveries.record_unreached(d, result.error, due))
            return
        self.breaker.record(self._loop.time(), result.outcome is not retry.Outcome.RETRY)
        await asyncio.shield(self._record(d, result))

    async def _defer(self, d: Delivery,
                     hand_back: Callable[[dt.datetime], Awaitable[bool]]) -> None:
        """Hand the row back (``hand_back``, without spending an attempt), due
        when the breaker may probe again."""
        now = self.clock.now()
        due = now + dt.timedelta(seconds=self.breaker.retry_in_s(self._loop.time()))
        await asyncio.shield(hand_back(due))
        metrics.MESSAGES.labels(d.occasion, "deferred").inc()
        self._retry_later(d.id, due, now)

    async def _wait_until_due(self, d: Delivery, task: asyncio.Task[None]) -> None:
        """Sleep until the row is due (published ahead, so the send happens on
        the second).  Cancelled by a drain."""
        self._waiting.add(task)
        try:
            now = self.clock.now()
            if (wait_s := (d.due_at - now).total_seconds()) > 0:
                await asyncio.sleep(wait_s)
                now = self.clock.now()
            # The event loop's timer and the clock may disagree: nothing goes
            # out while the clock reads before the greeting's instant.
            while now < d.send_at:
                await asyncio.sleep(max((d.send_at - now).total_seconds(), 0.001))
                now = self.clock.now()
        finally:
            self._waiting.discard(task)

    async def _record(self, d: Delivery, result: emailer_mod.Result) -> None:
        if result.outcome is retry.Outcome.SENT:
            await self.deliveries.record_sent(d)
            metrics.MESSAGES.labels(d.occasion, "sent").inc()
            lateness_s = (self.clock.now() - d.send_at).total_seconds()
            metrics.LATENESS_SECONDS.observe(max(lateness_s, 0))
            return
        if result.timed_out:
            metrics.POSSIBLE_DUPLICATES.labels("timeout").inc()
        if result.outcome is retry.Outcome.RETRY and retry.should_retry(
            d.attempt, self.config.max_retries
        ):
            now = self.clock.now()
            due = now + dt.timedelta(
                milliseconds=retry.backoff_ms(d.attempt, self.config.backoff_delay_ms))
            if await self.deliveries.record_retry(d, result.error, due):
                metrics.MESSAGES.labels(d.occasion, "retried").inc()
                self._retry_later(d.id, due, now)
            return
        await self.deliveries.record_end(d, Status.FAILED, result.error)
        metrics.MESSAGES.labels(d.occasion, "failed").inc()
        logger.warning("greeting %s failed: %s", d.id, result.error,
                       extra={"event": "message_failed", "message_id": str(d.id)})

    def _retry_later(self, message_id: uuid.UUID, due: dt.datetime, now: dt.datetime) -> None:
        delay = due - now
        if delay > LOCAL_RETRY_MAX or self._stopping:
            return  # the tick re-publishes it
        # Publish a little ahead, like the tick, so the retry starts on time.
        delay_s = max(delay.total_seconds() - 1.0, 0.0) * (0.9 + 0.1 * random.random())  # noqa: S311

        def fire() -> None:
            self._timers.discard(handle)
            self._spawn(self._republish(message_id))

        handle = self._loop.call_later(delay_s, fire)
        self._timers.add(handle)

    async def _republish(self, message_id: uuid.UUID) -> None:
        # On any failure the row is retrying, or handed back to retrying:
        # the tick or recovery takes it from there.
        with contextlib.suppress(Exception):
            await self.deliveries.republish(message_id, self.broker, self.config.lease_margin)
