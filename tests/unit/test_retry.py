"""retry: how a provider answer is treated, when to try again, and the breaker.

* ``classify`` (docs/ARCHITECTURE.md §1): 2xx sent; 408, 429 and 5xx retried; other 4xx permanent.
* ``backoff_ms``: full jitter, ``0 ≤ d ≤ min(base·2^(n-1), MAX_BACKOFF_MS)``.
* ``should_retry``: ``QUEUE_MAX_RETRIES`` attempts follow the first.
* ``Breaker``: every transition of the state machine, and a model-based check of
  random call sequences against an independent reference model.
"""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from birthdayd import retry
from birthdayd.retry import BreakerState, Outcome

PROPERTY = settings(max_examples=200, deadline=None, derandomize=True, database=None)


# -- classify -------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 204, 299])
def test_classify_2xx_is_sent(status: int) -> None:
    assert retry.classify(status) is Outcome.SENT


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_classify_408_429_and_5xx_are_retried(status: int) -> None:
    assert retry.classify(status) is Outcome.RETRY


@pytest.mark.parametrize("status", [400, 401, 404, 409, 422])
def test_classify_other_4xx_are_permanent(status: int) -> None:
    assert retry.classify(status) is Outcome.PERMANENT


@PROPERTY
@given(st.integers(min_value=100, max_value=599))
def test_classify_every_status_follows_the_contract(status: int) -> None:
    """Every HTTP status from 100 to 599: 2xx sent; 408, 429, 5xx retry; the rest permanent."""
    if 200 <= status <= 299:
        expected = Outcome.SENT
    elif status in (408, 429) or 500 <= status <= 599:
        expected = Outcome.RETRY
    else:
        expected = Outcome.PERMANENT
    assert retry.classify(status) is expected


# -- backoff_ms -----------------------------------------------------------------


class _Top(random.Random):
    """A generator whose ``uniform(a, b)`` is always ``b``: exposes the ceiling."""

    def uniform(self, a: float, b: float) -> float:
        return b


class _Bottom(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return a


def _ceiling(attempt: int, base_ms: int) -> int:
    return min(base_ms * (1 << (attempt - 1)), retry.MAX_BACKOFF_MS)


@PROPERTY
@given(
    attempt=st.integers(min_value=1, max_value=80),
    base_ms=st.integers(min_value=0, max_value=86_400_000),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_backoff_is_full_jitter_within_the_capped_exponential_ceiling(
    attempt: int, base_ms: int, seed: int
) -> None:
    """0 ≤ delay ≤ min(base·2^(attempt-1), MAX_BACKOFF_MS), an int, for any seed."""
    delay = retry.backoff_ms(attempt, base_ms, random.Random(seed))
    assert isinstance(delay, int)
    assert 0 <= delay <= _ceiling(attempt, base_ms)
    assert delay <= retry.MAX_BACKOFF_MS


@PROPERTY
@given(
    attempt=st.integers(min_value=1, max_value=40),
    base_ms=st.integers(min_value=0, max_value=86_400_000),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_backoff_is_reproducible_with_a_seeded_generator(attempt: int, base_ms: int,
                                                          seed: int) -> None:
    first = retry.backoff_ms(attempt, base_ms, random.Random(seed))
    assert retry.backoff_ms(attempt, base_ms, random.Random(seed)) == first


def test_backoff_ceiling_doubles_each_attempt_from_the_base() -> None:
    ceilings = [retry.backoff_ms(n, 100, _Top()) for n in range(1, 8)]
    assert ceilings == [100, 200, 400, 800, 1600, 3200, 6400]
    assert [retry.backoff_ms(n, 100, _Bottom()) for n in range(1, 8)] == [0] * 7


def test_backoff_ceiling_is_capped_at_max_backoff() -> None:
    """base 2000 ms: attempt 11 would be 2048 s, capped at one hour; huge attempts too."""
    assert retry.backoff_ms(11, 2000, _Top()) == 2_048_000
    assert retry.backoff_ms(12, 2000, _Top()) == retry.MAX_BACKOFF_MS
    assert retry.backoff_ms(10_000, 2000, _Top()) == retry.MAX_BACKOFF_MS
    assert retry.MAX_BACKOFF_MS == 3_600_000


def test_backoff_attempt_zero_is_treated_as_the_first() -> None:
    assert retry.backoff_ms(0, 500, _Top()) == 500


def test_backoff_spreads_over_the_whole_range_not_just_the_top() -> None:
    """Full jitter: seeded samples cover [0, ceiling] (low and high quartiles both hit)."""
    rng = random.Random(1234)
    samples = [retry.backoff_ms(3, 1000, rng) for _ in range(2000)]  # ceiling 4000
    assert min(samples) >= 0
    assert max(samples) <= 4000
    assert min(samples) < 100
    assert max(samples) > 3900
    assert sum(1 for s in samples if s < 1000) > 300
    assert sum(1 for s in samples if s >= 3000) > 300


def test_backoff_zero_base_is_always_zero() -> None:
    rng = random.Random(7)
    assert {retry.backoff_ms(n, 0, rng) for n in range(1, 30)} == {0}


# -- should_retry ---------------------------------------------------------------


def test_should_retry_with_no_retries_never_retries() -> None:
    assert retry.should_retry(1, 0) is False


def test_should_retry_two_retries_means_three_attempts_in_all() -> None:
    assert [retry.should_retry(n, 2) for n in (1, 2, 3, 4)] == [True, True, False, False]


@PROPERTY
@given(st.integers(min_value=0, max_value=100))
def test_should_retry_allows_exactly_max_retries_after_the_first(max_retries: int) -> None:
    """Counting attempts until should_retry says no gives 1 + max_retries attempts."""
    attempt = 1
    while retry.should_retry(attempt, max_retries):
        attempt += 1
    assert attempt == 1 + max_retries


# -- Breaker: the state machine, transition by transition ------------------------


def _state(b: retry.Breaker) -> BreakerState:
    """Read the state through a call, so mypy does not narrow it across transitions."""
    return b.state


def _breaker(**kw: float) -> retry.Breaker:
    args: dict[str, float] = {"threshold_pct": 50, "reset_s": 30.0, "window_s": 10.0,
                              "min_calls": 10}
    args.update(kw)
    return retry.Breaker(**args)  # type: ignore[arg-type]


def _record_all(b: retry.Breaker, t: float, oks: list[bool]) -> None:
    for ok in oks:
        assert b.allow(t)
        b.record(t, ok)


def test_breaker_starts_closed_and_allows_calls() -> None:
    b = _breaker()
    assert _state(b) is BreakerState.CLOSED
    assert all(b.allow(float(t)) for t in range(100))


def test_breaker_stays_closed_below_min_calls_even_if_all_fail() -> None:
    b = _breaker()
    _record_all(b, 1.0, [False] * 9)
    assert _state(b) is BreakerState.CLOSED
    assert b.allow(1.0)


def test_breaker_opens_at_min_calls_when_all_fail() -> None:
    b = _breaker()
    _record_all(b, 1.0, [False] * 10)
    assert _state(b) is BreakerState.OPEN
    assert b.opened_at == 1.0
    assert not b.allow(1.0)


def test_breaker_opens_when_failures_reach_the_threshold_exactly() -> None:
    """50 %: 5 failures of 10 calls opens it."""
    b = _breaker()
    _record_all(b, 1.0, [True] * 5 + [False] * 5)
    assert _state(b) is BreakerState.OPEN


def test_breaker_stays_closed_just_below_the_threshold() -> None:
    """50 %: 4 failures of 10 calls, then 5 of 11, do not open it."""
    b = _breaker()
    _record_all(b, 1.0, [True] * 6 + [False] * 4)
    assert _state(b) is BreakerState.CLOSED
    _record_all(b, 1.0, [False])  # 5 of 11 = 45 %
    assert _state(b) is BreakerState.CLOSED
    _record_all(b, 1.0, [False])  # 6 of 12 = 50 %
    assert _state(b) is BreakerState.OPEN


def test_breaker_threshold_100_needs_every_call_to_fail() -> None:
    b = _breaker(threshold_pct=100)
    _record_all(b, 1.0, [True] + [False] * 50)
    assert _state(b) is BreakerState.CLOSED
    b2 = _breaker(threshold_pct=100)
    _record_all(b2, 1.0, [False] * 10)
    assert _state(b2) is BreakerState.OPEN


def test_breaker_forgets_calls_older_than_the_window() -> None:
    """9 failures at t=0, then one more after the window: only 1 call counts."""
    b = _breaker()
    _record_all(b, 0.0, [False] * 9)
    _record_all(b, 10.001, [False])
    assert _state(b) is BreakerState.CLOSED
    _record_all(b, 10.002, [False] * 8)  # 9 recent failures
    assert _state(b) is BreakerState.CLOSED
    _record_all(b, 10.003, [False])  # the 10th recent one
    assert _state(b) is BreakerState.OPEN


def test_breaker_window_includes_a_call_exactly_window_s_old() -> None:
    b = _breaker()
    _record_all(b, 0.0, [False] * 9)
    _record_all(b, 10.0, [False])
    assert _state(b) is BreakerState.OPEN


def test_breaker_old_successes_leave_the_window_too() -> None:
    """Successes that left the window no longer dilute recent failures."""
    b = _breaker()
    _record_all(b, 0.0, [True] * 100)
    _record_all(b, 5.0, [False] * 10)  # 10 of 110
    assert _state(b) is BreakerState.CLOSED
    _record_all(b, 10.5, [False])  # the t=0 successes are gone: 11 of 11
    assert _state(b) is BreakerState.OPEN


def _opened(at: float = 100.0, **kw: float) -> retry.Breaker:
    b = _breaker(**kw)
    _record_all(b, at, [False] * int(b.min_calls))
    assert _state(b) is BreakerState.OPEN
    return b


def test_breaker_open_refuses_until_reset_timeout() -> None:
    b = _opened(100.0)
    assert not b.allow(100.0)
    assert not b.allow(129.999)
    assert _state(b) is BreakerState.OPEN


def test_breaker_retry_in_is_the_time_left_open() -> None:
    b = _opened(100.0)
    assert b.retry_in_s(100.0) == pytest.approx(30.0)
    assert b.retry_in_s(120.0) == pytest.approx(10.0)
    assert b.retry_in_s(200.0) == 0.0


def test_breaker_retry_in_is_short_when_not_open() -> None:
    assert _breaker().retry_in_s(0.0) == 1.0
    assert _breaker(reset_s=0.25).retry_in_s(0.0) == 0.25


def test_breaker_answers_recorded_while_open_are_ignored() -> None:
    """Answers to calls made before it opened neither close it nor extend it."""
    b = _opened(100.0)
    b.record(110.0, True)
    b.record(111.0, False)
    assert _state(b) is BreakerState.OPEN
    assert b.opened_at == 100.0
    assert b.allow(130.0)  # reset counted from the opening, not from the late answers


def test_breaker_half_open_lets_exactly_one_probe_through() -> None:
    b = _opened(100.0)
    assert b.allow(130.0)
    assert _state(b) is BreakerState.HALF_OPEN
    assert not b.allow(130.0)
    assert not b.allow(140.0)
    assert not b.allow(159.999)
    assert b.retry_in_s(140.0) == 1.0


def test_breaker_probe_success_closes_and_starts_a_fresh_window() -> None:
    b = _opened(100.0)
    assert b.allow(130.0)
    b.record(130.5, True)
    assert _state(b) is BreakerState.CLOSED
    assert b.allow(131.0) and b.allow(131.0)
    # The failures that opened it are forgotten: 9 new failures do not reopen it.
    _record_all(b, 131.0, [False] * 9)
    assert _state(b) is BreakerState.CLOSED
    _record_all(b, 131.0, [False])
    assert _state(b) is BreakerState.OPEN


def test_breaker_probe_failure_reopens_for_another_reset_timeout() -> None:
    b = _opened(100.0)
    assert b.allow(130.0)
    b.record(131.0, False)
    assert _state(b) is BreakerState.OPEN
    assert b.opened_at == 131.0
    assert not b.allow(160.999)
    assert b.allow(161.0)
    assert _state(b) is BreakerState.HALF_OPEN


def test_breaker_trip_opens_at_once_with_a_single_call() -> None:
    """A provider that cannot be reached needs no rate: one call opens it."""
    b = _breaker()
    assert b.allow(5.0)
    b.trip(5.0)
    assert _state(b) is BreakerState.OPEN
    assert b.opened_at == 5.0
    assert not b.allow(34.9)
    assert b.retry_in_s(20.0) == 15.0
    assert b.allow(35.0)  # the probe
    assert _state(b) is BreakerState.HALF_OPEN


def test_breaker_trip_of_a_probe_reopens_and_a_second_trip_keeps_the_opening() -> None:
    b = _opened(100.0)
    assert b.allow(130.0)  # the probe cannot connect either
    b.trip(130.5)
    assert _state(b) is BreakerState.OPEN
    assert b.opened_at == 130.5
    b.trip(140.0)  # another call that was already out: the period is not extended
    assert b.opened_at == 130.5
    assert b.allow(160.5)
    b.record(161.0, True)
    assert _state(b) is BreakerState.CLOSED


def test_breaker_trip_after_the_open_period_ran_out_opens_it_anew() -> None:
    """Open, its period over, no call asked since: a call that cannot connect
    starts a new period (else the greeting would be due again at once)."""
    b = _opened(100.0)
    b.trip(135.0)
    assert _state(b) is BreakerState.OPEN
    assert b.opened_at == 135.0
    assert b.retry_in_s(135.0) == 30.0


def test_breaker_stale_probe_does_not_wedge_it() -> None:
    """A probe that never reports back: after reset_s another probe may go, one at a time."""
    b = _opened(100.0)
    assert b.allow(130.0)  # the probe, then silence (cancelled)
    assert not b.allow(159.9)
    assert b.allow(160.0)  # stale: a new probe
    assert _state(b) is BreakerState.HALF_OPEN
    assert not b.allow(160.0)
    assert not b.allow(189.9)
    b.record(170.0, True)
    assert _state(b) is BreakerState.CLOSED


def test_breaker_reopening_after_a_probe_resets_the_probe_flag() -> None:
    """Open → half-open → open → half-open: the second half-open lets a probe through."""
    b = _opened(100.0)
    assert b.allow(130.0)
    b.record(130.0, False)
    assert b.allow(160.0)
    assert not b.allow(160.0)


# -- Breaker: model-based check over random call sequences --------------------------


@dataclasses.dataclass
class _Model:
    """An independent reading of the Breaker's docstring."""

    threshold_pct: int
    reset_s: float
    window_s: float
    min_calls: int
    state: str = "closed"
    opened_at: float = 0.0
    calls: list[tuple[float, bool]] = dataclasses.field(default_factory=list)
    probe_out: bool = False
    probe_at: float = 0.0

    def allow(self, t: float) -> bool:
        if self.state == "open":
            if t - self.opened_at < self.reset_s:
                return False
            self.state = "half_open"
            self.probe_out = False
        if self.state == "closed":
            return True
        if self.probe_out and t - self.probe_at < self.reset_s:
            return False
        self.probe_out = True
        self.probe_at = t
        return True

    def record(self, t: float, ok: bool) -> None:
        if self.state == "half_open":
            self.probe_out = False
            if ok:
                self.state = "closed"
                self.calls = []
            else:
                self._open(t)
        elif self.state == "closed":
            self.calls.append((t, ok))
            recent = [good for when, good in self.calls if when >= t - self.window_s]
            failed = recent.count(False)
            if len(recent) >= self.min_calls and 100 * failed >= self.threshold_pct * len(recent):
                self._open(t)

    def _open(self, t: float) -> None:
        self.state = "open"
        self.opened_at = t
        self.calls = []


_OPS = st.lists(
    st.tuples(
        st.sampled_from(["allow", "ok", "fail"]),
        st.sampled_from([0.0, 0.0, 0.0, 0.1, 0.5, 1.0, 2.5, 5.0]),
    ),
    max_size=120,
)


@PROPERTY
@given(
    ops=_OPS,
    threshold=st.sampled_from([1, 25, 50, 75, 100]),
    reset_s=st.sampled_from([0.5, 2.0, 5.0]),
    window_s=st.sampled_from([1.0, 3.0, 10.0]),
    min_calls=st.integers(min_value=1, max_value=6),
)
def test_breaker_matches_the_reference_model(
    ops: list[tuple[str, float]], threshold: int, reset_s: float, window_s: float,
    min_calls: int,
) -> None:
    """Random interleavings of allow/record over time agree with the model at every step."""
    b = retry.Breaker(threshold_pct=threshold, reset_s=reset_s, window_s=window_s,
                      min_calls=min_calls)
    m = _Model(threshold, reset_s, window_s, min_calls)
    t = 0.0
    for op, dt_s in ops:
        t += dt_s
        if op == "allow":
            assert b.allow(t) == m.allow(t)
        else:
            b.record(t, op == "ok")
            m.record(t, op == "ok")
        assert b.state.value == m.state
