"""The HTTP API (aiohttp): users, the delivery log, health, metrics, OpenAPI.

Composed, not run: :func:`create_app` builds the application and the runtime
serves it.  Bad input always gets a 4xx JSON error and writes nothing.
"""

from __future__ import annotations

import dataclasses
import hmac
import itertools
import logging
import re
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import asyncpg
import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from birthdayd import clock, greetings, logs, metrics, openapi, states, store, validation
from birthdayd.fair_pool import FairPool
from birthdayd.states import Status

logger = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
PAGE_DEFAULT = 100
PAGE_MAX = 1000
Check = Callable[[], Awaitable[bool]]


@dataclasses.dataclass(frozen=True)
class Deps:
    pool: asyncpg.Pool
    clock: clock.Clock
    send_hour: int
    api_token: str | None = None
    ready_checks: Mapping[str, Check] = dataclasses.field(default_factory=dict)
    serve_api: bool = True
    """False on worker- or scheduler-only replicas: health, ready and metrics only."""
    registry: CollectorRegistry | None = None
    """What /metrics serves: the process's roles' families (metrics.registry);
    None: the api role's."""


DEPS = web.AppKey("deps", Deps)
POOL = web.AppKey("pool", FairPool)
"""Deps.pool, its connections handed out in arrival order (fair_pool)."""
REGISTRY = web.AppKey("registry", CollectorRegistry)


# -- responses ----------------------------------------------------------------


def _default(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError


# orjson writes dates as YYYY-MM-DD and datetimes as RFC 3339, "Z" for UTC (the
# contract's form, with microseconds only when there are any, as isoformat()
# does).  Every instant a view holds comes from PostgreSQL through asyncpg,
# which returns timestamptz in UTC; a naive one would be taken as UTC.
_JSON_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC


def json_response(data: Any, status: int = 200, headers: Mapping[str, str] | None = None
                  ) -> web.Response:
    return web.Response(
        body=orjson.dumps(data, default=_default, option=_JSON_OPTIONS),
        status=status,
        content_type="application/json",
        charset="utf-8",
        headers=headers,
    )


def json_text_response(text: str) -> web.Response:
    """A 200 whose body is JSON already written: a user, or a page of them, as
    PostgreSQL writes them for the reads (store.user_json, store.users_page).
    It is the text json_response would give user_view's dict (the same keys,
    in the same order, and values); reads pass it through instead of decoding
    rows and encoding them again."""
    return web.Response(body=text.encode(), content_type="application/json",
                        charset="utf-8")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str,
                 fields: Mapping[str, str] | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.fields = dict(fields or {})
        self.headers = headers

    def response(self) -> web.Response:
        body = {"error": {"code": self.code, "message": self.message, "fields": self.fields}}
        return json_response(body, self.status, self.headers)


def _invalid(fields: Mapping[str, str]) -> ApiError:
    return ApiError(400, "validation_error", "The request is not valid.", fields)


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


# An incoming X-Request-ID is kept if it is 1-128 printable ASCII characters
# without spaces; anything else gets an id of ours.
_REQUEST_ID = re.compile(r"[!-~]{1,128}")


def _http_error(e: web.HTTPException) -> web.Response:
    headers = {"Allow": e.headers["Allow"]} if "Allow" in e.headers else None
    code = _HTTP_CODES.get(e.status, "error")
    message = "Request body is larger than 64 KiB." if e.status == 413 else e.reason
    return ApiError(e.status, code, message, headers=headers).response()


def outer_middleware(http: metrics.Http) -> Any:
    """The outermost middleware, one layer for three jobs: a request id for the
    response and for every log line written while handling the request; every
    error as a JSON answer (a 5xx logged); the request counted and timed by
    route template.  Per request: one header read, a few dict operations."""
    prefix = f"{secrets.token_hex(4)}-"  # this process's ids: <prefix><counter, hex>
    counter = itertools.count(1)

    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        started = time.perf_counter()
        given = request.headers.get("X-Request-ID")
        request_id = (given if given is not None and _REQUEST_ID.fullmatch(given)
                      else f"{prefix}{next(counter):x}")
        token = logs.REQUEST_ID.set(request_id)
        try:
            response = await handler(request)
        except ApiError as e:
            response = e.response()
        except web.HTTPException as e:
            if e.status < 400:
                raise
            response = _http_error(e)
        except store.TRANSIENT_ERRORS:
            logger.warning("dependency unavailable", exc_info=True,
                           extra={"event": "request_unavailable", "path": request.path})
            response = ApiError(503, "unavailable", "A dependency is unavailable; try again.",
                                headers={"Retry-After": "5"}).response()
        except Exception:
            logger.exception("unhandled error", extra={"event": "request_failed",
                                                      "path": request.path})
            response = ApiError(500, "internal_error", "Internal error.").response()
        finally:
            logs.REQUEST_ID.reset(token)
        response.headers["X-Request-ID"] = request_id
        resource = request.match_info.route.resource
        http.record("unmatched" if resource is None else resource.canonical, request.method,
                    response.status, time.perf_counter() - started)
        return response

    return middleware


def auth_middleware(token: str | None) -> Any:
    expected = token.encode() if token else None

    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        path = request.path
        protected = path.startswith(("/user", "/messages"))
        if expected is not None and protected:
            # "Bearer", in any case (RFC 9110 §11.1), one or more spaces, the token.
            scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
            # aiohttp decodes header bytes with surrogateescape; keep them as sent.
            given = credentials.lstrip(" ").encode("utf-8", "surrogateescape")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given, expected):
                raise ApiError(401, "unauthorized", "A valid bearer token is required.",
                               headers={"WWW-Authenticate": "Bearer"})
        return await handler(request)

    return middleware


# -- request parsing ----------------------------------------------------------


async def read_json(request: web.Request) -> Any:
    if request.headers.get("Content-Type") is not None:
        mime = request.content_type
        if mime != "application/json" and not mime.endswith("+json"):
            raise ApiError(415, "unsupported_media_type",
                           "Send the body as application/json.")
    try:
        raw = await request.read()  # enforces client_max_size (413), chunked or not
    except web.RequestPayloadError:  # e.g. Content-Encoding: gzip on what is not gzip
        raise _invalid({"body": "could not be decoded as its Content-Encoding says"}) from None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _invalid({"body": "must be valid UTF-8 JSON"}) from None


def path_id(request: web.Request, what: str) -> uuid.UUID:
    """An id in the path; one that is not a uuid in its usual form (as the
    query's: _UUID_TEXT) names nothing, hence 404."""
    text = request.match_info["id"]
    if not _UUID_TEXT.fullmatch(text):
        raise ApiError(404, "not_found", f"No {what} with id {text!r}.")
    return uuid.UUID(text)


# The form OpenAPI's `format: uuid` allows (RFC 9562): 8-4-4-4-12 hex digits, either
# case.  uuid.UUID() alone would also take "", braces, "urn:uuid:" and no hyphens.
_UUID_TEXT = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                        r"[0-9a-fA-F]{12}")


def query_uuid(request: web.Request, name: str, errors: dict[str, str]) -> uuid.UUID | None:
    """An optional uuid parameter: absent is None; present, even empty, must be a uuid."""
    text = request.query.get(name)
    if text is None:
        return None
    if not _UUID_TEXT.fullmatch(text):
        errors[name] = "must be a uuid"
        return None
    return uuid.UUID(text)


def page_params(request: web.Request, errors: dict[str, str]) -> tuple[int, uuid.UUID | None]:
    limit = PAGE_DEFAULT
    text = request.query.get("limit")
    if text is not None:
        # Length first: int() refuses over 4,300 digits, and no valid limit is long.
        if (not text.isascii() or not text.isdigit() or len(text) > 6
                or not 1 <= int(text) <= PAGE_MAX):
            errors["limit"] = f"must be a whole number from 1 to {PAGE_MAX}"
        else:
            limit = int(text)
    return limit, query_uuid(request, "after", errors)


# -- views --------------------------------------------------------------------
# They keep dates and instants as they are: json_response writes them.  The
# reads of users (GET /user/{id}, GET /users) get the same text for user_view
# from PostgreSQL instead (json_text_response).


def schedule_of(user: store.Row) -> list[dict[str, Any]]:
    """The user's schedule from the arrays store.user_with_schedule returns."""
    if not user["occasions"]:
        return []
    return [
        {"occasion": occasion, "date": day, "sendAt": send_at, "status": status}
        for occasion, day, send_at, status in zip(
            user["occasions"], user["dates"], user["send_ats"], user["statuses"], strict=True)
    ]


def user_view(user: store.Row) -> dict[str, Any]:
    """A user with its schedule (a row of store.user_with_schedule or create_user)."""
    return {
        "id": user["id"],
        "firstName": user["first_name"],
        "lastName": user["last_name"],
        "email": user["email"],
        "birthday": user["birthday"],
        "anniversary": user["anniversary"],
        "location": user["location"],
        "schedule": schedule_of(user),
        "createdAt": user["created_at"],
        "updatedAt": user["updated_at"],
    }


def message_view(row: store.Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "userId": row["user_id"],
        "occasion": row["occasion"],
        "date": row["occasion_date"],
        "sendAt": row["send_at"],
        "status": row["status"],
        "attempts": row["attempts"],
        "lastError": row["last_error"],
        "sentAt": row["sent_at"],
    }


def _email_taken(email: str) -> ApiError:
    return ApiError(409, "conflict", "A user with this email already exists.",
                    {"email": f"{email} is already taken"})


# -- handlers -----------------------------------------------------------------


async def create_user(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    body = await read_json(request)
    now = deps.clock.now()
    fields, errors = validation.validate_user(body, now)
    if errors:
        raise _invalid(errors)
    try:
        user = await greetings.create(request.app[POOL], fields, now, deps.send_hour)
    except greetings.EmailTaken:
        raise _email_taken(fields["email"]) from None
    return json_response(user_view(user), 201, {"Location": f"/user/{user['id']}"})


async def get_user(request: web.Request) -> web.Response:
    user_id = path_id(request, "user")
    text = await store.user_json(request.app[POOL], user_id)
    if text is None:
        raise ApiError(404, "not_found", f"No user with id {user_id}.")
    return json_text_response(text)


async def update_user(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    user_id = path_id(request, "user")
    body = await read_json(request)
    try:
        user = await greetings.update_user(
            request.app[POOL], user_id, body, deps.clock, deps.send_hour
        )
    except greetings.Invalid as e:
        raise _invalid(e.fields) from None
    except greetings.EmailTaken as e:
        raise _email_taken(str(e)) from None
    if user is None:
        raise ApiError(404, "not_found", f"No user with id {user_id}.")
    return json_response(user_view(user))


async def delete_user(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    user_id = path_id(request, "user")
    if not await greetings.delete_user(request.app[POOL], user_id, deps.clock.now()):
        raise ApiError(404, "not_found", f"No user with id {user_id}.")
    return web.Response(status=204)


async def list_users(request: web.Request) -> web.Response:
    errors: dict[str, str] = {}
    limit, after = page_params(request, errors)
    if errors:
        raise _invalid(errors)
    rows = await store.users_page(request.app[POOL], after, limit + 1)
    # Each user is already JSON text (store.users_page); the page is joined
    # around them.
    nxt = f'"{rows[limit - 1]["id"]}"' if len(rows) > limit else "null"
    items = ",".join([row["json"] for row in rows[:limit]])
    return json_text_response(f'{{"items":[{items}],"next":{nxt}}}')


async def list_messages(request: web.Request) -> web.Response:
    errors: dict[str, str] = {}
    limit, after = page_params(request, errors)
    user_id = query_uuid(request, "userId", errors)
    status = request.query.get("status")
    if status is not None and status not in set(Status):  # also an empty one
        errors["status"] = f"must be one of {', '.join(Status)}"
    if errors:
        raise _invalid(errors)
    rows = await store.list_messages(request.app[POOL], status, user_id, after, limit + 1)
    nxt = str(rows[limit - 1]["id"]) if len(rows) > limit else None
    return json_response({"items": [message_view(r) for r in rows[:limit]], "next": nxt})


async def retry_message(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    message_id = path_id(request, "message")
    row = await store.redrive(request.app[POOL], message_id, deps.clock.now())
    if row is None:
        existing = await store.get_message(request.app[POOL], message_id)
        if existing is None:
            raise ApiError(404, "not_found", f"No message with id {message_id}.")
        if existing["status"] in states.REDRIVABLE:
            raise ApiError(409, "conflict", "The message's user was deleted.",
                           {"userId": "was deleted"})
        raise ApiError(409, "conflict",
                       f"Only failed or expired messages can be retried; this one is "
                       f"{existing['status']}.", {"status": existing["status"]})
    return json_response(message_view(row), 202)


async def health(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    checks: dict[str, str] = {}
    for name, check in deps.ready_checks.items():
        try:
            ok = await check()
        except Exception:  # noqa: BLE001 - any failure means "not ready"
            ok = False
        checks[name] = "ok" if ok else "unavailable"
    healthy = all(v == "ok" for v in checks.values())
    return json_response({"status": "ok" if healthy else "unavailable", "checks": checks},
                         200 if healthy else 503)


async def openapi_json(request: web.Request) -> web.Response:
    return json_response(openapi.document(token_required=bool(request.app[DEPS].api_token)))


async def metrics_text(request: web.Request) -> web.Response:
    # Every collector serves values already in memory: no I/O here.
    return web.Response(body=generate_latest(request.app[REGISTRY]),
                        headers={"Content-Type": CONTENT_TYPE_LATEST})


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# (method, route, handler, its success status): every role's, then the api role's.
COMMON_ROUTES: tuple[tuple[str, str, Handler, int], ...] = (
    ("GET", "/health", health, 200),
    ("GET", "/ready", ready, 200),
    ("GET", "/metrics", metrics_text, 200),
)
API_ROUTES: tuple[tuple[str, str, Handler, int], ...] = (
    ("POST", "/user", create_user, 201),
    ("GET", "/user/{id}", get_user, 200),
    ("PUT", "/user/{id}", update_user, 200),
    ("DELETE", "/user/{id}", delete_user, 204),
    ("GET", "/users", list_users, 200),
    ("GET", "/messages", list_messages, 200),
    ("POST", "/messages/{id}/retry", retry_message, 202),
    ("GET", "/openapi.json", openapi_json, 200),
)


def create_starting_app(check_names: Sequence[str], registry: CollectorRegistry
                        ) -> web.Application:
    """What a process serves until PostgreSQL first answers (the runtime waits
    for it as long as it takes): /health 200, for the process is alive and
    will go on by itself; /ready 503 with each of ``check_names``
    unavailable; /metrics; any other route a 503 with Retry-After, as when
    PostgreSQL goes away later."""

    async def ready_starting(request: web.Request) -> web.Response:
        return json_response({"status": "unavailable",
                              "checks": dict.fromkeys(check_names, "unavailable")}, 503)

    async def starting(request: web.Request) -> web.Response:
        raise ApiError(503, "unavailable", "Starting: PostgreSQL is not reachable yet; "
                       "try again.", headers={"Retry-After": "5"})

    @web.middleware
    async def close_after(request: web.Request, handler: Handler) -> web.StreamResponse:
        # Each answer closes its connection, so the next request connects
        # again and finds the real app once it has the port; no lingering
        # reads of unread bodies hold the hand-over up.
        response = await handler(request)
        response.force_close()
        return response

    http = metrics.Http()
    app = web.Application(client_max_size=MAX_BODY, handler_args={"lingering_time": 0.0},
                          middlewares=[close_after, outer_middleware(http)])
    app[REGISTRY] = registry
    app[REGISTRY].register(http)
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready_starting)
    app.router.add_get("/metrics", metrics_text)
    app.router.add_route("*", "/{tail:.*}", starting)
    return app


def create_app(deps: Deps) -> web.Application:
    http = metrics.Http()
    app = web.Application(
        client_max_size=MAX_BODY,
        middlewares=[outer_middleware(http), auth_middleware(deps.api_token)],
    )
    app[DEPS] = deps
    app[POOL] = FairPool(deps.pool)
    app[REGISTRY] = deps.registry or metrics.registry(["api"])
    app[REGISTRY].register(http)
    for method, path, handler, status in COMMON_ROUTES + (API_ROUTES if deps.serve_api else ()):
        if method == "GET":
            app.router.add_get(path, handler)  # and HEAD
        else:
            app.router.add_route(method, path, handler)
        http.expect(path, method, status)  # each route's usual answer exists at 0
    return app
