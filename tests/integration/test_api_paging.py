"""Keyset paging of GET /users and GET /messages (docs/ARCHITECTURE.md §1): following `next`
visits every item exactly once and ends with `next: null`, also while users are
being created between (and during) page requests; /messages filters by status and
userId, and the filters compose with paging.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import uuid
from collections import Counter
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from birthdayd import clock

UTC = dt.UTC
_serial = itertools.count()


def new_user(**changes: Any) -> dict[str, Any]:
    n = next(_serial)
    return {
        "firstName": f"User{n}",
        "lastName": "Paging",
        "email": f"user{n}-{uuid.uuid4().hex[:8]}@example.com",
        "birthday": f"1990-{n % 12 + 1:02d}-{n % 28 + 1:02d}",
        "location": ("UTC", "Asia/Kathmandu", "America/New_York")[n % 3],
        **changes,
    }


async def create_user(client: TestClient[Any, Any], **changes: Any) -> dict[str, Any]:
    response = await client.post("/user", json=new_user(**changes))
    assert response.status == 201, await response.text()
    created: dict[str, Any] = await response.json()
    return created


async def create_users(client: TestClient[Any, Any], count: int, **changes: Any) -> list[str]:
    return [(await create_user(client, **changes))["id"] for _ in range(count)]


async def get_page(client: TestClient[Any, Any], path: str, limit: int,
                   after: str | None = None, **query: str) -> dict[str, Any]:
    params = {"limit": str(limit), **query}
    if after is not None:
        params["after"] = after
    response = await client.get(path, params=params)
    assert response.status == 200, await response.text()
    page: dict[str, Any] = await response.json()
    assert set(page) == {"items", "next"}
    assert len(page["items"]) <= limit
    return page


async def walk(client: TestClient[Any, Any], path: str, limit: int,
               **query: str) -> tuple[list[dict[str, Any]], int]:
    """Follow `next` to the end: every item, and the number of pages."""
    items: list[dict[str, Any]] = []
    after: str | None = None
    for pages in itertools.count(1):
        page = await get_page(client, path, limit, after, **query)
        items.extend(page["items"])
        if page["next"] is None:
            return items, pages
        assert page["items"], "a page with a cursor must not be empty"
        after = page["next"]
        assert pages < 10_000
    raise AssertionError("unreachable")


async def test_paging_users_by_10_visits_each_of_57_exactly_once(
    client: TestClient[Any, Any],
) -> None:
    ids = await create_users(client, 57)
    items, pages = await walk(client, "/users", 10)
    seen = [item["id"] for item in items]
    assert Counter(seen) == Counter(ids)
    assert pages == 6
    # Each item is a full user, with its schedule.
    assert all(item["schedule"] and item["email"] for item in items)


async def test_the_last_page_has_next_null_and_a_full_last_page_does_too(
    client: TestClient[Any, Any],
) -> None:
    await create_users(client, 20)
    first = await get_page(client, "/users", 10)
    assert first["next"] is not None
    second = await get_page(client, "/users", 10, first["next"])
    assert len(second["items"]) == 10
    assert second["next"] is None
    everything = await get_page(client, "/users", 1000)
    assert len(everything["items"]) == 20
    assert everything["next"] is None


async def test_an_empty_list_has_no_items_and_next_null(client: TestClient[Any, Any]) -> None:
    assert await get_page(client, "/users", 10) == {"items": [], "next": None}
    assert await get_page(client, "/messages", 10) == {"items": [], "next": None}


async def test_paging_with_limit_1_and_the_default_limit(client: TestClient[Any, Any]) -> None:
    ids = await create_users(client, 5)
    items, pages = await walk(client, "/users", 1)
    assert [i["id"] for i in items] == sorted(ids, key=uuid.UUID)
    assert pages == 5
    default = await client.get("/users")
    assert default.status == 200
    assert len((await default.json())["items"]) == 5


async def test_deleted_users_are_not_listed(client: TestClient[Any, Any]) -> None:
    ids = await create_users(client, 12)
    for gone in ids[::3]:
        assert (await client.delete(f"/user/{gone}")).status == 204
    items, _ = await walk(client, "/users", 5)
    assert sorted(i["id"] for i in items) == sorted(set(ids) - set(ids[::3]))


async def test_pages_stay_full_across_a_run_of_deleted_users(
    client: TestClient[Any, Any],
) -> None:
    """A page holds `limit` live users even where deleted ones lie between
    them: the walk steps over the first, the last and a run of seven longer
    than a page, and each page but the last is full."""
    ids = sorted(await create_users(client, 20), key=uuid.UUID)
    gone = {ids[0], ids[-1], *ids[5:12]}
    for user_id in gone:
        assert (await client.delete(f"/user/{user_id}")).status == 204
    after: str | None = None
    sizes: list[int] = []
    seen: list[str] = []
    while True:
        page = await get_page(client, "/users", 3, after)
        sizes.append(len(page["items"]))
        seen.extend(i["id"] for i in page["items"])
        if (after := page["next"]) is None:
            break
    assert seen == [i for i in ids if i not in gone]
    assert sizes == [3, 3, 3, 2]


async def test_the_key_walk_returns_what_a_plain_query_would_across_chunks(
    pool: asyncpg.Pool,
) -> None:
    """live_users_after (the ids of every page of users, and of the daily
    heal's pages) reads users_pkey in chunks of 128: it must answer exactly
    "the next n live ids after the cursor" wherever the cursor and the
    chunks' edges fall, across runs of deleted users longer than a chunk
    (here 300, and 128 exactly), at the first and last id, and past the end."""
    count = 700
    ids = sorted(uuid.uuid4() for _ in range(count))
    # the first and last ids, a chunk's edges, a run of exactly one chunk
    # (130-257) and one of 300 (300-599)
    gone = {0, 1, 127, 128, 129, 699, *range(130, 130 + 128), *range(300, 600)}
    now = dt.datetime(2027, 1, 1, tzinfo=UTC)
    await pool.executemany(
        "INSERT INTO users (id, first_name, last_name, email, birthday, location,"
        " created_at, updated_at, deleted_at) VALUES ($1, 'A', 'B', $2, '1990-01-01', 'UTC',"
        " $3, $3, $4)",
        [(i, f"u{n}@example.com", now, now if n in gone else None)
         for n, i in enumerate(ids)])
    nil = uuid.UUID(int=0)
    cursors = [nil, *ids[::7], *(ids[n] for n in (127, 128, 129, 299, 600, 698, 699)),
               uuid.UUID(int=2**128 - 1)]
    for cursor in cursors:
        for n in (1, 3, 101, 127, 128, 129, 256, 500, 1000):
            got = await pool.fetch("SELECT id FROM live_users_after($1, $2)", cursor, n)
            expected = await pool.fetch(
                "SELECT id FROM users WHERE id > $1 AND deleted_at IS NULL"
                " ORDER BY id LIMIT $2", cursor, n)
            assert [r["id"] for r in got] == [r["id"] for r in expected], (cursor, n)


async def test_a_cursor_of_a_deleted_user_still_continues_the_walk(
    client: TestClient[Any, Any],
) -> None:
    """The cursor is a position, not a live row: deleting the user it names does not
    break the walk (the deleted user was already on the first page)."""
    ids = await create_users(client, 15)
    first = await get_page(client, "/users", 5)
    assert (await client.delete(f"/user/{first['next']}")).status == 204
    after: str | None = first["next"]
    seen = [i["id"] for i in first["items"]]
    while after is not None:
        page = await get_page(client, "/users", 5, after)
        seen.extend(i["id"] for i in page["items"])
        after = page["next"]
    assert Counter(seen) == Counter(ids)


async def test_paging_neither_skips_nor_repeats_under_concurrent_inserts(
    client: TestClient[Any, Any],
) -> None:
    """Users are created between and during page requests (asyncio.gather of inserts and
    the page fetch): every user that existed before paging started appears exactly
    once, and no user appears twice."""
    before = set(await create_users(client, 57))
    seen: list[str] = []
    added: list[str] = []
    after: str | None = None
    for _ in range(1000):
        results = await asyncio.gather(
            get_page(client, "/users", 10, after),
            *(create_user(client) for _ in range(3)),
        )
        page = results[0]
        added.extend(u["id"] for u in results[1:])
        seen.extend(i["id"] for i in page["items"])
        # And some more between two page requests.
        added.extend([(await create_user(client))["id"] for _ in range(2)])
        after = page["next"]
        if after is None:
            break
    counts = Counter(seen)
    assert all(counts[user_id] == 1 for user_id in before), "a pre-existing user was " \
        "skipped or repeated"
    assert max(counts.values()) == 1
    assert set(seen) <= before | set(added)


async def test_paging_messages_visits_each_exactly_once(
    client: TestClient[Any, Any], pool: asyncpg.Pool
) -> None:
    await create_users(client, 30)
    await create_users(client, 27, anniversary="2015-06-20")
    total = await pool.fetchval("SELECT count(*) FROM messages")
    assert total == 57 + 27
    items, pages = await walk(client, "/messages", 10)
    assert len(items) == total
    assert len({i["id"] for i in items}) == total
    assert pages == 9
    assert set(items[0]) == {"id", "userId", "occasion", "date", "sendAt", "status",
                             "attempts", "lastError", "sentAt"}


async def test_messages_filter_by_status_and_user_and_page_through_the_filter(
    client: TestClient[Any, Any], pool: asyncpg.Pool, manual_clock: clock.ManualClock
) -> None:
    manual_clock.set(dt.datetime(2027, 1, 15, 12, 0, tzinfo=UTC))
    ids = await create_users(client, 40, anniversary="2015-06-20")
    # Mark some greetings sent, some failed; delete one user (its greetings cancelled).
    sent_users = ids[:13]
    await pool.execute(
        "UPDATE messages SET status = 'sent', attempts = 1, sent_at = $2 "
        "WHERE user_id = ANY($1::uuid[]) AND occasion = 'birthday'",
        [uuid.UUID(i) for i in sent_users], dt.datetime(2027, 1, 15, 9, tzinfo=UTC))
    await pool.execute(
        "UPDATE messages SET status = 'failed', attempts = 6, last_error = 'HTTP 400' "
        "WHERE user_id = $1 AND occasion = 'anniversary'", uuid.UUID(ids[20]))
    assert (await client.delete(f"/user/{ids[30]}")).status == 204

    sent, pages = await walk(client, "/messages", 4, status="sent")
    assert sorted(m["userId"] for m in sent) == sorted(sent_users)
    assert all(m["status"] == "sent" and m["occasion"] == "birthday" for m in sent)
    assert all(m["sentAt"] == "2027-01-15T09:00:00Z" and m["attempts"] == 1 for m in sent)
    assert pages == 4

    failed, _ = await walk(client, "/messages", 10, status="failed")
    assert [(m["userId"], m["occasion"], m["lastError"]) for m in failed] == [
        (ids[20], "anniversary", "HTTP 400")]

    cancelled, _ = await walk(client, "/messages", 10, status="cancelled")
    assert sorted(m["occasion"] for m in cancelled) == ["anniversary", "birthday"]
    assert {m["userId"] for m in cancelled} == {ids[30]}

    scheduled, _ = await walk(client, "/messages", 7, status="scheduled")
    assert len(scheduled) == 80 - 13 - 1 - 2
    assert all(m["status"] == "scheduled" for m in scheduled)

    for status in ("queued", "sending", "retrying", "expired"):
        assert await get_page(client, "/messages", 10, status=status) == {
            "items": [], "next": None}

    mine, _ = await walk(client, "/messages", 1, userId=ids[5])
    assert sorted((m["occasion"], m["status"]) for m in mine) == [
        ("anniversary", "scheduled"), ("birthday", "sent")]
    assert all(m["userId"] == ids[5] for m in mine)

    both, _ = await walk(client, "/messages", 1, userId=ids[5], status="sent")
    assert [(m["occasion"], m["status"]) for m in both] == [("birthday", "sent")]

    nobody = await get_page(client, "/messages", 10, userId=str(uuid.uuid4()))
    assert nobody == {"items": [], "next": None}


@pytest.mark.parametrize("name", ["status", "userId", "after"])
async def test_an_absent_filter_means_no_filter_and_an_empty_one_is_a_400(
    client: TestClient[Any, Any], name: str
) -> None:
    """The OpenAPI document declares status an enum and userId/after uuids, none of
    which allows "" (an empty value used to be read as no filter)."""
    await create_users(client, 3)
    response = await client.get("/messages")
    assert response.status == 200
    assert len((await response.json())["items"]) == 3
    response = await client.get("/messages", params={name: ""})
    assert response.status == 400
    error = (await response.json())["error"]
    assert (error["code"], list(error["fields"])) == ("validation_error", [name])
