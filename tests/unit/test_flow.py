"""flow.Flow: the tick's backpressure, from counts of the rows queued."""

from __future__ import annotations

from birthdayd import flow


def _room_after(f: flow.Flow, now_s: float, queued: int) -> int:
    f.observe(now_s, queued)
    return f.room()


def test_a_cold_start_allows_the_floor() -> None:
    assert _room_after(flow.Flow(lease_s=600, floor=5000), 0.0, 0) == 5000
    assert _room_after(flow.Flow(lease_s=600, floor=5000), 0.0, 4000) == 1000
    assert _room_after(flow.Flow(lease_s=600, floor=5000), 0.0, 7000) == 0


def test_claims_count_against_the_room_at_once() -> None:
    f = flow.Flow(lease_s=600, floor=100)
    f.observe(0.0, 0)
    f.claimed(60)
    assert f.room() == 40
    f.claimed(40)
    assert f.room() == 0


def test_the_measured_take_rate_sets_the_high_water_to_half_a_lease_of_work() -> None:
    f = flow.Flow(lease_s=600, floor=100, smoothing=1.0)
    f.observe(0.0, 0)
    f.claimed(3000)
    # 3,000 queued, 1,000 left 10 s later: the workers took 2,000.
    assert _room_after(f, 10.0, 1000) == 200 * 300 - 1000
    assert f.rate == 200


def test_a_stalled_backlog_is_taken_at_rate_zero_and_keeps_the_floor() -> None:
    f = flow.Flow(lease_s=600, floor=100, smoothing=1.0)
    f.observe(0.0, 500)
    assert _room_after(f, 5.0, 500) == 0
    assert f.rate == 0


def test_readings_too_close_together_measure_no_rate() -> None:
    f = flow.Flow(lease_s=600, floor=10, smoothing=1.0)
    f.observe(0.0, 100)
    f.observe(0.5, 0)
    assert f.rate == 0
    f.observe(1.0, 0)
    assert f.rate == 100


def test_the_rate_is_smoothed() -> None:
    f = flow.Flow(lease_s=600, floor=10, smoothing=0.5)
    f.observe(0.0, 0)
    for now_s, count in ((1.0, 100), (2.0, 300)):
        f.claimed(count)
        f.observe(now_s, 0)
    assert f.rate == 200  # 0.5 * 300 + 0.5 * 100


def test_however_fast_the_workers_the_backlog_stays_under_the_ceiling() -> None:
    f = flow.Flow(lease_s=600, floor=100, ceiling=50_000, smoothing=1.0)
    f.observe(0.0, 0)
    f.claimed(40_000)
    # 10,000/s taken would allow 3,000,000 queued (half a lease of work).
    assert _room_after(f, 4.0, 0) == 50_000
    assert f.rate == 10_000
