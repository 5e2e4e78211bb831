"""Real ``birthdayd`` processes: the daemon roles and the fake provider.

Processes share one timeline through ``BIRTHDAYD_NOW`` (the instant their
clock reads at start, then running at real speed), so a test can run them "on
someone's birthday" without sleeping until 09:00.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.conftest import RABBITMQ_URL, free_port

BIRTHDAYD = str(Path(sys.executable).with_name("birthdayd"))
UTC = dt.UTC


class Timeline:
    """Fake time = real time + offset, shared by the test and its processes."""

    def __init__(self, start: dt.datetime) -> None:
        self.offset_s = start.timestamp() - time.time()

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(time.time() + self.offset_s, UTC)

    def jump(self, delta: dt.timedelta) -> None:
        """Later processes start this much further along (a downtime)."""
        self.offset_s += delta.total_seconds()


class Proc:
    def __init__(self, name: str, args: list[str], env: dict[str, str], log: Path,
                 port: int) -> None:
        self.name, self.args, self.env, self.log, self.port = name, args, env, log, port
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        out = self.log.open("ab")
        self.popen = subprocess.Popen(
            [BIRTHDAYD, *self.args], env=self.env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def wait_http(self, path: str = "/health", timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                assert self.popen is not None
                if self.popen.poll() is not None:
                    raise AssertionError(f"{self.name} exited {self.popen.returncode}:\n"
                                         f"{self.output()[-3000:]}")
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(self.url + path) as r:
                        if r.status == 200:
                            return
                await asyncio.sleep(0.05)
        raise AssertionError(f"{self.name} not up on {path}:\n{self.output()[-3000:]}")

    def signal(self, sig: signal.Signals) -> None:
        assert self.popen is not None
        self.popen.send_signal(sig)

    async def wait_exit(self, timeout_s: float) -> int:
        assert self.popen is not None
        deadline = time.monotonic() + timeout_s
        while self.popen.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} still running after {timeout_s}s")
            await asyncio.sleep(0.05)
        return self.popen.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop_now(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()


class Cluster:
    """Starts processes for one test and kills whatever is left at the end."""

    def __init__(self, tmp: Path, database_url: str, queue_name: str, timeline: Timeline
                 ) -> None:
        self.tmp, self.timeline = tmp, timeline
        self.procs: list[Proc] = []
        self.fake: Proc | None = None
        self.base_env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "RABBITMQ_URL": RABBITMQ_URL,
            "QUEUE_NAME": queue_name,
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "info",
            # Fast cadence for tests: a tick every second, recovery every two.
            "CRON_MINUTE_SCHEDULE": "* * * * * *",
            "CRON_RECOVERY_SCHEDULE": "*/2 * * * * *",
            "LEASE_MARGIN": "2s",
            "EMAIL_API_TIMEOUT": "500",
            "QUEUE_BACKOFF_DELAY": "50",
            "CIRCUIT_BREAKER_RESET_TIMEOUT": "300",
            "SHUTDOWN_GRACE": "10",
        }

    def _proc(self, name: str, args: list[str], env: dict[str, str], port: int) -> Proc:
        proc = Proc(name, args, env, self.tmp / f"{name}-{len(self.procs)}.log", port)
        self.procs.append(proc)
        return proc

    async def start_fake(self, *flags: str) -> Proc:
        port = free_port()
        proc = self._proc("fake-email", ["fake-email", "--port", str(port), *flags],
                          dict(os.environ), port).start()
        await proc.wait_http("/stats")
        self.fake = proc
        self.base_env["EMAIL_API_URL"] = f"{proc.url}/send-email"
        return proc

    async def start(self, *roles: str, **env: str) -> Proc:
        port = int(env.get("PORT") or free_port())
        args = ["run"] + [a for r in roles for a in ("--role", r)]
        full_env = {**self.base_env, "PORT": str(port), "HOST": "127.0.0.1",
                    "BIRTHDAYD_NOW": self.timeline.now().isoformat(), **env}
        proc = self._proc("-".join(roles) or "all", args, full_env, port).start()
        await proc.wait_http("/ready")
        return proc

    async def fake_stats(self) -> dict[str, Any]:
        assert self.fake is not None
        async with aiohttp.ClientSession() as session, session.get(
            self.fake.url + "/stats"
        ) as r:
            stats: dict[str, Any] = await r.json()
            return stats

    def kill_all(self) -> None:
        for proc in self.procs:
            proc.stop_now()

    def errors(self) -> list[str]:
        """Log lines at error level from every process (JSON logs)."""
        return [line for p in self.procs for line in p.output().splitlines()
                if '"level":"error"' in line or '"level":"critical"' in line]

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.output()[-4000:]}" for p in self.procs)


@pytest.fixture
def timeline() -> Timeline:
    return Timeline(dt.datetime(2027, 1, 15, 8, 59, 55, tzinfo=UTC))


@pytest.fixture
async def cluster(tmp_path: Path, database_url: str, queue_name: str, timeline: Timeline
                  ) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path, database_url, queue_name, timeline)
    try:
        yield c
    finally:
        c.kill_all()


async def eventually(check: Callable[[], Any], timeout_s: float, what: str,
                     logs: Callable[[], str] | None = None,
                     state: Callable[[], Any] | None = None) -> Any:
    """Poll an async check until it returns something truthy; on timeout, fail
    with ``state()`` (what the system looked like) and the processes' logs."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.1)
    seen = await state() if state else None
    raise AssertionError(f"timed out waiting for {what} (state: {seen!r})\n"
                         + (logs() if logs else ""))


DAY = dt.date(2027, 1, 15)
"""The day the e2e tests' greetings fall on (the timeline starts just before 09:00Z)."""


async def statuses(pool: asyncpg.Pool, day: dt.date = DAY) -> dict[str, int]:
    """How many of the day's greetings are in each state."""
    rows = await pool.fetch(
        "SELECT status, count(*) AS n FROM messages WHERE occasion_date = $1 GROUP BY status",
        day)
    return {r["status"]: r["n"] for r in rows}


async def stuck_rows(pool: asyncpg.Pool, day: dt.date = DAY) -> list[dict[str, object]]:
    """Some of the day's greetings not sent yet, for a failure message."""
    rows = await pool.fetch(
        "SELECT id, status, attempts, due_at, lease_until, last_error FROM messages "
        "WHERE occasion_date = $1 AND status <> 'sent' ORDER BY status, id LIMIT 20", day)
    return [dict(r) for r in rows]
