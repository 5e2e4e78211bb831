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
            "anniversary": None, "location": "UTC", "created_at": now, "updated_at": now}


def test_the_view_the_document_and_validation_name_the_same_user_fields() -> None:
    schemas = openapi.SPEC["components"]["schemas"]
    view = api.user_view(_a_user_row(), [])
    writable = set(validation.USER_FIELDS)
    assert set(schemas["User"]["properties"]) == set(view)
    assert set(view) == writable | validation.READ_ONLY
    assert set(schemas["UserInput"]["properties"]) == writable | validation.READ_ONLY
    assert set(schemas["UserPatch"]["properties"]) == writable | validation.READ_ONLY
    assert set(schemas["UserInput"]["required"]) == set(validation.REQUIRED)
    # Every writable field maps to a column the view reads back.
    assert set(validation.USER_FIELDS.values()) <= set(_a_user_row())


def test_the_document_lists_the_states_and_occasions_the_code_has() -> None:
    schemas = openapi.SPEC["components"]["schemas"]
    assert schemas["Message"]["properties"]["status"]["enum"] == [s.value for s in Status]
    assert schemas["ScheduleEntry"]["properties"]["occasion"]["enum"] == list(
        occasions.OCCASIONS)
    assert {o.field for o in occasions.OCCASIONS.values()} <= set(validation.USER_FIELDS)
