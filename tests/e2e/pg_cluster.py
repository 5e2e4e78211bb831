"""A private PostgreSQL server for tests that must stop, crash or restart it,
plus small helpers shared by the fault tests (metrics, figures).

The shared server on 127.0.0.1:5432 is used by other tests at the same time,
so a test that takes PostgreSQL away gets a throw-away cluster of its own:
``initdb`` into a temporary directory owned by the ``postgres`` OS user (initdb
and the server refuse to run as root), a free port, trust auth, no fsync.
The commands, as run (``$D`` a fresh directory under /tmp, chowned to postgres)::

    runuser -u postgres -- $BIN/initdb -D $D/data -U postgres --auth=trust \\
        -E UTF8 --no-sync --no-instructions
    runuser -u postgres -- $BIN/pg_ctl -D $D/data -l $D/server.log -w -t 30 \\
        -o "-p $PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$D \\
            -c fsync=off -c synchronous_commit=off -c full_page_writes=off" start
    runuser -u postgres -- $BIN/pg_ctl -D $D/data -m immediate -w stop

``$BIN`` is ``BIRTHDAYD_TEST_PG_BIN`` or the newest /usr/lib/postgresql/*/bin.
When the tests do not run as root, the commands run as the current user.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.conftest import Proc, free_port


def pg_bin() -> Path | None:
    if env := os.environ.get("BIRTHDAYD_TEST_PG_BIN"):
        return Path(env)
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(re.findall(r"/(\d+)/bin", p)[0]))
    return Path(found[-1]).parent if found else None


class PrivatePostgres:
    """One PostgreSQL server in a temporary directory; ``stop``/``start`` at will."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="birthdayd-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self.running = False

    def _run(self, *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
        cmd = [*(["runuser", "-u", "postgres", "--"] if self._as_postgres else []), *args]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                                check=False, cwd=self.root)
        if result.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {result.returncode}:\n"
                                 f"{result.stdout}\n{result.stderr}\n{self.server_log()}")
        return result

    def init(self) -> PrivatePostgres:
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                  "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions")
        return self

    def start(self) -> None:
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 "
                   f"-c unix_socket_directories={self.root} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off")
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                  "-w", "-t", "30", "-o", options, "start")
        self.running = True

    def stop(self, mode: str = "immediate") -> None:
        """``immediate`` is a crash (no checkpoint, connections cut); ``fast`` a clean stop."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")
        self.running = False

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def server_log(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-3000:]
        return ""

    def destroy(self) -> None:
        with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
            if self.running or (self.data / "postmaster.pid").exists():
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    """A started private PostgreSQL server, destroyed after the test."""
    bin_dir = pg_bin()
    if bin_dir is None or not (bin_dir / "pg_ctl").exists():
        pytest.fail("PostgreSQL server binaries (initdb, pg_ctl) are not installed: "
                    "a test that cannot run is a failure, not a skip")
    server = PrivatePostgres(bin_dir)
    try:
        server.init().start()
        yield server
    finally:
        server.destroy()


# -- helpers shared by the fault tests -----------------------------------------


_SAMPLE = re.compile(r'^(?P<name>[a-z_]+)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$')


async def metric(procs: Iterable[Proc], name: str, label: str) -> dict[str, float]:
    """A counter's samples summed over the (running) processes, by one label."""
    out: dict[str, float] = {}
    async with aiohttp.ClientSession() as session:
        for proc in procs:
            if proc.popen is None or proc.popen.poll() is not None or proc.name == "fake-email":
                continue
            async with session.get(proc.url + "/metrics") as r:
                text = await r.text()
            for line in text.splitlines():
                m = _SAMPLE.match(line)
                if not m or m["name"] != name:
                    continue
                labels = dict(re.findall(r'(\w+)="([^"]*)"', m["labels"] or ""))
                key = labels.get(label, "")
                out[key] = out.get(key, 0.0) + float(m["value"])
    return out


def figures(test: str, **values: object) -> None:
    """One line of figures, visible with ``pytest -s``."""
    shown = " ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in values.items())
    print(f"\nFIGURES {test}: {shown}", flush=True)


async def assert_healthy(procs: Iterable[Proc]) -> None:
    """Each daemon still runs and answers /ready (PostgreSQL and RabbitMQ reachable)."""
    async with aiohttp.ClientSession() as session:
        for proc in procs:
            assert proc.popen is not None and proc.popen.poll() is None, f"{proc.name} died"
            deadline = time.monotonic() + 10
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(proc.url + "/ready") as r:
                        if r.status == 200:
                            break
                assert time.monotonic() < deadline, f"{proc.name} not ready again"
                await asyncio.sleep(0.1)


class Stopwatch:
    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.t0
