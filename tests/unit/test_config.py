"""Settings and the command line (the README's Configuration).

* `birthdayd --help` and `birthdayd run --help` list every environment variable of
  §1.1 with its default.
* A bad value exits 2 with one clear line on stderr, before anything is connected to.
* `X_FILE=/path` sets `X`; an explicit `X` wins; an unreadable file is a clear error.
* Durations (`90m`, `36h`, `7d`) and cron expressions (5 fields, or 6 with seconds).

The daemon itself never starts here: `birthdayd.runtime.main` is replaced by a stub
that records the settings it would have run with, so a value wrongly accepted shows
up as a failed assertion instead of a daemon trying to connect.  Subprocesses (for
the console script's exit code and stderr) are kept to a few.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from birthdayd import cli, config, crontab, runtime

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / ".venv" / "bin" / "birthdayd"
UTC = dt.UTC
STUB_EXIT = 97

# the README's Configuration: every variable, and its default as text (None: unset).
CONTRACT: dict[str, str | None] = {
    "DATABASE_URL": "postgresql://postgres@localhost:5432/birthday",
    "DATABASE_POOL_SIZE": "10",
    "RABBITMQ_URL": "amqp://guest:guest@localhost:5672/",
    "QUEUE_NAME": "birthday-messages",
    "QUEUE_CONCURRENCY": "50",
    "QUEUE_MAX_RETRIES": "5",
    "QUEUE_BACKOFF_DELAY": "2000",
    "EMAIL_API_URL": "https://email-service.digitalenvision.com.au/send-email",
    "EMAIL_API_TIMEOUT": "10000",
    "CIRCUIT_BREAKER_ERROR_THRESHOLD": "50",
    "CIRCUIT_BREAKER_RESET_TIMEOUT": "30000",
    "CRON_MINUTE_SCHEDULE": "* * * * *",
    "CRON_RECOVERY_SCHEDULE": "*/10 * * * *",
    "CRON_DAILY_SCHEDULE": "0 0 * * *",
    "SEND_HOUR": "9",
    "MAX_LATENESS": "7d",
    "PORT": "3000",
    "HOST": "0.0.0.0",
    "API_TOKEN": None,
    "LOG_LEVEL": "info",
    "LOG_FORMAT": "json",
}

# (environment, extra arguments, the variable or option the error must name)
BAD_VALUES = [
    pytest.param({"PORT": "-1"}, [], "PORT", id="PORT=-1"),
    pytest.param({"PORT": "70000"}, [], "PORT", id="PORT=70000"),
    pytest.param({"PORT": "http"}, [], "PORT", id="PORT=http"),
    pytest.param({"DATABASE_URL": "not-a-url"}, [], "DATABASE_URL", id="DATABASE_URL=not-a-url"),
    pytest.param({"DATABASE_URL": "mysql://localhost/x"}, [], "DATABASE_URL",
                 id="DATABASE_URL=mysql"),
    pytest.param({"DATABASE_URL": "postgresql://localhost:99999/x"}, [], "DATABASE_URL",
                 id="DATABASE_URL-bad-port"),
    pytest.param({"RABBITMQ_URL": "http://x"}, [], "RABBITMQ_URL", id="RABBITMQ_URL=http"),
    pytest.param({"EMAIL_API_URL": "ftp://x/send"}, [], "EMAIL_API_URL", id="EMAIL_API_URL=ftp"),
    pytest.param({"QUEUE_CONCURRENCY": "0"}, [], "QUEUE_CONCURRENCY", id="QUEUE_CONCURRENCY=0"),
    pytest.param({"QUEUE_MAX_RETRIES": "-1"}, [], "QUEUE_MAX_RETRIES",
                 id="QUEUE_MAX_RETRIES=-1"),
    pytest.param({"DATABASE_POOL_SIZE": "0"}, [], "DATABASE_POOL_SIZE",
                 id="DATABASE_POOL_SIZE=0"),
    pytest.param({"CIRCUIT_BREAKER_ERROR_THRESHOLD": "101"}, [],
                 "CIRCUIT_BREAKER_ERROR_THRESHOLD", id="CIRCUIT_BREAKER_ERROR_THRESHOLD=101"),
    pytest.param({"CRON_MINUTE_SCHEDULE": "61 * * * *"}, [], "CRON_MINUTE_SCHEDULE",
                 id="CRON_MINUTE_SCHEDULE-minute-61"),
    pytest.param({"CRON_MINUTE_SCHEDULE": "* * *"}, [], "CRON_MINUTE_SCHEDULE",
                 id="CRON_MINUTE_SCHEDULE-3-fields"),
    pytest.param({"CRON_DAILY_SCHEDULE": "0 0 32 * *"}, [], "CRON_DAILY_SCHEDULE",
                 id="CRON_DAILY_SCHEDULE-day-32"),
    pytest.param({"MAX_LATENESS": "7 weeks"}, [], "MAX_LATENESS", id="MAX_LATENESS=7-weeks"),
    pytest.param({"MAX_LATENESS": "1.5h"}, [], "MAX_LATENESS", id="MAX_LATENESS=1.5h"),
    pytest.param({"MAX_LATENESS": "0s"}, [], "MAX_LATENESS", id="MAX_LATENESS=0s"),
    pytest.param({"LEASE_MARGIN": "0ms"}, [], "LEASE_MARGIN", id="LEASE_MARGIN=0ms"),
    pytest.param({"SEND_HOUR": "24"}, [], "SEND_HOUR", id="SEND_HOUR=24"),
    pytest.param({"SEND_HOUR": "-1"}, [], "SEND_HOUR", id="SEND_HOUR=-1"),
    pytest.param({"LOG_LEVEL": "loud"}, [], "LOG_LEVEL", id="LOG_LEVEL=loud"),
    pytest.param({"LOG_FORMAT": "xml"}, [], "LOG_FORMAT", id="LOG_FORMAT=xml"),
    pytest.param({}, ["--role", "bogus"], "--role", id="--role-bogus"),
    pytest.param({}, ["--port", "65536"], "--port", id="--port-65536"),
]


def clean_environ(**values: str) -> dict[str, str]:
    """os.environ without any birthdayd variable (or X_FILE), plus ``values``."""
    names = {*config.ENV_VARS, *CONTRACT, "ROLE"}
    env = {k: v for k, v in os.environ.items()
           if k not in names and not (k.endswith("_FILE") and k[:-5] in names)}
    return {**env, **values}


def runner_env(**values: str) -> dict[str, str | None]:
    """For CliRunner: unset every birthdayd variable, then set ``values``."""
    env: dict[str, str | None] = {name: None for name in (*config.ENV_VARS, *CONTRACT, "ROLE")}
    env.update({f"{name}_FILE": None for name in config.ENV_VARS})
    env.update(values)
    return env


def isolate_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset every birthdayd variable (and X_FILE) for this test; cli.main() may set
    some (from secret files), and monkeypatch restores them all afterwards."""
    for name in (*config.ENV_VARS, *CONTRACT, "ROLE"):
        for key in (name, f"{name}_FILE"):
            monkeypatch.setenv(key, "")  # records the original value for undo
            monkeypatch.delenv(key)


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[tuple[config.Settings, list[str]]]:
    """Replace the daemon with a stub; returns what it was started with."""
    calls: list[tuple[config.Settings, list[str]]] = []

    def fake_main(settings: config.Settings, roles: Sequence[str]) -> int:
        calls.append((settings, list(roles)))
        return STUB_EXIT

    monkeypatch.setattr(runtime, "main", fake_main)
    return calls


def squeeze(text: str) -> str:
    """Help text without whitespace: click wraps long defaults mid-token."""
    return re.sub(r"\s+", "", text)


def assert_lists_every_variable_with_its_default(help_text: str) -> None:
    flat = squeeze(help_text)
    for name, default in CONTRACT.items():
        assert f"envvar:{name}" in flat, f"{name} is not in the help"
        if default is not None:
            assert squeeze(f"[env var: {name}; default: {default}") in flat, (
                f"{name}'s default {default!r} is not in the help")


# -- help -------------------------------------------------------------------------


def test_run_help_lists_every_variable_with_its_default() -> None:
    result = CliRunner().invoke(cli.cli, ["run", "--help"], env=runner_env())
    assert result.exit_code == 0, result.output
    assert_lists_every_variable_with_its_default(result.output)


def test_top_level_help_lists_every_variable_with_its_default() -> None:
    """the README's Configuration: `birthdayd --help` shows every option with its environment
    variable and default: a table of `NAME  default` lines after the commands."""
    result = CliRunner().invoke(cli.cli, ["--help"], env=runner_env())
    assert result.exit_code == 0, result.output
    rows = dict(
        line.split(None, 1) for line in result.output.splitlines()
        if re.match(r"^\s+[A-Z][A-Z_]+\s+\S", line)
    )
    for name, default in CONTRACT.items():
        assert name in rows, f"{name} is not in the help"
        assert rows[name].strip() == (default if default is not None else "(unset)")


def test_help_needs_no_settings_and_ignores_bad_values() -> None:
    result = CliRunner().invoke(cli.cli, ["run", "--help"], env=runner_env(PORT="-1"))
    assert result.exit_code == 0


def test_the_help_defaults_are_the_settings_defaults(
    started: list[tuple[config.Settings, list[str]]],
) -> None:
    """With no variable set, `run` starts with exactly the Settings() defaults and all
    three roles (no --role)."""
    result = CliRunner().invoke(cli.cli, ["run"], env=runner_env())
    assert result.exit_code == STUB_EXIT, result.output
    [(settings, roles)] = started
    assert settings == config.Settings()
    assert roles == []
    assert settings.max_lateness == dt.timedelta(days=7)
    assert settings.api_token is None


# -- values that parse -------------------------------------------------------------


@pytest.mark.parametrize(("given", "level"), [("trace", "debug"), ("WARN", "warning"),
                                               ("fatal", "critical"), ("warning", "warning")])
def test_the_node_services_log_levels_are_taken_as_pythons(
    started: list[tuple[config.Settings, list[str]]], given: str, level: str
) -> None:
    result = CliRunner().invoke(cli.cli, ["run"], env=runner_env(LOG_LEVEL=given))
    assert result.exit_code == STUB_EXIT, result.output
    [(settings, _)] = started
    assert settings.log_level == level


def test_environment_variables_set_the_settings(
    started: list[tuple[config.Settings, list[str]]],
) -> None:
    env = runner_env(
        DATABASE_URL="postgres://u:p@db:6543/bd", DATABASE_POOL_SIZE="3",
        RABBITMQ_URL="amqps://u:p@mq/vh", QUEUE_NAME="q", QUEUE_CONCURRENCY="7",
        QUEUE_MAX_RETRIES="0", QUEUE_BACKOFF_DELAY="10", EMAIL_API_URL="http://mail:8025/send",
        EMAIL_API_TIMEOUT="1500", CIRCUIT_BREAKER_ERROR_THRESHOLD="75",
        CIRCUIT_BREAKER_RESET_TIMEOUT="5000", CRON_MINUTE_SCHEDULE="*/15 * * * * *",
        CRON_RECOVERY_SCHEDULE="*/5 * * * *", CRON_DAILY_SCHEDULE="30 1 * * *",
        SEND_HOUR="0", MAX_LATENESS="36h", PORT="0", HOST="127.0.0.1", API_TOKEN="t0k",
        LOG_LEVEL="DEBUG", LOG_FORMAT="Text", BIRTHDAYD_NOW="2027-01-15T09:00:00Z",
    )
    result = CliRunner().invoke(cli.cli, ["run", "--role", "worker", "--role", "api"], env=env)
    assert result.exit_code == STUB_EXIT, result.output
    [(s, roles)] = started
    assert roles == ["api", "worker"]
    assert (s.database_url, s.database_pool_size) == ("postgres://u:p@db:6543/bd", 3)
    assert s.rabbitmq_url == "amqps://u:p@mq/vh"
    assert (s.queue_name, s.queue_concurrency, s.queue_max_retries) == ("q", 7, 0)
    assert s.queue_backoff_delay_ms == 10
    assert (s.email_api_url, s.email_api_timeout_ms) == ("http://mail:8025/send", 1500)
    assert (s.breaker_error_threshold_pct, s.breaker_reset_timeout_ms) == (75, 5000)
    assert s.cron_minute_schedule == "*/15 * * * * *"
    assert s.cron_recovery_schedule == "*/5 * * * *"
    assert s.cron_daily_schedule == "30 1 * * *"
    assert (s.send_hour, s.max_lateness) == (0, dt.timedelta(hours=36))
    assert (s.port, s.host, s.api_token) == (0, "127.0.0.1", "t0k")
    assert (s.log_level, s.log_format) == ("debug", "text")
    assert s.fake_now == dt.datetime(2027, 1, 15, 9, tzinfo=UTC)


def test_an_option_wins_over_its_environment_variable(
    started: list[tuple[config.Settings, list[str]]],
) -> None:
    result = CliRunner().invoke(cli.cli, ["run", "--port", "8080"], env=runner_env(PORT="9090"))
    assert result.exit_code == STUB_EXIT, result.output
    assert started[0][0].port == 8080


def test_an_empty_api_token_means_auth_is_off(
    started: list[tuple[config.Settings, list[str]]],
) -> None:
    result = CliRunner().invoke(cli.cli, ["run"], env=runner_env(API_TOKEN=""))
    assert result.exit_code == STUB_EXIT, result.output
    assert started[0][0].api_token is None


# -- bad values: exit 2, one clear line --------------------------------------------


@pytest.mark.parametrize(("env", "args", "names"), BAD_VALUES)
def test_a_bad_value_is_a_usage_error_naming_the_setting(
    started: list[tuple[config.Settings, list[str]]],
    env: dict[str, str], args: list[str], names: str,
) -> None:
    result = CliRunner().invoke(cli.cli, ["run", *args], env=runner_env(**env))
    assert result.exit_code == 2, result.output
    assert started == [], "the daemon must not start with a bad value"
    assert names in result.stderr
    assert "Invalid value" in result.stderr


@pytest.mark.parametrize(("env", "args", "names"), BAD_VALUES)
def test_the_console_entry_prints_one_line_and_exits_2_for_a_bad_value(
    started: list[tuple[config.Settings, list[str]]], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], env: dict[str, str], args: list[str], names: str,
) -> None:
    """`birthdayd.cli.main` (the console script), in-process: exit 2, and stderr is
    exactly one line `birthdayd: error: ...` naming the setting and quoting the value."""
    isolate_environ(monkeypatch)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(sys, "argv", ["birthdayd", "run", *args])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 2
    assert started == []
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("birthdayd: error: ")
    assert names in lines[0]
    bad = next(iter(env.values())) if env else args[-1]
    assert bad.strip() in lines[0]


def _run_script(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *args], env=clean_environ(**env), capture_output=True,
                          text=True, timeout=30, check=False, cwd=ROOT)


def test_the_installed_script_exits_2_with_one_line_for_a_bad_value() -> None:
    """A real process: nothing is connected to, nothing on stdout, one line on stderr."""
    done = _run_script("run", PORT="70000")
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("birthdayd: error: ")
    assert "PORT" in done.stderr
    assert "70000" in done.stderr


def test_the_installed_script_exits_2_for_a_missing_secret_file(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-token"
    done = _run_script("run", API_TOKEN_FILE=str(missing))
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert "API_TOKEN_FILE" in done.stderr
    assert str(missing) in done.stderr


def test_the_installed_script_prints_run_help() -> None:
    done = _run_script("run", "--help")
    assert done.returncode == 0, done.stderr
    assert_lists_every_variable_with_its_default(done.stdout)


# -- secrets from files -----------------------------------------------------------------


def test_a_secret_file_sets_the_variable(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("s3cret\n", encoding="utf-8")
    env = {"API_TOKEN_FILE": str(secret)}
    config.load_secret_files(env)
    assert env["API_TOKEN"] == "s3cret"


def test_only_one_trailing_newline_is_dropped_from_a_secret_file(tmp_path: Path) -> None:
    secret = tmp_path / "url"
    secret.write_text("amqp://u:p@mq/\n\n", encoding="utf-8")
    env = {"RABBITMQ_URL_FILE": str(secret)}
    config.load_secret_files(env)
    assert env["RABBITMQ_URL"] == "amqp://u:p@mq/\n"


def test_a_secret_file_without_a_newline_is_taken_verbatim(tmp_path: Path) -> None:
    secret = tmp_path / "dsn"
    secret.write_text("postgresql://u:p@db/bd", encoding="utf-8")
    env = {"DATABASE_URL_FILE": str(secret)}
    config.load_secret_files(env)
    assert env["DATABASE_URL"] == "postgresql://u:p@db/bd"


def test_an_explicit_variable_wins_over_its_file(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("from-file", encoding="utf-8")
    env = {"API_TOKEN": "explicit", "API_TOKEN_FILE": str(secret)}
    config.load_secret_files(env)
    assert env["API_TOKEN"] == "explicit"


def test_an_explicit_empty_variable_also_wins_over_its_file(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("from-file", encoding="utf-8")
    env = {"API_TOKEN": "", "API_TOKEN_FILE": str(secret)}
    config.load_secret_files(env)
    assert env["API_TOKEN"] == ""


def test_a_missing_secret_file_is_a_clear_error_with_exit_code_2(tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    env = {"API_TOKEN_FILE": str(missing)}
    with pytest.raises(config.SecretFileError) as raised:
        config.load_secret_files(env)
    assert raised.value.exit_code == 2
    message = raised.value.format_message()
    assert "API_TOKEN_FILE" in message
    assert str(missing) in message
    assert "\n" not in message
    assert "API_TOKEN" not in env


def test_an_empty_file_variable_is_ignored() -> None:
    env = {"API_TOKEN_FILE": ""}
    config.load_secret_files(env)
    assert env == {"API_TOKEN_FILE": ""}


def test_every_contract_variable_may_come_from_a_file(tmp_path: Path) -> None:
    env: dict[str, str] = {}
    for name in CONTRACT:
        path = tmp_path / name
        path.write_text(f"value-of-{name}\n", encoding="utf-8")
        env[f"{name}_FILE"] = str(path)
    config.load_secret_files(env)
    assert {name: env[name] for name in CONTRACT} == {n: f"value-of-{n}" for n in CONTRACT}


def test_the_console_entry_reads_secret_files_before_parsing(
    started: list[tuple[config.Settings, list[str]]], monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    secret = tmp_path / "token"
    secret.write_text("from-a-file\n", encoding="utf-8")
    isolate_environ(monkeypatch)
    monkeypatch.setenv("API_TOKEN_FILE", str(secret))
    monkeypatch.setattr(sys, "argv", ["birthdayd", "run", "--role", "api"])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == STUB_EXIT
    [(settings, roles)] = started
    assert settings.api_token == "from-a-file"
    assert roles == ["api"]


# -- durations --------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("90m", dt.timedelta(minutes=90)),
    ("36h", dt.timedelta(hours=36)),
    ("7d", dt.timedelta(days=7)),
    ("45s", dt.timedelta(seconds=45)),
    ("250ms", dt.timedelta(milliseconds=250)),
    (" 7d ", dt.timedelta(days=7)),
    ("0m", dt.timedelta(0)),
])
def test_parse_duration(text: str, expected: dt.timedelta) -> None:
    assert config.parse_duration(text) == expected


@pytest.mark.parametrize("text", ["7 weeks", "7w", "", "7", "d", "-1d", "1.5h"])
def test_parse_duration_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        config.parse_duration(text)


@pytest.mark.parametrize("delta", [dt.timedelta(days=7), dt.timedelta(hours=36),
                                   dt.timedelta(minutes=90), dt.timedelta(seconds=45)])
def test_format_duration_round_trips(delta: dt.timedelta) -> None:
    assert config.parse_duration(config.format_duration(delta)) == delta


# -- cron ---------------------------------------------------------------------------------


def _next(expr: str, after: dt.datetime) -> dt.datetime:
    fire: dt.datetime = crontab.cron_trigger(expr).get_next_fire_time(None, after)
    return fire.astimezone(UTC)


WEDNESDAY = dt.datetime(2027, 1, 13, 12, 3, 20, tzinfo=UTC)


@pytest.mark.parametrize(("expr", "expected"), [
    ("* * * * *", dt.datetime(2027, 1, 13, 12, 4, tzinfo=UTC)),
    ("*/10 * * * *", dt.datetime(2027, 1, 13, 12, 10, tzinfo=UTC)),
    ("0 0 * * *", dt.datetime(2027, 1, 14, 0, 0, tzinfo=UTC)),
    ("30 9 1 * *", dt.datetime(2027, 2, 1, 9, 30, tzinfo=UTC)),
    # Six fields: seconds first.
    ("30 * * * * *", dt.datetime(2027, 1, 13, 12, 3, 30, tzinfo=UTC)),
    ("*/15 * * * * *", dt.datetime(2027, 1, 13, 12, 3, 30, tzinfo=UTC)),
    ("0 0 0 * * *", dt.datetime(2027, 1, 14, 0, 0, tzinfo=UTC)),
])
def test_cron_trigger_with_5_and_6_fields_in_utc(expr: str, expected: dt.datetime) -> None:
    assert _next(expr, WEDNESDAY) == expected


@pytest.mark.parametrize(("expr", "weekday"), [
    ("0 0 * * 0", 6),      # crontab: 0 is Sunday
    ("0 0 * * 1", 0),      # 1 is Monday
    ("0 0 * * 5", 4),      # 5 is Friday
    ("0 0 * * sun", 6),
    ("0 0 0 * * 0", 6),    # the six-field form follows crontab too
])
def test_cron_day_of_week_numbers_follow_crontab(expr: str, weekday: int) -> None:
    """CRON_* settings take crontab expressions, where day-of-week 0 (and 7) is Sunday."""
    assert _next(expr, WEDNESDAY).weekday() == weekday


@pytest.mark.parametrize("expr", ["* * *", "* * * *", "* * * * * * *", "", "61 * * * *",
                                  "* 24 * * *", "0 0 32 * *", "0 0 * 13 *", "not a cron"])
def test_cron_trigger_refuses_bad_expressions(expr: str) -> None:
    with pytest.raises(ValueError):
        crontab.cron_trigger(expr)


def test_the_cron_param_type_fails_with_a_click_error() -> None:
    with pytest.raises(click.BadParameter, match="not a valid cron expression"):
        config.Cron().convert("61 * * * *", None, None)


def test_every_fake_email_option_has_an_environment_variable() -> None:
    """the README's Configuration: every option has an environment variable."""
    result = CliRunner().invoke(cli.cli, ["fake-email", "--help"], env=runner_env())
    assert result.exit_code == 0, result.output
    flat = squeeze(result.output)
    for name in ("HOST", "PORT", "ERROR_RATE", "TIMEOUT_RATE", "LATENCY_MS", "SEED",
                 "HONOUR_IDEMPOTENCY_KEY"):
        assert f"envvar:FAKE_EMAIL_{name}" in flat


def test_migrate_create_db_has_an_environment_variable() -> None:
    result = CliRunner().invoke(cli.cli, ["migrate", "--help"], env=runner_env())
    assert "MIGRATE_CREATE_DB" in result.output
