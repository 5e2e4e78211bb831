"""An independent oracle for the calendar rules of docs/ARCHITECTURE.md §1.

It never calls ``birthdayd.schedule`` nor ``birthdayd.occasions``, and it never
converts a *local* wall time to UTC (the direction where ``fold`` and gaps
matter).  It only asks the zone for the UTC offset in force at whole-second
POSIX timestamps, which is unambiguous, and reasons on integers:

* Between two transitions the offset is constant, so the wall clock is
  ``t + offset`` and increases with ``t``.
* The send instant for local date ``D`` and hour ``H`` is the smallest
  ``t`` whose wall time is ``>= D H:00``.  Inside one constant-offset segment
  ``[start, end)`` that is ``max(start, target - offset)`` if it is before
  ``end``; the answer is the smallest such candidate over all segments.

That definition gives the three rules at once: an ordinary wall time maps to
the one instant that shows it; a repeated wall time (fold) maps to the first
instant that shows it, since before it the wall clock was lower; a missing
wall time (gap) maps to the transition instant, since just before it the wall
clock was lower and from it on the wall clock is past the target.

Transitions are found by stepping an hour at a time and bisecting to the
second where the offset changes.  That relies on no two transitions being
less than an hour apart, which holds by far for every zone since 1970 (the
closest are ~6.9 days apart: checked against the compiled tz data when this
oracle was written), and on offsets staying within ±16 h (the tz database
has -12 h to +14 h since 1970), which :func:`send_instant` asserts.
"""

from __future__ import annotations

import calendar
import datetime as dt
import zoneinfo

UTC = dt.UTC
EPOCH = dt.datetime(1970, 1, 1)
HOUR_S = 3600
DAY_S = 86400
WINDOW_S = 16 * HOUR_S
"""Offsets since 1970 lie within ±WINDOW_S, so the answer is within it of the target."""


def occurrence(origin: dt.date, year: int) -> dt.date:
    """``origin``'s month and day in ``year``; 29 Feb becomes 28 Feb in common years."""
    if (origin.month, origin.day) == (2, 29) and not calendar.isleap(year):
        return dt.date(year, 2, 28)
    return dt.date(year, origin.month, origin.day)


def offset_s(zone: zoneinfo.ZoneInfo, t: int) -> int:
    """The UTC offset, in seconds, in force in ``zone`` at POSIX second ``t``."""
    off = dt.datetime.fromtimestamp(t, zone).utcoffset()
    assert off is not None
    assert off.microseconds == 0
    return off.days * DAY_S + off.seconds


def _first_change(zone: zoneinfo.ZoneInfo, lo: int, hi: int) -> int:
    """The first second in ``(lo, hi]`` whose offset differs from ``lo``'s (one change assumed)."""
    before = offset_s(zone, lo)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if offset_s(zone, mid) == before:
            lo = mid
        else:
            hi = mid
    return hi


def segments(zone: zoneinfo.ZoneInfo, lo: int, hi: int) -> list[tuple[int, int, int]]:
    """``(start, end, offset)`` segments, ``end`` exclusive, covering ``[lo, hi]``."""
    out: list[tuple[int, int, int]] = []
    start, off = lo, offset_s(zone, lo)
    t = lo
    while t < hi:
        nxt = min(t + HOUR_S, hi)
        if offset_s(zone, nxt) != off:
            change = _first_change(zone, t, nxt)
            out.append((start, change, off))
            start, off = change, offset_s(zone, change)
        t = nxt
    out.append((start, hi + 1, off))
    return out


def _to_seconds(naive: dt.datetime) -> int:
    delta = naive - EPOCH
    return delta.days * DAY_S + delta.seconds


def _from_seconds(t: int) -> dt.datetime:
    return (EPOCH + dt.timedelta(seconds=t)).replace(tzinfo=UTC)


def send_instant(day: dt.date, hour: int, zone: zoneinfo.ZoneInfo) -> dt.datetime:
    """The first UTC instant whose wall time in ``zone`` is at or after ``day`` ``hour``:00."""
    target = _to_seconds(dt.datetime(day.year, day.month, day.day, hour))
    best: int | None = None
    for start, end, off in segments(zone, target - WINDOW_S, target + WINDOW_S):
        assert abs(off) < WINDOW_S, (zone, day, off)
        candidate = max(start, target - off)
        if candidate < end and (best is None or candidate < best):
            best = candidate
    assert best is not None, (zone, day, hour)
    return _from_seconds(best)


def transitions(zone: zoneinfo.ZoneInfo, year: int) -> list[tuple[dt.datetime, int, int]]:
    """Offset changes during UTC ``year``: ``(instant, offset before, offset after)`` in seconds.

    Steps a day at a time (transitions are days apart), then bisects.
    """
    lo = _to_seconds(dt.datetime(year, 1, 1))
    hi = _to_seconds(dt.datetime(year + 1, 1, 1))
    out: list[tuple[dt.datetime, int, int]] = []
    t, off = lo, offset_s(zone, lo)
    while t < hi:
        nxt = min(t + DAY_S, hi)
        new = offset_s(zone, nxt)
        if new != off:
            change = _first_change(zone, t, nxt)
            out.append((_from_seconds(change), off, offset_s(zone, change)))
        t, off = nxt, new
    return out


def transition_days(zone: zoneinfo.ZoneInfo, year: int) -> list[dt.date]:
    """Local dates on which ``zone``'s clock jumps in ``year`` (both sides of each jump)."""
    days: set[dt.date] = set()
    for instant, before, after in transitions(zone, year):
        naive = instant.replace(tzinfo=None)
        days.add((naive + dt.timedelta(seconds=before - 1)).date())
        days.add((naive + dt.timedelta(seconds=after)).date())
    return sorted(days)
