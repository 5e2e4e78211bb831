"""Shared fixtures: a migrated PostgreSQL database per test (cloned from a
template migrated once per session), a unique RabbitMQ queue per test, and a
manual clock."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import socket
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Iterator

import aiormq
import asyncpg
import pytest

from birthdayd import clock, migrations

ADMIN_URL = os.environ.get("BIRTHDAYD_TEST_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
RABBITMQ_URL = os.environ.get("BIRTHDAYD_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
TEMPLATE = f"birthdayd_template_{os.getpid()}"


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released): for a server
    to start on, or as a place that refuses connections."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def db_url(name: str) -> str:
    parts = urllib.parse.urlsplit(ADMIN_URL)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def template_db() -> Iterator[str]:
    async def make() -> None:
        await _admin(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)')
        await _admin(f'CREATE DATABASE "{TEMPLATE}"')
        conn = await asyncpg.connect(db_url(TEMPLATE))
        try:
            await migrations.migrate(conn)
        finally:
            await conn.close()

    asyncio.run(make())
    yield TEMPLATE
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)'))


@pytest.fixture
async def database_url(template_db: str) -> AsyncIterator[str]:
    """A fresh, migrated database for this test only."""
    name = f"bdt_{uuid.uuid4().hex[:16]}"
    await _admin(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    yield db_url(name)
    await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(database_url, min_size=1, max_size=10) as p:
        yield p


@pytest.fixture
async def queue_name() -> AsyncIterator[str]:
    """A queue name of this test's own; its queues are deleted afterwards."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield name
    conn = await aiormq.connect(RABBITMQ_URL)
    try:
        channel = await conn.channel()
        for queue in (name, f"{name}.dead"):
            await channel.queue_delete(queue)
        for exchange in (name, f"{name}.dlx"):
            await channel.exchange_delete(exchange)
    finally:
        await conn.close()


@pytest.fixture
def manual_clock() -> clock.ManualClock:
    return clock.ManualClock(dt.datetime(2027, 1, 15, 12, 0, tzinfo=dt.UTC))
