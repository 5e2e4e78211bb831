"""End to end: real birthdayd processes, signals, the fake provider, RabbitMQ
and PostgreSQL (issue 3, acceptance 2, 3 and 5)."""

from __future__ import annotations

import asyncio
import datetime as dt
import signal

import asyncpg

from birthdayd import greetings
from tests.e2e.conftest import UTC, Cluster, Timeline, eventually, statuses, stuck_rows

DAY = dt.date(2027, 1, 15)
NINE_UTC = dt.datetime(2027, 1, 15, 9, 0, tzinfo=UTC)


def person(
    i: int, zone: str = "UTC", birthday: dt.date = dt.date(1990, 1, 15)
) -> dict[str, object]:
    return {"first_name": f"User{i}", "last_name": "Test", "email": f"user{i}@example.com",
            "birthday": birthday, "anniversary": None, "location": zone}


async def test_500_due_at_once_three_workers_two_schedulers_faults_and_sigkill(
    cluster: Cluster, pool: asyncpg.Pool
) -> None:
    """500 greetings due at the same instant; the provider fails 20% and hangs 10%;
    a worker is SIGKILLed mid-run: each greeting is accepted exactly once."""
    created_at = dt.datetime(2027, 1, 15, 8, 0, tzinfo=UTC)
    for i in range(500):
        await greetings.create_user(pool, person(i), created_at, 9)
    fake = await cluster.start_fake("--error-rate", "0.2", "--timeout-rate", "0.1",
                                    "--seed", "7")
    env = {"QUEUE_MAX_RETRIES": "30", "QUEUE_CONCURRENCY": "20"}
    workers = [await cluster.start("worker", **env) for _ in range(3)]
    for _ in range(2):
        await cluster.start("scheduler", **env)

    async def some_sent() -> bool:
        return (await statuses(pool)).get("sent", 0) >= 100

    await eventually(some_sent, 60, "a fifth of the greetings sent", cluster.logs)
    workers[0].signal(signal.SIGKILL)
    assert await workers[0].wait_exit(5) == -signal.SIGKILL

    async def all_sent() -> bool:
        return await statuses(pool) == {"sent": 500}

    await eventually(all_sent, 60, "all 500 sent", cluster.logs, lambda: stuck_rows(pool))
    stats = await cluster.fake_stats()
    assert stats["accepted"] == 500
    assert sorted(stats["byEmail"]) == sorted(f"user{i}@example.com" for i in range(500))
    assert set(stats["byEmail"].values()) == {1}, "a greeting was accepted twice"
    assert stats["duplicateKeys"] == {}
    assert stats["errors"] > 0 and stats["hangs"] > 0, "the faults were not exercised"
    assert cluster.errors() == []
    # The killed worker may have died between the provider's "sent" and
    # recording it (docs/ARCHITECTURE.md §5): those are re-sent with the same
    # Idempotency-Key, which this provider honours.  There can be no more of
    # them than the sends it had in flight.
    assert stats["replays"] <= 20
    # Nothing was sent before its instant, by the sender's own clock.
    early = await pool.fetchval(
        "SELECT count(*) FROM messages WHERE status = 'sent' AND sent_at < send_at")
    assert early == 0
    # Every user has next year's greeting planned.
    nxt = await pool.fetchval(
        "SELECT count(*) FROM messages WHERE occasion_date = '2028-01-15' AND status = 'scheduled'")
    assert nxt == 500
    assert fake.popen is not None


async def test_no_crash_no_duplicate_even_without_provider_idempotency(
    cluster: Cluster, pool: asyncpg.Pool
) -> None:
    """Two workers, two schedulers, a flaky provider that ignores Idempotency-Key
    and no crash: every greeting is delivered exactly once, none replayed."""
    created_at = dt.datetime(2027, 1, 15, 8, 0, tzinfo=UTC)
    for i in range(300):
        await greetings.create_user(pool, person(i), created_at, 9)
    await cluster.start_fake("--error-rate", "0.2", "--timeout-rate", "0.1", "--seed", "11",
                             "--ignore-idempotency-key")
    env = {"QUEUE_MAX_RETRIES": "30", "QUEUE_CONCURRENCY": "20"}
    for role in ("worker", "worker", "scheduler", "scheduler"):
        await cluster.start(role, **env)

    async def all_sent() -> bool:
        return await statuses(pool) == {"sent": 300}

    await eventually(all_sent, 60, "all 300 sent", cluster.logs, lambda: stuck_rows(pool))
    stats = await cluster.fake_stats()
    assert stats["accepted"] == 300
    assert set(stats["byEmail"].values()) == {1}
    assert stats["duplicateKeys"] == {}
    assert stats["errors"] > 0 and stats["hangs"] > 0, "the faults were not exercised"
    assert cluster.errors() == []


async def test_downtime_26h_sends_what_is_owed_once_and_expires_what_is_too_old(
    cluster: Cluster, pool: asyncpg.Pool, timeline: Timeline
) -> None:
    """Stopped before 09:00 and started 26 h later: owed greetings go out once; one
    older than MAX_LATENESS is expired, not sent."""
    # A greeting already 10 days overdue (its user was created long ago).
    old = dt.datetime(2027, 1, 5, 8, 0, tzinfo=UTC)
    await greetings.create_user(pool, person(0, birthday=dt.date(1980, 1, 5)), old, 9)
    await cluster.start_fake()
    timeline.jump(dt.datetime(2027, 1, 15, 8, 30, tzinfo=UTC) - timeline.now())
    daemon = await cluster.start()
    # Users created through the API while it runs, all due at 09:00 local today.
    async with __import__("aiohttp").ClientSession() as session:
        for i, zone in enumerate(["UTC", "America/Sao_Paulo", "Asia/Tokyo"], start=1):
            body = {"firstName": f"User{i}", "lastName": "Test", "email": f"user{i}@example.com",
                    "birthday": "1990-01-15", "location": zone}
            async with session.post(daemon.url + "/user", json=body) as r:
                assert r.status == 201, await r.text()
    # The old one is expired at the first tick; nothing else is due yet.
    async def old_expired() -> bool:
        return await pool.fetchval(
            "SELECT status FROM messages WHERE occasion_date = '2027-01-05'") == "expired"

    await eventually(old_expired, 20, "the 10-day-old greeting expired", cluster.logs)
    daemon.signal(signal.SIGTERM)
    assert await daemon.wait_exit(15) == 0
    assert (await cluster.fake_stats())["accepted"] == 0

    timeline.jump(dt.timedelta(hours=26))
    await cluster.start()

    async def owed_sent() -> bool:
        return (await statuses(pool)).get("sent", 0) == 2

    # 09:00 in UTC is 09:00Z, in São Paulo 12:00Z: both fell in the downtime.
    # Tokyo's was 00:00Z, before the user was created: next year's is its first.
    await eventually(owed_sent, 20, "the two owed greetings", cluster.logs)
    await asyncio.sleep(2)  # several more ticks and a recovery: still once each
    stats = await cluster.fake_stats()
    assert stats["byEmail"] == {"user1@example.com": 1, "user2@example.com": 1}
    assert await pool.fetchval(
        "SELECT status FROM messages WHERE occasion_date = '2027-01-05'") == "expired"
    tokyo = await pool.fetchval(
        "SELECT occasion_date FROM messages m JOIN users u ON u.id = m.user_id "
        "WHERE u.location = 'Asia/Tokyo' AND m.status = 'scheduled'")
    assert tokyo == dt.date(2028, 1, 15)


async def test_sigterm_finishes_in_flight_sends_and_exits_0(
    cluster: Cluster, pool: asyncpg.Pool, timeline: Timeline
) -> None:
    """SIGTERM while sends are in flight: they finish and are recorded, the process
    exits 0 within the grace period, and a restart sends the rest exactly once."""
    created_at = dt.datetime(2027, 1, 15, 8, 0, tzinfo=UTC)
    for i in range(40):
        await greetings.create_user(pool, person(i), created_at, 9)
    await cluster.start_fake("--latency-ms", "1500")
    timeline.jump(NINE_UTC - timeline.now())
    daemon = await cluster.start(QUEUE_CONCURRENCY="10", EMAIL_API_TIMEOUT="5000")

    async def in_flight() -> bool:
        return (await cluster.fake_stats())["requests"] >= 10

    await eventually(in_flight, 20, "ten requests in flight", cluster.logs)
    daemon.signal(signal.SIGTERM)
    assert await daemon.wait_exit(12) == 0
    stats = await cluster.fake_stats()
    sent = (await statuses(pool)).get("sent", 0)
    assert stats["accepted"] >= 10
    assert sent == stats["accepted"], "an accepted greeting was not recorded as sent"
    stuck = await pool.fetchval("SELECT count(*) FROM messages WHERE status = 'sending'")
    assert stuck == 0

    await cluster.start(QUEUE_CONCURRENCY="10", EMAIL_API_TIMEOUT="5000")

    async def all_sent() -> bool:
        return (await statuses(pool)).get("sent", 0) == 40

    await eventually(all_sent, 60, "all 40 sent after the restart", cluster.logs)
    stats = await cluster.fake_stats()
    assert stats["accepted"] == 40
    assert set(stats["byEmail"].values()) == {1}
