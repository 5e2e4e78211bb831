"""All SQL access: one function per named query in ``queries.sql``.

Functions take the connection (or pool) to run on, so callers compose them
into one transaction.  Instants are always passed in (docs/ARCHITECTURE.md §4.3).
"""

from __future__ import annotations

import datetime as dt
import importlib.resources
import os
import re
import time
import uuid
from typing import Any, Protocol

import asyncpg

from birthdayd import occasions
from birthdayd.states import Status

Record = asyncpg.Record
# A connection of one's own or one lent by the pool (both can open transactions).
Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy


class Row(Protocol):
    """A result row, read by column name (asyncpg.Record, or a dict in tests)."""

    def __getitem__(self, key: str, /) -> Any: ...


class Executor(Protocol):
    """What both a pool and a connection can do."""

    # ASYNC109: these mirror asyncpg's own signatures.

    async def execute(self, query: str, *args: Any, timeout: float | None = None) -> str: ...  # noqa: ASYNC109

    async def fetch(
        self, query: str, *args: Any, timeout: float | None = None  # noqa: ASYNC109
    ) -> list[Record]: ...

    async def fetchrow(
        self, query: str, *args: Any, timeout: float | None = None  # noqa: ASYNC109
    ) -> Record | None: ...

    async def fetchval(
        self, query: str, *args: Any, column: int = 0, timeout: float | None = None  # noqa: ASYNC109
    ) -> Any: ...


# Errors that mean PostgreSQL is away, our session was ended under us, or a
# transaction lost a race, not that the statement was wrong: worth a retry,
# or a 503.  OperatorInterventionError covers a session terminated by an
# administrator (pg_terminate_backend), a server shutting down or still
# starting, and a cancelled statement; InternalClientError is what asyncpg
# raises when a connection dies mid-protocol (a terminated session).
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.OperatorInterventionError,
    asyncpg.TooManyConnectionsError,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
)


def _load_queries() -> dict[str, str]:
    text = importlib.resources.files("birthdayd").joinpath("queries.sql").read_text("utf-8")
    blocks = re.split(r"^-- name: (\w+)\s*$", text, flags=re.MULTILINE)
    return {name: body.strip() for name, body in zip(blocks[1::2], blocks[2::2], strict=True)}


Q = _load_queries()

FIRST = uuid.UUID(int=0)
"""The cursor of a first page: every id sorts after the nil uuid."""


# new_id's state: the millisecond and counter of the last id made.  Kept at
# module level without a lock: safe under asyncio (new_id never awaits, so one
# event loop cannot interleave two calls), NOT safe for calls from several
# threads at once (two threads may read the same state: ids out of order).
_COUNTER_BITS = 42  # rand_a (12 bits) then the top 30 bits of rand_b
_COUNTER_MAX = (1 << _COUNTER_BITS) - 1
_last_ms = -1
_counter = 0


def _seed() -> int:
    """A random counter start with its top bit clear (RFC 9562 §6.2: room for
    at least 2**41 increments within one millisecond)."""
    return int.from_bytes(os.urandom(6), "big") >> (48 - _COUNTER_BITS + 1)


def new_id() -> uuid.UUID:
    """A UUIDv7, strictly increasing within this process: new rows land at the
    end of the id index, and an id made after a keyset page's cursor sorts
    after it, even within the same millisecond (so GET /users?after= does not
    skip it; ids from other processes are ordered only by their millisecond).

    RFC 9562 §6.2 method 1: a 42-bit counter in rand_a and the top of rand_b,
    seeded randomly each new millisecond and incremented within one; the
    last 32 bits are random.  If the clock steps back, or the counter
    overflows, the last millisecond is kept (or advanced by one), so the
    prefix may run slightly ahead of the clock but ids never go backwards.
    Not thread-safe (see ``_last_ms`` above); asyncio-safe.
    """
    global _last_ms, _counter  # noqa: PLW0603 - the generator's state, documented above
    ms = time.time_ns() // 1_000_000
    if ms > _last_ms:
        _last_ms, _counter = ms, _seed()
    elif _counter < _COUNTER_MAX:
        _counter += 1
    else:
        _last_ms, _counter = _last_ms + 1, _seed()
    tail = int.from_bytes(os.urandom(4), "big")
    value = (_last_ms & (2**48 - 1)) << 80 | 0x7 << 76 | (_counter >> 30) << 64
    value |= 0b10 << 62 | (_counter & (2**30 - 1)) << 32 | tail
    return uuid.UUID(int=value)


# -- users --------------------------------------------------------------------


async def insert_user(db: Executor, user_id: uuid.UUID, fields: dict[str, Any],
                      now: dt.datetime) -> Record:
    row = await db.fetchrow(
        Q["insert_user"], user_id, fields["first_name"], fields["last_name"],
        fields["email"], fields["birthday"], fields["anniversary"], fields["location"], now,
    )
    assert row is not None
    return row


async def create_user(db: Executor, user_id: uuid.UUID, fields: dict[str, Any],
                      plans: list[tuple[uuid.UUID, str, dt.date, dt.datetime]],
                      now: dt.datetime) -> Record:
    """Insert a user and its greetings (plans as for insert_messages)."""
    row = await db.fetchrow(
        Q["create_user"], user_id, fields["first_name"], fields["last_name"],
        fields["email"], fields["birthday"], fields["anniversary"], fields["location"], now,
        [new_id() for _ in plans], [p[1] for p in plans], [p[2] for p in plans],
        [p[3] for p in plans],
    )
    assert row is not None
    return row


async def user_with_schedule(db: Executor, user_id: uuid.UUID) -> Record | None:
    return await db.fetchrow(Q["user_with_schedule"], user_id)


async def user_json(db: Executor, user_id: uuid.UUID) -> str | None:
    """The user with its schedule as the JSON text of api.user_view, or None."""
    text: str | None = await db.fetchval(Q["user_json"], user_id)
    return text


async def users_page(db: Executor, after: uuid.UUID | None, limit: int) -> list[Record]:
    """Up to ``limit`` live users after ``after`` in id order: (id, json), the
    user with its schedule as the JSON text of api.user_view."""
    return await db.fetch(Q["users_page"], after or FIRST, limit)


async def get_user(db: Executor, user_id: uuid.UUID) -> Record | None:
    return await db.fetchrow(Q["get_user"], user_id)


async def lock_user(db: Executor, user_id: uuid.UUID) -> Record | None:
    return await db.fetchrow(Q["lock_user"], user_id)


async def rename_user(db: Executor, before: Row, fields: dict[str, Any], now: dt.datetime
                      ) -> Record | None:
    """Set the names and e-mail of ``fields`` if the user is still ``before``
    (see the statement); the user with its schedule, or None."""
    return await db.fetchrow(
        Q["rename_user"], before["id"], fields["first_name"], fields["last_name"],
        fields["email"], before["first_name"], before["last_name"], before["email"],
        before["birthday"], before["anniversary"], before["location"], now,
    )


async def update_user(db: Executor, user_id: uuid.UUID, fields: dict[str, Any],
                      now: dt.datetime) -> Record | None:
    return await db.fetchrow(
        Q["update_user"], user_id, fields["first_name"], fields["last_name"],
        fields["email"], fields["birthday"], fields["anniversary"], fields["location"], now,
    )


async def delete_user(db: Executor, user_id: uuid.UUID, now: dt.datetime) -> bool:
    return await db.fetchval(Q["delete_user"], user_id, now) is not None


async def users_page_needs(db: Executor, after: uuid.UUID | None, limit: int) -> list[Record]:
    return await db.fetch(Q["users_page_needs"], after or FIRST, limit)


# -- messages -----------------------------------------------------------------


async def latest_dates(db: Executor, user_ids: list[uuid.UUID]
                       ) -> dict[tuple[uuid.UUID, str], dt.date]:
    rows = await db.fetch(Q["latest_dates"], user_ids, list(occasions.OCCASIONS))
    return {(r["user_id"], r["occasion"]): r["occasion_date"] for r in rows}


async def lock_users(db: Executor, user_ids: list[uuid.UUID]) -> list[Record]:
    return await db.fetch(Q["lock_users"], user_ids)


async def drop_unsent(db: Executor, user_id: uuid.UUID, which: list[str],
                      now: dt.datetime) -> None:
    await db.execute(Q["drop_unsent"], user_id, which, now)


async def insert_messages(db: Executor, plans: list[tuple[uuid.UUID, str, dt.date, dt.datetime]],
                          now: dt.datetime) -> None:
    """Insert (user_id, occasion, date, send_at) rows as scheduled; existing ones win."""
    if not plans:
        return
    user_ids, names, days, send_ats = (list(c) for c in zip(*plans, strict=True))
    ids = [new_id() for _ in plans]
    await db.execute(Q["insert_messages"], ids, user_ids, names, days, send_ats, now)


async def list_messages(db: Executor, status: str | None, user_id: uuid.UUID | None,
                        after: uuid.UUID | None, limit: int) -> list[Record]:
    after = after or FIRST
    if user_id is None:
        if status is None:
            return await db.fetch(Q["list_messages"], after, limit)
        return await db.fetch(Q["list_messages_by_status"], status, after, limit)
    if status is None:
        return await db.fetch(Q["list_messages_of_user"], user_id, after, limit)
    return await db.fetch(Q["list_messages_of_user_by_status"], user_id, status, after, limit)


async def get_message(db: Executor, message_id: uuid.UUID) -> Record | None:
    return await db.fetchrow(Q["get_message"], message_id)


async def redrive(db: Executor, message_id: uuid.UUID, now: dt.datetime) -> Record | None:
    return await db.fetchrow(Q["redrive"], message_id, now)


async def expire_overdue(db: Executor, horizon: dt.datetime, cutoff: dt.datetime,
                         now: dt.datetime, limit: int) -> list[Record]:
    return await db.fetch(Q["expire_overdue"], horizon, cutoff, now, limit)


async def claim_due(db: Executor, horizon: dt.datetime, limit: int,
                    lease_until: dt.datetime, now: dt.datetime) -> list[uuid.UUID]:
    rows = await db.fetch(Q["claim_due"], horizon, limit, lease_until, now)
    return [r["id"] for r in rows]


async def unclaim(db: Executor, ids: list[uuid.UUID], now: dt.datetime) -> None:
    await db.execute(Q["unclaim"], ids, now)


async def claim_one(db: Executor, message_id: uuid.UUID, lease_until: dt.datetime,
                    now: dt.datetime) -> bool:
    return await db.fetchval(Q["claim_one"], message_id, lease_until, now) is not None


async def start_sending(db: Executor, message_ids: list[uuid.UUID], lease: dt.timedelta,
                        now: dt.datetime) -> list[Record]:
    return await db.fetch(Q["start_sending"], message_ids, lease, now)


async def started_at(db: Executor, message_ids: list[uuid.UUID], stamps: list[dt.datetime]
                     ) -> list[Record]:
    return await db.fetch(Q["started_at"], message_ids, stamps)


async def finish_sent(db: Executor, sent: list[tuple[uuid.UUID, int]], now: dt.datetime
                      ) -> set[uuid.UUID]:
    """Record a batch of (id, attempt) as sent; returns the ids that were recorded."""
    ids, attempts = [i for i, _ in sent], [a for _, a in sent]
    return {r["id"] for r in await db.fetch(Q["finish_sent"], ids, attempts, now)}


async def claim_calls(db: Executor, calls: list[tuple[uuid.UUID, int]], now: dt.datetime
                      ) -> list[Record]:
    """The rows of ``calls`` (id, attempt) still this worker's, with whom to
    greet (see the statement)."""
    ids, attempts = [i for i, _ in calls], [a for _, a in calls]
    return await db.fetch(Q["claim_calls"], ids, attempts, now)


async def release(db: Executor, message_id: uuid.UUID, attempt: int, due_at: dt.datetime,
                  now: dt.datetime, error: str | None = None) -> bool:
    return await db.execute(Q["release"], message_id, attempt, due_at, now,
                            error) == "UPDATE 1"


async def finish(db: Executor, message_id: uuid.UUID, attempt: int, status: Status,
                 error: str | None, now: dt.datetime, due_at: dt.datetime | None = None) -> bool:
    found = await db.fetchval(Q["finish"], message_id, attempt, status, error, now, due_at)
    return found is not None


async def finish_late_sent(db: Executor, message_id: uuid.UUID, now: dt.datetime) -> bool:
    return await db.fetchval(Q["finish_late_sent"], message_id, now) is not None


async def recover_stale(db: Executor, now: dt.datetime, limit: int, grace: dt.timedelta
                        ) -> list[Record]:
    return await db.fetch(Q["recover_stale"], now, limit, grace)


async def requeue_queued(db: Executor, now: dt.datetime) -> int:
    return len(await db.fetch(Q["requeue_queued"], now))


async def queued_count(db: Executor) -> int:
    count: int = await db.fetchval(Q["queued_count"])
    return count


async def due_backlog(db: Executor, now: dt.datetime) -> int:
    count: int = await db.fetchval(Q["due_backlog"], now)
    return count
