"""Validation of user input (pure): JSON in, clean fields or field errors out."""

from __future__ import annotations

import datetime as dt
import functools
import importlib.resources
import re
import zoneinfo
from typing import Any

from birthdayd import calendar_rules

# API name -> column name.
USER_FIELDS = {
    "firstName": "first_name",
    "lastName": "last_name",
    "email": "email",
    "birthday": "birthday",
    "location": "location",
    "anniversary": "anniversary",
}
REQUIRED = ("firstName", "lastName", "email", "birthday", "location")
# Fields a client may echo back from a response; they are ignored, not errors.
READ_ONLY = frozenset({"id", "schedule", "createdAt", "updatedAt"})

NAME_MAX = 100
EMAIL_MAX = 254
# Deliberately simple: one @, no spaces, a dot in the domain.  The provider is
# the judge of deliverability; this only catches typos.
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")

# The same rules as regular expressions, for the OpenAPI document: valid in both
# Python and ECMA-262 (JSON Schema), and matching exactly what the checks below
# accept, padding included.  _SPACE is what str.strip() trims (str.isspace());
# _CONTROL is what _has_control() refuses.
_SPACE = r"\u0009-\u000d\u001c-\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_CONTROL = r"\u0000-\u001f\u007f-\u009f"
NAME_PATTERN = (rf"^[{_SPACE}]*[^{_CONTROL}{_SPACE}]"
                rf"(?:[^{_CONTROL}]{{0,{NAME_MAX - 2}}}[^{_CONTROL}{_SPACE}])?[{_SPACE}]*$")
"""1 to NAME_MAX characters, none a control character, once trimmed."""
EMAIL_PATTERN = (rf"^[{_SPACE}]*(?![^{_SPACE}]{{{EMAIL_MAX + 1}}})"
                 rf"[^@{_CONTROL}{_SPACE}]+@[^@{_CONTROL}{_SPACE}]+\.[^@.{_CONTROL}{_SPACE}]+"
                 rf"[{_SPACE}]*$")
"""One @, no spaces, a dot in the domain, at most EMAIL_MAX characters once trimmed."""


@functools.cache
def zones() -> frozenset[str]:
    """The IANA zones of the pinned tzdata package: the same on every replica,
    whatever the host has (a host's ``localtime`` is not an IANA zone)."""
    names = importlib.resources.files("tzdata").joinpath("zones").read_text("utf-8")
    return frozenset(names.split())


def is_zone(name: str) -> bool:
    return name in zones()


def _has_control(value: str) -> bool:
    return any(ord(c) < 32 or 127 <= ord(c) < 160 for c in value)


def _name(value: Any) -> tuple[str | None, str | None]:
    if not isinstance(value, str):
        return None, "must be a string"
    value = value.strip()
    if not value:
        return None, "must not be empty"
    if len(value) > NAME_MAX:
        return None, f"must be at most {NAME_MAX} characters"
    if _has_control(value):
        return None, "must not contain control characters"
    return value, None


def _email(value: Any) -> tuple[str | None, str | None]:
    if not isinstance(value, str):
        return None, "must be a string"
    value = value.strip()
    if len(value) > EMAIL_MAX:
        return None, f"must be at most {EMAIL_MAX} characters"
    if _has_control(value) or not _EMAIL.match(value):
        return None, "must be an email address like ada@example.com"
    return value, None


def _date(value: Any) -> tuple[dt.date | None, str | None]:
    if not isinstance(value, str) or not _DATE.match(value):
        return None, "must be a date as YYYY-MM-DD"
    try:
        return dt.date.fromisoformat(value), None
    except ValueError:
        return None, "is not a calendar date"


def _location(value: Any) -> tuple[str | None, str | None]:
    if not isinstance(value, str):
        return None, "must be a string"
    if not is_zone(value):
        return None, "must be an IANA time zone such as America/New_York"
    return value, None


LATEST_ZONE = "Etc/GMT-14"
"""UTC+14 (Kiritimati's offset): no zone's date is later than its date."""


def validate_user(
    body: Any, now: dt.datetime, current: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """Check a POST body (``current`` is None) or a PUT body (a subset of fields
    applied to ``current``, the stored columns).

    Returns the complete column values and the errors by API field name; the
    values mean nothing when there are errors.
    """
    errors: dict[str, str] = {}
    if not isinstance(body, dict):
        return {}, {"body": "must be a JSON object"}
    for key in body:
        if key not in USER_FIELDS and key not in READ_ONLY:
            errors[key] = "is not a known field"
    values: dict[str, Any] = dict(current or {})
    if current is None:
        values["anniversary"] = None
        for key in REQUIRED:
            if key not in body:
                errors[key] = "is required"
    checks = {
        "firstName": _name,
        "lastName": _name,
        "email": _email,
        "birthday": _date,
        "location": _location,
        "anniversary": _date,
    }
    for key, check in checks.items():
        if key not in body:
            continue
        if key == "anniversary" and body[key] is None:
            values["anniversary"] = None
            continue
        value, problem = check(body[key])
        if problem:
            errors[key] = problem
        else:
            values[USER_FIELDS[key]] = value
    if "location" not in errors and values.get("location"):
        zone = values["location"]
    elif "location" in errors:
        # No zone to judge by (a bad one, or none in a POST): a date after
        # today in the zone that is furthest ahead (UTC+14) is in the future
        # in every zone, so it is reported too.
        zone = LATEST_ZONE
    else:
        zone = None  # (every user has a location: not reached)
    if zone is not None:
        today = calendar_rules.local_today(now, zoneinfo.ZoneInfo(zone))
        for key in ("birthday", "anniversary"):
            day = values.get(USER_FIELDS[key])
            if key not in errors and day is not None and day > today:
                errors[key] = ("must not be in the future (no zone's date is later than "
                               f"{today})" if zone == LATEST_ZONE else
                               f"must not be in the future (today is {today} in {zone})")
    return values, errors
