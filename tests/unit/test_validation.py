"""validation.validate_user (pure, docs/ARCHITECTURE.md §1 and §4.4): JSON in, clean column values
or errors by API field name out.  No database, no clock but the `now` passed in."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from birthdayd import validation

UTC = dt.UTC
NOW = dt.datetime(2027, 1, 15, 12, 0, tzinfo=UTC)
PROPERTY = settings(max_examples=200, deadline=None, derandomize=True, database=None)

BODY: dict[str, Any] = {
    "firstName": "Ada",
    "lastName": "Lovelace",
    "email": "ada@example.com",
    "birthday": "1990-01-15",
    "location": "America/New_York",
}
STORED: dict[str, Any] = {
    "id": "00000000-0000-7000-8000-000000000000",
    "first_name": "Ada",
    "last_name": "Lovelace",
    "email": "ada@example.com",
    "birthday": dt.date(1990, 1, 15),
    "anniversary": dt.date(2015, 6, 20),
    "location": "America/New_York",
    "created_at": NOW,
    "updated_at": NOW,
    "deleted_at": None,
}
COLUMNS = {"first_name", "last_name", "email", "birthday", "anniversary", "location"}


def check(body: Any, now: dt.datetime = NOW, current: dict[str, Any] | None = None
          ) -> tuple[dict[str, Any], dict[str, str]]:
    return validation.validate_user(body, now, current)


def errors_of(body: Any, now: dt.datetime = NOW,
              current: dict[str, Any] | None = None) -> dict[str, str]:
    return check(body, now, current)[1]


# -- a valid POST -------------------------------------------------------------------


def test_a_valid_body_gives_the_column_values_and_no_errors() -> None:
    values, errors = check({**BODY, "anniversary": "2015-06-20"})
    assert errors == {}
    assert values == {
        "first_name": "Ada",
        "last_name": "Lovelace",
        "email": "ada@example.com",
        "birthday": dt.date(1990, 1, 15),
        "anniversary": dt.date(2015, 6, 20),
        "location": "America/New_York",
    }


def test_the_anniversary_is_optional_and_none_when_absent_or_null() -> None:
    assert check(BODY) == ({**check(BODY)[0], "anniversary": None}, {})
    values, errors = check({**BODY, "anniversary": None})
    assert errors == {}
    assert values["anniversary"] is None


def test_names_and_email_are_trimmed() -> None:
    values, errors = check({**BODY, "firstName": "  Ada\t", "lastName": "\nLovelace ",
                            "email": " ada@example.com  "})
    assert errors == {}
    assert (values["first_name"], values["last_name"], values["email"]) == (
        "Ada", "Lovelace", "ada@example.com")


def test_read_only_fields_are_ignored() -> None:
    values, errors = check({**BODY, "id": "x", "schedule": [], "createdAt": 1,
                            "updatedAt": None})
    assert errors == {}
    assert set(values) == COLUMNS


# -- required and unknown fields ---------------------------------------------------------


@pytest.mark.parametrize("field", ["firstName", "lastName", "email", "birthday", "location"])
def test_each_required_field_is_required_on_post(field: str) -> None:
    body = {k: v for k, v in BODY.items() if k != field}
    assert set(errors_of(body)) == {field}


def test_an_empty_object_lists_every_required_field() -> None:
    assert set(errors_of({})) == {"firstName", "lastName", "email", "birthday", "location"}


@pytest.mark.parametrize("field", ["nickname", "first_name", "FirstName", "", "body"])
def test_an_unknown_field_is_an_error_named_after_it(field: str) -> None:
    assert set(errors_of({**BODY, field: "x"})) == {field}


@pytest.mark.parametrize("body", [[], [BODY], "Ada", 1, 1.5, None, True])
def test_a_body_that_is_not_an_object_is_an_error_on_body(body: Any) -> None:
    assert errors_of(body) == {"body": "must be a JSON object"}


# -- types ---------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["firstName", "lastName", "email", "birthday", "location",
                                   "anniversary"])
@pytest.mark.parametrize("value", [0, 1.5, True, False, [], ["Ada"], {}, {"a": 1}, None])
def test_a_value_of_the_wrong_type_is_an_error_on_its_field(field: str, value: Any) -> None:
    if field == "anniversary" and value is None:
        assert errors_of({**BODY, field: value}) == {}
    else:
        assert set(errors_of({**BODY, field: value})) == {field}


# -- names ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["A", "A" * 100, "Zoë", "李", "José María", "O'Brien",
                                  "Ångström-Ñúñez", "👩‍🔬", "  " + "B" * 100 + "  "])
def test_names_of_1_to_100_characters_are_accepted(name: str) -> None:
    values, errors = check({**BODY, "firstName": name, "lastName": name})
    assert errors == {}
    assert values["first_name"] == name.strip()


@pytest.mark.parametrize("name", ["", " ", "\t\n", "A" * 101, "Ad\x00a", "Ad\x07a", "Ad\x1ba",
                                  "Ad\x7fa", "Ad\x85a", "Ad\x9fa", "Line\nbreak"])
def test_empty_long_or_control_character_names_are_refused(name: str) -> None:
    assert set(errors_of({**BODY, "firstName": name, "lastName": name})) == {
        "firstName", "lastName"}


# -- email ---------------------------------------------------------------------------------


@pytest.mark.parametrize("email", ["a@b.co", "ada.lovelace+tag@example.co.uk",
                                   "ADA@EXAMPLE.COM", "é@ü.de", "a" * 242 + "@example.com"])
def test_plausible_emails_are_accepted(email: str) -> None:
    values, errors = check({**BODY, "email": email})
    assert errors == {}
    assert values["email"] == email


@pytest.mark.parametrize("email", ["", "ada", "ada.example.com", "@example.com", "ada@",
                                   "ada@@example.com", "a@b@example.com", "ada @example.com",
                                   "ada@exa mple.com", "ada@example", "ada@example.",
                                   "a" * 243 + "@example.com", "ada@example.com\x00",
                                   "ada\n@example.com"])
def test_implausible_emails_are_refused(email: str) -> None:
    assert set(errors_of({**BODY, "email": email})) == {"email"}


# -- dates ----------------------------------------------------------------------------------


@pytest.mark.parametrize("day", ["1990-02-30", "1990-13-01", "1990-00-10", "1990-01-00",
                                 "1990-02-29", "19900101", "1990-1-5", "", "1990/01/15",
                                 "15-01-1990", "1990-01-15T00:00", "0000-01-01",
                                 "1990-01-15\n", " 1990-01-15",
                                 "\u0661\u0669\u0669\u0660-\u0660\u0661-\u0661\u0665"])
@pytest.mark.parametrize("field", ["birthday", "anniversary"])
def test_a_date_must_be_a_real_yyyy_mm_dd(field: str, day: str) -> None:
    assert set(errors_of({**BODY, field: day})) == {field}


@pytest.mark.parametrize("day", ["1992-02-29", "2000-02-29", "0001-01-01", "1990-12-31"])
def test_real_dates_are_accepted(day: str) -> None:
    values, errors = check({**BODY, "birthday": day})
    assert errors == {}
    assert values["birthday"] == dt.date.fromisoformat(day)


@pytest.mark.parametrize(("location", "day", "ok"), [
    # 2027-01-15T12:00Z: 2027-01-16 02:00 in Kiritimati (UTC+14),
    # 2027-01-15 in UTC, 2027-01-15 01:00 in Pago Pago (UTC-11), 00:00 in Etc/GMT+12.
    ("Pacific/Kiritimati", "2027-01-16", True),
    ("Pacific/Kiritimati", "2027-01-17", False),
    ("UTC", "2027-01-15", True),
    ("UTC", "2027-01-16", False),
    ("Pacific/Pago_Pago", "2027-01-15", True),
    ("Pacific/Pago_Pago", "2027-01-16", False),
    ("Etc/GMT+12", "2027-01-15", True),
    ("Etc/GMT-14", "2027-01-16", True),
])
@pytest.mark.parametrize("field", ["birthday", "anniversary"])
def test_a_date_is_in_the_future_only_after_today_in_the_users_zone(
    field: str, location: str, day: str, ok: bool
) -> None:
    errors = errors_of({**BODY, "location": location, field: day})
    assert errors == ({} if ok else {field: errors[field]})
    if not ok:
        assert "future" in errors[field]


def test_the_zone_boundary_is_local_midnight() -> None:
    """Etc/GMT+12 is UTC-12: its 2027-01-16 begins at 2027-01-16T12:00Z."""
    body = {**BODY, "location": "Etc/GMT+12", "birthday": "2027-01-16"}
    assert set(errors_of(body, dt.datetime(2027, 1, 16, 11, 59, 59, tzinfo=UTC))) == {
        "birthday"}
    assert errors_of(body, dt.datetime(2027, 1, 16, 12, 0, 0, tzinfo=UTC)) == {}


def test_a_bad_location_is_reported_alone_when_the_dates_are_fine() -> None:
    assert errors_of({**BODY, "location": "Mars/Olympus", "birthday": "1990-01-15"}) == {
        "location": errors_of({**BODY, "location": "Mars/Olympus"})["location"]}


@pytest.mark.parametrize("field", ["birthday", "anniversary"])
def test_with_a_bad_location_a_date_in_the_future_everywhere_is_reported_too(field: str) -> None:
    """At NOW (12:00Z on 15 January) UTC+14 is already on the 16th: the 16th may be
    today in the user's zone, whatever it is meant to be; the 17th is nowhere yet."""
    bad = {**BODY, "location": "Mars/Olympus"}
    assert set(errors_of({**bad, field: "2027-01-16"})) == {"location"}
    errors = errors_of({**bad, field: "2027-01-17"})
    assert set(errors) == {"location", field}
    assert errors[field] == ("must not be in the future (no zone's date is later than "
                             "2027-01-16)")


# -- zones ----------------------------------------------------------------------------------


@pytest.mark.parametrize("location", ["UTC", "Etc/GMT+12", "America/Argentina/Buenos_Aires",
                                      "America/Port-au-Prince", "Asia/Kathmandu",
                                      "Australia/Melbourne", "America/New_York"])
def test_iana_zone_names_are_accepted(location: str) -> None:
    values, errors = check({**BODY, "location": location})
    assert errors == {}
    assert values["location"] == location


@pytest.mark.parametrize("location", ["Mars/Olympus", "america/new_york", "EST5EDT ", " UTC",
                                      "", "+05:00", "UTC+5", "GMT+5:30", "../../etc/passwd",
                                      "America/", "/usr/share/zoneinfo/UTC", "UTC\x00"])
def test_anything_but_an_iana_zone_name_is_refused(location: str) -> None:
    errors = errors_of({**BODY, "location": location})
    assert set(errors) == {"location"}


def test_every_iana_zone_is_accepted() -> None:
    """Every zone of the tz database (the tzdata package: ~600 names) is accepted
    and loadable; the host's extra files (``localtime``) are not zones."""
    assert len(validation.zones()) > 590
    assert validation.zones() <= zoneinfo.available_timezones()
    for name in sorted(validation.zones()):
        _, errors = check({**BODY, "location": name, "birthday": "1990-01-01"})
        assert errors == {}, name
        zoneinfo.ZoneInfo(name)


# -- PUT: a subset applied to the stored user -------------------------------------------------


def test_a_put_applies_a_subset_to_the_stored_user() -> None:
    values, errors = check({"firstName": " Augusta ", "location": "Asia/Kathmandu"},
                           current=dict(STORED))
    assert errors == {}
    assert values["first_name"] == "Augusta"
    assert values["location"] == "Asia/Kathmandu"
    assert values["last_name"] == "Lovelace"
    assert values["birthday"] == dt.date(1990, 1, 15)
    assert values["anniversary"] == dt.date(2015, 6, 20)


def test_an_empty_put_keeps_everything() -> None:
    values, errors = check({}, current=dict(STORED))
    assert errors == {}
    assert {k: values[k] for k in COLUMNS} == {k: STORED[k] for k in COLUMNS}


def test_a_put_can_remove_the_anniversary_with_null() -> None:
    values, errors = check({"anniversary": None}, current=dict(STORED))
    assert errors == {}
    assert values["anniversary"] is None


def test_a_put_does_not_require_fields() -> None:
    assert errors_of({"email": "new@example.com"}, current=dict(STORED)) == {}


@pytest.mark.parametrize(("field", "value"), [("firstName", None), ("lastName", ""),
                                              ("birthday", None), ("location", None),
                                              ("email", None), ("nickname", "x")])
def test_a_put_cannot_null_or_blank_a_required_field(field: str, value: Any) -> None:
    assert set(errors_of({field: value}, current=dict(STORED))) == {field}


def test_a_put_does_not_modify_the_current_dict() -> None:
    current = dict(STORED)
    check({"firstName": "Augusta", "anniversary": None}, current=current)
    assert current == STORED


def test_a_put_moving_to_a_zone_where_the_stored_birthday_is_tomorrow_is_refused() -> None:
    current = {**STORED, "location": "Pacific/Kiritimati", "birthday": dt.date(2027, 1, 16),
               "anniversary": None}
    assert set(errors_of({"location": "UTC"}, current=current)) == {"birthday"}


# -- properties -------------------------------------------------------------------------------

_TEXT = st.text(max_size=20)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=6,
)
_PLAUSIBLE = {
    "firstName": st.sampled_from(["Ada", " ", "A" * 101, "\x00"]) | _TEXT,
    "lastName": st.sampled_from(["Lovelace", ""]) | _TEXT,
    "email": st.sampled_from(["ada@example.com", "x@y", "a@b.c"]) | _TEXT,
    "birthday": st.dates().map(dt.date.isoformat) | _TEXT,
    "location": st.sampled_from(sorted(zoneinfo.available_timezones())) | _TEXT,
    "anniversary": st.none() | st.dates().map(dt.date.isoformat),
}
_BODIES = (st.fixed_dictionaries({}, optional={k: v | _JSON for k, v in _PLAUSIBLE.items()})
           | _JSON)
_NOWS = st.datetimes(min_value=dt.datetime(1900, 1, 2), max_value=dt.datetime(9999, 12, 30),
                     timezones=st.just(UTC))


@PROPERTY
@given(body=_BODIES, now=_NOWS, put=st.booleans())
def test_validate_user_never_raises_and_errors_name_fields_of_the_body(
    body: Any, now: dt.datetime, put: bool
) -> None:
    values, errors = check(body, now, dict(STORED) if put else None)
    assert all(isinstance(k, str) and isinstance(v, str) and v for k, v in errors.items())
    if not isinstance(body, dict):
        assert errors == {"body": "must be a JSON object"}
        return
    allowed = set(validation.USER_FIELDS) | set(body)
    assert set(errors) <= allowed
    if not errors:
        assert set(values) >= COLUMNS
        assert isinstance(values["first_name"], str)
        assert 1 <= len(values["first_name"]) <= 100
        assert 1 <= len(values["last_name"]) <= 100
        assert len(values["email"]) <= 254
        assert isinstance(values["birthday"], dt.date)
        assert values["location"] in zoneinfo.available_timezones()
        today = now.astimezone(zoneinfo.ZoneInfo(values["location"])).date()
        assert values["birthday"] <= today
        assert values["anniversary"] is None or values["anniversary"] <= today


@PROPERTY
@given(day=st.dates(max_value=dt.date(2027, 1, 14)), location=st.sampled_from(
    ["UTC", "Pacific/Kiritimati", "Etc/GMT+12", "Asia/Kathmandu"]))
def test_any_real_past_date_is_a_valid_birthday(day: dt.date, location: str) -> None:
    values, errors = check({**BODY, "birthday": day.isoformat(), "location": location})
    assert errors == {}
    assert values["birthday"] == day


def test_zones_are_the_tzdata_packages_not_the_hosts() -> None:
    """A host's ``localtime`` is not an IANA zone; a replica without it could not
    load it.  Every IANA zone is accepted, nothing else."""
    now = dt.datetime(2027, 1, 15, 12, tzinfo=dt.UTC)
    _, errors = validation.validate_user(
        {"firstName": "A", "lastName": "B", "email": "a@example.com",
         "birthday": "1990-01-01", "location": "localtime"}, now)
    assert "location" in errors
    assert "localtime" not in validation.zones()
    assert {"UTC", "Etc/GMT+12", "America/Argentina/Buenos_Aires",
            "America/Port-au-Prince", "Asia/Kathmandu"} <= validation.zones()
