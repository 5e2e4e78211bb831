"""`make check-deploy` catches what it claims to: every check passes on a copy of
the repository's deployment files, and fails, naming itself, on a copy with one
thing broken for it (scripts/check_deploy.py pointed at the copy).

The tools come from `make deploy-tools` (a prerequisite of `make test`).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "check_deploy.py"
COPIED = ["Dockerfile", "README.md", "conf", "systemd", ".github"]


def run(root: Path, *checks: str) -> subprocess.CompletedProcess[str]:
    only = [a for c in checks for a in ("--only", c)]
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(root), *only],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("deploy")
    for name in COPIED:
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, root / name)
    for compose_file in REPO.glob("docker-compose*.yml"):
        shutil.copy(compose_file, root / compose_file.name)
    return root


@pytest.fixture(scope="module")
def passing(pristine: Path) -> set[str]:
    """The checks that pass on the unbroken copy (each must, or its test fails)."""
    proc = run(pristine)
    return {
        line.split(":")[1].strip()
        for line in proc.stdout.splitlines()
        if line.startswith("check-deploy: ") and ": ok (" in line
    } | ({"<all>"} if proc.returncode == 0 else set())


def replace(path: str, old: str, new: str) -> Callable[[Path], None]:
    def breaker(root: Path) -> None:
        text = (root / path).read_text()
        assert old in text, f"{path} no longer contains {old!r}: update this test"
        (root / path).write_text(text.replace(old, new, 1))

    return breaker


def append(path: str, text: str) -> Callable[[Path], None]:
    def breaker(root: Path) -> None:
        with (root / path).open("a") as f:
            f.write(text)

    return breaker


def write(path: str, text: str) -> Callable[[Path], None]:
    def breaker(root: Path) -> None:
        (root / path).write_text(text)

    return breaker


# (check, what is broken, how, words the failure must contain)
BROKEN: list[tuple[str, str, Callable[[Path], None], str]] = [
    (
        "compose",
        "a replica count that is not a number",
        replace("docker-compose.staging.yml", "replicas: 3", "replicas: three"),
        "staging",
    ),
    (
        "compose-stacks",
        "the test stack's nginx port added to the base file's 80",
        replace(
            "docker-compose.test.yml", "  nginx:\n    ports: !override", "  nginx:\n    ports:"
        ),
        "host port 80/tcp",
    ),
    (
        "compose-stacks",
        "production serving the API on port 80",
        replace(
            "docker-compose.prod.yml",
            "      - ./conf/nginx/redirect.conf:/etc/nginx/birthdayd/servers/port80.conf:ro\n",
            "",
        ),
        "port 80 must only redirect",
    ),
    (
        "hadolint",
        "a deprecated instruction",
        append("Dockerfile", "\nMAINTAINER someone@example.com\n"),
        "DL4000",
    ),
    (
        "nginx",
        "an unknown directive",
        append("conf/nginx/locations.conf", "\nproxy_bogus on;\n"),
        "unknown directive",
    ),
    (
        "nginx",
        "a TLS protocol nginx does not know",
        replace("conf/nginx/tls.conf", "ssl_protocols TLSv1.2 TLSv1.3;", "ssl_protocols TLSv9;"),
        "prod",
    ),
    (
        "nginx-version",
        "README understating the version",
        replace("README.md", "nginx ≥ 1.27.3", "nginx ≥ 1.25.1"),
        "needs 1.27.3",
    ),
    (
        "nginx-version",
        "an nginx image older than the config needs",
        replace("docker-compose.yml", "image: nginx:1.28-alpine", "image: nginx:1.26-alpine"),
        "older than 1.27.3",
    ),
    (
        "promtool-config",
        "a scrape interval that is no duration",
        replace(
            "conf/prometheus/prometheus.yml", "scrape_interval: 15s", "scrape_interval: fifteen"
        ),
        "fifteen",
    ),
    (
        "promtool-rules",
        "an expression that does not parse",
        append(
            "conf/prometheus/alerts.yml",
            "\n  - name: broken\n    rules:\n      - alert: Broken\n        expr: sum(up\n",
        ),
        "Broken",
    ),
    (
        "promtool-test",
        "a unit test whose expectation is wrong",
        write(
            "conf/prometheus/tests/broken_test.yml",
            textwrap.dedent("""\
                rule_files: [../alerts.yml]
                evaluation_interval: 1m
                tests:
                  - interval: 1m
                    input_series:
                      - series: 'birthdayd_breaker_open{instance="w:3000"}'
                        values: '0x10'
                    alert_rule_test:
                      - eval_time: 10m
                        alertname: BirthdaydBreakerOpen
                        exp_alerts: [{exp_labels: {severity: warning, instance: 'w:3000'}}]
            """),
        ),
        "got:[]",
    ),
    (
        "promtool-test",
        "an alert without a unit test",
        append(
            "conf/prometheus/alerts.yml",
            "\n  - name: untested\n    rules:\n      - alert: Untested\n        expr: vector(1)\n",
        ),
        "Untested",
    ),
    (
        "systemd-verify",
        "a service type systemd does not know",
        replace("systemd/birthdayd-api.service", "Type=exec", "Type=bogus"),
        "Failed to parse service type",
    ),
    (
        "systemd-security",
        "sandboxing removed",
        replace("systemd/birthdayd-worker.service", "RestrictNamespaces=yes\n", ""),
        "birthdayd-worker.service: exposure",
    ),
    (
        "k8s",
        "a field Kubernetes does not have",
        replace(
            "conf/k8s/api-deployment.yaml", "  replicas: 3\n", "  replicas: 3\n  bogusField: 1\n"
        ),
        "bogusField",
    ),
    (
        "workflow",
        "a job without runs-on",
        replace(".github/workflows/ci.yml", "runs-on:", "runs_on:"),
        "'runs-on' is a required property",
    ),
    (
        "workflow",
        "no `make test` step",
        replace(".github/workflows/ci.yml", "run: make test", "run: make lint"),
        "make test",
    ),
]


def test_every_check_has_a_broken_copy() -> None:
    listed = subprocess.run(
        [sys.executable, str(SCRIPT), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert set(listed) == {check for check, *_ in BROKEN}


def test_pristine_copy_passes(pristine: Path, passing: set[str]) -> None:
    proc = run(pristine)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "check-deploy: all " in proc.stdout


@pytest.mark.parametrize(
    ("check", "breaker", "words"),
    [pytest.param(c, b, w, id=f"{c}: {what}") for c, what, b, w in BROKEN],
)
def test_broken_copy_fails(
    check: str,
    breaker: Callable[[Path], None],
    words: str,
    pristine: Path,
    passing: set[str],
    tmp_path: Path,
) -> None:
    assert check in passing, f"{check} fails on the unbroken copy too"
    root = tmp_path / "deploy"
    shutil.copytree(pristine, root, symlinks=True)
    breaker(root)
    proc = run(root, check)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert f"check-deploy: {check}: FAILED" in out, out
    assert words in out, out
