"""``birthdayd fake-email``: a local stand-in for the e-mail provider.

Same request and answer as the real API (``POST /send-email`` with
``{"email", "message"}`` → 200 ``{"status": "sent", "sentTime": ...}``), plus
injected faults: answers 500 at ``error_rate``, hangs without answering (and
without accepting) at ``timeout_rate``.  Like a provider that honours
``Idempotency-Key``, a request whose key was already accepted is answered as
before and not delivered again (a "replay"); ``honour_keys=False`` plays a
provider that ignores the header.  ``GET /stats`` reports what it delivered,
per address and per key, so tests can check exactly-once delivery from the
provider's side.  ``GET /health`` answers 200 while the server runs (the
image's ``birthdayd healthcheck`` probes it).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import random
import signal

import orjson
import uvloop
from aiohttp import web

from birthdayd import clock

logger = logging.getLogger(__name__)

HANG_S = 3600.0


@dataclasses.dataclass
class FakeProvider:
    error_rate: float = 0.0
    timeout_rate: float = 0.0
    latency_ms: int = 0
    honour_keys: bool = True
    rng: random.Random = dataclasses.field(default_factory=random.Random)
    accepted: list[dict[str, str]] = dataclasses.field(default_factory=list)
    by_email: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    by_key: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    requests: int = 0
    errors: int = 0
    hangs: int = 0
    replays: int = 0
    _answers: dict[str, bytes] = dataclasses.field(default_factory=dict)

    async def send_email(self, request: web.Request) -> web.Response:
        self.requests += 1
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _json({"error": "body must be JSON"}, 400)
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("email"), str)
            or not isinstance(body.get("message"), str)
        ):
            return _json({"error": "email and message are required strings"}, 400)
        if self.latency_ms:
            await asyncio.sleep(self.latency_ms / 1000)
        roll = self.rng.random()
        if roll < self.timeout_rate:
            self.hangs += 1
            await asyncio.sleep(HANG_S)  # the client gives up first
        if roll < self.timeout_rate + self.error_rate:
            self.errors += 1
            return _json({"error": "injected failure"}, 500)
        key = request.headers.get("Idempotency-Key", "")
        if self.honour_keys and key in self._answers:
            # Accepted before: our answer was lost (a timeout, or the sender
            # died before recording it).  Answer the same, deliver nothing.
            self.replays += 1
            return web.Response(body=self._answers[key], content_type="application/json")
        self.accepted.append({"email": body["email"], "message": body["message"], "key": key})
        self.by_email[body["email"]] += 1
        self.by_key[key] += 1
        sent = clock.SystemClock().now().isoformat().replace("+00:00", "Z")
        answer = orjson.dumps({"status": "sent", "sentTime": sent})
        if key:
            self._answers[key] = answer
        return web.Response(body=answer, content_type="application/json")

    async def stats(self, request: web.Request) -> web.Response:
        return _json({
            "requests": self.requests,
            "errors": self.errors,
            "hangs": self.hangs,
            "replays": self.replays,
            "accepted": len(self.accepted),
            "byEmail": dict(self.by_email),
            "duplicateKeys": {k: n for k, n in self.by_key.items() if n > 1},
            "messages": self.accepted,
        })

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/send-email", self.send_email)
        app.router.add_get("/stats", self.stats)
        app.router.add_get("/health", _health)
        return app


async def _health(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def main(host: str, port: int, error_rate: float, timeout_rate: float, latency_ms: int,
         seed: int | None, honour_keys: bool = True) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    provider = FakeProvider(error_rate, timeout_rate, latency_ms, honour_keys,
                            random.Random(seed))  # noqa: S311
    print(f"fake e-mail API on http://{host}:{port}/send-email (stats: /stats)", flush=True)

    async def serve() -> None:
        runner = web.AppRunner(provider.app(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()

    # uvloop, like the daemon: a load test should measure birthdayd, not this.
    uvloop.run(serve())
