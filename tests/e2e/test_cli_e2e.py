"""The daemon as an operator starts it: `migrate --create-db`, then `run`."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import uuid
from pathlib import Path

import aiohttp

from birthdayd import migrations
from tests.conftest import RABBITMQ_URL, _admin, db_url
from tests.e2e.conftest import BIRTHDAYD, Cluster, Proc, eventually, free_port


async def test_migrate_create_db_then_run_serves_and_stops_on_sigterm(
    tmp_path: Path, queue_name: str
) -> None:
    """On a server without the database: `migrate --create-db` creates and migrates
    it (twice is a no-op), `run` becomes ready, serves the API and exits 0 on SIGTERM."""
    name = f"bdt_new_{uuid.uuid4().hex[:12]}"
    env = {**os.environ, "DATABASE_URL": db_url(name), "RABBITMQ_URL": RABBITMQ_URL,
           "QUEUE_NAME": queue_name, "LOG_FORMAT": "text"}
    try:
        first = subprocess.run([BIRTHDAYD, "migrate", "--create-db"], env=env,
                               capture_output=True, text=True, timeout=60, check=False)
        assert first.returncode == 0, first.stderr
        shipped = len(migrations.migration_files())
        assert f"applied {shipped} migration(s)" in first.stdout
        again = subprocess.run([BIRTHDAYD, "migrate", "--create-db"], env=env,
                               capture_output=True, text=True, timeout=60, check=False)
        assert again.returncode == 0, again.stderr
        assert "applied 0 migration(s)" in again.stdout

        port = free_port()
        proc = Proc("run", ["run"], {**env, "PORT": str(port)}, tmp_path / "run.log", port)
        proc.start()
        try:
            await proc.wait_http("/ready")
            async with aiohttp.ClientSession() as session:
                body = {"firstName": "Ada", "lastName": "Lovelace", "email": "ada@example.com",
                        "birthday": "1990-01-15", "location": "Australia/Melbourne"}
                async with session.post(proc.url + "/user", json=body) as r:
                    assert r.status == 201
                async with session.get(proc.url + "/metrics") as r:
                    assert "birthdayd_tick_claimed_total" in await r.text()
            proc.signal(signal.SIGTERM)
            assert await proc.wait_exit(15) == 0
        finally:
            proc.stop_now()
    finally:
        await asyncio.sleep(0)
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_run_without_migrations_says_what_to_do(tmp_path: Path) -> None:
    """`run` against a database that does not exist exits non-zero with the fix."""
    env = {**os.environ, "DATABASE_URL": db_url(f"bdt_missing_{uuid.uuid4().hex[:8]}"),
           "PORT": str(free_port())}
    result = subprocess.run([BIRTHDAYD, "run"], env=env, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert "birthdayd migrate --create-db" in result.stderr


async def test_two_api_processes_share_a_port_with_reuse_port(
    cluster: Cluster,
) -> None:
    """HTTP_REUSE_PORT=1: a second api process binds the same port (without it,
    the bind fails) and both answer; one stopping leaves the other serving."""
    port = free_port()
    env = {"HTTP_REUSE_PORT": "1", "PORT": str(port)}
    first = await cluster.start("api", **env)
    second = await cluster.start("api", **env)  # its /ready may be the first's answer
    assert first.port == second.port == port

    async def second_listening() -> bool:
        return '"event":"started"' in second.output()

    await eventually(second_listening, 20, "the second process listening", cluster.logs)
    async with aiohttp.ClientSession() as session:
        for _ in range(20):
            async with session.get(f"http://127.0.0.1:{port}/health") as r:
                assert r.status == 200
    first.signal(signal.SIGTERM)
    assert await first.wait_exit(15) == 0
    assert second.popen is not None and second.popen.poll() is None, second.output()
    async with aiohttp.ClientSession() as session, session.get(
        f"http://127.0.0.1:{port}/ready"
    ) as r:
        assert r.status == 200, second.output()
