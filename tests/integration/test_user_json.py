"""GET /user/{id} and GET /users get their users as JSON text written by
PostgreSQL (user_json, migration 0009); POST and PUT answer with the api's own
view written by orjson (api.user_view).  A client must not be able to tell the
two apart: the same keys in the same order, strings, dates and instants,
whatever the values and whatever the database session's settings.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg
import orjson
from aiohttp.test_utils import TestClient

from birthdayd import clock, store

UTC = dt.UTC

# Strings JSON must escape or that a careless writer mangles.
NAMES = [
    ('Zoë "the" \\ Ñandú', "O'Brien </script>"),
    ("李 小龍", "emoji 🎂 and \u2028 line separator"),
    ("tab-free", "\u00a0non-breaking\u00a0space"),
]


async def _create(client: TestClient[Any, Any], manual_clock: clock.ManualClock,
                  at: dt.datetime, **fields: Any) -> dict[str, Any]:
    manual_clock.set(at)
    response = await client.post("/user", json=fields)
    assert response.status == 201, await response.text()
    created: dict[str, Any] = await response.json()
    return created


async def _page(client: TestClient[Any, Any]) -> list[dict[str, Any]]:
    response = await client.get("/users", params={"limit": "1000"})
    assert response.status == 200, await response.text()
    assert response.content_type == "application/json"
    page = orjson.loads(await response.read())
    assert page["next"] is None
    items: list[dict[str, Any]] = page["items"]
    return items


async def test_a_page_writes_each_user_as_get_and_post_do(
    client: TestClient[Any, Any], pool: asyncpg.Pool, manual_clock: clock.ManualClock
) -> None:
    created = []
    for n, (first, last) in enumerate(NAMES):
        created.append(await _create(
            client, manual_clock, dt.datetime(2027, 1, 10, 8, 30, tzinfo=UTC),
            firstName=first, lastName=last, email=f"odd{n}@example.com",
            birthday="1990-02-28", location="Asia/Kathmandu"))
    # Instants with and without microseconds; a leap-day birthday and an
    # anniversary (two entries); a year before 1000; a zone east of UTC+9.
    created.append(await _create(
        client, manual_clock, dt.datetime(2027, 3, 1, 12, 0, 0, 7, tzinfo=UTC),
        firstName="Micro", lastName="Second", email="micro@example.com",
        birthday="1992-02-29", anniversary="2015-06-20", location="Pacific/Kiritimati"))
    created.append(await _create(
        client, manual_clock, dt.datetime(2027, 3, 1, 12, 0, 0, 500_000, tzinfo=UTC),
        firstName="Half", lastName="Second", email="half@example.com",
        birthday="0999-12-31", location="America/St_Johns"))
    # And a user with nothing left to send: an empty schedule.
    empty = await _create(
        client, manual_clock, dt.datetime(2027, 3, 2, tzinfo=UTC),
        firstName="Done", lastName="Already", email="done@example.com",
        birthday="1980-07-01", location="UTC")
    await pool.execute("UPDATE messages SET status = 'sent' WHERE user_id = $1", empty["id"])
    empty["schedule"] = []
    created.append(empty)

    # A PUT that moves no greeting (the compare-and-set) and one that does
    # (the locked way) answer with the api's view too.  Back to before the
    # first users' birthday, for the second PUT to move it.
    manual_clock.set(dt.datetime(2027, 1, 11, 0, 0, 1, tzinfo=UTC))
    renamed = await client.put(f"/user/{created[0]['id']}", json={"lastName": 'Ü "2" \\'})
    assert renamed.status == 200, await renamed.text()
    created[0] = await renamed.json()
    moved = await client.put(f"/user/{created[1]['id']}", json={"location": "Pacific/Chatham"})
    assert moved.status == 200, await moved.text()
    created[1] = await moved.json()
    assert created[1]["schedule"][0]["sendAt"] == "2027-02-27T19:15:00Z"

    items = {item["id"]: item for item in await _page(client)}
    assert set(items) == {user["id"] for user in created}
    for user in created:
        got = await client.get(f"/user/{user['id']}")
        assert items[user["id"]] == orjson.loads(await got.read()) == user
        assert list(items[user["id"]]) == list(user)  # the keys' order too

    by_email = {item["email"]: item for item in items.values()}
    assert by_email["micro@example.com"]["createdAt"] == "2027-03-01T12:00:00.000007Z"
    assert by_email["half@example.com"]["updatedAt"] == "2027-03-01T12:00:00.500000Z"
    assert by_email["done@example.com"]["createdAt"] == "2027-03-02T00:00:00Z"
    assert by_email["half@example.com"]["birthday"] == "0999-12-31"
    assert by_email["micro@example.com"]["anniversary"] == "2015-06-20"
    assert by_email["odd0@example.com"]["anniversary"] is None
    assert [e["occasion"] for e in by_email["micro@example.com"]["schedule"]] == [
        "anniversary", "birthday"]
    assert by_email["micro@example.com"]["schedule"][1] == {
        "occasion": "birthday", "date": "2028-02-29", "sendAt": "2028-02-28T19:00:00Z",
        "status": "scheduled"}
    assert by_email["done@example.com"]["schedule"] == []


async def test_the_text_does_not_depend_on_the_sessions_settings(
    client: TestClient[Any, Any], pool: asyncpg.Pool, manual_clock: clock.ManualClock
) -> None:
    """DateStyle, TimeZone and IntervalStyle change how PostgreSQL writes dates
    and instants as text; the JSON must not move with them."""
    for n, zone in enumerate(["Pacific/Kiritimati", "America/Adak", "Asia/Kathmandu"]):
        await _create(client, manual_clock,
                      dt.datetime(2027, 3, 27, 23, 59, 59, n * 250_000, tzinfo=UTC),
                      firstName=f"Zone{n}", lastName="Set", email=f"zone{n}@example.com",
                      birthday=f"198{n}-03-2{n + 7}", anniversary="2001-10-28",
                      location=zone)
    async with pool.acquire() as conn:
        plain = await store.users_page(conn, None, 10)
        async with conn.transaction():
            await conn.execute("SET LOCAL DateStyle = 'SQL, DMY'")
            await conn.execute("SET LOCAL TimeZone = 'Pacific/Chatham'")
            await conn.execute("SET LOCAL IntervalStyle = 'sql_standard'")
            odd = await store.users_page(conn, None, 10)
    assert len(plain) == 3
    assert [row["json"] for row in odd] == [row["json"] for row in plain]
    assert [orjson.loads(row["json"]) for row in plain] == await _page(client)
