"""Backpressure for the tick (pure): how many more greetings may be queued.

A queued row's lease (``QUEUED_LEASE_S``) must never run out while the row
waits its turn in a healthy backlog, or recovery would publish it a second
time.  So the tick claims only what the workers can take well within the
lease: the rows ``queued`` (claimed and published, not yet taken by a worker:
counted in PostgreSQL, exact and shared by every scheduler replica) may grow
to ``high_water``, what the workers took in the last stretch of time scaled to
half the lease (never below ``floor``, which also covers a cold start with no
measurement yet, and never above ``ceiling``, what the broker holds well).
The rest stays ``scheduled``, leased to nobody, and is claimed as the backlog
drains.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class Flow:
    lease_s: float
    floor: int = 5_000
    """Queued rows always allowed: a cold start, a quiet system."""
    ceiling: int = 100_000
    """Queued rows never exceeded, however fast the workers: the broker holds
    every queued id (a quorum queue keeps each one's index in memory, and a
    broker past its memory watermark blocks every publisher)."""
    smoothing: float = 0.3
    """Weight of the newest drain-rate sample (exponential moving average)."""
    min_interval_s: float = 1.0
    """Readings closer together than this measure no rate (too noisy)."""
    rate: float = 0.0
    """Rows the workers take per second, as last measured."""
    queued: int = 0
    """Rows queued at the last reading."""
    _last: tuple[float, int, int] | None = None
    """(time, queued, rows claimed so far) at the last rate measurement."""
    _claimed: int = 0

    def claimed(self, count: int) -> None:
        """This process queued ``count`` more rows."""
        self._claimed += count
        self.queued += count

    def observe(self, now_s: float, queued: int) -> None:
        """A count of the rows queued, at monotonic time ``now_s``."""
        self.queued = queued
        if self._last is None:
            self._last = (now_s, queued, self._claimed)
            return
        then_s, then_queued, then_claimed = self._last
        elapsed = now_s - then_s
        if elapsed < self.min_interval_s:
            return
        # Other schedulers' claims are not counted here, so this can only
        # underestimate the rate: backpressure errs on the safe side.
        taken = then_queued + (self._claimed - then_claimed) - queued
        sample = max(taken, 0) / elapsed
        self.rate = sample if self.rate == 0 else (
            self.smoothing * sample + (1 - self.smoothing) * self.rate)
        self._last = (now_s, queued, self._claimed)

    @property
    def high_water(self) -> int:
        return min(self.ceiling, max(self.floor, int(self.rate * self.lease_s / 2)))

    def room(self) -> int:
        """How many more rows may be claimed now."""
        return max(self.high_water - self.queued, 0)
