"""The user API's success paths (docs/ARCHITECTURE.md §1)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from birthdayd import clock

ADA = {
    "firstName": "Ada",
    "lastName": "Lovelace",
    "email": "ada@example.com",
    "birthday": "1990-01-15",
    "location": "America/New_York",
}


async def test_create_returns_the_user_with_its_schedule(
    client: TestClient[Any, Any], manual_clock: clock.ManualClock
) -> None:
    """POST /user → 201, Location, and the next greeting at 09:00 New York time in UTC."""
    manual_clock.set(dt.datetime(2027, 1, 10, tzinfo=dt.UTC))
    response = await client.post("/user", json=ADA)
    assert response.status == 201
    body = await response.json()
    assert response.headers["Location"] == f"/user/{body['id']}"
    assert {k: body[k] for k in ADA} == ADA
    assert body["anniversary"] is None
    assert body["schedule"] == [{"occasion": "birthday", "date": "2027-01-15",
                                 "sendAt": "2027-01-15T14:00:00Z", "status": "scheduled"}]


async def test_get_put_delete_round_trip(
    client: TestClient[Any, Any], pool: asyncpg.Pool, manual_clock: clock.ManualClock
) -> None:
    manual_clock.set(dt.datetime(2027, 1, 10, tzinfo=dt.UTC))
    created = await (await client.post("/user", json=ADA)).json()
    user_id = created["id"]

    got = await client.get(f"/user/{user_id}")
    assert got.status == 200
    assert (await got.json())["schedule"] == created["schedule"]

    put = await client.put(f"/user/{user_id}", json={"location": "Asia/Kathmandu",
                                                       "anniversary": "2015-06-20"})
    assert put.status == 200
    body = await put.json()
    assert body["location"] == "Asia/Kathmandu"
    assert body["firstName"] == "Ada"
    # One entry per occasion, in the order of their names.
    assert body["schedule"] == [
        {"occasion": "anniversary", "date": "2027-06-20", "sendAt": "2027-06-20T03:15:00Z",
         "status": "scheduled"},
        {"occasion": "birthday", "date": "2027-01-15", "sendAt": "2027-01-15T03:15:00Z",
         "status": "scheduled"},
    ]

    deleted = await client.delete(f"/user/{user_id}")
    assert deleted.status == 204
    assert (await client.get(f"/user/{user_id}")).status == 404
    pending = await pool.fetchval(
        "SELECT count(*) FROM messages WHERE status IN ('scheduled','queued','retrying')")
    assert pending == 0
    assert (await client.delete(f"/user/{user_id}")).status == 404


async def test_names_are_trimmed_and_emails_unique_case_insensitively(
    client: TestClient[Any, Any],
) -> None:
    first = await client.post("/user", json={**ADA, "firstName": "  Ada "})
    assert (await first.json())["firstName"] == "Ada"
    again = await client.post("/user", json={**ADA, "email": "ADA@Example.com"})
    assert again.status == 409
    assert (await again.json())["error"]["code"] == "conflict"


async def test_a_deleted_users_email_can_be_used_again(client: TestClient[Any, Any]) -> None:
    first = await (await client.post("/user", json=ADA)).json()
    assert (await client.delete(f"/user/{first['id']}")).status == 204
    assert (await client.post("/user", json=ADA)).status == 201


async def test_health_ready_metrics_openapi(client: TestClient[Any, Any]) -> None:
    assert (await client.get("/health")).status == 200
    ready = await client.get("/ready")
    assert ready.status == 200
    assert (await ready.json())["checks"] == {"postgresql": "ok", "rabbitmq": "ok"}
    metrics = await client.get("/metrics")
    assert metrics.status == 200
    assert "text/plain" in metrics.headers["Content-Type"]
    spec = await (await client.get("/openapi.json")).json()
    assert spec["openapi"].startswith("3.1")
    assert {"/user", "/user/{id}", "/users", "/messages", "/messages/{id}/retry", "/health",
            "/ready", "/metrics", "/openapi.json"} <= set(spec["paths"])


async def test_ready_is_503_when_a_dependency_is_down(make_client: Any) -> None:
    async def down() -> bool:
        raise OSError("connection refused")

    async def ok() -> bool:
        return True

    client = await make_client(ready_checks={"postgresql": ok, "rabbitmq": down})
    response = await client.get("/ready")
    assert response.status == 503
    assert (await response.json())["checks"]["rabbitmq"] == "unavailable"
