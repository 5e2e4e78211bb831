"""The project's fake provider (``birthdayd.fake_email.FakeProvider``, same
handler, same uvloop server) plus the wall-clock time each greeting was
received, for the due-time benchmarks (tests/performance/due.py).

``GET /stats`` is the fake provider's own; ``GET /received`` adds
``[[received_epoch_s, key], ...]`` for every request it accepted (``GET /count``
just their number), read with
``time.time()`` as the request came in (before the body was read), so it can
be compared with the greetings' instant: a receive before it is an early send.

    python tests/performance/timed_provider.py --port 18025 --ignore-idempotency-key
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time

import orjson
import uvloop
from aiohttp import web

from birthdayd.fake_email import FakeProvider


class TimedProvider(FakeProvider):
    received: list[tuple[float, str]]

    async def send_email(self, request: web.Request) -> web.Response:
        arrived = time.time()
        answer = await super().send_email(request)
        if answer.status == 200:
            self.received.append((arrived, request.headers.get("Idempotency-Key", "")))
        return answer

    async def received_times(self, request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(self.received), content_type="application/json")

    async def key_counts(self, request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(dict(self.by_key)),
                            content_type="application/json")

    async def count(self, request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps({"accepted": len(self.received)}),
                            content_type="application/json")

    def app(self) -> web.Application:
        app = super().app()
        app.router.add_get("/count", self.count)
        app.router.add_get("/received", self.received_times)
        app.router.add_get("/by-key", self.key_counts)
        return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18025)
    parser.add_argument("--latency-ms", type=int, default=0)
    parser.add_argument("--ignore-idempotency-key", action="store_true",
                        help="deliver every request, as a provider that ignores the header")
    args = parser.parse_args()
    provider = TimedProvider(latency_ms=args.latency_ms,
                             honour_keys=not args.ignore_idempotency_key)
    provider.received = []

    async def serve() -> None:
        runner = web.AppRunner(provider.app(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, args.host, args.port).start()
        print(f"timed fake e-mail API on http://{args.host}:{args.port}/send-email", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()

    uvloop.run(serve())


if __name__ == "__main__":
    main()
