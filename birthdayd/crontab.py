"""Crontab expressions for the scheduler's jobs, as APScheduler triggers.

Five fields as in crontab (minute first), or six with seconds first (an
extension, used by tests for a fast cadence).  Always UTC.
"""

from __future__ import annotations

import datetime as dt
import re

from apscheduler.triggers.cron import CronTrigger

_DOW_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _crontab_dow(field: str) -> str:
    """Crontab numbers days of the week from 0 = Sunday (7 too); APScheduler 3
    from 0 = Monday.  Numeric parts (``0``, ``1-5``, ``*/2``, ``1-5/2``) are
    expanded with crontab's meaning into day names, which both agree on."""
    parts = []
    for part in field.split(","):
        match = re.fullmatch(r"(\*|(\d+)(?:-(\d+))?)(?:/(\d+))?", part)
        if not match:
            parts.append(part)  # names, e.g. mon-fri
            continue
        _, first, last, step = match.groups()
        low, high = (0, 6) if first is None else (int(first), int(last or first))
        if step is not None and first is not None and last is None:
            high = 6  # "1/2" means from Monday on, every other day
        if not 0 <= low <= high <= 7 or (step is not None and int(step) == 0):
            raise ValueError(f"day of week {part!r} is out of range 0-7")
        days = range(low, high + 1, int(step or 1))
        parts.extend(sorted({_DOW_NAMES[d % 7] for d in days}, key=_DOW_NAMES.index))
    return ",".join(parts)


def cron_trigger(expr: str) -> CronTrigger:
    fields = expr.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) == 6:
        second, minute, hour, day, month, dow = fields
        return CronTrigger(
            second=second,
            minute=minute,
            hour=hour,
            day=day,
            month=month,
            day_of_week=_crontab_dow(dow),
            timezone=dt.UTC,
        )
    raise ValueError(f"expected 5 fields (or 6 with seconds), got {len(fields)}")
