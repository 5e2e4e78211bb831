"""Production's nginx, run: port 80 answers nothing but a redirect to HTTPS (and
nginx's own health), 443 serves the API's routes.

The files are the ones docker-compose.prod.yml mounts into the nginx container,
laid out by scripts/check_deploy.py as for `nginx -t`; only the listen ports move
to free loopback ports. No api replica runs, so a proxied route answers the
config's own JSON 503: what matters is which server proxies at all.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import re
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


def load_check_deploy() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_deploy", REPO / "scripts/check_deploy.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def prod_nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    cd = load_check_deploy()
    dest = tmp_path_factory.mktemp("nginx-prod")
    cd.render_nginx(REPO, cd.nginx_mounts(cd.compose_model(REPO, "prod")), dest)
    http_port, https_port = free_port(), free_port()
    servers = dest / "etc/nginx/birthdayd/servers"
    for conf in servers.glob("*.conf"):
        text = re.sub(r"\blisten 80\b", f"listen 127.0.0.1:{http_port}", conf.read_text())
        text = re.sub(r"\blisten 443\b", f"listen 127.0.0.1:{https_port}", text)
        conf.write_text(text)
    # One process, in the foreground, as the user running the test (the temporary
    # directory need not be readable by nginx's unprivileged worker user).
    log = dest / "early.log"
    proc = subprocess.Popen(
        [
            cd.nginx_binary(),
            "-p",
            f"{dest}/",
            "-c",
            str(dest / "etc/nginx/nginx.conf"),
            "-e",
            str(log),
            "-g",
            "daemon off; master_process off;",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", https_port), 1),
            ):
                break
            assert proc.poll() is None, log.read_text() if log.exists() else "nginx exited"
            assert time.monotonic() < deadline, "nginx did not listen within 10 s"
            time.sleep(0.05)
        yield http_port, https_port
    finally:
        proc.terminate()
        proc.wait(10)


def get(
    port: int, path: str, *, tls: bool = False, method: str = "GET"
) -> http.client.HTTPResponse:
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the self-signed stand-in certificate
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            "127.0.0.1", port, timeout=10, context=context
        )
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    body = b"{}" if method in {"POST", "PUT"} else None
    conn.request(
        method, path, body=body, headers={"Host": "birthdayd.example", "Authorization": "Bearer x"}
    )
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/users"),
        ("POST", "/user"),
        ("PUT", "/user/1"),
        ("GET", "/health"),
        ("GET", "/metrics"),
    ],
)
def test_port_80_only_redirects(prod_nginx: tuple[int, int], method: str, path: str) -> None:
    response = get(prod_nginx[0], path, method=method)
    assert response.status == 308  # keeps the method and body
    assert response.getheader("Location") == f"https://birthdayd.example{path}"


def test_port_80_answers_its_own_health(prod_nginx: tuple[int, int]) -> None:
    assert get(prod_nginx[0], "/nginx-health").status == 200


def test_port_443_serves_the_api_routes(prod_nginx: tuple[int, int]) -> None:
    https = prod_nginx[1]
    assert get(https, "/nginx-health", tls=True).status == 200
    response = get(https, "/users", tls=True)
    # Proxied to the (absent) api replicas: the config's own "unavailable" answer.
    assert response.status in {502, 503, 504}
    assert response.getheader("Retry-After") == "5"
    assert get(https, "/metrics", tls=True).status == 404
    assert "max-age=" in (
        get(https, "/nginx-health", tls=True).getheader("Strict-Transport-Security") or ""
    )
