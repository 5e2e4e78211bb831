"""The user's shape is defined by validation (what a request may carry), the
OpenAPI document and the response view: the three must agree field by field."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import orjson
import pytest

from birthdayd import api, occasions, openapi, validation
from birthdayd.states import Status

UTC = dt.UTC


def _a_user_row() -> dict[str, object]:
    now = dt.datetime(2027, 1, 10, tzinfo=UTC)
    return {"id": uuid.uuid4(), "first_name": "Ada", "last_name": "Lovelace",
            "email": "ada@example.com", "birthday": dt.date(1990, 1, 15),
            "anniversary": None, "location": "UTC", "created_at": now, "updated_at": now,
            "occasions": None, "dates": None, "send_ats": None, "statuses": None}


def test_the_view_the_document_and_validation_name_the_same_user_fields() -> None:
    schemas = openapi.SPEC["components"]["schemas"]
    view = api.user_view(_a_user_row())
    writable = set(validation.USER_FIELDS)
    assert set(schemas["User"]["properties"]) == set(view)
    assert set(view) == writable | validation.READ_ONLY
    assert set(schemas["UserInput"]["properties"]) == writable | validation.READ_ONLY
    assert set(schemas["UserPatch"]["properties"]) == writable | validation.READ_ONLY
    assert set(schemas["UserInput"]["required"]) == set(validation.REQUIRED)
    # Every writable field maps to a column the view reads back.
    assert set(validation.USER_FIELDS.values()) <= set(_a_user_row())


def test_the_schedule_is_read_from_the_statements_arrays_in_order() -> None:
    send_at = dt.datetime(2027, 1, 15, 14, 0, tzinfo=UTC)
    row = {**_a_user_row(), "occasions": ["anniversary", "birthday"],
           "dates": [dt.date(2027, 6, 1), dt.date(2027, 1, 15)],
           "send_ats": [send_at.replace(month=6, day=1), send_at],
           "statuses": ["scheduled", "queued"]}
    assert _written(api.user_view(row))["schedule"] == [
        {"occasion": "anniversary", "date": "2027-06-01", "sendAt": "2027-06-01T14:00:00Z",
         "status": "scheduled"},
        {"occasion": "birthday", "date": "2027-01-15", "sendAt": "2027-01-15T14:00:00Z",
         "status": "queued"}]


def _written(view: dict[str, Any]) -> Any:
    return orjson.loads(api.json_response(view).body)  # type: ignore[arg-type]


@pytest.mark.parametrize(("instant", "text"), [
    (dt.datetime(2027, 1, 10, 9, 30, tzinfo=UTC), "2027-01-10T09:30:00Z"),
    (dt.datetime(2027, 1, 10, 9, 30, 5, 1, tzinfo=UTC), "2027-01-10T09:30:05.000001Z"),
    (dt.datetime(2027, 1, 10, 9, 30, 5, 120000, tzinfo=UTC), "2027-01-10T09:30:05.120000Z"),
    (dt.datetime(2027, 1, 10, 9, 30, 5, 123456), "2027-01-10T09:30:05.123456Z"),  # naive: UTC
])
def test_instants_are_written_in_utc_with_z_and_dates_as_days(
    instant: dt.datetime, text: str
) -> None:
    """RFC 3339 in UTC with Z, microseconds only when there are any (what
    datetime.isoformat() gives): the form every earlier release wrote."""
    row = {**_a_user_row(), "created_at": instant, "anniversary": dt.date(2015, 2, 28)}
    written = _written(api.user_view(row))
    assert written["createdAt"] == text
    assert written["createdAt"] == instant.replace(tzinfo=UTC).isoformat().replace(
        "+00:00", "Z")
    assert (written["birthday"], written["anniversary"]) == ("1990-01-15", "2015-02-28")
    assert written["id"] == str(row["id"])


def test_the_document_lists_the_states_and_occasions_the_code_has() -> None:
    schemas = openapi.SPEC["components"]["schemas"]
    assert schemas["Message"]["properties"]["status"]["enum"] == [s.value for s in Status]
    assert schemas["ScheduleEntry"]["properties"]["occasion"]["enum"] == list(
        occasions.OCCASIONS)
    assert {o.field for o in occasions.OCCASIONS.values()} <= set(validation.USER_FIELDS)
