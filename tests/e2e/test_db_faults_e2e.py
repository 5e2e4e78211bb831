"""End to end under PostgreSQL and process faults, against a provider that
IGNORES Idempotency-Key: whatever the fault, each greeting is accepted exactly
once, nothing is left in queued or sending, and the daemon stays healthy.

- PostgreSQL (a private server) stopped past every lease while provider calls
  are in flight, then started again;
- the daemon's PostgreSQL sessions killed (pg_terminate_backend) again and again;
- a scheduler SIGTERMed in the middle of a long tick, then a new one started.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import aiormq
import asyncpg
import pytest

from birthdayd import greetings
from tests.conftest import RABBITMQ_URL
from tests.e2e.conftest import BIRTHDAYD, UTC, Cluster, Proc, Timeline, eventually, free_port
from tests.e2e.pg_cluster import (
    PrivatePostgres,
    Stopwatch,
    assert_healthy,
    figures,
    metric,
    private_pg,
)

pytestmark = pytest.mark.e2e

__all__ = ["private_pg"]  # the fixture, used by name

DAY = dt.date(2027, 1, 15)
CREATED = dt.datetime(2027, 1, 15, 8, 0, tzinfo=UTC)
OBSERVER = "birthdayd-e2e-observer"  # the test's own sessions (never terminated)


def person(i: int) -> dict[str, object]:
    return {"first_name": f"User{i}", "last_name": "Test", "email": f"user{i}@example.com",
            "birthday": dt.date(1990, 1, 15), "anniversary": None, "location": "UTC"}


async def create_users(url: str, n: int, parallel: int = 8) -> None:
    """n users, each due at 09:00Z on DAY (created through the product's own code)."""
    async with asyncpg.create_pool(url, min_size=1, max_size=parallel,
                                   server_settings={"application_name": OBSERVER}) as pool:
        todo = iter(range(n))

        async def run() -> None:
            for i in todo:
                await greetings.create_user(pool, person(i), CREATED, 9)

        await asyncio.gather(*(run() for _ in range(parallel)))


async def query(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    """One statement on a connection of its own (survives server restarts and kills)."""
    conn = await asyncpg.connect(url, server_settings={"application_name": OBSERVER})
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def statuses(url: str) -> dict[str, int]:
    rows = await query(url, "SELECT status, count(*) AS n FROM messages "
                            "WHERE occasion_date = $1 GROUP BY status", DAY)
    return {r["status"]: r["n"] for r in rows}


async def not_sent(url: str) -> list[dict[str, Any]]:
    rows = await query(url, "SELECT id, status, attempts, due_at, lease_until, last_error "
                            "FROM messages WHERE occasion_date = $1 AND status <> 'sent' "
                            "LIMIT 10", DAY)
    return [dict(r) for r in rows]


async def max_lateness_s(url: str) -> float:
    rows = await query(url, "SELECT extract(epoch FROM max(sent_at - send_at))::float8 AS s "
                            "FROM messages WHERE occasion_date = $1 AND status = 'sent'", DAY)
    return float(rows[0]["s"] or 0.0)


def provider_duplicates(stats: dict[str, Any]) -> int:
    return sum(n - 1 for n in stats["byEmail"].values() if n > 1)


def assert_each_once(stats: dict[str, Any], n: int) -> None:
    assert sorted(stats["byEmail"]) == sorted(f"user{i}@example.com" for i in range(n))
    dups = {e: k for e, k in stats["byEmail"].items() if k > 1}
    assert dups == {}, f"accepted more than once by the provider: {dups}"
    assert stats["accepted"] == n


@contextlib.asynccontextmanager
async def report(test: str, cluster: Cluster, url: str, n: int, since_fault: Stopwatch,
                 **extra: object) -> AsyncIterator[dict[str, Any]]:
    """Print the figures line after the body, whether it passed or not; yields the
    provider's stats and the possible-duplicate metric for the assertions."""
    seen: dict[str, Any] = {}
    recovered = False
    try:
        yield seen
        recovered = True
    finally:
        elapsed = since_fault.elapsed()
        recover_s: object = elapsed if recovered else f">{elapsed:.1f}(not recovered)"
        seen["stats"] = stats = await cluster.fake_stats()
        with contextlib.suppress(aiohttp.ClientError):
            seen["possible_duplicates"] = await metric(
                cluster.procs, "birthdayd_possible_duplicates_total", "reason")
        figures(test, greetings=n, provider_duplicates=provider_duplicates(stats),
                possible_duplicates=seen.get("possible_duplicates", "?"),
                max_lateness_s=await max_lateness_s(url), recover_s=recover_s,
                status=await statuses(url), **extra)


# -- 1. PostgreSQL down past every lease ----------------------------------------


@pytest.fixture
async def pg_down_cluster(tmp_path: Path, queue_name: str, private_pg: PrivatePostgres
                          ) -> AsyncIterator[tuple[Cluster, str]]:
    url = private_pg.url("birthday_e2e")
    env = {**os.environ, "DATABASE_URL": url}
    made = subprocess.run([BIRTHDAYD, "migrate", "--create-db"], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert made.returncode == 0, made.stdout + made.stderr
    c = Cluster(tmp_path, url, queue_name,
                Timeline(dt.datetime(2027, 1, 15, 8, 59, 57, tzinfo=UTC)))
    try:
        yield c, url
    finally:
        c.kill_all()


async def test_postgres_down_past_every_lease_while_provider_answers_sends_each_once(
    pg_down_cluster: tuple[Cluster, str], private_pg: PrivatePostgres
) -> None:
    """PostgreSQL crashes while provider calls are in flight (their 2xx cannot be
    recorded) and stays down 10 s, far past the lease (timeout 1.5 s + margin 2 s);
    once it is back every greeting ends sent, each accepted exactly once by a
    provider that ignores Idempotency-Key, and no possible duplicate is counted."""
    cluster, url = pg_down_cluster
    n = 60
    await create_users(url, n)
    await cluster.start_fake("--latency-ms", "300", "--ignore-idempotency-key")
    daemon = await cluster.start("worker", "scheduler", EMAIL_API_TIMEOUT="1500",
                                 QUEUE_CONCURRENCY="20", QUEUE_MAX_RETRIES="30")

    async def calls_in_flight() -> bool:
        stats = await cluster.fake_stats()
        return bool(stats["requests"] > stats["accepted"])

    await eventually(calls_in_flight, 20, "provider calls in flight", cluster.logs)
    private_pg.stop("immediate")
    accepted_at_crash = (await cluster.fake_stats())["accepted"]
    await asyncio.sleep(10)  # the outage (not an assertion): 10 s ≫ the 3.5 s lease
    accepted_in_outage = (await cluster.fake_stats())["accepted"] - accepted_at_crash
    private_pg.start()
    back = Stopwatch()
    # The fault happened: the provider accepted greetings while nothing could be recorded.
    assert accepted_in_outage > 0, "no provider call was in flight when PostgreSQL went down"

    async def all_sent() -> bool:
        return await statuses(url) == {"sent": n}

    async with report("postgres_down", cluster, url, n, back,
                      accepted_during_outage=accepted_in_outage) as seen:
        await eventually(all_sent, 30, f"all {n} sent", cluster.logs, lambda: not_sent(url))
    stats, dup_metric = seen["stats"], seen.get("possible_duplicates", {"unreadable": 1})
    assert_each_once(stats, n)
    assert sum(dup_metric.values()) == 0, f"possible duplicates counted: {dup_metric}"
    await assert_healthy([daemon])


# -- 2. sessions terminated again and again -------------------------------------


async def test_sessions_terminated_repeatedly_each_greeting_once_nothing_stuck(
    cluster: Cluster, database_url: str
) -> None:
    """Every 100 ms for 6 s, every PostgreSQL session of the daemons (two workers,
    a scheduler) is terminated with pg_terminate_backend while 300 greetings go
    out: each is accepted exactly once, none is left queued or sending."""
    n = 300
    await create_users(database_url, n)
    await cluster.start_fake("--latency-ms", "300", "--ignore-idempotency-key")
    env = {"EMAIL_API_TIMEOUT": "1500", "QUEUE_CONCURRENCY": "10", "QUEUE_MAX_RETRIES": "30"}
    procs = [await cluster.start(role, **env) for role in ("worker", "worker", "scheduler")]
    dbname = database_url.rsplit("/", 1)[1]

    async def started() -> bool:
        return bool((await cluster.fake_stats())["requests"] > 0)

    await eventually(started, 20, "the first provider calls", cluster.logs)
    killed = 0
    kill_until = time.monotonic() + 6
    while time.monotonic() < kill_until:
        rows = await query(
            database_url,
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) AS n "
            "FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid() "
            "AND application_name <> $2", dbname, OBSERVER)
        killed += rows[0]["n"]
        await asyncio.sleep(0.1)
    last_kill = Stopwatch()
    sent_during_kills = (await statuses(database_url)).get("sent", 0)
    assert killed > 0

    async def all_sent() -> bool:
        return await statuses(database_url) == {"sent": n}

    async with report("sessions_terminated", cluster, database_url, n, last_kill,
                      sessions_killed=killed, sent_during_kills=sent_during_kills) as seen:
        await eventually(all_sent, 40, f"all {n} sent", cluster.logs,
                         lambda: not_sent(database_url))
    assert_each_once(seen["stats"], n)
    await assert_healthy(procs)


# -- 3. SIGTERM of a scheduler in the middle of a tick ---------------------------


def spawn(cluster: Cluster, *roles: str, **env: str) -> Proc:
    """Like Cluster.start, without waiting for /ready (to watch the first tick)."""
    port = free_port()
    args = ["run"] + [a for r in roles for a in ("--role", r)]
    full_env = {**cluster.base_env, "PORT": str(port), "HOST": "127.0.0.1",
                "BIRTHDAYD_NOW": cluster.timeline.now().isoformat(), **env}
    return cluster._proc("-".join(roles), args, full_env, port).start()


async def queue_depth(queue: str) -> int:
    conn = await aiormq.connect(RABBITMQ_URL)
    try:
        channel = await conn.channel()
        ok = await channel.queue_declare(queue, passive=True)
        return int(ok.message_count or 0)
    finally:
        await conn.close()


async def test_sigterm_mid_tick_hands_back_what_it_claimed_and_did_not_publish(
    cluster: Cluster, database_url: str, queue_name: str, timeline: Timeline
) -> None:
    """A scheduler catching up on 8,000 due greetings is SIGTERMed mid-tick: while
    batches it claimed are being published, or while it waits for room in the
    queue (backpressure lets 5,000 in while nobody consumes). It exits 0 and
    leaves no row queued without a message in the queue; a new scheduler whose
    recovery cannot run gets every greeting sent within seconds, exactly once."""
    n = 8000
    await create_users(database_url, n)
    timeline.jump(dt.datetime(2027, 1, 15, 9, 0, 5, tzinfo=UTC) - timeline.now())
    # No recovery sweep, so it cannot be what saves stranded rows.
    env = {"LEASE_MARGIN": "60s", "CRON_RECOVERY_SCHEDULE": "0 0 1 1 *"}
    scheduler = spawn(cluster, "scheduler", **env)

    async def mid_tick() -> dict[str, int] | None:
        rows = await query(database_url,
                           "SELECT count(*) AS n FROM messages WHERE status = 'queued'")
        queued = int(rows[0]["n"])
        if not queued:
            return None
        # Claimed but not (yet) in the queue: publishes in flight.
        return {"queued": queued, "in_flight": max(queued - await queue_depth(queue_name), 0)}

    unconfirmed = await eventually(mid_tick, 30, "the tick claiming", cluster.logs)
    scheduler.signal(signal.SIGTERM)
    assert await scheduler.wait_exit(20) == 0, scheduler.output()[-3000:]
    counts = await statuses(database_url)
    depth = await queue_depth(queue_name)
    stranded = max(counts.get("queued", 0) - depth, 0)

    await cluster.start_fake("--ignore-idempotency-key")
    t0 = Stopwatch()
    procs = [await cluster.start("scheduler", **env),
             await cluster.start("worker", QUEUE_CONCURRENCY="50", **env)]

    async def all_sent() -> bool:
        return await statuses(database_url) == {"sent": n}

    async with report("sigterm_mid_tick", cluster, database_url, n, t0,
                      unconfirmed_at_sigterm=unconfirmed, after_exit=counts, queue_depth=depth,
                      stranded=stranded) as seen:
        await eventually(all_sent, 45, f"all {n} sent without recovery", cluster.logs,
                         lambda: statuses(database_url))
    assert counts.get("queued", 0) <= depth, (
        f"{stranded} rows left queued with no message in the queue after the scheduler "
        f"exited: {counts}, queue depth {depth}")
    assert_each_once(seen["stats"], n)
    await assert_healthy(procs)


# -- 4. Started while PostgreSQL is down ------------------------------------------


async def test_started_while_postgres_is_down_it_is_alive_not_ready_then_serves_once_it_is_up(
    tmp_path: Path, queue_name: str, private_pg: PrivatePostgres
) -> None:
    """While it waits for PostgreSQL at start the process answers /health (alive)
    and /ready 503, and every other route a 503 JSON error with Retry-After;
    once PostgreSQL is up it becomes ready and serves the API on the same port."""
    url = private_pg.url("birthday_e2e")
    env = {**os.environ, "DATABASE_URL": url, "RABBITMQ_URL": RABBITMQ_URL,
           "QUEUE_NAME": queue_name, "LOG_FORMAT": "text"}
    made = subprocess.run([BIRTHDAYD, "migrate", "--create-db"], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert made.returncode == 0, made.stdout + made.stderr
    private_pg.stop("fast")
    port = free_port()
    proc = Proc("api", ["run", "--role", "api"], {**env, "PORT": str(port)},
                tmp_path / "api.log", port).start()
    user = {"firstName": "Ada", "lastName": "Lovelace", "email": "ada@example.com",
            "birthday": "1990-01-15", "location": "Australia/Melbourne"}
    try:
        await proc.wait_http("/health")
        async with aiohttp.ClientSession() as session:
            async with session.get(proc.url + "/ready") as r:
                assert r.status == 503
                assert await r.json() == {"status": "unavailable", "checks": {
                    "postgresql": "unavailable", "rabbitmq": "unavailable"}}
            async with session.post(proc.url + "/user", json=user) as r:
                assert r.status == 503
                assert r.headers["Retry-After"] == "5"
                assert (await r.json())["error"]["code"] == "unavailable"
            async with session.get(proc.url + "/metrics") as r:
                assert r.status == 200
            assert proc.popen is not None and proc.popen.poll() is None

            private_pg.start()

            async def ready() -> bool:
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(proc.url + "/ready") as r:
                        return r.status == 200
                return False

            await eventually(ready, 30, "ready once PostgreSQL is up", logs=proc.output)
            async with session.post(proc.url + "/user", json=user) as r:
                assert r.status == 201, await r.text()
        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit(15) == 0
    finally:
        proc.stop_now()


async def test_with_reuse_port_a_process_waiting_for_postgres_takes_no_share_of_the_port(
    tmp_path: Path, queue_name: str
) -> None:
    """Beside other processes on a shared port the starting answers would be
    handed a share of their traffic: with HTTP_REUSE_PORT nothing listens until
    PostgreSQL answers."""
    nowhere = free_port()  # a PostgreSQL port where nothing listens
    port = free_port()
    env = {**os.environ, "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{nowhere}/x",
           "RABBITMQ_URL": RABBITMQ_URL, "QUEUE_NAME": queue_name, "LOG_FORMAT": "text",
           "PORT": str(port), "HTTP_REUSE_PORT": "1"}
    proc = Proc("api", ["run", "--role", "api"], env, tmp_path / "api.log", port).start()
    try:
        await asyncio.sleep(2.5)  # past the start's grace
        assert proc.popen is not None and proc.popen.poll() is None
        assert "retrying" in proc.output()  # it is waiting for PostgreSQL
        with pytest.raises(aiohttp.ClientConnectionError):
            async with aiohttp.ClientSession() as session, session.get(proc.url + "/health"):
                pass
        proc.signal(signal.SIGTERM)
        assert await proc.wait_exit(15) == 0
    finally:
        proc.stop_now()
