"""`birthdayd healthcheck`: which URL it probes for each subcommand's command line.

The image's HEALTHCHECK runs it against PID 1 (tini), so the command line it reads
looks like ``tini -- birthdayd SUBCOMMAND ...``; the subcommand's own options and
environment decide the port, exactly as they do for the process itself.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from birthdayd.cli import cli, health_url
from birthdayd.fake_email import FakeProvider

TINI = ["tini", "--", "birthdayd"]
VENV = ["/opt/birthdayd/bin/python", "/opt/birthdayd/bin/birthdayd"]


@pytest.fixture(autouse=True)
def _no_port_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PORT", "HOST", "FAKE_EMAIL_PORT", "FAKE_EMAIL_HOST"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("args", [["run"], ["run", "--role", "api"],
                                  ["run", "--role", "worker"], ["run", "--role", "scheduler"]])
def test_every_run_role_is_probed_on_its_http_port(args: list[str]) -> None:
    assert health_url([*TINI, *args]) == "http://127.0.0.1:3000/health"


def test_run_follows_the_port_and_host_it_was_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "4100")
    assert health_url([*TINI, "run", "--role", "api"]) == "http://127.0.0.1:4100/health"
    assert health_url([*VENV, "run", "--port", "4200"]) == "http://127.0.0.1:4200/health"
    assert health_url([*TINI, "run", "--host", "::"]) == "http://[::1]:4100/health"
    assert health_url([*TINI, "run", "--host=10.1.2.3"]) == "http://10.1.2.3:4100/health"


def test_fake_email_is_probed_on_its_own_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "3000")  # the image sets it; fake-email ignores it
    assert health_url([*TINI, "fake-email", "--host=0.0.0.0", "--port=8025"]) \
        == "http://127.0.0.1:8025/health"
    assert health_url([*TINI, "fake-email"]) == "http://127.0.0.1:8025/health"
    monkeypatch.setenv("FAKE_EMAIL_PORT", "9025")
    assert health_url([*VENV, "fake-email"]) == "http://127.0.0.1:9025/health"


@pytest.mark.parametrize("args", [["migrate", "--create-db"], ["--help"], ["--version"],
                                  ["healthcheck"], []])
def test_commands_that_serve_nothing_have_nothing_to_probe(args: list[str]) -> None:
    assert health_url([*TINI, *args]) is None


def test_a_process_that_is_not_birthdayd_is_an_error() -> None:
    with pytest.raises(click.ClickException, match="not a birthdayd command line"):
        health_url(["nginx", "-g", "daemon off;"])


def test_the_command_reads_the_process_command_line_and_fails_when_nothing_answers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A process whose command line names birthdayd, listening nowhere: port 1 refuses.
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)",
                             "birthdayd", "run", "--port", "1"])
    try:
        cmdline = Path(f"/proc/{proc.pid}/cmdline")
        for _ in range(200):  # until the child has exec'd
            if b"birthdayd" in cmdline.read_bytes():
                break
            time.sleep(0.01)
        result = CliRunner().invoke(cli, ["healthcheck", "--pid", str(proc.pid)])
        assert result.exit_code == 1
        assert "http://127.0.0.1:1/health" in result.output
    finally:
        proc.kill()
        proc.wait()
    missing = CliRunner().invoke(cli, ["healthcheck", "--pid", "999999999"])
    assert missing.exit_code == 1
    assert "cannot read process 999999999" in missing.output


def test_the_image_healthcheck_uses_it() -> None:
    dockerfile = (Path(__file__).resolve().parents[2] / "Dockerfile").read_text()
    assert 'CMD ["birthdayd", "healthcheck"]' in dockerfile


async def test_fake_email_serves_health(aiohttp_client: Any) -> None:
    client = await aiohttp_client(FakeProvider().app())
    answer = await client.get("/health")
    assert answer.status == 200
    assert await answer.json() == {"status": "ok"}
