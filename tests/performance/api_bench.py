"""HTTP API throughput and latency with wrk: one `birthdayd run --role api`
process (and two on one port, HTTP_REUSE_PORT=1) on loopback, PostgreSQL and
RabbitMQ on this machine.  A benchmark, not a test (`make bench-api`).

Routes (Lua scripts in tests/performance/wrk/): POST /user (a unique e-mail
per request), GET /user/{id} and PUT /user/{id} (random ids from the
database, many of them), GET /users?limit=100 (random `after` cursors), GET
/health.  Each run is `wrk -t2 -c64 -d15s`; the routes are interleaved
(A, B, C, ... then again) and each route's median of 3 runs is reported with
its latency p50/p99 (wrk's histogram), 4xx/5xx count, socket errors, the CPU
of the api process(es), of this database's PostgreSQL backends and of wrk,
and the api process's peak RSS (VmHWM).

Phases (--phases):
  fresh        a fresh database (`birthdayd migrate --create-db`); --seed users are
               POSTed through the API first, for GET/PUT/LIST to pick from
  100k         a fresh database with --users users and one scheduled greeting each,
               COPYed in without ANALYZE and with autovacuum off on both tables (so
               the phase really runs without statistics; checked at its end)
  100k-analyzed   the same database after ANALYZE (autovacuum back on), a new process
  reuseport    the same database, TWO api processes sharing PORT (HTTP_REUSE_PORT=1),
               --reuseport-routes only (POST and GET by default)

    python tests/performance/api_bench.py                      # everything, ~20 min
    python tests/performance/api_bench.py --phases fresh -d 3s --runs 1   # smoke
    python tests/performance/api_bench.py --profile /tmp/prof  # + one py-spy run a route

--profile DIR adds, after each phase's measured runs, one run per route (not
counted) under `py-spy record --nonblocking --format raw`, and prints the share
of the api process's samples in each layer (asyncpg, aiohttp, orjson, ...).
Time in C (extensions, the event loop, system calls) counts for the Python
frame that called it: `Runner.run` is uvloop's loop itself.  Not --native: that
needs py-spy to stop the process (ptrace) for each sample, and a stop lands
where the process next enters or leaves the kernel, so system calls took two
thirds of the samples (getpid a quarter) where perf, sampling on a timer, gives
the kernel 18 % of the api's CPU and getpid 0.13 %.
Every database and RabbitMQ queue it creates is dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime as dt
import json
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import aiormq
import asyncpg

from birthdayd import store

HERE = Path(__file__).resolve().parent
WRK_DIR = HERE / "wrk"
BIN = Path(sys.executable).with_name("birthdayd")
ADMIN = os.environ.get("BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
RABBITMQ = os.environ.get("BENCH_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
LOG_DIR = Path("/tmp/birthdayd-api-bench")
TICK = os.sysconf("SC_CLK_TCK")
ZONES = ["America/New_York", "Europe/London", "Asia/Kathmandu", "Australia/Melbourne",
         "UTC", "America/Los_Angeles", "Asia/Tokyo", "Europe/Berlin"]


@dataclass(frozen=True)
class Route:
    name: str
    label: str
    script: str
    path: str
    ids: str | None  # "users" (random live ids) or "cursors" (ids with a full page after)


ROUTES = {
    "post": Route("post", "POST /user", "post_user.lua", "/user", None),
    "get": Route("get", "GET /user/{id}", "get_user.lua", "/user/x", "users"),
    "put": Route("put", "PUT /user/{id}", "put_user.lua", "/user/x", "users"),
    "list": Route("list", "GET /users?limit=100", "list_users.lua", "/users", "cursors"),
    "health": Route("health", "GET /health", "health.lua", "/health", None),
}


@dataclass
class Run:
    phase: str
    route: str
    rps: float
    p50_ms: float
    p99_ms: float
    non2xx: int
    socket_errors: int
    cpu: dict[str, float]
    rss_mib: float
    requests: int


@dataclass
class Phase:
    name: str
    db: str
    procs: int
    routes: list[str]
    runs: list[Run] = field(default_factory=list)
    rss_mib: float = 0.0
    note: str = ""


# -- processes and /proc --------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listeners(port: int) -> int:
    """Listening TCP sockets on ``port`` (one per process under SO_REUSEPORT)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                cols = line.split()
                if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                    count += 1
    return count


def cpu_ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return 0


def backends(db: str) -> dict[int, int]:
    """CPU ticks of every PostgreSQL backend connected to ``db``."""
    found = {}
    marker = f" {db} ".encode()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if cmd.startswith(b"postgres: ") and marker in cmd:
            found[int(entry.name)] = cpu_ticks(int(entry.name))
    return found


def machine_busy() -> tuple[int, int]:
    with open("/proc/stat") as f:
        cols = [int(c) for c in f.readline().split()[1:]]
    idle = cols[3] + cols[4]
    return sum(cols) - idle, sum(cols)


def vm_hwm_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Api:
    """One or more `birthdayd run --role api` processes on one port."""

    def __init__(self, url: str, procs: int, tag: str) -> None:
        self.url, self.count, self.tag = url, procs, tag
        self.port = free_port()
        self.queue = f"apibench-{uuid.uuid4().hex[:8]}"
        self.procs: list[subprocess.Popen[bytes]] = []

    async def __aenter__(self) -> Api:
        env = {**os.environ, "DATABASE_URL": self.url, "RABBITMQ_URL": RABBITMQ,
               "QUEUE_NAME": self.queue, "PORT": str(self.port), "HOST": "127.0.0.1",
               "LOG_LEVEL": "warning"}
        if self.count > 1:
            env["HTTP_REUSE_PORT"] = "1"
        for i in range(self.count):
            with (LOG_DIR / f"api-{self.tag}-{i}.log").open("ab") as log:
                self.procs.append(subprocess.Popen([str(BIN), "run", "--role", "api"], env=env,
                                                   stdout=log, stderr=subprocess.STDOUT))
            deadline = time.monotonic() + 60
            while listeners(self.port) < i + 1:
                if any(p.poll() is not None for p in self.procs) or time.monotonic() > deadline:
                    raise RuntimeError(f"api did not start; see {LOG_DIR}/api-{self.tag}-{i}.log")
                await asyncio.sleep(0.1)
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                try:
                    async with session.get(self.base + "/ready") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError("api not ready after 30 s")
        return self

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    async def __aexit__(self, *exc: object) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(45)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        try:
            connection = await aiormq.connect(RABBITMQ)
            channel = await connection.channel()
            for q in (self.queue, f"{self.queue}.dead"):
                await channel.queue_delete(q)
            for exchange in (self.queue, f"{self.queue}.dlx"):
                await channel.exchange_delete(exchange)
            await connection.close()
        except Exception as e:  # cleanup: report and go on
            print(f"  (could not delete queue {self.queue}: {e})", flush=True)


# -- databases ------------------------------------------------------------------


def db_url(name: str) -> str:
    return ADMIN.rsplit("/", 1)[0] + f"/{name}"


def create_db(name: str) -> str:
    url = db_url(name)
    subprocess.run([str(BIN), "migrate", "--create-db"], check=True,
                   env={**os.environ, "DATABASE_URL": url, "LOG_LEVEL": "warning"},
                   stdout=subprocess.DEVNULL)
    return url


async def drop_db(name: str) -> None:
    admin = await asyncpg.connect(ADMIN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def bulk_load(url: str, users: int) -> float:
    """``users`` users and one scheduled birthday greeting each, by COPY; no
    ANALYZE, and autovacuum off on both tables so none comes on its own."""
    started = time.perf_counter()
    rng = random.Random(42)
    now = dt.datetime.now(dt.UTC)
    conn = await asyncpg.connect(url)
    try:
        for table in ("users", "messages"):
            await conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
        user_rows = []
        message_rows = []
        for i in range(users):
            user_id = store.new_id()
            birthday = dt.date(rng.randint(1950, 2005), rng.randint(1, 12), rng.randint(1, 28))
            user_rows.append((user_id, f"U{i}", "Bulk", f"bulk{i}@example.com", birthday, None,
                              ZONES[i % len(ZONES)], now, now))
            day = birthday.replace(year=2027)
            send_at = dt.datetime(day.year, day.month, day.day, 9, tzinfo=dt.UTC)
            message_rows.append((store.new_id(), user_id, "birthday", day, send_at, "scheduled",
                                 send_at, 0, now, now))
        await conn.copy_records_to_table(
            "users", records=user_rows,
            columns=["id", "first_name", "last_name", "email", "birthday", "anniversary",
                     "location", "created_at", "updated_at"])
        await conn.copy_records_to_table(
            "messages", records=message_rows,
            columns=["id", "user_id", "occasion", "occasion_date", "send_at", "status",
                     "due_at", "attempts", "created_at", "updated_at"])
    finally:
        await conn.close()
    return time.perf_counter() - started


async def statistics_state(url: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT c.relname, c.reltuples::bigint AS reltuples, s.last_analyze, "
            "s.last_autoanalyze, (SELECT count(*) FROM pg_stats p WHERE p.tablename = c.relname "
            "AND p.schemaname = 'public') AS stats "
            "FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid "
            "WHERE c.relname IN ('users', 'messages') ORDER BY 1 DESC")
    finally:
        await conn.close()
    return "; ".join(
        f"{r['relname']}: reltuples {r['reltuples']}, pg_stats rows {r['stats']}, "
        f"analyzed {'yes' if r['last_analyze'] or r['last_autoanalyze'] else 'never'}"
        for r in rows)


async def analyze(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        for table in ("users", "messages"):
            await conn.execute(f"ALTER TABLE {table} RESET (autovacuum_enabled)")
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def write_ids(url: str, kind: str, path: Path, sample: int) -> int:
    """Random live user ids (``users``) or cursors that leave a full page of 100
    after them (``cursors``), one a line."""
    conn = await asyncpg.connect(url)
    try:
        if kind == "users":
            rows = await conn.fetch(
                "SELECT id FROM users WHERE deleted_at IS NULL ORDER BY random() LIMIT $1",
                sample)
        else:
            rows = await conn.fetch(
                "SELECT id FROM (SELECT id FROM users WHERE deleted_at IS NULL "
                "ORDER BY id DESC OFFSET 100) AS t ORDER BY random() LIMIT $1", sample)
    finally:
        await conn.close()
    path.write_text("".join(f"{r['id']}\n" for r in rows))
    return len(rows)


async def seed_users(base: str, count: int) -> None:
    """``count`` users POSTed through the API (so they are what the API writes)."""
    todo = iter(range(count))
    token = uuid.uuid4().hex[:8]

    async def loop(session: aiohttp.ClientSession) -> None:
        for i in todo:
            body = {"firstName": "Seed", "lastName": f"User{i}",
                    "email": f"seed{token}-{i}@example.com",
                    "birthday": f"19{50 + i % 50}-{1 + i % 12:02d}-{1 + i % 28:02d}",
                    "location": ZONES[i % len(ZONES)]}
            async with session.post(base + "/user", json=body) as r:
                if r.status != 201:
                    raise RuntimeError(f"seed POST {r.status}: {await r.text()}")

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=32)) as session:
        await asyncio.gather(*(loop(session) for _ in range(32)))


# -- one wrk run ----------------------------------------------------------------


async def wrk_run(args: argparse.Namespace, api: Api, phase: Phase, route: Route,
                  ids_file: Path | None, profile: Path | None = None) -> Run:
    token = uuid.uuid4().hex[:10]
    cmd = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration}",
           "--timeout", "10s", "-s", str(WRK_DIR / route.script), api.base + route.path,
           "--", token]
    if ids_file is not None:
        cmd.append(str(ids_file))
    pg_before = backends(phase.db)
    api_before = [cpu_ticks(p) for p in api.pids]
    busy_before, total_before = machine_busy()
    t0 = time.monotonic()
    wrk = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    spy = None
    if profile is not None:
        await asyncio.sleep(1.0)
        seconds = max(1, int(parse_seconds(args.duration) - 2))
        spy = subprocess.Popen(
            [str(Path(sys.executable).with_name("py-spy")), "record", "--nonblocking", "--format",
             "raw", "-r", "200", "-d", str(seconds), "--pid", str(api.pids[0]), "-o",
             str(profile)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wrk_ticks = 0
    while wrk.poll() is None:  # sample wrk's CPU just before it exits
        wrk_ticks = cpu_ticks(wrk.pid) or wrk_ticks
        await asyncio.sleep(0.2)
    out, err = wrk.communicate()
    elapsed = time.monotonic() - t0
    busy_after, total_after = machine_busy()
    api_ticks = sum(cpu_ticks(p) - b for p, b in zip(api.pids, api_before, strict=True))
    pg_after = backends(phase.db)
    pg_ticks = sum(t - pg_before.get(pid, 0) for pid, t in pg_after.items())
    if spy is not None:
        _, spy_err = spy.communicate()
        if spy.returncode != 0:
            print(f"  py-spy failed: {spy_err.decode()[-500:]}", flush=True)
    if wrk.returncode != 0:
        raise RuntimeError(f"wrk failed ({wrk.returncode}): {err.decode()}{out.decode()}")
    match = re.search(r"^WRK_JSON (.*)$", out.decode(), re.M)
    if match is None:
        raise RuntimeError(f"no WRK_JSON in wrk output:\n{out.decode()}\n{err.decode()}")
    w = json.loads(match.group(1))
    if not api.alive():
        raise RuntimeError("an api process died during the run")
    ncpu = os.cpu_count() or 1
    machine = 100 * ncpu * (busy_after - busy_before) / max(1, total_after - total_before)
    cpu = {"api": 100 * api_ticks / TICK / elapsed, "pg": 100 * pg_ticks / TICK / elapsed,
           "wrk": 100 * wrk_ticks / TICK / elapsed, "machine": machine}
    cpu["other"] = max(0.0, machine - cpu["api"] - cpu["pg"] - cpu["wrk"])
    return Run(phase.name, route.name, w["requests"] / (w["duration_us"] / 1e6),
               w["p50_us"] / 1000, w["p99_us"] / 1000, w["non2xx"],
               w["connect"] + w["read"] + w["write"] + w["timeout"], cpu,
               max(vm_hwm_mib(p) for p in api.pids), w["requests"])


def parse_seconds(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)


def describe(run: Run) -> str:
    c = run.cpu
    return (f"{ROUTES[run.route].label:<21} {run.rps:>8,.0f} req/s  p50 {run.p50_ms:6.1f} ms  "
            f"p99 {run.p99_ms:6.1f} ms  non-2xx {run.non2xx}  sock-err {run.socket_errors}  "
            f"CPU% api {c['api']:.0f} pg {c['pg']:.0f} wrk {c['wrk']:.0f} "
            f"other {c['other']:.0f}  RSS {run.rss_mib:.0f} MiB")


# -- phases ---------------------------------------------------------------------


async def run_phase(args: argparse.Namespace, phase: Phase, url: str, work: Path) -> None:
    print(f"\n== {phase.name}: {phase.procs} api process(es), database {phase.db}"
          f"{' — ' + phase.note if phase.note else ''}", flush=True)
    async with Api(url, phase.procs, phase.name) as api:
        if phase.name == "fresh" and args.seed:
            t = time.perf_counter()
            await seed_users(api.base, args.seed)
            print(f"  seeded {args.seed:,} users through POST /user in "
                  f"{time.perf_counter() - t:.1f} s", flush=True)
        for round_ in range(1, args.runs + 1):
            for name in phase.routes:
                route = ROUTES[name]
                ids_file = None
                if route.ids:
                    ids_file = work / f"{phase.name}-{name}.ids"
                    await write_ids(url, route.ids, ids_file, args.sample)
                run = await wrk_run(args, api, phase, route, ids_file)
                phase.runs.append(run)
                print(f"  run {round_}: {describe(run)}", flush=True)
        phase.rss_mib = max(vm_hwm_mib(p) for p in api.pids)
        if args.profile is not None:
            args.profile.mkdir(parents=True, exist_ok=True)
            for name in phase.routes:
                route = ROUTES[name]
                ids_file = None
                if route.ids:
                    ids_file = work / f"{phase.name}-{name}.ids"
                    await write_ids(url, route.ids, ids_file, args.sample)
                out = args.profile / f"{phase.name}-{name}.txt"
                run = await wrk_run(args, api, phase, route, ids_file, profile=out)
                print(f"  profiled: {describe(run)}", flush=True)
                if out.exists():
                    print(summarize_profile(out), flush=True)


LAYERS = [  # first match wins, checked on each stack from the leaf up
    ("asyncpg", re.compile(r"asyncpg|pgproto")),
    ("orjson", re.compile(r"orjson")),
    ("aiohttp", re.compile(r"aiohttp|multidict|yarl|_http_parser|_websocket|propcache")),
    ("validation", re.compile(r"birthdayd/validation")),
    ("occasions/calendar", re.compile(r"birthdayd/(occasions|calendar_rules)|zoneinfo")),
    ("birthdayd api/store", re.compile(r"birthdayd/")),
    ("uuid/datetime", re.compile(r"uuid|datetime")),
    ("asyncio", re.compile(r"asyncio")),  # Runner.run: uvloop's loop, in C
]


def summarize_profile(path: Path) -> str:
    """Shares of the samples by layer (the innermost frame that names one) and the
    top leaf frames, from py-spy's raw (collapsed) output."""
    layers: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        leaves[frames[-1][:90]] += count
        for frame in reversed(frames):
            layer = next((name for name, rx in LAYERS if rx.search(frame)), None)
            if layer:
                layers[layer] += count
                break
        else:
            layers["other (python)"] += count
    if not total:
        return "    (no samples)"
    lines = ["    layers: " + ", ".join(f"{k} {100 * v / total:.0f}%"
                                        for k, v in layers.most_common())]
    lines += [f"    {100 * v / total:4.1f}%  {k}" for k, v in leaves.most_common(8)]
    return "\n".join(lines)


def median_table(phases: list[Phase]) -> str:
    lines = ["| phase | route | req/s | p50 ms | p99 ms | non-2xx | sock err | "
             "CPU% api/pg/wrk/other | peak RSS MiB | runs req/s |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- |"]
    for phase in phases:
        for name in phase.routes:
            runs = [r for r in phase.runs if r.route == name]
            if not runs:
                continue
            med = statistics.median
            cpu = "/".join(f"{med(r.cpu[k] for r in runs):.0f}"
                           for k in ("api", "pg", "wrk", "other"))
            lines.append(
                f"| {phase.name} | {ROUTES[name].label} | {med(r.rps for r in runs):,.0f} | "
                f"{med(r.p50_ms for r in runs):.1f} | {med(r.p99_ms for r in runs):.1f} | "
                f"{sum(r.non2xx for r in runs)} | {sum(r.socket_errors for r in runs)} | "
                f"{cpu} | {phase.rss_mib:.0f} | "
                f"{', '.join(f'{r.rps:,.0f}' for r in runs)} |")
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-d", "--duration", default="15s", help="wrk -d (default 15s)")
    parser.add_argument("-t", "--threads", type=int, default=2)
    parser.add_argument("-c", "--connections", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--phases", default="fresh,100k,100k-analyzed,reuseport")
    parser.add_argument("--routes", default="post,get,put,list,health")
    parser.add_argument("--reuseport-routes", default="post,get")
    parser.add_argument("--users", type=int, default=100_000, help="users in the 100k phases")
    parser.add_argument("--seed", type=int, default=5000, help="users POSTed first (fresh)")
    parser.add_argument("--sample", type=int, default=20_000, help="ids per id file")
    parser.add_argument("--profile", type=Path, help="directory for py-spy profiles")
    parser.add_argument("--keep", action="store_true", help="keep the databases")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install -y wrk, or `make bench-api`)")
    LOG_DIR.mkdir(exist_ok=True)
    wanted = args.phases.split(",")
    routes = args.routes.split(",")
    for name in routes + args.reuseport_routes.split(","):
        if name not in ROUTES:
            sys.exit(f"unknown route {name!r}; one of {', '.join(ROUTES)}")
    tag = uuid.uuid4().hex[:8]
    fresh_db, big_db = f"birthdayd_apibench_{tag}_fresh", f"birthdayd_apibench_{tag}_100k"
    created: list[str] = []
    phases: list[Phase] = []
    try:
        with tempfile.TemporaryDirectory(prefix="api-bench-") as tmp:
            work = Path(tmp)
            if "fresh" in wanted:
                created.append(fresh_db)
                url = create_db(fresh_db)
                phase = Phase("fresh", fresh_db, 1, routes)
                phases.append(phase)
                await run_phase(args, phase, url, work)
            if {"100k", "100k-analyzed", "reuseport"} & set(wanted):
                created.append(big_db)
                url = create_db(big_db)
                seconds = await bulk_load(url, args.users)
                print(f"\nloaded {args.users:,} users + greetings by COPY in {seconds:.1f} s "
                      f"(no ANALYZE, autovacuum off on users/messages)", flush=True)
                if "100k" in wanted:
                    phase = Phase("100k", big_db, 1, routes, note="no statistics")
                    phases.append(phase)
                    await run_phase(args, phase, url, work)
                    print(f"  statistics at the end: {await statistics_state(url)}", flush=True)
                t = time.perf_counter()
                await analyze(url)
                print(f"\nANALYZE in {time.perf_counter() - t:.1f} s; "
                      f"{await statistics_state(url)}", flush=True)
                if "100k-analyzed" in wanted:
                    phase = Phase("100k-analyzed", big_db, 1, routes, note="after ANALYZE")
                    phases.append(phase)
                    await run_phase(args, phase, url, work)
                if "reuseport" in wanted:
                    phase = Phase("reuseport", big_db, 2, args.reuseport_routes.split(","),
                                  note="HTTP_REUSE_PORT=1, after ANALYZE")
                    phases.append(phase)
                    await run_phase(args, phase, url, work)
    finally:
        if not args.keep:
            for name in created:
                await drop_db(name)
    print(f"\nmedians of {args.runs} run(s), wrk -t{args.threads} -c{args.connections} "
          f"-d{args.duration}, everything on this {os.cpu_count()}-core machine "
          f"(peak RSS: VmHWM of the api process, the larger of two under reuseport):\n")
    print(median_table(phases))
    out = LOG_DIR / f"results-{tag}.json"
    out.write_text(json.dumps([{**p.__dict__, "runs": [r.__dict__ for r in p.runs]}
                               for p in phases], indent=1, default=str))
    print(f"\nevery run: {out}")


if __name__ == "__main__":
    asyncio.run(main())
