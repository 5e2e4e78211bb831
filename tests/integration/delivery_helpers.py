"""A delivery pipeline in one test: the real scheduler, broker and worker against
the test's PostgreSQL database and RabbitMQ queue, and an in-process e-mail
provider that records every request it gets (also the ones it fails)."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime as dt
import random
import time
import uuid
import zoneinfo
from collections.abc import Awaitable, Callable
from typing import Any

import aiormq
import asyncpg
import orjson
from aiohttp import web
from aiormq.abc import DeliveredMessage

from birthdayd import broker as broker_mod
from birthdayd import clock as clock_mod
from birthdayd import config, fake_email, greetings, retry, store
from birthdayd import deliveries as deliveries_mod
from birthdayd import emailer as emailer_mod
from birthdayd import scheduler as scheduler_mod
from birthdayd import worker as worker_mod
from tests.conftest import RABBITMQ_URL

UTC = dt.UTC
SEND_HOUR = 9


def local(zone: str, y: int, m: int, d: int, h: int = SEND_HOUR, mi: int = 0,
          s: int = 0) -> dt.datetime:
    """A wall time in ``zone`` as a UTC instant (first occurrence)."""
    wall = dt.datetime(y, m, d, h, mi, s, tzinfo=zoneinfo.ZoneInfo(zone))
    return wall.astimezone(UTC)


# The fake provider answers from the test's own event loop, which a loaded
# CI machine can stall for longer than a tight timeout: a call given up on
# before the provider read it would be retried unseen (one more attempt
# than the test counts).  The test of hangs sets its own short timeout.
FAST = config.WorkerConfig(concurrency=50, max_retries=5, backoff_delay_ms=5,
                               email_timeout_ms=5000, send_hour=9,
                               max_lateness=dt.timedelta(days=7),
                               lease_margin=dt.timedelta(seconds=60))


def provider_ignoring_keys(**kw: Any) -> fake_email.FakeProvider:
    """A fake provider that does not deduplicate by Idempotency-Key, so any second
    send of a greeting shows up as a second delivery in its counts."""
    return fake_email.FakeProvider(honour_keys=False, rng=random.Random(0), **kw)


def never_opening_breaker() -> retry.Breaker:
    """For tests that are not about the breaker: failures never open it."""
    return retry.Breaker(threshold_pct=100, reset_s=30.0, min_calls=1_000_000)


@dataclasses.dataclass
class Call:
    """One request that reached the provider."""

    key: str
    body: Any
    clock_at: dt.datetime
    """What the pipeline's clock read when the request arrived."""
    loop_at: float


class Recorder:
    """An aiohttp middleware that records every POST, whatever it is answered."""

    def __init__(self, clock: clock_mod.Clock) -> None:
        self.clock = clock
        self.calls: list[Call] = []

    @web.middleware
    async def middleware(self, request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                         ) -> web.StreamResponse:
        if request.method == "POST":
            raw = await request.read()  # cached: the handler reads it again
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                body = raw
            self.calls.append(Call(request.headers.get("Idempotency-Key", ""), body,
                                   self.clock.now(), asyncio.get_running_loop().time()))
        return await handler(request)

    def by_key(self) -> collections.Counter[str]:
        return collections.Counter(c.key for c in self.calls)

    def for_key(self, key: uuid.UUID) -> list[Call]:
        return [c for c in self.calls if c.key == str(key)]


async def eventually(check: Callable[[], Awaitable[Any]] | Callable[[], Any],
                     timeout: float = 5.0, interval: float = 0.02) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last: {value!r})")
        await asyncio.sleep(interval)


class Pipeline:
    """Scheduler + broker + worker + emailer, started and stopped by the test fixture."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        clock: clock_mod.Clock,
        queue: str,
        email_url: str,
        recorder: Recorder,
        worker_config: config.WorkerConfig,
        breaker: retry.Breaker,
        scheduler_config: config.SchedulerConfig,
    ) -> None:
        self.pool = pool
        self.clock = clock
        self.queue = queue
        self.email_url = email_url
        self.recorder = recorder
        self.worker_config = worker_config
        self.breaker = breaker
        self.broker = broker_mod.Broker(RABBITMQ_URL, queue)
        self.emailer = emailer_mod.Emailer(email_url, worker_config.email_timeout_ms,
                                           worker_config.concurrency)
        self.scheduler = scheduler_mod.Scheduler(pool, self.broker, clock, scheduler_config)
        self.worker: worker_mod.Worker | None = None
        self._inspect: aiormq.abc.AbstractConnection | None = None
        self._inspect_channel: aiormq.abc.AbstractChannel | None = None
        self._brokers: list[broker_mod.Broker] = []
        self._workers: list[worker_mod.Worker] = []
        self.deliveries: list[DeliveredMessage] = []
        """Every message RabbitMQ handed to this pipeline's worker."""

    def _worker(self, broker: broker_mod.Broker) -> worker_mod.Worker:
        deliveries = deliveries_mod.Deliveries(self.pool, self.clock,
                                               send_hour=self.worker_config.send_hour,
                                               call_lease=self.worker_config.call_lease)
        return worker_mod.Worker(deliveries, broker, self.emailer, self.breaker, self.clock,
                                 self.worker_config)

    def _spy_on(self, broker: broker_mod.Broker) -> None:
        """Record each delivery (public API only: wrap the handler the worker registers)."""
        consume = broker.consume

        async def spying_consume(handler: broker_mod.Handler, prefetch: int) -> None:
            async def spy(message: DeliveredMessage) -> None:
                self.deliveries.append(message)
                await handler(message)

            await consume(spy, prefetch)

        broker.consume = spying_consume  # type: ignore[method-assign]

    async def start(self, *, worker: bool = True) -> None:
        self._spy_on(self.broker)
        await self.broker.start()
        await self.emailer.start()
        self._inspect = await aiormq.connect(RABBITMQ_URL)
        self._inspect_channel = await self._inspect.channel()
        self.worker = self._worker(self.broker)
        if worker:
            await self.worker.start()

    async def start_worker(self) -> None:
        assert self.worker is not None
        await self.worker.start()

    async def disconnect(self) -> None:
        """Stop every worker and close every broker connection (idempotent)."""
        if self.worker is not None:
            await self.worker.stop(2.0)
        for extra_worker in self._workers:
            await extra_worker.stop(2.0)
        await self.broker.stop()
        for extra in self._brokers:
            await extra.stop()

    async def stop(self) -> None:
        await self.disconnect()
        await self.emailer.stop()
        if self._inspect is not None:
            await self._inspect.close()

    async def another_broker(self) -> broker_mod.Broker:
        """A second broker connection (another replica), stopped with the pipeline."""
        extra = broker_mod.Broker(RABBITMQ_URL, self.queue)
        await extra.start()
        self._brokers.append(extra)
        return extra

    async def another_worker(self) -> worker_mod.Worker:
        """A second worker process on its own connection, consuming the same queue."""
        broker = await self.another_broker()
        self._spy_on(broker)
        worker = self._worker(broker)
        self._workers.append(worker)
        await worker.start()
        return worker

    # -- data -------------------------------------------------------------------

    async def add_user(self, first: str = "Ada", last: str = "Lovelace",
                       email: str = "ada@example.com", birthday: dt.date = dt.date(1990, 1, 15),
                       location: str = "America/New_York",
                       anniversary: dt.date | None = None,
                       now: dt.datetime | None = None) -> uuid.UUID:
        fields = {"first_name": first, "last_name": last, "email": email,
                  "birthday": birthday, "anniversary": anniversary, "location": location}
        return await greetings.create_user(self.pool, fields, now or self.clock.now(),
                                           SEND_HOUR)

    async def rows(self, user_id: uuid.UUID, occasion: str = "birthday") -> list[asyncpg.Record]:
        return await self.pool.fetch(
            "SELECT * FROM messages WHERE user_id = $1 AND occasion = $2 ORDER BY occasion_date",
            user_id, occasion)

    async def row(self, message_id: uuid.UUID) -> asyncpg.Record:
        row = await store.get_message(self.pool, message_id)
        assert row is not None
        return row

    async def only_row(self, user_id: uuid.UUID, occasion: str = "birthday") -> asyncpg.Record:
        rows = await self.rows(user_id, occasion)
        assert len(rows) == 1, rows
        return rows[0]

    async def status(self, message_id: uuid.UUID) -> str:
        return str((await self.row(message_id))["status"])

    async def wait_status(self, message_id: uuid.UUID, *statuses: str,
                          timeout: float = 5.0) -> asyncpg.Record:
        async def check() -> asyncpg.Record | None:
            row = await self.row(message_id)
            return row if row["status"] in statuses else None

        result: asyncpg.Record = await eventually(check, timeout)
        return result

    # -- the queue ----------------------------------------------------------------

    async def status_count(self, status: str, expected: int) -> bool:
        """Whether exactly ``expected`` rows are in ``status`` (for eventually())."""
        found = await self.pool.fetchval(
            "SELECT count(*) FROM messages WHERE status = $1", status)
        return bool(found == expected)

    async def ready_count(self, queue: str | None = None) -> int:
        assert self._inspect_channel is not None
        ok = await self._inspect_channel.queue_declare(queue or self.queue, passive=True)
        return int(ok.message_count or 0)

    async def delete_queue(self) -> None:
        """Delete the main queue, ids and all, as an operator could (consumers
        are cancelled by the broker)."""
        assert self._inspect_channel is not None
        await self._inspect_channel.queue_delete(self.queue)

    async def purge(self) -> None:
        assert self._inspect_channel is not None
        await self._inspect_channel.queue_purge(self.queue)

    async def settle(self, quiet: float = 0.15, timeout: float = 5.0) -> None:
        """Wait until the worker holds nothing and the queue is empty, for ``quiet`` s."""
        assert self.worker is not None
        worker = self.worker
        calm_since: float | None = None
        loop = asyncio.get_running_loop()

        async def calm() -> bool:
            nonlocal calm_since
            idle = worker.in_flight == 0 and await self.ready_count() == 0
            if not idle:
                calm_since = None
                return False
            if calm_since is None:
                calm_since = loop.time()
            return loop.time() - calm_since >= quiet

        await eventually(calm, timeout)


MakePipeline = Callable[..., Awaitable[Pipeline]]
