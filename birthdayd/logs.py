"""Structured logs to stdout: JSON for machines, text for humans.

A line logged while the API handles a request carries that request's id
(``request_id``, set by the API's middleware in :data:`REQUEST_ID`).  E-mail
addresses are masked (``a***@example.com``) in every line at info level and
above — message, extra fields and traceback; only debug lines show them whole.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import logging
import re
import sys
from typing import Any

import orjson

# Attributes every LogRecord has; anything else came in through ``extra``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message"}

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id",
                                                                       default=None)

_EMAIL = re.compile(r"([^\s@\"'<>()\[\]{},;:/\\=]{1,64})@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)")


def mask_emails(text: str) -> str:
    """``ada.lovelace@example.com`` → ``a***@example.com``."""
    if "@" not in text:
        return text
    return _EMAIL.sub(lambda m: f"{m[1][0]}***@{m[2]}", text)


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return mask_emails(value)
    if isinstance(value, list | tuple):
        return [_masked(v) for v in value]
    if isinstance(value, dict):
        return {k: _masked(v) for k, v in value.items()}
    return value


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to a record logged while a request is handled."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = REQUEST_ID.get()
        if request_id is not None and not hasattr(record, "request_id"):
            record.request_id = request_id
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.levelno >= logging.INFO:
            entry = _masked(entry)
        return orjson.dumps(entry, default=lambda v: _masked(str(v))).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            line += f" [request_id={request_id}]"
        return mask_emails(line) if record.levelno >= logging.INFO else line


def handler(fmt: str) -> logging.Handler:
    """The stdout handler for ``fmt`` (json or text), with the request id filter."""
    out = logging.StreamHandler(sys.stdout)
    out.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    out.addFilter(RequestIdFilter())
    return out


def setup(level: str, fmt: str) -> None:
    root = logging.getLogger()
    root.handlers[:] = [handler(fmt)]
    root.setLevel(level.upper())
    # Third-party chatter stays at warning unless we debug.
    for name in ("aiormq", "apscheduler", "aiohttp.access"):
        logging.getLogger(name).setLevel(logging.DEBUG if level == "debug" else logging.WARNING)
