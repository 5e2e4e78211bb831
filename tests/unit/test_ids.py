"""Row ids (birthdayd.store.new_id): UUIDv7, strictly increasing in a process,
so keyset paging by id never skips a row made later in the same millisecond."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from birthdayd import store


@pytest.fixture(autouse=True)
def fresh_generator(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no last id, and leaves the real state as it was
    (a frozen or rewound clock here must not hold later ids back)."""
    monkeypatch.setattr(store, "_last_ms", -1)
    monkeypatch.setattr(store, "_counter", 0)


def _ms(value: uuid.UUID) -> int:
    return value.int >> 80


def _assert_strictly_increasing(ids: list[uuid.UUID]) -> None:
    # As numbers, as bytes (PostgreSQL compares uuid bytewise) and as text.
    for keys in ([i.int for i in ids], [i.bytes for i in ids], [str(i) for i in ids]):
        assert keys == sorted(set(keys))  # sorted, and no two alike


def test_ids_made_in_a_tight_loop_strictly_increase() -> None:
    ids = [store.new_id() for _ in range(100_000)]
    # Many share a millisecond: that is the case the counter is for.
    assert len({_ms(i) for i in ids}) < len(ids)
    _assert_strictly_increasing(ids)


def test_ids_are_version_7_rfc_variant() -> None:
    for value in (store.new_id() for _ in range(1000)):
        assert value.version == 7
        assert value.variant == uuid.RFC_4122


def test_the_prefix_is_the_time_in_milliseconds() -> None:
    before = time.time() * 1000
    ids = [store.new_id() for _ in range(1000)]
    after = time.time() * 1000
    for value in ids:
        assert before - 5 <= _ms(value) <= after + 5


def test_ids_increase_with_the_clock_frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    frozen = time.time_ns()
    monkeypatch.setattr(time, "time_ns", lambda: frozen)
    ids = [store.new_id() for _ in range(10_000)]
    _assert_strictly_increasing(ids)
    assert {_ms(i) for i in ids} == {frozen // 1_000_000}


def test_ids_increase_while_the_clock_steps_back(monkeypatch: pytest.MonkeyPatch) -> None:
    start = time.time_ns()
    ms = 1_000_000
    steps = [0, 3 * ms, 1 * ms, -50 * ms, -50 * ms, 2 * ms, 3 * ms, 4 * ms, -1000 * ms, 5 * ms]
    clock: Iterator[int] = iter(start + s for s in steps for _ in range(100))
    monkeypatch.setattr(time, "time_ns", lambda: next(clock))
    ids = [store.new_id() for _ in range(len(steps) * 100)]
    _assert_strictly_increasing(ids)
    # The prefix holds at the latest time seen, then follows the clock again.
    prefixes = [_ms(i) - start // ms for i in ids[::100]]
    assert prefixes == [0, 3, 3, 3, 3, 3, 3, 4, 4, 5]


def test_a_full_counter_moves_on_to_the_next_millisecond(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    frozen = time.time_ns()
    monkeypatch.setattr(time, "time_ns", lambda: frozen)
    first = store.new_id()
    monkeypatch.setattr(store, "_counter", store._COUNTER_MAX)
    second = store.new_id()
    third = store.new_id()
    assert first.int < second.int < third.int
    assert _ms(second) == _ms(third) == frozen // 1_000_000 + 1
    assert second.version == third.version == 7
