"""Settings: their names, defaults, parsing and validation.

This module is the only reader of ``os.environ`` (click reads the variables
named here on its behalf).  Every setting is a click option with an
environment variable, listed by ``--help``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import urllib.parse
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import click

ROLES = ("api", "worker", "scheduler")



class SecretFileError(click.ClickException):
    exit_code = 2


def load_secret_files(environ: dict[str, str] | None = None) -> None:
    """``X_FILE=/run/secrets/x`` sets ``X`` (Docker and Kubernetes secrets).

    An explicit ``X`` wins over ``X_FILE``.  One trailing newline is dropped,
    since editors and ``echo`` add one.
    """
    env = os.environ if environ is None else environ
    for name in ENV_VARS:
        path = env.get(f"{name}_FILE")
        if not path or name in env:
            continue
        try:
            with open(path, encoding="utf-8") as f:
                value = f.read()
        except OSError as e:
            raise SecretFileError(f"{name}_FILE: cannot read {path}: {e.strerror}") from e
        env[name] = value[:-1] if value.endswith("\n") else value


# -- parameter types: each turns text into a value or fails with one line ----


class Url(click.ParamType[str, Any]):
    name = "url"

    def __init__(self, *schemes: str) -> None:
        self.schemes = schemes

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value)
        try:
            parts = urllib.parse.urlsplit(text)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as e:
            self.fail(f"{text!r} is not a valid URL: {e}", param, ctx)
        if parts.scheme not in self.schemes or not parts.hostname:
            self.fail(
                f"{text!r} is not a {'/'.join(self.schemes)} URL with a host", param, ctx
            )
        return text


class Cron(click.ParamType[str, Any]):
    """A crontab expression: five fields, or six with seconds first (an extension)."""

    name = "cron"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from birthdayd import crontab  # noqa: PLC0415 - settings load without APScheduler

        text = str(value).strip()
        try:
            crontab.cron_trigger(text)
        except ValueError as e:
            self.fail(f"{text!r} is not a valid cron expression: {e}", param, ctx)
        return text




_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)\s*$")
_UNITS = {"ms": "milliseconds", "s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str) -> dt.timedelta:
    """``90m``, ``36h``, ``7d`` (also ``s`` and ``ms``) to a timedelta."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration like 90m, 36h or 7d")
    amount, unit = match.groups()
    return dt.timedelta(**{_UNITS[unit]: int(amount)})


class Duration(click.ParamType[dt.timedelta, Any]):
    """A positive duration: a zero lease or lateness would misbehave, not mean "off"."""

    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> dt.timedelta:
        if isinstance(value, dt.timedelta):
            return value
        try:
            duration = parse_duration(str(value))
        except ValueError as e:
            self.fail(str(e), param, ctx)
        if duration <= dt.timedelta(0):
            self.fail(f"{value!r} must be longer than zero", param, ctx)
        return duration


class Instant(click.ParamType[dt.datetime, Any]):
    name = "instant"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> dt.datetime:
        if isinstance(value, dt.datetime):
            return value
        try:
            when = dt.datetime.fromisoformat(str(value))
        except ValueError:
            self.fail(f"{value!r} is not an ISO 8601 instant", param, ctx)
        if when.tzinfo is None:
            self.fail(f"{value!r} has no UTC offset (add Z or +00:00)", param, ctx)
        return when.astimezone(dt.UTC)


def _count(minimum: int, maximum: int | None = None) -> click.IntRange:
    return click.IntRange(minimum, maximum)


# -- the settings -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Settings:
    database_url: str = "postgresql://postgres@localhost:5432/birthday"
    database_pool_size: int = 10
    database_timeout: dt.timedelta = dt.timedelta(seconds=30)
    rabbitmq_url: str = "amqp://guest:guest@localhost:5672/"
    queue_name: str = "birthday-messages"
    queue_concurrency: int = 50
    queue_max_retries: int = 5
    queue_backoff_delay_ms: int = 2000
    email_api_url: str = "https://email-service.digitalenvision.com.au/send-email"
    email_api_timeout_ms: int = 10000
    breaker_error_threshold_pct: int = 50
    breaker_reset_timeout_ms: int = 30000
    cron_minute_schedule: str = "* * * * *"
    cron_recovery_schedule: str = "*/10 * * * *"
    cron_daily_schedule: str = "0 0 * * *"
    send_hour: int = 9
    max_lateness: dt.timedelta = dt.timedelta(days=7)
    port: int = 3000
    host: str = "0.0.0.0"  # noqa: S104 - a daemon in a container listens on all interfaces
    reuse_port: bool = False
    api_token: str | None = None
    log_level: str = "info"
    log_format: str = "json"
    shutdown_grace_s: float = 30.0
    lease_margin: dt.timedelta = dt.timedelta(seconds=60)
    fake_now: dt.datetime | None = None


@dataclasses.dataclass(frozen=True)
class WorkerConfig:
    concurrency: int
    max_retries: int
    backoff_delay_ms: int
    email_timeout_ms: int
    send_hour: int
    max_lateness: dt.timedelta
    lease_margin: dt.timedelta
    """A row in sending stays its worker's until due (or claimed for a call),
    plus the provider timeout, plus this; then recovery presumes it dead."""

    @classmethod
    def from_settings(cls, s: Settings) -> WorkerConfig:
        return cls(s.queue_concurrency, s.queue_max_retries, s.queue_backoff_delay_ms,
                   s.email_api_timeout_ms, s.send_hour, s.max_lateness, s.lease_margin)

    @property
    def call_lease(self) -> dt.timedelta:
        return dt.timedelta(milliseconds=self.email_timeout_ms) + self.lease_margin


@dataclasses.dataclass(frozen=True)
class _Option:
    name: str  # Settings field
    flag: str
    envvar: str
    type: Any
    help: str


_D = Settings()


@dataclasses.dataclass(frozen=True)
class SchedulerConfig:
    """The scheduler role's settings; its defaults are the Settings defaults."""

    cron_minute: str = _D.cron_minute_schedule
    cron_recovery: str = _D.cron_recovery_schedule
    cron_daily: str = _D.cron_daily_schedule
    send_hour: int = _D.send_hour
    max_lateness: dt.timedelta = _D.max_lateness
    call_lease: dt.timedelta = (dt.timedelta(milliseconds=_D.email_api_timeout_ms)
                                + _D.lease_margin)
    """The grace a called row whose lease ran out gets before it is taken back
    (the worker's lease for a call: provider timeout plus margin)."""
    stop_grace_s: float = _D.shutdown_grace_s
    """How long stop() lets a running job finish its current batch."""
    batch: int = 1000
    """Rows per claim, expiry and recovery statement."""
    tick_budget_s: float = 45.0
    """How long a tick waits for room in a full queue before it leaves the rest
    to the next tick (ticks never overlap)."""

    @classmethod
    def from_settings(cls, s: Settings) -> SchedulerConfig:
        return cls(cron_minute=s.cron_minute_schedule, cron_recovery=s.cron_recovery_schedule,
                   cron_daily=s.cron_daily_schedule, send_hour=s.send_hour,
                   max_lateness=s.max_lateness,
                   call_lease=WorkerConfig.from_settings(s).call_lease,
                   stop_grace_s=s.shutdown_grace_s)


# The levels operators of the Node service (pino) know, as Python's.
LOG_LEVEL_ALIASES = {"trace": "debug", "warn": "warning", "fatal": "critical"}

OPTIONS = (
    _Option("database_url", "--database-url", "DATABASE_URL", Url("postgresql", "postgres"),
            "PostgreSQL URL."),
    _Option("database_pool_size", "--database-pool-size", "DATABASE_POOL_SIZE", _count(1, 1000),
            "asyncpg pool max size."),
    _Option("database_timeout", "--database-timeout", "DATABASE_TIMEOUT", Duration(),
            "Longest any one statement, or a wait for a pooled connection, may take; "
            "a hung query then fails (and is retried) instead of wedging the process."),
    _Option("rabbitmq_url", "--rabbitmq-url", "RABBITMQ_URL", Url("amqp", "amqps"),
            "RabbitMQ URL."),
    _Option("queue_name", "--queue-name", "QUEUE_NAME", str,
            "Main quorum queue; exchange, retry and dead-letter names derive from it."),
    _Option("queue_concurrency", "--queue-concurrency", "QUEUE_CONCURRENCY", _count(1, 10000),
            "In-flight sends per worker process (also the consumer prefetch)."),
    _Option("queue_max_retries", "--queue-max-retries", "QUEUE_MAX_RETRIES", _count(0, 100),
            "Attempts after the first before a message is failed."),
    _Option("queue_backoff_delay_ms", "--queue-backoff-delay", "QUEUE_BACKOFF_DELAY",
            _count(0, 86_400_000), "First retry delay in ms; doubles each attempt, with jitter."),
    _Option("email_api_url", "--email-api-url", "EMAIL_API_URL", Url("http", "https"),
            "E-mail provider endpoint."),
    _Option("email_api_timeout_ms", "--email-api-timeout", "EMAIL_API_TIMEOUT",
            _count(1, 600_000), "Per-request timeout, ms."),
    _Option("breaker_error_threshold_pct", "--circuit-breaker-error-threshold",
            "CIRCUIT_BREAKER_ERROR_THRESHOLD", _count(1, 100),
            "% of failures in the rolling window that opens the breaker."),
    _Option("breaker_reset_timeout_ms", "--circuit-breaker-reset-timeout",
            "CIRCUIT_BREAKER_RESET_TIMEOUT", _count(1, 86_400_000),
            "ms open before a half-open probe."),
    _Option("cron_minute_schedule", "--cron-minute-schedule", "CRON_MINUTE_SCHEDULE", Cron(),
            "The due-message tick (UTC; a 6-field expression has seconds first)."),
    _Option("cron_recovery_schedule", "--cron-recovery-schedule", "CRON_RECOVERY_SCHEDULE",
            Cron(), "The recovery sweep."),
    _Option("cron_daily_schedule", "--cron-daily-schedule", "CRON_DAILY_SCHEDULE", Cron(),
            "The daily horizon/maintenance job."),
    _Option("send_hour", "--send-hour", "SEND_HOUR", _count(0, 23), "Local hour of delivery."),
    _Option("max_lateness", "--max-lateness", "MAX_LATENESS", Duration(),
            "A greeting later than this after its time is expired, not sent (90m, 36h, 7d)."),
    _Option("port", "--port", "PORT", _count(0, 65535), "HTTP port (every role serves it)."),
    _Option("host", "--host", "HOST", str, "HTTP listen address."),
    _Option("reuse_port", "--reuse-port", "HTTP_REUSE_PORT", click.BOOL,
            "Let several api processes on one host share PORT (SO_REUSEPORT; the kernel "
            "spreads connections across them)."),
    _Option("api_token", "--api-token", "API_TOKEN", str,
            "When set, /user* and /messages* need 'Authorization: Bearer <token>'."),
    _Option("log_level", "--log-level", "LOG_LEVEL",
            click.Choice(["debug", "info", "warning", "error", "critical", *LOG_LEVEL_ALIASES],
                         case_sensitive=False),
            "Log level (also the Node service's trace, warn and fatal)."),
    _Option("log_format", "--log-format", "LOG_FORMAT",
            click.Choice(["json", "text"], case_sensitive=False), "Log format on stdout."),
    _Option("shutdown_grace_s", "--shutdown-grace", "SHUTDOWN_GRACE",
            click.FloatRange(0, 3600), "Seconds SIGTERM waits for in-flight sends."),
    _Option("lease_margin", "--lease-margin", "LEASE_MARGIN", Duration(),
            "How long a row may stay in sending past the provider timeout before "
            "recovery presumes its worker dead (and how long a retry the worker "
            "re-publishes may wait for its confirm)."),
    _Option("fake_now", "--now", "BIRTHDAYD_NOW", Instant(),
            "Run as if the clock read this instant at start (demos, end-to-end tests)."),
)

# Every variable that may also come from a file via NAME_FILE.
ENV_VARS = (*(option.envvar for option in OPTIONS), "BIRTHDAYD_ROLES")

F = TypeVar("F", bound=Callable[..., Any])


def _default(option: _Option) -> Any:
    value = getattr(_D, option.name)
    if isinstance(value, dt.timedelta):
        return format_duration(value)
    return value


def default_text(option: _Option) -> str:
    """The default as ``--help`` shows it."""
    value = _default(option)
    return "(unset)" if value is None else str(value)


def format_duration(value: dt.timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def options(names: Iterable[str] | None = None) -> Callable[[F], F]:
    """Decorate a click command with the options for ``names`` (all by default)."""
    wanted = None if names is None else set(names)

    def decorate(command: F) -> F:
        for option in reversed(OPTIONS):
            if wanted is not None and option.name not in wanted:
                continue
            command = click.option(
                option.flag,
                option.name,
                envvar=option.envvar,
                type=option.type,
                default=_default(option),
                show_default=option.name != "api_token",
                show_envvar=True,
                help=option.help,
            )(command)
        return command

    return decorate


def settings_from(params: dict[str, Any]) -> Settings:
    known = {f.name for f in dataclasses.fields(Settings)}
    values = {k: v for k, v in params.items() if k in known}
    if "log_level" in values:
        level = values["log_level"].lower()
        values["log_level"] = LOG_LEVEL_ALIASES.get(level, level)
    if "log_format" in values:
        values["log_format"] = values["log_format"].lower()
    if values.get("api_token") == "":
        values["api_token"] = None
    return Settings(**values)
