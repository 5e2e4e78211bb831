"""HTTP API load: POST /user then GET /user/{id}, against a birthdayd api
process on loopback.  A benchmark, not a test: bounded in requests and time;
run it several times and quote the median.

    python tests/performance/api_load.py --requests 5000 --concurrency 50 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import aiohttp
import asyncpg

from birthdayd import migrations

BIN = Path(sys.executable).with_name("birthdayd")
ADMIN = os.environ.get("BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PORT = 13200
ZONES = ["America/New_York", "Europe/London", "Asia/Kathmandu", "Australia/Melbourne", "UTC"]


async def hammer(session: aiohttp.ClientSession, total: int, concurrency: int
                 ) -> tuple[float, float, list[float]]:
    """POST ``total`` users, then GET each; returns (post/s, get/s, post latencies)."""
    ids: list[str] = []
    latencies: list[float] = []
    counter = iter(range(total))

    async def post_loop() -> None:
        for i in counter:
            body = {"firstName": "Load", "lastName": f"User{i}",
                    "email": f"load{i}-{uuid.uuid4().hex[:6]}@example.com",
                    "birthday": f"19{50 + i % 50}-{1 + i % 12:02d}-{1 + i % 28:02d}",
                    "location": ZONES[i % len(ZONES)]}
            started = time.perf_counter()
            async with session.post(f"http://127.0.0.1:{PORT}/user", json=body) as r:
                assert r.status == 201, await r.text()
                ids.append((await r.json())["id"])
            latencies.append(time.perf_counter() - started)

    t0 = time.perf_counter()
    await asyncio.gather(*(post_loop() for _ in range(concurrency)))
    post_rate = total / (time.perf_counter() - t0)
    todo = iter(ids)

    async def get_loop() -> None:
        for user_id in todo:
            async with session.get(f"http://127.0.0.1:{PORT}/user/{user_id}") as r:
                assert r.status == 200
                await r.read()

    t1 = time.perf_counter()
    await asyncio.gather(*(get_loop() for _ in range(concurrency)))
    return post_rate, total / (time.perf_counter() - t1), latencies


async def one_run(requests: int, concurrency: int) -> tuple[float, float, float]:
    name = f"birthdayd_apibench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = ADMIN.rsplit("/", 1)[0] + f"/{name}"
    conn = await asyncpg.connect(url)
    await migrations.migrate(conn)
    await conn.close()
    env = {**os.environ, "DATABASE_URL": url, "PORT": str(PORT), "LOG_LEVEL": "warning"}
    with open("/tmp/birthdayd-api-bench.log", "ab") as log:
        proc = subprocess.Popen([str(BIN), "run", "--role", "api"], env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency)
        ) as session:
            for _ in range(100):
                try:
                    async with session.get(f"http://127.0.0.1:{PORT}/ready") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            post_rate, get_rate, latencies = await hammer(session, requests, concurrency)
    finally:
        proc.terminate()
        proc.wait(30)
        admin = await asyncpg.connect(ADMIN)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    p99 = statistics.quantiles(latencies, n=100)[98]
    return post_rate, get_rate, p99


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    results = []
    for run in range(args.runs):
        post_rate, get_rate, p99 = await one_run(args.requests, args.concurrency)
        results.append((post_rate, get_rate, p99))
        print(f"run {run + 1}: POST /user {post_rate:,.0f}/s (p99 {p99 * 1000:.0f} ms), "
              f"GET /user/{{id}} {get_rate:,.0f}/s", flush=True)
    print(f"median of {args.runs}: POST /user {statistics.median(r[0] for r in results):,.0f}/s, "
          f"GET /user/{{id}} {statistics.median(r[1] for r in results):,.0f}/s, "
          f"POST p99 {statistics.median(r[2] for r in results) * 1000:.0f} ms "
          f"({args.requests} users, {args.concurrency} concurrent, one api process)")


if __name__ == "__main__":
    asyncio.run(main())
