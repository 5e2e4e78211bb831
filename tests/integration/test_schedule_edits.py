"""How edits move greetings (docs/ARCHITECTURE.md §1, PUT/DELETE and When).

A PUT that changes birthday, anniversary or location replaces the greetings still
`scheduled`; greetings in flight or sent stay, and UNIQUE (user, occasion, date)
keeps a second greeting for the same date from being planned.  A user created or
moved onto the day before SEND_HOUR local gets it that day; at or after it, next
year.  DELETE cancels what has not started.

All instants are pinned with the manual clock; expected dates and sendAt values are
worked out by hand in each test.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from birthdayd import clock, store

UTC = dt.UTC


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def user(**changes: Any) -> dict[str, Any]:
    return {
        "firstName": "Ada",
        "lastName": "Lovelace",
        "email": f"ada-{uuid.uuid4().hex[:10]}@example.com",
        "birthday": "1990-01-15",
        "location": "UTC",
        **changes,
    }


def entry(date: str, send_at: str, occasion: str = "birthday",
          status: str = "scheduled") -> dict[str, str]:
    return {"occasion": occasion, "date": date, "sendAt": send_at, "status": status}


async def create(client: TestClient[Any, Any], **changes: Any) -> dict[str, Any]:
    response = await client.post("/user", json=user(**changes))
    assert response.status == 201, await response.text()
    created: dict[str, Any] = await response.json()
    return created


async def get(client: TestClient[Any, Any], user_id: str) -> dict[str, Any]:
    response = await client.get(f"/user/{user_id}")
    assert response.status == 200, await response.text()
    found: dict[str, Any] = await response.json()
    return found


async def put(client: TestClient[Any, Any], user_id: str, **changes: Any) -> dict[str, Any]:
    response = await client.put(f"/user/{user_id}", json=changes)
    assert response.status == 200, await response.text()
    updated: dict[str, Any] = await response.json()
    return updated


def by_occasion(schedule: list[dict[str, str]]) -> list[dict[str, str]]:
    return sorted(schedule, key=lambda e: e["occasion"])


async def rows(pool: asyncpg.Pool, user_id: str) -> list[tuple[str, str, str, str]]:
    """(occasion, date, sendAt, status) of every greeting row of the user."""
    records = await pool.fetch(
        "SELECT occasion, occasion_date, send_at, status FROM messages WHERE user_id = $1 "
        "ORDER BY occasion, occasion_date, status", uuid.UUID(user_id))
    return [(r["occasion"], r["occasion_date"].isoformat(),
             r["send_at"].astimezone(UTC).isoformat().replace("+00:00", "Z"), r["status"])
            for r in records]


async def mark(pool: asyncpg.Pool, user_id: str, date: str, status: str,
               sent_at: dt.datetime | None = None) -> None:
    """Simulate the worker: move the user's greeting for ``date`` to ``status``."""
    result = await pool.execute(
        "UPDATE messages SET status = $3, sent_at = $4, attempts = 1, "
        "lease_until = CASE WHEN $3 IN ('queued', 'sending') THEN $5::timestamptz END "
        "WHERE user_id = $1 AND occasion_date = $2",
        uuid.UUID(user_id), dt.date.fromisoformat(date), status, sent_at,
        dt.datetime(2099, 1, 1, tzinfo=UTC))
    assert result == "UPDATE 1"


# -- created on the day ------------------------------------------------------------


@pytest.mark.parametrize(("now", "expected"), [
    # Kathmandu is UTC+05:45: 09:00 local on 2027-01-15 is 03:15:00Z.
    ("2027-01-15T03:14:59Z", entry("2027-01-15", "2027-01-15T03:15:00Z")),
    ("2027-01-15T03:15:00Z", entry("2028-01-15", "2028-01-15T03:15:00Z")),
    ("2027-01-15T03:15:01Z", entry("2028-01-15", "2028-01-15T03:15:00Z")),
])
async def test_created_on_the_day_before_09_00_local_gets_it_today_at_or_after_next_year(
    client: TestClient[Any, Any], manual_clock: clock.ManualClock,
    now: str, expected: dict[str, str],
) -> None:
    manual_clock.set(at(now))
    created = await create(client, location="Asia/Kathmandu")
    assert created["schedule"] == [expected]


@pytest.mark.parametrize(("location", "now", "expected"), [
    # Sydney is UTC+11 in January: 09:00 local on the 15th is 22:00Z on the 14th.
    ("Australia/Sydney", "2027-01-14T21:30:00Z",
     entry("2027-01-15", "2027-01-14T22:00:00Z")),
    # Auckland is UTC+13 in January: 09:00 local on the 15th is 20:00Z on the 14th.
    ("Pacific/Auckland", "2027-01-14T19:59:59Z",
     entry("2027-01-15", "2027-01-14T20:00:00Z")),
    # Kiritimati is UTC+14: 09:00 local on the 15th is 19:00Z on the 14th.
    ("Pacific/Kiritimati", "2027-01-14T10:00:00Z",
     entry("2027-01-15", "2027-01-14T19:00:00Z")),
    # Tokyo is UTC+9: 09:00 local is midnight UTC, so at 23:00Z it is still to come.
    ("Asia/Tokyo", "2027-01-14T23:00:00Z", entry("2027-01-15", "2027-01-15T00:00:00Z")),
])
async def test_a_user_east_of_utc_plus_9_created_while_the_utc_date_is_the_day_before_gets_it_today(
    client: TestClient[Any, Any], manual_clock: clock.ManualClock,
    location: str, now: str, expected: dict[str, str],
) -> None:
    manual_clock.set(at(now))
    created = await create(client, location=location)
    assert created["schedule"] == [expected]


async def test_the_new_year_in_kiritimati_is_reached_while_utc_is_still_in_the_old_year(
    client: TestClient[Any, Any], manual_clock: clock.ManualClock
) -> None:
    # 2026-12-31T12:00Z is 2027-01-01 02:00 in Kiritimati.
    manual_clock.set(at("2026-12-31T12:00:00Z"))
    created = await create(client, birthday="1990-01-01", location="Pacific/Kiritimati")
    assert created["schedule"] == [entry("2027-01-01", "2026-12-31T19:00:00Z")]


# -- PUT on the day ----------------------------------------------------------------


async def test_a_put_before_09_00_local_on_the_day_plans_the_greeting_for_today(
    client: TestClient[Any, Any], pool: asyncpg.Pool, manual_clock: clock.ManualClock
) -> None:
    manual_clock.set(at("2027-01-10T00:00:00Z"))
    created = await create(client, birthday="1990-03-10")
    assert created["schedule"] == [entry("2027-03-10", "2027-03-10T09:00:00Z")]
    # 12:00Z on the 15th is 07:00 in New York (UTC-5): 09:00 local is still to come.
    manual_clock.set(at("2027-01-15T12:00:00Z"))
    updated = await put(client, created["id"], birthday="1990-01-15",
                        location="America/New_York")
    assert updated["schedule"] == [entry("2027-01-15", "2027-01-15T14:00:00Z")]
    assert await rows(pool, created["id"]) == [
        ("birthday", "2027-01-15", "2027-01-15T14:00:00Z", "scheduled")]


async def test_a_put_after_09_00_local_on_the_day_plans_next_year(
    client: TestClient[Any, Any], pool: asyncpg.Pool, manual_clock: clock.ManualClock
) -> None:
    manual_clock.set(at("2027-01-10T00:00:00Z"))
    created = await create(client, birthday="1990-03-10")
    manual_clock.set(at("2027-01-15T12:00:00Z"))  # 12:00 in UTC: too late today
    updated = await put(client, created["id"], birthday="1990-01-15")
    assert updated["schedule"] == [entry("2028-01-15", "2028-01-15T09:00:00Z")]
    assert await rows(pool, created["id"]) == [
        ("birthday", "2028-01-15", "2028-01-15T09:00:00Z", "scheduled")]


async def test_moving_west_after_todays_greeting_was_sent_does_not_send_it_again(
    client: TestClient[Any, Any], pool: asyncpg.Pool, manual_clock: clock.ManualClock
) -> None:
    """Sent at 09:00Z in UTC; at 12:00Z the user moves to Los Angeles, where it is
    04:00 on the same day.  No second row for 2027-01-15: the next is 2028."""
    manual_clock.set(at("2027-01-10T00:00:00Z"))
    created = await create(client)
    assert created["schedule"] == [entry("2027-01-15", "2027-01-15T09:00:00Z")]
    await mark(pool, created["id"], "2027-01-15", "sent", at("2027-01-15T09:00:02Z"))
    manual_clock.set(at("2027-01-15T12:00:00Z"))
    updated = await put(client, created["id"], location="America/Los_Angeles")
    assert updated["schedule"] == [entry("2028-01-15", "2028-01-15T17:00:00Z")]
    assert await rows(pool, created["id"]) == [
        ("birthday", "2027-01-15", "2027-01-15T09:00:00Z", "sent"),
        ("birthday", "2028-01-15", "2028-01-15T17:00:00Z", "scheduled"),
    ]


@pytest.mark.parametrize("status", ["queued", "sending", "retrying"])
async def test_a_greeting_in_flight_stays_when_the_user_moves_and_no_twin_is_planned(
    client: TestClient[Any, Any], pool: asyncpg.Pool, manual_clock: clock.ManualClock,
    status: str,
) -> None:
    manual_clock.set(at("2027-01-10T00:00:00Z"))
    created = await create(client)
    await mark(pool, created["id"], "2027-01-15", status)
    manual_clock.set(at("2027-01-15T09:00:30Z"))
    updated = await put(client, created["id"], location="America/Los_Angeles")
    # The greeting in flight is still the next one not yet sent.
    assert updated["schedule"] == [entry("2027-01-15", "2027-01-15T09:00:00Z",
                                         status=status)]
    assert await rows(pool, created["id"]) == [
        ("birthday", "2027-01-15", "2027-01-15T09:00:00Z", status),
        ("birthday", "2028-01-15", "2028-01-15T17:00:00Z", "scheduled"),
    ]


# -- across the date line -------------------------------------------------------------


async def test_moving_from_kiritimati_to_pago_pago_and_back_before_the_greeting(
    client: TestClient[Any, Any], pool: asyncpg.Pool, manual_clock: clock.ManualClock
) -> None:
    """At 2027-01-15T12:00Z it is 01:00 on the 15th in Pago Pago (UTC-11) and 02:00 on
    the 16th in Kiritimati (UTC+14): a 16 January birthday is owed in both."""
    manual_clock.set(at("2027-01-15T12:00:00Z"))
    created = await create(client, birthday="1990-01-16", location="Pacific/Kiritimati")
    assert created["schedule"] == [entry("2027-01-16", "2027-01-15T19:00:00Z")]

    west = await put(client, created["id"], location="Pacific/Pago_Pago")
    assert west["schedule"] == [entry("2027-01-16", "2027-01-16T20:00:00Z")]
    assert await rows(pool, created["id"]) == [
        ("birthday", "2027-01-16", "2027-01-16T20:00:00Z", "scheduled")]

    east = await put(client, created["id"], location="Pacific/Kiritimati")
    assert east["schedule"] == [entry("2027-01-16", "2027-01-15T19:00:00Z")]
    assert await rows(pool, created["id"]) == [
        ("birthday", "2027-01-16", "2027-01-15T19:00:00Z", "scheduled")]


async def test_moving_east_across_the_date_line_past_09_00_plans_next_year(
    client: TestClient[Any, Any], pool: asyncpg.Pool, manual_clock: clock.ManualClock
) -> None:
    """A 15 January birthday in Pago Pago, at 01:00 local on the day.  In Kiritimati
    it is already 02:00 on the 16th: its 15 January 09:00 has passed, so next year."""
    manual_clock.set(at("2027-01-15T12:00:00Z"))
    created = await create(client, location="Pacific/Pago_Pago")
    assert created["schedule"] == [entry("2027-01-15", "2027-01-15T20:00:00Z")]
    moved = await put(client, created["id"], location="Pacific/Kiritimati")
    assert moved["schedule"] == [entry("2028-01-15", "2028-01-14T19:00:00Z")]
    assert await rows(pool, created["id"]) == [
        ("birthday", "2028-01-15", "2028-01-14T19:00:00Z", "scheduled")]


async def test_moving_west_across_the_date_line_after_the_greeting_was_sent(
    client: TestClient[Any, Any], pool: asyncpg.Pool, manual_clock: clock.ManualClock
) -> None:
    """Sent at 09:00 on the 16th in Kiritimati (19:00Z on the 15th).  At 20:00Z the
    user moves to Etc/GMT+12 (UTC-12), where it is 08:00 on the 15th: the 16th there
    is still ahead, but that date was already greeted: nothing more until 2028."""
    manual_clock.set(at("2027-01-15T12:00:00Z"))
    created = await create(client, birthday="1990-01-16", location="Pacific/Kiritimati")
    await mark(pool, created["id"], "2027-01-16", "sent", at("2027-01-15T19:00:01Z"))
    manual_clock.set(at("2027-01-15T20:00:00Z"))
    moved = await put(client, created["id"], location="Etc/GMT+12")
    assert moved["schedule"] == [entry("2028-01-16", "2028-01-16T21:00:00Z")]
    assert await rows(pool, created["id"]) == [
        ("birthday", "2027-01-16", "2027-01-15T19:00:00Z", "sent"),
        ("birthday", "2028-01-16", "2028-01-16T21:00:00Z", "scheduled"),
    ]


async def test_moving_west_across_the_date_line_before_the_greeting_keeps_the_same_date(
    client: TestClient[Any, Any], pool: asyncpg.Pool, manual_clock: clock.ManualClock
) -> None:
    """Not yet sent (it is 08:00 on the 16th in Kiritimati): moving to Etc/GMT+12
    (UTC-12) delays the same date's greeting by 26 hours."""
    manual_clock.set(at("2027-01-15T18:00:00Z"))
    created = await create(client, birthday="1990-01-16", location="Pacific/Kiritimati")
    assert created["schedule"] == [entry("2027-01-16", "2027-01-15T19:00:00Z")]
    moved = await put(client, created["id"], location="Etc/GMT+12")
    assert moved["schedule"] == [entry("2027-01-16", "2027-01-16T21:00:00Z")]
    assert await rows(pool, created["id"]) == [
        ("birthday", "2027-01-16", "2027-01-16T21:00:00Z", "scheduled")]


# -- changing the dates ------------------------------------------------------------------


async def test_changing_the_birthday_moves_the_scheduled_row(
    client: TestClient[Any, Any], pool: asyncpg.Pool, manual_clock: clock.ManualClock
) -> None:
    manual_clock.set(at("2027-01-15T12:00:00Z"))
    created = await create(client, birthday="1990-03-10", location="Asia/Kathmandu")
    assert created["schedule"] == [entry("2027-03-10", "2027-03-10T03:15:00Z")]
    updated = await put(client, created["id"], birthday="1990-06-01")
    assert updated["schedule"] == [entry("2027-06-01", "2027-06-01T03:15:00Z")]
    assert await rows(pool, created["id"]) == [
        ("birthday", "2027-06-01", "2027-06-01T03:15:00Z", "scheduled")]


async def test_changing_the_birthday_after_this_years_was_sent_plans_the_next_one(
    client: TestClient[Any, Any], pool: asyncpg.Pool, manual_clock: clock.ManualClock
) -> None:
    """This year's 10 January greeting was sent; the birthday is corrected to 1 June:
    the next greeting is 1 June this year, and the sent row stays."""
    manual_clock.set(at("2027-01-01T00:00:00Z"))
    created = await create(client, birthday="1990-01-10")
    await mark(pool, created["id"], "2027-01-10", "sent", at("2027-01-10T09:00:00Z"))
    manual_clock.set(at("2027-01-15T12:00:00Z"))
    updated = await put(client, created["id"], birthday="1990-06-01")
    assert updated["schedule"] == [entry("2027-06-01", "2027-06-01T09:00:00Z")]
    assert await rows(pool, created["id"]) == [
        ("birthday", "2027-01-10", "2027-01-10T09:00:00Z", "sent"),
        ("birthday", "2027-06-01", "2027-06-01T09:00:00Z", "scheduled"),
    ]


async def test_a_change_of_name_or_email_leaves_the_greetings_untouched(
    client: TestClient[Any, Any], pool: asyncpg.Pool, manual_clock: clock.ManualClock
) -> None:
    manual_clock.set(at("2027-01-15T12:00:00Z"))
    created = await create(client, anniversary="2015-06-20")
    before = [dict(r) for r in await pool.fetch("SELECT * FROM messages ORDER BY id")]
    updated = await put(client, created["id"], firstName="Augusta", email="aal@example.com")
    assert by_occasion(updated["schedule"]) == by_occasion(created["schedule"])
    assert [dict(r) for r in await pool.fetch("SELECT * FROM messages ORDER BY id")] == before


async def test_adding_an_anniversary_plans_it(
    client: TestClient[Any, Any], pool: asyncpg.Pool, manual_clock: clock.ManualClock
) -> None:
    manual_clock.set(at("2027-01-15T12:00:00Z"))
    created = await create(client, location="Asia/Kathmandu")
    updated = await put(client, created["id"], anniversary="2015-06-20")
    assert by_occasion(updated["schedule"]) == [
        entry("2027-06-20", "2027-06-20T03:15:00Z", occasion="anniversary"),
        entry("2028-01-15", "2028-01-15T03:15:00Z"),
    ]


@pytest.mark.parametrize("now", [
    pytest.param("2027-01-15T09:00:30Z", id="scheduler-not-yet-ticked"),
    pytest.param("2027-01-16T08:00:00Z", id="after-a-day-of-downtime"),
])
async def test_editing_the_anniversary_keeps_a_birthday_greeting_that_is_due_but_not_sent(
    client: TestClient[Any, Any], pool: asyncpg.Pool, manual_clock: clock.ManualClock,
    now: str,
) -> None:
    """The birthday greeting's time (09:00Z) has passed but the scheduler has not
    claimed it yet (its next tick, or birthdayd was down): it is owed and must be sent
    up to MAX_LATENESS late (§1.4).  Adding an anniversary does not change the birthday
    or the zone, so it must not cost the user today's birthday greeting."""
    manual_clock.set(at("2027-01-10T00:00:00Z"))
    created = await create(client)
    assert created["schedule"] == [entry("2027-01-15", "2027-01-15T09:00:00Z")]
    manual_clock.set(at(now))
    updated = await put(client, created["id"], anniversary="2015-06-20")
    assert by_occasion(updated["schedule"]) == [
        entry("2027-06-20", "2027-06-20T09:00:00Z", occasion="anniversary"),
        entry("2027-01-15", "2027-01-15T09:00:00Z"),
    ]


async def test_removing_the_anniversary_drops_its_scheduled_row(
    client: TestClient[Any, Any], pool: asyncpg.Pool, manual_clock: clock.ManualClock
) -> None:
    manual_clock.set(at("2027-01-15T12:00:00Z"))
    created = await create(client, birthday="1990-03-10", anniversary="2015-06-20")
    assert by_occasion(created["schedule"]) == [
        entry("2027-06-20", "2027-06-20T09:00:00Z", occasion="anniversary"),
        entry("2027-03-10", "2027-03-10T09:00:00Z"),
    ]
    updated = await put(client, created["id"], anniversary=None)
    assert updated["anniversary"] is None
    assert updated["schedule"] == [entry("2027-03-10", "2027-03-10T09:00:00Z")]
    assert await rows(pool, created["id"]) == [
        ("birthday", "2027-03-10", "2027-03-10T09:00:00Z", "scheduled")]


async def test_changing_the_anniversary_keeps_a_sent_one_and_plans_the_new_date(
    client: TestClient[Any, Any], pool: asyncpg.Pool, manual_clock: clock.ManualClock
) -> None:
    manual_clock.set(at("2027-01-01T00:00:00Z"))
    created = await create(client, birthday="1990-03-10", anniversary="2015-01-05")
    await mark(pool, created["id"], "2027-01-05", "sent", at("2027-01-05T09:00:00Z"))
    manual_clock.set(at("2027-01-15T12:00:00Z"))
    updated = await put(client, created["id"], anniversary="2015-01-20")
    assert by_occasion(updated["schedule"]) == [
        entry("2027-01-20", "2027-01-20T09:00:00Z", occasion="anniversary"),
        entry("2027-03-10", "2027-03-10T09:00:00Z"),
    ]


# -- DELETE ---------------------------------------------------------------------------------


async def test_delete_leaves_no_greeting_scheduled_queued_or_retrying(
    client: TestClient[Any, Any], pool: asyncpg.Pool, manual_clock: clock.ManualClock
) -> None:
    manual_clock.set(at("2027-01-01T00:00:00Z"))
    first = await create(client, anniversary="2015-06-20")
    second = await create(client, birthday="1990-01-05", anniversary="2015-03-01")
    third = await create(client, birthday="1990-02-01")
    await mark(pool, first["id"], "2027-01-15", "queued")
    await mark(pool, first["id"], "2027-06-20", "retrying")
    await mark(pool, second["id"], "2027-01-05", "sent", at("2027-01-05T09:00:00Z"))

    for doomed in (first, second, third):
        assert (await client.delete(f"/user/{doomed['id']}")).status == 204
    assert await pool.fetchval(
        "SELECT count(*) FROM messages WHERE status IN ('scheduled', 'queued', 'retrying')"
    ) == 0
    # What was done stays done; the rest is cancelled, and kept for the delivery log.
    assert await rows(pool, second["id"]) == [
        ("anniversary", "2027-03-01", "2027-03-01T09:00:00Z", "cancelled"),
        ("birthday", "2027-01-05", "2027-01-05T09:00:00Z", "sent"),
    ]
    assert {r[3] for r in await rows(pool, first["id"])} == {"cancelled"}
    assert len(await rows(pool, first["id"])) == 2


async def test_a_deleted_user_can_be_recreated_and_is_planned_afresh(
    client: TestClient[Any, Any], pool: asyncpg.Pool, manual_clock: clock.ManualClock
) -> None:
    manual_clock.set(at("2027-01-10T00:00:00Z"))
    created = await create(client, email="ada@example.com")
    assert (await client.delete(f"/user/{created['id']}")).status == 204
    again = await create(client, email="ada@example.com")
    assert again["schedule"] == [entry("2027-01-15", "2027-01-15T09:00:00Z")]
    assert await pool.fetchval(
        "SELECT count(*) FROM messages WHERE status = 'scheduled'") == 1


async def test_a_rename_applies_only_to_the_row_it_read(
    client: TestClient[Any, Any], pool: asyncpg.Pool, manual_clock: clock.ManualClock
) -> None:
    """store.rename_user (a PUT's one-statement way) is a compare-and-set: a
    row changed since the read is left alone (None), and the PUT then takes
    the locked way; a row as read is renamed and comes back with its schedule."""
    manual_clock.set(at("2027-01-15T12:00:00Z"))
    created = await create(client)
    read = await store.get_user(pool, uuid.UUID(created["id"]))
    assert read is not None
    await put(client, created["id"], birthday="1990-03-01")  # the row moves on
    fields = {**dict(read), "first_name": "Augusta"}
    assert await store.rename_user(pool, read, fields, manual_clock.now()) is None
    assert (await get(client, created["id"]))["firstName"] == "Ada"
    fresh = await store.get_user(pool, uuid.UUID(created["id"]))
    assert fresh is not None
    renamed = await store.rename_user(pool, fresh, {**dict(fresh), "first_name": "Augusta"},
                                      manual_clock.now())
    assert renamed is not None
    assert renamed["first_name"] == "Augusta"
    assert list(renamed["dates"]) == [dt.date(2027, 3, 1)]


@pytest.mark.parametrize("rounds", [20])
async def test_concurrent_edits_of_different_fields_all_survive(
    client: TestClient[Any, Any], manual_clock: clock.ManualClock, rounds: int
) -> None:
    """A rename, a new e-mail and a move of the birthday sent at once, again
    and again: every one lands, whichever way each PUT takes, and the
    schedule follows the last birthday."""
    manual_clock.set(at("2027-01-15T12:00:00Z"))
    created = await create(client)
    for n in range(rounds):
        day = f"1990-{n % 12 + 1:02d}-{n % 27 + 1:02d}"
        await asyncio.gather(
            put(client, created["id"], firstName=f"Ada{n}"),
            put(client, created["id"], email=f"ada{n}-{created['id'][:8]}@example.com"),
            put(client, created["id"], lastName=f"L{n}", birthday=day),
        )
        now = await get(client, created["id"])
        assert (now["firstName"], now["lastName"], now["birthday"]) == (f"Ada{n}", f"L{n}", day)
        assert now["email"] == f"ada{n}-{created['id'][:8]}@example.com"
        assert [e["date"][5:] for e in now["schedule"]] == [day[5:]]
