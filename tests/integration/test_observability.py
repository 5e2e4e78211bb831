"""The API's request id and per-route metrics, and e-mail addresses masked in
real log lines, against the test's PostgreSQL database (and RabbitMQ queue)."""

from __future__ import annotations

import datetime as dt
import io
import logging
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from birthdayd import clock as clock_mod
from birthdayd import logs
from tests.integration.conftest import MakeClient
from tests.integration.delivery_helpers import MakePipeline
from tests.integration.test_delivery import ADA_SEND_AT, _ada_due

ADA = {"firstName": "Ada", "lastName": "Lovelace", "birthday": "1990-01-15",
       "location": "Europe/London", "email": "ada@example.com"}


class Captured:
    def __init__(self) -> None:
        self.out = io.StringIO()
        self.handler = logs.handler("json")
        self.handler.setStream(self.out)  # type: ignore[attr-defined]

    def lines(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.out.getvalue().splitlines()]


@pytest.fixture
def captured() -> Iterator[Captured]:
    """What the daemon's JSON handler writes to stdout while the test runs."""
    c = Captured()
    root = logging.getLogger()
    root.addHandler(c.handler)
    try:
        yield c
    finally:
        root.removeHandler(c.handler)


async def test_a_request_gets_an_id_of_its_own_in_the_response(
    client: TestClient[Any, Any],
) -> None:
    ids = []
    for _ in range(3):
        r = await client.get("/health")
        assert r.status == 200
        ids.append(r.headers["X-Request-ID"])
    assert len(set(ids)) == 3 and all(0 < len(i) <= 128 for i in ids)
    r = await client.post("/user", json={"firstName": ""})  # errors carry one too
    assert r.status == 400 and r.headers["X-Request-ID"] not in ids


@pytest.mark.parametrize("given", ["abc-123", "0f8c3f0e-8d8e-4b1e-9a51-2d1b7c1d2e3f",
                                   "x" * 128, "req:42/edge=1"])
async def test_a_sane_incoming_request_id_is_kept(client: TestClient[Any, Any],
                                                 given: str) -> None:
    r = await client.get("/users", headers={"X-Request-ID": given})
    assert r.status == 200
    assert r.headers["X-Request-ID"] == given


@pytest.mark.parametrize("given", ["", "x" * 129, "two words", "tab\there", "caf\u00e9"])
async def test_an_unfit_incoming_request_id_is_replaced(client: TestClient[Any, Any],
                                                       given: str) -> None:
    r = await client.get("/health", headers={"X-Request-ID": given})
    assert r.status == 200
    ours = r.headers["X-Request-ID"]
    assert ours != given and 0 < len(ours) <= 128 and ours.isascii() and " " not in ours


class _BrokenClock(clock_mod.ManualClock):
    def now(self) -> dt.datetime:
        raise RuntimeError("clock unreadable while creating grace@example.com")


async def test_a_log_line_written_during_a_request_carries_its_id_and_masks_addresses(
    make_client: MakeClient, captured: Captured,
) -> None:
    client = await make_client(clock=_BrokenClock(dt.datetime(2027, 1, 1, tzinfo=dt.UTC)))
    r = await client.post("/user", json={**ADA, "email": "grace@example.com"},
                          headers={"X-Request-ID": "trace-77"})
    assert r.status == 500
    assert r.headers["X-Request-ID"] == "trace-77"
    [line] = [e for e in captured.lines() if e.get("event") == "request_failed"]
    assert line["request_id"] == "trace-77"
    assert line["path"] == "/user"
    assert "g***@example.com" in line["exception"]
    assert "grace@example.com" not in captured.out.getvalue()
    # A line written outside any request has no id.
    logging.getLogger("birthdayd.test").warning("outside")
    assert "request_id" not in captured.lines()[-1]


def _http_counts(text: str) -> dict[tuple[str, str, str], float]:
    [family] = [f for f in text_string_to_metric_families(text)
                if f.name == "birthdayd_http_requests"]
    return {(s.labels["route"], s.labels["method"], s.labels["status"]): s.value
            for s in family.samples}


async def test_requests_are_counted_by_route_template_method_and_status(
    client: TestClient[Any, Any],
) -> None:
    before = _http_counts(await (await client.get("/metrics")).text())
    # Each route's usual answer exists at 0 before any request.
    assert before[("/user/{id}", "DELETE", "204")] == 0
    assert before[("/messages/{id}/retry", "POST", "202")] == 0
    r = await client.post("/user", json=ADA)
    user_id = (await r.json())["id"]
    await client.get(f"/user/{user_id}")
    await client.get("/user/6e0b6f0a-0000-7000-8000-000000000000")
    await client.get("/no/such/path")
    after = _http_counts(await (await client.get("/metrics")).text())

    def grew(key: tuple[str, str, str]) -> float:
        return after.get(key, 0) - before.get(key, 0)

    assert grew(("/user", "POST", "201")) == 1
    assert grew(("/user/{id}", "GET", "200")) == 1
    assert grew(("/user/{id}", "GET", "404")) == 1
    assert grew(("unmatched", "GET", "404")) == 1
    assert not [k for k in after if user_id in k[0]], "a raw path became a label"
    text = await (await client.get("/metrics")).text()
    assert 'birthdayd_http_request_duration_seconds_count{method="GET",route="/user/{id}"}' in text


async def test_a_failed_greeting_logs_the_providers_answer_with_the_address_masked(
    make_pipeline: MakePipeline, manual_clock: clock_mod.ManualClock, captured: Captured,
) -> None:
    """A provider that echoes the address in its 4xx answer: the worker's warning
    carries the answer, masked."""
    async def reject(request: web.Request) -> web.Response:
        email = (await request.json())["email"]
        return web.json_response({"error": f"no mailbox {email}"}, status=400)

    app = web.Application()
    app.router.add_post("/send-email", reject)
    p = await make_pipeline(app=app)
    message_id = await _ada_due(p, manual_clock)
    manual_clock.set(ADA_SEND_AT)
    assert await p.scheduler.tick(ADA_SEND_AT) == 1
    failed = await p.wait_status(message_id, "failed")
    assert "@example.com" in failed["last_error"]  # the row keeps the answer whole
    await p.settle(quiet=0.2)
    [line] = [e for e in captured.lines() if e.get("event") == "message_failed"]
    assert line["level"] == "warning"
    assert "no mailbox a***@example.com" in line["message"]
    local_part = failed["last_error"].split("no mailbox ")[1].split("@")[0]
    assert f"{local_part}@" not in captured.out.getvalue()
