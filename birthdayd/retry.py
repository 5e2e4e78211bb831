"""Pure delivery decisions: how to treat a provider answer, when to try again,
and the circuit breaker.  No I/O; times are plain numbers passed in."""

from __future__ import annotations

import collections
import dataclasses
import enum
import random


class Outcome(enum.Enum):
    SENT = "sent"
    RETRY = "retry"
    PERMANENT = "permanent"


def classify(status: int) -> Outcome:
    """docs/ARCHITECTURE.md §1: 2xx sent; 408, 429 and 5xx retried; any other answer permanent."""
    if 200 <= status < 300:
        return Outcome.SENT
    if status in (408, 429) or status >= 500:
        return Outcome.RETRY
    return Outcome.PERMANENT


MAX_BACKOFF_MS = 3_600_000

# How long a queued row waits for a worker before recovery re-publishes it.
# Generous: a long queue after an outage is not a dead worker, and a second
# copy of an id only costs a dropped redelivery.
QUEUED_LEASE_S = 600.0


def backoff_ms(attempt: int, base_ms: int, rng: random.Random | None = None) -> int:
    """Delay before the attempt after ``attempt`` (1-based): full jitter over an
    exponential ceiling, ``uniform(0, base * 2**(attempt-1))``, capped at an hour.

    Full jitter spreads a burst of failures (a provider outage at 09:00)
    instead of retrying them all in lockstep.
    """
    ceiling = min(base_ms * 2 ** max(attempt - 1, 0), MAX_BACKOFF_MS)
    return int((rng or random).uniform(0, ceiling))


def should_retry(attempt: int, max_retries: int) -> bool:
    """``max_retries`` attempts follow the first; ``attempt`` is 1-based."""
    return attempt <= max_retries


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclasses.dataclass
class Breaker:
    """Opens when ``threshold_pct`` of the calls in the last ``window_s`` failed
    (and there were at least ``min_calls``); after ``reset_s`` open, lets one
    probe through: its success closes the breaker, its failure reopens it."""

    threshold_pct: int
    reset_s: float
    window_s: float = 10.0
    min_calls: int = 10
    state: BreakerState = BreakerState.CLOSED
    opened_at: float = 0.0
    _calls: collections.deque[tuple[float, bool]] = dataclasses.field(
        default_factory=collections.deque
    )
    _failures: int = 0
    """Failures in ``_calls``, kept as they come and go (a busy worker records
    thousands of calls per window)."""
    _probing: bool = False
    _probe_at: float = 0.0

    def allow(self, now_s: float) -> bool:
        """May a call go out now?  In half-open, only one at a time."""
        if self.state is BreakerState.OPEN and now_s - self.opened_at >= self.reset_s:
            self.state = BreakerState.HALF_OPEN
            self._probing = False
        if self.state is BreakerState.CLOSED:
            return True
        # A probe that never reported back (cancelled) must not wedge the breaker.
        stale = now_s - self._probe_at >= self.reset_s
        if self.state is BreakerState.HALF_OPEN and (not self._probing or stale):
            self._probing = True
            self._probe_at = now_s
            return True
        return False

    def is_open(self, now_s: float) -> bool:
        """Open as of ``now_s``: no call may go out (one whose open period has
        elapsed lets a probe through at the next call)."""
        return self.state is BreakerState.OPEN and now_s - self.opened_at < self.reset_s

    def retry_in_s(self, now_s: float) -> float:
        """How long a deferred call should wait before trying again."""
        if self.state is BreakerState.OPEN:
            return max(self.opened_at + self.reset_s - now_s, 0.0)
        return min(self.reset_s, 1.0)

    def record(self, now_s: float, ok: bool) -> None:
        if self.state is BreakerState.HALF_OPEN:
            self._probing = False
            if ok:
                self.state = BreakerState.CLOSED
                self._forget()
            else:
                self._open(now_s)
            return
        if self.state is BreakerState.OPEN:
            return  # an answer to a call made before it opened
        self._calls.append((now_s, ok))
        self._failures += not ok
        while self._calls and self._calls[0][0] < now_s - self.window_s:
            _, good = self._calls.popleft()
            self._failures -= not good
        calls = len(self._calls)
        if calls >= self.min_calls and self._failures * 100 >= self.threshold_pct * calls:
            self._open(now_s)

    def trip(self, now_s: float) -> None:
        """The provider could not be reached at all: that needs no rate to judge,
        so the breaker opens at once (a half-open probe that could not connect
        reopens it).  While it is open greetings wait without spending attempts,
        however few of them there are to make up a rate."""
        if not self.is_open(now_s):  # closed, half-open, or open with its period over
            self._probing = False
            self._open(now_s)

    def _open(self, now_s: float) -> None:
        self.state = BreakerState.OPEN
        self.opened_at = now_s
        self._forget()

    def _forget(self) -> None:
        self._calls.clear()
        self._failures = 0
