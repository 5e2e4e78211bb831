"""The API under test, served by aiohttp's test server on the test's database."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from birthdayd import api, clock, fake_email, retry
from birthdayd import config as config_mod
from tests.integration.delivery_helpers import (
    FAST,
    MakePipeline,
    Pipeline,
    Recorder,
    never_opening_breaker,
    provider_ignoring_keys,
)

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


@pytest.fixture
async def make_pipeline(
    pool: asyncpg.Pool, queue_name: str, manual_clock: clock.ManualClock,
    aiohttp_server: Any,
) -> AsyncIterator[MakePipeline]:
    """Build and start a pipeline; keywords choose the provider, worker config,
    breaker, clock, and whether the worker consumes yet."""
    made: list[Pipeline] = []

    async def make(
        *,
        provider: fake_email.FakeProvider | None = None,
        app: web.Application | None = None,
        config: config_mod.WorkerConfig = FAST,
        breaker: retry.Breaker | None = None,
        clock: clock.Clock | None = None,
        worker: bool = True,
        batch: int = 1000,
    ) -> Pipeline:
        the_clock = clock or manual_clock
        recorder = Recorder(the_clock)
        if app is None:
            app = (provider or provider_ignoring_keys()).app()
        app.middlewares.append(recorder.middleware)
        server = await aiohttp_server(app)
        pipeline = Pipeline(
            pool, the_clock, queue_name, str(server.make_url("/send-email")), recorder,
            config, breaker or never_opening_breaker(),
            config_mod.SchedulerConfig(batch=batch),
        )
        made.append(pipeline)
        await pipeline.start(worker=worker)
        return pipeline

    yield make
    for pipeline in reversed(made):
        await pipeline.stop()
