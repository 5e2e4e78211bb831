"""All SQL access: one function per named query in ``queries.sql``.

Functions take the connection (or pool) to run on, so callers compose them
into one transaction.  Instants are always passed in (DESIGN §3.3).
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


# Errors that mean PostgreSQL is briefly away or a transaction lost a race,
# not that the statement was wrong: worth a retry, or a 503.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
)


def _load_queries() -> dict[str, str]:
    text = importlib.resources.files("birthdayd").joinpath("queries.sql").read_text("utf-8")
    blocks = re.split(r"^-- name: (\w+)\s*$", text, flags=re.MULTILINE)
    return {name: body.strip() for name, body in zip(blocks[1::2], blocks[2::2], strict=True)}


Q = _load_queries()


def new_id() -> uuid.UUID:
    """A UUIDv7: time-ordered, so new rows land at the end of the id index and
    keyset pages (ordered by id) see concurrent inserts only after the cursor."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & (2**48 - 1)) << 80 | 0x7 << 76 | (rand >> 68 & 0xFFF) << 64
    value |= 0b10 << 62 | rand & (2**62 - 1)
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


async def get_user(db: Executor, user_id: uuid.UUID) -> Record | None:
    return await db.fetchrow(Q["get_user"], user_id)


async def lock_user(db: Executor, user_id: uuid.UUID) -> Record | None:
    return await db.fetchrow(Q["lock_user"], user_id)


async def update_user(db: Executor, user_id: uuid.UUID, fields: dict[str, Any],
                      now: dt.datetime) -> Record | None:
    return await db.fetchrow(
        Q["update_user"], user_id, fields["first_name"], fields["last_name"],
        fields["email"], fields["birthday"], fields["anniversary"], fields["location"], now,
    )


async def delete_user(db: Executor, user_id: uuid.UUID, now: dt.datetime) -> bool:
    return await db.fetchval(Q["delete_user"], user_id, now) is not None


async def list_users(db: Executor, after: uuid.UUID | None, limit: int) -> list[Record]:
    return await db.fetch(Q["list_users"], after, limit)


async def users_page_needs(db: Executor, after: uuid.UUID | None, limit: int) -> list[Record]:
    return await db.fetch(Q["users_page_needs"], after, limit)


# -- messages -----------------------------------------------------------------


async def pending_for_users(db: Executor, user_ids: list[uuid.UUID]) -> list[Record]:
    return await db.fetch(Q["pending_for_users"], user_ids)


async def latest_dates(db: Executor, user_ids: list[uuid.UUID]
                       ) -> dict[tuple[uuid.UUID, str], dt.date]:
    rows = await db.fetch(Q["latest_dates"], user_ids)
    return {(r["user_id"], r["occasion"]): r["occasion_date"] for r in rows}


async def lock_users(db: Executor, user_ids: list[uuid.UUID]) -> list[Record]:
    return await db.fetch(Q["lock_users"], user_ids)


async def drop_scheduled(db: Executor, user_id: uuid.UUID, which: list[str],
                         now: dt.datetime) -> None:
    await db.execute(Q["drop_scheduled"], user_id, which, now)


async def cancel_pending(db: Executor, user_id: uuid.UUID, now: dt.datetime) -> None:
    await db.execute(Q["cancel_pending"], user_id, now)


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
    if status is None:
        return await db.fetch(Q["list_messages"], user_id, after, limit)
    return await db.fetch(Q["list_messages_by_status"], status, user_id, after, limit)


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


async def extend_lease(db: Executor, ids: list[uuid.UUID], lease_until: dt.datetime) -> None:
    await db.execute(Q["extend_lease"], ids, lease_until)


async def claim_one(db: Executor, message_id: uuid.UUID, lease_until: dt.datetime,
                    now: dt.datetime) -> bool:
    return await db.fetchval(Q["claim_one"], message_id, lease_until, now) is not None


async def start_sending(db: Executor, message_ids: list[uuid.UUID], lease: dt.timedelta,
                        now: dt.datetime) -> list[Record]:
    return await db.fetch(Q["start_sending"], message_ids, lease, now)


async def started_at(db: Executor, message_ids: list[uuid.UUID], now: dt.datetime
                     ) -> list[Record]:
    return await db.fetch(Q["started_at"], message_ids, now)


async def finish_sent(db: Executor, sent: list[tuple[uuid.UUID, int]], now: dt.datetime
                      ) -> set[uuid.UUID]:
    """Record a batch of (id, attempt) as sent; returns the ids that were recorded."""
    ids, attempts = [i for i, _ in sent], [a for _, a in sent]
    return {r["id"] for r in await db.fetch(Q["finish_sent"], ids, attempts, now)}


async def cancel_if_deleted(db: Executor, message_id: uuid.UUID, now: dt.datetime) -> bool:
    return await db.fetchval(Q["cancel_if_deleted"], message_id, now) is not None


async def release(db: Executor, message_id: uuid.UUID, attempt: int, due_at: dt.datetime,
                  now: dt.datetime) -> bool:
    return await db.execute(Q["release"], message_id, attempt, due_at, now) == "UPDATE 1"


async def finish(db: Executor, message_id: uuid.UUID, attempt: int, status: str,
                 error: str | None, now: dt.datetime, due_at: dt.datetime | None = None) -> bool:
    found = await db.fetchval(Q["finish"], message_id, attempt, status, error, now, due_at)
    return found is not None


async def finish_late_sent(db: Executor, message_id: uuid.UUID, now: dt.datetime) -> bool:
    return await db.fetchval(Q["finish_late_sent"], message_id, now) is not None


async def recover_stale(db: Executor, now: dt.datetime, limit: int) -> list[Record]:
    return await db.fetch(Q["recover_stale"], now, limit)


async def due_backlog(db: Executor, now: dt.datetime) -> int:
    count: int = await db.fetchval(Q["due_backlog"], now)
    return count
