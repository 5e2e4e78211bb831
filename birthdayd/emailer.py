"""The e-mail provider's HTTP client (one aiohttp session, per-request timeout)."""

from __future__ import annotations

import dataclasses
import time
import uuid

import aiohttp
import orjson

from birthdayd import metrics, retry

CONNECT_TIMEOUT_S = 5.0


@dataclasses.dataclass(frozen=True)
class Result:
    outcome: retry.Outcome
    error: str | None = None
    timed_out: bool = False
    """The provider may have accepted and answered too late (docs/ARCHITECTURE.md §5)."""
    unreached: bool = False
    """No connection to the provider could be made (refused, no route, no such
    host, none within the connect timeout): it cannot have received the
    request, so it was no attempt."""


class Emailer:
    def __init__(self, url: str, timeout_ms: int, concurrency: int,
                 connect_timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        self.url = url
        # A connection that is not made within connect_timeout_s (a host that
        # drops packets) is no attempt either: nothing was sent (Result.unreached).
        self._timeout = aiohttp.ClientTimeout(total=timeout_ms / 1000,
                                              sock_connect=connect_timeout_s)
        self._concurrency = concurrency
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._concurrency),
            json_serialize=lambda o: orjson.dumps(o).decode(),
        )

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(self, email: str, message: str, key: uuid.UUID) -> Result:
        assert self._session is not None, "Emailer.start() first"
        started = time.perf_counter()
        try:
            async with self._session.post(
                self.url,
                data=orjson.dumps({"email": email, "message": message}),
                headers={"Content-Type": "application/json", "Idempotency-Key": str(key)},
                timeout=self._timeout,
                # Not followed: a connection error on a second hop would look
                # like a request that never left, after the first had arrived.
                # A 3xx is an answer like any other 4xx: permanent.
                allow_redirects=False,
            ) as response:
                body = await response.read()
                status = response.status
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as e:
            # Raised only while connecting (aiohttp's connector), before any byte
            # of the request: it cannot have reached the provider.
            return Result(retry.Outcome.RETRY, f"connection error: {e.__class__.__name__}: {e}",
                          unreached=True)
        except TimeoutError:
            return Result(retry.Outcome.RETRY, "timeout", timed_out=True)
        except aiohttp.ClientError as e:
            return Result(retry.Outcome.RETRY, f"connection error: {e.__class__.__name__}: {e}")
        finally:
            metrics.SEND_SECONDS.observe(time.perf_counter() - started)
        outcome = retry.classify(status)
        if outcome is retry.Outcome.SENT:
            return Result(outcome)
        snippet = body[:200].decode("utf-8", "replace")
        return Result(outcome, f"HTTP {status}: {snippet}")
