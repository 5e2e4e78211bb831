"""When a greeting is due: local date and send hour to a UTC instant (pure).

The rules (docs/ARCHITECTURE.md, "When"): ``SEND_HOUR``:00 local time on the occasion's local
date, following the tz database.  A wall time inside a gap (spring forward)
becomes the first instant after the gap; a wall time that happens twice (fall
back) is its first occurrence.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import zoneinfo

from birthdayd import occasions

UTC = dt.UTC
_ONE_SECOND = dt.timedelta(seconds=1)


@dataclasses.dataclass(frozen=True)
class Greeting:
    date: dt.date
    """The occasion's local date (28 Feb for a 29 Feb origin in a common year)."""
    send_at: dt.datetime
    """The first instant (UTC) at which it may be sent."""


def _wall(instant: dt.datetime, zone: zoneinfo.ZoneInfo) -> dt.datetime:
    return instant.astimezone(zone).replace(tzinfo=None)


def send_instant(day: dt.date, hour: int, zone: zoneinfo.ZoneInfo) -> dt.datetime:
    """The UTC instant of ``hour``:00 local on ``day`` in ``zone``."""
    wall = dt.datetime.combine(day, dt.time(hour))
    # fold=0 is the first occurrence of an ambiguous wall time: what we want.
    first = wall.replace(tzinfo=zone).astimezone(UTC)
    if _wall(first, zone) == wall:
        return first
    # ``wall`` does not exist (a gap).  zoneinfo maps fold=0 with the offset
    # before the transition, fold=1 with the offset after it; the transition
    # instant lies between the two, and it is the first instant after the gap.
    late = first
    early = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if early > late:
        early, late = late, early
    # Bisect to the second on which the offset changes.
    before = early.astimezone(zone).utcoffset()
    while late - early > _ONE_SECOND:
        mid = (early + (late - early) / 2).replace(microsecond=0)
        if mid.astimezone(zone).utcoffset() == before:
            early = mid
        else:
            late = mid
    return late


def local_today(now: dt.datetime, zone: zoneinfo.ZoneInfo) -> dt.date:
    return now.astimezone(zone).date()


def next_greeting(
    origin: dt.date,
    zone: zoneinfo.ZoneInfo,
    hour: int,
    now: dt.datetime,
    after: dt.date | None = None,
) -> Greeting:
    """The first greeting for an occasion that began on ``origin``.

    It is the earliest occurrence, in a year after the origin's own year, whose
    send instant is strictly after ``now`` (at or after 09:00 local on the day,
    nothing is owed until next year) and whose date is after ``after`` (the
    last greeting already planned, if any).
    """
    year = max(local_today(now, zone).year - 1, origin.year + 1)
    if after is not None:
        year = max(year, after.year)
    while True:
        day = occasions.occurrence(origin, year)
        if after is None or day > after:
            at = send_instant(day, hour, zone)
            if at > now:
                return Greeting(day, at)
        year += 1
