"""The API under test, served by aiohttp's test server on the test's database."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from birthdayd import api, clock

MakeClient = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
def make_client(
    aiohttp_client: Any, pool: asyncpg.Pool, manual_clock: clock.ManualClock
) -> MakeClient:
    """Build a client; keyword arguments override fields of api.Deps."""

    async def make(**overrides: Any) -> TestClient[Any, Any]:
        async def ok() -> bool:
            return True

        deps = api.Deps(pool=pool, clock=manual_clock, send_hour=9,
                        ready_checks={"postgresql": ok, "rabbitmq": ok})
        client: TestClient[Any, Any] = await aiohttp_client(
            api.create_app(dataclasses.replace(deps, **overrides)))
        return client

    return make


@pytest.fixture
async def client(make_client: MakeClient) -> TestClient[Any, Any]:
    return await make_client()


async def count_rows(pool: asyncpg.Pool) -> tuple[int, int]:
    users = await pool.fetchval("SELECT count(*) FROM users")
    messages = await pool.fetchval("SELECT count(*) FROM messages")
    return users, messages
