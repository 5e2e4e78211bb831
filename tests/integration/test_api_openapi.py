"""The OpenAPI document agrees with the API: the links lead to real operations, the
security it declares is the one the API enforces, its patterns accept exactly what
validation accepts, and a query value it forbids is a 400 (one it allows, a 200).

Schemathesis fuzzes the same agreement end to end (tests/e2e/test_schemathesis_e2e.py);
these pin the cases it found, deterministically and fast.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import jsonschema_rs  # a dependency of schemathesis: the validator it checks with
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from birthdayd import openapi, validation
from tests.integration.conftest import MakeClient

OPEN_OPERATIONS = {"health", "ready", "metrics", "openapi"}


async def document(client: TestClient[Any, Any]) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status == 200
    doc: dict[str, Any] = await response.json()
    return doc


def operations(doc: dict[str, Any]) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """operationId -> (method, path, operation)."""
    return {op["operationId"]: (method, path, op)
            for path, item in doc["paths"].items()
            for method, op in item.items() if method != "parameters"}


def parameter_names(doc: dict[str, Any], path: str, op: dict[str, Any]) -> set[str]:
    params = [*doc["paths"][path].get("parameters", []), *op.get("parameters", [])]
    return {f"{p['in']}.{p['name']}" for p in params}


def json_schema(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """A schema of the document, standalone (its $refs resolve)."""
    return {**schema, "components": doc["components"]}


async def test_every_operation_has_an_id_and_every_link_leads_to_one(
    client: TestClient[Any, Any],
) -> None:
    doc = await document(client)
    ops = operations(doc)
    assert sum(len([m for m in item if m != "parameters"]) for item in doc["paths"].values()
               ) == len(ops)
    links = {(source, status, name): link
             for source, (_, _, op) in ops.items()
             for status, response in op["responses"].items()
             for name, link in response.get("links", {}).items()}
    targets = {(source, link["operationId"]) for (source, _, _), link in links.items()}
    assert {("createUser", "getUser"), ("createUser", "updateUser"),
            ("createUser", "deleteUser"), ("listUsers", "getUser"),
            ("listMessages", "retryMessage")} <= targets
    for (source, status, name), link in links.items():
        _, path, target = ops[link["operationId"]]
        for parameter, expression in link["parameters"].items():
            qualified = parameter if "." in parameter else f"path.{parameter}"
            assert qualified in parameter_names(doc, path, target), (source, name)
            assert re.fullmatch(r"\$response\.body#(/[A-Za-z0-9]+)+", expression), expression
        assert status.startswith("2"), (source, name)


async def test_links_from_a_created_user_resolve_to_its_id(
    client: TestClient[Any, Any],
) -> None:
    doc = await document(client)
    created = await client.post("/user", json={
        "firstName": "Ada", "lastName": "Lovelace", "email": "ada@example.com",
        "birthday": "1990-01-15", "location": "UTC"})
    body = await created.json()
    for name, link in operations(doc)["createUser"][2]["responses"]["201"]["links"].items():
        pointer = link["parameters"]["id"].removeprefix("$response.body#/")
        assert body[pointer] == body["id"], name
    messages = await (await client.get("/messages")).json()
    link = operations(doc)["listMessages"][2]["responses"]["200"]["links"]["RetryFirstMessage"]
    assert link["parameters"]["id"] == "$response.body#/items/0/id"
    assert messages["items"][0]["id"]


async def test_the_document_requires_the_token_exactly_when_api_token_is_set(
    make_client: MakeClient,
) -> None:
    for token, expected in ((None, [{}]), ("", [{}]), ("s3cret", [{"bearer": []}])):
        client = await make_client(api_token=token)
        doc = await document(client)
        assert doc["security"] == expected, token
        for op_id, (_, _, op) in operations(doc).items():
            assert ("security" in op) == (op_id in OPEN_OPERATIONS), op_id
        if token:
            assert (await client.get("/users")).status == 401
            assert (await client.get("/users", headers={
                "Authorization": f"Bearer {token}"})).status == 200
        else:
            assert (await client.get("/users")).status == 200


async def test_a_user_body_with_an_unknown_field_is_invalid_in_the_document_too(
    client: TestClient[Any, Any],
) -> None:
    doc = await document(client)
    body = {"firstName": "Ada", "lastName": "Lovelace", "email": "ada@example.com",
            "birthday": "1990-01-15", "location": "UTC"}
    for schema in ("UserInput", "UserPatch"):
        validator = jsonschema_rs.validator_for(
            json_schema(doc, {"$ref": f"#/components/schemas/{schema}"}))
        assert validator.is_valid(body)
        assert validator.is_valid({**body, "id": "x", "schedule": [], "createdAt": 1,
                                   "updatedAt": None})
        assert not validator.is_valid({**body, "nickname": "Ada"})
        assert not validator.is_valid({**body, "location": "Mars/Olympus_Mons"})


# -- the patterns say what validation does ----------------------------------------------

_SPACES = [chr(c) for c in range(0x110000) if chr(c).isspace()]
_TRICKY = st.sampled_from([*_SPACES, "\ufeff", "\x00", "\x07", "\x7f", "\x85", "\x9f", "@",
                           ".", "a", "é", "李", " "])
_CHARS = st.one_of(_TRICKY, st.characters(codec="utf-8"))
_PADDING = st.text(st.sampled_from([*_SPACES, "\ufeff"]), max_size=3)


def _padded(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.builds(lambda a, b, c: a + b + c, _PADDING, inner, _PADDING)


NAMES = st.one_of(st.text(_CHARS, max_size=110),
                  _padded(st.text(_CHARS, min_size=95, max_size=105)),
                  _padded(st.text(st.characters(codec="utf-8"), max_size=101)))
EMAILS = st.one_of(
    st.text(_CHARS, max_size=30),
    _padded(st.builds(lambda local, domain, tld: f"{local}@{domain}.{tld}",
                      st.text(_CHARS, min_size=1, max_size=250), st.text(_CHARS, max_size=8),
                      st.text(_CHARS, max_size=4))),
)


@pytest.mark.parametrize(("field", "strategy"), [("firstName", NAMES), ("email", EMAILS)])
def test_the_documents_pattern_accepts_exactly_what_validation_accepts(
    field: str, strategy: st.SearchStrategy[str]
) -> None:
    schema = openapi.SPEC["components"]["schemas"]["UserInput"]["properties"][field]
    validator = jsonschema_rs.validator_for(schema)
    check = validation._name if field == "firstName" else validation._email

    @settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
    @given(strategy)
    def agree(value: str) -> None:
        accepted = check(value)[1] is None
        assert validator.is_valid(value) == accepted, (value, accepted)
        assert (re.fullmatch(schema["pattern"], value) is not None) == accepted, value

    agree()
    for value in ("  " + "B" * 100 + "  ", "B" * 101, "a" * 242 + "@example.com",
                  "a" * 243 + "@example.com", "é@ü.de", "\ufeff", " ada@example.com\n"):
        assert validator.is_valid(value) == (check(value)[1] is None), value


# -- query strings: the document's verdict is the API's -----------------------------------

UUID = str(uuid.UUID(int=0x0190_0000_0000_7000_8000_0000_0000_0001))
QUERY_VALUES = ["", " ", "x", "0", UUID, UUID.upper(), UUID.replace("-", ""), f"{{{UUID}}}",
                f"urn:uuid:{UUID}", f"{UUID}\n", f" {UUID}", "sent", "SENT", "sent ", "failed",
                "cancelled", "null"]


@pytest.mark.parametrize(("path", "name"), [("/users", "after"), ("/messages", "after"),
                                            ("/messages", "userId"), ("/messages", "status")])
async def test_a_query_value_is_a_400_exactly_when_the_document_forbids_it(
    client: TestClient[Any, Any], path: str, name: str
) -> None:
    doc = await document(client)
    (param,) = [p for p in doc["paths"][path]["get"]["parameters"] if p["name"] == name]
    validator = jsonschema_rs.validator_for(param["schema"], validate_formats=True)
    for value in QUERY_VALUES:
        response = await client.get(path, params={name: value})
        allowed = validator.is_valid(value)
        assert response.status == (200 if allowed else 400), (name, value, allowed)
        if not allowed:
            assert set((await response.json())["error"]["fields"]) == {name}


async def test_a_limit_is_a_400_exactly_when_the_document_forbids_it(
    client: TestClient[Any, Any],
) -> None:
    doc = await document(client)
    (param,) = [p for p in doc["paths"]["/users"]["get"]["parameters"] if p["name"] == "limit"]
    validator = jsonschema_rs.validator_for(param["schema"])
    for value in ["", "0", "1", "1000", "1001", "-1", "1.5", "abc", " 1", "1e2", "+1"]:
        # An integer's decimal form; any other text is a string, which the document refuses.
        number: Any = int(value) if re.fullmatch(r"-?[0-9]+", value) else value
        allowed = validator.is_valid(number)
        response = await client.get("/users", params={"limit": value})
        assert response.status == (200 if allowed else 400), (value, allowed)
