"""Group commit: concurrent callers' items are written in one statement.

While one flush runs, new items wait and go together in the next one, so a
quiet worker writes at once (no timer adds latency) and a busy one writes
batches as large as its concurrency (measured here: a one-row UPDATE costs
~240 µs of CPU, one row of a 100-row batch ~7 µs).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")


class Batcher(Generic[Item, Result]):
    def __init__(
        self,
        flush: Callable[[list[Item]], Awaitable[Sequence[Result]]],
        max_size: int = 500,
        orphaned: Callable[[Item, Result], Awaitable[None]] | None = None,
    ) -> None:
        """``orphaned`` is given each result whose caller was cancelled while its
        item was being flushed (to undo a claim nobody will act on)."""
        self._flush = flush
        self._max_size = max_size
        self._orphaned = orphaned
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Result:
        """Queue ``item`` for the next flush and return its result.  A caller
        cancelled before its flush starts takes the item back; one cancelled
        during the flush does not (the flush runs regardless; see ``orphaned``)."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._run())
        return await future

    async def _run(self) -> None:
        batch: list[tuple[Item, asyncio.Future[Result]]] = []
        try:
            await asyncio.sleep(0)  # let the callers woken with this one join
            while self._pending:
                batch = [p for p in self._pending[: self._max_size] if not p[1].cancelled()]
                del self._pending[: self._max_size]
                if not batch:
                    continue
                try:
                    results = await self._flush([item for item, _ in batch])
                except Exception as e:  # noqa: BLE001 - handed to every caller
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(e)
                    continue
                for (item, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
                    elif future.cancelled() and self._orphaned is not None:
                        try:
                            await self._orphaned(item, result)
                        except Exception:
                            # Its row's lease brings it back; the other
                            # callers of this batch must still get theirs.
                            logger.exception("undoing an orphaned batch item failed",
                                             extra={"event": "batch_orphan_failed"})
        finally:
            self._flusher = None
            # Cancelled (the loop is closing): nobody may wait forever.
            for _, future in batch + self._pending:
                if not future.done():
                    future.cancel()
