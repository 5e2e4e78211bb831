"""The ``birthdayd`` command line (parsing only; the work is elsewhere)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from birthdayd import __version__, config

F = TypeVar("F", bound=Callable[..., Any])


def _environment_epilog() -> str:
    lines = ["\b", "Environment (NAME_FILE=/path reads NAME from a file):"]
    for option in config.OPTIONS:
        default = config.default_text(option)
        lines.append(f"  {option.envvar:<32} {default}")
    return "\n".join(lines)


# Wide enough that URLs and cron defaults are not broken mid-word.
_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 120,
            "terminal_width": 120}


@click.group(context_settings=_CONTEXT, epilog=_environment_epilog())
@click.version_option(__version__, prog_name="birthdayd")
def cli() -> None:
    """birthdayd: greets each user at 09:00 in their own time zone, exactly once.

    Every option can also be set by the environment variable shown beside it,
    or from a file by NAME_FILE=/path (Docker and Kubernetes secrets).
    """


@cli.command()
@click.option("--role", "roles", multiple=True, type=click.Choice(config.ROLES),
              envvar="BIRTHDAYD_ROLES", show_envvar=True,
              help="Role(s) to run; repeat for several. Default: all three.")
@config.options()
def run(roles: tuple[str, ...], **params: Any) -> None:
    """Run the daemon (API, worker and scheduler, or the roles given)."""
    from birthdayd import runtime  # noqa: PLC0415 - keep --help fast

    settings = config.settings_from(params)
    try:
        code = runtime.main(settings, sorted(set(roles), key=config.ROLES.index))
    except runtime.SchemaNotReady as e:
        raise click.ClickException(str(e)) from e
    sys.exit(code)


@cli.command()
@click.option("--create-db", is_flag=True, envvar="MIGRATE_CREATE_DB", show_envvar=True,
              help="Create the database first if it is missing.")
@config.options(["database_url", "log_level", "log_format"])
def migrate(create_db: bool, **params: Any) -> None:
    """Apply sql/*.sql in order, once each (safe to run from several replicas)."""
    import asyncpg  # noqa: PLC0415

    from birthdayd import logs, migrations  # noqa: PLC0415

    settings = config.settings_from(params)
    logs.setup(settings.log_level, settings.log_format)

    async def go() -> list[str]:
        if create_db:
            await migrations.create_database(settings.database_url)
        conn = await asyncpg.connect(settings.database_url)
        try:
            return await migrations.migrate(conn)
        finally:
            await conn.close()

    try:
        applied = asyncio.run(go())
    except (OSError, asyncpg.PostgresError) as e:
        raise click.ClickException(f"migration failed: {e}") from e
    click.echo(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}"
                                                         if applied else ""))


def _fake(flag: str, env: str, **kwargs: Any) -> Callable[[F], F]:
    return click.option(flag, envvar=f"FAKE_EMAIL_{env}", show_envvar=True, **kwargs)


@cli.command("fake-email")
@_fake("--host", "HOST", default="127.0.0.1", show_default=True, help="Listen address.")
@_fake("--port", "PORT", default=8025, show_default=True, type=click.IntRange(0, 65535),
       help="Listen port.")
@_fake("--error-rate", "ERROR_RATE", default=0.0, show_default=True,
       type=click.FloatRange(0, 1), help="Share of requests answered with HTTP 500.")
@_fake("--timeout-rate", "TIMEOUT_RATE", default=0.0, show_default=True,
       type=click.FloatRange(0, 1),
       help="Share of requests that hang without an answer (and are not accepted).")
@_fake("--latency-ms", "LATENCY_MS", default=0, show_default=True, type=click.IntRange(0),
       help="Delay before each answer.")
@_fake("--seed", "SEED", type=int, default=None, help="Random seed, for repeatable runs.")
@_fake("--honour-idempotency-key/--ignore-idempotency-key", "HONOUR_IDEMPOTENCY_KEY",
       default=True, show_default=True,
       help="Answer a repeated Idempotency-Key as before without delivering again.")
def fake_email(host: str, port: int, error_rate: float, timeout_rate: float, latency_ms: int,
               seed: int | None, honour_idempotency_key: bool) -> None:
    """A local stand-in for the e-mail API (POST /send-email), for development,
    demos and tests.  GET /stats shows what it accepted, per address; GET /health
    answers while it runs."""
    from birthdayd import fake_email as fake  # noqa: PLC0415

    fake.main(host, port, error_rate, timeout_rate, latency_ms, seed, honour_idempotency_key)


@cli.command()
@click.option("--pid", type=int, default=1, show_default=True,
              help="The process whose birthdayd command line says what to probe.")
@click.option("--timeout", type=float, default=3.0, show_default=True,
              help="Seconds to wait for the answer.")
def healthcheck(pid: int, timeout: float) -> None:
    """Exit 0 if the birthdayd that process PID runs answers (the image's HEALTHCHECK).

    Probes what its subcommand serves: `run` (every role) GET /health on its --port
    or PORT, `fake-email` GET /health on its own port; `migrate` serves nothing
    and passes.  In a container PID 1 is tini, whose command line holds birthdayd's.
    """
    import urllib.request  # noqa: PLC0415

    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError as e:
        raise click.ClickException(f"cannot read process {pid}: {e}") from e
    url = health_url(argv)
    if url is None:
        click.echo(f"process {pid}: nothing to probe")
        return
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:  # noqa: S310
            click.echo(f"{url}: {answer.status}")
    except (OSError, ValueError) as e:  # refused, timed out, or an HTTP error status
        raise click.ClickException(f"{url}: {e}") from e


def health_url(argv: Sequence[str]) -> str | None:
    """The health URL the birthdayd command in ``argv`` serves (None: it serves none).

    ``argv`` is a command line holding ``birthdayd SUBCOMMAND ...`` (tini's, or the
    interpreter's); the subcommand's own options and environment say where it listens.
    """
    start = next((i for i, arg in enumerate(argv) if os.path.basename(arg) == "birthdayd"),
                 None)
    if start is None:
        raise click.ClickException(f"not a birthdayd command line: {' '.join(argv)}")
    args = list(argv[start + 1:])
    name = next((arg for arg in args if not arg.startswith("-")), None)
    command = cli.commands.get(name) if name else None
    if name is None or command is None or name == "healthcheck":
        return None
    params = command.make_context(name, args[args.index(name) + 1:],
                                  resilient_parsing=True).params
    if "port" not in params:
        return None
    host = params.get("host") or "0.0.0.0"  # noqa: S104 - compared, not bound
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{params['port']}/health"


def main() -> None:
    """Console-script entry: bad settings exit 2 with one clear line."""
    try:
        config.load_secret_files()
        cli.main(standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.Abort:
        sys.exit(130)
    except click.exceptions.NoArgsIsHelpError as e:
        click.echo(e.format_message(), err=True)  # "birthdayd" alone: the help
        sys.exit(2)
    except click.UsageError as e:
        click.echo(f"birthdayd: error: {e.format_message()}", err=True)
        sys.exit(2)
    except click.ClickException as e:
        click.echo(f"birthdayd: error: {e.format_message()}", err=True)
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
