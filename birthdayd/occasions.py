"""The occasions birthdayd greets, and their calendar rule (pure)."""

from __future__ import annotations

import calendar
import dataclasses
import datetime as dt


@dataclasses.dataclass(frozen=True)
class Occasion:
    name: str
    """The value stored in ``messages.occasion`` and shown in the API."""
    field: str
    """The user field (API name) that holds the occasion's original date."""
    template: str

    def message(self, first_name: str, last_name: str) -> str:
        return self.template.format(first=first_name, last=last_name)


BIRTHDAY = Occasion("birthday", "birthday", "Hey, {first} {last} it's your birthday")
ANNIVERSARY = Occasion("anniversary", "anniversary", "Hey, {first} {last} happy anniversary")

OCCASIONS: dict[str, Occasion] = {o.name: o for o in (BIRTHDAY, ANNIVERSARY)}


def occurrence(origin: dt.date, year: int) -> dt.date:
    """The date an occasion that began on ``origin`` falls on in ``year``.

    29 February falls on 28 February in non-leap years.
    """
    if origin.month == 2 and origin.day == 29 and not calendar.isleap(year):
        return dt.date(year, 2, 28)
    return origin.replace(year=year)
