"""Hot statements keep their plan without statistics.

PostgreSQL here runs with autovacuum off, like many CI machines and freshly
restored databases: a statement whose good plan needs ANALYZE degrades as the
tables grow. Each statement below is EXPLAINed on tables that grew from empty
and were never analyzed (pg_class still holds what CREATE TABLE and CREATE
INDEX wrote), with 40,000 users, each with a sent greeting and a scheduled
one (as after a year), and must use the index meant for it, never a scan of a
whole table or of every row in one state.  What reads users by key is also
EXPLAINed with 3,000 users: there the planner took users_email_key (a
partial index) to hold about ten rows and read a page of users through its
bitmap, every live user per probe.  (At 3,000 users the tick's statements
may read every pending greeting through a bitmap: a few thousand rows, and
the plan turns to the due index as the table grows, as the 40,000 case shows.)"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import asyncpg
import pytest

from birthdayd import store

UTC = dt.UTC
NOW = dt.datetime(2027, 1, 15, 9, 0, tzinfo=UTC)


async def _grown(pool: asyncpg.Pool, users: int) -> uuid.UUID:
    """Users, each with a sent greeting and a scheduled one; no ANALYZE."""
    await pool.execute("""
        INSERT INTO users (id, first_name, last_name, email, birthday, location,
                           created_at, updated_at)
        SELECT gen_random_uuid(), 'A', 'B', 'u' || g || '@example.com',
               date '1990-01-01' + g % 365, 'UTC', $1, $1
        FROM generate_series(1, $2::integer) g""", NOW, users)
    for status, year in (("sent", 2026), ("scheduled", 2027)):
        await pool.execute("""
            INSERT INTO messages (id, user_id, occasion, occasion_date, send_at, status,
                                  due_at, created_at, updated_at)
            SELECT gen_random_uuid(), id, 'birthday', make_date($2, 1, 1) + spread, $1, $3,
                   $1::timestamptz + spread * interval '1 day', $1, $1
            FROM (SELECT id, abs(hashtext(id::text)) % 365 AS spread FROM users) AS u""",
                           NOW, year, status)
    analyzed = await pool.fetchval(
        "SELECT count(*) FROM pg_stat_user_tables WHERE last_analyze IS NOT NULL "
        "OR last_autoanalyze IS NOT NULL")
    assert analyzed == 0, "the point is a plan without statistics"
    user_id: uuid.UUID = await pool.fetchval("SELECT id FROM users LIMIT 1")
    return user_id


@pytest.fixture
async def big(pool: asyncpg.Pool) -> uuid.UUID:
    return await _grown(pool, 40_000)


@pytest.fixture
async def small(pool: asyncpg.Pool) -> uuid.UUID:
    return await _grown(pool, 3_000)


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", []):
        found += _nodes(child)
    return found


async def _plan(pool: asyncpg.Pool, name: str, *args: Any) -> list[dict[str, Any]]:
    async with pool.acquire() as conn, conn.transaction():
        raw = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {store.Q[name]}", *args)
        await conn.execute("ROLLBACK AND CHAIN")  # EXPLAIN of an UPDATE does not run it
    return _nodes(json.loads(raw)[0]["Plan"])


def _scans(nodes: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(n["Node Type"], n.get("Index Name") or n.get("Relation Name", ""))
            for n in nodes if ("Scan" in n["Node Type"] and "Relation Name" in n)
            or "Index Name" in n}


CASES = [
    pytest.param("user_with_schedule", lambda u: (u,), "messages_pending_by_user",
                 id="PUT-user-answer"),
    pytest.param("user_json", lambda u: (u,), "messages_pending_by_user", id="GET-user"),
    pytest.param("users_page", lambda u: (store.FIRST, 101), "messages_pending_by_user",
                 id="GET-users"),
    pytest.param("latest_dates", lambda u: ([u], ["birthday", "anniversary"]), "messages_once",
                 id="plan-latest-dates"),
    pytest.param("users_page_needs", lambda u: (store.FIRST, 500), "messages_pending_by_user",
                 id="daily-heal-page"),
    pytest.param("claim_due", lambda u: (NOW, 1000, NOW, NOW), "messages_due", id="tick-claim"),
    pytest.param("due_backlog", lambda u: (NOW,), "messages_due", id="tick-backlog"),
    # Only the queued rows: the status index's range for 'queued' is as tight as
    # the leased-rows index, so either (or both) is fine here.
    pytest.param("queued_count", lambda u: (), "messages_leased", id="tick-backpressure",
                 marks=pytest.mark.status_index_ok),
    # The worker's batch statements find their rows by id; claim_calls also
    # locks the users (by id: checked below, never a scan of users).
    pytest.param("start_sending", lambda u: ([u], dt.timedelta(seconds=70), NOW),
                 "messages_pkey", id="worker-start"),
    pytest.param("claim_calls", lambda u: ([u], [1], NOW), "messages_pkey",
                 id="worker-claim-calls"),
    pytest.param("finish_sent", lambda u: ([u], [1], NOW), "messages_pkey",
                 id="worker-sent"),
    pytest.param("recover_stale", lambda u: (NOW, 1000, dt.timedelta(seconds=70)),
                 "messages_leased", id="recovery"),
    pytest.param("list_messages", lambda u: (store.FIRST, 101), "messages_pkey",
                 id="GET-messages"),
    pytest.param("list_messages_by_status", lambda u: ("failed", store.FIRST, 101),
                 "messages_status_id", id="GET-messages-by-status",
                 marks=pytest.mark.status_index_ok),
    pytest.param("list_messages_of_user", lambda u: (u, store.FIRST, 101), "messages_once",
                 id="GET-messages-of-user"),
    pytest.param("list_messages_of_user_by_status", lambda u: (u, "sent", store.FIRST, 101),
                 "messages_once", id="GET-messages-of-user-by-status"),
    pytest.param("delete_user", lambda u: (u, NOW), "messages_pending_by_user",
                 id="DELETE-user"),
    pytest.param("drop_unsent", lambda u: (u, ["birthday"], NOW), "messages_pending_by_user",
                 id="PUT-user"),
    pytest.param("get_user", lambda u: (u,), "users_pkey", id="PUT-user-read"),
    pytest.param("rename_user", lambda u: (u, "A", "B", "new@example.com", "A", "B",
                                           "u1@example.com", dt.date(1990, 1, 2), None, "UTC",
                                           NOW), "messages_pending_by_user",
                 id="PUT-user-rename"),
]


@pytest.mark.parametrize(("name", "args", "index"), CASES)
async def test_a_hot_statement_uses_its_index_without_statistics(
    pool: asyncpg.Pool, big: uuid.UUID, name: str, args: Any, index: str,
    request: pytest.FixtureRequest,
) -> None:
    scans = _scans(await _plan(pool, name, *args(big)))
    assert any(found == index for _, found in scans), scans
    assert ("Seq Scan", "messages") not in scans, scans
    assert ("Seq Scan", "users") not in scans, scans
    # users_email_key (live users only) serves uniqueness: a page read through
    # it is every live user, sorted (the estimate of few live users without
    # statistics); a page walks the key in order instead.
    assert not any(found == "users_email_key" for _, found in scans), scans
    if request.node.get_closest_marker("status_index_ok") is None:
        # The status index walks every row in a state: every scheduled one.
        assert not any(found == "messages_status_id" for _, found in scans), scans


@pytest.mark.parametrize("name", ["users_page", "users_page_needs"])
async def test_a_page_after_a_cursor_stays_bounded_by_the_key_in_a_cached_generic_plan(
    pool: asyncpg.Pool, big: uuid.UUID, name: str
) -> None:
    """After five executions PostgreSQL may switch a prepared statement to a
    generic plan; a "$1 IS NULL OR id > $1" cursor then read the key from the
    start (half the table for a page in the middle).  The cursor must stay an
    index condition."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        await conn.execute(f"PREPARE page AS {store.Q[name]}")
        raw = await conn.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE page('{big}', 100)")
        await conn.execute("DEALLOCATE page")
    users = [n for n in _nodes(json.loads(raw)[0]["Plan"])
             if n.get("Relation Name") == "users"]
    assert any("id >" in n.get("Index Cond", "") for n in users), users
    assert not any("$1" in n.get("Filter", "") for n in users), users


@pytest.mark.parametrize(("name", "args", "index"), [
    ("list_messages", "'{after}', 100", "messages_pkey"),
    ("list_messages_by_status", "'failed', '{after}', 100", "messages_status_id"),
    ("list_messages_of_user", "'{user}', '{after}', 100", "messages_once"),
    ("list_messages_of_user_by_status", "'{user}', 'sent', '{after}', 100", "messages_once"),
])
async def test_the_delivery_log_stays_on_its_index_in_a_cached_generic_plan(
    pool: asyncpg.Pool, big: uuid.UUID, name: str, args: str, index: str
) -> None:
    """GET /messages: each filter has its own statement, so even a generic plan
    (which knows none of the values) reads through the index meant for it:
    a user's few greetings by the user's key, never the whole primary key."""
    values = args.format(user=big, after=uuid.UUID(int=2**127))
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        await conn.execute(f"PREPARE page AS {store.Q[name]}")
        raw = await conn.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE page({values})")
        await conn.execute("DEALLOCATE page")
    nodes = _nodes(json.loads(raw)[0]["Plan"])
    scans = _scans(nodes)
    assert ("Seq Scan", "messages") not in scans, scans
    assert {found for _, found in scans if found != "messages"} == {index}, scans
    # The index bounds the read (a condition on it), not only orders it.
    assert any(n.get("Index Name") == index and n.get("Index Cond") for n in nodes), nodes


@pytest.mark.parametrize("name", ["users_page", "users_page_needs", "user_with_schedule",
                                  "user_json", "delete_user", "lock_user", "get_user"])
@pytest.mark.parametrize("mode", ["force_custom_plan", "force_generic_plan"])
async def test_users_are_read_by_key_on_a_small_database_never_analyzed(
    pool: asyncpg.Pool, small: uuid.UUID, name: str, mode: str
) -> None:
    """Every statement that reads users finds them through users_pkey, and a
    page of 100 costs the same few buffers per user whatever the table holds."""
    args = {"users_page": f"'{store.FIRST}', 101",
            "users_page_needs": f"'{store.FIRST}', 101",
            "delete_user": f"'{small}', '{NOW.isoformat()}'"}.get(name, f"'{small}'")
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(f"SET LOCAL plan_cache_mode = {mode}")
        await conn.execute(f"PREPARE q AS {store.Q[name]}")
        raw = await conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE q({args})")
        await conn.execute("ROLLBACK AND CHAIN")
    plan = json.loads(raw)[0]["Plan"]
    scans = _scans(_nodes(plan))
    assert [found for _, found in scans if found in ("users", "users_email_key")] == [], scans
    assert ("Index Scan", "users_pkey") in scans, scans
    # A page: about 100 users, each a probe of the key, a read of its row and
    # of its pending greetings.  Every live user, as before, is ~8,000.
    assert plan["Shared Hit Blocks"] + plan.get("Shared Read Blocks", 0) < 2_000, plan
