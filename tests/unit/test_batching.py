"""Group commit (birthdayd.batching): concurrent items share a flush."""

from __future__ import annotations

import asyncio

import pytest

from birthdayd import batching


async def test_concurrent_submits_share_one_flush_and_get_their_own_results() -> None:
    flushes: list[list[int]] = []

    async def flush(items: list[int]) -> list[int]:
        flushes.append(items)
        await asyncio.sleep(0.01)
        return [i * 10 for i in items]

    batcher: batching.Batcher[int, int] = batching.Batcher(flush)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(20)))
    assert results == [i * 10 for i in range(20)]
    assert flushes == [list(range(20))]


async def test_items_arriving_during_a_flush_go_in_the_next_one() -> None:
    flushes: list[list[str]] = []
    release = asyncio.Event()

    async def flush(items: list[str]) -> list[str]:
        flushes.append(items)
        if len(flushes) == 1:
            await release.wait()
        return items

    batcher: batching.Batcher[str, str] = batching.Batcher(flush)
    first = asyncio.create_task(batcher.submit("a"))
    await asyncio.sleep(0.01)
    later = [asyncio.create_task(batcher.submit(x)) for x in "bcd"]
    await asyncio.sleep(0.01)
    release.set()
    assert await first == "a"
    assert [await t for t in later] == ["b", "c", "d"]
    assert flushes == [["a"], ["b", "c", "d"]]


async def test_batches_are_capped_at_max_size() -> None:
    sizes: list[int] = []

    async def flush(items: list[int]) -> list[int]:
        sizes.append(len(items))
        return items

    batcher: batching.Batcher[int, int] = batching.Batcher(flush, max_size=3)
    assert await asyncio.gather(*(batcher.submit(i) for i in range(7))) == list(range(7))
    assert sizes == [3, 3, 1]


async def test_a_failed_flush_fails_each_caller_of_that_batch_only() -> None:
    calls = 0

    async def flush(items: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("database away")
        return items

    batcher: batching.Batcher[int, int] = batching.Batcher(flush)
    results = await asyncio.gather(batcher.submit(1), batcher.submit(2),
                                   return_exceptions=True)
    assert all(isinstance(r, OSError) for r in results)
    assert await batcher.submit(3) == 3


async def test_a_cancelled_caller_does_not_cancel_the_flush() -> None:
    """Recording a provider's answer must happen even if its caller is cancelled."""
    flushed: list[int] = []
    started = asyncio.Event()

    async def flush(items: list[int]) -> list[int]:
        started.set()
        await asyncio.sleep(0.02)
        flushed.extend(items)
        return items

    batcher: batching.Batcher[int, int] = batching.Batcher(flush)
    caller = asyncio.create_task(batcher.submit(1))
    await started.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await asyncio.sleep(0.05)
    assert flushed == [1]


async def test_a_caller_cancelled_before_its_flush_takes_its_item_back() -> None:
    flushed: list[list[int]] = []
    release = asyncio.Event()

    async def flush(items: list[int]) -> list[int]:
        flushed.append(items)
        if len(flushed) == 1:
            await release.wait()
        return items

    batcher: batching.Batcher[int, int] = batching.Batcher(flush)
    first = asyncio.create_task(batcher.submit(1))
    await asyncio.sleep(0.01)  # the first flush is running
    waiting = asyncio.create_task(batcher.submit(2))
    kept = asyncio.create_task(batcher.submit(3))
    await asyncio.sleep(0.01)
    waiting.cancel()
    release.set()
    assert await first == 1
    assert await kept == 3
    assert flushed == [[1], [3]]


async def test_a_result_whose_caller_was_cancelled_mid_flush_is_handed_to_orphaned() -> None:
    """A claim made for a caller that is gone must be undone, not left to a lease."""
    started = asyncio.Event()
    orphans: list[tuple[int, int]] = []

    async def flush(items: list[int]) -> list[int]:
        started.set()
        await asyncio.sleep(0.02)
        return [i * 10 for i in items]

    async def orphaned(item: int, result: int) -> None:
        orphans.append((item, result))

    batcher: batching.Batcher[int, int] = batching.Batcher(flush, orphaned=orphaned)
    gone = asyncio.create_task(batcher.submit(1))
    stays = asyncio.create_task(batcher.submit(2))
    await started.wait()
    gone.cancel()
    assert await stays == 20
    assert orphans == [(1, 10)]


async def test_a_failing_orphaned_hook_does_not_fail_the_rest_of_the_batch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The hook only tidies up (the row's lease would bring it back anyway): if
    it raises, the batch's other callers must still get their results."""
    started = asyncio.Event()
    flushes: list[list[int]] = []

    async def flush(items: list[int]) -> list[int]:
        flushes.append(items)
        started.set()
        await asyncio.sleep(0.02)
        return [i * 10 for i in items]

    async def orphaned(item: int, result: int) -> None:
        raise RuntimeError(f"cannot undo {item}")

    batcher: batching.Batcher[int, int] = batching.Batcher(flush, orphaned=orphaned)
    # The cancelled caller is first, so the hook runs before the others' results
    # are handed out.
    gone = asyncio.create_task(batcher.submit(1))
    stays = [asyncio.create_task(batcher.submit(i)) for i in (2, 3)]
    await started.wait()
    gone.cancel()
    results = await asyncio.gather(*stays, return_exceptions=True)
    assert results == [20, 30]
    assert gone.cancelled()
    assert flushes == [[1, 2, 3]]
    assert [r.getMessage() for r in caplog.records
            if getattr(r, "event", None) == "batch_orphan_failed"] == [
        "undoing an orphaned batch item failed"]
    # The batcher is not wedged: later submits are flushed as usual.
    assert await asyncio.gather(batcher.submit(4), batcher.submit(5)) == [40, 50]
    assert flushes[1:] == [[4, 5]]
