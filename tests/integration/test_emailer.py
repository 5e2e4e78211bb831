"""The provider's client against real sockets: which failures are no attempt
(nothing can have reached the provider) and which are answers."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiohttp import web

from birthdayd import emailer as emailer_mod
from birthdayd.retry import Outcome
from tests.conftest import free_port


@pytest.fixture
async def make_emailer() -> AsyncIterator[Any]:
    made: list[emailer_mod.Emailer] = []

    async def make(url: str, **kw: Any) -> emailer_mod.Emailer:
        e = emailer_mod.Emailer(url, kw.pop("timeout_ms", 5000), 4, **kw)
        await e.start()
        made.append(e)
        return e

    yield make
    for e in made:
        await e.stop()


def _send(e: emailer_mod.Emailer) -> Any:
    return e.send("ada@example.com", "Hey, Ada Lovelace it's your birthday", uuid.uuid4())


async def test_a_refused_connection_is_unreached(make_emailer: Any) -> None:
    url = f"http://127.0.0.1:{free_port()}/send-email"  # nothing listens there
    result = await _send(await make_emailer(url))
    assert result.outcome is Outcome.RETRY
    assert result.unreached and not result.timed_out
    assert result.error.startswith("connection error: ClientConnectorError")


@pytest.fixture
def full_backlog() -> Iterator[int]:
    """A port whose listen queue is full: the kernel drops further SYNs, so a
    connect there never completes (as to a host that drops packets)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(3):
        c = socket.socket()
        c.setblocking(False)
        with contextlib.suppress(BlockingIOError):  # a non-blocking connect under way
            c.connect(("127.0.0.1", port))
        fillers.append(c)
    yield port
    for c in fillers:
        c.close()
    server.close()


async def test_a_connect_that_never_completes_is_unreached_after_the_connect_timeout(
    make_emailer: Any, full_backlog: int
) -> None:
    await asyncio.sleep(0.1)  # the fillers' handshakes complete and fill the queue
    e = await make_emailer(f"http://127.0.0.1:{full_backlog}/send-email",
                           connect_timeout_s=0.3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    result = await _send(e)
    assert 0.25 <= loop.time() - started < 2.0  # the connect timeout, not the 5 s total
    assert result.outcome is Outcome.RETRY
    assert result.unreached and not result.timed_out
    assert result.error.startswith("connection error: ConnectionTimeoutError")


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirect_is_an_answer_not_followed_and_permanent(
    make_emailer: Any, aiohttp_server: Any, status: int
) -> None:
    """A second hop that could not connect would look like a request that never
    left, after the first had arrived: redirects are not followed."""
    hops: list[str] = []

    async def target(request: web.Request) -> web.Response:
        hops.append(request.method)
        return web.json_response({"status": "sent"})

    async def redirecting(request: web.Request) -> web.Response:
        return web.Response(status=status, headers={"Location": "/elsewhere"})

    app = web.Application()
    app.router.add_post("/send-email", redirecting)
    app.router.add_route("*", "/elsewhere", target)
    server = await aiohttp_server(app)
    result = await _send(await make_emailer(str(server.make_url("/send-email"))))
    assert result.outcome is Outcome.PERMANENT
    assert not result.unreached
    assert result.error.startswith(f"HTTP {status}")
    assert hops == []
