"""The api process's garbage-collector settings (runtime.settle_gc)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from birthdayd import runtime


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_gc")
def test_settle_gc_freezes_what_start_up_built_and_collects_less_often() -> None:
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    kept = [[n] for n in range(1000)]  # containers alive at start-up
    runtime.settle_gc()
    assert gc.get_threshold() == runtime.GC_THRESHOLDS
    assert gc.get_threshold()[0] > 700 * 10  # far above Python's default young generation
    assert gc.get_freeze_count() >= len(kept)
    # Frozen objects are out of every generation: no collection walks them again.
    assert not any(o is kept[0] for o in gc.get_objects())
    fresh = [0]
    assert any(o is fresh for o in gc.get_objects())
