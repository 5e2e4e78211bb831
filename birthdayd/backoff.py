"""One retry idiom for the in-process loops (recording an outcome, opening the
pool, reconnecting to RabbitMQ): exponential backoff with jitter, a deadline
or none, retrying only the errors named.

Jitter keeps replicas that lost the same server at the same instant from
coming back in lockstep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

T = TypeVar("T")

logger = logging.getLogger(__name__)


def delays(base_s: float, cap_s: float, rng: random.Random | None = None) -> Iterator[float]:
    """Endless delays: the ceiling doubles from ``base_s`` up to ``cap_s``, each
    delay drawn from its upper half (never ~0, so no retry storm)."""
    ceiling = base_s
    while True:
        yield (rng or random).uniform(ceiling / 2, ceiling)
        ceiling = min(ceiling * 2, cap_s)


class GaveUp(Exception):
    """Raised (from the last error) when told to stop retrying."""


async def retry(
    op: Callable[[], Awaitable[T]],
    *,
    errors: tuple[type[BaseException], ...],
    what: str,
    base_s: float = 0.05,
    cap_s: float = 2.0,
    deadline_s: float | None = None,
    give_up: asyncio.Event | None = None,
    rng: random.Random | None = None,
) -> T:
    """Run ``op`` until it returns, retrying on ``errors``.

    Stops with the last error once ``deadline_s`` (seconds from now) would be
    passed; with :class:`GaveUp` when a try fails after ``give_up`` was set
    (a try under way is never cut short; the wait between tries ends as soon
    as it is set).  Anything else propagates at once.
    """
    loop = asyncio.get_running_loop()
    deadline = None if deadline_s is None else loop.time() + deadline_s
    for delay_s in delays(base_s, cap_s, rng):
        try:
            return await op()
        except errors as e:
            if deadline is not None and loop.time() + delay_s > deadline:
                raise
            if give_up is not None and give_up.is_set():
                raise GaveUp(what) from e
            logger.warning("%s failed (%s: %s); retrying in %.2fs", what,
                           e.__class__.__name__, e, delay_s,
                           extra={"event": "retrying", "what": what, "delay_s": round(delay_s, 3)})
        if give_up is None:
            await asyncio.sleep(delay_s)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(give_up.wait(), delay_s)  # then one last try
    raise AssertionError("unreachable")  # pragma: no cover - delays() is endless
