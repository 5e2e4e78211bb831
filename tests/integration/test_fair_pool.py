"""The API's connections go to requests in the order they asked (fair_pool).

The race FairPool closes is a newcomer whose first step is already on the
event loop's ready queue when a connection goes back: in production, a
request whose bytes arrived in the same poll as the answer that freed the
connection.  Real sockets cannot place it there on demand, so the tests
that must see the race happen use a stand-in pool built like asyncpg's (a
``asyncio.LifoQueue`` of connections) and schedule the newcomer exactly
there; a last test runs FairPool over a real asyncpg pool.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, cast

import asyncpg
import pytest

from birthdayd.fair_pool import FairPool

WAITING = 12
SIZE = 2


class Acquirer(Protocol):
    def acquire(self) -> AbstractAsyncContextManager[Any]: ...


class QueuePool:
    """The part of asyncpg's pool that decides who gets a connection: an
    ``asyncio.LifoQueue`` of free connections (asyncpg's is a subclass of
    it), taken with ``get()`` and given back with ``put_nowait()``."""

    def __init__(self, size: int) -> None:
        self._free: asyncio.LifoQueue[int] = asyncio.LifoQueue()
        for conn in range(size):
            self._free.put_nowait(conn)
        self._size = size

    def get_max_size(self) -> int:
        return self._size

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[int]:
        conn = await self._free.get()
        try:
            yield conn
        finally:
            self._free.put_nowait(conn)


@pytest.fixture
async def two(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(database_url, min_size=SIZE, max_size=SIZE) as p:
        yield p


async def _order_of_turns(pool: Acquirer, work: Any) -> list[int]:
    """WAITING requests queue for a pool of SIZE connections.  Each one, as
    it finishes, starts a newcomer (100 + its number) whose first step runs
    before the waiter that its release wakes.  Returns the order in which
    requests got a connection."""
    order: list[int] = []
    newcomers: list[asyncio.Task[None]] = []

    async def request(number: int) -> None:
        async with pool.acquire() as conn:
            order.append(number)
            await work(conn)
            if number < 100:
                newcomers.append(asyncio.create_task(request(100 + number)))

    await asyncio.gather(*(request(n) for n in range(WAITING)))
    await asyncio.gather(*newcomers)
    return order


async def _yield(_: object) -> None:
    await asyncio.sleep(0)


async def _select_one(conn: asyncpg.Connection) -> None:
    await conn.fetchval("SELECT 1")


async def test_a_pool_on_an_asyncio_queue_lets_a_newcomer_cut_in() -> None:
    """Why FairPool exists: a woken waiter finds the connection taken by the
    newcomer and queues again at the back.  The first newcomer cuts in ahead
    of every request still waiting."""
    order = await _order_of_turns(QueuePool(SIZE), _yield)
    assert order[:SIZE + 1] == [0, 1, 100], order
    assert order.index(WAITING - 1) > order.index(100)


async def test_fair_pool_serves_in_arrival_order_where_the_queue_does_not() -> None:
    stand_in = QueuePool(SIZE)
    order = await _order_of_turns(FairPool(cast(asyncpg.Pool, stand_in)), _yield)
    assert order[:WAITING] == list(range(WAITING)), order
    assert sorted(order[WAITING:]) == [100 + n for n in range(WAITING)]


def test_asyncpgs_pool_still_hands_connections_out_through_an_asyncio_queue(
        two: asyncpg.Pool) -> None:
    """The stand-in is only as good as its likeness: should a release of
    asyncpg stop queueing its connections on ``asyncio.Queue``, this fails,
    and whether FairPool is still needed must be looked at again."""
    assert isinstance(two._queue, asyncio.Queue)


async def test_fair_pool_over_asyncpg_serves_in_arrival_order(two: asyncpg.Pool) -> None:
    order = await _order_of_turns(FairPool(two), _select_one)
    assert order[:WAITING] == list(range(WAITING)), order
    assert sorted(order[WAITING:]) == [100 + n for n in range(WAITING)]
