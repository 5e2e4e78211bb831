"""The user's shape is defined by validation (what a request may carry), the
OpenAPI document and the response view: the three must agree field by field."""

from __future__ import annotations

import datetime as dt
import uuid

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
    assert api.user_view(row)["schedule"] == [
        {"occasion": "anniversary", "date": "2027-06-01", "sendAt": "2027-06-01T14:00:00Z",
         "status": "scheduled"},
        {"occasion": "birthday", "date": "2027-01-15", "sendAt": "2027-01-15T14:00:00Z",
         "status": "queued"}]


def test_the_document_lists_the_states_and_occasions_the_code_has() -> None:
    schemas = openapi.SPEC["components"]["schemas"]
    assert schemas["Message"]["properties"]["status"]["enum"] == [s.value for s in Status]
    assert schemas["ScheduleEntry"]["properties"]["occasion"]["enum"] == list(
        occasions.OCCASIONS)
    assert {o.field for o in occasions.OCCASIONS.values()} <= set(validation.USER_FIELDS)
