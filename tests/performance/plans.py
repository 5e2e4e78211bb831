"""Query plans at scale ("Scale: ten million users"): EXPLAIN (ANALYZE, BUFFERS)
of each hot statement of birthdayd/queries.sql on a database of N users (10 M
by default), with statistics absent and fresh, plus a full daily heal and the
bytes per user.  A benchmark, not a test: it prints figures (`make bench-plans`).

    .venv/bin/python tests/performance/plans.py [--users 10000000] [--runs 3]

The database (birthdayd_bench_10m for 10 M users) is made by generate.py (1,000
birthday greetings due at BENCH_NOW, every other greeting planned after it,
10% of the users born on 15 March in Asia/Kolkata) and reused while its comment
says it holds exactly that.  Each statement is measured two ways, each the
median of --runs runs, in a transaction that is rolled back (the statements
that write leave nothing behind):

- custom: the plan for these very parameter values (plan_cache_mode =
  force_custom_plan), what a first execution gets;
- cached: what birthdayd's asyncpg connections run once a statement is in
  their statement cache: a server-side prepared statement planned 5 times,
  then planned as PostgreSQL's plan cache decides on the 6th execution
  (plan_cache_mode = auto; "generic" when it chose the generic plan).

"absent" statistics: no rows in pg_statistic for users, messages and their
indexes (a database restored or bulk-loaded and never analyzed; a freshly
generated database is in that state already, and a reused one is put back in
it with DELETE FROM pg_statistic, which PostgreSQL 15 lets a superuser do and
the planner honours at once).  "fresh": right after ANALYZE.  "--phases
never,fresh" also forgets the table sizes (pg_class.reltuples = -1), as in a
database the application filled and nothing ever vacuumed.  --only measures
some statements; a daily heal past --heal-budget is stopped and extrapolated.
The full plans are written to --plans-dir.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import asyncpg

from birthdayd import greetings, store

UTC = dt.UTC
BENCH_NOW = dt.datetime(2027, 1, 15, 14, 0, tzinfo=UTC)  # 09:00 in New York, Bogota, ...
DUE = 1000
BATCH = 1000  # SchedulerConfig.batch
TICK_AHEAD = dt.timedelta(seconds=62)  # the tick claims what is due before the next tick + 2 s
LEASE_MARGIN = dt.timedelta(seconds=60)
CALL_LEASE = dt.timedelta(seconds=70)  # EMAIL_API_TIMEOUT + LEASE_MARGIN
MAX_LATENESS = dt.timedelta(days=7)
TARGET_MS = 50.0
ADMIN = os.environ.get("BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
HERE = Path(__file__).resolve().parent


def default_database(users: int) -> str:
    if users % 1_000_000 == 0:
        return f"birthdayd_bench_{users // 1_000_000}m"
    if users % 1000 == 0:
        return f"birthdayd_bench_{users // 1000}k"
    return f"birthdayd_bench_{users}"


def url_for(name: str) -> str:
    parts = urllib.parse.urlsplit(ADMIN)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{name}"))


# -- the database -------------------------------------------------------------


async def bench_meta(admin: asyncpg.Connection, name: str) -> dict[str, Any] | None:
    comment = await admin.fetchval(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
        name)
    if comment is None or not comment.startswith("birthdayd-bench "):
        return None
    meta: dict[str, Any] = json.loads(comment.removeprefix("birthdayd-bench "))
    return meta


def disk_check(data_dir: str | None, users: int) -> None:
    """Print free space; stop if the data directory cannot take ~3 kB per user
    (measured: ~1 kB per user in tables and indexes, plus WAL and margin)."""
    print(subprocess.run(["df", "-h", "/var/lib/postgresql", "/work", "/tmp"],
                         capture_output=True, text=True, check=False).stdout, flush=True)
    if data_dir and os.path.isdir(data_dir):
        free = shutil.disk_usage(data_dir).free
        need = users * 3000
        if free < need:
            sys.exit(f"only {free / 1e9:.1f} GB free under {data_dir}; {users:,} users need "
                     f"about {need / 1e9:.1f} GB: use a smaller --users")


async def ensure_database(name: str, users: int, regenerate: bool) -> None:
    admin = await asyncpg.connect(ADMIN)
    try:
        exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        meta = await bench_meta(admin, name) if exists else None
        wanted = {"users": users, "now": BENCH_NOW.isoformat(), "due_at_once": DUE}
        if exists and meta and not regenerate and not meta.get("appended") and all(
                meta.get(k) == v for k, v in wanted.items()):
            print(f"reusing {name}: {meta}", flush=True)
            return
        if exists:
            if meta is None:
                sys.exit(f"database {name} exists but was not made by generate.py; "
                         "drop it or pass --database")
            print(f"dropping {name} (it holds {meta})", flush=True)
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        disk_check(await admin.fetchval("SHOW data_directory"), users)
    finally:
        await admin.close()
    cmd = [sys.executable, str(HERE / "generate.py"), "--database-url", url_for(name),
           "--users", str(users), "--due-at-once", str(DUE), "--now", BENCH_NOW.isoformat(),
           "--seed", "1"]
    print("+ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


async def forget_sizes(conn: asyncpg.Connection) -> None:
    """What pg_class says of tables filled by the application and never
    vacuumed or analyzed (indexes created on empty tables by the migrations):
    size unknown, so the planner measures the files and guesses the density."""
    await conn.execute("""
        UPDATE pg_class SET reltuples = -1, relpages = 0, relallvisible = 0
        WHERE oid IN (SELECT 'users'::regclass UNION ALL SELECT 'messages'::regclass
                      UNION ALL SELECT indexrelid FROM pg_index
                      WHERE indrelid IN ('users'::regclass, 'messages'::regclass))""")


async def drop_statistics(conn: asyncpg.Connection) -> int:
    """Statistics absent: no pg_statistic rows for the tables or their indexes
    (expression indexes have their own).  Returns how many were deleted."""
    status = await conn.execute("""
        DELETE FROM pg_statistic
        WHERE starelid IN (SELECT 'users'::regclass UNION ALL SELECT 'messages'::regclass
                           UNION ALL SELECT indexrelid FROM pg_index
                           WHERE indrelid IN ('users'::regclass, 'messages'::regclass))""")
    left = await conn.fetchval(
        "SELECT count(*) FROM pg_stats WHERE tablename IN ('users', 'messages')")
    assert left == 0, left
    return int(status.split()[-1])


# -- parameters ---------------------------------------------------------------


@dataclass
class Statement:
    name: str
    args: tuple[Any, ...]
    note: str


async def statements(conn: asyncpg.Connection) -> list[Statement]:
    now = BENCH_NOW
    horizon = now + TICK_AHEAD
    due = await conn.fetchval(store.Q["due_backlog"], horizon)
    if due != DUE:
        sys.exit(f"{due} greetings due at {horizon.isoformat()}, expected {DUE}: "
                 "regenerate the database (--regenerate)")
    sample = [r["id"] for r in await conn.fetch(
        "SELECT id FROM users TABLESAMPLE SYSTEM (0.05) REPEATABLE (42) ORDER BY id")]
    middle = sample[len(sample) // 2]
    one = await conn.fetchval(
        "SELECT id FROM users WHERE id = ANY($1::uuid[]) AND anniversary IS NOT NULL "
        "ORDER BY id LIMIT 1", sample[len(sample) // 3:])
    ended = [r["user_id"] for r in await conn.fetch(
        "SELECT user_id FROM messages WHERE status = 'scheduled' AND due_at <= $1 "
        "ORDER BY user_id LIMIT 100", now)]
    return [st for st in [
        Statement("claim_due", (horizon, BATCH, now + LEASE_MARGIN, now),
                  f"{DUE} due, batch {BATCH}"),
        Statement("users_page_needs", (middle, 500), "a daily heal page: 500 users"),
        Statement("latest_dates", (ended, ["birthday", "anniversary"]),
                  "100 users whose greetings just ended"),
        Statement("recover_stale", (now, BATCH, CALL_LEASE), "nothing leased"),
        Statement("expire_overdue", (horizon, now - MAX_LATENESS, now, BATCH),
                  "nothing overdue"),
        Statement("due_backlog", (now,), f"counts {DUE}"),
        Statement("drop_unsent", (one, ["birthday", "anniversary"], now),
                  "a PUT moving both occasions"),
        Statement("delete_user", (one, now), "DELETE /user/{id}: user and 2 greetings"),
        Statement("queued_count", (), "the tick's backpressure count"),
        Statement("user_with_schedule", (one,), "PUT /user/{id}'s answer, with its schedule"),
        Statement("user_json", (one,), "GET /user/{id} with its schedule, as JSON"),
        Statement("users_page", (middle, 101), "a GET /users page with schedules"),
    ] if st.name in store.Q]


# -- measuring ----------------------------------------------------------------


def literal(value: Any) -> str:
    """An SQL literal for EXECUTE's arguments (typed by the prepared statement)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dt.datetime):
        text = value.isoformat()
    elif isinstance(value, dt.timedelta):
        text = f"{value.total_seconds()} seconds"
    elif isinstance(value, list):
        text = "{" + ",".join(str(v) for v in value) + "}"
    elif isinstance(value, str | uuid.UUID):
        text = str(value)
    else:
        raise TypeError(type(value))
    return "'" + text.replace("'", "''") + "'"


def nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", []):
        found += nodes(child)
    return found


def access_paths(plan: dict[str, Any]) -> str:
    """The indexes used, and any sequential scan, in plan order."""
    seen: list[str] = []
    for n in nodes(plan):
        if "Index Name" in n:
            item = n["Index Name"] + (" (bitmap)" if n["Node Type"].startswith("Bitmap") else "")
        elif n["Node Type"] == "Seq Scan":
            item = f"SEQ SCAN {n['Relation Name']}"
        else:
            continue
        if item not in seen:
            seen.append(item)
    return ", ".join(seen) or "-"


def render(plan: dict[str, Any], depth: int = 0) -> list[str]:
    what = plan["Node Type"]
    if "Relation Name" in plan:
        what += f" on {plan['Relation Name']}"
    if "Index Name" in plan:
        what += f" using {plan['Index Name']}"
    if plan.get("Parent Relationship") in ("SubPlan", "InitPlan"):
        what = f"[{plan.get('Subplan Name', plan['Parent Relationship'])}] {what}"
    line = (f"{'  ' * depth}-> {what}  (est {plan.get('Plan Rows')} rows; actual "
            f"{plan.get('Actual Rows')} rows x {plan.get('Actual Loops')} loops, "
            f"{plan.get('Actual Total Time')} ms; buffers hit {plan.get('Shared Hit Blocks')} "
            f"read {plan.get('Shared Read Blocks')})")
    out = [line]
    for key in ("Index Cond", "Recheck Cond", "Filter", "Join Filter", "Hash Cond",
                "Rows Removed by Filter", "Heap Fetches", "Sort Key"):
        if key in plan:
            out.append(f"{'  ' * depth}     {key}: {plan[key]}")
    for child in plan.get("Plans", []):
        out += render(child, depth + 1)
    return out


@dataclass
class Run:
    exec_ms: float
    plan_ms: float
    rows: int
    paths: str
    generic: bool
    text: list[str]


async def measure(conn: asyncpg.Connection, st: Statement, cached: bool) -> Run:
    call = f"bench({', '.join(literal(a) for a in st.args)})" if st.args else "bench"
    tx = conn.transaction()
    await tx.start()
    try:
        await conn.execute(f"PREPARE bench AS {store.Q[st.name]}")
        mode = "auto" if cached else "force_custom_plan"
        await conn.execute(f"SET LOCAL plan_cache_mode = {mode}")
        if cached:
            # Five plans as asyncpg's first executions get them (EXPLAIN
            # without ANALYZE counts as a planning, and writes nothing).
            for _ in range(5):
                await conn.execute(f"EXPLAIN EXECUTE {call}")
        raw = await conn.fetchval(
            f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE {call}")
        generic = await conn.fetchval(
            "SELECT generic_plans > 0 FROM pg_prepared_statements WHERE name = 'bench'")
    finally:
        await tx.rollback()
        # Not transactional: the rollback keeps it.  (Not DEALLOCATE ALL,
        # which would drop asyncpg's own statements too.)
        await conn.execute("DEALLOCATE bench")
    doc = json.loads(raw)[0]
    plan = doc["Plan"]
    text = render(plan)
    text.append(f"Planning {doc.get('Planning Time')} ms, execution {doc['Execution Time']} ms"
                + (f", JIT {doc['JIT']['Timing']['Total']:.1f} ms" if "JIT" in doc else ""))
    return Run(exec_ms=doc["Execution Time"], plan_ms=doc.get("Planning Time", 0.0),
               rows=plan.get("Actual Rows", 0), paths=access_paths(plan), generic=bool(generic),
               text=text)


@dataclass
class Result:
    name: str
    phase: str
    custom: list[Run]
    cached: list[Run]


def median_ms(runs: list[Run]) -> float:
    return statistics.median(r.exec_ms + r.plan_ms for r in runs)


async def measure_all(conn: asyncpg.Connection, sts: list[Statement], phase: str, runs: int,
                      plans_dir: Path) -> list[Result]:
    results = []
    for st in sts:
        custom = [await measure(conn, st, cached=False) for _ in range(runs)]
        cached = [await measure(conn, st, cached=True) for _ in range(runs)]
        results.append(Result(st.name, phase, custom, cached))
        print(f"  {st.name}: every run (ms, custom | cached): "
              + " ".join(f"{r.exec_ms + r.plan_ms:.1f}" for r in custom) + " | "
              + " ".join(f"{r.exec_ms + r.plan_ms:.1f}" for r in cached)
              + f"  (load average {os.getloadavg()[0]:.1f})", flush=True)
        for kind, rs in (("custom", custom), ("cached", cached)):
            last = rs[-1]
            (plans_dir / f"{phase}-{st.name}-{kind}.txt").write_text(
                f"-- {st.name} ({st.note}), statistics {phase}, {kind} plan"
                f"{' (generic)' if last.generic else ''}\n" + "\n".join(last.text) + "\n")
        c, k = custom[-1], cached[-1]
        print(f"  {st.name:<18} {c.rows:>5} rows  custom {median_ms(custom):8.2f} ms "
              f"[{c.paths}]  cached{'(generic)' if k.generic else '(custom) '} "
              f"{median_ms(cached):8.2f} ms [{k.paths}]", flush=True)
    return results


class CountingPool:
    """The pool heal() gets, counting its keyset pages (users_page_needs) and
    timing each one; everything else goes to the real pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.users = 0
        self.page_s: list[float] = []

    async def fetch(self, query: str, *args: Any, **kwargs: Any) -> list[asyncpg.Record]:
        started = time.perf_counter()
        rows: list[asyncpg.Record] = await self.pool.fetch(query, *args, **kwargs)
        if query == store.Q["users_page_needs"]:
            self.page_s.append(time.perf_counter() - started)
            self.users += len(rows)
        return rows

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pool, name)


async def time_heal(url: str, users: int, phase: str, budget_s: float) -> str:
    """A full daily heal (greetings.heal, pages of 500, a pool of 2 like a small
    replica); past the budget it is cancelled and the total extrapolated."""
    pool = await asyncpg.create_pool(url, min_size=2, max_size=2)
    assert pool is not None
    counting = CountingPool(pool)
    started = time.perf_counter()
    healed: int | None = None
    finished = True
    try:
        healed = await asyncio.wait_for(
            greetings.heal(cast(asyncpg.Pool, counting), BENCH_NOW, 9), budget_s)
    except TimeoutError:
        finished = False
    finally:
        await pool.close()
    seconds = time.perf_counter() - started
    pages = counting.page_s
    shape = ""
    if pages:
        tenth = max(1, len(pages) // 10)
        shape = (f"; page median {statistics.median(pages) * 1000:.1f} ms, first tenth "
                 f"{statistics.mean(pages[:tenth]) * 1000:.1f} ms, last tenth "
                 f"{statistics.mean(pages[-tenth:]) * 1000:.1f} ms")
    if finished:
        return (f"full daily heal, statistics {phase}: {seconds:.1f} s for {users:,} users "
                f"({users / seconds:,.0f} users/s; {len(pages)} pages{shape}), "
                f"{healed} greetings missing")
    done = counting.users
    return (f"full daily heal, statistics {phase}: NOT FINISHED in its {budget_s:.0f} s budget: "
            f"{done:,} of {users:,} users scanned in {len(pages)} pages{shape}; at that rate "
            f"a full heal takes >= {seconds * users / max(done, 1) / 3600:.1f} h")


async def sizes(conn: asyncpg.Connection, users: int) -> None:
    print("\nbytes per user (divided by the number of users):", flush=True)
    for table in ("users", "messages"):
        row = await conn.fetchrow(
            "SELECT pg_relation_size($1::regclass) AS heap, pg_indexes_size($1::regclass) AS idx,"
            " pg_total_relation_size($1::regclass) AS total,"
            " (SELECT count(*) FROM " + table + ") AS n", table)
        assert row is not None
        print(f"  {table:<9} {row['n']:>11,} rows  table {row['heap'] / users:6.0f} B  "
              f"indexes {row['idx'] / users:6.0f} B  total {row['total'] / users:6.0f} B "
              f"({row['total'] / 2**30:.2f} GiB)", flush=True)
        for r in await conn.fetch(
                "SELECT c.relname, pg_relation_size(c.oid) AS size FROM pg_index i "
                "JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = $1::regclass "
                "ORDER BY i.indexrelid", table):
            print(f"      {r['relname']:<26} {r['size'] / users:6.1f} B/user", flush=True)
    total = await conn.fetchval("SELECT pg_database_size(current_database())")
    print(f"  database {total / users:6.0f} B/user ({total / 2**30:.2f} GiB)", flush=True)


def summary(results: list[Result]) -> None:
    print(f"\nmedian ms (planning + execution) of each statement; target {TARGET_MS:.0f} ms; "
          "'!' marks a miss or a sequential scan", flush=True)
    print(f"{'statement':<18} {'stats':<6} {'rows':>5} {'custom':>9} {'cached':>9} "
          f"{'(plan)':<9} index used (custom | cached)")
    for r in results:
        c, k = r.custom[-1], r.cached[-1]
        cm, km = median_ms(r.custom), median_ms(r.cached)
        flag = "!" if max(cm, km) > TARGET_MS or "SEQ" in c.paths + k.paths else " "
        paths = c.paths if c.paths == k.paths else f"{c.paths} | {k.paths}"
        print(f"{r.name:<18} {r.phase:<6} {c.rows:>5} {cm:9.2f} {km:9.2f} "
              f"{'generic' if k.generic else 'custom':<9} {paths} {flag}", flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=10_000_000)
    parser.add_argument("--database", default=None,
                        help="database name (default: birthdayd_bench_10m for 10 M users)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default="", help="comma-separated statement names")
    parser.add_argument("--skip-heal", action="store_true")
    parser.add_argument("--heal-budget", type=float, default=600.0,
                        help="seconds a daily heal may run before it is stopped and "
                        "extrapolated (default 600)")
    parser.add_argument("--regenerate", action="store_true")
    parser.add_argument("--phases", default="absent,fresh",
                        help="statistics states in order: absent (no pg_statistic rows), "
                        "never (absent, and table sizes unknown too), fresh (after ANALYZE)")
    parser.add_argument("--plans-dir", type=Path, default=Path("/tmp/birthdayd-plans"))
    args = parser.parse_args()
    name = args.database or default_database(args.users)
    await ensure_database(name, args.users, args.regenerate)
    url = url_for(name)
    plans_dir: Path = args.plans_dir / name
    plans_dir.mkdir(parents=True, exist_ok=True)
    # As birthdayd's own pool connects (runtime.open_pool): JIT off.
    conn = await asyncpg.connect(url, server_settings={"jit": "off"})
    results: list[Result] = []
    heals: list[str] = []
    try:
        n = await conn.fetchval("SELECT count(*) FROM users")
        print(f"{name}: {n:,} users, "
              f"{await conn.fetchval('SELECT count(*) FROM messages'):,} greetings", flush=True)
        sts = await statements(conn)
        if args.only:
            sts = [st for st in sts if st.name in args.only.split(",")]
        for phase in args.phases.split(","):
            if phase in ("absent", "never"):
                deleted = await drop_statistics(conn)
                print(f"\nstatistics absent ({deleted} pg_statistic rows deleted)", flush=True)
                if phase == "never":
                    await forget_sizes(conn)
                    print("  and sizes unknown (pg_class.reltuples = -1, as never vacuumed)",
                          flush=True)
            elif phase == "fresh":
                started = time.perf_counter()
                await conn.execute("ANALYZE users, messages")
                print(f"\nstatistics fresh (ANALYZE took {time.perf_counter() - started:.1f} s)",
                      flush=True)
            else:
                parser.error(f"unknown phase {phase!r}")
            results += await measure_all(conn, sts, phase, args.runs, plans_dir)
            if not args.skip_heal:
                line = await time_heal(url, n, phase, args.heal_budget)
                heals.append(line)
                print("  " + line, flush=True)
        summary(results)
        for line in heals:
            print(line)
        await sizes(conn, n)
        print(f"\nplans: {plans_dir}/", flush=True)
    finally:
        await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
