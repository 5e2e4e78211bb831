"""flow.Flow: the tick's backpressure, from readings of the queue's depth."""

from __future__ import annotations

from birthdayd import flow


def test_a_cold_start_allows_the_floor() -> None:
    f = flow.Flow(lease_s=600, floor=5000)
    assert f.room(0) == 5000
    assert f.room(4000) == 1000
    assert f.room(7000) == 0


def test_the_measured_drain_rate_sets_the_high_water_to_half_a_lease_of_work() -> None:
    f = flow.Flow(lease_s=600, floor=100, smoothing=1.0)
    f.observe(0.0, depth=0)
    f.published(3000)
    f.settled(3000)
    f.observe(10.0, depth=1000)  # 3,000 in, 1,000 left: 2,000 drained in 10 s
    assert f.rate == 200
    assert f.high_water == 200 * 300
    assert f.room(1000) == 59_000


def test_a_stalled_queue_drains_nothing_and_keeps_the_floor() -> None:
    f = flow.Flow(lease_s=600, floor=100, smoothing=1.0)
    f.observe(0.0, depth=500)
    f.observe(5.0, depth=500)
    assert f.rate == 0
    assert f.room(500) == 0


def test_readings_too_close_together_are_ignored() -> None:
    f = flow.Flow(lease_s=600, floor=10, smoothing=1.0)
    f.observe(0.0, depth=100)
    f.observe(0.05, depth=0)
    assert f.rate == 0
    f.observe(1.0, depth=0)
    assert f.rate == 100


def test_the_rate_is_smoothed() -> None:
    f = flow.Flow(lease_s=600, floor=10, smoothing=0.5)
    f.observe(0.0, depth=0)
    f.published(100)
    f.observe(1.0, depth=0)
    f.published(300)
    f.observe(2.0, depth=0)
    assert f.rate == 200  # 0.5 * 300 + 0.5 * 100


def test_ids_being_published_count_against_the_room_until_they_settle() -> None:
    f = flow.Flow(lease_s=600, floor=100)
    f.published(60)
    assert f.room(0) == 40
    f.settled(60)
    assert f.room(60) == 40
