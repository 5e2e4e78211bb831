"""fake_email.FakeProvider: the local stand-in for the e-mail API, over loopback.

Same request and answer as the real API, counts of what it accepted (per address
and per Idempotency-Key), and injected faults (500s, hangs, latency).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from birthdayd import fake_email
from birthdayd.fake_email import FakeProvider

MakeClient = Callable[[FakeProvider], Awaitable[TestClient[Any, Any]]]


@pytest.fixture
def make_client(aiohttp_client: Any) -> MakeClient:
    async def make(provider: FakeProvider) -> TestClient[Any, Any]:
        client: TestClient[Any, Any] = await aiohttp_client(provider.app())
        return client

    return make


def _send(client: TestClient[Any, Any], email: str, message: str = "Hey, Ada Lovelace it's your "
          "birthday", key: str | None = "k-1", **kw: Any) -> Any:
    headers = {} if key is None else {"Idempotency-Key": key}
    return client.post("/send-email", json={"email": email, "message": message},
                       headers=headers, **kw)


async def test_send_answers_200_with_status_sent_and_a_utc_sent_time(
    make_client: MakeClient,
) -> None:
    provider = FakeProvider()
    client = await make_client(provider)
    before = dt.datetime.now(dt.UTC)
    response = await _send(client, "ada@example.com")
    after = dt.datetime.now(dt.UTC)
    assert response.status == 200
    assert response.content_type == "application/json"
    body = await response.json()
    assert set(body) == {"status", "sentTime"}
    assert body["status"] == "sent"
    assert body["sentTime"].endswith("Z")
    sent = dt.datetime.fromisoformat(body["sentTime"])
    assert sent.utcoffset() == dt.timedelta(0)
    assert before - dt.timedelta(seconds=1) <= sent <= after + dt.timedelta(seconds=1)
    assert provider.accepted == [{"email": "ada@example.com",
                                  "message": "Hey, Ada Lovelace it's your birthday",
                                  "key": "k-1"}]


async def test_counts_accepted_sends_per_email_and_per_idempotency_key(
    make_client: MakeClient,
) -> None:
    provider = FakeProvider()
    client = await make_client(provider)
    for email, key in [("a@x.io", "k1"), ("a@x.io", "k2"), ("b@x.io", "k3"), ("a@x.io", "k4")]:
        assert (await _send(client, email, key=key)).status == 200
    assert provider.by_email == {"a@x.io": 3, "b@x.io": 1}
    assert provider.by_key == {"k1": 1, "k2": 1, "k3": 1, "k4": 1}
    assert provider.requests == 4
    assert len(provider.accepted) == 4


async def test_a_repeated_idempotency_key_is_answered_the_same_and_not_delivered_again(
    make_client: MakeClient,
) -> None:
    """A provider that honours Idempotency-Key: the replay gets the first answer."""
    provider = FakeProvider()
    client = await make_client(provider)
    first = await _send(client, "a@x.io", key="k1")
    again = await _send(client, "a@x.io", key="k1")
    assert first.status == again.status == 200
    assert await again.read() == await first.read()
    assert provider.requests == 2
    assert provider.replays == 1
    assert provider.by_key == {"k1": 1}
    assert provider.by_email == {"a@x.io": 1}
    assert len(provider.accepted) == 1


async def test_with_honour_keys_false_a_repeated_key_is_delivered_twice(
    make_client: MakeClient,
) -> None:
    provider = FakeProvider(honour_keys=False)
    client = await make_client(provider)
    for _ in range(2):
        assert (await _send(client, "a@x.io", key="k1")).status == 200
    assert provider.replays == 0
    assert provider.by_key == {"k1": 2}
    stats = await (await client.get("/stats")).json()
    assert stats["duplicateKeys"] == {"k1": 2}


async def test_a_key_that_only_failed_before_is_delivered_when_it_succeeds(
    make_client: MakeClient,
) -> None:
    """A 500 accepted nothing, so the retry with the same key is a first delivery."""
    provider = FakeProvider(error_rate=1.0)
    client = await make_client(provider)
    assert (await _send(client, "a@x.io", key="k1")).status == 500
    provider.error_rate = 0.0
    assert (await _send(client, "a@x.io", key="k1")).status == 200
    assert provider.replays == 0
    assert provider.by_key == {"k1": 1}


async def test_stats_reports_requests_accepted_by_email_and_replays(
    make_client: MakeClient,
) -> None:
    provider = FakeProvider()
    client = await make_client(provider)
    await _send(client, "a@x.io", "m1", key="k1")
    await _send(client, "a@x.io", "m2", key="k1")  # a replay
    await _send(client, "b@x.io", "m3", key="k2")
    response = await client.get("/stats")
    assert response.status == 200
    stats = await response.json()
    assert stats["requests"] == 3
    assert stats["errors"] == 0
    assert stats["hangs"] == 0
    assert stats["replays"] == 1
    assert stats["accepted"] == 2
    assert stats["byEmail"] == {"a@x.io": 1, "b@x.io": 1}
    assert stats["duplicateKeys"] == {}
    assert stats["messages"] == [
        {"email": "a@x.io", "message": "m1", "key": "k1"},
        {"email": "b@x.io", "message": "m3", "key": "k2"},
    ]


async def test_sends_without_idempotency_key_are_never_replays(
    make_client: MakeClient,
) -> None:
    provider = FakeProvider()
    client = await make_client(provider)
    assert (await _send(client, "a@x.io", key=None)).status == 200
    assert (await _send(client, "a@x.io", key=None)).status == 200
    assert provider.by_key == {"": 2}
    assert provider.replays == 0


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"",
        b"[1, 2]",
        b'"text"',
        b'{"message": "hi"}',
        b'{"email": "a@x.io"}',
        b'{"email": 1, "message": "hi"}',
        b'{"email": "a@x.io", "message": null}',
    ],
)
async def test_a_bad_body_is_400_and_accepts_nothing(make_client: MakeClient,
                                                      body: bytes) -> None:
    provider = FakeProvider()
    client = await make_client(provider)
    response = await client.post("/send-email", data=body,
                                 headers={"Content-Type": "application/json"})
    assert response.status == 400
    assert "error" in await response.json()
    assert provider.accepted == []
    assert provider.by_email == {}
    assert provider.requests == 1


async def test_error_rate_1_answers_500_and_accepts_nothing(make_client: MakeClient) -> None:
    provider = FakeProvider(error_rate=1.0)
    client = await make_client(provider)
    for _ in range(5):
        response = await _send(client, "a@x.io")
        assert response.status == 500
        assert (await response.json()) == {"error": "injected failure"}
    assert provider.errors == 5
    assert provider.requests == 5
    assert provider.accepted == []
    assert provider.by_key == {}


async def test_error_rate_0_after_1_accepts_again(make_client: MakeClient) -> None:
    provider = FakeProvider(error_rate=1.0)
    client = await make_client(provider)
    assert (await _send(client, "a@x.io")).status == 500
    provider.error_rate = 0.0
    assert (await _send(client, "a@x.io")).status == 200
    assert provider.by_key == {"k-1": 1}


async def test_error_rate_is_a_fraction_of_requests(make_client: MakeClient) -> None:
    provider = FakeProvider(error_rate=0.3, rng=random.Random(42))
    client = await make_client(provider)
    statuses = [(await _send(client, "a@x.io", key=str(i))).status for i in range(200)]
    assert set(statuses) == {200, 500}
    assert 30 <= statuses.count(500) <= 90
    assert provider.errors == statuses.count(500)
    assert len(provider.accepted) == statuses.count(200)


async def test_timeout_rate_1_hangs_without_accepting(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client gives up first; the provider counts a hang and accepts nothing."""
    monkeypatch.setattr(fake_email, "HANG_S", 5.0)
    provider = FakeProvider(timeout_rate=1.0)
    client = await make_client(provider)
    with pytest.raises(asyncio.TimeoutError):
        await _send(client, "a@x.io", timeout=aiohttp.ClientTimeout(total=0.2))
    assert provider.hangs == 1
    assert provider.accepted == []


async def test_a_hang_that_ends_answers_500_never_accepts(
    make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fake_email, "HANG_S", 0.05)
    provider = FakeProvider(timeout_rate=1.0)
    client = await make_client(provider)
    response = await _send(client, "a@x.io")
    assert response.status == 500
    assert provider.hangs == 1
    assert provider.accepted == []


async def test_latency_delays_the_answer(make_client: MakeClient) -> None:
    provider = FakeProvider(latency_ms=150)
    client = await make_client(provider)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert (await _send(client, "a@x.io")).status == 200
    assert loop.time() - started >= 0.14
