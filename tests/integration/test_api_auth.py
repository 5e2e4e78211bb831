"""Bearer-token auth (README, API_TOKEN; docs/ARCHITECTURE.md §1): with API_TOKEN set, /user* and
/messages* need exactly `Authorization: Bearer <token>`; a refusal is a 401 with the
JSON error shape and `WWW-Authenticate: Bearer`, and writes nothing.  /health,
/ready, /metrics and /openapi.json stay open.  Without a token everything is open.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from tests.integration.conftest import MakeClient, count_rows

TOKEN = "s3cret"
GOOD = {"Authorization": f"Bearer {TOKEN}"}
USER = {
    "firstName": "Ada",
    "lastName": "Lovelace",
    "email": "ada@example.com",
    "birthday": "1990-01-15",
    "location": "America/New_York",
}
OPEN_PATHS = ("/health", "/ready", "/metrics", "/openapi.json")


def error_of(payload: Any) -> dict[str, Any]:
    assert set(payload) == {"error"}
    error: dict[str, Any] = payload["error"]
    assert set(error) == {"code", "message", "fields"}
    assert isinstance(error["message"], str)
    assert error["message"]
    return error


async def assert_401(response: Any) -> None:
    assert response.status == 401, await response.text()
    assert response.content_type == "application/json"
    assert response.headers.get("WWW-Authenticate", "").startswith("Bearer")
    assert error_of(await response.json())["code"] == "unauthorized"


@pytest.fixture
async def secured(make_client: MakeClient) -> TestClient[Any, Any]:
    return await make_client(api_token=TOKEN)


async def existing_user(client: TestClient[Any, Any]) -> str:
    response = await client.post("/user", json=USER, headers=GOOD)
    assert response.status == 201
    user_id: str = (await response.json())["id"]
    return user_id


BAD_HEADERS = [
    pytest.param({}, id="no-header"),
    pytest.param({"Authorization": ""}, id="empty"),
    pytest.param({"Authorization": "Bearer wrong"}, id="wrong-token"),
    pytest.param({"Authorization": "Bearer s3cre"}, id="token-prefix"),
    pytest.param({"Authorization": "Bearer s3cret2"}, id="token-plus-suffix"),
    pytest.param({"Authorization": "Bearer S3CRET"}, id="token-wrong-case"),
    pytest.param({"Authorization": "Bearer\ts3cret"}, id="tab"),
    pytest.param({"Authorization": "Bearers3cret"}, id="no-space"),
    pytest.param({"Authorization": "Bearer"}, id="scheme-only"),
    pytest.param({"Authorization": "s3cret"}, id="token-only"),
    pytest.param({"Authorization": "Basic czNjcmV0"}, id="basic"),
    pytest.param({"Authorization": "Token s3cret"}, id="other-scheme"),
    pytest.param({"Authorization": "Bearer s3cret, Bearer s3cret"}, id="twice"),
    pytest.param({"X-Api-Token": TOKEN}, id="other-header"),
]


@pytest.mark.parametrize("authorization", ["bearer s3cret", "BEARER s3cret", "Bearer  s3cret"],
                         ids=["scheme-lowercase", "scheme-uppercase", "two-spaces"])
async def test_the_scheme_is_case_insensitive_and_may_be_followed_by_several_spaces(
    secured: TestClient[Any, Any], authorization: str
) -> None:
    """RFC 9110 §11: the scheme is a case-insensitive token, then 1*SP, then the token."""
    response = await secured.post("/user", json=USER, headers={"Authorization": authorization})
    assert response.status == 201, await response.text()


@pytest.mark.parametrize("headers", BAD_HEADERS)
async def test_a_missing_or_wrong_bearer_token_is_401_and_writes_nothing(
    secured: TestClient[Any, Any], pool: asyncpg.Pool, headers: dict[str, str]
) -> None:
    before = await count_rows(pool)
    await assert_401(await secured.post("/user", json=USER, headers=headers))
    await assert_401(await secured.get("/users", headers=headers))
    assert await count_rows(pool) == before


async def test_every_protected_route_is_401_without_the_token_and_changes_nothing(
    secured: TestClient[Any, Any], pool: asyncpg.Pool
) -> None:
    user_id = await existing_user(secured)
    message_id = await pool.fetchval("SELECT id FROM messages LIMIT 1")
    await pool.execute("UPDATE messages SET status = 'failed'")
    users_before = [dict(r) for r in await pool.fetch("SELECT * FROM users")]
    messages_before = [dict(r) for r in await pool.fetch("SELECT * FROM messages")]
    wrong = {"Authorization": "Bearer nope"}
    for method, path, body in [
        ("POST", "/user", {**USER, "email": "grace@example.com"}),
        ("GET", f"/user/{user_id}", None),
        ("PUT", f"/user/{user_id}", {"firstName": "Augusta"}),
        ("DELETE", f"/user/{user_id}", None),
        ("GET", "/users", None),
        ("GET", "/users?limit=1", None),
        ("GET", "/messages", None),
        ("GET", f"/messages?userId={user_id}", None),
        ("POST", f"/messages/{message_id}/retry", None),
    ]:
        for headers in ({}, wrong):
            response = await secured.request(method, path, json=body, headers=headers)
            await assert_401(response)
    assert [dict(r) for r in await pool.fetch("SELECT * FROM users")] == users_before
    assert [dict(r) for r in await pool.fetch("SELECT * FROM messages")] == messages_before


async def test_the_right_token_is_let_through_on_every_route(
    secured: TestClient[Any, Any], pool: asyncpg.Pool
) -> None:
    created = await secured.post("/user", json=USER, headers=GOOD)
    assert created.status == 201
    user_id = (await created.json())["id"]
    assert (await secured.get(f"/user/{user_id}", headers=GOOD)).status == 200
    assert (await secured.put(f"/user/{user_id}", json={"firstName": "Augusta"},
                              headers=GOOD)).status == 200
    assert (await secured.get("/users", headers=GOOD)).status == 200
    assert (await secured.get("/messages", headers=GOOD)).status == 200
    message_id = await pool.fetchval("SELECT id FROM messages LIMIT 1")
    await pool.execute("UPDATE messages SET status = 'failed' WHERE id = $1", message_id)
    assert (await secured.post(f"/messages/{message_id}/retry", headers=GOOD)).status == 202
    assert (await secured.delete(f"/user/{user_id}", headers=GOOD)).status == 204


async def test_auth_is_checked_before_the_body_is_judged(
    secured: TestClient[Any, Any], pool: asyncpg.Pool
) -> None:
    """An unauthenticated request learns nothing about the body or the id: 401 first."""
    await assert_401(await secured.post("/user", data=b"not json",
                                        headers={"Content-Type": "application/json"}))
    await assert_401(await secured.post("/user", data=b"x=1",
                                        headers={"Content-Type": "text/plain"}))
    await assert_401(await secured.get("/user/not-a-uuid"))
    await assert_401(await secured.get(f"/user/{uuid.uuid4()}"))
    await assert_401(await secured.get("/users?limit=0"))
    assert await count_rows(pool) == (0, 0)


@pytest.mark.parametrize("path", OPEN_PATHS)
async def test_health_ready_metrics_and_openapi_need_no_token(
    secured: TestClient[Any, Any], path: str
) -> None:
    response = await secured.get(path)
    assert response.status == 200, await response.text()
    wrong = await secured.get(path, headers={"Authorization": "Bearer wrong"})
    assert wrong.status == 200


@pytest.mark.parametrize("token", [None, ""], ids=["unset", "empty"])
async def test_without_a_token_everything_is_open(
    make_client: MakeClient, pool: asyncpg.Pool, token: str | None
) -> None:
    client = await make_client(api_token=token)
    created = await client.post("/user", json=USER)
    assert created.status == 201
    user_id = (await created.json())["id"]
    for path in (f"/user/{user_id}", "/users", "/messages", *OPEN_PATHS):
        response = await client.get(path)
        assert response.status == 200, (path, await response.text())
    assert (await client.put(f"/user/{user_id}", json={"lastName": "King"})).status == 200
    # Any Authorization header is ignored when auth is off.
    anything = await client.get("/users", headers={"Authorization": "Bearer whatever"})
    assert anything.status == 200
    assert (await client.delete(f"/user/{user_id}")).status == 204


async def test_a_token_with_non_ascii_characters_works(make_client: MakeClient) -> None:
    client = await make_client(api_token="pässwörd-ключ")
    ok = await client.get("/users", headers={"Authorization": "Bearer pässwörd-ключ"})
    assert ok.status == 200
    await assert_401(await client.get("/users", headers={"Authorization": "Bearer passwort"}))


async def _raw_request(client: TestClient[Any, Any], request: bytes) -> tuple[int, bytes]:
    """Send raw bytes (headers aiohttp's client would refuse to send)."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(request)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, payload = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, payload


@pytest.mark.parametrize("value", [
    pytest.param(b"Bearer \xff\xfe", id="invalid-utf8"),
    pytest.param(b"Bearer s3cr\xc3", id="truncated-utf8"),
])
async def test_an_authorization_header_with_invalid_utf8_is_401_not_500(
    secured: TestClient[Any, Any], value: bytes
) -> None:
    """Bad input never yields a 5xx (docs/ARCHITECTURE.md §1), not even undecodable header bytes."""
    status, payload = await _raw_request(
        secured,
        b"GET /users HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        b"Authorization: " + value + b"\r\n\r\n",
    )
    assert status == 401, payload
    assert b'"unauthorized"' in payload


async def test_the_raw_request_helper_reaches_the_app(secured: TestClient[Any, Any]) -> None:
    """Control for the test above: a well-formed raw request with the token gets 200."""
    status, payload = await _raw_request(
        secured,
        b"GET /users HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        b"Authorization: Bearer s3cret\r\n\r\n",
    )
    assert status == 200, payload
    assert b'"items":[]' in payload


@pytest.mark.parametrize("path", [
    "//users",
    "/users/",
    "/./users",
    "/users/../users",
    "/%75sers",
    "/USERS",
])
async def test_path_variants_do_not_bypass_auth(
    secured: TestClient[Any, Any], path: str
) -> None:
    """Whatever path spelling reaches a protected handler must carry the token;
    a spelling that reaches no handler is a 404 (or a redirect), never data."""
    status, payload = await _raw_request(
        secured,
        f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode(),
    )
    assert status in (401, 404, 301, 308), (status, payload)
    assert b'"items"' not in payload
