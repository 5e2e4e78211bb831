"""The OpenAPI 3.1 description of the HTTP API (served at /openapi.json)."""

from __future__ import annotations

from typing import Any

from birthdayd import __version__

_DATE = {"type": "string", "format": "date", "pattern": r"^\d{4}-\d{2}-\d{2}$"}
_NAME = {"type": "string", "minLength": 1, "maxLength": 100}
_UUID = {"type": "string", "format": "uuid"}
_TIME = {"type": "string", "format": "date-time"}
_STATUS = {
    "type": "string",
    "enum": ["scheduled", "queued", "sending", "sent", "retrying", "failed", "expired",
             "cancelled"],
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


_ERRORS = {
    "400": _error("Invalid input; `fields` names each bad field."),
    "401": _error("Missing or wrong bearer token (when API_TOKEN is set)."),
    "413": _error("Body over 64 KiB."),
    "415": _error("Content-Type is not JSON."),
}
_NOT_FOUND = {"404": _error("No such id (also for an id that is not a uuid).")}
_ID_PARAM = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_PAGE_PARAMS = [
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1,
                                                  "maximum": 1000, "default": 100}},
    {"name": "after", "in": "query", "schema": _UUID,
     "description": "The `next` cursor of the previous page."},
]

_USER_FIELDS = {
    "firstName": _NAME,
    "lastName": _NAME,
    "email": {"type": "string", "format": "email", "maxLength": 254},
    "birthday": {**_DATE, "description": "Not in the future in the user's own zone."},
    "location": {"type": "string", "description": "An IANA time zone, e.g. America/New_York."},
    "anniversary": {"oneOf": [_DATE, {"type": "null"}]},
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
                "summary": "Create a user and schedule their greetings.",
                "requestBody": {"required": True, **_json(_ref("UserInput"), "The user.")},
                "responses": {
                    "201": _json(_ref("User"), "Created; Location: /user/{id}."),
                    "409": _error("The email is taken."),
                    **_ERRORS,
                },
            }
        },
        "/user/{id}": {
            "parameters": [_ID_PARAM],
            "get": {
                "summary": "Read a user and their schedule.",
                "responses": {"200": _json(_ref("User"), "The user."), **_NOT_FOUND,
                              "401": _ERRORS["401"]},
            },
            "put": {
                "summary": "Change any subset of fields; the schedule follows.",
                "requestBody": {"required": True, **_json(_ref("UserPatch"), "Changes.")},
                "responses": {"200": _json(_ref("User"), "The user."), **_NOT_FOUND,
                              "409": _error("The email is taken."), **_ERRORS},
            },
            "delete": {
                "summary": "Delete a user; pending greetings are cancelled.",
                "responses": {"204": {"description": "Deleted."}, **_NOT_FOUND,
                              "401": _ERRORS["401"]},
            },
        },
        "/users": {
            "get": {
                "summary": "Page through users (ordered by id).",
                "parameters": _PAGE_PARAMS,
                "responses": {"200": _json(_ref("UserPage"), "A page."),
                              "400": _ERRORS["400"], "401": _ERRORS["401"]},
            }
        },
        "/messages": {
            "get": {
                "summary": "The delivery log (ordered by id).",
                "parameters": [
                    {"name": "status", "in": "query", "schema": _STATUS},
                    {"name": "userId", "in": "query", "schema": _UUID},
                    *_PAGE_PARAMS,
                ],
                "responses": {"200": _json(_ref("MessagePage"), "A page."),
                              "400": _ERRORS["400"], "401": _ERRORS["401"]},
            }
        },
        "/messages/{id}/retry": {
            "parameters": [_ID_PARAM],
            "post": {
                "summary": "Re-drive a failed or expired message.",
                "responses": {"202": _json(_ref("Message"), "Re-driven."), **_NOT_FOUND,
                              "409": _error("The message is neither failed nor expired."),
                              "401": _ERRORS["401"]},
            },
        },
        "/health": {"get": {"summary": "Liveness (no I/O).", "security": [{}],
                            "responses": {"200": {"description": "Alive."}}}},
        "/ready": {"get": {"summary": "PostgreSQL and RabbitMQ reachable.", "security": [{}],
                           "responses": {"200": {"description": "Ready."},
                                         "503": {"description": "Not ready."}}}},
        "/metrics": {"get": {"summary": "Prometheus text format.", "security": [{}],
                             "responses": {"200": {"description": "Metrics.",
                                                   "content": {"text/plain": {}}}}}},
        "/openapi.json": {"get": {"summary": "This document.", "security": [{}],
                                  "responses": {"200": {"description": "OpenAPI 3.1."}}}},
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "UserInput": {
                "type": "object",
                "required": ["firstName", "lastName", "email", "birthday", "location"],
                "properties": _USER_FIELDS,
            },
            "UserPatch": {"type": "object", "properties": _USER_FIELDS},
            "ScheduleEntry": {
                "type": "object",
                "required": ["occasion", "date", "sendAt", "status"],
                "properties": {
                    "occasion": {"type": "string", "enum": ["birthday", "anniversary"]},
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
                    "occasion": {"type": "string", "enum": ["birthday", "anniversary"]},
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
                               "next": {"type": ["string", "null"]}},
            },
            "MessagePage": {
                "type": "object",
                "required": ["items", "next"],
                "properties": {"items": {"type": "array", "items": _ref("Message")},
                               "next": {"type": ["string", "null"]}},
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
