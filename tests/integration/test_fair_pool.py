"""The API's connections go to requests in the order they asked (fair_pool)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

import asyncpg
import pytest

from birthdayd.fair_pool import FairPool

WAITING = 12


class Acquirer(Protocol):
    def acquire(self) -> AbstractAsyncContextManager[Any]: ...


@pytest.fixture
async def two(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(database_url, min_size=2, max_size=2) as p:
        yield p


async def _order_of_turns(pool: Acquirer) -> list[int]:
    """WAITING requests queue for a pool of two; each one served lets a
    newcomer (100 + its number) arrive as it hands its connection back: the
    newcomer's first step is ready before the woken waiter's, as when a
    request arrives on the same turn of the event loop as a release.
    Returns the order in which requests got a connection."""
    order: list[int] = []
    newcomers: list[asyncio.Task[None]] = []

    async def request(number: int) -> None:
        async with pool.acquire() as conn:
            order.append(number)
            await conn.fetchval("SELECT 1")
            if number < 100:
                newcomers.append(asyncio.create_task(request(100 + number)))

    await asyncio.gather(*(request(n) for n in range(WAITING)))
    await asyncio.gather(*newcomers)
    return order


async def test_connections_go_in_arrival_order(two: asyncpg.Pool) -> None:
    order = await _order_of_turns(FairPool(two))
    assert order[:WAITING] == list(range(WAITING)), order
    assert sorted(order[WAITING:]) == [100 + n for n in range(WAITING)]


async def test_asyncpgs_own_pool_lets_newcomers_cut_in(two: asyncpg.Pool) -> None:
    """Why FairPool exists: asyncpg's queue serves a newcomer ahead of requests
    that have waited longer.  Should a release of asyncpg make this fail, its
    pool became fair and FairPool can go."""
    order = await _order_of_turns(two)
    assert order[:WAITING] != list(range(WAITING)), order
