"""occasions: the occurrence rule (29 Feb → 28 Feb in common years) and the message texts."""

from __future__ import annotations

import datetime as dt

import pytest

from birthdayd import occasions

ALL_MONTH_DAYS = [
    dt.date(2000, 1, 1) + dt.timedelta(days=n) for n in range(366)
]  # 2000 is a leap year: every month/day once, 29 Feb included


def test_the_origin_table_has_all_366_month_days() -> None:
    """The fixture covers every month/day, 29 Feb included, once."""
    assert len({(d.month, d.day) for d in ALL_MONTH_DAYS}) == 366
    assert dt.date(2000, 2, 29) in ALL_MONTH_DAYS


@pytest.mark.parametrize("year", [2024, 2028, 2000, 2400, 1972])
def test_occurrence_in_a_leap_year_keeps_every_month_and_day(year: int) -> None:
    """In a leap year every origin, 29 Feb included, falls on its own month and day."""
    for origin in ALL_MONTH_DAYS:
        assert occasions.occurrence(origin, year) == dt.date(year, origin.month, origin.day)


@pytest.mark.parametrize("year", [2027, 2025, 2100, 1900, 2001, 1971])
def test_occurrence_in_a_common_year_moves_only_29_february_to_28_february(year: int) -> None:
    """In a common year 29 Feb falls on 28 Feb; every other origin keeps its month and day."""
    for origin in ALL_MONTH_DAYS:
        got = occasions.occurrence(origin, year)
        if (origin.month, origin.day) == (2, 29):
            assert got == dt.date(year, 2, 28)
        else:
            assert got == dt.date(year, origin.month, origin.day)


@pytest.mark.parametrize(
    ("origin", "year", "expected"),
    [
        (dt.date(1996, 2, 29), 2027, dt.date(2027, 2, 28)),
        (dt.date(1996, 2, 29), 2028, dt.date(2028, 2, 29)),
        (dt.date(1996, 2, 29), 2100, dt.date(2100, 2, 28)),  # divisible by 100: common
        (dt.date(1996, 2, 29), 2000, dt.date(2000, 2, 29)),  # divisible by 400: leap
        (dt.date(1996, 2, 28), 2027, dt.date(2027, 2, 28)),
        (dt.date(1996, 3, 1), 2027, dt.date(2027, 3, 1)),
        (dt.date(1990, 12, 31), 2027, dt.date(2027, 12, 31)),
        (dt.date(1990, 1, 1), 2027, dt.date(2027, 1, 1)),
    ],
)
def test_occurrence_named_cases(origin: dt.date, year: int, expected: dt.date) -> None:
    """Hand-picked origins, the century rule included, fall on the expected date."""
    assert occasions.occurrence(origin, year) == expected


def test_occurrence_ignores_the_origin_year() -> None:
    """The same month/day from different origin years gives the same occurrence."""
    for origin_year in (1900, 1999, 2004, 2027, 2030):
        assert occasions.occurrence(dt.date(origin_year, 7, 4), 2027) == dt.date(2027, 7, 4)


def test_birthday_message_text_is_exact() -> None:
    """The birthday text is exactly "Hey, <first> <last> it's your birthday"."""
    assert occasions.OCCASIONS["birthday"].message("Ada", "Lovelace") == (
        "Hey, Ada Lovelace it's your birthday"
    )


def test_anniversary_message_text_is_exact() -> None:
    """The anniversary text is exactly "Hey, <first> <last> happy anniversary"."""
    assert occasions.OCCASIONS["anniversary"].message("Ada", "Lovelace") == (
        "Hey, Ada Lovelace happy anniversary"
    )


def test_message_keeps_names_verbatim_even_with_braces() -> None:
    """Names are inserted as given: braces or unicode in a name are not interpreted."""
    assert occasions.OCCASIONS["birthday"].message("{last}", "Zoë {0}") == (
        "Hey, {last} Zoë {0} it's your birthday"
    )


def test_occasions_are_exactly_birthday_and_anniversary() -> None:
    """There are two occasions, each named after, and read from, its own user field."""
    assert set(occasions.OCCASIONS) == {"birthday", "anniversary"}
    for name, occasion in occasions.OCCASIONS.items():
        assert occasion.name == name
        assert occasion.field == name
