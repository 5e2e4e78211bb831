"""The delivery manager: one method per business transition of a greeting in
the worker's hands, each one conditional statement or one transaction.

The worker decides the order (start, wait, claim the call, call, record);
this module decides what each step writes, and is tested against PostgreSQL
alone.  The three busiest writes (start, claim, sent) are group-committed
across concurrent deliveries (see :mod:`birthdayd.batching`).  Writes that
record what the provider answered are retried while PostgreSQL is away, for
as long as it takes (until :meth:`Deliveries.abandon`): a lost record of a
2xx would mean sending the greeting again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from birthdayd import backoff, batching, dispatch, greetings, store
from birthdayd import broker as broker_mod
from birthdayd import clock as clock_mod
from birthdayd.states import Status

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Retrying a start while PostgreSQL is away holds the delivery unacked (and,
# with a full prefetch, pauses consumption: backpressure).  Past this the
# delivery is acked and the row's lease brings it back; it stays well below
# RabbitMQ's consumer_timeout (30 min by default).
START_RETRY_S = 300.0
# A claim of a provider call is retried this long; past it the delivery ends
# without a call and the row's lease brings it back.
CLAIM_RETRY_S = 30.0
# Retries of a record are spaced at most this far apart, so a worker records
# within a couple of seconds of PostgreSQL coming back, well inside the
# grace recovery gives a called row (one lease).
RECORD_RETRY_CAP_S = 1.0


@dataclasses.dataclass(frozen=True)
class Delivery:
    """A greeting this worker moved to sending, at attempt ``attempt``."""

    id: uuid.UUID
    user_id: uuid.UUID
    occasion: str
    occasion_date: dt.date
    send_at: dt.datetime
    due_at: dt.datetime
    attempt: int
    redriven_at: dt.datetime | None

    @classmethod
    def from_row(cls, row: store.Row) -> Delivery:
        return cls(id=row["id"], user_id=row["user_id"], occasion=row["occasion"],
                   occasion_date=row["occasion_date"], send_at=row["send_at"],
                   due_at=row["due_at"], attempt=row["attempts"],
                   redriven_at=row["redriven_at"])

    @property
    def late_since(self) -> dt.datetime:
        """Lateness counts from the send instant, or from an operator's re-drive."""
        return self.redriven_at or self.send_at


@dataclasses.dataclass(frozen=True)
class Recipient:
    """Whom to greet, as the user is at the moment of the provider call."""

    first_name: str
    last_name: str
    email: str


class UserDeleted:
    """claim_call's answer when the user is gone: the greeting was cancelled."""


USER_DELETED = UserDeleted()


class Deliveries:
    def __init__(self, pool: asyncpg.Pool, clock: clock_mod.Clock, *, send_hour: int,
                 call_lease: dt.timedelta) -> None:
        """``call_lease``: how long past its due time a row in sending stays
        its worker's: the provider timeout plus a margin.  Past it, recovery
        presumes the worker dead (a row whose call was claimed gets one more
        lease first)."""
        self.pool = pool
        self.clock = clock
        self.send_hour = send_hour
        self.call_lease = call_lease
        self._abandon = asyncio.Event()
        self._starts: batching.Batcher[uuid.UUID, Delivery | None] = batching.Batcher(
            self._start_many, orphaned=self._orphaned_start)
        self._claims: batching.Batcher[Delivery, Recipient | UserDeleted | None] = (
            batching.Batcher(self._claim_many, orphaned=self._orphaned_claim))
        self._sends: batching.Batcher[Delivery, bool] = batching.Batcher(self._sent_many)

    def abandon(self) -> None:
        """Stop retrying records (the drain's grace is over): what is left
        unrecorded is recovered from its lease."""
        self._abandon.set()

    # -- start ------------------------------------------------------------------

    async def start(self, message_id: uuid.UUID) -> Delivery | None:
        """``queued → sending``; None when the row is not queued (a redelivery,
        a second publish, or a row an edit removed)."""
        return await self._starts.submit(message_id)

    async def _start_many(self, ids: list[uuid.UUID]) -> list[Delivery | None]:
        unique = list(set(ids))
        stamps: list[dt.datetime] = []

        async def start() -> list[asyncpg.Record]:
            now = self.clock.now()  # each try its own: a retry must not shorten the lease
            stamps.append(now)
            rows = list(await store.start_sending(self.pool, unique, self.call_lease, now))
            if len(stamps) > 1:
                # An earlier try's commit may have landed with its answer lost:
                # the rows it moved (stamped with its ``now``) are ours too.
                rows += await store.started_at(self.pool, unique, stamps[:-1])
            return rows

        rows = await backoff.retry(start, errors=store.TRANSIENT_ERRORS, what="starting deliveries",
                                   deadline_s=START_RETRY_S, cap_s=RECORD_RETRY_CAP_S,
                                   give_up=self._abandon)
        won = {r["id"]: Delivery.from_row(r) for r in rows}
        return [won.pop(i, None) for i in ids]

    async def _orphaned_start(self, _: uuid.UUID, delivery: Delivery | None) -> None:
        if delivery is not None:  # its caller is gone: hand the row back
            await self.release(delivery, max(delivery.due_at, self.clock.now()))

    # -- before the call --------------------------------------------------------

    async def claim_call(self, delivery: Delivery) -> Recipient | UserDeleted | None:
        """Re-assert, right before the provider call, that the row is still
        ours and the user live; returns whom to greet.  None: the row is no
        longer ours (recovered, removed by an edit): no call.  Concurrent
        claims go to PostgreSQL together (one statement per batch)."""
        return await self._claims.submit(delivery)

    async def _claim_many(self, items: list[Delivery]) -> list[Recipient | UserDeleted | None]:
        async def claim() -> list[asyncpg.Record]:
            return await store.claim_calls(self.pool, [(d.id, d.attempt) for d in items],
                                           self.clock.now())

        # Idempotent, so retried (a claim that committed with its answer lost
        # would otherwise leave a called row that no call ever left).
        rows = await backoff.retry(claim, errors=store.TRANSIENT_ERRORS, what="claiming calls",
                                   deadline_s=CLAIM_RETRY_S, cap_s=RECORD_RETRY_CAP_S,
                                   give_up=self._abandon)
        found = {r["id"]: r for r in rows}
        return [self._recipient(found.get(d.id)) for d in items]

    @staticmethod
    def _recipient(row: asyncpg.Record | None) -> Recipient | UserDeleted | None:
        if row is None:
            return None
        if row["status"] == Status.CANCELLED:
            return USER_DELETED
        return Recipient(row["first_name"], row["last_name"], row["email"])

    async def _orphaned_claim(self, delivery: Delivery,
                              recipient: Recipient | UserDeleted | None) -> None:
        if isinstance(recipient, Recipient):  # claimed, and nobody will call: hand it back
            await self.release(delivery, max(delivery.due_at, self.clock.now()))

    async def release(self, delivery: Delivery, due: dt.datetime) -> bool:
        """Hand the row back, due at ``due``, without counting the attempt (no
        call was made: breaker open, draining, or a caller gone)."""
        return await store.release(self.pool, delivery.id, delivery.attempt, due,
                                   self.clock.now())

    async def record_unreached(self, delivery: Delivery, error: str | None, due: dt.datetime
                               ) -> bool:
        """The call could not connect: hand the row back like release, with
        ``error``, retried while PostgreSQL is away like every record of a
        call (the delivery is acked by then; the guard on the attempt makes a
        late retry a no-op)."""
        now = self.clock.now()
        return await self._persist(
            lambda: store.release(self.pool, delivery.id, delivery.attempt, due, now, error),
            "recording an unreached provider")

    # -- after the call ---------------------------------------------------------

    async def record_sent(self, delivery: Delivery) -> bool:
        """The provider accepted: record it and plan next year's greeting."""
        return await self._sends.submit(delivery)

    async def _sent_many(self, items: list[Delivery]) -> list[bool]:
        async def record() -> list[bool]:
            now = self.clock.now()
            async with self.pool.acquire() as conn, conn.transaction():
                # Users before messages, the order every writer takes them in.
                users = await store.lock_users(conn, sorted({d.user_id for d in items}))
                done = await store.finish_sent(conn, [(d.id, d.attempt) for d in items], now)
                for d in items:
                    # Recovery took the row back while the provider was
                    # answering: it was accepted all the same, so nobody may
                    # send it again.
                    if d.id not in done and await store.finish_late_sent(conn, d.id, now):
                        done.add(d.id)
                ended = [(d.user_id, d.occasion) for d in items if d.id in done]
                await greetings.plan_next(conn, ended, now, self.send_hour, locked=users)
            return [d.id in done for d in items]

        return await self._persist(record, "recording sent greetings")

    async def record_retry(self, delivery: Delivery, error: str | None, due: dt.datetime
                           ) -> bool:
        now = self.clock.now()
        return await self._persist(
            lambda: store.finish(self.pool, delivery.id, delivery.attempt, Status.RETRYING, error,
                                 now, due),
            "recording a retry")

    async def record_end(self, delivery: Delivery, status: Status, error: str | None) -> bool:
        """A greeting ``failed`` or ``expired``: record it and plan next year's,
        in one transaction (planning is a savepoint: its failure never undoes
        the record)."""

        async def record() -> bool:
            now = self.clock.now()
            async with self.pool.acquire() as conn, conn.transaction():
                done = await store.finish(conn, delivery.id, delivery.attempt, status, error, now)
                if done:
                    await greetings.plan_next(conn, [(delivery.user_id, delivery.occasion)],
                                              now, self.send_hour)
                return done

        return await self._persist(record, f"recording a greeting {status}")

    async def _persist(self, write: Callable[[], Awaitable[T]], what: str) -> T:
        return await backoff.retry(write, errors=store.TRANSIENT_ERRORS, what=what,
                                   cap_s=RECORD_RETRY_CAP_S, give_up=self._abandon)

    # -- re-publishing ----------------------------------------------------------

    async def republish(self, message_id: uuid.UUID, broker: broker_mod.Broker,
                        lease: dt.timedelta) -> bool:
        """Claim a retrying row and publish it again (a short backoff the
        worker handles itself); False if the tick got there first.  Under a
        short lease (LEASE_MARGIN), not the tick's queued lease: a worker
        killed between this claim and its publish must not strand the row for
        ten minutes (a second copy of a retry in the queue is only a dropped
        redelivery)."""
        now = self.clock.now()
        if not await store.claim_one(self.pool, message_id, now + lease, now):
            return False
        await dispatch.publish_claimed(self.pool, broker, [message_id], now)
        return True
