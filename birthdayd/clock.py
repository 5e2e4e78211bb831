"""The one place that reads the wall clock.

Everything else receives ``now`` (an aware UTC datetime) from a :class:`Clock`,
so tests move time instead of sleeping and SQL never calls ``now()`` to decide
what is due.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Protocol

UTC = dt.UTC


class Clock(Protocol):
    def now(self) -> dt.datetime: ...


class SystemClock:
    """The host's clock (``faketime`` works on it, since it reads ``time.time``)."""

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(time.time(), UTC)


class OffsetClock:
    """Starts at a given instant and then runs at real speed.

    Used by ``BIRTHDAYD_NOW`` so end-to-end tests and demos can run real
    processes "on someone's birthday" without touching the host's clock.
    """

    def __init__(self, start: dt.datetime) -> None:
        self._offset_s = start.timestamp() - time.time()

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(time.time() + self._offset_s, UTC)


class ManualClock:
    """A clock that moves only when told to (tests)."""

    def __init__(self, start: dt.datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("ManualClock needs an aware datetime")
        self._now = start.astimezone(UTC)

    def now(self) -> dt.datetime:
        return self._now

    def set(self, when: dt.datetime) -> None:
        self._now = when.astimezone(UTC)
