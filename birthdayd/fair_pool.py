"""The API's connections, handed out in the order requests asked for them.

asyncpg's pool waits on an ``asyncio.Queue``, which is not first come, first
served: a waiter woken by a release can find that a request which arrived
just now took the connection first (``get()`` then queues it again, at the
back).  Under load a few requests lose that race over and over; in
``make bench-api`` (64 connections, a pool of 10) GET /user/{id} had a p99
ten times its median.  A semaphore with one permit per pooled connection, in
front of the pool, hands permits strictly in arrival order (asyncio's
Semaphore wakes its oldest waiter and lets no newcomer past a queue), and a
request holding a permit finds a connection free, unless another role of
the same process holds one for a moment.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from birthdayd import store


class FairPool:
    """What the API needs of a pool (store.Executor and ``acquire``), in order."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._turns = asyncio.Semaphore(pool.get_max_size())

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[store.Connection]:
        async with self._turns, self.pool.acquire() as conn:
            yield conn

    # ASYNC109: these mirror asyncpg's own signatures (store.Executor).

    async def execute(self, query: str, *args: Any, timeout: float | None = None) -> str:  # noqa: ASYNC109
        async with self._turns:
            return await self.pool.execute(query, *args, timeout=timeout)

    async def fetch(self, query: str, *args: Any, timeout: float | None = None  # noqa: ASYNC109
                    ) -> list[store.Record]:
        async with self._turns:
            return await self.pool.fetch(query, *args, timeout=timeout)

    async def fetchrow(self, query: str, *args: Any, timeout: float | None = None  # noqa: ASYNC109
                       ) -> store.Record | None:
        async with self._turns:
            return await self.pool.fetchrow(query, *args, timeout=timeout)

    async def fetchval(self, query: str, *args: Any, column: int = 0,
                       timeout: float | None = None) -> Any:  # noqa: ASYNC109
        async with self._turns:
            return await self.pool.fetchval(query, *args, column=column, timeout=timeout)
