"""The guarantees when the world moves under the pipeline: edits in the last
minute, rows taken back while a worker waits, PostgreSQL away while the
provider answers, the broker cancelling a consumer or closing a channel, a
scheduler stopped mid-tick, a drain racing a start.  Real PostgreSQL and
RabbitMQ, a manual clock, an in-process provider that ignores Idempotency-Key."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiormq
import asyncpg
import pytest
from prometheus_client import generate_latest

from birthdayd import broker as broker_mod
from birthdayd import clock as clock_mod
from birthdayd import config, dispatch, greetings, metrics, runtime, store
from birthdayd import deliveries as deliveries_mod
from birthdayd import scheduler as scheduler_mod
from birthdayd.config import Settings
from birthdayd.states import Status
from tests.conftest import RABBITMQ_URL
from tests.integration.delivery_helpers import (
    FAST,
    UTC,
    MakePipeline,
    eventually,
)
from tests.integration.delivery_helpers import provider_ignoring_keys as _provider
from tests.integration.test_delivery import ADA_SEND_AT, _ada_due

EARLY = ADA_SEND_AT - dt.timedelta(seconds=30)  # 08:59:30 in New York
AHEAD = dt.timedelta(seconds=62)


async def _held_by_worker(p: Any, manual_clock: clock_mod.ManualClock,
                          wait: dt.timedelta = dt.timedelta(seconds=0.5)) -> uuid.UUID:
    """Ada's greeting, published ahead and taken by the worker, which now waits
    ``wait`` of real time for 09:00 (the manual clock reads 08:59:30)."""
    message_id = await _ada_due(p, manual_clock)
    manual_clock.set(EARLY)
    # Due ``wait`` from now by the loop's timer: the worker sleeps that long.
    await p.pool.execute("UPDATE messages SET due_at = $2 WHERE id = $1", message_id,
                         EARLY + wait)
    assert await p.scheduler.tick(EARLY, ahead=AHEAD) == 1
    await p.wait_status(message_id, "sending")
    return message_id


# -- an edit or delete committed before the call wins ----------------------------------


async def test_an_email_and_name_edit_at_08_59_30_is_what_the_greeting_uses(
    make_pipeline: MakePipeline, manual_clock: clock_mod.ManualClock
) -> None:
    p = await make_pipeline(provider=_provider())
    message_id = await _held_by_worker(p, manual_clock)
    user_id = (await p.row(message_id))["user_id"]
    assert await greetings.update_user(
        p.pool, user_id, {"email": "grace@example.com", "firstName": "Grace",
                          "lastName": "Hopper"}, manual_clock, 9)
    manual_clock.set(ADA_SEND_AT)
    await p.wait_status(message_id, "sent")
    await p.settle()
    assert [c.body for c in p.recorder.calls] == [
        {"email": "grace@example.com", "message": "Hey, Grace Hopper it's your birthday"}]


async def test_a_birthday_moved_off_the_day_at_08_59_30_cancels_the_held_greeting(
    make_pipeline: MakePipeline, manual_clock: clock_mod.ManualClock
) -> None:
    """The greeting was published ahead and is waiting in the worker: moving the
    birthday away before 09:00 removes it (nothing is owed today) and plans the
    new date; the worker finds no row and makes no call."""
    p = await make_pipeline(provider=_provider())
    message_id = await _held_by_worker(p, manual_clock)
    user_id = (await p.row(message_id))["user_id"]
    dropped = metrics.MESSAGES.labels("birthday", "dropped")
    before = dropped._value.get()
    assert await greetings.update_user(p.pool, user_id, {"birthday": "1990-03-01"},
                                       manual_clock, 9)
    manual_clock.set(ADA_SEND_AT)
    await eventually(lambda: dropped._value.get() == before + 1)
    await p.settle()
    assert p.recorder.calls == []
    rows = await p.rows(user_id)
    assert [(r["occasion_date"], r["status"]) for r in rows] == [
        (dt.date(2027, 3, 1), "scheduled")]


async def test_a_row_taken_back_while_its_worker_waits_is_not_sent_by_that_worker(
    make_pipeline: MakePipeline, manual_clock: clock_mod.ManualClock
) -> None:
    """Recovery (or a second delivery) moved the row on while the worker waited
    for 09:00: the worker's claim finds it no longer its own, so it makes no call;
    the row is sent once, later, by whoever holds it then."""
    p = await make_pipeline(provider=_provider())
    message_id = await _held_by_worker(p, manual_clock, wait=dt.timedelta(seconds=1.0))
    lease = (await p.row(message_id))["lease_until"]
    later = lease + dt.timedelta(seconds=1)
    manual_clock.set(later)
    assert await p.scheduler.recover(later) == 1  # never called: taken back at once
    assert await p.status(message_id) == "retrying"
    await asyncio.sleep(1.3)  # the held delivery wakes up and must not call
    assert p.recorder.calls == []
    assert await p.scheduler.tick(later) == 1
    await p.wait_status(message_id, "sent")
    await p.settle()
    assert len(p.recorder.calls) == 1


# -- an accepted greeting is recorded however long PostgreSQL is away ------------------


class FlakyPool:
    """The test's pool, unreachable (every acquire and query fails as when
    PostgreSQL is down) until ``heal()``."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self.down = False
        self.failures = 0

    def _check(self) -> None:
        if self.down:
            self.failures += 1
            raise ConnectionRefusedError("PostgreSQL is down (test)")

    def acquire(self, **kw: Any) -> Any:
        self._check()
        return self._pool.acquire(**kw)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._pool, name)
        if name in ("execute", "fetch", "fetchrow", "fetchval"):
            async def call(*args: Any, **kw: Any) -> Any:
                self._check()
                return await attr(*args, **kw)
            return call
        return attr


async def test_a_2xx_is_recorded_after_postgresql_is_away_longer_than_every_lease(
    make_pipeline: MakePipeline, manual_clock: clock_mod.ManualClock
) -> None:
    """The provider accepts, then PostgreSQL is away for longer than the lease
    margin: the worker keeps retrying the record, recovery's first sweep past
    the lease only grants grace, and the greeting is recorded once, with no
    possible duplicate counted."""
    config = dataclasses.replace(FAST, email_timeout_ms=3000,
                                 lease_margin=dt.timedelta(seconds=1))
    p = await make_pipeline(provider=_provider(latency_ms=300), config=config)
    flaky = FlakyPool(p.pool)
    assert p.worker is not None
    p.worker.deliveries.pool = flaky  # type: ignore[assignment]
    message_id = await _ada_due(p, manual_clock)
    manual_clock.set(ADA_SEND_AT)
    duplicates = metrics.POSSIBLE_DUPLICATES.labels("lease_expired")
    counted = duplicates._value.get()
    assert await p.scheduler.tick(ADA_SEND_AT) == 1
    await eventually(lambda: len(p.recorder.calls) == 1)  # the provider is answering
    flaky.down = True
    await eventually(lambda: flaky.failures >= 3, timeout=5)
    lease = (await p.row(message_id))["lease_until"]
    # Longer than the whole lease by the clock: recovery runs meanwhile.
    past = lease + dt.timedelta(seconds=5)
    manual_clock.set(past)
    assert await p.scheduler.recover(past) == 0  # grace for a called row
    assert await p.status(message_id) == "sending"
    await asyncio.sleep(2.0)  # longer than the old give-up (LEASE_MARGIN, 1 s here)
    flaky.down = False
    await p.wait_status(message_id, "sent", timeout=5)
    assert await p.scheduler.recover(past + p.scheduler.cfg.call_lease * 2) == 0
    assert await p.scheduler.tick(past) == 0
    await p.settle()
    assert len(p.recorder.calls) == 1
    assert duplicates._value.get() == counted


async def test_a_called_row_whose_worker_is_gone_is_taken_back_after_one_grace_and_counted(
    make_pipeline: MakePipeline, manual_clock: clock_mod.ManualClock
) -> None:
    """The crash window: a worker claimed the call and died. The first sweep
    past the lease grants one more lease; the next takes it back and counts a
    possible duplicate (the provider may have accepted)."""
    p = await make_pipeline(worker=False)
    message_id = await _ada_due(p, manual_clock)
    manual_clock.set(ADA_SEND_AT)
    assert await p.scheduler.tick(ADA_SEND_AT) == 1
    lease = dt.timedelta(seconds=10)
    [row] = await store.start_sending(p.pool, [message_id], lease, ADA_SEND_AT)
    assert await store.claim_calls(p.pool, [(message_id, row["attempts"])], ADA_SEND_AT)
    duplicates = metrics.POSSIBLE_DUPLICATES.labels("lease_expired")
    counted = duplicates._value.get()
    first = ADA_SEND_AT + lease + dt.timedelta(seconds=1)
    assert await p.scheduler.recover(first) == 0
    assert duplicates._value.get() == counted
    granted = await p.row(message_id)
    assert granted["status"] == "sending"
    assert granted["lease_until"] == first + p.scheduler.cfg.call_lease
    second = granted["lease_until"] + dt.timedelta(seconds=1)
    assert await p.scheduler.recover(second) == 1
    assert await p.status(message_id) == "retrying"
    assert duplicates._value.get() == counted + 1


# -- the broker cancels the consumer, or closes its channel ------------------------------


async def test_a_deleted_queue_is_redeclared_consumed_again_and_its_ids_republished(
    make_pipeline: MakePipeline, manual_clock: clock_mod.ManualClock
) -> None:
    """Deleting the queue cancels the consumer (basic.cancel) and loses the ids
    still in it. The broker notices, re-declares, consumes again, and hands the
    rows that were queued back to the tick; each greeting goes out once."""
    p = await make_pipeline(worker=False, config=dataclasses.replace(FAST, concurrency=1))
    requeued: list[int] = []

    async def requeue() -> None:
        requeued.append(await store.requeue_queued(p.pool, manual_clock.now()))

    p.broker.on_queue_created = requeue
    ada = await _ada_due(p, manual_clock)
    bob = (await p.only_row(await p.add_user(first="Bob", email="bob@example.com")))["id"]
    manual_clock.set(ADA_SEND_AT)
    users = [r["user_id"] for r in await p.pool.fetch("SELECT user_id FROM messages")]
    async with p.pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        # The worker (prefetch 1) holds one greeting, blocked before its call;
        # the other id waits in the queue.
        await conn.execute("SELECT 1 FROM users WHERE id = ANY($1) FOR UPDATE", users)
        assert await p.scheduler.tick(ADA_SEND_AT) == 2
        await p.start_worker()
        await eventually(lambda: len(p.deliveries) == 1)
        assert await p.ready_count() == 1
        assert p.broker.consuming
        await p.delete_queue()
        await eventually(lambda: requeued == [1], timeout=10)
        await eventually(lambda: p.broker.consuming, timeout=10)
        await tx.commit()
    assert await p.scheduler.tick(ADA_SEND_AT) == 1
    await p.wait_status(ada, "sent")
    await p.wait_status(bob, "sent")
    await p.settle()
    assert sorted(p.recorder.by_key().values()) == [1, 1]


async def test_a_publish_into_a_deleted_queue_makes_the_scheduler_redeclare_it(
    make_pipeline: MakePipeline, manual_clock: clock_mod.ManualClock
) -> None:
    """A scheduler-only process has no consumer to be cancelled: its publish
    comes back unroutable, it hands the rows back and re-declares the queue."""
    p = await make_pipeline(worker=False)
    message_id = await _ada_due(p, manual_clock)
    manual_clock.set(ADA_SEND_AT)
    await p.delete_queue()
    with pytest.raises(Exception, match="publish"):
        await p.scheduler.tick(ADA_SEND_AT)
    assert await p.status(message_id) == "retrying"
    await eventually(lambda: p.broker.can_publish, timeout=10)
    assert await p.scheduler.tick(ADA_SEND_AT + dt.timedelta(seconds=1)) == 1
    assert await p.ready_count() == 1


async def test_a_consumer_channel_closed_under_the_worker_is_reopened(
    make_pipeline: MakePipeline, manual_clock: clock_mod.ManualClock
) -> None:
    p = await make_pipeline()
    assert p.broker.consuming
    [(channel, _)] = p.broker._subscriptions
    await channel.close()
    assert not p.broker.consuming  # what /ready reports meanwhile
    await eventually(lambda: p.broker.consuming, timeout=10)
    message_id = await _ada_due(p, manual_clock)
    manual_clock.set(ADA_SEND_AT)
    assert await p.scheduler.tick(ADA_SEND_AT) == 1
    await p.wait_status(message_id, "sent")


# -- a scheduler stopped mid-tick, a drain racing a start --------------------------------


class StallingBroker:
    """Publishes never get confirmed (a broker under a memory alarm)."""

    names = broker_mod.Names("stalling")

    def __init__(self) -> None:
        self.publishing = asyncio.Event()

    async def publish(self, ids: list[uuid.UUID]) -> None:
        self.publishing.set()
        await asyncio.Event().wait()

    async def queue_depth(self, queue: str | None = None, *, redeclare: bool = True) -> int:
        return 0


async def test_a_publish_cancelled_mid_tick_hands_the_claimed_rows_straight_back(
    make_pipeline: MakePipeline, manual_clock: clock_mod.ManualClock
) -> None:
    """SIGTERM during a tick: APScheduler cancels the job while it waits for
    confirms; the rows it claimed are due again at once, not in a lease."""
    p = await make_pipeline(worker=False)
    message_id = await _ada_due(p, manual_clock)
    manual_clock.set(ADA_SEND_AT)
    stalling = StallingBroker()
    ids = await store.claim_due(p.pool, ADA_SEND_AT, 10, ADA_SEND_AT + AHEAD, ADA_SEND_AT)
    assert ids == [message_id]
    publishing = asyncio.create_task(
        dispatch.publish_claimed(p.pool, stalling, ids, ADA_SEND_AT))  # type: ignore[arg-type]
    await stalling.publishing.wait()
    publishing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await publishing
    row = await p.row(message_id)
    assert (row["status"], row["due_at"]) == ("retrying", ADA_SEND_AT)


async def test_stopping_the_scheduler_mid_tick_leaves_no_row_queued(
    pool: asyncpg.Pool, manual_clock: clock_mod.ManualClock
) -> None:
    """The scheduler's own stop: the running tick (its publish stalled) gets
    the grace, then is cancelled, and hands its rows back before stop returns."""
    await greetings.create_user(pool, {"first_name": "A", "last_name": "B",
                                       "email": "a@example.com",
                                       "birthday": dt.date(1990, 1, 15), "anniversary": None,
                                       "location": "UTC"},
                                dt.datetime(2027, 1, 10, tzinfo=UTC), 9)
    now = dt.datetime(2027, 1, 15, 9, 0, 1, tzinfo=UTC)
    manual_clock.set(now)
    stalling = StallingBroker()
    sched = scheduler_mod.Scheduler(pool, stalling, manual_clock,  # type: ignore[arg-type]
                                    config.SchedulerConfig(
                                        cron_minute="* * * * * *", stop_grace_s=0.3))
    await sched.start()
    await asyncio.wait_for(stalling.publishing.wait(), 5)
    started = time.monotonic()
    await sched.stop()
    assert time.monotonic() - started < 2
    statuses = [r["status"] for r in await pool.fetch("SELECT status FROM messages")]
    assert statuses == ["retrying"]


async def test_a_delivery_that_wins_sending_after_the_drain_began_is_handed_back_at_once(
    make_pipeline: MakePipeline, manual_clock: clock_mod.ManualClock
) -> None:
    """The start batch commits after stop() began: the delivery must not wait
    for its instant (30 s away) inside the drain, but hand the row back."""
    p = await make_pipeline(worker=False)
    message_id = await _ada_due(p, manual_clock)
    manual_clock.set(EARLY)
    assert await p.scheduler.tick(EARLY, ahead=AHEAD) == 1
    async with p.pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        await conn.execute("SELECT 1 FROM messages WHERE id = $1 FOR UPDATE", message_id)
        await p.start_worker()
        await eventually(lambda: len(p.deliveries) == 1)  # its start waits on our lock
        assert p.worker is not None
        stopping = asyncio.create_task(p.worker.stop(grace_s=10))
        await asyncio.sleep(0.1)
        await tx.rollback()
    started = time.monotonic()
    await asyncio.wait_for(stopping, 5)
    assert time.monotonic() - started < 2
    row = await p.row(message_id)
    assert (row["status"], row["attempts"]) == ("retrying", 0)
    assert p.recorder.calls == []


async def test_no_retry_timer_is_armed_after_the_drain_cleared_them(
    make_pipeline: MakePipeline, manual_clock: clock_mod.ManualClock
) -> None:
    """A 5xx answered during the drain records a retry; the drain already
    cleared the timers and must not get a new one (the tick re-publishes)."""
    p = await make_pipeline(provider=_provider(error_rate=1.0, latency_ms=300),
                            config=dataclasses.replace(FAST, email_timeout_ms=3000))
    message_id = await _ada_due(p, manual_clock)
    manual_clock.set(ADA_SEND_AT)
    assert await p.scheduler.tick(ADA_SEND_AT) == 1
    await eventually(lambda: len(p.recorder.calls) == 1)
    assert p.worker is not None
    await p.worker.stop(grace_s=5)
    assert await p.status(message_id) == "retrying"
    assert p.worker._timers == set()


# -- hung statements --------------------------------------------------------------------


async def test_a_hung_statement_times_out_instead_of_wedging_the_process(
    database_url: str,
) -> None:
    settings = Settings(database_url=database_url, database_timeout=dt.timedelta(seconds=1))
    pool = await runtime.open_pool(settings, asyncio.Event())
    assert pool is not None
    try:
        async with pool.acquire() as holder, holder.transaction():
            await holder.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                await pool.fetchval("SELECT count(*) FROM users")
            assert time.monotonic() - started < 3
    finally:
        await pool.close()


# -- the delivery manager on its own, against PostgreSQL ---------------------------------


NINE_UTC = dt.datetime(2027, 1, 15, 9, 0, tzinfo=UTC)


@pytest.fixture
async def ada(pool: asyncpg.Pool) -> AsyncIterator[uuid.UUID]:
    """Ada in UTC, her 2027 birthday greeting claimed by a tick (queued)."""
    user_id = await greetings.create_user(
        pool, {"first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com",
               "birthday": dt.date(1990, 1, 15), "anniversary": None, "location": "UTC"},
        dt.datetime(2027, 1, 10, tzinfo=UTC), 9)
    message_id = await pool.fetchval("SELECT id FROM messages WHERE user_id = $1", user_id)
    assert await store.claim_due(pool, NINE_UTC, 10, NINE_UTC + AHEAD, NINE_UTC) == [message_id]
    yield message_id


@pytest.fixture
def manager(pool: asyncpg.Pool, manual_clock: clock_mod.ManualClock) -> deliveries_mod.Deliveries:
    manual_clock.set(NINE_UTC)
    return deliveries_mod.Deliveries(pool, manual_clock, send_hour=9,
                                     call_lease=dt.timedelta(seconds=70))


async def _plan(pool: asyncpg.Pool) -> list[tuple[dt.date, str, int]]:
    rows = await pool.fetch(
        "SELECT occasion_date, status, attempts FROM messages ORDER BY occasion_date")
    return [(r["occasion_date"], r["status"], r["attempts"]) for r in rows]


async def test_the_delivery_manager_walks_a_greeting_from_queued_to_sent(
    pool: asyncpg.Pool, manager: deliveries_mod.Deliveries, ada: uuid.UUID
) -> None:
    delivery = await manager.start(ada)
    assert delivery is not None and delivery.attempt == 1
    assert await manager.start(ada) is None  # a redelivery
    recipient = await manager.claim_call(delivery)
    assert recipient == deliveries_mod.Recipient("Ada", "Lovelace", "ada@example.com")
    assert await manager.record_sent(delivery)
    assert await _plan(pool) == [(dt.date(2027, 1, 15), "sent", 1),
                                 (dt.date(2028, 1, 15), "scheduled", 0)]
    assert await manager.claim_call(delivery) is None  # no longer sending


async def test_the_delivery_manager_cancels_instead_of_calling_for_a_deleted_user(
    pool: asyncpg.Pool, manager: deliveries_mod.Deliveries, ada: uuid.UUID
) -> None:
    delivery = await manager.start(ada)
    assert delivery is not None
    user_id = await pool.fetchval("SELECT user_id FROM messages WHERE id = $1", ada)
    assert await greetings.delete_user(pool, user_id, NINE_UTC)
    assert await manager.claim_call(delivery) is deliveries_mod.USER_DELETED
    assert await _plan(pool) == [(dt.date(2027, 1, 15), "cancelled", 1)]


async def test_concurrent_claims_go_to_postgresql_as_one_statement_each_answered_alone(
    pool: asyncpg.Pool, manager: deliveries_mod.Deliveries, ada: uuid.UUID,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Claims of calls made at once are one batch statement, and each delivery
    still gets its own answer: whom to greet, its user deleted, or not ours."""
    created = dt.datetime(2027, 1, 10, tzinfo=UTC)
    for name in ("Bob", "Cy"):
        await greetings.create_user(
            pool, {"first_name": name, "last_name": "Doe", "email": f"{name}@example.com",
                   "birthday": dt.date(1990, 1, 15), "anniversary": None, "location": "UTC"},
            created, 9)
    ids = await store.claim_due(pool, NINE_UTC, 10, NINE_UTC + AHEAD, NINE_UTC)
    assert len(ids) == 2
    started = [await manager.start(i) for i in [ada, *ids]]
    assert all(d is not None for d in started)
    names = {d.id: await pool.fetchval(
        "SELECT first_name FROM users u JOIN messages m ON m.user_id = u.id WHERE m.id = $1",
        d.id) for d in started if d is not None}
    by_name = {names[d.id]: d for d in started if d is not None}
    ada_d, bob_d, cy_d = by_name["Ada"], by_name["Bob"], by_name["Cy"]
    assert await greetings.delete_user(pool, bob_d.user_id, NINE_UTC)
    # Cy's row was taken back and started again elsewhere: attempt 1 is not ours.
    await pool.execute("UPDATE messages SET attempts = 2 WHERE id = $1", cy_d.id)

    statements: list[int] = []
    real = store.claim_calls

    async def counted(*args: Any) -> list[asyncpg.Record]:
        statements.append(len(args[1]))
        return await real(*args)

    monkeypatch.setattr(store, "claim_calls", counted)
    answers = await asyncio.gather(*(manager.claim_call(d) for d in (ada_d, bob_d, cy_d)))
    assert answers == [deliveries_mod.Recipient("Ada", "Lovelace", "ada@example.com"),
                       deliveries_mod.USER_DELETED, None]
    assert statements == [3]
    rows = {r["id"]: r for r in await pool.fetch("SELECT * FROM messages")}
    assert (rows[ada_d.id]["status"], rows[ada_d.id]["called_at"]) == ("sending", NINE_UTC)
    assert rows[bob_d.id]["status"] == "cancelled"
    assert (rows[cy_d.id]["status"], rows[cy_d.id]["called_at"]) == ("sending", None)


async def test_claiming_a_call_is_a_hot_update_that_writes_no_index_entry(
    pool: asyncpg.Pool, manager: deliveries_mod.Deliveries, ada: uuid.UUID
) -> None:
    """The claim sets only called_at (and updated_at): no indexed column, no
    column a partial index's predicate names, so PostgreSQL updates the row
    in place on its page (fillfactor leaves room) and writes no index entry."""
    delivery = await manager.start(ada)
    assert delivery is not None
    lease = await pool.fetchval("SELECT lease_until FROM messages WHERE id = $1", ada)
    counts = ("SELECT pg_stat_get_xact_tuples_updated('messages'::regclass), "
              "pg_stat_get_xact_tuples_hot_updated('messages'::regclass)")
    async with pool.acquire() as conn, conn.transaction():
        # This session's counts not yet flushed to the statistics: compare.
        before = await conn.fetchrow(counts)
        later = NINE_UTC + dt.timedelta(seconds=5)  # a claim a little after the start
        claimed = await store.claim_calls(conn, [(ada, delivery.attempt)], later)
        assert [r["status"] for r in claimed] == ["sending"]
        after = await conn.fetchrow(counts)
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1)
    row = await store.get_message(pool, ada)
    assert row is not None and (row["called_at"], row["lease_until"]) == (later, lease)
    assert await pool.fetchval(
        "SELECT reloptions FROM pg_class WHERE oid = 'messages'::regclass") == ["fillfactor=80"]


async def test_the_delivery_manager_releases_without_counting_and_retries_and_ends(
    pool: asyncpg.Pool, manager: deliveries_mod.Deliveries, ada: uuid.UUID
) -> None:
    """release hands the row back without spending the attempt; record_retry keeps
    it and sets the backoff; record_end(failed) ends it and plans next year's."""
    delivery = await manager.start(ada)
    assert delivery is not None
    later = NINE_UTC + dt.timedelta(minutes=1)
    assert await manager.release(delivery, later)
    row = await store.get_message(pool, ada)
    assert row is not None and (row["status"], row["attempts"], row["due_at"]) == (
        "retrying", 0, later)
    assert await manager.release(delivery, later) is False  # no longer ours
    assert await store.claim_one(pool, ada, later + AHEAD, later)
    again = await manager.start(ada)
    assert again is not None and again.attempt == 1
    assert await manager.record_retry(again, "HTTP 503", later)
    assert await _plan(pool) == [(dt.date(2027, 1, 15), "retrying", 1)]
    assert await store.claim_one(pool, ada, later + AHEAD, later)
    last = await manager.start(ada)
    assert last is not None and last.attempt == 2
    assert await manager.record_end(last, Status.FAILED, "HTTP 400")
    assert await _plan(pool) == [(dt.date(2027, 1, 15), "failed", 2),
                                 (dt.date(2028, 1, 15), "scheduled", 0)]


# -- a fresh ``now`` after long work ------------------------------------------------------


class SteppingClock:
    """Each reading is ``step`` later than the one before (work that takes time)."""

    def __init__(self, start: dt.datetime, step: dt.timedelta) -> None:
        self._next, self._step = start, step
        self.readings: list[dt.datetime] = []

    def now(self) -> dt.datetime:
        self.readings.append(self._next)
        self._next += self._step
        return self.readings[-1]


async def test_the_tick_after_a_recovery_sweep_reads_the_clock_again(
    make_pipeline: MakePipeline, manual_clock: clock_mod.ManualClock
) -> None:
    """A long sweep must not make the tick hand out leases measured from before it."""
    p = await make_pipeline(worker=False)
    message_id = await _ada_due(p, manual_clock)
    stepping = SteppingClock(ADA_SEND_AT, dt.timedelta(minutes=5))
    p.scheduler.clock = stepping
    await p.scheduler._run_recovery()
    recovery_now, tick_now = stepping.readings[:2]
    assert tick_now > recovery_now
    row = await p.row(message_id)
    assert row["status"] == "queued"
    assert row["lease_until"] >= tick_now + dispatch.QUEUED_LEASE


async def test_a_start_batch_retried_after_an_outage_measures_its_lease_from_the_retry(
    pool: asyncpg.Pool, ada: uuid.UUID
) -> None:
    now = NINE_UTC
    flaky = FlakyPool(pool)
    stepping = SteppingClock(now, dt.timedelta(seconds=30))
    lease = dt.timedelta(seconds=70)
    manager = deliveries_mod.Deliveries(flaky, stepping, send_hour=9,  # type: ignore[arg-type]
                                        call_lease=lease)
    flaky.down = True
    starting = asyncio.create_task(manager.start(ada))
    await eventually(lambda: flaky.failures >= 2)
    flaky.down = False
    delivery = await starting
    assert delivery is not None
    last_try = stepping.readings[-1]
    assert last_try > now
    assert await pool.fetchval("SELECT lease_until FROM messages WHERE id = $1", ada) \
        == last_try + lease


# -- acking when the provider has answered ----------------------------------------------


async def test_a_delivery_is_acked_once_answered_and_unrecorded_calls_stay_within_concurrency(
    make_pipeline: MakePipeline, manual_clock: clock_mod.ManualClock
) -> None:
    """While PostgreSQL holds up the records of answered calls, their deliveries
    are already acked (the next ids come in and start), but no more than
    QUEUE_CONCURRENCY rows sit between the claim of a call and its record: a
    crash can leave no more than that many answered and unrecorded."""
    p = await make_pipeline(worker=False, config=dataclasses.replace(FAST, concurrency=2))
    manual_clock.set(dt.datetime(2027, 1, 10, tzinfo=UTC))
    for i in range(5):
        await p.add_user(first=f"U{i}", email=f"u{i}@example.com", location="UTC")
    nine = dt.datetime(2027, 1, 15, 9, 0, tzinfo=UTC)
    manual_clock.set(nine)
    async with p.pool.acquire() as holder, holder.transaction():
        # Recording a send locks its user FOR UPDATE; a claim only FOR SHARE.
        await holder.execute("SELECT 1 FROM users FOR SHARE")
        assert await p.scheduler.tick(nine) == 5
        await p.start_worker()
        await eventually(lambda: len(p.recorder.calls) == 2, timeout=5)
        # Two answered and acked; two more delivered, started, and waiting.
        await eventually(lambda: p.status_count("sending", 4), timeout=5)
        assert await p.ready_count() == 1
        await asyncio.sleep(0.3)
        assert len(p.recorder.calls) == 2
    await eventually(lambda: p.status_count("sent", 5), timeout=10)
    await p.settle()
    assert sorted(set(p.recorder.by_key().values())) == [1]
    assert len(p.recorder.calls) == 5


# -- backpressure ---------------------------------------------------------------------


async def test_the_tick_claims_only_what_the_queue_has_room_for_and_the_rest_follows(
    make_pipeline: MakePipeline, manual_clock: clock_mod.ManualClock
) -> None:
    """With room for 10 in the queue and nobody consuming, a tick publishes 10 and
    leaves the other 15 scheduled (leased to nobody, so nothing can run out);
    once workers drain the queue, later ticks publish the rest, each id once."""
    p = await make_pipeline(worker=False, config=dataclasses.replace(FAST, concurrency=5))
    p.scheduler.flow.floor = 10
    p.scheduler.cfg = dataclasses.replace(p.scheduler.cfg, tick_budget_s=0.3)
    manual_clock.set(dt.datetime(2027, 1, 10, tzinfo=UTC))
    for i in range(25):
        await p.add_user(first=f"U{i}", email=f"u{i}@example.com", location="UTC")
    nine = dt.datetime(2027, 1, 15, 9, 0, tzinfo=UTC)
    manual_clock.set(nine)
    assert await p.scheduler.tick(nine) == 10
    counts = dict(await p.pool.fetch(
        "SELECT status, count(*) FROM messages WHERE occasion_date = '2027-01-15' "
        "GROUP BY status"))
    assert counts == {"queued": 10, "scheduled": 15}
    assert await p.ready_count() == 10
    await p.start_worker()
    published = 10

    async def all_sent() -> bool:
        nonlocal published
        published += await p.scheduler.tick(manual_clock.now())
        return await p.pool.fetchval(
            "SELECT count(*) FROM messages WHERE status = 'sent'") == 25

    await eventually(all_sent, timeout=20, interval=0.2)
    await p.settle()
    assert published == 25
    assert sorted(set(p.recorder.by_key().values())) == [1]
    assert len(p.recorder.calls) == 25


async def test_a_tick_of_many_batches_counts_the_backlog_once_not_per_batch(
    make_pipeline: MakePipeline, manual_clock: clock_mod.ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Counting queued rows walks all of them: a tick with room to spare counts
    once, then keeps its own tally while it claims batch after batch."""
    p = await make_pipeline(worker=False)
    p.scheduler.cfg = dataclasses.replace(p.scheduler.cfg, batch=4)
    manual_clock.set(dt.datetime(2027, 1, 10, tzinfo=UTC))
    for i in range(12):
        await p.add_user(first=f"U{i}", email=f"u{i}@example.com", location="UTC")
    counts: list[int] = []
    real = store.queued_count

    async def counted(db: store.Executor) -> int:
        counts.append(await real(db))
        return counts[-1]

    monkeypatch.setattr(store, "queued_count", counted)
    nine = dt.datetime(2027, 1, 15, 9, 0, tzinfo=UTC)
    manual_clock.set(nine)
    assert await p.scheduler.tick(nine) == 12
    assert counts == [0]
    assert p.scheduler.flow.queued == 12


async def test_a_publish_that_finds_no_queue_hands_back_and_redeclares(
    make_pipeline: MakePipeline, manual_clock: clock_mod.ManualClock
) -> None:
    """The queue vanishes between a tick's depth reading and its publish: the
    unroutable ids come back (mandatory), the rows are handed back, and the
    broker re-declares the queue."""
    p = await make_pipeline(worker=False)
    message_id = await _ada_due(p, manual_clock)
    ids = await store.claim_due(p.pool, ADA_SEND_AT, 10, ADA_SEND_AT + AHEAD, ADA_SEND_AT)
    await p.delete_queue()
    with pytest.raises(Exception, match="publish"):
        await dispatch.publish_claimed(p.pool, p.broker, ids, ADA_SEND_AT)
    assert await p.status(message_id) == "retrying"
    await eventually(lambda: p.broker.can_publish, timeout=10)
    assert await p.scheduler.tick(ADA_SEND_AT + dt.timedelta(seconds=1)) == 1
    assert await p.ready_count() == 1


# -- the dead-letter queue ---------------------------------------------------------------


async def test_the_dead_letter_queue_is_bounded_oldest_first_and_its_depth_exported(
    queue_name: str, pool: asyncpg.Pool, manual_clock: clock_mod.ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(broker_mod, "DEAD_LETTER_MAX", 2)
    broker = broker_mod.Broker(RABBITMQ_URL, queue_name)
    await broker.start()
    try:
        connection = await aiormq.connect(RABBITMQ_URL)
        try:
            channel = await connection.channel()
            for body in (b"1", b"2", b"3"):
                await channel.basic_publish(body, exchange=broker.names.dead_exchange)
        finally:
            await connection.close()
        await eventually(
            lambda: broker.queue_depth(broker.names.dead_queue), timeout=5)
        assert await broker.queue_depth(broker.names.dead_queue) == 2
        readings = runtime._scheduler_readings(pool, broker, manual_clock)
        await readings.refresh()  # what /metrics serves until the next refresh
        assert readings.depths == {"main": 0, "dead": 2}
        assert readings.backlog == 0
    finally:
        await broker.stop()
    # The broker gone, the depths have no sample; the backlog still has its own.
    await greetings.create_user(pool, {
        "first_name": "Ada", "last_name": "L", "email": "ada@example.com",
        "birthday": dt.date(1990, 1, 15), "anniversary": None, "location": "UTC"},
        dt.datetime(2027, 1, 15, 8, 0, tzinfo=UTC), 9)
    await readings.refresh()
    assert readings.depths == {}
    assert readings.backlog == 1  # 09:00Z today, due by the clock's 12:00Z
    text = generate_latest(metrics.registry(["scheduler"], [readings])).decode()
    assert "birthdayd_due_backlog 1.0" in text
    assert "birthdayd_queue_depth{" not in text


async def test_a_dead_letter_queue_declared_without_a_bound_is_kept(queue_name: str) -> None:
    """An older version declared it without the bound: arguments cannot change in
    place, so the broker keeps it (and says so) instead of failing to connect."""
    connection = await aiormq.connect(RABBITMQ_URL)
    try:
        channel = await connection.channel()
        await channel.queue_declare(f"{queue_name}.dead", durable=True,
                                    arguments={"x-queue-type": "quorum"})
    finally:
        await connection.close()
    broker = broker_mod.Broker(RABBITMQ_URL, queue_name)
    await asyncio.wait_for(broker.start(), 10)
    try:
        assert broker.can_publish
        assert await broker.queue_depth() == 0
    finally:
        await broker.stop()


async def test_a_pooled_connection_is_released_without_a_reset_round_trip(
    database_url: str,
) -> None:
    """asyncpg's default reset runs a statement on every release (about a tenth
    of an API process's CPU); birthdayd keeps no session state, so it runs none."""
    pool = await runtime.open_pool(Settings(database_url=database_url), asyncio.Event())
    assert pool is not None
    ran: list[str] = []
    try:
        async with pool.acquire() as conn:
            conn.add_query_logger(lambda record: ran.append(record.query))
            await conn.fetchval("SELECT 1")
        await asyncio.sleep(0.05)
        assert ran == ["SELECT 1"]
        # Short OLTP statements only: JIT never pays (see open_pool).
        assert await pool.fetchval("SHOW jit") == "off"
    finally:
        await pool.close()
