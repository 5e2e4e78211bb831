"""Due-time benchmarks: how late, how fast and how cleanly greetings go out when
many fall due at one instant, or are owed after an outage.  Real processes
(`birthdayd run`, a fake provider), PostgreSQL and RabbitMQ on this machine.
A benchmark, not a test: it prints figures (each run's and the median of
--runs) and asserts nothing; targets are printed as met / MISSED.

    python tests/performance/due.py instant --greetings 1000            # make bench-due-1k
    python tests/performance/due.py burst --greetings 100000 --workers 2 --before 561faed
                                                                         # make bench-due-100k
    python tests/performance/due.py catchup --greetings 100000 --workers 2
                                                                         # make bench-catchup

Scenarios
  instant  N greetings due at one instant T; one all-roles `birthdayd run`
           (--topology split: a scheduler and --workers worker processes).
           Lateness p50/p99/max of sent_at - send_at (PostgreSQL), early sends
           (sent_at < send_at, and the provider's own receive time < T),
           duplicates seen by a provider that ignores Idempotency-Key.
           Targets: p99 <= 1 s, max <= 2 s, 0 early, 0 duplicates.
  burst    N due at one instant; one scheduler and --workers worker processes.
           Greetings/s from the first sent_at to the last, lateness p99,
           duplicates, republished rows, peak RSS per process, WAL bytes per
           greeting.  --before REV also runs the code of commit REV (runs
           interleaved: after, before, after, ...).  Targets: >= 2,000/s,
           p99 <= 60 s, 0 duplicates, 0 republished while still queued.
  catchup  N greetings owed since a day before the daemons start (an outage of
           24 h; MAX_LATENESS stays 7d): time from the daemons' start until all
           are sent.  Target: <= N / (burst's greetings/s) + 60 s; the rate is
           --rate, or else the last `burst` median saved in
           /tmp/birthdayd-bench/due-burst.json.

The clock.  Every process runs on the host's real clock (no BIRTHDAYD_NOW):
the greetings' instant T is a real whole minute a little ahead, so the
provider's receive times, the daemons' sent_at and the instant are on one
clock, and the production tick cadence (CRON_MINUTE_SCHEDULE `* * * * *`,
firing at whole minutes) lines up with T exactly as it does at 09:00.

Why the default cadence, and when the daemons start (--lead):
  * instant: 10 s before T, with the production cron.  The scheduler's startup
    job (recovery, then a tick that publishes everything due before the next
    whole minute + 2 s) publishes all N ahead, like the tick at T - 60 s would;
    the tick at T itself fires during the sends, as in production.  A 6-field
    `* * * * * *` cron would add a tick every second (expiry, claim, backlog
    and queue-depth queries) on top of the sends, which production does not
    have, so it would not be faithful; starting 70 s before T would only add
    a minute of waiting per run for the same work.  The run checks that every
    daemon was ready before T and reports how many ids were published ahead.
  * burst: 70 s before T, so the steady-state tick at T - 60 s (not the
    startup job) publishes ahead what backpressure allows (the old code: all
    of it), and the tick at T claims the rest as the queue drains.
  * catchup: no instant; the clock starts at the daemons' start.
--cron overrides the cadence (e.g. '* * * * * *'); --lead the start.

Code under test: the working tree as it is when the command starts (copied
to a temporary directory, so edits made meanwhile do not mix code states), and
with --before REV that commit (`git archive`); each goes first on PYTHONPATH
of the daemons and of `birthdayd migrate`, which builds its own schema.  The
copy imported is checked (birthdayd.__file__) and printed.  The provider is
always the working tree's.

Each run uses a fresh database (COPY-loaded, then ANALYZE and CHECKPOINT, so
every run starts from the same WAL state), a fresh queue (both dropped
afterwards) and a fresh provider.  WAL: the server's (pg_current_wal_lsn
before the daemons start and when all are sent, via pg_wal_lsn_diff) is shared
with anything else on this server, so a temporary replication slot keeps the
run's WAL until pg_waldump has read it, and the run's share is printed too:
records touching its database plus their commits, and, of those, full-page
images (their count follows the server's checkpoints, which other activity,
e.g. CREATE DATABASE, can trigger; the figure without them does not).
--env VAR=VALUE passes another setting to the daemons (experiments).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import aiormq
import api_bench
import asyncpg

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
BIN = Path(sys.executable).with_name("birthdayd")
PROVIDER = Path(__file__).with_name("timed_provider.py")
ADMIN = os.environ.get("BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
RABBITMQ = os.environ.get("BENCH_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
OUT = Path("/tmp/birthdayd-bench")
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Settings of the daemons that this benchmark decides; anything like them in
# the caller's environment is dropped so a stray export cannot skew a run.
_STRIP = re.compile(r"^(BIRTHDAYD_|QUEUE_|CRON_|CIRCUIT_|EMAIL_|DATABASE_|RABBITMQ_|LOG_|"
                    r"MAX_LATENESS|SEND_HOUR|LEASE_MARGIN|SHUTDOWN_GRACE|PORT|HOST|API_TOKEN|"
                    r"PYTHONPATH)")


# -- code under test ------------------------------------------------------------

@dataclasses.dataclass
class Code:
    label: str
    pythonpath: str | None = None
    tmpdir: str | None = None

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not _STRIP.match(k)}
        if self.pythonpath:
            env["PYTHONPATH"] = self.pythonpath
        return env


def prepare_code(rev: str | None) -> Code:
    """Commit ``rev``, or else the working tree as it is now (snapshotted, so
    edits made while the benchmark runs do not mix code states), extracted to
    a temporary directory that goes first on PYTHONPATH (the console script
    then imports it)."""
    tmp = tempfile.mkdtemp(prefix=f"birthdayd-{rev or 'worktree'}-")
    if rev is None:
        def git(*a: str) -> str:
            return subprocess.run(["git", "-C", str(ROOT), *a], capture_output=True, text=True,
                                  check=True).stdout
        head = git("rev-parse", "--short", "HEAD").strip()
        diff = git("diff", "HEAD", "--", "birthdayd", "sql")
        for part in ("birthdayd", "sql"):
            shutil.copytree(ROOT / part, Path(tmp) / part, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__"))
        changes = f"+uncommitted diff {hashlib.sha1(diff.encode()).hexdigest()[:8]}" \
            if diff else ""
        code = Code(f"after ({head}{changes})", pythonpath=tmp, tmpdir=tmp)
    else:
        subprocess.run(f"git -C {ROOT} archive {rev} | tar -x -C {tmp}", shell=True, check=True)
        code = Code(f"before ({rev})", pythonpath=tmp, tmpdir=tmp)
    expected = Path(tmp) / "birthdayd"
    # Which copy does a daemon import?  Asked the way the console script
    # would (cwd elsewhere, so only PYTHONPATH and the venv decide).
    found = subprocess.run(
        [PYTHON, "-c", "import birthdayd, birthdayd.migrations as m; print(birthdayd.__file__); "
         "print(' '.join(v for v, _ in m.migration_files()))"],
        env=code.env(), cwd="/", capture_output=True, text=True, check=True).stdout.split("\n")
    if Path(found[0]).resolve().parent != expected.resolve():
        raise SystemExit(f"{code.label}: imports {found[0]}, expected {expected}")
    print(f"# {code.label}: birthdayd from {found[0]}; migrations {found[1]}", flush=True)
    return code


# -- helpers --------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def memory_kib(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmHWM:", "VmRSS:")):
                out[line.split(":")[0]] = int(line.split()[1])
    return out


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine."""
    v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(v[:8])
    return total - v[3] - v[4], total


def rabbit_pid() -> int | None:
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if (proc / "comm").read_text().strip() == "beam.smp" and \
                    b"/var/lib/rabbitmq" in (proc / "cmdline").read_bytes():
                return int(proc.name)
    return None


def lsn_diff(a: str, b: str) -> int:
    def n(lsn: str) -> int:
        hi, lo = lsn.split("/")
        return (int(hi, 16) << 32) + int(lo, 16)
    return n(b) - n(a)


_WAL_RECORD = re.compile(r"^rmgr: (\w+)\s+len \(rec/tot\):\s*\d+/\s*(\d+), tx:\s*(\d+)")
_WAL_BLOCK = re.compile(r"^\s+blkref #\d+: rel \d+/(\d+)/")
_WAL_HOLE = re.compile(r"\(FPW\); hole: offset: \d+, length: (\d+)(?:, compression saved: (\d+))?")


@dataclasses.dataclass
class WalSplit:
    ours: int = 0
    """Bytes of records touching this run's database, and their transactions' commits."""
    ours_fpi: int = 0
    """...of which full-page images (their number depends on how often the server
    checkpoints, which anything else running on it can drive)."""
    total: int = 0


def wal_of_database(wal_dir: str, start: str, end: str, dboid: int) -> WalSplit | None:
    """This run's share of the server's WAL between two LSNs, read with
    pg_waldump: the server's WAL is shared with whatever else runs on it."""
    waldump = shutil.which("pg_waldump") or next(
        iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_waldump"), reverse=True)), None)
    if waldump is None:
        return None
    proc = subprocess.Popen([str(waldump), "--bkp-details", "-p", wal_dir, "-s", start,
                             "-e", end],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    split = WalSplit()
    xids: set[str] = set()
    wanted = str(dboid)
    # The record being read: (size, xid, is ours, its full-page image bytes).
    size, xid, ours, fpi = 0, "0", False, 0

    def close() -> None:
        if ours:
            split.ours += size
            split.ours_fpi += fpi
            if xid != "0":
                xids.add(xid)

    for line in proc.stdout:
        m = _WAL_RECORD.match(line)
        if m:
            close()
            size, xid, fpi = int(m.group(2)), m.group(3), 0
            ours = m.group(1) == "Transaction" and xid in xids
            split.total += size
            continue
        b = _WAL_BLOCK.match(line)
        if b and b.group(1) == wanted:
            ours = True
            hole = _WAL_HOLE.search(line)
            if hole:
                fpi += 8192 - int(hole.group(1)) - int(hole.group(2) or 0)
    close()
    if proc.wait() != 0 or split.total == 0:
        return None
    return split


def metric(text: str, name: str, labels: str = "") -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + (("{" + labels) if labels else "")):
            head, _, value = line.rpartition(" ")
            if labels or head == name or head.startswith(name + "{"):
                total += float(value)
    return total


def pct(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    values = sorted(values)
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


async def wait_load(limit: float, wait_max_s: float) -> None:
    """Wait (up to wait_max_s) for the 1-minute load average to fall below limit."""
    if wait_max_s <= 0:
        return
    deadline = time.monotonic() + wait_max_s
    while True:
        load = os.getloadavg()[0]
        if load <= limit:
            return
        if time.monotonic() >= deadline:
            print(f"# load average {load:.2f} still above {limit}; running anyway", flush=True)
            return
        print(f"# load average {load:.2f} above {limit}; waiting", flush=True)
        await asyncio.sleep(30)


class Daemon:
    def __init__(self, name: str, args: list[str], env: dict[str, str], log: Path,
                 port: int | None = None) -> None:
        self.name = name
        self.port = port
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         cwd="/")
        self.ready_s: float | None = None
        self.terminated = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def terminate(self) -> None:
        if self.proc.poll() is None and not self.terminated:
            self.terminated = True
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, grace_s: float = 45) -> int | None:
        """SIGTERM once (a second one could land after the daemon has put the
        default handler back), then SIGKILL after the grace."""
        self.terminate()
        if self.proc.poll() is None:
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, bytes]:
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=60)) as r:
        return r.status, await r.read()


# -- database and queue ---------------------------------------------------------

def db_url(name: str) -> str:
    return ADMIN.rsplit("/", 1)[0] + f"/{name}"


async def create_db(name: str, code: Code) -> list[str]:
    admin = await asyncpg.connect(ADMIN)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    # The schema comes from the code under test (its own `birthdayd migrate`).
    env = {**code.env(), "DATABASE_URL": db_url(name), "LOG_LEVEL": "warning"}
    done = subprocess.run([str(BIN), "migrate"], check=False, env=env, cwd="/",
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"migrate failed: {done.stdout}{done.stderr}")
    conn = await asyncpg.connect(db_url(name))
    versions = [r[0] for r in await conn.fetch("SELECT version FROM schema_migrations ORDER BY 1")]
    await conn.close()
    return versions


async def load(name: str, n: int, send_at: dt.datetime) -> None:
    """N users, each with one birthday greeting due at send_at (COPY, as
    pipeline.py).  The users live in UTC and were born on send_at's date; the
    daemons read only send_at/due_at to decide when to send."""
    conn = await asyncpg.connect(db_url(name))
    created = send_at - dt.timedelta(days=2)
    day = send_at.date()
    users = [(uuid.uuid4(), f"U{i}", "Bench", f"u{i}@example.com", day.replace(year=1990),
              None, "UTC", created, created) for i in range(n)]
    await conn.copy_records_to_table(
        "users", records=users,
        columns=["id", "first_name", "last_name", "email", "birthday", "anniversary",
                 "location", "created_at", "updated_at"])
    messages = [(uuid.uuid4(), u[0], "birthday", day, send_at, "scheduled", send_at, 0,
                 created, created) for u in users]
    await conn.copy_records_to_table(
        "messages", records=messages,
        columns=["id", "user_id", "occasion", "occasion_date", "send_at", "status", "due_at",
                 "attempts", "created_at", "updated_at"])
    await conn.execute("ANALYZE")
    await conn.close()
    admin = await asyncpg.connect(ADMIN)
    await admin.execute("CHECKPOINT")
    await admin.close()


async def drop(name: str, queue: str) -> None:
    admin = await asyncpg.connect(ADMIN)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()
    connection = await aiormq.connect(RABBITMQ)
    channel = await connection.channel()
    for q in (queue, f"{queue}.dead"):
        await channel.queue_delete(q)
    for exchange in (queue, f"{queue}.dlx"):
        await channel.exchange_delete(exchange)
    await connection.close()


# -- one run --------------------------------------------------------------------

async def one_run(args: argparse.Namespace, code: Code, label: str) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    name, queue = f"birthdayd_due_{tag}", f"due-{tag}"
    log_dir = OUT / "due" / f"{args.scenario}-{label}-{tag}"
    log_dir.mkdir(parents=True, exist_ok=True)
    n = args.greetings
    res: dict[str, Any] = {"label": label, "logs": str(log_dir)}
    daemons: list[Daemon] = []
    spies: list[tuple[subprocess.Popen[bytes], Path]] = []
    provider: Daemon | None = None
    try:
        res["migrations"] = await create_db(name, code)
        # --- the instant, and the data -----------------------------------------
        estimate_s = 4 + n * 80e-6
        for attempt in range(3):
            if args.scenario == "catchup":
                instant = dt.datetime.fromtimestamp(
                    math.floor(time.time()) - 86400, dt.UTC)
            else:
                earliest = time.time() + estimate_s * (attempt + 1) + args.lead + 1
                instant = dt.datetime.fromtimestamp(math.ceil(earliest / 60) * 60, dt.UTC)
            await load(name, n, instant)
            if args.scenario == "catchup" or time.time() < instant.timestamp() - args.lead - 0.5:
                break
            print("# loading took longer than planned; loading again for a later instant",
                  flush=True)
            res["migrations"] = await create_db(name, code)
        else:
            raise RuntimeError("could not load the data in time")
        t_instant = instant.timestamp()
        res["instant"] = instant.isoformat()

        conn = await asyncpg.connect(db_url(name))
        provider_port = free_port()
        provider = Daemon("provider", [PYTHON, str(PROVIDER), "--port", str(provider_port),
                                       "--latency-ms", str(args.latency_ms),
                                       "--ignore-idempotency-key"],
                          code_env_current(), log_dir / "provider.log", provider_port)
        session = aiohttp.ClientSession()
        try:
            for _ in range(100):
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    if (await get(session, f"http://127.0.0.1:{provider_port}/stats"))[0] == 200:
                        break
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError(f"the provider did not start: see {provider.log}")
            lsn_loaded, t_loaded = await conn.fetchval("SELECT pg_current_wal_lsn()::text"), \
                time.time()
            if args.scenario != "catchup":
                await asyncio.sleep(max(0.0, t_instant - args.lead - time.time()))
            # A temporary slot (dropped with this session at the latest) keeps
            # the run's WAL on disk until pg_waldump has read it.
            slot = f"due_{tag}"
            await conn.execute("SELECT pg_create_physical_replication_slot($1, true, true)", slot)
            lsn0 = await conn.fetchval("SELECT pg_current_wal_lsn()::text")
            quiet_s = time.time() - t_loaded
            bg_rate = lsn_diff(lsn_loaded, lsn0) / quiet_s if quiet_s >= 5 else None
            ckpt0 = await conn.fetchval(
                "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter")
            rabbit = rabbit_pid()
            rabbit_cpu0 = cpu_seconds(rabbit) if rabbit else None
            provider_cpu0 = cpu_seconds(provider.pid)
            busy0, total0 = machine_cpu()

            # --- the daemons -----------------------------------------------------
            env = {**code.env(), "RABBITMQ_URL": RABBITMQ,
                   "DATABASE_URL": db_url(name) + (f"?{args.db_params}" if args.db_params else ""),
                   "QUEUE_NAME": queue, "LOG_LEVEL": "warning",
                   "EMAIL_API_URL": f"http://127.0.0.1:{provider_port}/send-email"}
            if args.cron:
                env["CRON_MINUTE_SCHEDULE"] = args.cron
            if args.concurrency:
                env["QUEUE_CONCURRENCY"] = str(args.concurrency)
            env.update(item.split("=", 1) for item in args.env)
            roles: list[tuple[str, list[str]]]
            if args.topology == "all":
                roles = [("all", [])]
            else:
                roles = [("scheduler", ["--role", "scheduler"])] + [
                    (f"worker{i + 1}", ["--role", "worker"]) for i in range(args.workers)]
            t_spawn = time.time()
            for role, flags in roles:
                port = free_port()
                daemons.append(Daemon(role, [str(BIN), "run", *flags], {**env, "PORT": str(port)},
                                      log_dir / f"{role}.log", port))
            schedulers = [d for d in daemons if d.name in ("all", "scheduler")]

            async def watch_ready(d: Daemon) -> None:
                while d.proc.poll() is None:
                    with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                        if (await get(session, f"http://127.0.0.1:{d.port}/ready"))[0] == 200:
                            d.ready_s = time.time() - t_spawn
                            if args.profile is not None:
                                spies.append(profile(d, args.profile / f"{log_dir.name}-{d.name}"))
                            return
                    await asyncio.sleep(0.1)

            ready_tasks = [asyncio.create_task(watch_ready(d)) for d in daemons]
            claimed_ahead = None
            if args.scenario != "catchup":
                await asyncio.sleep(max(0.0, t_instant - 1.0 - time.time()))
                claimed_ahead = 0.0
                for d in schedulers:
                    with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                        body = (await get(session, f"http://127.0.0.1:{d.port}/metrics"))[1]
                        claimed_ahead += metric(body.decode(), "birthdayd_tick_claimed_total")
            res["ready_before_instant"] = args.scenario != "catchup" and all(
                d.ready_s is not None and t_spawn + d.ready_s < t_instant for d in daemons)
            res["claimed_ahead"] = claimed_ahead

            # --- until all are sent ----------------------------------------------
            # Progress is read from the provider (a counter), not PostgreSQL: a
            # count over the table every second would cost the server under
            # test a tenth of a core.  Once the provider has all, PostgreSQL
            # is asked until every row is recorded sent.
            deadline = max(time.time(), t_instant) + args.timeout
            sent = 0
            while time.time() < deadline:
                accepted = json.loads((await get(
                    session, f"http://127.0.0.1:{provider_port}/count"))[1])["accepted"]
                if accepted >= n or any(d.proc.poll() is not None for d in daemons):
                    break
                await asyncio.sleep(0.5)
            while time.time() < deadline:
                sent = await conn.fetchval(
                    "SELECT count(*) FROM messages WHERE status = 'sent' AND send_at = $1",
                    instant)
                if sent >= n or any(d.proc.poll() is not None for d in daemons):
                    break
                await asyncio.sleep(0.2)
            t_done = time.time()
            res["timed_out"] = sent < n
            res["exited"] = {d.name: d.proc.returncode for d in daemons
                             if d.proc.poll() is not None}
            lsn1 = await conn.fetchval("SELECT pg_current_wal_lsn()::text")
            ckpt1 = await conn.fetchval(
                "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter")
            busy1, total1 = machine_cpu()
            for t in ready_tasks:
                t.cancel()
            res["ready_s"] = {d.name: d.ready_s for d in daemons}

            # --- figures, before anything stops -----------------------------------
            sched_text = ""
            worker_texts: list[str] = []
            for d in daemons:
                with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                    text = (await get(session, f"http://127.0.0.1:{d.port}/metrics"))[1].decode()
                    if d in schedulers:
                        sched_text += text
                    if d.name != "scheduler":
                        worker_texts.append(text)
            res["claimed"] = metric(sched_text, "birthdayd_tick_claimed_total")
            res["recovered_queued"] = metric(sched_text, "birthdayd_recovered_total",
                                             'state="queued"')
            res["recovered_sending"] = metric(sched_text, "birthdayd_recovered_total",
                                              'state="sending"')
            res["dropped_redeliveries"] = sum(
                metric(t, "birthdayd_redeliveries_dropped_total") for t in worker_texts)
            res["possible_duplicates"] = sum(
                metric(t, "birthdayd_possible_duplicates_total") for t in worker_texts) + \
                metric(sched_text, "birthdayd_possible_duplicates_total") * (
                    0 if args.topology == "all" else 1)
            res["proc"] = {d.name: {**memory_kib(d.pid), "cpu_s": cpu_seconds(d.pid)}
                           for d in daemons}
            pg_pids = [r[0] for r in await conn.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                name)]
            res["cpu"] = {
                "daemons": sum(p["cpu_s"] or 0 for p in res["proc"].values()),
                "pg_backends": sum(cpu_seconds(p) or 0 for p in pg_pids),
                "provider": (cpu_seconds(provider.pid) or 0) - (provider_cpu0 or 0),
                "rabbitmq": ((cpu_seconds(rabbit) or 0) - rabbit_cpu0) if rabbit and
                rabbit_cpu0 is not None else None,
                "machine_busy_cores": (busy1 - busy0) / (total1 - total0) * (os.cpu_count() or 1)
                if total1 > total0 else None,
            }
            res["wal_bytes"] = lsn_diff(lsn0, lsn1)
            wal_dir = str(Path(await conn.fetchval("SHOW data_directory")) / "pg_wal")
            dboid = await conn.fetchval("SELECT oid FROM pg_database WHERE datname = $1", name)
            split = await asyncio.to_thread(wal_of_database, wal_dir, lsn0, lsn1, dboid)
            await conn.execute("SELECT pg_drop_replication_slot($1)", slot)
            res["wal_ours"] = split.ours if split else None
            res["wal_ours_fpi"] = split.ours_fpi if split else None
            res["wal_bg_rate"] = bg_rate
            res["checkpoints"] = ckpt1 - ckpt0
            res["elapsed_s"] = t_done - t_spawn

            row: Any = await conn.fetchrow(
                """SELECT count(*) FILTER (WHERE status = 'sent') AS sent,
                          count(*) FILTER (WHERE sent_at < send_at) AS early,
                          min(sent_at) AS first, max(sent_at) AS last,
                          percentile_disc(ARRAY[0.5, 0.99]) WITHIN GROUP (
                              ORDER BY extract(epoch FROM sent_at - send_at)) AS pcts,
                          max(extract(epoch FROM sent_at - send_at)) AS worst
                   FROM messages WHERE send_at = $1""", instant)
            statuses: dict[str, int] = dict(await conn.fetch(  # type: ignore[arg-type]
                "SELECT status, count(*) FROM messages WHERE send_at = $1 GROUP BY 1", instant))
            res["statuses"] = statuses
            res["sent"] = row["sent"]
            res["early_db"] = row["early"]
            res["late_p50"], res["late_p99"] = (float(x) for x in (row["pcts"] or [math.nan] * 2))
            res["late_max"] = float(row["worst"]) if row["worst"] is not None else math.nan
            if row["first"] is not None and row["last"] > row["first"]:
                res["rate"] = row["sent"] / (row["last"] - row["first"]).total_seconds()
            else:
                res["rate"] = math.nan
            res["all_sent_after_start_s"] = (row["last"].timestamp() - t_spawn
                                             if row["last"] is not None else math.nan)

            by_key = json.loads((await get(
                session, f"http://127.0.0.1:{provider_port}/by-key"))[1])
            stats = json.loads((await get(
                session, f"http://127.0.0.1:{provider_port}/stats"))[1])
            received = json.loads((await get(
                session, f"http://127.0.0.1:{provider_port}/received"))[1])
            res["provider_accepted"] = stats["accepted"]
            res["dup_keys"] = sum(c - 1 for c in by_key.values() if c > 1)
            res["dup_emails"] = sum(c - 1 for c in stats["byEmail"].values() if c > 1)
            recv = [t - t_instant for t, _ in received]
            res["early_provider"] = sum(1 for r in recv if r < 0)
            res["recv_first"] = min(recv) if recv else math.nan
            res["recv_p99"] = pct(recv, 0.99)
            res["recv_max"] = max(recv) if recv else math.nan
        finally:
            await session.close()
            await conn.close()
    finally:
        for d in daemons:
            d.terminate()
        res["exit_codes"] = {d.name: d.stop() for d in daemons}
        for spy, path in spies:  # py-spy ends with the process it samples
            spy.wait(30)
            print(f"  profile {path.name} (py-spy, {PROFILE_RATE}/s):\n"
                  f"{api_bench.summarize_profile(path)}", flush=True)
        if provider is not None:
            provider.stop(10)
        await drop(name, queue)
        errors = []
        for d in daemons:
            with contextlib.suppress(OSError):
                errors += [line for line in d.log.read_text(errors="replace").splitlines()
                           if '"level":"error"' in line or '"level":"critical"' in line
                           or "Traceback" in line]
        res["error_logs"] = len(errors)
        res["first_error"] = errors[0][:300] if errors else None
    return res


PROFILE_RATE = 100


def profile(d: Daemon, path: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """py-spy sampling ``d`` from now until it exits (collapsed stacks)."""
    exe = Path(sys.executable).with_name("py-spy")
    if not exe.exists():
        sys.exit(f"--profile needs py-spy in the venv: {exe.with_name('pip')} install py-spy")
    spy = subprocess.Popen(
        [str(exe), "record", "--nonblocking", "--format",
         "raw", "-r", str(PROFILE_RATE), "--pid", str(d.pid), "-o", str(path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return spy, path


def code_env_current() -> dict[str, str]:
    """The harness (provider) always runs the working tree's code."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


# -- printing -------------------------------------------------------------------

def fmt_run(args: argparse.Namespace, r: dict[str, Any]) -> str:
    ready = ", ".join(f"{k} {v:.1f} s" if v is not None else f"{k} never"
                      for k, v in r["ready_s"].items())
    mem = ", ".join(f"{k} {v.get('VmHWM', 0) / 1024:.0f} MiB ({v['cpu_s'] or 0:.1f} CPU s)"
                    for k, v in r["proc"].items())
    cpu = r["cpu"]
    ours = cpu["daemons"] + cpu["pg_backends"] + cpu["provider"] + (cpu["rabbitmq"] or 0)
    lines = [
        f"  sent {r['sent']:,}/{args.greetings:,}"
        + (" (TIMED OUT)" if r["timed_out"] else "")
        + (f" statuses {r['statuses']}" if r["sent"] != args.greetings else ""),
        f"  lateness sent_at-send_at p50 {r['late_p50']:.3f} s, p99 {r['late_p99']:.3f} s, "
        f"max {r['late_max']:.3f} s; provider receive-T first {r['recv_first']:+.3f} s, "
        f"p99 {r['recv_p99']:.3f} s, max {r['recv_max']:.3f} s",
        f"  early: {r['early_db']} by sent_at, {r['early_provider']} by provider receive time; "
        f"duplicates at provider: {r['dup_keys']} by key, {r['dup_emails']} by e-mail "
        f"(accepted {r['provider_accepted']:,})",
        f"  greetings/s first->last sent_at {r['rate']:,.0f}; all sent "
        f"{r['all_sent_after_start_s']:.1f} s after the daemons started",
        f"  claimed by ticks {r['claimed']:,.0f} (republished {r['claimed'] - r['sent']:,.0f}), "
        f"recovered from queued {r['recovered_queued']:.0f} / sending "
        f"{r['recovered_sending']:.0f}, redeliveries dropped {r['dropped_redeliveries']:.0f}, "
        f"possible-duplicate metric {r['possible_duplicates']:.0f}",
        "  WAL of this run's database (pg_waldump) "
        + (f"{r['wal_ours'] / 1e6:,.1f} MB, {r['wal_ours'] / args.greetings:,.0f} B/greeting, "
           f"of which full-page images {r['wal_ours_fpi'] / args.greetings:,.0f} B/greeting"
           if r["wal_ours"] is not None else "n/a")
        + f"; server WAL {r['wal_bytes'] / 1e6:,.1f} MB total "
        f"({r['wal_bytes'] / args.greetings:,.0f} B/greeting); server WAL rate before the run "
        + (f"{r['wal_bg_rate'] / 1e6:.2f} MB/s" if r["wal_bg_rate"] is not None else "n/a")
        + f"; checkpoints during the run {r['checkpoints']}",
        f"  peak RSS (VmHWM) and CPU per process: {mem}",
        f"  CPU s: daemons {cpu['daemons']:.1f}, our PG backends {cpu['pg_backends']:.1f}, "
        f"provider {cpu['provider']:.1f}, rabbitmq "
        + (f"{cpu['rabbitmq']:.1f}" if cpu["rabbitmq"] is not None else "n/a")
        + f"; machine busy {cpu['machine_busy_cores'] or 0:.2f} of {os.cpu_count()} cores "
        f"over {r['elapsed_s']:.1f} s, of which not this run's ~"
        f"{max(0.0, (cpu['machine_busy_cores'] or 0) - ours / r['elapsed_s']):.2f} cores",
        f"  ready after: {ready} (before T: {r['ready_before_instant']}); ids published "
        f"ahead of T: {r['claimed_ahead'] if r['claimed_ahead'] is not None else 'n/a'}; "
        f"error logs {r['error_logs']}; exit codes {r['exit_codes']}",
    ]
    if r["first_error"]:
        lines.append(f"  first error: {r['first_error']}")
    return "\n".join(lines)


def med(results: list[dict[str, Any]], key: str) -> tuple[float, list[float]]:
    values = [float(r[key]) for r in results]
    return statistics.median(values), values


def summary(args: argparse.Namespace, label: str, results: list[dict[str, Any]]) -> dict[str, Any]:
    figures = [("late_p50", "lateness p50 s", "{:.3f}"), ("late_p99", "lateness p99 s", "{:.3f}"),
               ("late_max", "lateness max s", "{:.3f}"), ("early_db", "early (sent_at)", "{:.0f}"),
               ("early_provider", "early (provider)", "{:.0f}"),
               ("dup_keys", "duplicates (provider, by key)", "{:.0f}"),
               ("dup_emails", "duplicates (provider, by e-mail)", "{:.0f}"),
               ("rate", "greetings/s", "{:,.0f}"),
               ("all_sent_after_start_s", "all sent after start s", "{:.1f}"),
               ("republished", "republished (claimed - sent)", "{:,.0f}"),
               ("recovered_queued", "recovered from queued", "{:.0f}"),
               ("wal_per", "WAL B/greeting (this database)", "{:,.0f}"),
               ("wal_nofpi_per", "WAL B/greeting w/o full pages", "{:,.0f}"),
               ("wal_server_per", "WAL B/greeting (whole server)", "{:,.0f}"),
               ("wal_mb", "WAL MB (whole server)", "{:,.1f}")]
    for r in results:
        r["republished"] = r["claimed"] - r["sent"]
        r["wal_per"] = (r["wal_ours"] if r["wal_ours"] is not None else math.nan) / args.greetings
        r["wal_server_per"] = r["wal_bytes"] / args.greetings
        r["wal_nofpi_per"] = ((r["wal_ours"] - r["wal_ours_fpi"]) if r["wal_ours"] is not None
                              else math.nan) / args.greetings
        r["wal_mb"] = r["wal_bytes"] / 1e6
    for name in results[0]["proc"]:
        key = f"hwm_{name}"
        for r in results:
            r[key] = r["proc"][name].get("VmHWM", 0) / 1024
        figures.append((key, f"peak RSS {name} MiB", "{:.0f}"))
    print(f"== {label}: median of {len(results)} runs (each run) ==")
    out: dict[str, Any] = {}
    for key, title, f in figures:
        m, each = med(results, key)
        out[key] = m
        print(f"  {title:34s} {f.format(m):>10s}   ({', '.join(f.format(v) for v in each)})")
    return out


def verdicts(args: argparse.Namespace, m: dict[str, Any]) -> None:
    checks: list[tuple[str, bool]] = []
    if args.scenario == "instant":
        checks = [("lateness p99 <= 1 s", m["late_p99"] <= 1), ("lateness max <= 2 s",
                                                                m["late_max"] <= 2),
                  ("0 early", m["early_db"] == 0 and m["early_provider"] == 0),
                  ("0 duplicates", m["dup_keys"] == 0 and m["dup_emails"] == 0)]
    elif args.scenario == "burst":
        checks = [(">= 2,000 greetings/s", m["rate"] >= 2000), ("lateness p99 <= 60 s",
                                                              m["late_p99"] <= 60),
                  ("0 duplicates", m["dup_keys"] == 0 and m["dup_emails"] == 0),
                  ("0 republished while still queued",
                   m["republished"] == 0 and m["recovered_queued"] == 0)]
    else:
        rate = args.rate
        source = "--rate"
        if rate is None and (OUT / "due-burst.json").exists():
            saved = json.loads((OUT / "due-burst.json").read_text())
            rate, source = saved["rate"], f"{OUT / 'due-burst.json'} ({saved['when']})"
        if rate:
            target = args.greetings / rate + 60
            print(f"  target: {args.greetings:,} / {rate:,.0f} per s + 60 s = {target:.1f} s "
                  f"(rate from {source})")
            checks = [(f"all sent within {target:.1f} s of start",
                       m["all_sent_after_start_s"] <= target)]
        else:
            print("  target unknown: give --rate, or run the burst scenario first")
        checks.append(("0 duplicates", m["dup_keys"] == 0 and m["dup_emails"] == 0))
    for title, ok in checks:
        print(f"  target {title}: {'met' if ok else 'MISSED'}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=["instant", "burst", "catchup"])
    parser.add_argument("--greetings", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--topology", choices=["all", "split"], default=None,
                        help="one all-roles process, or a scheduler and --workers workers "
                             "(default: all for instant, split otherwise)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=None,
                        help="QUEUE_CONCURRENCY (default: the daemon's, 50)")
    parser.add_argument("--latency-ms", type=int, default=0, help="provider latency")
    parser.add_argument("--db-params", default="", metavar="QUERY",
                        help="appended to the daemons' DATABASE_URL (asyncpg passes unknown "
                             "parameters as server settings), e.g. synchronous_commit=off "
                             "(a diagnostic, not a recommendation)")
    parser.add_argument("--env", action="append", default=[], metavar="VAR=VALUE",
                        help="another setting for the daemons (experiments, e.g. "
                             "DATABASE_POOL_SIZE=20); repeatable")
    parser.add_argument("--cron", default=None,
                        help="CRON_MINUTE_SCHEDULE (default: the daemon's, '* * * * *')")
    parser.add_argument("--lead", type=float, default=None,
                        help="seconds between the daemons' start and the instant "
                             "(default: 10 for instant, 70 for burst)")
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="py-spy every daemon from ready to exit; summaries printed, "
                             "collapsed stacks kept in DIR")
    parser.add_argument("--before", metavar="REV", default=None,
                        help="also run commit REV (extracted, first on PYTHONPATH), "
                             "runs interleaved with the working tree's")
    parser.add_argument("--rate", type=float, default=None,
                        help="catchup: the burst greetings/s for its target")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds after the instant before a run gives up")
    parser.add_argument("--max-load", type=float, default=3.0,
                        help="wait before each run while the 1-min load average is above this")
    parser.add_argument("--max-load-wait", type=float, default=0,
                        help="...but at most this many seconds per run (default 0: no wait)")
    args = parser.parse_args()
    args.topology = args.topology or ("all" if args.scenario == "instant" else "split")
    if args.lead is None:
        args.lead = {"instant": 10.0, "burst": 70.0, "catchup": 0.0}[args.scenario]
    if args.timeout is None:
        args.timeout = max(120.0, args.greetings / 200)
    OUT.mkdir(exist_ok=True)
    if shutil.which("git") is None:
        raise SystemExit("git is needed")

    codes = [prepare_code(None)]
    if args.before:
        codes.append(prepare_code(args.before))
    print(f"# {args.scenario}: {args.greetings:,} greetings, topology {args.topology}"
          + (f" ({args.workers} workers)" if args.topology == "split" else "")
          + f", cron {args.cron or 'default (* * * * *)'}, lead {args.lead:g} s, provider "
          f"latency {args.latency_ms} ms, concurrency {args.concurrency or 'default (50)'}, "
          f"{os.cpu_count()} cores" + (f", env {' '.join(args.env)}" if args.env else "")
          + (f", DATABASE_URL ...?{args.db_params}" if args.db_params else ""),
          flush=True)
    results: dict[str, list[dict[str, Any]]] = {c.label: [] for c in codes}
    try:
        for run in range(args.runs):
            for code in codes:
                await wait_load(args.max_load, args.max_load_wait)
                load1 = os.getloadavg()
                short = "before" if code is not codes[0] else "after"
                r = await one_run(args, code, f"{short}{run + 1}")
                results[code.label].append(r)
                # Each run's figures as they come, in case the command is cut short.
                with (OUT / f"due-{args.scenario}-runs.jsonl").open("a") as f:
                    f.write(json.dumps({"code": code.label, "run": run + 1, **r},
                                       default=str) + "\n")
                print(f"run {run + 1} [{code.label}] instant {r['instant']}, migrations "
                      f"{' '.join(r['migrations'])}, load average at start "
                      f"{load1[0]:.2f}, logs {r['logs']}", flush=True)
                print(fmt_run(args, r), flush=True)
    finally:
        for code in codes:
            if code.tmpdir:
                shutil.rmtree(code.tmpdir, ignore_errors=True)
    medians = {label: summary(args, label, rs) for label, rs in results.items() if rs}
    after = medians[codes[0].label]
    verdicts(args, after)
    if args.before and len(medians) == 2:
        before = medians[codes[1].label]
        print("== before -> after (medians) ==")
        for key, title in (("rate", "greetings/s"), ("wal_per", "WAL B/greeting (this db)"),
                           ("wal_nofpi_per", "WAL B/gr. w/o full pages"),
                           ("wal_server_per", "WAL B/greeting (server)"),
                           ("late_p99", "lateness p99 s"), ("republished", "republished"),
                           ("recovered_queued", "recovered from queued")):
            ratio = after[key] / before[key] if before[key] else math.nan
            print(f"  {title:24s} {before[key]:>12,.1f} -> {after[key]:>12,.1f}  (x{ratio:.2f})")
    if args.scenario == "burst":
        (OUT / "due-burst.json").write_text(json.dumps({
            "rate": after["rate"], "greetings": args.greetings,
            "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}))


if __name__ == "__main__":
    asyncio.run(main())
