"""The daily job's self-healing: every live user gets its next greeting per
occasion, one replica at a time, in keyset pages."""

from __future__ import annotations

import datetime as dt

import asyncpg

from birthdayd import greetings, store

UTC = dt.UTC
CREATED = dt.datetime(2027, 1, 10, tzinfo=UTC)


async def _users(pool: asyncpg.Pool, n: int, anniversary: bool = False) -> list[object]:
    return [await greetings.create_user(
        pool, {"first_name": f"U{i}", "last_name": "Test", "email": f"u{i}@example.com",
               "birthday": dt.date(1990, 3, 1 + i % 28),
               "anniversary": dt.date(2015, 6, 1) if anniversary else None,
               "location": "UTC"}, CREATED, 9) for i in range(n)]


async def test_heal_plans_what_is_missing_across_pages_and_nothing_else(
    pool: asyncpg.Pool,
) -> None:
    users = await _users(pool, 7, anniversary=True)
    # Lose the plans of three users (birthday) and one (anniversary).
    await pool.execute("DELETE FROM messages WHERE user_id = ANY($1) AND occasion = 'birthday'",
                       users[:3])
    await pool.execute("DELETE FROM messages WHERE user_id = $1 AND occasion = 'anniversary'",
                       users[6])
    before = await pool.fetch("SELECT user_id, occasion, occasion_date FROM messages")
    assert await greetings.heal(pool, CREATED, 9, page=2) == 4
    after = await pool.fetch("SELECT user_id, occasion, occasion_date, status FROM messages")
    assert len(after) == 14
    assert {r["status"] for r in after} == {"scheduled"}
    assert {tuple(r)[:3] for r in before} <= {tuple(r)[:3] for r in after}
    assert await greetings.heal(pool, CREATED, 9, page=2) == 0


async def test_heal_skips_deleted_users(pool: asyncpg.Pool) -> None:
    users = await _users(pool, 2)
    await pool.execute("DELETE FROM messages")
    assert await greetings.delete_user(pool, users[0], CREATED)  # type: ignore[arg-type]
    assert await greetings.heal(pool, CREATED, 9) == 1
    rows = await pool.fetch("SELECT user_id FROM messages")
    assert [r["user_id"] for r in rows] == [users[1]]


async def test_only_one_replica_heals_at_a_time(pool: asyncpg.Pool) -> None:
    """While another replica holds the heal lock, heal does nothing and says so."""
    users = await _users(pool, 1)
    await pool.execute("DELETE FROM messages")
    async with pool.acquire() as other:
        assert await other.fetchval("SELECT pg_try_advisory_lock($1)", greetings.HEAL_LOCK_KEY)
        assert await greetings.heal(pool, CREATED, 9) is None
        assert await pool.fetchval("SELECT count(*) FROM messages") == 0
        await other.execute("SELECT pg_advisory_unlock($1)", greetings.HEAL_LOCK_KEY)
    assert await greetings.heal(pool, CREATED, 9) == 1
    assert await store.latest_dates(pool, users) != {}  # type: ignore[arg-type]
