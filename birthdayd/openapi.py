"""The OpenAPI 3.1 description of the HTTP API (served at /openapi.json).

It is the contract the API is fuzzed against (tests/e2e/test_schemathesis_e2e.py):
whatever the API accepts, the document allows; links lead from the responses that
return ids to the operations that take them.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from birthdayd import __version__, occasions, validation
from birthdayd.states import Status

_DATE = {"type": "string", "format": "date", "pattern": r"^\d{4}-\d{2}-\d{2}$"}
_NAME = {"type": "string", "pattern": validation.NAME_PATTERN,
         "description": f"1 to {validation.NAME_MAX} characters once surrounding whitespace "
                        "is trimmed; no control characters."}
_UUID = {"type": "string", "format": "uuid"}
_CURSOR = {"type": ["string", "null"], "format": "uuid"}
_TIME = {"type": "string", "format": "date-time"}
_STATUS = {"type": "string", "enum": [s.value for s in Status]}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str, header: str | None = None) -> dict[str, Any]:
    response = _json(_ref("Error"), description)
    if header is not None:
        response["headers"] = _header(header)
    return response


def _header(name: str) -> dict[str, Any]:
    return {name: {"required": True, "schema": {"type": "string", "minLength": 1}}}


def _user_links(user_id: str) -> dict[str, Any]:
    """Links from a response holding a user's id to the operations on that user."""
    return {
        name: {"operationId": operation, "parameters": {"id": user_id},
               "description": description}
        for name, operation, description in (
            ("GetUser", "getUser", "Read the user."),
            ("UpdateUser", "updateUser", "Change the user."),
            ("DeleteUser", "deleteUser", "Delete the user."),
        )
    }


_ERRORS = {
    "400": _error("Invalid input; `fields` names each bad field."),
    "401": _error("Missing or wrong bearer token (when API_TOKEN is set).",
                  "WWW-Authenticate"),
    "413": _error("Body over 64 KiB."),
    "415": _error("Content-Type is not JSON."),
    "503": _error("PostgreSQL is unavailable; try again.", "Retry-After"),
}
_NOT_FOUND = {"404": _error("No such id (also for an id that is not a uuid).")}
_ID_PARAM = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_PAGE_PARAMS: list[dict[str, Any]] = [
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1,
                                                  "maximum": 1000, "default": 100}},
    {"name": "after", "in": "query", "schema": _UUID,
     "description": "The `next` cursor of the previous page."},
]

_USER_FIELDS = {
    "firstName": _NAME,
    "lastName": _NAME,
    # Not `format: email`: the API takes any "x@y.z" without spaces (é@ü.de too) and
    # leaves deliverability to the provider.
    "email": {"type": "string", "pattern": validation.EMAIL_PATTERN,
              "description": f"One @, no spaces, a dot in the domain; at most "
                             f"{validation.EMAIL_MAX} characters once trimmed."},
    "birthday": {**_DATE, "description": "Not in the future in the user's own zone."},
    "location": {"type": "string", "enum": sorted(validation.zones()),
                 "description": "An IANA time zone of the tz database, e.g. America/New_York."},
    "anniversary": {"oneOf": [_DATE, {"type": "null"}]},
}

# The read-only fields of a User: any value is accepted and ignored, so a client may
# PUT back what it GOT.  Any other unknown field is a 400.
_ECHOED: dict[str, Any] = {
    name: {"description": "Read-only: ignored in a request."}
    for name in sorted(validation.READ_ONLY)
}

SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "birthdayd",
        "version": __version__,
        "description": "Greets each user at 09:00 in their own time zone, exactly once.",
    },
    "security": [{}, {"bearer": []}],
    "paths": {
        "/user": {
            "post": {
                "operationId": "createUser",
                "summary": "Create a user and schedule their greetings.",
                "requestBody": {"required": True, **_json(_ref("UserInput"), "The user.")},
                "responses": {
                    "201": {**_json(_ref("User"), "Created; Location: /user/{id}."),
                            "headers": _header("Location"),
                            "links": _user_links("$response.body#/id")},
                    "409": _error("The email is taken."),
                    **_ERRORS,
                },
            }
        },
        "/user/{id}": {
            "parameters": [_ID_PARAM],
            "get": {
                "operationId": "getUser",
                "summary": "Read a user and their schedule.",
                "responses": {"200": _json(_ref("User"), "The user."), **_NOT_FOUND,
                              "401": _ERRORS["401"], "503": _ERRORS["503"]},
            },
            "put": {
                "operationId": "updateUser",
                "summary": "Change any subset of fields; the schedule follows.",
                "requestBody": {"required": True, **_json(_ref("UserPatch"), "Changes.")},
                "responses": {"200": _json(_ref("User"), "The user."), **_NOT_FOUND,
                              "409": _error("The email is taken."), **_ERRORS},
            },
            "delete": {
                "operationId": "deleteUser",
                "summary": "Delete a user; pending greetings are cancelled.",
                "responses": {"204": {"description": "Deleted."}, **_NOT_FOUND,
                              "401": _ERRORS["401"], "503": _ERRORS["503"]},
            },
        },
        "/users": {
            "get": {
                "operationId": "listUsers",
                "summary": "Page through users (ordered by id).",
                "parameters": _PAGE_PARAMS,
                "responses": {"200": {**_json(_ref("UserPage"), "A page."),
                                      "links": _user_links("$response.body#/items/0/id")},
                              "400": _ERRORS["400"], "401": _ERRORS["401"], "503": _ERRORS["503"]},
            }
        },
        "/messages": {
            "get": {
                "operationId": "listMessages",
                "summary": "The delivery log (ordered by id).",
                "parameters": [
                    {"name": "status", "in": "query", "schema": _STATUS},
                    {"name": "userId", "in": "query", "schema": _UUID},
                    *_PAGE_PARAMS,
                ],
                "responses": {"200": {**_json(_ref("MessagePage"), "A page."), "links": {
                                  "RetryFirstMessage": {
                                      "operationId": "retryMessage",
                                      "parameters": {"id": "$response.body#/items/0/id"},
                                      "description": "Re-drive the page's first message."},
                                  "MessagesOfFirstUser": {
                                      "operationId": "listMessages",
                                      "parameters": {
                                          "query.userId": "$response.body#/items/0/userId"},
                                      "description": "The first message's user's log."},
                              }},
                              "400": _ERRORS["400"], "401": _ERRORS["401"], "503": _ERRORS["503"]},
            }
        },
        "/messages/{id}/retry": {
            "parameters": [_ID_PARAM],
            "post": {
                "operationId": "retryMessage",
                "summary": "Re-drive a failed or expired message.",
                "responses": {"202": _json(_ref("Message"), "Re-driven."), **_NOT_FOUND,
                              "409": _error("The message is neither failed nor expired."),
                              "401": _ERRORS["401"], "503": _ERRORS["503"]},
            },
        },
        "/health": {"get": {"operationId": "health", "summary": "Liveness (no I/O).",
                            "security": [{}],
                            "responses": {"200": {"description": "Alive."}}}},
        "/ready": {"get": {"operationId": "ready", "summary": "PostgreSQL and RabbitMQ reachable.",
                           "security": [{}],
                           "responses": {"200": {"description": "Ready."},
                                         "503": {"description": "Not ready."}}}},
        "/metrics": {"get": {"operationId": "metrics", "summary": "Prometheus text format.",
                             "security": [{}],
                             "responses": {"200": {"description": "Metrics.",
                                                   "content": {"text/plain": {}}}}}},
        "/openapi.json": {"get": {"operationId": "openapi", "summary": "This document.",
                                  "security": [{}],
                                  "responses": {"200": {"description": "OpenAPI 3.1."}}}},
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "UserInput": {
                "type": "object",
                "required": list(validation.REQUIRED),
                "properties": {**_USER_FIELDS, **_ECHOED},
                "additionalProperties": False,
                "examples": [{"firstName": "Test", "lastName": "User", "birthday": "1990-01-15",
                              "location": "America/New_York", "email": "test@example.com"}],
            },
            "UserPatch": {"type": "object", "properties": {**_USER_FIELDS, **_ECHOED},
                          "additionalProperties": False},
            "ScheduleEntry": {
                "type": "object",
                "required": ["occasion", "date", "sendAt", "status"],
                "properties": {
                    "occasion": {"type": "string", "enum": list(occasions.OCCASIONS)},
                    "date": _DATE,
                    "sendAt": _TIME,
                    "status": _STATUS,
                },
            },
            "User": {
                "type": "object",
                "required": ["id", *_USER_FIELDS, "schedule"],
                "properties": {
                    "id": _UUID,
                    **_USER_FIELDS,
                    "schedule": {"type": "array", "items": _ref("ScheduleEntry")},
                    "createdAt": _TIME,
                    "updatedAt": _TIME,
                },
            },
            "Message": {
                "type": "object",
                "required": ["id", "userId", "occasion", "date", "sendAt", "status",
                             "attempts", "lastError", "sentAt"],
                "properties": {
                    "id": _UUID,
                    "userId": _UUID,
                    "occasion": {"type": "string", "enum": list(occasions.OCCASIONS)},
                    "date": _DATE,
                    "sendAt": _TIME,
                    "status": _STATUS,
                    "attempts": {"type": "integer", "minimum": 0},
                    "lastError": {"type": ["string", "null"]},
                    "sentAt": {"oneOf": [_TIME, {"type": "null"}]},
                },
            },
            "UserPage": {
                "type": "object",
                "required": ["items", "next"],
                "properties": {"items": {"type": "array", "items": _ref("User")},
                               "next": _CURSOR},
            },
            "MessagePage": {
                "type": "object",
                "required": ["items", "next"],
                "properties": {"items": {"type": "array", "items": _ref("Message")},
                               "next": _CURSOR},
            },
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {
                        "type": "object",
                        "required": ["code", "message", "fields"],
                        "properties": {
                            "code": {"type": "string"},
                            "message": {"type": "string"},
                            "fields": {"type": "object",
                                       "additionalProperties": {"type": "string"}},
                        },
                    }
                },
            },
        },
    },
}


@functools.cache
def document(token_required: bool) -> dict[str, Any]:
    """The document as served (shared: do not change it): with API_TOKEN set, the
    bearer token is required (the API answers 401 without it); without, nothing is."""
    doc = copy.deepcopy(SPEC)
    doc["security"] = [{"bearer": []}] if token_required else [{}]
    return doc
