"""Business operations on users and their greetings (one transaction each).

Shared by the API (create, edit, delete), the worker (the next greeting once
one ends) and the scheduler's daily self-healing.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
import zoneinfo
from collections.abc import Iterable, Mapping
from typing import Any

import asyncpg

from birthdayd import BirthdaydError, calendar_rules, occasions, store, validation
from birthdayd import clock as clock_mod
from birthdayd.fair_pool import FairPool

logger = logging.getLogger(__name__)


class EmailTaken(BirthdaydError):
    pass


class Invalid(BirthdaydError):
    def __init__(self, fields: dict[str, str]) -> None:
        super().__init__(fields)
        self.fields = fields


def _origin(user: store.Row, occasion: str) -> dt.date | None:
    origin: dt.date | None = user[occasions.OCCASIONS[occasion].field]
    return origin


def changed_occasions(before: store.Row, after: store.Row) -> list[str]:
    """The occasions whose greetings an edit moves: a new zone moves them all."""
    if before["location"] != after["location"]:
        return list(occasions.OCCASIONS)
    return [name for name, o in occasions.OCCASIONS.items() if before[o.field] != after[o.field]]


async def plan(
    db: store.Executor,
    user: store.Row,
    now: dt.datetime,
    send_hour: int,
    which: Iterable[str] = tuple(occasions.OCCASIONS),
) -> None:
    """Insert the next greeting of each occasion in ``which`` that the user has."""
    await plan_many(db, [(user, tuple(which))], now, send_hour)


async def plan_many(
    db: store.Executor,
    wanted: list[tuple[store.Row, Iterable[str]]],
    now: dt.datetime,
    send_hour: int,
) -> None:
    """For each (user, occasions): insert the next greeting of each occasion the
    user has.  The next greeting comes after every greeting already planned or
    done for that occasion; the UNIQUE keys make a repeated plan a no-op."""
    latest = await store.latest_dates(db, [user["id"] for user, _ in wanted])
    plans = [plan for user, which in wanted
             for plan in _next_greetings(user, which, now, send_hour, latest)]
    await store.insert_messages(db, plans, now)


def _next_greetings(
    user: store.Row, which: Iterable[str], now: dt.datetime, send_hour: int,
    latest: Mapping[tuple[uuid.UUID, str], dt.date],
) -> list[tuple[uuid.UUID, str, dt.date, dt.datetime]]:
    """(user_id, occasion, date, send_at) of each occasion's next greeting."""
    zone = zoneinfo.ZoneInfo(user["location"])
    plans = []
    for occasion in which:
        origin = _origin(user, occasion)
        if origin is None:
            continue
        after = latest.get((user["id"], occasion))
        nxt = calendar_rules.next_greeting(origin, zone, send_hour, now, after=after)
        plans.append((user["id"], occasion, nxt.date, nxt.send_at))
    return plans


async def plan_next(
    conn: store.Connection,
    ended: list[tuple[uuid.UUID, str]],
    now: dt.datetime,
    send_hour: int,
    locked: list[store.Record] | None = None,
) -> None:
    """After greetings ended, given as (user_id, occasion): plan each user's next.

    Inside the caller's transaction this is a savepoint, so the end and the
    next plan commit together, yet a failure here (logged; the daily job plans
    whatever is missing) never undoes the record of the greetings that ended.
    The users' rows are locked (or were, by the caller's transaction: pass
    what its lock_users returned as ``locked``), so a concurrent DELETE either
    sees the new row and cancels it, or comes first and nothing is planned."""
    try:
        async with conn.transaction():
            if locked is None:
                locked = await store.lock_users(conn, sorted({u for u, _ in ended}))
            users = {u["id"]: u for u in locked}
            wanted: dict[uuid.UUID, list[str]] = {}
            for user_id, occasion in ended:
                if user_id in users:
                    wanted.setdefault(user_id, []).append(occasion)
            await plan_many(conn, [(users[u], o) for u, o in wanted.items()], now, send_hour)
    except Exception:
        logger.exception("could not plan the next greetings of %d users", len(ended),
                         extra={"event": "plan_failed"})


async def create(
    db: store.Executor, fields: dict[str, Any], now: dt.datetime, send_hour: int
) -> store.Record:
    """Insert a user and its first greetings in one statement (one round trip);
    returns the user with its schedule, as store.user_with_schedule does."""
    user_id = store.new_id()
    plans = _next_greetings({**fields, "id": user_id}, occasions.OCCASIONS, now, send_hour, {})
    try:
        return await store.create_user(db, user_id, fields, plans, now)
    except asyncpg.UniqueViolationError as e:
        raise EmailTaken(fields["email"]) from e


async def create_user(
    db: store.Executor, fields: dict[str, Any], now: dt.datetime, send_hour: int
) -> uuid.UUID:
    user_id: uuid.UUID = (await create(db, fields, now, send_hour))["id"]
    return user_id


async def update_user(
    pool: asyncpg.Pool | FairPool, user_id: uuid.UUID, body: Any, clock: clock_mod.Clock,
    send_hour: int,
) -> store.Record | None:
    """Apply a PUT body (any subset of fields); returns the user with its
    schedule as committed (read in the same transaction, or statement), None
    if there is no such user.

    Validation runs on the locked row, so concurrent edits of different fields
    both survive.  When an occasion's date or the zone changes, its greetings
    that are not due yet are replaced, also one published ahead of its
    instant or held by a worker waiting for it; one already due, in flight
    or done stays, the next is planned after it, and the UNIQUE key keeps a
    greeting for the same date from going twice.

    The clock is read once the user's row is locked: a worker locks it too
    right before its provider call, so "not due yet" here means no call has
    been made.

    An edit that moves no greeting (names, e-mail: most edits) takes two
    statements and no transaction: a plain read, then a compare-and-set
    (store.rename_user) that applies only if the row is still as read.
    Anything else, an invalid body, or a row changed in between, goes the
    locked way, which decides (and validates) on the locked row.
    """
    async with pool.acquire() as conn:
        before = await store.get_user(conn, user_id)
        if before is None:
            return None
        now = clock.now()
        fields, errors = validation.validate_user(body, now, dict(before))
        if not errors and not changed_occasions(before, fields):
            try:
                renamed = await store.rename_user(conn, before, fields, now)
            except asyncpg.UniqueViolationError as e:
                raise EmailTaken(fields["email"]) from e
            if renamed is not None:
                return renamed
        async with conn.transaction():
            return await _update_locked(conn, user_id, body, clock, send_hour)


async def _update_locked(conn: store.Connection, user_id: uuid.UUID, body: Any,
                         clock: clock_mod.Clock, send_hour: int) -> store.Record | None:
    before = await store.lock_user(conn, user_id)
    if before is None:
        return None
    now = clock.now()
    fields, errors = validation.validate_user(body, now, dict(before))
    if errors:
        raise Invalid(errors)
    try:
        after = await store.update_user(conn, user_id, fields, now)
    except asyncpg.UniqueViolationError as e:
        raise EmailTaken(fields["email"]) from e
    assert after is not None
    changed = changed_occasions(before, after)
    if changed:
        await store.drop_unsent(conn, user_id, changed, now)
        await plan(conn, after, now, send_hour, changed)
    return await store.user_with_schedule(conn, user_id)


async def delete_user(db: store.Executor, user_id: uuid.UUID, now: dt.datetime) -> bool:
    """Delete a user and cancel its pending greetings (one statement)."""
    return await store.delete_user(db, user_id, now)


# Any constant will do; the same for every replica (and not the migrations' key).
HEAL_LOCK_KEY = 0x68_65_61_6C  # "heal"


async def heal(pool: asyncpg.Pool, now: dt.datetime, send_hour: int, page: int = 500
               ) -> int | None:
    """Give every live user its next greeting per occasion; returns how many were
    missing, or None when another replica is healing right now.

    One replica at a time: a transaction-level advisory lock, held by a
    connection that does nothing else and released when its transaction ends,
    however the heal ends (a pooled connection is never handed back holding
    it).  Keyset pages of ``page`` users, each planned in one short transaction
    that locks only the users it plans for, so the tick and the API wait at
    most one page."""
    async with pool.acquire() as holder, holder.transaction():
        if not await holder.fetchval("SELECT pg_try_advisory_xact_lock($1)", HEAL_LOCK_KEY):
            return None
        return await _heal_pages(pool, now, send_hour, page)


async def _heal_pages(pool: asyncpg.Pool, now: dt.datetime, send_hour: int, page: int) -> int:
    healed = 0
    after: uuid.UUID | None = None
    while rows := await store.users_page_needs(pool, after, page):
        after = rows[-1]["id"]
        needs = {r["id"]: [o for o in occasions.OCCASIONS if r[f"needs_{o}"]] for r in rows}
        needs = {user_id: which for user_id, which in needs.items() if which}
        if not needs:
            continue
        async with pool.acquire() as conn, conn.transaction():
            # Locked, and still live: a user deleted meanwhile gets nothing.
            users = await store.lock_users(conn, sorted(needs))
            await plan_many(conn, [(u, needs[u["id"]]) for u in users], now, send_hour)
            healed += sum(len(needs[u["id"]]) for u in users)
    return healed
