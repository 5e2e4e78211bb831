"""Bad input on the HTTP API (docs/ARCHITECTURE.md §1): the exact 4xx, a JSON error naming the
offending field, and nothing written; plus the edge cases that must be accepted.

Every rejected request is checked against the database: POST /user must leave the
row counts unchanged, and PUT /user/{id} must leave the stored user row and its
greetings exactly as they were.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from birthdayd import clock
from tests.integration.conftest import count_rows

UTC = dt.UTC
JSON = {"Content-Type": "application/json"}
MAX_BODY = 64 * 1024

VALID: dict[str, Any] = {
    "firstName": "Ada",
    "lastName": "Lovelace",
    "email": "ada@example.com",
    "birthday": "1990-01-15",
    "location": "America/New_York",
}
REQUIRED = ("firstName", "lastName", "email", "birthday", "location")
ALL_FIELDS = (*REQUIRED, "anniversary")


def body(**changes: Any) -> dict[str, Any]:
    return {**VALID, **changes}


def without(key: str) -> dict[str, Any]:
    return {k: v for k, v in VALID.items() if k != key}


def error_of(payload: Any) -> dict[str, Any]:
    """The error object, after checking the documented shape."""
    assert isinstance(payload, dict)
    assert set(payload) == {"error"}
    error: dict[str, Any] = payload["error"]
    assert set(error) == {"code", "message", "fields"}
    assert isinstance(error["code"], str)
    assert isinstance(error["message"], str)
    assert error["message"]
    assert isinstance(error["fields"], dict)
    return error


# -- the bad bodies -------------------------------------------------------------
# Each case: (JSON value or raw bytes, the field the error must name).

WRONG_TYPES = [
    pytest.param(body(**{field: value}), field, id=f"{field}-{label}")
    for field in ALL_FIELDS
    for label, value in (("number", 42), ("null", None), ("list", ["x"]),
                         ("object", {"x": 1}), ("bool", True))
    if not (field == "anniversary" and value is None)  # null is a valid anniversary
]

MISSING = [pytest.param(without(field), field, id=f"missing-{field}") for field in REQUIRED]

BAD_VALUES = [
    # names
    pytest.param(body(firstName=""), "firstName", id="firstName-empty"),
    pytest.param(body(firstName="   "), "firstName", id="firstName-spaces"),
    pytest.param(body(lastName="\t\n "), "lastName", id="lastName-whitespace"),
    pytest.param(body(firstName="A" * 101), "firstName", id="firstName-101-chars"),
    pytest.param(body(lastName="L" * 101), "lastName", id="lastName-101-chars"),
    pytest.param(body(firstName="Ad\u0000a"), "firstName", id="firstName-NUL"),
    pytest.param(body(lastName="Love\u0007lace"), "lastName", id="lastName-BEL"),
    pytest.param(body(lastName="Love\u007flace"), "lastName", id="lastName-DEL"),
    pytest.param(body(firstName="Ad\u0085a"), "firstName", id="firstName-C1-NEL"),
    # emails
    pytest.param(body(email="ada.example.com"), "email", id="email-no-at"),
    pytest.param(body(email="ada@@example.com"), "email", id="email-double-at"),
    pytest.param(body(email="a@b@example.com"), "email", id="email-two-ats"),
    pytest.param(body(email="ada lovelace@example.com"), "email", id="email-space"),
    pytest.param(body(email="ada@example"), "email", id="email-no-dot-in-domain"),
    pytest.param(body(email=""), "email", id="email-empty"),
    pytest.param(body(email="ada@example."), "email", id="email-trailing-dot"),
    pytest.param(body(email="a" * 243 + "@example.com"), "email", id="email-255-chars"),
    pytest.param(body(email="ada\u0000@example.com"), "email", id="email-NUL"),
    # dates
    pytest.param(body(birthday="1990-02-30"), "birthday", id="birthday-feb-30"),
    pytest.param(body(birthday="1990-13-01"), "birthday", id="birthday-month-13"),
    pytest.param(body(birthday="1990-02-29"), "birthday", id="birthday-feb-29-common-year"),
    pytest.param(body(birthday="19900101"), "birthday", id="birthday-basic-format"),
    pytest.param(body(birthday="1990-1-5"), "birthday", id="birthday-single-digits"),
    pytest.param(body(birthday=""), "birthday", id="birthday-empty"),
    pytest.param(body(birthday="1990/01/15"), "birthday", id="birthday-slashes"),
    pytest.param(body(birthday="15-01-1990"), "birthday", id="birthday-day-first"),
    pytest.param(body(birthday="1990-01-15T00:00:00"), "birthday", id="birthday-datetime"),
    pytest.param(body(birthday="0000-01-01"), "birthday", id="birthday-year-zero"),
    pytest.param(body(birthday="1990-01-15\n"), "birthday", id="birthday-trailing-newline"),
    pytest.param(body(birthday="\u0661\u0669\u0669\u0660-\u0660\u0661-\u0661\u0665"),
                 "birthday", id="birthday-arabic-indic-digits"),
    pytest.param(body(birthday="2027-01-16", location="UTC"), "birthday",
                 id="birthday-tomorrow-in-UTC"),
    pytest.param(body(birthday="9999-12-31"), "birthday", id="birthday-far-future"),
    pytest.param(body(anniversary="2015-02-30"), "anniversary", id="anniversary-feb-30"),
    pytest.param(body(anniversary="2015-6-20"), "anniversary", id="anniversary-single-digit"),
    pytest.param(body(anniversary=""), "anniversary", id="anniversary-empty"),
    pytest.param(body(anniversary="2027-01-16", location="UTC"), "anniversary",
                 id="anniversary-tomorrow-in-UTC"),
    # zones
    pytest.param(body(location="Mars/Olympus"), "location", id="location-Mars"),
    pytest.param(body(location="america/new_york"), "location", id="location-lowercase"),
    pytest.param(body(location="EST5EDT "), "location", id="location-trailing-space"),
    pytest.param(body(location=" UTC"), "location", id="location-leading-space"),
    pytest.param(body(location=""), "location", id="location-empty"),
    pytest.param(body(location="+05:00"), "location", id="location-offset"),
    pytest.param(body(location="UTC+5"), "location", id="location-utc-plus"),
    pytest.param(body(location="../../etc/passwd"), "location", id="location-path"),
    pytest.param(body(location="America/New_York\u0000"), "location", id="location-NUL"),
    # unknown fields
    pytest.param(body(nickname="Ada"), "nickname", id="unknown-field"),
    pytest.param(body(FirstName="Ada"), "FirstName", id="unknown-field-wrong-case"),
]

NOT_AN_OBJECT = [
    pytest.param([VALID], "body", id="json-array"),
    pytest.param("Ada Lovelace", "body", id="json-string"),
    pytest.param(42, "body", id="json-number"),
    pytest.param(None, "body", id="json-null"),
    pytest.param(b'{"firstName": "Ada",', "body", id="invalid-json"),
    pytest.param(b"", "body", id="empty-body"),
    pytest.param(b'{"firstName": "Ad\xff\xfea"}', "body", id="invalid-utf8"),
    pytest.param(b'{"firstName": "\\ud800"}', "body", id="lone-surrogate-escape"),
    pytest.param(b"\xef\xbb\xbf" + orjson.dumps(VALID), "body", id="utf8-bom"),
    pytest.param(b"{'firstName': 'Ada'}", "body", id="single-quotes"),
    pytest.param(b'{"birthday": 1e400}', "body", id="number-overflow"),
]

BAD_FOR_POST = MISSING + WRONG_TYPES + BAD_VALUES + NOT_AN_OBJECT


def encode(value: Any) -> bytes:
    return value if isinstance(value, bytes) else orjson.dumps(value)


async def user_row(pool: asyncpg.Pool, user_id: str) -> dict[str, Any]:
    row = await pool.fetchrow("SELECT * FROM users WHERE id = $1", uuid.UUID(user_id))
    assert row is not None
    return dict(row)


async def message_rows(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    return [dict(r) for r in await pool.fetch("SELECT * FROM messages ORDER BY id")]


async def create(client: TestClient[Any, Any], **changes: Any) -> dict[str, Any]:
    response = await client.post("/user", json=body(**changes))
    assert response.status == 201, await response.text()
    created: dict[str, Any] = await response.json()
    return created


def test_there_are_at_least_45_distinct_bad_inputs() -> None:
    """The suite below really covers the breadth it claims."""
    ids = [p.id for p in BAD_FOR_POST]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 45


async def _check_post(client: TestClient[Any, Any], pool: asyncpg.Pool, payload: Any,
                      field: str) -> None:
    before = await count_rows(pool)
    response = await client.post("/user", data=encode(payload), headers=JSON)
    assert response.status == 400, await response.text()
    assert response.content_type == "application/json"
    error = error_of(await response.json())
    assert error["code"] == "validation_error"
    assert field in error["fields"], error
    assert await count_rows(pool) == before


async def _check_put(client: TestClient[Any, Any], pool: asyncpg.Pool, user_id: str,
                     payload: Any, field: str) -> None:
    row_before = await user_row(pool, user_id)
    messages_before = await message_rows(pool)
    response = await client.put(f"/user/{user_id}", data=encode(payload), headers=JSON)
    assert response.status == 400, await response.text()
    error = error_of(await response.json())
    assert error["code"] == "validation_error"
    assert field in error["fields"], error
    assert await user_row(pool, user_id) == row_before
    assert await message_rows(pool) == messages_before


@pytest.mark.parametrize(("payload", "field"), BAD_FOR_POST)
async def test_bad_input_is_400_naming_the_field_and_writes_nothing(
    client: TestClient[Any, Any], pool: asyncpg.Pool, subtests: Any, payload: Any, field: str
) -> None:
    """POST /user with the bad body: 400 naming the field, row counts unchanged.
    PUT /user/{id} with it (unless the case is a missing field, which a PUT may
    omit): 400 naming the field, the user row and its greetings unchanged."""
    user = await create(client, email="someone.else@example.com", anniversary="2015-06-20")
    with subtests.test(msg="POST /user"):
        await _check_post(client, pool, payload, field)
    if not (isinstance(payload, dict) and set(REQUIRED) - set(payload)):
        with subtests.test(msg="PUT /user/{id}"):
            await _check_put(client, pool, user["id"], payload, field)


async def test_one_bad_field_in_a_put_with_good_fields_changes_nothing(
    client: TestClient[Any, Any], pool: asyncpg.Pool
) -> None:
    """A PUT is all or nothing: the good fields beside a bad one are not applied."""
    user = await create(client)
    row_before = await user_row(pool, user["id"])
    messages_before = await message_rows(pool)
    response = await client.put(f"/user/{user['id']}", json={
        "firstName": "Augusta", "location": "Asia/Kathmandu", "birthday": "1990-02-30"})
    assert response.status == 400
    error = error_of(await response.json())
    assert set(error["fields"]) == {"birthday"}
    assert await user_row(pool, user["id"]) == row_before
    assert await message_rows(pool) == messages_before


async def test_every_bad_field_is_reported_at_once(client: TestClient[Any, Any]) -> None:
    response = await client.post("/user", json={
        "firstName": "", "lastName": 3, "email": "nope", "birthday": "1990-02-30",
        "location": "Mars/Olympus", "anniversary": "x", "extra": 1})
    assert response.status == 400
    error = error_of(await response.json())
    assert set(error["fields"]) == {*ALL_FIELDS, "extra"}
    assert all(isinstance(v, str) and v for v in error["fields"].values())


async def test_an_email_taken_case_insensitively_is_409_on_put_and_changes_nothing(
    client: TestClient[Any, Any], pool: asyncpg.Pool
) -> None:
    await create(client)
    other = await create(client, email="grace@example.com")
    row_before = await user_row(pool, other["id"])
    response = await client.put(f"/user/{other['id']}", json={"email": "ADA@example.COM"})
    assert response.status == 409
    error = error_of(await response.json())
    assert error["code"] == "conflict"
    assert "email" in error["fields"]
    assert await user_row(pool, other["id"]) == row_before


async def test_an_email_taken_is_409_on_post_and_writes_nothing(
    client: TestClient[Any, Any], pool: asyncpg.Pool
) -> None:
    await create(client)
    before = await count_rows(pool)
    response = await client.post("/user", json=body(email=" Ada@Example.com "))
    assert response.status == 409
    error = error_of(await response.json())
    assert error["code"] == "conflict"
    assert "email" in error["fields"]
    assert await count_rows(pool) == before


async def test_concurrent_posts_with_one_email_give_one_201_and_409s_never_a_5xx(
    client: TestClient[Any, Any], pool: asyncpg.Pool
) -> None:
    responses = await asyncio.gather(*(
        client.post("/user", json=body(email=email))
        for email in ("race@example.com", "RACE@example.com", "Race@Example.com",
                      "race@EXAMPLE.com", "race@example.COM")))
    assert sorted(r.status for r in responses) == [201, 409, 409, 409, 409]
    assert await count_rows(pool) == (1, 1)


# -- "today" is the user's own today ---------------------------------------------


@pytest.mark.parametrize(
    ("location", "birthday", "status"),
    [
        # 2027-01-15T12:00Z is already 2027-01-16 02:00 in Kiritimati (UTC+14) ...
        ("Pacific/Kiritimati", "2027-01-16", 201),
        ("Pacific/Kiritimati", "2027-01-17", 400),
        # ... still 2027-01-15 in UTC, and 01:00 on 2027-01-15 in Pago Pago (UTC-11).
        ("UTC", "2027-01-16", 400),
        ("UTC", "2027-01-15", 201),
        ("Pacific/Pago_Pago", "2027-01-16", 400),
        ("Pacific/Pago_Pago", "2027-01-15", 201),
        ("Etc/GMT+12", "2027-01-15", 201),
    ],
)
async def test_a_birthday_is_in_the_future_only_after_today_in_the_users_zone(
    client: TestClient[Any, Any], pool: asyncpg.Pool, manual_clock: clock.ManualClock,
    location: str, birthday: str, status: int,
) -> None:
    manual_clock.set(dt.datetime(2027, 1, 15, 12, 0, tzinfo=UTC))
    before = await count_rows(pool)
    response = await client.post("/user", json=body(location=location, birthday=birthday))
    assert response.status == status, await response.text()
    if status == 400:
        error = error_of(await response.json())
        assert set(error["fields"]) == {"birthday"}
        assert await count_rows(pool) == before
    else:
        assert (await response.json())["birthday"] == birthday


async def test_an_anniversary_today_in_the_users_zone_is_accepted_and_tomorrow_is_not(
    client: TestClient[Any, Any], manual_clock: clock.ManualClock
) -> None:
    manual_clock.set(dt.datetime(2027, 1, 15, 12, 0, tzinfo=UTC))
    ok = await client.post("/user", json=body(location="Pacific/Kiritimati",
                                              anniversary="2027-01-16"))
    assert ok.status == 201
    late = await client.post("/user", json=body(email="b@example.com", location="UTC",
                                                anniversary="2027-01-16"))
    assert late.status == 400
    assert set(error_of(await late.json())["fields"]) == {"anniversary"}


async def test_moving_a_user_to_a_zone_where_the_stored_birthday_is_tomorrow_is_rejected(
    client: TestClient[Any, Any], pool: asyncpg.Pool, manual_clock: clock.ManualClock
) -> None:
    """A PUT is checked against the resulting user: a birthday of "today" in Kiritimati
    is tomorrow in UTC, so moving that user to UTC must be refused and change nothing."""
    manual_clock.set(dt.datetime(2027, 1, 15, 12, 0, tzinfo=UTC))
    user = await create(client, location="Pacific/Kiritimati", birthday="2027-01-16")
    row_before = await user_row(pool, user["id"])
    response = await client.put(f"/user/{user['id']}", json={"location": "UTC"})
    assert response.status == 400
    assert "birthday" in error_of(await response.json())["fields"]
    assert await user_row(pool, user["id"]) == row_before


# -- other statuses --------------------------------------------------------------


def _padded(size: int) -> bytes:
    """A valid user body padded with JSON whitespace to exactly ``size`` bytes."""
    raw = orjson.dumps(VALID)
    assert len(raw) < size
    return raw[:-1] + b" " * (size - len(raw)) + b"}"


async def _chunks(total: int, size: int = 4096) -> AsyncIterator[bytes]:
    raw = _padded(total)
    for start in range(0, len(raw), size):
        yield raw[start:start + size]


async def test_a_body_of_exactly_64_kib_is_accepted(client: TestClient[Any, Any]) -> None:
    response = await client.post("/user", data=_padded(MAX_BODY), headers=JSON)
    assert response.status == 201, await response.text()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_body_over_64_kib_is_413_and_writes_nothing(
    client: TestClient[Any, Any], pool: asyncpg.Pool, chunked: bool
) -> None:
    before = await count_rows(pool)
    data: Any = _chunks(MAX_BODY + 1) if chunked else _padded(MAX_BODY + 1)
    response = await client.post("/user", data=data, headers=JSON)
    assert response.status == 413
    error = error_of(await response.json())
    assert error["code"] == "payload_too_large"
    assert await count_rows(pool) == before


@pytest.mark.parametrize("method", ["POST", "PUT"])
async def test_a_body_that_is_not_what_its_content_encoding_says_is_400_and_writes_nothing(
    client: TestClient[Any, Any], pool: asyncpg.Pool, method: str
) -> None:
    user = await create(client)
    before = await count_rows(pool)
    row_before = await user_row(pool, user["id"])
    body = orjson.dumps({"firstName": "Bo", "lastName": "Lee", "email": "bo@example.com",
                         "birthday": "1990-01-15", "location": "UTC"})
    path = "/user" if method == "POST" else f"/user/{user['id']}"
    response = await client.request(method, path, data=body,
                                    headers={**JSON, "Content-Encoding": "gzip"})
    assert response.status == 400
    error = error_of(await response.json())
    assert error["code"] == "validation_error"
    assert set(error["fields"]) == {"body"}
    assert await count_rows(pool) == before
    assert await user_row(pool, user["id"]) == row_before


async def test_a_gzip_encoded_body_is_decoded(client: TestClient[Any, Any]) -> None:
    body = gzip.compress(orjson.dumps({"firstName": "Bo", "lastName": "Lee",
                                       "email": "bo@example.com", "birthday": "1990-01-15",
                                       "location": "UTC"}))
    response = await client.post("/user", data=body, headers={**JSON, "Content-Encoding": "gzip"})
    assert response.status == 201, await response.text()
    assert (await response.json())["firstName"] == "Bo"


async def test_a_small_chunked_body_is_accepted(client: TestClient[Any, Any]) -> None:
    response = await client.post("/user", data=_chunks(2000, size=100), headers=JSON)
    assert response.status == 201, await response.text()


async def test_a_put_over_64_kib_is_413_and_changes_nothing(
    client: TestClient[Any, Any], pool: asyncpg.Pool
) -> None:
    user = await create(client)
    row_before = await user_row(pool, user["id"])
    response = await client.put(f"/user/{user['id']}", data=_chunks(MAX_BODY + 1),
                                headers=JSON)
    assert response.status == 413
    assert error_of(await response.json())["code"] == "payload_too_large"
    assert await user_row(pool, user["id"]) == row_before


@pytest.mark.parametrize("content_type", [
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/xml",
    "text/json",
])
async def test_a_non_json_content_type_is_415_and_writes_nothing(
    client: TestClient[Any, Any], pool: asyncpg.Pool, content_type: str
) -> None:
    before = await count_rows(pool)
    response = await client.post("/user", data=orjson.dumps(VALID),
                                 headers={"Content-Type": content_type})
    assert response.status == 415
    assert error_of(await response.json())["code"] == "unsupported_media_type"
    assert await count_rows(pool) == before


async def test_a_put_with_a_non_json_content_type_is_415_and_changes_nothing(
    client: TestClient[Any, Any], pool: asyncpg.Pool
) -> None:
    user = await create(client)
    row_before = await user_row(pool, user["id"])
    response = await client.put(f"/user/{user['id']}", data=b"firstName=Augusta",
                                headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status == 415
    assert error_of(await response.json())["code"] == "unsupported_media_type"
    assert await user_row(pool, user["id"]) == row_before


@pytest.mark.parametrize("content_type", [
    "application/json; charset=utf-8",
    "application/json;charset=UTF-8",
    "Application/JSON",
])
async def test_json_content_types_with_parameters_are_accepted(
    client: TestClient[Any, Any], content_type: str
) -> None:
    response = await client.post("/user", data=orjson.dumps(VALID),
                                 headers={"Content-Type": content_type})
    assert response.status == 201, await response.text()


@pytest.mark.parametrize("user_id", ["not-a-uuid", "123", "0" * 33, "%00"])
async def test_put_get_delete_with_a_non_uuid_id_is_404(
    client: TestClient[Any, Any], pool: asyncpg.Pool, user_id: str
) -> None:
    before = await count_rows(pool)
    for response in (
        await client.put(f"/user/{user_id}", json={"firstName": "X"}),
        await client.get(f"/user/{user_id}"),
        await client.delete(f"/user/{user_id}"),
    ):
        assert response.status == 404
        assert error_of(await response.json())["code"] == "not_found"
    assert await count_rows(pool) == before


async def test_a_user_id_is_read_in_its_usual_form_only_either_case(
    client: TestClient[Any, Any], pool: asyncpg.Pool
) -> None:
    """The path takes the id as the query parameters do (8-4-4-4-12 hex digits):
    the other forms uuid.UUID() would read (no hyphens, braces, a URN) are 404."""
    user = await create(client)
    text = user["id"]
    response = await client.get(f"/user/{text.upper()}")
    assert response.status == 200
    assert (await response.json())["id"] == text
    before = await count_rows(pool)
    for other in (text.replace("-", ""), "{" + text + "}", f"urn:uuid:{text}"):
        for response in (await client.get(f"/user/{other}"),
                         await client.put(f"/user/{other}", json={"firstName": "X"}),
                         await client.delete(f"/user/{other}"),
                         await client.post(f"/messages/{other}/retry")):
            assert response.status == 404, other
            assert error_of(await response.json())["code"] == "not_found"
    assert await count_rows(pool) == before
    assert (await client.get(f"/user/{text}")).status == 200


async def test_put_to_a_missing_user_is_404_and_writes_nothing(
    client: TestClient[Any, Any], pool: asyncpg.Pool
) -> None:
    await create(client)
    before = await count_rows(pool)
    response = await client.put(f"/user/{uuid.uuid4()}", json=VALID)
    assert response.status == 404
    assert error_of(await response.json())["code"] == "not_found"
    assert await count_rows(pool) == before


async def test_put_to_a_deleted_user_is_404(client: TestClient[Any, Any]) -> None:
    user = await create(client)
    assert (await client.delete(f"/user/{user['id']}")).status == 204
    response = await client.put(f"/user/{user['id']}", json={"firstName": "Back"})
    assert response.status == 404


@pytest.mark.parametrize(("method", "path"), [
    ("PATCH", "/user/{id}"),
    ("POST", "/user/{id}"),
    ("DELETE", "/users"),
    ("PUT", "/user"),
    ("GET", "/user"),
    ("DELETE", "/messages"),
])
async def test_a_method_a_route_does_not_have_is_405_with_a_json_error(
    client: TestClient[Any, Any], pool: asyncpg.Pool, method: str, path: str
) -> None:
    user = await create(client)
    before = await count_rows(pool)
    response = await client.request(method, path.format(id=user["id"]),
                                    json={"firstName": "Augusta"})
    assert response.status == 405
    assert response.content_type == "application/json"
    error = error_of(await response.json())
    assert error["code"] == "method_not_allowed"
    assert "Allow" in response.headers
    assert await count_rows(pool) == before
    assert (await (await client.get(f"/user/{user['id']}")).json())["firstName"] == "Ada"


async def test_an_unknown_path_is_404_with_a_json_error(client: TestClient[Any, Any]) -> None:
    response = await client.get("/nowhere")
    assert response.status == 404
    assert error_of(await response.json())["code"] == "not_found"


# -- query strings ---------------------------------------------------------------

BAD_QUERIES = [
    pytest.param("/users?limit=0", "limit", id="users-limit-0"),
    pytest.param("/users?limit=1001", "limit", id="users-limit-1001"),
    pytest.param("/users?limit=-1", "limit", id="users-limit-negative"),
    pytest.param("/users?limit=abc", "limit", id="users-limit-text"),
    pytest.param("/users?limit=1.5", "limit", id="users-limit-fraction"),
    pytest.param("/users?limit=", "limit", id="users-limit-empty"),
    pytest.param("/users?limit=%EF%BC%95", "limit", id="users-limit-fullwidth-digit"),
    pytest.param("/users?limit=" + "1" * 4301, "limit", id="users-limit-4301-digits"),
    pytest.param("/users?after=not-a-uuid", "after", id="users-after-not-uuid"),
    pytest.param("/users?after=123", "after", id="users-after-number"),
    pytest.param("/messages?limit=0", "limit", id="messages-limit-0"),
    pytest.param("/messages?limit=100000", "limit", id="messages-limit-huge"),
    pytest.param("/messages?after=zzz", "after", id="messages-after-not-uuid"),
    pytest.param("/messages?status=bogus", "status", id="messages-status-unknown"),
    pytest.param("/messages?status=SENT", "status", id="messages-status-uppercase"),
    pytest.param("/messages?userId=42", "userId", id="messages-userId-not-uuid"),
    pytest.param("/messages?userId=" + "f" * 31, "userId", id="messages-userId-short-hex"),
    # Present but empty: the OpenAPI document declares each as a uuid, an integer or
    # an enum without "", so an empty value is as bad as any other (it used to be a 200).
    pytest.param("/users?after=", "after", id="users-after-empty"),
    pytest.param("/messages?after=", "after", id="messages-after-empty"),
    pytest.param("/messages?userId=", "userId", id="messages-userId-empty"),
    pytest.param("/messages?status=", "status", id="messages-status-empty"),
    pytest.param("/messages?limit=", "limit", id="messages-limit-empty"),
    # uuid.UUID() reads these too, but `format: uuid` is the hyphenated form only.
    pytest.param("/users?after=" + "a" * 32, "after", id="users-after-no-hyphens"),
    pytest.param("/users?after={" + str(uuid.UUID(int=1)) + "}", "after", id="users-after-braces"),
    pytest.param("/messages?userId=urn:uuid:" + str(uuid.UUID(int=1)), "userId",
                 id="messages-userId-urn"),
    pytest.param("/messages?userId=" + str(uuid.UUID(int=1)) + "%0A", "userId",
                 id="messages-userId-trailing-newline"),
]


@pytest.mark.parametrize(("path", "field"), BAD_QUERIES)
async def test_a_bad_query_string_is_400_naming_the_parameter(
    client: TestClient[Any, Any], pool: asyncpg.Pool, path: str, field: str
) -> None:
    await create(client)
    before = await count_rows(pool)
    response = await client.get(path)
    assert response.status == 400, await response.text()
    error = error_of(await response.json())
    assert error["code"] == "validation_error"
    assert field in error["fields"], error
    assert await count_rows(pool) == before


@pytest.mark.parametrize(("path", "field"), [
    ("/users?after=", "after"),
    ("/messages?after=", "after"),
    ("/messages?userId=", "userId"),
])
async def test_an_empty_uuid_parameter_is_exactly_the_documented_error(
    client: TestClient[Any, Any], path: str, field: str
) -> None:
    response = await client.get(path)
    assert response.status == 400
    assert await response.json() == {"error": {
        "code": "validation_error", "message": "The request is not valid.",
        "fields": {field: "must be a uuid"}}}


async def test_a_uuid_parameter_in_upper_case_is_accepted(
    client: TestClient[Any, Any],
) -> None:
    user = await create(client)
    upper = user["id"].upper()
    response = await client.get(f"/messages?userId={upper}")
    assert response.status == 200, await response.text()
    assert [m["userId"] for m in (await response.json())["items"]] == [user["id"]]
    response = await client.get(f"/users?after={upper}")
    assert response.status == 200, await response.text()


async def test_every_bad_query_parameter_is_reported_at_once(
    client: TestClient[Any, Any],
) -> None:
    response = await client.get("/messages?limit=0&after=x&status=nope&userId=y")
    assert response.status == 400
    assert set(error_of(await response.json())["fields"]) == {"limit", "after", "status",
                                                              "userId"}


# -- accepted edge cases ---------------------------------------------------------


@pytest.mark.parametrize("location", [
    "UTC",
    "Etc/GMT+12",
    "America/Argentina/Buenos_Aires",
    "America/Port-au-Prince",
    "Asia/Kathmandu",
    "Pacific/Kiritimati",
    "Australia/Lord_Howe",
])
async def test_every_iana_zone_name_is_accepted(
    client: TestClient[Any, Any], location: str
) -> None:
    response = await client.post("/user", json=body(location=location))
    assert response.status == 201, await response.text()
    created = await response.json()
    assert created["location"] == location
    assert [e["occasion"] for e in created["schedule"]] == ["birthday"]


@pytest.mark.parametrize(("first", "last"), [
    ("A" * 100, "L" * 100),
    ("Zoë", "李"),
    ("José María", "O'Brien-Smith"),
    ("👩‍🔬", "Ångström"),
    ("A", "B"),
])
async def test_names_of_1_to_100_characters_in_any_script_are_accepted(
    client: TestClient[Any, Any], first: str, last: str
) -> None:
    response = await client.post("/user", json=body(firstName=first, lastName=last))
    assert response.status == 201, await response.text()
    created = await response.json()
    assert (created["firstName"], created["lastName"]) == (first, last)
    got = await (await client.get(f"/user/{created['id']}")).json()
    assert (got["firstName"], got["lastName"]) == (first, last)


async def test_names_are_trimmed_before_the_length_check(client: TestClient[Any, Any]) -> None:
    response = await client.post("/user", json=body(firstName="  " + "A" * 100 + "  "))
    assert response.status == 201
    assert (await response.json())["firstName"] == "A" * 100


async def test_an_email_of_254_characters_is_accepted(client: TestClient[Any, Any]) -> None:
    email = "a" * 242 + "@example.com"
    assert len(email) == 254
    response = await client.post("/user", json=body(email=email))
    assert response.status == 201


async def test_a_29_february_birthday_falls_on_28_february_in_a_common_year(
    client: TestClient[Any, Any], manual_clock: clock.ManualClock
) -> None:
    manual_clock.set(dt.datetime(2027, 1, 15, 12, 0, tzinfo=UTC))
    response = await client.post("/user", json=body(birthday="1992-02-29", location="UTC"))
    assert response.status == 201
    created = await response.json()
    assert created["birthday"] == "1992-02-29"
    assert created["schedule"] == [{"occasion": "birthday", "date": "2027-02-28",
                                    "sendAt": "2027-02-28T09:00:00Z", "status": "scheduled"}]


async def test_a_birthday_today_is_accepted(
    client: TestClient[Any, Any], manual_clock: clock.ManualClock
) -> None:
    manual_clock.set(dt.datetime(2027, 1, 15, 12, 0, tzinfo=UTC))
    response = await client.post("/user", json=body(birthday="2027-01-15", location="UTC"))
    assert response.status == 201
    created = await response.json()
    assert created["schedule"][0]["date"] == "2028-01-15"


async def test_read_only_fields_in_a_body_are_ignored(client: TestClient[Any, Any]) -> None:
    planted = str(uuid.uuid4())
    response = await client.post("/user", json=body(
        id=planted, schedule=[], createdAt="1970-01-01T00:00:00Z", updatedAt="x"))
    assert response.status == 201
    created = await response.json()
    assert created["id"] != planted
    assert created["schedule"]
    assert created["createdAt"] != "1970-01-01T00:00:00Z"
    put = await client.put(f"/user/{created['id']}", json={**created, "firstName": "Augusta"})
    assert put.status == 200, await put.text()
    updated = await put.json()
    assert updated["id"] == created["id"]
    assert updated["firstName"] == "Augusta"


async def test_a_null_anniversary_is_accepted(client: TestClient[Any, Any]) -> None:
    response = await client.post("/user", json=body(anniversary=None))
    assert response.status == 201
    assert (await response.json())["anniversary"] is None


async def test_a_post_without_content_type_is_read_as_json(client: TestClient[Any, Any]) -> None:
    response = await client.post("/user", data=orjson.dumps(VALID),
                                 skip_auto_headers=["Content-Type"])
    assert response.status == 201


# -- no input yields a 5xx -----------------------------------------------------------

_TEXT = st.text(st.characters(codec="utf-8"), max_size=30)
_SCALARS = (st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
            | st.floats(allow_nan=False, allow_infinity=False) | _TEXT)
_JSON = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(_TEXT, inner, max_size=3), max_leaves=6)
_PLAUSIBLE = {
    "firstName": st.sampled_from(["Ada", " Zoë ", "A" * 100, "A" * 101, "\u2028", "李"]),
    "lastName": st.sampled_from(["Lovelace", "", "\x00", "L"]),
    "email": st.sampled_from(["ada@example.com", "ADA@EXAMPLE.COM", "x@y", "a@b.co",
                              "é@ü.de"]),
    "birthday": st.sampled_from(["1990-01-15", "1992-02-29", "2027-01-15", "2027-01-16",
                                 "0001-01-01", "9999-12-31", "1990-02-30", "19900115"]),
    "location": st.sampled_from(["UTC", "Pacific/Kiritimati", "Etc/GMT+12", "Factory",
                                 "America/New_York", "Mars/Olympus", "localtime"]),
    "anniversary": st.sampled_from([None, "2015-06-20", "0001-01-01", "2015-02-29"]),
}
_KEYS = st.sampled_from([*ALL_FIELDS, "id", "schedule", "createdAt", "extra"])
_BODIES = (
    st.fixed_dictionaries({}, optional={k: v | _JSON for k, v in _PLAUSIBLE.items()})
    | st.dictionaries(_KEYS, _JSON, max_size=7)
    | _JSON
)


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(payload=_BODIES)
async def test_no_json_body_yields_a_5xx(
    client: TestClient[Any, Any], pool: asyncpg.Pool, payload: Any
) -> None:
    """Random JSON (objects with the user keys and random or plausible values, and
    non-objects) sent to POST and PUT: always a 2xx or a 4xx, never a 5xx."""
    target = await pool.fetchval("SELECT id FROM users WHERE deleted_at IS NULL LIMIT 1")
    if target is None:
        target = (await create(client, email=f"{uuid.uuid4().hex}@example.com"))["id"]
    raw = orjson.dumps(payload)
    post = await client.post("/user", data=raw, headers=JSON)
    assert post.status < 500, (payload, await post.text())
    put = await client.put(f"/user/{target}", data=raw, headers=JSON)
    assert put.status < 500, (payload, await put.text())
