"""Backpressure for the tick (pure): how many more ids the queue may take.

A queued row's lease (``QUEUED_LEASE_S``) must never run out while the row
waits its turn in a healthy backlog, or recovery would publish it a second
time.  So the tick claims only what the workers can drain well within the
lease: the queue's ready depth may grow to ``high_water``, the number of ids
the workers drained in the last stretch of time scaled to half the lease
(never below ``floor``, which also covers a cold start with no measurement
yet).  The rest stays ``scheduled`` in PostgreSQL, leased to nobody, and is
claimed as the queue drains.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class Flow:
    lease_s: float
    floor: int = 5_000
    """Ready ids always allowed: a cold start, a quiet system."""
    smoothing: float = 0.3
    """Weight of the newest drain-rate sample (exponential moving average)."""
    rate: float = 0.0
    """Ids the consumers take per second, as last measured."""
    _last: tuple[float, int, int] | None = None
    """(time, ready depth, ids published so far) at the previous observation."""
    _published: int = 0
    _unconfirmed: int = 0
    """Claimed and being published: not in the queue's depth yet."""

    def published(self, count: int) -> None:
        self._published += count
        self._unconfirmed += count

    def settled(self, count: int) -> None:
        """``count`` of those publishes ended (confirmed, or failed and handed back)."""
        self._unconfirmed -= count

    def observe(self, now_s: float, depth: int) -> None:
        """A reading of the queue's ready depth at monotonic time ``now_s``."""
        if self._last is not None:
            then_s, then_depth, then_published = self._last
            elapsed = now_s - then_s
            if elapsed >= 0.2:
                drained = then_depth + (self._published - then_published) - depth
                sample = max(drained, 0) / elapsed
                self.rate = sample if self.rate == 0 else (
                    self.smoothing * sample + (1 - self.smoothing) * self.rate)
            else:
                return  # too close to the last reading to say anything
        self._last = (now_s, depth, self._published)

    @property
    def high_water(self) -> int:
        return max(self.floor, int(self.rate * self.lease_s / 2))

    def room(self, depth: int) -> int:
        """How many more ids may be published now."""
        return max(self.high_water - depth - self._unconfirmed, 0)
