"""End-to-end delivery throughput: N greetings due at one instant, real
processes (scheduler, workers, fake provider), PostgreSQL and RabbitMQ on this
machine.  A benchmark, not a test: run it by hand (`make bench`), several times,
and quote the median.

    python tests/performance/pipeline.py --users 20000 --workers 1 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import aiormq
import asyncpg

from birthdayd import migrations

BIN = Path(sys.executable).with_name("birthdayd")
ADMIN = os.environ.get("BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
RABBITMQ = os.environ.get("BENCH_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
SEND_AT = dt.datetime(2027, 1, 15, 9, 0, tzinfo=dt.UTC)


async def prepare(name: str, users: int) -> str:
    admin = await asyncpg.connect(ADMIN)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = ADMIN.rsplit("/", 1)[0] + f"/{name}"
    conn = await asyncpg.connect(url)
    await migrations.migrate(conn)
    created = SEND_AT - dt.timedelta(days=1)
    user_rows = [(uuid.uuid4(), f"U{i}", "Bench", f"u{i}@example.com", dt.date(1990, 1, 15),
                  None, "UTC", created, created) for i in range(users)]
    await conn.copy_records_to_table(
        "users", records=user_rows,
        columns=["id", "first_name", "last_name", "email", "birthday", "anniversary",
                 "location", "created_at", "updated_at"])
    message_rows = [(uuid.uuid4(), u[0], "birthday", dt.date(2027, 1, 15), SEND_AT, "scheduled",
                     SEND_AT, 0, created, created) for u in user_rows]
    await conn.copy_records_to_table(
        "messages", records=message_rows,
        columns=["id", "user_id", "occasion", "occasion_date", "send_at", "status", "due_at",
                 "attempts", "created_at", "updated_at"])
    await conn.execute("ANALYZE")
    await conn.close()
    return url


async def drop_queue(queue: str) -> None:
    connection = await aiormq.connect(RABBITMQ)
    channel = await connection.channel()
    for q in (queue, f"{queue}.dead"):
        await channel.queue_delete(q)
    for exchange in (queue, f"{queue}.dlx"):
        await channel.exchange_delete(exchange)
    await connection.close()


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([str(BIN), *args], env=env, stdout=out,
                                stderr=subprocess.STDOUT)


async def one_run(users: int, workers: int, concurrency: int, log_dir: Path) -> float:
    name = f"birthdayd_bench_{uuid.uuid4().hex[:8]}"
    url = await prepare(name, users)
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    procs = [spawn(["fake-email", "--port", "18025"], dict(os.environ), log_dir / "fake.log")]
    await asyncio.sleep(1.0)
    env = {**os.environ, "DATABASE_URL": url, "RABBITMQ_URL": RABBITMQ, "QUEUE_NAME": queue,
           "EMAIL_API_URL": "http://127.0.0.1:18025/send-email", "LOG_LEVEL": "warning",
           "QUEUE_CONCURRENCY": str(concurrency), "CRON_MINUTE_SCHEDULE": "* * * * * *",
           "BIRTHDAYD_NOW": (SEND_AT - dt.timedelta(seconds=3)).isoformat()}
    try:
        for i in range(workers):
            procs.append(spawn(["run", "--role", "worker"], {**env, "PORT": str(13100 + i)},
                               log_dir / f"worker{i}.log"))
        procs.append(spawn(["run", "--role", "scheduler"], {**env, "PORT": "13099"},
                           log_dir / "scheduler.log"))
        conn = await asyncpg.connect(url)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            sent = await conn.fetchval("SELECT count(*) FROM messages WHERE status = 'sent'")
            if sent >= users:
                break
            await asyncio.sleep(0.5)
        first, last = await conn.fetchrow(
            "SELECT min(sent_at), max(sent_at) FROM messages WHERE status = 'sent'")
        await conn.close()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
        admin = await asyncpg.connect(ADMIN)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
        await drop_queue(queue)
    seconds = (last - first).total_seconds()
    return users / seconds if seconds > 0 else float("inf")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=20000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    log_dir = Path("/tmp/birthdayd-bench")
    log_dir.mkdir(exist_ok=True)
    rates = []
    for run in range(args.runs):
        rate = await one_run(args.users, args.workers, args.concurrency, log_dir)
        rates.append(rate)
        print(f"run {run + 1}: {rate:,.0f} greetings/s", flush=True)
    print(f"median of {args.runs}: {statistics.median(rates):,.0f} greetings/s "
          f"({args.users} due at once, {args.workers} worker process(es), "
          f"concurrency {args.concurrency})")


if __name__ == "__main__":
    asyncio.run(main())
